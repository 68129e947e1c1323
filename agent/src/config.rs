//! The agent's configuration: flags, or a JSON file with the same keys
//! (flags win), validated into an [`AgentConfig`] with errors that say which
//! setting is wrong and why.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use afxdp::runner::PollMode;
use api::ports::PodPortKind;
use clap::Args;
use serde::Deserialize;
use tables::model::Cidr;

/// `podswitch agent` flags.
#[derive(Args, Debug, Default, Clone)]
pub struct AgentArgs {
    /// A JSON file with any of the settings below (camelCase keys); flags
    /// override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// This node's name (as in the Node object).
    #[arg(long)]
    pub node_name: Option<String>,
    /// The underlay interface (VXLAN, NodePorts, external IPs).
    #[arg(long)]
    pub uplink: Option<String>,
    /// This node's underlay address.
    #[arg(long)]
    pub node_ip: Option<Ipv4Addr>,
    /// This node's pod CIDR.
    #[arg(long)]
    pub pod_cidr: Option<String>,
    /// Every pod CIDR of the cluster.
    #[arg(long)]
    pub cluster_cidr: Option<String>,
    /// The service CIDR.
    #[arg(long)]
    pub service_cidr: Option<String>,
    /// Worker threads (one per core; worker i serves queue i of every port).
    #[arg(long)]
    pub workers: Option<usize>,
    /// busy (production, benchmarks) or adaptive (sleeps when idle).
    #[arg(long)]
    pub poll_mode: Option<String>,
    /// The port pods get: tap (a TAP device with virtio-net offloads, 64 KB
    /// super-packets) or veth (AF_XDP on a veth's host end). Default veth.
    #[arg(long)]
    pub pod_port: Option<String>,
    /// VXLAN network identifier.
    #[arg(long)]
    pub vni: Option<u32>,
    /// Table source: a static JSON file (see agent::static_source), for
    /// tests.
    #[arg(long = "static")]
    pub static_tables: Option<PathBuf>,
    /// Table source: a folder of Kubernetes manifests, watched.
    #[arg(long)]
    pub manifests: Option<PathBuf>,
    /// Table source: the Kubernetes API through this kubeconfig.
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Table source: the Kubernetes API, configured from KUBECONFIG,
    /// ~/.kube/config or the in-cluster service account.
    #[arg(long)]
    pub kubernetes: bool,
    /// Local API socket.
    #[arg(long)]
    pub socket: Option<PathBuf>,
    /// The cluster DNS address pods query (kubelet's clusterDNS); the
    /// agent answers it. Default 10.96.0.10.
    #[arg(long)]
    pub cluster_dns: Option<Ipv4Addr>,
    /// The cluster domain. Default cluster.local.
    #[arg(long)]
    pub cluster_domain: Option<String>,
    /// Where DNS queries for names outside the cluster domain go (IP:PORT);
    /// without it they are answered REFUSED.
    #[arg(long)]
    pub dns_upstream: Option<SocketAddr>,
    /// Log lines as text (default) or json (one object per line).
    #[arg(long, value_enum, default_value_t)]
    pub log_format: crate::log::LogFormat,
    /// Log filter: a level (error, warn, info, debug, trace) or per-module
    /// directives (`info,agent::dns=debug`). Default: RUST_LOG, else info.
    #[arg(long)]
    pub log_level: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FileConfig {
    node_name: Option<String>,
    uplink: Option<String>,
    node_ip: Option<Ipv4Addr>,
    pod_cidr: Option<String>,
    cluster_cidr: Option<String>,
    service_cidr: Option<String>,
    workers: Option<usize>,
    poll_mode: Option<String>,
    pod_port: Option<String>,
    vni: Option<u32>,
    #[serde(rename = "static")]
    static_tables: Option<PathBuf>,
    manifests: Option<PathBuf>,
    kubeconfig: Option<PathBuf>,
    #[serde(default)]
    kubernetes: bool,
    socket: Option<PathBuf>,
    cluster_dns: Option<Ipv4Addr>,
    cluster_domain: Option<String>,
    dns_upstream: Option<SocketAddr>,
}

/// Where the agent's tables come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TableSource {
    /// A static JSON file (tests).
    Static(PathBuf),
    /// A folder of manifests.
    Manifests(PathBuf),
    /// The Kubernetes API; `None` for the usual configuration search.
    Kubernetes(Option<PathBuf>),
}

