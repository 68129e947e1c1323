//! Driving `podswitch-cni` as a container runtime does: the binary is
//! executed inside the node's network namespace (`ip netns exec NODE
//! podswitch-cni`) with the `CNI_*` variables and the network config on
//! stdin, and its stdout is read back as a result or a CNI error.
//!
//! [`Cni`] has one method per command; [`test_config`] builds the standard
//! config of a test network (host-local IPAM with a per-test data
//! directory, a per-test state directory and agent socket), and
//! [`plugin_binary`] finds the binary cargo built.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};

use serde_json::{json, Value};

use crate::netns::Netns;

/// Where Debian installs the reference plugins (`host-local`, ...).
pub const SYSTEM_CNI_PATH: &str = "/usr/lib/cni";

/// A CNI error as the plugin printed it, with its exit status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CniError {
    pub code: u64,
    pub msg: String,
    pub details: String,
    /// The `cniVersion` of the error object.
    pub cni_version: String,
    pub status: Option<i32>,
}

/// What one execution printed.
#[derive(Clone, Debug)]
pub struct Output {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    /// The parsed answer: the printed result (`None` when nothing was
    /// printed) on success, the printed CNI error on failure. Panics when
    /// the output does not follow the spec (a test failure).
    pub fn parse(&self) -> Result<Option<Value>, CniError> {
        let text = self.stdout.trim();
        if self.status.success() {
            if text.is_empty() {
                return Ok(None);
            }
            let value = serde_json::from_str(text).unwrap_or_else(|e| {
                panic!("podswitch-cni succeeded but printed no JSON ({e}): {self:?}")
            });
            return Ok(Some(value));
        }
        let value: Value = serde_json::from_str(text).unwrap_or_else(|e| {
            panic!("podswitch-cni failed without a CNI error on stdout ({e}): {self:?}")
        });
        let field = |name: &str| value.get(name).and_then(Value::as_str).unwrap_or_default();
        let code = value
            .get("code")
            .and_then(Value::as_u64)
            .unwrap_or_else(|| panic!("the CNI error has no code: {self:?}"));
        Err(CniError {
            code,
            msg: field("msg").to_string(),
            details: field("details").to_string(),
            cni_version: field("cniVersion").to_string(),
            status: self.status.code(),
        })
    }
}

/// One attachment's identity: what the runtime puts in `CNI_CONTAINERID`,
/// `CNI_NETNS`, `CNI_IFNAME`.
#[derive(Clone, Debug)]
pub struct Pod {
    pub container_id: String,
    /// `CNI_NETNS`; `None` leaves it unset (DEL).
    pub netns: Option<String>,
    pub ifname: String,
}

impl Pod {
    /// `container_id`'s `eth0` in `netns`.
    pub fn new(container_id: &str, netns: &Netns) -> Pod {
        Pod {
            container_id: container_id.to_string(),
            netns: Some(netns_path(netns)),
            ifname: "eth0".into(),
        }
    }
}

/// The path of a test namespace (what `CNI_NETNS` names).
pub fn netns_path(ns: &Netns) -> String {
    format!("/run/netns/{}", ns.name)
}

/// Runs `podswitch-cni` in a node namespace.
pub struct Cni {
    pub binary: PathBuf,
    /// The namespace the plugin runs in (the node's, where the agent is).
    pub node_ns: String,
    /// `CNI_PATH`.
    pub cni_path: String,
    /// `CNI_ARGS` for ADD, DEL and CHECK.
    pub args: String,
}

impl Cni {
    /// The plugin at `binary`, run in `node`, with the system's plugins in
    /// `CNI_PATH`.
    pub fn new(binary: &Path, node: &Netns) -> Cni {
        Cni {
            binary: binary.to_path_buf(),
            node_ns: node.name.clone(),
            cni_path: SYSTEM_CNI_PATH.into(),
            args: "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=test-pod".into(),
        }
    }

