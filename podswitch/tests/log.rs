//! `podswitch agent`'s log flags through the binary. No root needed: the
//! agent is stopped by its configuration, after the log is set up.

use std::process::{Command, Output};

fn agent(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_podswitch"))
        .arg("agent")
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("run podswitch agent")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn the_json_format_writes_one_object_per_line() {
    let out = agent(&["--log-format", "json", "--node-name", "node1"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let text = stderr(&out);
    let line = text.lines().next().expect("a log line");
    let event: serde_json::Value =
        serde_json::from_str(line).unwrap_or_else(|e| panic!("{line:?} is not JSON: {e}"));
    assert_eq!(event["level"], "ERROR", "{event}");
    let message = event["fields"]["message"].as_str().unwrap_or_default();
    assert!(!message.is_empty(), "{event}");
    // The same error in the text format, on one readable line.
    let out = agent(&["--node-name", "node1"]);
    let text = stderr(&out);
    assert!(text.contains("ERROR") && text.contains(message), "{text}");
    assert!(serde_json::from_str::<serde_json::Value>(text.trim()).is_err());
}

#[test]
fn a_bad_log_filter_is_refused_with_what_was_wrong() {
    let out = agent(&["--log-level", "agent=loud"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("--log-level \"agent=loud\""),
        "{}",
        stderr(&out)
    );
}

#[test]
fn per_module_filters_choose_what_is_logged() {
    // The configuration error is an event of the `podswitch` target.
    let silenced = agent(&["--log-level", "info,podswitch=off", "--node-name", "node1"]);
    assert_eq!(silenced.status.code(), Some(2));
    assert_eq!(stderr(&silenced), "", "the podswitch target filtered out");
    let only = agent(&["--log-level", "off,podswitch=error", "--node-name", "node1"]);
    assert_eq!(only.status.code(), Some(2));
    assert!(stderr(&only).contains("ERROR"), "{}", stderr(&only));
}