impl TableSource {
    /// The name the status reports.
    pub fn name(&self) -> &'static str {
        match self {
            TableSource::Static(_) => "static",
            TableSource::Manifests(_) => "manifests",
            TableSource::Kubernetes(_) => "kubernetes",
        }
    }
}

/// A validated configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentConfig {
    pub node_name: String,
    pub uplink: String,
    pub node_ip: Ipv4Addr,
    pub pod_cidr: Cidr,
    pub cluster_cidr: Cidr,
    pub service_cidr: Cidr,
    pub workers: usize,
    pub poll_mode: PollMode,
    pub pod_port: PodPortKind,
    pub vni: u32,
    pub source: TableSource,
    pub socket: PathBuf,
    pub cluster_dns: Ipv4Addr,
    /// Lowercase, without the trailing dot.
    pub cluster_domain: String,
    pub dns_upstream: Option<SocketAddr>,
}

/// The default `--cluster-dns`.
pub const DEFAULT_CLUSTER_DNS: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
/// The default `--cluster-domain`.
pub const DEFAULT_CLUSTER_DOMAIN: &str = "cluster.local";

/// `domain` lowercased without its trailing dot, if it is a DNS name.
fn cluster_domain(domain: &str) -> Result<String, ConfigError> {
    let name = domain.trim_end_matches('.').to_ascii_lowercase();
    let label_ok = |l: &str| {
        !l.is_empty() && l.len() <= 63 && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    if name.split('.').all(label_ok) && name.len() <= 253 {
        Ok(name)
    } else {
        Err(ConfigError::Invalid {
            setting: "cluster-domain",
            value: domain.into(),
            message: "must be a DNS name (letters, digits and '-' between dots)".into(),
        })
    }
}

/// A setting that is missing or wrong.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {path}: {message}")]
    File { path: String, message: String },
    #[error("--{setting} is required (or \"{key}\" in --config)")]
    Missing {
        setting: &'static str,
        key: &'static str,
    },
    #[error("--{setting} {value:?}: {message}")]
    Invalid {
        setting: &'static str,
        value: String,
        message: String,
    },
}

impl AgentArgs {
    /// The one table source the flags (over the file) choose.
    fn source(
        &self,
        static_tables: Option<PathBuf>,
        manifests: Option<PathBuf>,
        kubeconfig: Option<PathBuf>,
        kubernetes: bool,
    ) -> Result<TableSource, ConfigError> {
        let flags = self.static_tables.is_some()
            || self.manifests.is_some()
            || self.kubeconfig.is_some()
            || self.kubernetes;
        let (s, m, k, kk) = if flags {
            (
                self.static_tables.clone(),
                self.manifests.clone(),
                self.kubeconfig.clone(),
                self.kubernetes,
            )
        } else {
            (static_tables, manifests, kubeconfig, kubernetes)
        };
        let mut chosen = Vec::new();
        if let Some(p) = s {
            chosen.push(TableSource::Static(p));
        }
        if let Some(p) = m {
            chosen.push(TableSource::Manifests(p));
        }
        if k.is_some() || kk {
            chosen.push(TableSource::Kubernetes(k));
        }
        match chosen.len() {
            1 => Ok(chosen.remove(0)),
            0 => Err(ConfigError::Missing {
                setting: "kubeconfig, --kubernetes, --manifests or --static",
                key: "kubeconfig\", \"kubernetes\", \"manifests\" or \"static",
            }),
            _ => Err(ConfigError::Invalid {
                setting: "kubeconfig/--kubernetes/--manifests/--static",
                value: chosen
                    .iter()
                    .map(TableSource::name)
                    .collect::<Vec<_>>()
                    .join(", "),
                message: "choose one table source".into(),
            }),
        }
    }

