//! The built-in example cluster: two nodes, a web service with pods on both,
//! a client, a database guarded by a NetworkPolicy, and an intruder the
//! policy keeps out. `selftest`, the tests and the benchmarks all use it.
//!
//! Addresses follow DESIGN.md "Addresses in the lab": underlay
//! 198.18.0.0/24, pods 10.244.0.0/16 (a /24 per node), services
//! 10.96.0.0/12.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use tables::model::{
    Cidr, Endpoint, LabelSelector, NamedPort, Namespace, NetworkPolicy, Peer, Pod, PolicyPort,
    PolicyRule, PortRef, Proto, RemoteNode, Service, ServicePort, ServiceType, TrafficPolicy,
};
use tables::route::{LocalPod, NodeConfig, PortId};
use tables::service::ServiceEntry;
use tables::snapshot::Snapshot;

use crate::cluster::{compile, ClusterState};

/// Port ids every example switch uses.
pub const UPLINK: PortId = 0;
pub const HOST: PortId = 1;
/// Local pods are attached from this port id on, in pod order.
pub const FIRST_POD_PORT: PortId = 2;

pub const GATEWAY_MAC: [u8; 6] = [0xee, 0xee, 0xee, 0xee, 0xee, 0xee];
pub const HOST_MAC: [u8; 6] = [0x02, 0x48, 0x4f, 0x53, 0x54, 0x01];
/// The underlay router's MAC (next hop out of the cluster).
pub const ROUTER_MAC: [u8; 6] = [0x02, 0x52, 0x54, 0x52, 0x00, 0x01];
pub const VNI: u32 = 1;

/// The cluster's nodes: name, underlay IP, pod CIDR.
pub const NODES: [(&str, &str, &str); 2] = [
    ("node1", "198.18.0.1", "10.244.1.0/24"),
    ("node2", "198.18.0.2", "10.244.2.0/24"),
];

/// A pod's MAC: locally administered, carrying its IP.
pub fn pod_mac(ip: Ipv4Addr) -> [u8; 6] {
    let o = ip.octets();
    [0x02, 0x00, o[0], o[1], o[2], o[3]]
}

/// A node's uplink MAC.
pub fn uplink_mac(node_ip: Ipv4Addr) -> [u8; 6] {
    let o = node_ip.octets();
    [0x02, 0x55, o[0], o[1], o[2], o[3]]
}

pub use crate::cluster::vtep_mac;

fn addr(s: &str) -> Ipv4Addr {
    s.parse().unwrap_or(Ipv4Addr::UNSPECIFIED)
}

