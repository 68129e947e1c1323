//! The plugin's errors, each mapped to a CNI error code, and the JSON the
//! spec prints for them (`{"cniVersion", "code", "msg", "details"}`).
//!
//! `msg` says what was wrong and where (which variable, which field);
//! `details` adds what the plugin was doing, the underlying error and, after
//! a failed ADD, anything the rollback could not undo.

use std::error::Error as _;

use netlink::NetlinkError;
use serde::Serialize;

/// CNI error codes (spec "Error codes").
pub mod code {
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    pub const UNSUPPORTED_FIELD: u32 = 2;
    pub const UNKNOWN_CONTAINER: u32 = 3;
    pub const INVALID_ENV: u32 = 4;
    pub const IO: u32 = 5;
    pub const DECODE: u32 = 6;
    pub const INVALID_CONFIG: u32 = 7;
    pub const TRY_AGAIN: u32 = 11;
    pub const NOT_AVAILABLE: u32 = 50;
    pub const OTHER: u32 = 999;
}

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CniError {
    #[error("cniVersion {version:?} is not supported: podswitch-cni speaks {supported}")]
    IncompatibleVersion { version: String, supported: String },
    #[error("network config field {field}: {reason}")]
    UnsupportedField { field: String, reason: String },
    #[error("{0}")]
    UnknownContainer(String),
    #[error("environment variable {var}: {reason}")]
    InvalidEnv { var: &'static str, reason: String },
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Decode(String),
    #[error("network config field {field}: {reason}")]
    InvalidConfig { field: String, reason: String },
    #[error("{0}")]
    TryAgain(String),
    #[error("{0}")]
    NotAvailable(String),
    /// An IPAM plugin's own error, passed through with its code and message.
    #[error("{msg}")]
    Delegate {
        plugin: String,
        command: String,
        code: u32,
        msg: String,
        details: String,
    },
    #[error("{what}: {source}")]
    Netlink { what: String, source: NetlinkError },
    /// CHECK found the container's networking not as ADD left it.
    #[error("CHECK failed: {0}")]
    CheckFailed(String),
    #[error("{0}")]
    Other(String),
    /// A failed ADD whose rollback left something behind.
    #[error("{error}")]
    RolledBack {
        error: Box<CniError>,
        leftovers: Vec<String>,
    },
}

impl CniError {
    /// The CNI error code.
    pub fn code(&self) -> u32 {
        match self {
            CniError::IncompatibleVersion { .. } => code::INCOMPATIBLE_VERSION,
            CniError::UnsupportedField { .. } => code::UNSUPPORTED_FIELD,
            CniError::UnknownContainer(_) => code::UNKNOWN_CONTAINER,
            CniError::InvalidEnv { .. } => code::INVALID_ENV,
            CniError::Io { .. } => code::IO,
            CniError::Decode(_) => code::DECODE,
            CniError::InvalidConfig { .. } => code::INVALID_CONFIG,
            CniError::TryAgain(_) => code::TRY_AGAIN,
            CniError::NotAvailable(_) => code::NOT_AVAILABLE,
            CniError::Delegate { code, .. } => *code,
            CniError::Netlink { .. } | CniError::CheckFailed(_) | CniError::Other(_) => code::OTHER,
            CniError::RolledBack { error, .. } => error.code(),
        }
    }

    /// The spec's `details`: the delegate's own details, the chain of
    /// underlying errors, and anything a rollback left behind.
    pub fn details(&self) -> String {
        match self {
            CniError::Delegate {
                plugin,
                command,
                details,
                ..
            } => {
                let from = format!("from IPAM plugin {plugin} ({command})");
                if details.is_empty() {
                    from
                } else {
                    format!("{from}: {details}")
                }
            }
            CniError::RolledBack { error, leftovers } => {
                let inner = error.details();
                let left = format!(
                    "the rollback could not undo everything: {}",
                    leftovers.join("; ")
                );
                if inner.is_empty() {
                    left
                } else {
                    format!("{inner}; {left}")
                }
            }
            other => {
                let mut chain = Vec::new();
                let mut source = other.source();
                while let Some(s) = source {
                    chain.push(s.to_string());
                    source = s.source();
                }
                chain.join(": ")
            }
        }
    }

    /// Shorthand for [`CniError::Netlink`].
    pub fn netlink(what: impl Into<String>) -> impl FnOnce(NetlinkError) -> CniError {
        let what = what.into();
        move |source| CniError::Netlink { what, source }
    }

    /// Shorthand for [`CniError::Io`].
    pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> CniError {
        let what = what.into();
        move |source| CniError::Io { what, source }
    }

    /// Shorthand for [`CniError::InvalidConfig`].
    pub fn config(field: impl Into<String>, reason: impl Into<String>) -> CniError {
        CniError::InvalidConfig {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// The JSON the spec prints for this error, in `version`.
    pub fn reply(&self, version: &str) -> ErrorReply {
        ErrorReply {
            cni_version: version.to_string(),
            code: self.code(),
            msg: self.to_string(),
            details: self.details(),
        }
    }
}

/// The spec's error object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ErrorReply {
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    pub code: u32,
    pub msg: String,
    pub details: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_replies() {
        let e = CniError::InvalidEnv {
            var: "CNI_IFNAME",
            reason: "is not set".into(),
        };
        assert_eq!(e.code(), 4);
        let reply = serde_json::to_value(e.reply("1.0.0")).unwrap();
        assert_eq!(reply["cniVersion"], "1.0.0");
        assert_eq!(reply["code"], 4);
        assert_eq!(reply["msg"], "environment variable CNI_IFNAME: is not set");

        let delegate = CniError::Delegate {
            plugin: "host-local".into(),
            command: "ADD".into(),
            code: 999,
            msg: "no IP ranges specified".into(),
            details: String::new(),
        };
        let wrapped = CniError::RolledBack {
            error: Box::new(delegate),
            leftovers: vec!["record x: busy".into()],
        };
        assert_eq!(wrapped.code(), 999);
        assert_eq!(wrapped.to_string(), "no IP ranges specified");
        assert!(wrapped.details().contains("host-local (ADD)"));
        assert!(wrapped.details().contains("record x: busy"));

        let io = CniError::io("read stdin")(std::io::Error::other("boom"));
        assert_eq!(io.code(), 5);
        assert_eq!(io.to_string(), "read stdin: boom");
    }
}
