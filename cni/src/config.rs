//! The network configuration on stdin: one plugin's config as the runtime
//! derives it from the conflist, parsed and validated.
//!
//! Codes: 6 when stdin is not JSON or a field has the wrong JSON type, 1
//! for a `cniVersion` this plugin does not speak, 7 for a missing or wrong
//! value (`name`, `type`, `ipam`, `ipam.type`, `mtu`). Every message names
//! the field. `runtimeConfig.portMappings` (sent by runtimes when the
//! conflist declares the `portMappings` capability: the pod's `hostPort`s)
//! is read into [`NetConf::port_mappings`]. Fields this plugin does not use
//! (other `runtimeConfig` keys, `args`, `capabilities`, ...) are tolerated
//! and kept in [`NetConf::raw`], which is what IPAM delegates receive.

use std::path::PathBuf;

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{Map, Value};

use api::ports::PortMapping;

use crate::error::CniError;
use crate::version::{supported_list, Version};

/// The `type` this plugin answers to.
pub const PLUGIN_TYPE: &str = "podswitch-cni";
/// Where the agent listens unless `agentSocket` says otherwise.
pub const DEFAULT_AGENT_SOCKET: &str = api::DEFAULT_SOCKET;
/// Where records are kept unless `stateDir` says otherwise.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/cni/podswitch";
/// The smallest MTU an IPv4 host must accept (RFC 791).
pub const MIN_MTU: u32 = 576;
pub const MAX_MTU: u32 = 65535;

/// One entry of `cni.dev/valid-attachments` (GC).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct ValidAttachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
}

/// A validated network configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct NetConf {
    pub version: Version,
    pub name: String,
    /// The pod MTU, when the config sets one (else the agent's).
    pub mtu: Option<u32>,
    pub ipam_type: String,
    pub agent_socket: PathBuf,
    pub state_dir: PathBuf,
    pub prev_result: Option<Value>,
    pub valid_attachments: Option<Vec<ValidAttachment>>,
    /// The pod's host ports, as the runtime asked for them.
    pub port_mappings: Vec<PortMapping>,
    /// The whole config as received.
    pub raw: Value,
}

fn decode_error(field: &str, expected: &str, value: &Value) -> CniError {
    CniError::Decode(format!(
        "network config field {field}: expected {expected}, got {}",
        kind_of(value)
    ))
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn string<'a>(
    object: &'a Map<String, Value>,
    prefix: &str,
    field: &str,
) -> Result<Option<&'a str>, CniError> {
    match object.get(field) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(decode_error(&format!("{prefix}{field}"), "a string", other)),
    }
}

fn required_string<'a>(
    object: &'a Map<String, Value>,
    prefix: &str,
    field: &str,
) -> Result<&'a str, CniError> {
    match string(object, prefix, field)? {
        Some(s) if !s.is_empty() => Ok(s),
        Some(_) => Err(CniError::config(format!("{prefix}{field}"), "is empty")),
        None => Err(CniError::config(format!("{prefix}{field}"), "is missing")),
    }
}

fn typed<T: DeserializeOwned>(
    object: &Map<String, Value>,
    field: &str,
    expected: &str,
) -> Result<Option<T>, CniError> {
    object
        .get(field)
        .map(|v| {
            T::deserialize(v).map_err(|e| {
                CniError::Decode(format!(
                    "network config field {field}: expected {expected}: {e}"
                ))
            })
        })
        .transpose()
}

/// Whether `name` can be a network name (it becomes a directory name):
/// letters, digits, `_`, `.`, `-`, starting with a letter or digit.
fn valid_network_name(name: &str) -> bool {
    crate::env::valid_container_id(name)
}

/// The `cniVersion` of `stdin` if it is one this plugin speaks: the version
/// an error reply should carry.
pub fn reply_version(stdin: &[u8]) -> Option<Version> {
    let value: Value = serde_json::from_slice(stdin).ok()?;
    Version::parse(value.get("cniVersion")?.as_str()?).filter(|v| v.is_supported())
}

