//! IPAM delegation as the spec describes it: the plugin named by
//! `ipam.type` is looked up in `CNI_PATH` and executed with the CNI
//! environment and the network config on stdin; its result or error comes
//! back on stdout. It runs in the node's (the current) network namespace.
//!
//! Delegates may speak fewer versions than this plugin (Debian's
//! `host-local` 1.1.1 stops at 1.0.0), so the delegate's `VERSION` is asked
//! first and the config it receives carries the newest version both speak
//! that is not newer than the runtime's ([`crate::version::negotiate`]).

use std::cell::OnceCell;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command as Process, Stdio};

use serde::Deserialize;
use serde_json::Value;

use crate::env::Command;
use crate::error::{code, CniError};
use crate::version::{self, Version};

/// Which attachment a delegated call is about (the `CNI_*` variables it
/// gets besides `CNI_COMMAND` and `CNI_PATH`).
#[derive(Clone, Debug, Default)]
pub struct Target {
    pub container_id: String,
    pub ifname: String,
    pub netns: Option<PathBuf>,
    /// `CNI_ARGS`; `None` passes none.
    pub args: Option<String>,
}

/// An IPAM plugin found in `CNI_PATH`.
#[derive(Debug)]
pub struct Ipam {
    name: String,
    binary: PathBuf,
    path: Vec<PathBuf>,
    versions: OnceCell<Vec<Version>>,
}

#[derive(Deserialize)]
struct VersionReply {
    #[serde(rename = "supportedVersions", default)]
    supported_versions: Vec<String>,
}

#[derive(Deserialize)]
struct DelegateError {
    #[serde(default)]
    code: u32,
    #[serde(default)]
    msg: String,
    #[serde(default)]
    details: String,
}

