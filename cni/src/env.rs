//! The CNI environment: `CNI_COMMAND`, `CNI_CONTAINERID`, `CNI_NETNS`,
//! `CNI_IFNAME`, `CNI_ARGS`, `CNI_PATH`, validated per command. Any problem
//! is code 4 (invalid environment variables) naming the variable.
//!
//! The container ID and interface name end up in file names (records) and
//! interface names, so they are checked strictly: the container ID as the
//! spec defines it (letters, digits, `_`, `.`, `-`, starting with a letter
//! or digit), the interface name as the kernel accepts it.

use std::path::PathBuf;

use crate::error::CniError;

/// What the runtime asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Version,
    Status,
    Gc,
}

impl Command {
    /// Parses `CNI_COMMAND`.
    pub fn parse(text: &str) -> Option<Command> {
        Some(match text {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "VERSION" => Command::Version,
            "STATUS" => Command::Status,
            "GC" => Command::Gc,
            _ => return None,
        })
    }

    /// The name the spec uses.
    pub fn name(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Version => "VERSION",
            Command::Status => "STATUS",
            Command::Gc => "GC",
        }
    }
}

/// The validated environment of one invocation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Env {
    pub command: Command,
    /// `CNI_CONTAINERID`; empty for commands that take none.
    pub container_id: String,
    /// `CNI_NETNS`; `None` when not set (allowed for DEL).
    pub netns: Option<PathBuf>,
    /// `CNI_IFNAME`; empty for commands that take none.
    pub ifname: String,
    pub args: CniArgs,
    /// `CNI_ARGS` as given (IPAM delegates receive it unchanged).
    pub args_text: String,
    /// `CNI_PATH`: where plugin binaries are looked up, in order.
    pub path: Vec<PathBuf>,
}

/// The pod identity `CNI_ARGS` carries (Kubernetes runtimes set these).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CniArgs {
    pub pod_namespace: String,
    pub pod_name: String,
    pub infra_container_id: String,
    pub pod_uid: String,
}

fn invalid(var: &'static str, reason: impl Into<String>) -> CniError {
    CniError::InvalidEnv {
        var,
        reason: reason.into(),
    }
}

impl CniArgs {
    /// Parses `K=V;K=V`. A pair without exactly one `=` or with an empty key
    /// is malformed; keys other than the Kubernetes ones are refused unless
    /// `IgnoreUnknown` is `1` or `true` (as the reference plugins do).
    pub fn parse(text: &str) -> Result<CniArgs, CniError> {
        let mut args = CniArgs::default();
        if text.is_empty() {
            return Ok(args);
        }
        let mut unknown = Vec::new();
        let mut ignore_unknown = false;
        for pair in text.split(';') {
            let mut parts = pair.split('=');
            let (Some(key), Some(value), None) = (parts.next(), parts.next(), parts.next()) else {
                return Err(invalid(
                    "CNI_ARGS",
                    format!("{pair:?} is not a KEY=VALUE pair (pairs are separated by ';')"),
                ));
            };
            if key.is_empty() {
                return Err(invalid("CNI_ARGS", format!("{pair:?} has an empty key")));
            }
            match key {
                "IgnoreUnknown" => {
                    ignore_unknown = matches!(value.to_ascii_lowercase().as_str(), "1" | "true")
                }
                "K8S_POD_NAMESPACE" => args.pod_namespace = value.to_string(),
                "K8S_POD_NAME" => args.pod_name = value.to_string(),
                "K8S_POD_INFRA_CONTAINER_ID" => args.infra_container_id = value.to_string(),
                "K8S_POD_UID" => args.pod_uid = value.to_string(),
                other => unknown.push(other.to_string()),
            }
        }
        if !unknown.is_empty() && !ignore_unknown {
            return Err(invalid(
                "CNI_ARGS",
                format!(
                    "unknown key(s) {} (add IgnoreUnknown=1 to pass keys this plugin does not use)",
                    unknown.join(", ")
                ),
            ));
        }
        Ok(args)
    }
}