impl NetConf {
    /// Parses and validates `stdin`.
    pub fn parse(stdin: &[u8]) -> Result<NetConf, CniError> {
        if stdin.iter().all(u8::is_ascii_whitespace) {
            return Err(CniError::Decode(
                "stdin is empty: the runtime must pass the network config on stdin".into(),
            ));
        }
        let raw: Value = serde_json::from_slice(stdin).map_err(|e| {
            CniError::Decode(format!("the network config on stdin is not JSON: {e}"))
        })?;
        let Value::Object(object) = &raw else {
            return Err(decode_error("(top level)", "an object", &raw));
        };
        let version_text =
            string(object, "", "cniVersion")?.ok_or_else(|| CniError::IncompatibleVersion {
                version: String::new(),
                supported: format!(
                    "{} (the config has no cniVersion, which means 0.1.0)",
                    supported_list()
                ),
            })?;
        let version = Version::parse(version_text)
            .filter(|v| v.is_supported())
            .ok_or_else(|| CniError::IncompatibleVersion {
                version: version_text.to_string(),
                supported: supported_list(),
            })?;
        let plugin_type = required_string(object, "", "type")?;
        if plugin_type != PLUGIN_TYPE {
            return Err(CniError::config(
                "type",
                format!("is {plugin_type:?}, but this plugin is {PLUGIN_TYPE:?}"),
            ));
        }
        let name = required_string(object, "", "name")?;
        if !valid_network_name(name) {
            return Err(CniError::config(
                "name",
                format!("{name:?} is not a network name (letters, digits, '_', '.', '-', starting with a letter or digit)"),
            ));
        }
        let mtu = match object.get("mtu") {
            None => None,
            Some(Value::Number(n)) => {
                let mtu = n
                    .as_i64()
                    .ok_or_else(|| decode_error("mtu", "an integer", &Value::Number(n.clone())))?;
                let ok = u32::try_from(mtu)
                    .ok()
                    .filter(|m| (MIN_MTU..=MAX_MTU).contains(m));
                Some(ok.ok_or_else(|| {
                    CniError::config("mtu", format!("{mtu} is outside {MIN_MTU}..={MAX_MTU}"))
                })?)
            }
            Some(other) => return Err(decode_error("mtu", "an integer", other)),
        };
        let ipam = match object.get("ipam") {
            None => return Err(CniError::config("ipam", "is missing (an object with the IPAM plugin's type, e.g. {\"type\": \"host-local\", ...})")),
            Some(Value::Object(ipam)) => ipam,
            Some(other) => return Err(decode_error("ipam", "an object", other)),
        };
        let ipam_type = required_string(ipam, "ipam.", "type")?;
        if ipam_type.contains('/') || ipam_type == "." || ipam_type == ".." {
            return Err(CniError::config(
                "ipam.type",
                format!("{ipam_type:?} is not a plugin name (it is looked up in CNI_PATH)"),
            ));
        }
        let path = |field: &str, default: &str| -> Result<PathBuf, CniError> {
            match string(object, "", field)? {
                None => Ok(PathBuf::from(default)),
                Some("") => Err(CniError::config(field, "is empty")),
                Some(s) => Ok(PathBuf::from(s)),
            }
        };
        let prev_result = match object.get("prevResult") {
            None | Some(Value::Null) => None,
            Some(v @ Value::Object(_)) => Some(v.clone()),
            Some(other) => return Err(decode_error("prevResult", "an object", other)),
        };
        Ok(NetConf {
            version,
            name: name.to_string(),
            mtu,
            ipam_type: ipam_type.to_string(),
            agent_socket: path("agentSocket", DEFAULT_AGENT_SOCKET)?,
            state_dir: path("stateDir", DEFAULT_STATE_DIR)?,
            prev_result,
            valid_attachments: typed(
                object,
                "cni.dev/valid-attachments",
                "an array of {\"containerID\", \"ifname\"} objects",
            )?,
            port_mappings: port_mappings(object)?,
            raw: raw.clone(),
        })
    }
}

/// One `runtimeConfig.portMappings` entry, as runtimes send it.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RuntimePortMapping {
    host_port: i64,
    container_port: i64,
    #[serde(default)]
    protocol: String,
    #[serde(default, rename = "hostIP")]
    host_ip: String,
}

