//! The `--static` table source: one JSON file a test writes, holding the
//! already-resolved objects the tables are compiled from, and the veths of
//! the pods attached to this node's switch (which the live sources, the
//! Kubernetes API and manifests, do not carry until the CNI plugin attaches
//! pods).
//!
//! ```json
//! {
//!   "pods": [{"namespace": "demo", "name": "web-1", "ip": "10.244.1.10",
//!             "mac": "02:00:0a:f4:01:0a", "ifname": "vethweb1",
//!             "labels": {"app": "web"}, "ports": [{"name": "http", "port": 8080}]}],
//!   "remotePods": [{"namespace": "demo", "name": "web-2", "ip": "10.244.2.10",
//!                   "node": "node2", "labels": {"app": "web"}}],
//!   "nodes": [{"name": "node2", "ip": "198.18.0.2", "vtepMac": "02:56:c6:12:00:02",
//!              "podCIDR": "10.244.2.0/24"}],
//!   "services": [{"namespace": "demo", "name": "web", "type": "NodePort",
//!                 "clusterIPs": ["10.96.0.20"],
//!                 "ports": [{"name": "http", "protocol": "TCP", "port": 80, "nodePort": 30080}],
//!                 "externalTrafficPolicy": "Cluster",
//!                 "endpoints": [{"ip": "10.244.2.10", "node": "node2", "ports": {"http": 8080}}]}],
//!   "namespaces": [{"name": "demo", "labels": {"team": "a"}}],
//!   "policies": [{"namespace": "demo", "name": "only-web", "podSelector": {"app": "web"},
//!                 "ingress": [{"fromPods": {"app": "web"}, "cidr": "198.18.0.0/24",
//!                              "ports": [{"protocol": "TCP", "port": 8080}]}]}]
//! }
//! ```
//!
//! Policies here are a small subset (pod selectors by labels, one CIDR, port
//! numbers per rule): enough for tests; the manifest and Kubernetes sources
//! carry NetworkPolicy in full. Every error names the file and the object at
//! fault.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::Path;

use serde::Deserialize;
use tables::model::{
    Cidr, Endpoint, LabelSelector, NamedPort, Namespace, NetworkPolicy, Peer, Pod, PolicyPort,
    PolicyRule, PortRef, Proto, RemoteNode, Service, ServicePort, ServiceType, TrafficPolicy,
};
use tables::service::ServiceEntry;

use tables::cluster::ClusterState;
use tables::mac::MacAddr;

/// A pod attached to this node's switch, and the host side of its veth.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalPodSpec {
    pub pod: Pod,
    pub mac: [u8; 6],
    pub ifname: String,
}

