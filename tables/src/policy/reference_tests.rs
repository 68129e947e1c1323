//! The compiled tables against a reference evaluator written straight from
//! the NetworkPolicy semantics (rule by rule, no compilation), on random
//! small clusters and random queries.

use std::net::Ipv4Addr;

use proptest::prelude::*;

use super::*;
use crate::model::{
    Cidr, LabelSelector, Labels, NamedPort, Peer, PolicyPort, PolicyRule, PortRef, Proto,
    Requirement, SelectorOp,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dir {
    In,
    Out,
}

// ---- The reference evaluator ----

fn addr(pod: &Pod) -> Option<u32> {
    (!pod.ip.is_unspecified()).then(|| u32::from(pod.ip))
}

fn namespace_labels(namespaces: &[Namespace], name: &str) -> Labels {
    namespaces
        .iter()
        .find(|ns| ns.name == name)
        .map(|ns| ns.labels.clone())
        .unwrap_or_default()
}

/// Whether pod `q` is matched by a podSelector/namespaceSelector peer of
/// `policy`.
fn pod_peer_matches(
    policy: &NetworkPolicy,
    namespace_selector: Option<&LabelSelector>,
    pod_selector: Option<&LabelSelector>,
    q: &Pod,
    namespaces: &[Namespace],
) -> bool {
    let namespace_ok = match namespace_selector {
        None => q.namespace == policy.namespace,
        Some(s) => s.matches(&namespace_labels(namespaces, &q.namespace)),
    };
    namespace_ok && pod_selector.is_none_or(|s| s.matches(&q.labels))
}

/// Whether one `ports` entry matches, named ports resolving on `destination`.
fn entry_matches(entry: &PolicyPort, destination: Option<&Pod>, proto: u8, port: u16) -> bool {
    if entry.proto == Proto::Icmp || entry.proto as u8 != proto {
        return false;
    }
    match (&entry.port, entry.end_port) {
        (None, None) => true,
        (Some(PortRef::Number(p)), None) => port == *p,
        (Some(PortRef::Number(p)), Some(end)) => *p <= port && port <= end,
        (Some(PortRef::Name(name)), None) => {
            destination.and_then(|d| d.named_port(name, entry.proto)) == Some(port)
        }
        (_, Some(_)) => false,
    }
}

#[allow(clippy::too_many_arguments)]
fn rule_allows(
    dir: Dir,
    policy: &NetworkPolicy,
    rule: &PolicyRule,
    local: &Pod,
    all_pods: &[Pod],
    namespaces: &[Namespace],
    peer: u32,
    proto: u8,
    port: u16,
) -> bool {
    // The destination pod named ports resolve on: the local pod for
    // ingress, the peer pod (if the peer is one) for egress.
    let destination = |peer_pod: Option<&Pod>| -> Option<Pod> {
        match dir {
            Dir::In => Some(local.clone()),
            Dir::Out => peer_pod.cloned(),
        }
    };
    let ports_ok = |peer_pod: Option<&Pod>| {
        let destination = destination(peer_pod);
        rule.ports.is_empty()
            || rule
                .ports
                .iter()
                .any(|e| entry_matches(e, destination.as_ref(), proto, port))
    };
    let pods_at_peer = || all_pods.iter().filter(|q| addr(q) == Some(peer));
    if rule.peers.is_empty() {
        return ports_ok(None) || pods_at_peer().any(|q| ports_ok(Some(q)));
    }
    rule.peers.iter().any(|p| match p {
        Peer::Pods {
            namespace_selector,
            pod_selector,
        } => pods_at_peer().any(|q| {
            pod_peer_matches(
                policy,
                namespace_selector.as_ref(),
                pod_selector.as_ref(),
                q,
                namespaces,
            ) && ports_ok(Some(q))
        }),
        Peer::IpBlock { cidr, except } => {
            cidr.contains(peer) && !except.iter().any(|e| e.contains(peer)) && ports_ok(None)
        }
    })
}

#[allow(clippy::too_many_arguments)]
fn reference_allows(
    dir: Dir,
    local_pods: &[&Pod],
    all_pods: &[Pod],
    namespaces: &[Namespace],
    policies: &[NetworkPolicy],
    local_ip: u32,
    peer: u32,
    proto: u8,
    port: u16,
) -> bool {
    let Some(local) = local_pods.iter().rev().find(|p| addr(p) == Some(local_ip)) else {
        return true;
    };
    let selecting: Vec<&NetworkPolicy> = policies
        .iter()
        .filter(|p| p.namespace == local.namespace && p.pod_selector.matches(&local.labels))
        .filter(|p| match dir {
            Dir::In => p.ingress_isolation,
            Dir::Out => p.egress_isolation,
        })
        .collect();
    if selecting.is_empty() {
        return true;
    }
    selecting.iter().any(|policy| {
        let rules = match dir {
            Dir::In => &policy.ingress,
            Dir::Out => &policy.egress,
        };
        rules.iter().any(|rule| {
            rule_allows(
                dir, policy, rule, local, all_pods, namespaces, peer, proto, port,
            )
        })
    })
}

// ---- Random clusters ----

const NAMESPACES: [&str; 4] = ["a", "b", "c", "unlisted"];
const KEYS: [&str; 2] = ["app", "tier"];
const VALUES: [&str; 2] = ["x", "y"];
const PORT_NAMES: [&str; 3] = ["http", "dns", "nope"];
const PROTOS: [Proto; 4] = [Proto::Tcp, Proto::Tcp, Proto::Udp, Proto::Sctp];

/// Pod `i` lives at 10.0.0.(i + 1).
fn pod_ip(i: usize) -> u32 {
    0x0a00_0001 + u32::try_from(i).unwrap()
}

fn arb_labels() -> impl Strategy<Value = Labels> {
    prop::collection::btree_map(
        prop::sample::select(&KEYS[..]),
        prop::sample::select(&VALUES[..]),
        0..=2,
    )
    .prop_map(|m| {
        m.into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    })
}

fn arb_selector() -> impl Strategy<Value = LabelSelector> {
    let op = prop::sample::select(vec![
        SelectorOp::In,
        SelectorOp::NotIn,
        SelectorOp::Exists,
        SelectorOp::DoesNotExist,
    ]);
    let requirement = (
        prop::sample::select(&KEYS[..]),
        op,
        prop::collection::vec(prop::sample::select(&VALUES[..]), 1..=2),
    )
        .prop_map(|(key, op, values)| Requirement {
            key: key.into(),
            op,
            values: values.into_iter().map(String::from).collect(),
        });
    let built = (
        arb_labels().prop_map(|l| l.into_iter().take(1).collect()),
        prop::collection::vec(requirement, 0..=1),
    )
        .prop_map(|(match_labels, match_expressions)| LabelSelector {
            match_labels,
            match_expressions,
        });
    prop_oneof![1 => Just(LabelSelector::default()), 3 => built]
}

fn arb_cidr() -> impl Strategy<Value = Cidr> {
    prop_oneof![
        1 => Just(Cidr::new(Ipv4Addr::UNSPECIFIED, 0).unwrap()),
        6 => (0u32..16, 28u8..=32).prop_map(|(low, len)| Cidr::new(Ipv4Addr::from(0x0a00_0000 | low), len).unwrap()),
        1 => (0u32..256, 24u8..=32).prop_map(|(low, len)| Cidr::new(Ipv4Addr::from(0xc0a8_0000 | low), len).unwrap()),
    ]
}

fn arb_peer() -> impl Strategy<Value = Peer> {
    prop_oneof![
        (
            prop::option::of(arb_selector()),
            prop::option::of(arb_selector())
        )
            .prop_map(|(n, p)| Peer::Pods {
                namespace_selector: n,
                pod_selector: p,
            }),
        (arb_cidr(), prop::collection::vec(arb_cidr(), 0..=2))
            .prop_map(|(cidr, except)| Peer::IpBlock { cidr, except }),
    ]
}

fn arb_port() -> impl Strategy<Value = PolicyPort> {
    let proto = prop_oneof![10 => prop::sample::select(&PROTOS[..]), 1 => Just(Proto::Icmp)];
    let port = prop_oneof![
        1 => Just(None),
        3 => (1u16..6).prop_map(|p| Some(PortRef::Number(p))),
        2 => prop::sample::select(&PORT_NAMES[..]).prop_map(|n| Some(PortRef::Name(n.into()))),
    ];
    let end = prop_oneof![3 => Just(None), 1 => (0u16..8).prop_map(Some)];
    (proto, port, end).prop_map(|(proto, port, end_port)| PolicyPort {
        proto,
        port,
        end_port,
    })
}

fn arb_rule() -> impl Strategy<Value = PolicyRule> {
    (
        prop::collection::vec(arb_peer(), 0..=2),
        prop::collection::vec(arb_port(), 0..=2),
    )
        .prop_map(|(peers, ports)| PolicyRule { peers, ports })
}

fn arb_policy() -> impl Strategy<Value = NetworkPolicy> {
    (
        prop::sample::select(&NAMESPACES[..2]),
        prop_oneof![1 => Just(LabelSelector::default()), 1 => arb_selector()],
        prop::bool::weighted(0.8),
        prop::bool::weighted(0.8),
        prop::collection::vec(arb_rule(), 0..=2),
        prop::collection::vec(arb_rule(), 0..=2),
    )
        .prop_map(
            |(namespace, pod_selector, ingress_isolation, egress_isolation, ingress, egress)| {
                NetworkPolicy {
                    namespace: namespace.into(),
                    name: "p".into(),
                    pod_selector,
                    ingress_isolation,
                    egress_isolation,
                    ingress,
                    egress,
                }
            },
        )
}

fn arb_pod() -> impl Strategy<Value = (Pod, bool)> {
    let named = (
        prop::sample::select(&PORT_NAMES[..2]),
        prop::sample::select(&PROTOS[..]),
        1u16..4,
    )
        .prop_map(|(name, proto, port)| NamedPort {
            name: name.into(),
            proto,
            port,
        });
    let namespace = prop_oneof![
        4 => prop::sample::select(&NAMESPACES[..2]),
        1 => prop::sample::select(&NAMESPACES[2..]),
    ];
    (
        namespace,
        arb_labels(),
        prop::collection::vec(named, 0..=3),
        prop::bool::weighted(0.1),
        prop::bool::weighted(0.7),
    )
        .prop_map(|(namespace, labels, ports, no_ip, local)| {
            let pod = Pod {
                namespace: namespace.into(),
                name: String::new(),
                ip: if no_ip {
                    Ipv4Addr::UNSPECIFIED
                } else {
                    Ipv4Addr::BROADCAST
                },
                labels,
                ports,
                node: String::new(),
                host_ports: Vec::new(),
            };
            (pod, local)
        })
}

#[derive(Debug, Clone)]
struct Cluster {
    pods: Vec<Pod>,
    local: Vec<usize>,
    namespaces: Vec<Namespace>,
    policies: Vec<NetworkPolicy>,
}

fn arb_cluster() -> impl Strategy<Value = Cluster> {
    (
        prop::collection::vec(arb_pod(), 1..=7),
        prop::collection::vec(arb_labels(), 3),
        prop::collection::vec(arb_policy(), 0..=5),
    )
        .prop_map(|(pods, ns_labels, policies)| {
            let mut out = Cluster {
                pods: Vec::new(),
                local: Vec::new(),
                namespaces: NAMESPACES[..3]
                    .iter()
                    .zip(ns_labels)
                    .map(|(name, labels)| Namespace {
                        name: name.to_string(),
                        labels,
                    })
                    .collect(),
                policies,
            };
            for (i, (mut pod, local)) in pods.into_iter().enumerate() {
                pod.name = format!("pod{i}");
                if !pod.ip.is_unspecified() {
                    pod.ip = Ipv4Addr::from(pod_ip(i));
                }
                if local {
                    out.local.push(i);
                }
                out.pods.push(pod);
            }
            out
        })
}

/// A query address: mostly a pod of the cluster (a local one for the local
/// side), sometimes any address.
#[derive(Debug, Clone)]
enum Target {
    Pod(prop::sample::Index),
    /// An ipBlock or except boundary (or the address just outside one).
    Edge(prop::sample::Index),
    Addr(u32),
}

#[derive(Debug, Clone)]
struct Query {
    dir_in: bool,
    local: Target,
    peer: Target,
    proto: u8,
    port: u16,
}

fn arb_target() -> impl Strategy<Value = Target> {
    prop_oneof![
        6 => any::<prop::sample::Index>().prop_map(Target::Pod),
        2 => any::<prop::sample::Index>().prop_map(Target::Edge),
        1 => (0u32..16).prop_map(|low| Target::Addr(0x0a00_0000 | low)),
        1 => (0u32..256).prop_map(|low| Target::Addr(0xc0a8_0000 | low)),
        1 => any::<u32>().prop_map(Target::Addr),
    ]
}

fn arb_query() -> impl Strategy<Value = Query> {
    let local = prop_oneof![
        9 => any::<prop::sample::Index>().prop_map(Target::Pod),
        1 => any::<u32>().prop_map(Target::Addr),
    ];
    (
        any::<bool>(),
        local,
        arb_target(),
        prop::sample::select(vec![1u8, 6, 6, 6, 17, 17, 132, 47]),
        0u16..6,
    )
        .prop_map(|(dir_in, local, peer, proto, port)| Query {
            dir_in,
            local,
            peer,
            proto,
            port,
        })
}

/// The address a target stands for, picking among `pods` or `edges`.
fn resolve(target: &Target, pods: &[&Pod], edges: &[u32]) -> u32 {
    match target {
        Target::Pod(i) if !pods.is_empty() => u32::from(pods[i.index(pods.len())].ip),
        Target::Edge(i) if !edges.is_empty() => edges[i.index(edges.len())],
        Target::Pod(_) | Target::Edge(_) => 0,
        Target::Addr(a) => *a,
    }
}

/// Every ipBlock and except boundary of the policies, and its outside
/// neighbour.
fn edges(policies: &[NetworkPolicy]) -> Vec<u32> {
    let mut out = Vec::new();
    for rule in policies
        .iter()
        .flat_map(|p| p.ingress.iter().chain(&p.egress))
    {
        for peer in &rule.peers {
            if let Peer::IpBlock { cidr, except } = peer {
                for c in std::iter::once(cidr).chain(except) {
                    let (first, last) = c.range();
                    out.extend([first, last, first.wrapping_sub(1), last.wrapping_add(1)]);
                }
            }
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn compiled_tables_agree_with_the_reference(
        cluster in arb_cluster(),
        queries in prop::collection::vec(arb_query(), 1..60),
    ) {
        let local: Vec<&Pod> = cluster.local.iter().map(|&i| &cluster.pods[i]).collect();
        let (table, _) = PolicyTable::compile(&local, &cluster.pods, &cluster.namespaces, &cluster.policies);
        let everyone: Vec<&Pod> = cluster.pods.iter().collect();
        let edges = edges(&cluster.policies);
        for q in queries {
            let dir = if q.dir_in { Dir::In } else { Dir::Out };
            let (me, peer) = (resolve(&q.local, &local, &[]), resolve(&q.peer, &everyone, &edges));
            let got = match dir {
                Dir::In => table.allows_ingress(me, peer, q.proto, q.port),
                Dir::Out => table.allows_egress(me, peer, q.proto, q.port),
            };
            let want = reference_allows(
                dir, &local, &cluster.pods, &cluster.namespaces, &cluster.policies,
                me, peer, q.proto, q.port,
            );
            prop_assert_eq!(got, want, "{:?}", q);
        }
    }
}
