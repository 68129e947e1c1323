//! What `/services`, `/policies`, `/routes` and `/conntrack` answer: plain
//! serde structs built from a table snapshot (or the conntrack table) on the
//! API thread, and decoded by the CLI.
//!
//! Building a view reads the snapshot the way a worker does (pinned, no
//! lock) and copies what it needs; nothing here is on the fast path.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};
use tables::mac::MacAddr;
use tables::model::Proto;
use tables::policy::{CompiledSet, PortSet};
use tables::route::PortId;
use tables::service::FrontendKind;
use tables::snapshot::Snapshot;

mod conntrack;

pub use conntrack::{
    parse_proto, ConnectionView, ConntrackQuery, ConntrackView, TupleView, CONNTRACK_PARAMS,
    DEFAULT_CONNTRACK_LIMIT,
};

/// The most peer prefixes listed per port set of a policy direction (the
/// count is always complete).
pub const MAX_LISTED_PEERS: usize = 64;

/// `aa:bb:cc:dd:ee:ff`.
fn mac(m: [u8; 6]) -> String {
    MacAddr(m).to_string()
}

/// A protocol number as its name (`TCP`), or the number for others.
pub fn proto_name(proto: u8) -> String {
    Proto::from_u8(proto).map_or_else(|| proto.to_string(), |p| p.to_string())
}

/// A port of the switch: its id and, when known, its interface name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortRef {
    pub id: PortId,
    pub name: Option<String>,
}

impl PortRef {
    fn of(id: PortId, names: &[(u16, String)]) -> PortRef {
        PortRef {
            id,
            name: names.iter().find(|(i, _)| *i == id).map(|(_, n)| n.clone()),
        }
    }
}

// ---------------------------------------------------------------- services

/// `GET /services`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServicesView {
    /// Generation of the snapshot read.
    pub generation: u64,
    /// By namespace, then name.
    pub services: Vec<ServiceView>,
}

/// One service and every frontend it installed on this node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceView {
    pub namespace: String,
    pub name: String,
    /// By kind, IP, protocol, port.
    pub frontends: Vec<FrontendView>,
}

/// How a frontend is reached. The tables do not tell a LoadBalancer
/// ingress IP from an externalIP: both are `External`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum FrontendType {
    #[serde(rename = "ClusterIP")]
    ClusterIp,
    NodePort,
    External,
    HostPort,
}

impl FrontendType {
    /// The name the JSON and the CLI use.
    pub fn name(self) -> &'static str {
        match self {
            FrontendType::ClusterIp => "ClusterIP",
            FrontendType::NodePort => "NodePort",
            FrontendType::External => "External",
            FrontendType::HostPort => "HostPort",
        }
    }
}

/// Which of a service port's two backend sets a frontend balances over.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendSetName {
    /// Every usable endpoint: traffic policy `Cluster`.
    All,
    /// Endpoints on this node only: traffic policy `Local`.
    Local,
}

/// One (IP, protocol, port) a service answers on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FrontendView {
    pub kind: FrontendType,
    pub ip: Ipv4Addr,
    pub proto: String,
    pub port: u16,
    /// The service port's name.
    pub port_name: String,
    /// `internalTrafficPolicy` for ClusterIP frontends,
    /// `externalTrafficPolicy` for the others: `Cluster` or `Local`.
    pub traffic_policy: String,
    pub backend_set: BackendSetName,
    /// The client is masqueraded to the node IP.
    pub snat: bool,
    /// `sessionAffinity: ClientIP` timeout; absent without affinity.
    pub affinity_timeout_s: Option<u64>,
    /// The backends new flows are balanced over, in table order.
    pub backends: Vec<BackendView>,
}

/// One backend of a frontend.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendView {
    pub ip: Ipv4Addr,
    pub port: u16,
    /// The node it runs on, when the routes know it (this node for local
    /// backends, the owner of its pod CIDR for remote ones).
    pub node: Option<String>,
    /// Runs on this node.
    pub local: bool,
}