fn cidr(s: &str) -> Cidr {
    s.parse()
        .unwrap_or_else(|_| Cidr::new(Ipv4Addr::UNSPECIFIED, 32).unwrap_or_else(|| unreachable!()))
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn pod(
    name: &str,
    ns: &str,
    ip: &str,
    node: &str,
    lbls: &[(&str, &str)],
    ports: &[(&str, u16)],
) -> Pod {
    Pod {
        namespace: ns.into(),
        name: name.into(),
        ip: addr(ip),
        labels: labels(lbls),
        ports: ports
            .iter()
            .map(|(n, p)| NamedPort {
                name: n.to_string(),
                proto: Proto::Tcp,
                port: *p,
            })
            .collect(),
        node: node.into(),
        host_ports: Vec::new(),
    }
}

/// The example's well-known addresses.
pub mod addrs {
    pub const WEB_1: &str = "10.244.1.10";
    pub const CLIENT: &str = "10.244.1.11";
    pub const DB: &str = "10.244.1.12";
    pub const INTRUDER: &str = "10.244.1.13";
    pub const WEB_2: &str = "10.244.2.10";
    pub const WEB_3: &str = "10.244.2.11";
    pub const WEB_VIP: &str = "10.96.0.20";
    pub const WEB_NODE_PORT: u16 = 30080;
    pub const WEB_LB: &str = "198.18.0.200";
    pub const DB_VIP: &str = "10.96.0.30";
    /// A client outside the cluster, on the underlay.
    pub const OUTSIDE: &str = "198.18.0.100";
}

/// Every object of the example cluster.
pub fn state() -> ClusterState {
    use addrs::*;
    let namespaces = vec![
        Namespace {
            name: "demo".into(),
            labels: labels(&[("kubernetes.io/metadata.name", "demo"), ("team", "demo")]),
        },
        Namespace {
            name: "other".into(),
            labels: labels(&[("kubernetes.io/metadata.name", "other")]),
        },
    ];
    let pods = vec![
        pod(
            "web-1",
            "demo",
            WEB_1,
            "node1",
            &[("app", "web")],
            &[("http", 8080)],
        ),
        pod("client", "demo", CLIENT, "node1", &[("app", "client")], &[]),
        pod(
            "db",
            "demo",
            DB,
            "node1",
            &[("app", "db")],
            &[("postgres", 5432)],
        ),
        pod(
            "intruder",
            "other",
            INTRUDER,
            "node1",
            &[("app", "intruder")],
            &[],
        ),
        pod(
            "web-2",
            "demo",
            WEB_2,
            "node2",
            &[("app", "web")],
            &[("http", 8080)],
        ),
        pod(
            "web-3",
            "demo",
            WEB_3,
            "node2",
            &[("app", "web")],
            &[("http", 8080)],
        ),
    ];
    let endpoint = |p: &Pod, port: &str, target: u16| Endpoint {
        ip: p.ip,
        node: p.node.clone(),
        ready: true,
        serving: true,
        terminating: false,
        ports: vec![(port.to_string(), target)],
    };
    let web_eps = pods
        .iter()
        .filter(|p| p.labels.get("app").is_some_and(|a| a == "web"))
        .map(|p| endpoint(p, "http", 8080))
        .collect();
    let db_eps = pods
        .iter()
        .filter(|p| p.name == "db")
        .map(|p| endpoint(p, "postgres", 5432))
        .collect();
    let services = vec![
        ServiceEntry {
            service: Service {
                namespace: "demo".into(),
                name: "web".into(),
                kind: ServiceType::LoadBalancer,
                cluster_ips: vec![addr(WEB_VIP)],
                ports: vec![ServicePort {
                    name: "http".into(),
                    proto: Proto::Tcp,
                    port: 80,
                    node_port: Some(WEB_NODE_PORT),
                }],
                external_ips: vec![],
                load_balancer_ips: vec![addr(WEB_LB)],
                affinity_timeout_s: None,
                external_traffic_policy: TrafficPolicy::Cluster,
                internal_traffic_policy: TrafficPolicy::Cluster,
                health_check_node_port: None,
            },
            endpoints: web_eps,
        },
        ServiceEntry {
            service: Service {
                namespace: "demo".into(),
                name: "db".into(),
                kind: ServiceType::ClusterIp,
                cluster_ips: vec![addr(DB_VIP)],
                ports: vec![ServicePort {
                    name: "postgres".into(),
                    proto: Proto::Tcp,
                    port: 5432,
                    node_port: None,
                }],
                external_ips: vec![],
                load_balancer_ips: vec![],
                affinity_timeout_s: Some(10800),
                external_traffic_policy: TrafficPolicy::Cluster,
                internal_traffic_policy: TrafficPolicy::Cluster,
                health_check_node_port: None,
            },
            endpoints: db_eps,
        },
    ];
    // The database accepts only the web pods, on its named port.
    let policies = vec![NetworkPolicy {
        namespace: "demo".into(),
        name: "db-from-web".into(),
        pod_selector: LabelSelector {
            match_labels: labels(&[("app", "db")]),
            ..LabelSelector::default()
        },
        ingress_isolation: true,
        egress_isolation: false,
        ingress: vec![PolicyRule {
            peers: vec![Peer::Pods {
                namespace_selector: None,
                pod_selector: Some(LabelSelector {
                    match_labels: labels(&[("app", "web")]),
                    ..LabelSelector::default()
                }),
            }],
            ports: vec![PolicyPort {
                proto: Proto::Tcp,
                port: Some(PortRef::Name("postgres".into())),
                end_port: None,
            }],
        }],
        egress: vec![],
    }];
    let nodes = NODES
        .iter()
        .map(|(name, ip, pod_cidr)| RemoteNode {
            name: name.to_string(),
            ip: addr(ip),
            vtep_mac: vtep_mac(addr(ip)),
            pod_cidrs: vec![cidr(pod_cidr)],
        })
        .collect();
    ClusterState {
        namespaces,
        pods,
        services,
        policies,
        nodes,
    }
}

/// The switch configuration of example node `name`.
pub fn node_config(name: &str) -> NodeConfig {
    let (_, ip, pod_cidr) = NODES
        .iter()
        .find(|(n, _, _)| *n == name)
        .copied()
        .unwrap_or(NODES[0]);
    let ip = addr(ip);
    NodeConfig {
        name: name.into(),
        node_ip: u32::from(ip),
        uplink_mac: uplink_mac(ip),
        vtep_mac: vtep_mac(ip),
        gateway_mac: GATEWAY_MAC,
        vni: VNI,
        pod_cidr: cidr(pod_cidr),
        cluster_cidr: cidr("10.244.0.0/16"),
        service_cidr: cidr("10.96.0.0/12"),
        uplink_port: UPLINK,
        host_port: Some(HOST),
        host_mac: HOST_MAC,
        uplink_gateway_mac: ROUTER_MAC,
    }
}

/// The pods of `state` on node `name`, attached to ports from
/// [`FIRST_POD_PORT`] on in order.
pub fn attachments(state: &ClusterState, name: &str) -> Vec<LocalPod> {
    state
        .pods
        .iter()
        .filter(|p| p.node == name)
        .zip(FIRST_POD_PORT..)
        .map(|(p, port)| LocalPod {
            ip: u32::from(p.ip),
            mac: pod_mac(p.ip),
            port,
        })
        .collect()
}

/// The tables of example node `name`.
pub fn snapshot(name: &str) -> Snapshot {
    let state = state();
    snapshot_of(&state, name)
}

/// The tables of node `name` for a modified example `state`.
pub fn snapshot_of(state: &ClusterState, name: &str) -> Snapshot {
    let attached = attachments(state, name);
    compile(state, &node_config(name), &attached, &[], &uplink_mac, None).0
}
