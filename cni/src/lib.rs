//! `podswitch-cni`: the CNI plugin (spec 1.0.0 and 1.1.0; configs in 0.4.0
//! are accepted too) that wires pods to the podswitch agent.
//!
//! The runtime executes the plugin in the node's network namespace (where
//! the agent runs) with `CNI_*` variables ([`env`]) and the network config
//! on stdin ([`config`]); the answer is the spec's JSON on stdout
//! ([`result`], [`error`]).
//!
//! | command | module | what it does |
//! |---------|--------|--------------|
//! | ADD | [`add`] | record, IPAM ADD, veth into the pod, register with the agent; undone in reverse on any failure |
//! | DEL | [`del`] | detach, delete the veth, IPAM DEL, drop the record; idempotent |
//! | CHECK | [`check`] | the pod interface, its routes and MTU, the host veth, the agent's port, IPAM CHECK |
//! | STATUS | [`status`] | whether the agent is ready |
//! | GC | [`gc`] | DEL for every recorded attachment the runtime no longer lists, and IPAM GC |
//! | VERSION | here | the versions this plugin speaks |
//!
//! It depends on `api` (to register pods with the agent), `netlink` (veths,
//! addresses, routes, namespaces) and `tables`, and must never depend on the
//! agent, the dataplane, tokio, kube or libbpf: it is a small binary a
//! runtime executes once per pod.

pub mod add;
pub mod agent;
pub mod check;
pub mod config;
pub mod del;
pub mod env;
pub mod error;
pub mod gc;
pub mod ipam;
pub mod naming;
pub mod netns;
pub mod record;
pub mod result;
pub mod status;
pub mod version;
pub mod wiring;

use serde::Serialize;

use crate::config::NetConf;
use crate::env::{Command, Env};
use crate::error::CniError;
use crate::version::Version;

/// One invocation's validated inputs.
#[derive(Clone, Debug)]
pub struct Request {
    pub env: Env,
    pub conf: NetConf,
}

/// What `VERSION` prints.
#[derive(Serialize)]
struct VersionReply {
    #[serde(rename = "cniVersion")]
    cni_version: String,
    #[serde(rename = "supportedVersions")]
    supported_versions: Vec<String>,
}

/// `VERSION`'s answer.
pub fn version_reply() -> String {
    let reply = VersionReply {
        cni_version: version::CURRENT.to_string(),
        supported_versions: version::SUPPORTED.iter().map(Version::to_string).collect(),
    };
    serde_json::to_string(&reply).unwrap_or_default()
}

/// What to print and how to exit.
#[derive(Debug)]
pub struct Outcome {
    /// Printed on stdout (a result or an error object), if anything.
    pub stdout: Option<String>,
    pub success: bool,
}

/// Runs one invocation: the environment through `get`, stdin (read only
/// for commands that take a config) through `read_stdin`.
pub fn run(
    get: impl Fn(&str) -> Option<String>,
    read_stdin: impl FnOnce() -> std::io::Result<Vec<u8>>,
) -> Outcome {
    let mut stdin = Vec::new();
    let result = (|| {
        let env = Env::from_lookup(get)?;
        if env.command == Command::Version {
            return Ok(Some(version_reply()));
        }
        stdin = read_stdin().map_err(CniError::io("cannot read the network config from stdin"))?;
        let conf = NetConf::parse(&stdin)?;
        dispatch(&Request { env, conf })
    })();
    match result {
        Ok(stdout) => Outcome {
            stdout,
            success: true,
        },
        Err(e) => {
            let version = config::reply_version(&stdin).unwrap_or(version::CURRENT);
            let reply = serde_json::to_string(&e.reply(&version.to_string())).unwrap_or_default();
            Outcome {
                stdout: Some(reply),
                success: false,
            }
        }
    }
}

fn dispatch(request: &Request) -> Result<Option<String>, CniError> {
    match request.env.command {
        Command::Add => add::add(request).map(Some),
        Command::Del => del::del(request).map(|()| None),
        Command::Check => check::check(request).map(|()| None),
        Command::Status => status::status(request).map(|()| None),
        Command::Gc => gc::gc(request).map(|()| None),
        Command::Version => Ok(Some(version_reply())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_needs_nothing_else() {
        let out = run(
            |k| (k == "CNI_COMMAND").then(|| "VERSION".to_string()),
            || panic!("VERSION must not read stdin"),
        );
        assert!(out.success);
        assert_eq!(
            out.stdout.as_deref(),
            Some(r#"{"cniVersion":"1.1.0","supportedVersions":["0.4.0","1.0.0","1.1.0"]}"#)
        );
    }

    #[test]
    fn errors_carry_the_configs_version_and_code() {
        let get = |k: &str| (k == "CNI_COMMAND").then(|| "STATUS".to_string());
        let out = run(get, || {
            Ok(
                br#"{"cniVersion":"0.4.0","name":"n","type":"bridge","ipam":{"type":"x"}}"#
                    .to_vec(),
            )
        });
        assert!(!out.success);
        let reply: serde_json::Value = serde_json::from_str(&out.stdout.unwrap()).unwrap();
        assert_eq!(reply["cniVersion"], "0.4.0");
        assert_eq!(reply["code"], 7);
        assert!(reply["msg"].as_str().unwrap().contains("type"));

        let out = run(get, || Ok(b"{".to_vec()));
        let reply: serde_json::Value = serde_json::from_str(&out.stdout.unwrap()).unwrap();
        assert_eq!(reply["cniVersion"], "1.1.0");
        assert_eq!(reply["code"], 6);

        let out = run(|_| None, || Ok(Vec::new()));
        let reply: serde_json::Value = serde_json::from_str(&out.stdout.unwrap()).unwrap();
        assert_eq!(reply["code"], 4);
    }
}