impl ServicesView {
    /// Every service of `snapshot`.
    pub fn build(snapshot: &Snapshot) -> ServicesView {
        let table = &snapshot.services;
        let infos = table.services();
        let mut services: Vec<ServiceView> = infos
            .iter()
            .map(|info| ServiceView {
                namespace: info.namespace.clone(),
                name: info.name.clone(),
                frontends: Vec::new(),
            })
            .collect();
        for (key, frontend) in table.frontends() {
            let index = usize::try_from(frontend.service).ok();
            let (Some(view), Some(info)) = (
                index.and_then(|i| services.get_mut(i)),
                index.and_then(|i| infos.get(i)),
            ) else {
                continue;
            };
            let local = table.uses_local_backends(frontend);
            let port_name = info
                .ports
                .get(usize::from(frontend.port_index))
                .cloned()
                .unwrap_or_default();
            let backends = frontend
                .backends
                .backends()
                .iter()
                .map(|b| BackendView {
                    ip: Ipv4Addr::from(b.ip),
                    port: b.port,
                    node: if b.local {
                        Some(snapshot.node.name.clone())
                    } else {
                        snapshot
                            .routes
                            .remote_owner(b.ip)
                            .map(|vtep| vtep.node.clone())
                    },
                    local: b.local,
                })
                .collect();
            view.frontends.push(FrontendView {
                kind: match frontend.kind {
                    FrontendKind::ClusterIp => FrontendType::ClusterIp,
                    FrontendKind::NodePort => FrontendType::NodePort,
                    FrontendKind::External => FrontendType::External,
                    FrontendKind::HostPort => FrontendType::HostPort,
                },
                ip: Ipv4Addr::from(key.ip),
                proto: proto_name(key.proto),
                port: key.port,
                port_name,
                traffic_policy: if local { "Local" } else { "Cluster" }.into(),
                backend_set: if local {
                    BackendSetName::Local
                } else {
                    BackendSetName::All
                },
                snat: frontend.snat,
                affinity_timeout_s: (frontend.affinity_ms > 0)
                    .then_some(frontend.affinity_ms / 1000),
                backends,
            });
        }
        for s in &mut services {
            s.frontends.sort_by(|a, b| {
                (a.kind, a.ip, &a.proto, a.port).cmp(&(b.kind, b.ip, &b.proto, b.port))
            });
        }
        services.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        ServicesView {
            generation: snapshot.generation,
            services,
        }
    }
}

// ---------------------------------------------------------------- policies

/// `GET /policies`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoliciesView {
    pub generation: u64,
    /// Every pod attached to this switch or with a policy entry, by IP.
    pub pods: Vec<PodPolicyView>,
}

/// The policy in force for one local pod.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodPolicyView {
    pub ip: Ipv4Addr,
    /// `namespace/name`, when the policy table knows it.
    pub pod: Option<String>,
    /// The switch port the pod is attached to (absent: not attached).
    pub port: Option<PortRef>,
    /// The policies selecting the pod, as `namespace/name`.
    pub policies: Vec<String>,
    /// Who may connect to the pod.
    pub ingress: DirectionView,
    /// Where the pod may connect to.
    pub egress: DirectionView,
}

/// One direction of a pod's policy.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectionView {
    /// A selecting policy isolates this direction: only what `allowed`
    /// lists passes. Not isolated: everything passes.
    pub isolated: bool,
    /// Rules compiled into the direction (0 while isolated: deny all).
    pub rules: usize,
    /// Peer prefixes in the compiled set.
    pub prefixes: usize,
    /// Allowed peers, grouped by the ports they may use.
    pub allowed: Vec<AllowedView>,
}

/// Peers that may use the same ports.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllowedView {
    /// Peer prefixes (`10.244.1.10/32`), at most [`MAX_LISTED_PEERS`].
    pub peers: Vec<String>,
    /// How many prefixes there are in all.
    pub peer_count: usize,
    pub ports: PortsView,
}

/// A port set: every protocol (a rule without ports), or port ranges per
/// protocol (`"80"`, `"8000-8080"`; ICMP has no ports, so it passes only
/// with `all_protocols`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortsView {
    pub all_protocols: bool,
    pub tcp: Vec<String>,
    pub udp: Vec<String>,
    pub sctp: Vec<String>,
}

impl PortsView {
    fn of(set: &PortSet) -> PortsView {
        let ranges = |proto| {
            set.ranges(proto)
                .map(|r| {
                    r.ranges()
                        .iter()
                        .map(|&(first, last)| {
                            if first == last {
                                first.to_string()
                            } else {
                                format!("{first}-{last}")
                            }
                        })
                        .collect()
                })
                .unwrap_or_default()
        };
        PortsView {
            all_protocols: set.is_all_protocols(),
            tcp: ranges(Proto::Tcp),
            udp: ranges(Proto::Udp),
            sctp: ranges(Proto::Sctp),
        }
    }
}

impl DirectionView {
    fn of(set: Option<&CompiledSet>) -> DirectionView {
        let Some(set) = set else {
            return DirectionView::default();
        };
        let mut groups: Vec<(&PortSet, Vec<String>)> = Vec::new();
        for (cidr, ports) in set.peers() {
            match groups.iter_mut().find(|(p, _)| *p == ports) {
                Some((_, peers)) => peers.push(cidr.to_string()),
                None => groups.push((ports, vec![cidr.to_string()])),
            }
        }
        DirectionView {
            isolated: true,
            rules: set.rule_count(),
            prefixes: set.prefix_count(),
            allowed: groups
                .into_iter()
                .map(|(ports, mut peers)| {
                    let peer_count = peers.len();
                    peers.truncate(MAX_LISTED_PEERS);
                    AllowedView {
                        peers,
                        peer_count,
                        ports: PortsView::of(ports),
                    }
                })
                .collect(),
        }
    }
}