/// `runtimeConfig.portMappings`, checked: ports 1-65535, protocol tcp or
/// udp (empty: tcp), hostIP empty or an IPv4 address.
fn port_mappings(object: &Map<String, Value>) -> Result<Vec<PortMapping>, CniError> {
    let Some(runtime) = object.get("runtimeConfig") else {
        return Ok(Vec::new());
    };
    let Value::Object(runtime) = runtime else {
        return Err(decode_error("runtimeConfig", "an object", runtime));
    };
    let list: Vec<RuntimePortMapping> = typed(
        runtime,
        "portMappings",
        "an array of {\"hostPort\", \"containerPort\", \"protocol\", \"hostIP\"} objects",
    )?
    .unwrap_or_default();
    let mut out = Vec::new();
    for (i, m) in list.into_iter().enumerate() {
        let field = format!("runtimeConfig.portMappings[{i}]");
        let port = |n: i64, what: &str| {
            u16::try_from(n).ok().filter(|p| *p != 0).ok_or_else(|| {
                CniError::config(
                    format!("{field}.{what}"),
                    format!("{n} is not a port (1-65535)"),
                )
            })
        };
        let mapping = PortMapping {
            host_port: port(m.host_port, "hostPort")?,
            container_port: port(m.container_port, "containerPort")?,
            protocol: if m.protocol.is_empty() {
                "tcp".into()
            } else {
                m.protocol.to_ascii_lowercase()
            },
            host_ip: m.host_ip,
        };
        mapping
            .to_model()
            .map_err(|e| CniError::config(field.clone(), e))?;
        out.push(mapping);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn base() -> Value {
        json!({
            "cniVersion": "1.0.0",
            "name": "podnet",
            "type": "podswitch-cni",
            "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.244.1.0/24"}]]},
            "runtimeConfig": {"portMappings": []},
            "args": {"cni": {"x": 1}},
        })
    }

    fn parse(v: &Value) -> Result<NetConf, CniError> {
        NetConf::parse(v.to_string().as_bytes())
    }

    fn with(field: &str, value: Value) -> Value {
        let mut v = base();
        v[field] = value;
        v
    }

    fn without(field: &str) -> Value {
        let mut v = base();
        v.as_object_mut().unwrap().remove(field);
        v
    }

    fn code_and_msg(r: Result<NetConf, CniError>) -> (u32, String) {
        let e = r.unwrap_err();
        (e.code(), e.to_string())
    }

    #[test]
    fn a_good_config_parses_with_defaults() {
        let c = parse(&base()).unwrap();
        assert_eq!(c.version, Version::V1_0_0);
        assert_eq!(c.name, "podnet");
        assert_eq!(c.ipam_type, "host-local");
        assert_eq!(c.mtu, None);
        assert_eq!(c.agent_socket, PathBuf::from("/run/podswitch/agent.sock"));
        assert_eq!(c.state_dir, PathBuf::from("/var/lib/cni/podswitch"));
        assert_eq!(c.raw["runtimeConfig"], json!({"portMappings": []}));
        let c = parse(&with("mtu", json!(1450))).unwrap();
        assert_eq!(c.mtu, Some(1450));
        let mut v = base();
        v["agentSocket"] = json!("/tmp/a.sock");
        v["stateDir"] = json!("/tmp/state");
        v["cniVersion"] = json!("0.4.0");
        v["cni.dev/valid-attachments"] = json!([{"containerID": "c1", "ifname": "eth0"}]);
        let c = parse(&v).unwrap();
        assert_eq!(c.agent_socket, PathBuf::from("/tmp/a.sock"));
        assert_eq!(c.state_dir, PathBuf::from("/tmp/state"));
        assert_eq!(c.version, Version::V0_4_0);
        assert_eq!(
            c.valid_attachments,
            Some(vec![ValidAttachment {
                container_id: "c1".into(),
                ifname: "eth0".into()
            }])
        );
    }

    #[test]
    fn decoding_failures_are_code_6() {
        for bad in ["", "  ", "{", "not json", "[1,2]", "\"x\""] {
            assert_eq!(
                NetConf::parse(bad.as_bytes()).unwrap_err().code(),
                6,
                "{bad:?}"
            );
        }
        for (field, value) in [
            ("name", json!(3)),
            ("type", json!(["podswitch-cni"])),
            ("mtu", json!("1450")),
            ("mtu", json!(1450.5)),
            ("ipam", json!("host-local")),
            ("agentSocket", json!(1)),
            ("prevResult", json!("x")),
            ("cni.dev/valid-attachments", json!([{"containerID": 1}])),
            ("cniVersion", json!(1.0)),
        ] {
            let (code, msg) = code_and_msg(parse(&with(field, value.clone())));
            assert_eq!(code, 6, "{field}={value}: {msg}");
            assert!(msg.contains(field), "{field}: {msg}");
        }
    }

    #[test]
    fn bad_versions_are_code_1() {
        for bad in ["0.3.1", "2.0.0", "1.0", "banana", ""] {
            let (code, msg) = code_and_msg(parse(&with("cniVersion", json!(bad))));
            assert_eq!(code, 1, "{bad}: {msg}");
            assert!(msg.contains("cniVersion"), "{msg}");
        }
        assert_eq!(code_and_msg(parse(&without("cniVersion"))).0, 1);
    }

    #[test]
    fn invalid_network_configs_are_code_7() {
        let mut no_ipam_type = base();
        no_ipam_type["ipam"].as_object_mut().unwrap().remove("type");
        let cases = [
            (without("name"), "name"),
            (with("name", json!("")), "name"),
            (with("name", json!("../x")), "name"),
            (without("type"), "type"),
            (with("type", json!("bridge")), "type"),
            (without("ipam"), "ipam"),
            (no_ipam_type, "ipam.type"),
            (with("ipam", json!({"type": "../../bin/sh"})), "ipam.type"),
            (with("mtu", json!(575)), "mtu"),
            (with("mtu", json!(65536)), "mtu"),
            (with("mtu", json!(-1)), "mtu"),
            (with("stateDir", json!("")), "stateDir"),
        ];
        for (config, field) in cases {
            let (code, msg) = code_and_msg(parse(&config));
            assert_eq!(code, 7, "{field}: {msg}");
            assert!(msg.contains(field), "{field}: {msg}");
        }
        assert!(parse(&with("mtu", json!(576))).is_ok());
        assert!(parse(&with("mtu", json!(65535))).is_ok());
    }

    #[test]
    fn the_reply_version_is_the_configs_when_supported() {
        assert_eq!(
            reply_version(br#"{"cniVersion":"0.4.0"}"#),
            Some(Version::V0_4_0)
        );
        assert_eq!(reply_version(br#"{"cniVersion":"9.9.9"}"#), None);
        assert_eq!(reply_version(b"junk"), None);
    }
}