/// What the file describes.
#[derive(Clone, Debug, Default)]
pub struct StaticTables {
    pub local_pods: Vec<LocalPodSpec>,
    pub state: ClusterState,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct File {
    #[serde(default)]
    pods: Vec<PodJson>,
    #[serde(default)]
    remote_pods: Vec<PodJson>,
    #[serde(default)]
    nodes: Vec<NodeJson>,
    #[serde(default)]
    services: Vec<ServiceJson>,
    #[serde(default)]
    namespaces: Vec<NamespaceJson>,
    #[serde(default)]
    policies: Vec<PolicyJson>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PodJson {
    namespace: String,
    name: String,
    ip: Ipv4Addr,
    #[serde(default)]
    mac: Option<String>,
    #[serde(default)]
    ifname: Option<String>,
    #[serde(default)]
    node: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    ports: Vec<ContainerPortJson>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ContainerPortJson {
    name: String,
    port: u16,
    #[serde(default = "tcp")]
    protocol: String,
}

fn tcp() -> String {
    "TCP".into()
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct NodeJson {
    name: String,
    ip: Ipv4Addr,
    vtep_mac: String,
    #[serde(rename = "podCIDR")]
    pod_cidr: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct NamespaceJson {
    name: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ServiceJson {
    namespace: String,
    name: String,
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default, rename = "clusterIPs")]
    cluster_ips: Vec<Ipv4Addr>,
    ports: Vec<ServicePortJson>,
    #[serde(default, rename = "externalIPs")]
    external_ips: Vec<Ipv4Addr>,
    #[serde(default, rename = "loadBalancerIPs")]
    load_balancer_ips: Vec<Ipv4Addr>,
    #[serde(default)]
    session_affinity_timeout_seconds: Option<u32>,
    #[serde(default)]
    external_traffic_policy: Option<String>,
    #[serde(default)]
    internal_traffic_policy: Option<String>,
    #[serde(default)]
    endpoints: Vec<EndpointJson>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ServicePortJson {
    #[serde(default)]
    name: String,
    protocol: String,
    port: u16,
    #[serde(default)]
    node_port: Option<u16>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct EndpointJson {
    ip: Ipv4Addr,
    node: String,
    #[serde(default = "yes")]
    ready: bool,
    #[serde(default = "yes")]
    serving: bool,
    #[serde(default)]
    terminating: bool,
    ports: BTreeMap<String, u16>,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PolicyJson {
    namespace: String,
    name: String,
    #[serde(default)]
    pod_selector: BTreeMap<String, String>,
    #[serde(default)]
    ingress: Option<Vec<RuleJson>>,
    #[serde(default)]
    egress: Option<Vec<RuleJson>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RuleJson {
    #[serde(default)]
    from_pods: Option<BTreeMap<String, String>>,
    #[serde(default)]
    cidr: Option<String>,
    #[serde(default)]
    ports: Vec<ServicePortJson>,
}

/// Why the file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StaticError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: line {line}, column {column}: {message}")]
    Syntax {
        path: String,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{path}: {object}: {message}")]
    Invalid {
        path: String,
        object: String,
        message: String,
    },
}

fn proto(s: &str) -> Option<Proto> {
    Proto::from_k8s(s)
}

/// Reads and validates a static tables file for node `node`.
pub fn load(path: &Path, node: &str) -> Result<StaticTables, StaticError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| StaticError::Read {
        path: shown.clone(),
        source,
    })?;
    parse(&text, &shown, node)
}

/// Parses the JSON text of a static tables file (`path` only names it in
/// errors).
pub fn parse(text: &str, path: &str, node: &str) -> Result<StaticTables, StaticError> {
    let file: File = serde_json::from_str(text).map_err(|e| StaticError::Syntax {
        path: path.into(),
        line: e.line(),
        column: e.column(),
        message: e.to_string(),
    })?;
    let c = Checker { path };
    let mut out = StaticTables::default();
    for p in &file.pods {
        let spec = c.local_pod(p, node)?;
        out.state.pods.push(spec.pod.clone());
        out.local_pods.push(spec);
    }
    for p in &file.remote_pods {
        let on = p.node.clone().ok_or_else(|| {
            c.invalid(
                format!("remote pod {}/{}", p.namespace, p.name),
                "needs \"node\"",
            )
        })?;
        out.state.pods.push(c.pod(p, &on)?);
    }
    for n in &file.nodes {
        out.state.nodes.push(c.node(n)?);
    }
    for ns in &file.namespaces {
        out.state.namespaces.push(Namespace {
            name: ns.name.clone(),
            labels: ns.labels.clone(),
        });
    }
    for s in &file.services {
        out.state.services.push(c.service(s)?);
    }
    for p in &file.policies {
        out.state.policies.push(c.policy(p)?);
    }
    Ok(out)
}

/// Turns the file's objects into the model, naming the file and the object
/// in every error.
struct Checker<'a> {
    path: &'a str,
}

impl Checker<'_> {
    fn invalid(&self, object: String, message: &str) -> StaticError {
        StaticError::Invalid {
            path: self.path.into(),
            object,
            message: message.into(),
        }
    }

    fn proto(&self, what: &str, name: &str) -> Result<Proto, StaticError> {
        proto(name)
            .ok_or_else(|| self.invalid(what.into(), "port protocol must be TCP, UDP or SCTP"))
    }

    fn pod(&self, p: &PodJson, node_name: &str) -> Result<Pod, StaticError> {
        let what = format!("pod {}/{}", p.namespace, p.name);
        let ports = p
            .ports
            .iter()
            .map(|c| {
                Ok(NamedPort {
                    name: c.name.clone(),
                    proto: self.proto(&what, &c.protocol)?,
                    port: c.port,
                })
            })
            .collect::<Result<_, StaticError>>()?;
        Ok(Pod {
            namespace: p.namespace.clone(),
            name: p.name.clone(),
            ip: p.ip,
            labels: p.labels.clone(),
            ports,
            node: node_name.into(),
            host_ports: Vec::new(),
        })
    }

    fn local_pod(&self, p: &PodJson, node: &str) -> Result<LocalPodSpec, StaticError> {
        let what = format!("pod {}/{}", p.namespace, p.name);
        let mac = p.mac.as_deref().and_then(parse_mac).ok_or_else(|| {
            self.invalid(
                what.clone(),
                "needs \"mac\" as six hex bytes separated by colons",
            )
        })?;
        let ifname = p
            .ifname
            .clone()
            .filter(|n| !n.is_empty() && n.len() < 16)
            .ok_or_else(|| {
                self.invalid(
                    what.clone(),
                    "needs \"ifname\": the host side of its veth (1 to 15 characters)",
                )
            })?;
        Ok(LocalPodSpec {
            pod: self.pod(p, node)?,
            mac,
            ifname,
        })
    }

    fn node(&self, n: &NodeJson) -> Result<RemoteNode, StaticError> {
        let what = format!("node {}", n.name);
        let vtep_mac = parse_mac(&n.vtep_mac)
            .ok_or_else(|| self.invalid(what.clone(), "\"vtepMac\" is not a MAC address"))?;
        let cidr: Cidr = n
            .pod_cidr
            .parse()
            .map_err(|e: String| self.invalid(what.clone(), &e))?;
        Ok(RemoteNode {
            name: n.name.clone(),
            ip: n.ip,
            vtep_mac,
            pod_cidrs: vec![cidr],
        })
    }

    fn service(&self, s: &ServiceJson) -> Result<ServiceEntry, StaticError> {
        let what = format!("service {}/{}", s.namespace, s.name);
        let kind = match s.kind.as_deref().unwrap_or("ClusterIP") {
            "ClusterIP" => ServiceType::ClusterIp,
            "NodePort" => ServiceType::NodePort,
            "LoadBalancer" => ServiceType::LoadBalancer,
            _ => {
                return Err(
                    self.invalid(what, "\"type\" must be ClusterIP, NodePort or LoadBalancer")
                )
            }
        };
        let policy = |v: &Option<String>| match v.as_deref().unwrap_or("Cluster") {
            "Cluster" => Ok(TrafficPolicy::Cluster),
            "Local" => Ok(TrafficPolicy::Local),
            _ => Err(self.invalid(what.clone(), "traffic policies must be Cluster or Local")),
        };
        let ports = s
            .ports
            .iter()
            .map(|p| {
                Ok(ServicePort {
                    name: p.name.clone(),
                    proto: self.proto(&what, &p.protocol)?,
                    port: p.port,
                    node_port: p.node_port,
                })
            })
            .collect::<Result<Vec<_>, StaticError>>()?;
        let endpoints = s
            .endpoints
            .iter()
            .map(|e| Endpoint {
                ip: e.ip,
                node: e.node.clone(),
                ready: e.ready,
                serving: e.serving,
                terminating: e.terminating,
                ports: e.ports.iter().map(|(n, p)| (n.clone(), *p)).collect(),
            })
            .collect();
        let service = Service {
            namespace: s.namespace.clone(),
            name: s.name.clone(),
            kind,
            cluster_ips: s.cluster_ips.clone(),
            ports,
            external_ips: s.external_ips.clone(),
            load_balancer_ips: s.load_balancer_ips.clone(),
            affinity_timeout_s: s.session_affinity_timeout_seconds,
            external_traffic_policy: policy(&s.external_traffic_policy)?,
            internal_traffic_policy: policy(&s.internal_traffic_policy)?,
            health_check_node_port: None,
        };
        Ok(ServiceEntry { service, endpoints })
    }

    fn policy(&self, p: &PolicyJson) -> Result<NetworkPolicy, StaticError> {
        let what = format!("policy {}/{}", p.namespace, p.name);
        Ok(NetworkPolicy {
            namespace: p.namespace.clone(),
            name: p.name.clone(),
            pod_selector: LabelSelector {
                match_labels: p.pod_selector.clone(),
                ..LabelSelector::default()
            },
            ingress_isolation: p.ingress.is_some(),
            egress_isolation: p.egress.is_some(),
            ingress: self.rules(&what, &p.ingress)?,
            egress: self.rules(&what, &p.egress)?,
        })
    }

    fn rules(
        &self,
        what: &str,
        rules: &Option<Vec<RuleJson>>,
    ) -> Result<Vec<PolicyRule>, StaticError> {
        rules
            .iter()
            .flatten()
            .map(|r| {
                let mut peers = Vec::new();
                if let Some(sel) = &r.from_pods {
                    peers.push(Peer::Pods {
                        namespace_selector: None,
                        pod_selector: Some(LabelSelector {
                            match_labels: sel.clone(),
                            ..LabelSelector::default()
                        }),
                    });
                }
                if let Some(c) = &r.cidr {
                    let cidr: Cidr = c
                        .parse()
                        .map_err(|e: String| self.invalid(what.into(), &e))?;
                    peers.push(Peer::IpBlock {
                        cidr,
                        except: vec![],
                    });
                }
                let ports = r
                    .ports
                    .iter()
                    .map(|pp| {
                        Ok(PolicyPort {
                            proto: self.proto(what, &pp.protocol)?,
                            port: Some(PortRef::Number(pp.port)),
                            end_port: None,
                        })
                    })
                    .collect::<Result<_, StaticError>>()?;
                Ok(PolicyRule { peers, ports })
            })
            .collect()
    }
}

fn parse_mac(s: &str) -> Option<[u8; 6]> {
    s.parse::<MacAddr>().ok().map(MacAddr::octets)
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"{
      "pods": [{"namespace": "demo", "name": "web-1", "ip": "10.244.1.10", "mac": "02:00:0a:f4:01:0a",
                "ifname": "vethweb1", "labels": {"app": "web"}, "ports": [{"name": "http", "port": 8080}]}],
      "remotePods": [{"namespace": "demo", "name": "web-2", "ip": "10.244.2.10", "node": "node2", "labels": {"app": "web"}}],
      "nodes": [{"name": "node2", "ip": "198.18.0.2", "vtepMac": "02:56:c6:12:00:02", "podCIDR": "10.244.2.0/24"}],
      "services": [{"namespace": "demo", "name": "web", "type": "NodePort", "clusterIPs": ["10.96.0.20"],
                    "ports": [{"name": "http", "protocol": "TCP", "port": 80, "nodePort": 30080}],
                    "endpoints": [{"ip": "10.244.2.10", "node": "node2", "ports": {"http": 8080}}]}],
      "namespaces": [{"name": "demo", "labels": {"team": "a"}}],
      "policies": [{"namespace": "demo", "name": "only-web", "podSelector": {"app": "web"},
                    "ingress": [{"fromPods": {"app": "web"}, "ports": [{"protocol": "TCP", "port": 8080}]}]}]
    }"#;

    #[test]
    fn parses_every_object_kind() {
        let t = parse(EXAMPLE, "tables.json", "node1").unwrap();
        assert_eq!(t.local_pods.len(), 1);
        assert_eq!(t.local_pods[0].mac, [2, 0, 0x0a, 0xf4, 1, 0x0a]);
        assert_eq!(t.local_pods[0].pod.node, "node1");
        assert_eq!(t.state.pods.len(), 2);
        assert_eq!(t.state.nodes[0].pod_cidrs[0].to_string(), "10.244.2.0/24");
        assert_eq!(t.state.services[0].service.kind, ServiceType::NodePort);
        assert_eq!(
            t.state.services[0].endpoints[0].ports,
            vec![("http".to_string(), 8080)]
        );
        assert!(t.state.policies[0].ingress_isolation && !t.state.policies[0].egress_isolation);
    }

    #[test]
    fn errors_name_the_file_and_the_object() {
        let bad_mac = EXAMPLE.replace("02:00:0a:f4:01:0a", "nonsense");
        let e = parse(&bad_mac, "t.json", "node1").unwrap_err().to_string();
        assert!(
            e.contains("t.json") && e.contains("pod demo/web-1") && e.contains("mac"),
            "{e}"
        );
        let bad_proto = EXAMPLE.replace(
            "\"protocol\": \"TCP\", \"port\": 80",
            "\"protocol\": \"ICMP\", \"port\": 80",
        );
        let e = parse(&bad_proto, "t.json", "node1")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("service demo/web") && e.contains("protocol"),
            "{e}"
        );
        let e = parse("{\"pods\": [}", "t.json", "node1")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("t.json: line 1, column"), "{e}");
        let e = parse("{\"bogus\": 1}", "t.json", "node1")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field"), "{e}");
    }
}