impl PoliciesView {
    /// The policy of every local pod of `snapshot`; `ports` names the
    /// switch's ports.
    pub fn build(snapshot: &Snapshot, ports: &[(u16, String)]) -> PoliciesView {
        let mut ips: Vec<u32> = snapshot
            .routes
            .pods()
            .map(|p| p.ip)
            .chain(snapshot.policy.pods().map(|(ip, _)| ip))
            .collect();
        ips.sort_unstable();
        ips.dedup();
        let pods = ips
            .into_iter()
            .map(|ip| {
                let entry = snapshot.policy.pod(ip);
                PodPolicyView {
                    ip: Ipv4Addr::from(ip),
                    pod: entry.map(|e| e.pod.clone()).filter(|n| !n.is_empty()),
                    port: snapshot
                        .routes
                        .local_pod(ip)
                        .map(|p| PortRef::of(p.port, ports)),
                    policies: entry.map(|e| e.policies.clone()).unwrap_or_default(),
                    ingress: DirectionView::of(entry.and_then(|e| e.ingress.as_deref())),
                    egress: DirectionView::of(entry.and_then(|e| e.egress.as_deref())),
                }
            })
            .collect();
        PoliciesView {
            generation: snapshot.generation,
            pods,
        }
    }
}

// ------------------------------------------------------------------ routes

/// `GET /routes`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoutesView {
    pub generation: u64,
    pub node: String,
    /// This node's own addresses (frames to them go to the host port).
    pub node_ips: Vec<Ipv4Addr>,
    pub pod_cidr: String,
    pub cluster_cidr: String,
    pub service_cidr: String,
    pub vni: u32,
    pub vtep_mac: String,
    pub uplink: PortRef,
    /// The port to the node's own stack, and the MAC of its node end.
    pub host_port: Option<PortRef>,
    pub host_mac: String,
    /// By IP.
    pub local_pods: Vec<LocalPodView>,
    /// Remote pod CIDRs, by address.
    pub remote: Vec<RemoteRouteView>,
    /// On-link underlay hosts the switch can answer directly, by IP.
    pub neighbours: Vec<NeighbourView>,
}

/// A pod attached to this switch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalPodView {
    pub ip: Ipv4Addr,
    /// `namespace/name`, when the policy table knows it.
    pub pod: Option<String>,
    pub port: PortRef,
    pub mac: String,
}

/// A remote pod CIDR and the VTEP frames to it are encapsulated to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteRouteView {
    pub cidr: String,
    pub node: String,
    pub vtep_ip: Ipv4Addr,
    pub vtep_mac: String,
    /// The MAC on the underlay frames to the VTEP go to (zero while
    /// unresolved).
    pub underlay_mac: String,
}

/// An on-link underlay host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NeighbourView {
    pub ip: Ipv4Addr,
    pub mac: String,
}