    /// Executes the plugin with exactly `env` (plus `PATH`) and `stdin`,
    /// killed after 60 s.
    pub fn exec(&self, env: &[(&str, &str)], stdin: &str) -> Output {
        let mut command = Command::new("timeout");
        command
            .args(["--kill-after=2", "60", "ip", "netns", "exec", &self.node_ns])
            .arg(&self.binary)
            .env_clear()
            .env(
                "PATH",
                std::env::var("PATH").unwrap_or_else(|_| "/usr/sbin:/usr/bin:/sbin:/bin".into()),
            )
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.binary.display()));
        if let Some(mut pipe) = child.stdin.take() {
            // The plugin may exit before reading (VERSION): EPIPE is fine.
            let _ = pipe.write_all(stdin.as_bytes());
        }
        let out = child
            .wait_with_output()
            .unwrap_or_else(|e| panic!("waiting for {}: {e}", self.binary.display()));
        Output {
            status: out.status,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Runs `command` for `pod` (or for no pod: STATUS, GC, VERSION).
    pub fn call(&self, command: &str, pod: Option<&Pod>, config: &Value) -> Output {
        let mut env = vec![
            ("CNI_COMMAND", command),
            ("CNI_PATH", self.cni_path.as_str()),
        ];
        if let Some(pod) = pod {
            env.push(("CNI_CONTAINERID", &pod.container_id));
            env.push(("CNI_IFNAME", &pod.ifname));
            env.push(("CNI_ARGS", &self.args));
            if let Some(netns) = &pod.netns {
                env.push(("CNI_NETNS", netns));
            }
        }
        self.exec(&env, &config.to_string())
    }

    /// ADD: the result.
    pub fn add(&self, pod: &Pod, config: &Value) -> Result<Value, CniError> {
        self.call("ADD", Some(pod), config)
            .parse()
            .map(|v| v.unwrap_or_else(|| panic!("ADD succeeded without printing a result")))
    }

    pub fn del(&self, pod: &Pod, config: &Value) -> Result<(), CniError> {
        self.call("DEL", Some(pod), config).parse().map(drop)
    }

    /// CHECK against `prev_result` (put into the config as `prevResult`).
    pub fn check(&self, pod: &Pod, config: &Value, prev_result: &Value) -> Result<(), CniError> {
        let mut config = config.clone();
        config["prevResult"] = prev_result.clone();
        self.call("CHECK", Some(pod), &config).parse().map(drop)
    }

    pub fn status(&self, config: &Value) -> Result<(), CniError> {
        self.call("STATUS", None, config).parse().map(drop)
    }

    /// GC keeping `valid` (container ID, interface name) attachments.
    pub fn gc(&self, config: &Value, valid: &[(&str, &str)]) -> Result<(), CniError> {
        let mut config = config.clone();
        config["cni.dev/valid-attachments"] = valid
            .iter()
            .map(|(id, ifname)| json!({"containerID": id, "ifname": ifname}))
            .collect();
        self.call("GC", None, &config).parse().map(drop)
    }

    /// VERSION: the plugin's answer.
    pub fn version(&self) -> Result<Value, CniError> {
        self.exec(&[("CNI_COMMAND", "VERSION")], "")
            .parse()
            .map(|v| v.unwrap_or_else(|| panic!("VERSION printed nothing")))
    }
}

/// The standard config of test network `name`: host-local IPAM handing out
/// 10.244.`subnet`.0/24 with its allocations under `ipam_data_dir`, records
/// under `state_dir`, the agent at `agent_socket`.
pub fn test_config(
    cni_version: &str,
    name: &str,
    agent_socket: &Path,
    state_dir: &Path,
    subnet: u8,
    ipam_data_dir: &Path,
) -> Value {
    json!({
        "cniVersion": cni_version,
        "name": name,
        "type": "podswitch-cni",
        "agentSocket": agent_socket,
        "stateDir": state_dir,
        "ipam": {
            "type": "host-local",
            "ranges": [[{"subnet": format!("10.244.{subnet}.0/24")}]],
            "dataDir": ipam_data_dir,
        },
    })
}

/// The addresses host-local has allocated for network `name` under
/// `ipam_data_dir` (one file per address).
pub fn allocations(ipam_data_dir: &Path, name: &str) -> Vec<String> {
    let mut found: Vec<String> = std::fs::read_dir(ipam_data_dir.join(name))
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.parse::<std::net::Ipv4Addr>().is_ok())
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found
}

/// The `podswitch-cni` binary cargo built: next to `podswitch` (the agent
/// binary a test runs, if given), else in the profile directory of the
/// running test (`target/<profile>/`, the parent of its `deps/`). Panics
/// with what to build when it is absent.
pub fn plugin_binary(podswitch: Option<&Path>) -> PathBuf {
    let mut candidates = Vec::new();
    if let Some(dir) = podswitch.and_then(Path::parent) {
        candidates.push(dir.join("podswitch-cni"));
    }
    if let Some(dir) = std::env::current_exe()
        .ok()
        .as_deref()
        .and_then(Path::parent)
        .and_then(Path::parent)
    {
        candidates.push(dir.join("podswitch-cni"));
    }
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .unwrap_or_else(|| {
            panic!(
                "podswitch-cni is not built (looked at {candidates:?}); run `cargo build --release -p cni` \
                 (or `cargo build -p cni` for a debug test run) first"
            )
        })
}