impl Ipam {
    /// Finds plugin `name` in the directories of `path`, in order.
    pub fn locate(name: &str, path: &[PathBuf]) -> Result<Ipam, CniError> {
        let binary = path
            .iter()
            .map(|dir| dir.join(name))
            .find(|candidate| candidate.is_file())
            .ok_or_else(|| {
                let dirs: Vec<String> = path.iter().map(|d| d.display().to_string()).collect();
                CniError::config(
                    "ipam.type",
                    format!(
                        "no IPAM plugin {name:?} in CNI_PATH ({}): install it there or fix ipam.type",
                        dirs.join(":")
                    ),
                )
            })?;
        Ok(Ipam {
            name: name.to_string(),
            binary,
            path: path.to_vec(),
            versions: OnceCell::new(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The versions the plugin reports (`VERSION`), asked once.
    pub fn versions(&self) -> Result<&[Version], CniError> {
        if let Some(v) = self.versions.get() {
            return Ok(v);
        }
        let stdin = serde_json::json!({ "cniVersion": version::CURRENT.to_string() });
        let reply = self
            .exec(Command::Version, &Target::default(), &stdin)?
            .ok_or_else(|| self.bad_output(Command::Version, "printed nothing"))?;
        let reply = VersionReply::deserialize(&reply)
            .map_err(|e| self.bad_output(Command::Version, &e.to_string()))?;
        let versions: Vec<Version> = reply
            .supported_versions
            .iter()
            .filter_map(|v| Version::parse(v))
            .collect();
        Ok(self.versions.get_or_init(|| versions))
    }

    /// The version to call the plugin with for a request in `requested`.
    pub fn negotiate(&self, requested: Version) -> Result<Version, CniError> {
        let theirs = self.versions()?;
        version::negotiate(requested, theirs).ok_or_else(|| CniError::IncompatibleVersion {
            version: requested.to_string(),
            supported: format!(
                "{}; IPAM plugin {} speaks only {}, none of them usable",
                version::supported_list(),
                self.name,
                theirs
                    .iter()
                    .map(Version::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        })
    }

    /// Whether the plugin speaks `version` (GC needs 1.1.0).
    pub fn speaks(&self, version: Version) -> Result<bool, CniError> {
        Ok(self.versions()?.contains(&version))
    }

    /// Runs `command` for `target` with `config` (a network config object)
    /// rewritten to the negotiated version: the plugin's result for ADD,
    /// `None` for commands that print nothing.
    pub fn call(
        &self,
        command: Command,
        target: &Target,
        config: &Value,
        requested: Version,
    ) -> Result<Option<Value>, CniError> {
        let version = self.negotiate(requested)?;
        self.call_as(command, target, config, version)
    }

    /// Runs `command` with `config` rewritten to exactly `version`.
    pub fn call_as(
        &self,
        command: Command,
        target: &Target,
        config: &Value,
        version: Version,
    ) -> Result<Option<Value>, CniError> {
        let mut config = config.clone();
        if let Value::Object(object) = &mut config {
            object.insert("cniVersion".into(), Value::String(version.to_string()));
        }
        self.exec(command, target, &config)
    }

    fn bad_output(&self, command: Command, why: &str) -> CniError {
        CniError::Other(format!(
            "IPAM plugin {} ({}) answered {}: {why}",
            self.name,
            self.binary.display(),
            command.name()
        ))
    }

    fn exec(
        &self,
        command: Command,
        target: &Target,
        stdin: &Value,
    ) -> Result<Option<Value>, CniError> {
        let mut process = Process::new(&self.binary);
        process
            .env("CNI_COMMAND", command.name())
            .env(
                "CNI_PATH",
                std::env::join_paths(&self.path).unwrap_or_default(),
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (var, value) in [
            ("CNI_CONTAINERID", Some(target.container_id.as_str())),
            ("CNI_IFNAME", Some(target.ifname.as_str())),
            ("CNI_NETNS", target.netns.as_deref().and_then(Path::to_str)),
            ("CNI_ARGS", target.args.as_deref()),
        ] {
            match value {
                Some(v) if !v.is_empty() => process.env(var, v),
                _ => process.env_remove(var),
            };
        }
        let what = format!("cannot run IPAM plugin {}", self.binary.display());
        // A binary still open for writing somewhere (being installed, or
        // inherited by a process forked meanwhile and not yet exec'd)
        // refuses exec with ETXTBSY for a moment: try again briefly.
        let mut attempt = 0;
        let mut child = loop {
            match process.spawn() {
                Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && attempt < 5 => {
                    attempt += 1;
                    std::thread::sleep(std::time::Duration::from_millis(10 * attempt));
                }
                other => break other.map_err(CniError::io(what.clone()))?,
            }
        };
        let input = stdin.to_string();
        // A scoped writer so a plugin that answers before reading all of
        // stdin cannot deadlock us; it is joined before we return, so the
        // process is single-threaded again before any setns.
        let stdin_pipe = child.stdin.take();
        let output = std::thread::scope(|scope| {
            scope.spawn(move || {
                if let Some(mut pipe) = stdin_pipe {
                    // A plugin that exits without reading makes this fail
                    // with EPIPE; its exit status tells what happened.
                    let _ = pipe.write_all(input.as_bytes());
                }
            });
            child.wait_with_output()
        })
        .map_err(CniError::io(what))?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        if !output.status.success() {
            let parsed: Option<DelegateError> = serde_json::from_str(stdout.trim()).ok();
            return Err(match parsed {
                Some(e) if !e.msg.is_empty() => CniError::Delegate {
                    plugin: self.name.clone(),
                    command: command.name().into(),
                    code: if e.code == 0 { code::OTHER } else { e.code },
                    msg: e.msg,
                    details: e.details,
                },
                _ => self.bad_output(
                    command,
                    &format!(
                        "it failed ({}) without a CNI error: {}",
                        output.status,
                        [stdout.trim(), stderr.trim()].join(" ").trim()
                    ),
                ),
            });
        }
        if stdout.trim().is_empty() {
            return Ok(None);
        }
        serde_json::from_str(stdout.trim()).map(Some).map_err(|e| {
            self.bad_output(
                command,
                &format!("its output is not JSON ({e}): {}", stdout.trim()),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A fake IPAM plugin (a shell script) in a temporary CNI_PATH.
    fn fake(script: &str) -> (tempfile::TempDir, Ipam) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fake-ipam");
        std::fs::write(&path, format!("#!/bin/sh\n{script}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        let ipam = Ipam::locate(
            "fake-ipam",
            &[PathBuf::from("/nonexistent"), dir.path().to_path_buf()],
        )
        .unwrap();
        (dir, ipam)
    }

    const VERSIONS: &str = r#"if [ "$CNI_COMMAND" = VERSION ]; then echo '{"cniVersion":"1.0.0","supportedVersions":["0.4.0","1.0.0"]}'; exit 0; fi"#;

    #[test]
    fn a_missing_plugin_is_an_invalid_config() {
        let e = Ipam::locate("no-such-ipam", &[PathBuf::from("/nonexistent")]).unwrap_err();
        assert_eq!(e.code(), 7);
        assert!(e.to_string().contains("ipam.type"), "{e}");
    }

    #[test]
    fn negotiates_and_rewrites_the_version_it_passes() {
        // The plugin echoes the config it got, with its environment.
        let (_dir, ipam) = fake(&format!(
            "{VERSIONS}\nread -r cfg; echo \"{{\\\"cfg\\\":$cfg,\\\"cmd\\\":\\\"$CNI_COMMAND\\\",\\\"cid\\\":\\\"$CNI_CONTAINERID\\\",\\\"netns\\\":\\\"$CNI_NETNS\\\"}}\""
        ));
        let target = Target {
            container_id: "c1".into(),
            ifname: "eth0".into(),
            netns: None,
            args: None,
        };
        let config =
            serde_json::json!({"cniVersion": "1.1.0", "name": "n", "ipam": {"type": "fake-ipam"}});
        let got = ipam
            .call(Command::Add, &target, &config, Version::V1_1_0)
            .unwrap()
            .unwrap();
        assert_eq!(got["cfg"]["cniVersion"], "1.0.0");
        assert_eq!(got["cfg"]["name"], "n");
        assert_eq!(got["cmd"], "ADD");
        assert_eq!(got["cid"], "c1");
        assert_eq!(got["netns"], "");
        assert!(!ipam.speaks(Version::V1_1_0).unwrap());
        let old = ipam.negotiate(Version::V0_4_0).unwrap();
        assert_eq!(old, Version::V0_4_0);
    }

    #[test]
    fn delegate_errors_pass_through_with_their_code() {
        let (_dir, ipam) = fake(&format!(
            "{VERSIONS}\necho '{{\"code\": 11, \"msg\": \"pool busy\", \"details\": \"try later\"}}'; exit 1"
        ));
        let config = serde_json::json!({"cniVersion": "1.0.0"});
        let e = ipam
            .call(Command::Add, &Target::default(), &config, Version::V1_0_0)
            .unwrap_err();
        assert_eq!(e.code(), 11);
        assert_eq!(e.to_string(), "pool busy");
        assert!(e.details().contains("try later"), "{}", e.details());

        let (_dir, ipam) = fake(&format!("{VERSIONS}\necho oops >&2; exit 3"));
        let e = ipam
            .call(Command::Del, &Target::default(), &config, Version::V1_0_0)
            .unwrap_err();
        assert_eq!(e.code(), 999);
        assert!(e.to_string().contains("oops"), "{e}");
    }

    #[test]
    fn no_common_version_is_code_1() {
        let (_dir, ipam) =
            fake(r#"echo '{"cniVersion":"0.3.1","supportedVersions":["0.3.0","0.3.1"]}'"#);
        let e = ipam.negotiate(Version::V1_0_0).unwrap_err();
        assert_eq!(e.code(), 1);
        assert!(e.to_string().contains("fake-ipam"), "{e}");
    }
}