impl RoutesView {
    /// The routes of `snapshot`; `ports` names the switch's ports.
    pub fn build(snapshot: &Snapshot, ports: &[(u16, String)]) -> RoutesView {
        let node = &snapshot.node;
        let routes = &snapshot.routes;
        let mut local_pods: Vec<LocalPodView> = routes
            .pods()
            .map(|p| LocalPodView {
                ip: Ipv4Addr::from(p.ip),
                pod: snapshot
                    .policy
                    .pod(p.ip)
                    .map(|e| e.pod.clone())
                    .filter(|n| !n.is_empty()),
                port: PortRef::of(p.port, ports),
                mac: mac(p.mac),
            })
            .collect();
        local_pods.sort_by_key(|p| p.ip);
        RoutesView {
            generation: snapshot.generation,
            node: node.name.clone(),
            node_ips: routes
                .node_ips()
                .iter()
                .map(|&ip| Ipv4Addr::from(ip))
                .collect(),
            pod_cidr: node.pod_cidr.to_string(),
            cluster_cidr: node.cluster_cidr.to_string(),
            service_cidr: node.service_cidr.to_string(),
            vni: node.vni,
            vtep_mac: mac(node.vtep_mac),
            uplink: PortRef::of(node.uplink_port, ports),
            host_port: node.host_port.map(|id| PortRef::of(id, ports)),
            host_mac: mac(node.host_mac),
            local_pods,
            remote: routes
                .remote_routes()
                .into_iter()
                .map(|(cidr, vtep)| RemoteRouteView {
                    cidr: cidr.to_string(),
                    node: vtep.node.clone(),
                    vtep_ip: Ipv4Addr::from(vtep.ip),
                    vtep_mac: mac(vtep.vtep_mac),
                    underlay_mac: mac(vtep.underlay_mac),
                })
                .collect(),
            neighbours: routes
                .neighbours()
                .into_iter()
                .map(|(ip, m)| NeighbourView {
                    ip: Ipv4Addr::from(ip),
                    mac: mac(m),
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fixtures::example::{self, addrs};

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn services_of_the_example() {
        let v = ServicesView::build(&example::snapshot("node1"));
        let names: Vec<_> = v.services.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["db", "web"]);
        let web = &v.services[1];
        let kinds: Vec<_> = web.frontends.iter().map(|f| f.kind).collect();
        assert_eq!(
            kinds,
            [
                FrontendType::ClusterIp,
                FrontendType::NodePort,
                FrontendType::External
            ]
        );
        let cip = &web.frontends[0];
        assert_eq!(
            (cip.ip, cip.port, cip.proto.as_str()),
            (ip(addrs::WEB_VIP), 80, "TCP")
        );
        assert_eq!(cip.backend_set, BackendSetName::All);
        assert_eq!(cip.backends.len(), 3);
        let local: Vec<_> = cip.backends.iter().filter(|b| b.local).collect();
        assert_eq!(local.len(), 1);
        assert_eq!(local[0].node.as_deref(), Some("node1"));
        let remote = cip.backends.iter().find(|b| !b.local).unwrap();
        assert_eq!(remote.node.as_deref(), Some("node2"));
        assert!(web.frontends[1].snat);
        assert_eq!(v.services[0].frontends[0].affinity_timeout_s, Some(10800));
    }

    #[test]
    fn local_traffic_policy_shows_the_local_set() {
        let mut state = example::state();
        state.services[0].service.external_traffic_policy = tables::model::TrafficPolicy::Local;
        let v = ServicesView::build(&example::snapshot_of(&state, "node1"));
        let web = v.services.iter().find(|s| s.name == "web").unwrap();
        for f in &web.frontends {
            let local = f.kind != FrontendType::ClusterIp;
            assert_eq!(f.backend_set == BackendSetName::Local, local, "{f:?}");
            assert_eq!(f.traffic_policy, if local { "Local" } else { "Cluster" });
            if local {
                assert!(f.backends.iter().all(|b| b.local));
                assert!(!f.snat);
            }
        }
    }

    #[test]
    fn policies_of_the_example() {
        let ports = [(4, "veth-db".to_string())];
        let v = PoliciesView::build(&example::snapshot("node1"), &ports);
        assert_eq!(v.pods.len(), 4);
        let db = v.pods.iter().find(|p| p.ip == ip(addrs::DB)).unwrap();
        assert_eq!(db.pod.as_deref(), Some("demo/db"));
        assert_eq!(db.policies, ["demo/db-from-web"]);
        assert_eq!(
            db.port.as_ref().and_then(|p| p.name.as_deref()),
            Some("veth-db")
        );
        assert!(db.ingress.isolated && !db.egress.isolated);
        assert_eq!(db.ingress.rules, 1);
        let allowed = &db.ingress.allowed;
        assert_eq!(allowed.len(), 1);
        assert_eq!(allowed[0].ports.tcp, ["5432"]);
        assert!(allowed[0].peers.contains(&"10.244.1.10/32".to_string()));
        let client = v.pods.iter().find(|p| p.ip == ip(addrs::CLIENT)).unwrap();
        assert!(!client.ingress.isolated && client.policies.is_empty());
    }

    #[test]
    fn routes_of_the_example() {
        let v = RoutesView::build(&example::snapshot("node1"), &[]);
        assert_eq!(v.node, "node1");
        assert_eq!(v.node_ips, [ip("198.18.0.1")]);
        assert_eq!(v.local_pods.len(), 4);
        assert_eq!(v.local_pods[0].ip, ip(addrs::WEB_1));
        assert_eq!(v.local_pods[0].pod.as_deref(), Some("demo/web-1"));
        assert_eq!(v.local_pods[0].port.id, example::FIRST_POD_PORT);
        assert_eq!(v.remote.len(), 1);
        assert_eq!(v.remote[0].cidr, "10.244.2.0/24");
        assert_eq!(v.remote[0].node, "node2");
        assert_eq!(v.remote[0].vtep_ip, ip("198.18.0.2"));
        assert_eq!(v.host_port.as_ref().map(|p| p.id), Some(example::HOST_PORT));
    }
}
