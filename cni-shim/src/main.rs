//! `podswitch-cni`: the CNI plugin that attaches pods to the podswitch agent.
//!
//! Only `VERSION` is implemented so far; every other command answers with
//! the CNI error "not supported" (code 4 is reserved for invalid
//! environment variables, so the generic code 999 is used) and exits 1.

use std::io::Write;

const SUPPORTED: &str = r#"{"cniVersion":"1.1.0","supportedVersions":["0.4.0","1.0.0","1.1.0"]}"#;

fn main() -> std::process::ExitCode {
    let command = std::env::var("CNI_COMMAND").unwrap_or_default();
    let mut out = std::io::stdout().lock();
    if command == "VERSION" {
        let _ = writeln!(out, "{SUPPORTED}");
        return std::process::ExitCode::SUCCESS;
    }
    let error = serde_json::json!({
        "cniVersion": "1.1.0",
        "code": 999,
        "msg": format!("CNI_COMMAND {command:?} is not supported by this build of podswitch-cni"),
    });
    let _ = writeln!(out, "{error}");
    std::process::ExitCode::FAILURE
}
