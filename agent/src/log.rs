//! The agent's log: `tracing` events on stderr, as text (default) or one
//! JSON object per line (`--log-format json`), filtered by `--log-level`
//! (a level, `info`, or per-module directives such as
//! `info,agent::dns=debug`; `RUST_LOG` is read when the flag is absent).
//!
//! A warning the operator should also see in `podswitch status` goes
//! through [`warn`], which logs it and keeps it in the status: one call, so
//! the two never disagree.

use std::io::IsTerminal;
use std::sync::{Mutex, PoisonError};

use api::AgentStatus;
use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per event (timestamp, level, target, fields).
    Json,
}

/// Installs the process's log subscriber. `level` is an `EnvFilter`
/// directive list; `None` reads `RUST_LOG`, else `info`.
pub fn init(format: LogFormat, level: Option<&str>) -> Result<(), String> {
    let filter = match level {
        Some(directives) => EnvFilter::try_new(directives)
            .map_err(|e| format!("--log-level {directives:?}: {e}"))?,
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let installed = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    installed.map_err(|e| format!("cannot install the log subscriber: {e}"))
}

/// Logs `message` as a warning and keeps it in `status` (the last
/// [`api::MAX_WARNINGS`] are shown by `podswitch status`).
pub fn warn(status: &mut AgentStatus, message: impl Into<String>) {
    let message = message.into();
    tracing::warn!("{message}");
    status.warn(message);
}

/// [`warn`] on the status the API server shares.
pub fn warn_shared(status: &Mutex<AgentStatus>, message: impl Into<String>) {
    warn(
        &mut status.lock().unwrap_or_else(PoisonError::into_inner),
        message,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_warning_reaches_the_status() {
        let status = Mutex::new(AgentStatus::default());
        warn_shared(&status, "pod port x not restored");
        warn(&mut status.lock().unwrap(), String::from("second"));
        let s = status.lock().unwrap();
        assert_eq!(s.warnings.len(), 2);
        assert!(s.warnings[0].contains("pod port x not restored"));
    }

    #[test]
    fn a_bad_filter_says_what_was_wrong() {
        let err = init(LogFormat::Text, Some("agent=loud")).unwrap_err();
        assert!(err.starts_with("--log-level \"agent=loud\""), "{err}");
    }
}