    /// Merges the config file (if any) under the flags and validates.
    pub fn resolve(&self) -> Result<AgentConfig, ConfigError> {
        let file = match &self.config {
            Some(path) => {
                let shown = path.display().to_string();
                let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
                    path: shown.clone(),
                    message: e.to_string(),
                })?;
                serde_json::from_str::<FileConfig>(&text).map_err(|e| ConfigError::File {
                    path: shown,
                    message: e.to_string(),
                })?
            }
            None => FileConfig::default(),
        };
        let need = |v: Option<String>, setting, key| {
            v.filter(|s| !s.is_empty())
                .ok_or(ConfigError::Missing { setting, key })
        };
        let cidr = |v: Option<String>, setting, key| -> Result<Cidr, ConfigError> {
            let text = need(v, setting, key)?;
            text.parse().map_err(|message| ConfigError::Invalid {
                setting,
                value: text.clone(),
                message,
            })
        };
        let poll_mode = self
            .poll_mode
            .clone()
            .or(file.poll_mode)
            .unwrap_or_else(|| "adaptive".into());
        let pod_port = self
            .pod_port
            .clone()
            .or(file.pod_port)
            .unwrap_or_else(|| "veth".into());
        let workers = self.workers.or(file.workers).unwrap_or(1);
        if workers == 0 || workers > 64 {
            return Err(ConfigError::Invalid {
                setting: "workers",
                value: workers.to_string(),
                message: "must be 1 to 64".into(),
            });
        }
        let vni = self.vni.or(file.vni).unwrap_or(1);
        if vni > 0x00ff_ffff {
            return Err(ConfigError::Invalid {
                setting: "vni",
                value: vni.to_string(),
                message: "a VNI has 24 bits".into(),
            });
        }
        let uplink = need(self.uplink.clone().or(file.uplink), "uplink", "uplink")?;
        if uplink.len() > 15 {
            return Err(ConfigError::Invalid {
                setting: "uplink",
                value: uplink,
                message: "interface names have at most 15 characters".into(),
            });
        }
        let domain = self
            .cluster_domain
            .clone()
            .or(file.cluster_domain)
            .unwrap_or_else(|| DEFAULT_CLUSTER_DOMAIN.into());
        Ok(AgentConfig {
            cluster_dns: self
                .cluster_dns
                .or(file.cluster_dns)
                .unwrap_or(DEFAULT_CLUSTER_DNS),
            cluster_domain: cluster_domain(&domain)?,
            dns_upstream: self.dns_upstream.or(file.dns_upstream),
            node_name: need(
                self.node_name.clone().or(file.node_name),
                "node-name",
                "nodeName",
            )?,
            uplink,
            node_ip: self.node_ip.or(file.node_ip).ok_or(ConfigError::Missing {
                setting: "node-ip",
                key: "nodeIp",
            })?,
            pod_cidr: cidr(
                self.pod_cidr.clone().or(file.pod_cidr),
                "pod-cidr",
                "podCidr",
            )?,
            cluster_cidr: cidr(
                self.cluster_cidr.clone().or(file.cluster_cidr),
                "cluster-cidr",
                "clusterCidr",
            )?,
            service_cidr: cidr(
                self.service_cidr.clone().or(file.service_cidr),
                "service-cidr",
                "serviceCidr",
            )?,
            workers,
            poll_mode: poll_mode.parse().map_err(|message| ConfigError::Invalid {
                setting: "poll-mode",
                value: poll_mode.clone(),
                message,
            })?,
            pod_port: pod_port.parse().map_err(|message| ConfigError::Invalid {
                setting: "pod-port",
                value: pod_port.clone(),
                message,
            })?,
            vni,
            source: self.source(
                file.static_tables,
                file.manifests,
                file.kubeconfig,
                file.kubernetes,
            )?,
            socket: self
                .socket
                .clone()
                .or(file.socket)
                .unwrap_or_else(|| api::DEFAULT_SOCKET.into()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> AgentArgs {
        AgentArgs {
            node_name: Some("node1".into()),
            uplink: Some("eth0".into()),
            node_ip: Some(Ipv4Addr::new(198, 18, 0, 1)),
            pod_cidr: Some("10.244.1.0/24".into()),
            cluster_cidr: Some("10.244.0.0/16".into()),
            service_cidr: Some("10.96.0.0/12".into()),
            static_tables: Some("/tmp/t.json".into()),
            ..AgentArgs::default()
        }
    }

    #[test]
    fn flags_resolve_with_defaults() {
        let c = args().resolve().unwrap();
        assert_eq!((c.workers, c.poll_mode, c.vni), (1, PollMode::Adaptive, 1));
        assert_eq!(c.pod_port, PodPortKind::Veth);
        assert_eq!(c.pod_cidr.to_string(), "10.244.1.0/24");
        let tap = AgentArgs {
            pod_port: Some("tap".into()),
            ..args()
        };
        assert_eq!(tap.resolve().unwrap().pod_port, PodPortKind::Tap);
        assert_eq!(
            (c.cluster_dns, c.cluster_domain.as_str(), c.dns_upstream),
            (DEFAULT_CLUSTER_DNS, "cluster.local", None)
        );
    }

    #[test]
    fn dns_settings() {
        let c = AgentArgs {
            cluster_domain: Some("Corp.Example.".into()),
            dns_upstream: Some("198.18.0.254:53".parse().unwrap()),
            ..args()
        }
        .resolve()
        .unwrap();
        assert_eq!(c.cluster_domain, "corp.example");
        assert_eq!(c.dns_upstream, Some("198.18.0.254:53".parse().unwrap()));
        let e = AgentArgs {
            cluster_domain: Some("bad..name".into()),
            ..args()
        }
        .resolve()
        .unwrap_err()
        .to_string();
        assert!(e.contains("--cluster-domain"), "{e}");
    }

    #[test]
    fn errors_name_the_setting() {
        let e = AgentArgs {
            uplink: None,
            ..args()
        }
        .resolve()
        .unwrap_err()
        .to_string();
        assert!(e.contains("--uplink is required"), "{e}");
        let e = AgentArgs {
            pod_cidr: Some("10.244.1.0".into()),
            ..args()
        }
        .resolve()
        .unwrap_err()
        .to_string();
        assert!(e.contains("--pod-cidr \"10.244.1.0\""), "{e}");
        let e = AgentArgs {
            poll_mode: Some("spin".into()),
            ..args()
        }
        .resolve()
        .unwrap_err()
        .to_string();
        assert!(e.contains("--poll-mode"), "{e}");
        let e = AgentArgs {
            pod_port: Some("macvlan".into()),
            ..args()
        }
        .resolve()
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("--pod-port") && e.contains("\"tap\" or \"veth\""),
            "{e}"
        );
        let e = AgentArgs {
            workers: Some(0),
            ..args()
        }
        .resolve()
        .unwrap_err()
        .to_string();
        assert!(e.contains("--workers"), "{e}");
    }

    #[test]
    fn file_settings_sit_under_flags() {
        let path =
            std::env::temp_dir().join(format!("podswitch-config-{}.json", std::process::id()));
        std::fs::write(
            &path,
            r#"{"nodeName": "from-file", "workers": 2, "vni": 7, "pollMode": "busy"}"#,
        )
        .unwrap();
        let c = AgentArgs {
            config: Some(path.clone()),
            node_name: None,
            vni: Some(9),
            ..args()
        }
        .resolve()
        .unwrap();
        assert_eq!(
            (c.node_name.as_str(), c.workers, c.vni, c.poll_mode),
            ("from-file", 2, 9, PollMode::Busy)
        );
        std::fs::write(&path, r#"{"bogus": 1}"#).unwrap();
        let e = AgentArgs {
            config: Some(path.clone()),
            ..args()
        }
        .resolve()
        .unwrap_err()
        .to_string();
        assert!(e.contains("config file") && e.contains("bogus"), "{e}");
        let _ = std::fs::remove_file(path);
    }
}