/// Whether `id` is a container ID as the spec defines it.
pub fn valid_container_id(id: &str) -> bool {
    let mut bytes = id.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphanumeric())
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// Why `name` cannot be an interface name, if it cannot.
pub fn interface_name_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        Some("is empty".into())
    } else if name.len() > 15 {
        Some(format!("{name:?} is longer than 15 bytes"))
    } else if name == "." || name == ".." {
        Some(format!("{name:?} is not an interface name"))
    } else if name
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control())
    {
        Some(format!(
            "{name:?} contains a character interface names cannot have ('/', ':', space or control)"
        ))
    } else {
        None
    }
}

impl Env {
    /// Reads and validates the environment through `get` (the process
    /// environment in `main`, a map in tests).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Env, CniError> {
        let raw = get("CNI_COMMAND").unwrap_or_default();
        if raw.is_empty() {
            return Err(invalid(
                "CNI_COMMAND",
                "is not set (expected ADD, DEL, CHECK, VERSION, STATUS or GC)",
            ));
        }
        let command = Command::parse(&raw).ok_or_else(|| {
            invalid(
                "CNI_COMMAND",
                format!(
                    "{raw:?} is not a command (expected ADD, DEL, CHECK, VERSION, STATUS or GC)"
                ),
            )
        })?;
        let set = |var: &str| get(var).filter(|v| !v.is_empty());
        let (needs_container, needs_netns, needs_path) = match command {
            Command::Add | Command::Check => (true, true, true),
            Command::Del => (true, false, true),
            Command::Gc => (false, false, true),
            Command::Version | Command::Status => (false, false, false),
        };
        let required = |var: &'static str| {
            set(var).ok_or_else(|| {
                invalid(
                    var,
                    format!("is required for {} but not set", command.name()),
                )
            })
        };
        let mut env = Env {
            command,
            container_id: String::new(),
            netns: set("CNI_NETNS").map(PathBuf::from),
            ifname: String::new(),
            args: CniArgs::default(),
            args_text: get("CNI_ARGS").unwrap_or_default(),
            path: Vec::new(),
        };
        if needs_container {
            env.container_id = required("CNI_CONTAINERID")?;
            if !valid_container_id(&env.container_id) {
                return Err(invalid(
                    "CNI_CONTAINERID",
                    format!(
                        "{:?} is not a container ID (letters, digits, '_', '.', '-', starting with a letter or digit)",
                        env.container_id
                    ),
                ));
            }
            env.ifname = required("CNI_IFNAME")?;
            if let Some(problem) = interface_name_problem(&env.ifname) {
                return Err(invalid("CNI_IFNAME", problem));
            }
            env.args = CniArgs::parse(&env.args_text)?;
        }
        if needs_netns {
            env.netns = Some(PathBuf::from(required("CNI_NETNS")?));
        }
        if needs_path {
            let path = required("CNI_PATH")?;
            env.path = path
                .split(':')
                .filter(|d| !d.is_empty())
                .map(PathBuf::from)
                .collect();
            if env.path.is_empty() {
                return Err(invalid("CNI_PATH", format!("{path:?} names no directory")));
            }
        }
        Ok(env)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> Result<Env, CniError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Env::from_lookup(|k| map.get(k).cloned())
    }

    const FULL: [(&str, &str); 6] = [
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "abc123"),
        ("CNI_NETNS", "/var/run/netns/x"),
        ("CNI_IFNAME", "eth0"),
        ("CNI_ARGS", "IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=web-0;K8S_POD_INFRA_CONTAINER_ID=abc123"),
        ("CNI_PATH", "/opt/cni/bin::/usr/lib/cni"),
    ];

    fn without(command: &str, missing: &str) -> Result<Env, CniError> {
        let pairs: Vec<(&str, &str)> = FULL
            .iter()
            .filter(|(k, _)| *k != missing)
            .map(|(k, v)| {
                if *k == "CNI_COMMAND" {
                    (*k, command)
                } else {
                    (*k, *v)
                }
            })
            .collect();
        env(&pairs)
    }

    fn failing_var(result: Result<Env, CniError>) -> &'static str {
        match result {
            Err(CniError::InvalidEnv { var, .. }) => var,
            other => panic!("expected an invalid-env error, got {other:?}"),
        }
    }

    #[test]
    fn a_full_add_environment_parses() {
        let e = env(&FULL).unwrap();
        assert_eq!(e.command, Command::Add);
        assert_eq!(e.container_id, "abc123");
        assert_eq!(e.ifname, "eth0");
        assert_eq!(e.netns, Some(PathBuf::from("/var/run/netns/x")));
        assert_eq!(
            e.path,
            vec![PathBuf::from("/opt/cni/bin"), PathBuf::from("/usr/lib/cni")]
        );
        assert_eq!(e.args.pod_namespace, "ns");
        assert_eq!(e.args.pod_name, "web-0");
    }

    #[test]
    fn required_variables_per_command() {
        for command in ["ADD", "CHECK"] {
            for var in ["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"] {
                assert_eq!(failing_var(without(command, var)), var, "{command} {var}");
            }
        }
        for var in ["CNI_CONTAINERID", "CNI_IFNAME", "CNI_PATH"] {
            assert_eq!(failing_var(without("DEL", var)), var, "DEL {var}");
        }
        let del = without("DEL", "CNI_NETNS").unwrap();
        assert_eq!(del.netns, None);
        assert_eq!(failing_var(without("GC", "CNI_PATH")), "CNI_PATH");
        assert!(env(&[("CNI_COMMAND", "GC"), ("CNI_PATH", "/x")]).is_ok());
        assert!(env(&[("CNI_COMMAND", "VERSION")]).is_ok());
        assert!(env(&[("CNI_COMMAND", "STATUS")]).is_ok());
    }

    #[test]
    fn missing_or_unknown_command_is_code_4() {
        for bad in [
            env(&[]),
            env(&[("CNI_COMMAND", "")]),
            env(&[("CNI_COMMAND", "add")]),
        ] {
            let e = bad.unwrap_err();
            assert_eq!(e.code(), 4);
            assert!(e.to_string().contains("CNI_COMMAND"), "{e}");
        }
    }

    #[test]
    fn container_ids_and_interface_names_are_checked() {
        for bad in ["../etc", "-abc", "a/b", "a b", ".x"] {
            let mut pairs = FULL.to_vec();
            pairs[1].1 = bad;
            assert_eq!(failing_var(env(&pairs)), "CNI_CONTAINERID", "{bad}");
        }
        for bad in ["eth0/x", "a-name-much-too-long", "..", "et h0"] {
            let mut pairs = FULL.to_vec();
            pairs[3].1 = bad;
            assert_eq!(failing_var(env(&pairs)), "CNI_IFNAME", "{bad}");
        }
        assert!(valid_container_id("0123abcdef_x.y-z"));
    }

    #[test]
    fn cni_args_parse_and_malformed_args_are_code_4() {
        let a = CniArgs::parse("K8S_POD_NAMESPACE=default;K8S_POD_NAME=p;K8S_POD_UID=u").unwrap();
        assert_eq!(
            (a.pod_namespace.as_str(), a.pod_name.as_str()),
            ("default", "p")
        );
        assert_eq!(a.pod_uid, "u");
        assert_eq!(CniArgs::parse("").unwrap(), CniArgs::default());
        assert!(CniArgs::parse("IgnoreUnknown=true;FOO=bar").is_ok());
        for bad in [
            "FOO=bar",
            "K8S_POD_NAME",
            "=x",
            "a=b=c",
            "K8S_POD_NAME=p;",
            ";",
        ] {
            let e = CniArgs::parse(bad).unwrap_err();
            assert_eq!(e.code(), 4, "{bad}");
            assert!(e.to_string().contains("CNI_ARGS"), "{e}");
        }
        let mut pairs = FULL.to_vec();
        pairs[4].1 = "K8S_POD_NAME";
        assert_eq!(failing_var(env(&pairs)), "CNI_ARGS");
    }
}
