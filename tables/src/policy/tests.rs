//! One test per NetworkPolicy feature, in both directions where the feature
//! has two, on a small fixed cluster.

use std::net::Ipv4Addr;
use std::sync::Arc;

use super::*;
use crate::model::{
    Cidr, LabelSelector, Labels, NamedPort, Peer, PolicyPort, PolicyRule, PortRef, Proto,
    Requirement, SelectorOp,
};

use crate::proto::{ICMP, TCP, UDP};
const GRE: u8 = 47;

const WEB: &str = "10.0.0.1";
const DB: &str = "10.0.0.2";
const CACHE: &str = "10.0.0.3";
const DEV_WEB: &str = "10.0.1.1";
const CLIENT: &str = "10.0.1.2";
const MON: &str = "10.0.2.1";
const OUTSIDE: &str = "192.168.2.1";

#[derive(Clone, Copy, Debug)]
enum Dir {
    In,
    Out,
}

const BOTH: [Dir; 2] = [Dir::In, Dir::Out];

fn ip(s: &str) -> u32 {
    u32::from(s.parse::<Ipv4Addr>().unwrap())
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn sel(pairs: &[(&str, &str)]) -> LabelSelector {
    LabelSelector {
        match_labels: labels(pairs),
        match_expressions: Vec::new(),
    }
}

fn expr(key: &str, op: SelectorOp, values: &[&str]) -> LabelSelector {
    LabelSelector {
        match_labels: Labels::new(),
        match_expressions: vec![Requirement {
            key: key.into(),
            op,
            values: values.iter().map(|v| v.to_string()).collect(),
        }],
    }
}

fn pod(
    namespace: &str,
    name: &str,
    addr: &str,
    pairs: &[(&str, &str)],
    ports: &[(&str, Proto, u16)],
) -> Pod {
    Pod {
        namespace: namespace.into(),
        name: name.into(),
        ip: addr.parse().unwrap(),
        labels: labels(pairs),
        ports: ports
            .iter()
            .map(|(name, proto, port)| NamedPort {
                name: name.to_string(),
                proto: *proto,
                port: *port,
            })
            .collect(),
        node: "node-a".into(),
        host_ports: Vec::new(),
    }
}

fn pods() -> Vec<Pod> {
    vec![
        pod(
            "prod",
            "web",
            WEB,
            &[("app", "web"), ("tier", "front")],
            &[("http", Proto::Tcp, 8080)],
        ),
        pod(
            "prod",
            "db",
            DB,
            &[("app", "db"), ("tier", "back")],
            &[("http", Proto::Tcp, 9090), ("metrics", Proto::Tcp, 9100)],
        ),
        pod(
            "prod",
            "cache",
            CACHE,
            &[("app", "cache")],
            &[("metrics", Proto::Tcp, 9200)],
        ),
        pod("dev", "web", DEV_WEB, &[("app", "web")], &[]),
        pod(
            "dev",
            "client",
            CLIENT,
            &[("app", "client"), ("canary", "yes")],
            &[],
        ),
        pod("ops", "mon", MON, &[("app", "mon")], &[]),
    ]
}

fn namespaces() -> Vec<Namespace> {
    vec![
        Namespace {
            name: "prod".into(),
            labels: labels(&[("env", "prod")]),
        },
        Namespace {
            name: "dev".into(),
            labels: labels(&[("env", "dev")]),
        },
        Namespace {
            name: "ops".into(),
            labels: Labels::new(),
        },
    ]
}

fn pods_peer(namespace: Option<LabelSelector>, pods: Option<LabelSelector>) -> Peer {
    Peer::Pods {
        namespace_selector: namespace,
        pod_selector: pods,
    }
}

fn block(cidr: &str, except: &[&str]) -> Peer {
    Peer::IpBlock {
        cidr: cidr.parse().unwrap(),
        except: except.iter().map(|c| c.parse::<Cidr>().unwrap()).collect(),
    }
}

fn port(proto: Proto, number: u16) -> PolicyPort {
    PolicyPort {
        proto,
        port: Some(PortRef::Number(number)),
        end_port: None,
    }
}

fn named(proto: Proto, name: &str) -> PolicyPort {
    PolicyPort {
        proto,
        port: Some(PortRef::Name(name.into())),
        end_port: None,
    }
}

fn rule(peers: Vec<Peer>, ports: Vec<PolicyPort>) -> PolicyRule {
    PolicyRule { peers, ports }
}

/// A policy in `namespace` selecting `selector`, isolating `dir` with `rules`.
fn policy(
    dir: Dir,
    namespace: &str,
    name: &str,
    selector: LabelSelector,
    rules: Vec<PolicyRule>,
) -> NetworkPolicy {
    let mut p = NetworkPolicy {
        namespace: namespace.into(),
        name: name.into(),
        pod_selector: selector,
        ingress_isolation: false,
        egress_isolation: false,
        ingress: Vec::new(),
        egress: Vec::new(),
    };
    match dir {
        Dir::In => {
            p.ingress_isolation = true;
            p.ingress = rules;
        }
        Dir::Out => {
            p.egress_isolation = true;
            p.egress = rules;
        }
    }
    p
}

/// Compiles with every fixture pod local.
fn compile(policies: &[NetworkPolicy]) -> (PolicyTable, Vec<PolicyWarning>) {
    let all = pods();
    let local: Vec<&Pod> = all.iter().collect();
    PolicyTable::compile(&local, &all, &namespaces(), policies)
}

fn table(policies: &[NetworkPolicy]) -> PolicyTable {
    let (table, warnings) = compile(policies);
    assert_eq!(warnings, [], "unexpected warnings");
    table
}

/// Whether `local` may receive from (`In`) or send to (`Out`) `peer`.
fn allowed(t: &PolicyTable, dir: Dir, local: &str, peer: &str, proto: u8, port: u16) -> bool {
    match dir {
        Dir::In => t.allows_ingress(ip(local), ip(peer), proto, port),
        Dir::Out => t.allows_egress(ip(local), ip(peer), proto, port),
    }
}

#[test]
fn no_policies_allow_everything() {
    let t = table(&[]);
    assert_eq!(t.len(), 6);
    for dir in BOTH {
        for proto in [ICMP, TCP, UDP, GRE] {
            assert!(allowed(&t, dir, WEB, OUTSIDE, proto, 80));
            assert!(allowed(&t, dir, WEB, DB, proto, 0));
        }
    }
    assert!(t
        .pod(ip(WEB))
        .is_some_and(|p| p.ingress.is_none() && p.egress.is_none()));
}

#[test]
fn default_deny_isolates_only_its_direction_and_namespace() {
    for dir in BOTH {
        let t = table(&[policy(
            dir,
            "prod",
            "deny",
            LabelSelector::default(),
            vec![],
        )]);
        let other = match dir {
            Dir::In => Dir::Out,
            Dir::Out => Dir::In,
        };
        for local in [WEB, DB, CACHE] {
            assert!(
                !allowed(&t, dir, local, DEV_WEB, TCP, 80),
                "{dir:?} {local}"
            );
            assert!(!allowed(&t, dir, local, WEB, ICMP, 0), "{dir:?} {local}");
            assert!(
                allowed(&t, other, local, DEV_WEB, TCP, 80),
                "{dir:?} {local}"
            );
        }
        assert!(
            allowed(&t, dir, DEV_WEB, WEB, TCP, 80),
            "other namespace untouched"
        );
        let set = t.pod(ip(WEB)).unwrap();
        let compiled = match dir {
            Dir::In => set.ingress.as_ref(),
            Dir::Out => set.egress.as_ref(),
        };
        assert_eq!(compiled.unwrap().rule_count(), 0);
    }
}

#[test]
fn empty_peers_match_every_address() {
    for dir in BOTH {
        let t = table(&[policy(
            dir,
            "prod",
            "p",
            sel(&[("app", "db")]),
            vec![rule(vec![], vec![port(Proto::Tcp, 5432)])],
        )]);
        for peer in [WEB, MON, OUTSIDE, "0.0.0.0", "255.255.255.255"] {
            assert!(allowed(&t, dir, DB, peer, TCP, 5432), "{dir:?} {peer}");
            assert!(!allowed(&t, dir, DB, peer, TCP, 5433), "{dir:?} {peer}");
        }
    }
}

#[test]
fn pod_selector_peers_are_taken_from_the_policy_namespace() {
    for dir in BOTH {
        let peers = vec![pods_peer(None, Some(sel(&[("app", "web")])))];
        let t = table(&[policy(
            dir,
            "prod",
            "p",
            sel(&[("app", "db")]),
            vec![rule(peers, vec![])],
        )]);
        assert!(allowed(&t, dir, DB, WEB, TCP, 1), "{dir:?}");
        assert!(
            !allowed(&t, dir, DB, DEV_WEB, TCP, 1),
            "{dir:?}: same labels, other namespace"
        );
        assert!(!allowed(&t, dir, DB, CACHE, TCP, 1), "{dir:?}");
        assert!(!allowed(&t, dir, DB, OUTSIDE, TCP, 1), "{dir:?}");
        assert!(
            allowed(&t, dir, WEB, OUTSIDE, TCP, 1),
            "{dir:?}: web is not selected"
        );
    }
}

#[test]
fn namespace_selector_peers_take_every_pod_of_matching_namespaces() {
    for dir in BOTH {
        let peers = vec![pods_peer(Some(sel(&[("env", "dev")])), None)];
        let t = table(&[policy(
            dir,
            "prod",
            "p",
            sel(&[("app", "db")]),
            vec![rule(peers, vec![])],
        )]);
        assert!(allowed(&t, dir, DB, DEV_WEB, TCP, 1), "{dir:?}");
        assert!(allowed(&t, dir, DB, CLIENT, UDP, 1), "{dir:?}");
        assert!(!allowed(&t, dir, DB, WEB, TCP, 1), "{dir:?}");
        assert!(!allowed(&t, dir, DB, MON, TCP, 1), "{dir:?}");
        // `{}` selects every namespace, including one without labels.
        let peers = vec![pods_peer(Some(LabelSelector::default()), None)];
        let t = table(&[policy(
            dir,
            "prod",
            "p",
            sel(&[("app", "db")]),
            vec![rule(peers, vec![])],
        )]);
        for peer in [WEB, DEV_WEB, CLIENT, MON] {
            assert!(allowed(&t, dir, DB, peer, TCP, 1), "{dir:?} {peer}");
        }
        assert!(!allowed(&t, dir, DB, OUTSIDE, TCP, 1), "{dir:?}");
    }
}

#[test]
fn both_selectors_in_one_peer_and_but_two_peers_or() {
    for dir in BOTH {
        let dev = || Some(sel(&[("env", "dev")]));
        let web = || Some(sel(&[("app", "web")]));
        let and = vec![pods_peer(dev(), web())];
        let t = table(&[policy(
            dir,
            "prod",
            "p",
            sel(&[("app", "db")]),
            vec![rule(and, vec![])],
        )]);
        assert!(allowed(&t, dir, DB, DEV_WEB, TCP, 1), "{dir:?}");
        assert!(!allowed(&t, dir, DB, CLIENT, TCP, 1), "{dir:?}");
        assert!(!allowed(&t, dir, DB, WEB, TCP, 1), "{dir:?}");

        let or = vec![pods_peer(dev(), None), pods_peer(None, web())];
        let t = table(&[policy(
            dir,
            "prod",
            "p",
            sel(&[("app", "db")]),
            vec![rule(or, vec![])],
        )]);
        assert!(allowed(&t, dir, DB, DEV_WEB, TCP, 1), "{dir:?}");
        assert!(allowed(&t, dir, DB, CLIENT, TCP, 1), "{dir:?}");
        assert!(allowed(&t, dir, DB, WEB, TCP, 1), "{dir:?}");
        assert!(!allowed(&t, dir, DB, MON, TCP, 1), "{dir:?}");
    }
}

#[test]
fn match_expressions() {
    let any_ns = || Some(LabelSelector::default());
    let cases = [
        (
            expr("app", SelectorOp::In, &["web", "client"]),
            vec![WEB, DEV_WEB, CLIENT],
        ),
        (
            expr("app", SelectorOp::NotIn, &["web", "client"]),
            vec![DB, CACHE, MON],
        ),
        (expr("canary", SelectorOp::Exists, &[]), vec![CLIENT]),
        (
            expr("tier", SelectorOp::DoesNotExist, &[]),
            vec![CACHE, DEV_WEB, CLIENT, MON],
        ),
    ];
    for dir in BOTH {
        for (selector, want) in &cases {
            let peers = vec![pods_peer(any_ns(), Some(selector.clone()))];
            let t = table(&[policy(
                dir,
                "ops",
                "p",
                LabelSelector::default(),
                vec![rule(peers, vec![])],
            )]);
            for peer in [WEB, DB, CACHE, DEV_WEB, CLIENT] {
                assert_eq!(
                    allowed(&t, dir, MON, peer, TCP, 1),
                    want.contains(&peer),
                    "{dir:?} {selector:?} {peer}"
                );
            }
        }
    }
    // Expressions in the policy's own pod selector.
    let t = table(&[policy(
        Dir::In,
        "prod",
        "p",
        expr("tier", SelectorOp::Exists, &[]),
        vec![],
    )]);
    assert!(!allowed(&t, Dir::In, WEB, MON, TCP, 1));
    assert!(!allowed(&t, Dir::In, DB, MON, TCP, 1));
    assert!(allowed(&t, Dir::In, CACHE, MON, TCP, 1));
}

#[test]
fn ip_block_with_except() {
    for dir in BOTH {
        let peers = vec![
            block("192.168.0.0/16", &["192.168.1.0/24", "192.168.3.128/25"]),
            block("10.0.1.0/24", &[]),
        ];
        let t = table(&[policy(
            dir,
            "prod",
            "p",
            sel(&[("app", "db")]),
            vec![rule(peers, vec![])],
        )]);
        for (peer, want) in [
            ("192.168.0.255", true),
            ("192.168.1.0", false),
            ("192.168.1.255", false),
            ("192.168.2.1", true),
            ("192.168.3.127", true),
            ("192.168.3.128", false),
            ("192.169.0.0", false),
            // ipBlock applies to pod addresses too.
            (DEV_WEB, true),
            (CLIENT, true),
            (WEB, false),
        ] {
            assert_eq!(allowed(&t, dir, DB, peer, TCP, 1), want, "{dir:?} {peer}");
        }
    }
}

#[test]
fn ports_by_number_and_protocol() {
    for dir in BOTH {
        let ports = vec![
            port(Proto::Tcp, 80),
            port(Proto::Udp, 53),
            port(Proto::Sctp, 9),
        ];
        let t = table(&[policy(
            dir,
            "prod",
            "p",
            sel(&[("app", "db")]),
            vec![rule(vec![], ports)],
        )]);
        assert!(allowed(&t, dir, DB, WEB, TCP, 80), "{dir:?}");
        assert!(!allowed(&t, dir, DB, WEB, TCP, 81), "{dir:?}");
        assert!(!allowed(&t, dir, DB, WEB, UDP, 80), "{dir:?}");
        assert!(
            allowed(&t, dir, DB, WEB, UDP, 53),
            "{dir:?}: UDP 53 allowed"
        );
        assert!(
            !allowed(&t, dir, DB, WEB, TCP, 53),
            "{dir:?}: TCP 53 denied"
        );
        assert!(allowed(&t, dir, DB, WEB, 132, 9), "{dir:?}");
        // A whole protocol.
        let whole = vec![PolicyPort {
            proto: Proto::Udp,
            port: None,
            end_port: None,
        }];
        let t = table(&[policy(
            dir,
            "prod",
            "p",
            sel(&[("app", "db")]),
            vec![rule(vec![], whole)],
        )]);
        assert!(
            allowed(&t, dir, DB, WEB, UDP, 0) && allowed(&t, dir, DB, WEB, UDP, 65535),
            "{dir:?}"
        );
        assert!(!allowed(&t, dir, DB, WEB, TCP, 1), "{dir:?}");
    }
}

#[test]
fn port_ranges_with_end_port() {
    for dir in BOTH {
        let range = |first, end| PolicyPort {
            proto: Proto::Tcp,
            port: Some(PortRef::Number(first)),
            end_port: Some(end),
        };
        let p = policy(
            dir,
            "prod",
            "p",
            sel(&[("app", "db")]),
            vec![rule(vec![], vec![range(8000, 8010), range(9000, 8999)])],
        );
        let (t, warnings) = compile(&[p]);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert_eq!(warnings[0].policy, "prod/p");
        assert!(warnings[0].message.contains("9000-8999"), "{}", warnings[0]);
        for (port, want) in [
            (7999, false),
            (8000, true),
            (8005, true),
            (8010, true),
            (8011, false),
            (8999, false),
            (9000, false),
        ] {
            assert_eq!(allowed(&t, dir, DB, WEB, TCP, port), want, "{dir:?} {port}");
        }
    }
}

#[test]
fn named_ports_in_ingress_resolve_on_the_local_pod() {
    let ports = vec![named(Proto::Tcp, "http"), named(Proto::Tcp, "nope")];
    let t = table(&[policy(
        Dir::In,
        "prod",
        "p",
        LabelSelector::default(),
        vec![rule(vec![], ports)],
    )]);
    assert!(allowed(&t, Dir::In, WEB, MON, TCP, 8080));
    assert!(!allowed(&t, Dir::In, WEB, MON, TCP, 9090));
    assert!(allowed(&t, Dir::In, DB, MON, TCP, 9090));
    assert!(!allowed(&t, Dir::In, DB, MON, TCP, 8080));
    assert!(
        !allowed(&t, Dir::In, DB, MON, UDP, 9090),
        "named for TCP only"
    );
    // cache declares no "http": nothing is open.
    for port in [8080, 9090, 9200] {
        assert!(!allowed(&t, Dir::In, CACHE, MON, TCP, port));
    }
}

#[test]
fn named_ports_in_egress_resolve_on_each_peer_pod() {
    // db and cache both declare "metrics", with different numbers.
    let peers = vec![
        pods_peer(None, Some(expr("app", SelectorOp::In, &["db", "cache"]))),
        block("192.168.0.0/16", &[]),
    ];
    let t = table(&[policy(
        Dir::Out,
        "prod",
        "p",
        sel(&[("app", "web")]),
        vec![rule(peers, vec![named(Proto::Tcp, "metrics")])],
    )]);
    assert!(allowed(&t, Dir::Out, WEB, DB, TCP, 9100));
    assert!(!allowed(&t, Dir::Out, WEB, DB, TCP, 9200));
    assert!(allowed(&t, Dir::Out, WEB, CACHE, TCP, 9200));
    assert!(!allowed(&t, Dir::Out, WEB, CACHE, TCP, 9100));
    // No pod behind an ipBlock address to resolve the name on.
    assert!(!allowed(&t, Dir::Out, WEB, OUTSIDE, TCP, 9100));
    assert!(!allowed(&t, Dir::Out, WEB, OUTSIDE, TCP, 9200));

    // Without peers the name resolves on whichever pod the address is.
    let t = table(&[policy(
        Dir::Out,
        "prod",
        "p",
        sel(&[("app", "web")]),
        vec![rule(vec![], vec![named(Proto::Tcp, "metrics")])],
    )]);
    assert!(allowed(&t, Dir::Out, WEB, DB, TCP, 9100));
    assert!(allowed(&t, Dir::Out, WEB, CACHE, TCP, 9200));
    assert!(!allowed(&t, Dir::Out, WEB, CACHE, TCP, 9100));
    assert!(!allowed(&t, Dir::Out, WEB, OUTSIDE, TCP, 9100));
}

#[test]
fn icmp_only_through_rules_without_ports() {
    for dir in BOTH {
        let with_ports = rule(
            vec![pods_peer(None, Some(sel(&[("app", "web")])))],
            vec![port(Proto::Tcp, 80)],
        );
        let t = table(&[policy(
            dir,
            "prod",
            "p",
            sel(&[("app", "db")]),
            vec![with_ports.clone()],
        )]);
        assert!(!allowed(&t, dir, DB, WEB, ICMP, 0), "{dir:?}");
        assert!(!allowed(&t, dir, DB, WEB, GRE, 0), "{dir:?}");
        let without = rule(
            vec![pods_peer(None, Some(sel(&[("app", "cache")])))],
            vec![],
        );
        let t = table(&[policy(
            dir,
            "prod",
            "p",
            sel(&[("app", "db")]),
            vec![with_ports, without],
        )]);
        assert!(!allowed(&t, dir, DB, WEB, ICMP, 0), "{dir:?}");
        assert!(allowed(&t, dir, DB, CACHE, ICMP, 0), "{dir:?}");
        assert!(allowed(&t, dir, DB, CACHE, GRE, 0), "{dir:?}");
    }
    // An ICMP port entry is a mistake: warned about, matches nothing.
    let icmp = PolicyPort {
        proto: Proto::Icmp,
        port: None,
        end_port: None,
    };
    let (t, warnings) = compile(&[policy(
        Dir::In,
        "prod",
        "p",
        sel(&[("app", "db")]),
        vec![rule(vec![], vec![icmp])],
    )]);
    assert_eq!(warnings.len(), 1);
    assert!(!allowed(&t, Dir::In, DB, WEB, ICMP, 0));
}

#[test]
fn policies_and_rules_union() {
    for dir in BOTH {
        let from = |app: &str| vec![pods_peer(None, Some(sel(&[("app", app)])))];
        let a = policy(
            dir,
            "prod",
            "a",
            sel(&[("app", "db")]),
            vec![rule(from("web"), vec![port(Proto::Tcp, 80)])],
        );
        let b = policy(
            dir,
            "prod",
            "b",
            sel(&[("tier", "back")]),
            vec![
                rule(from("cache"), vec![port(Proto::Tcp, 443)]),
                rule(from("web"), vec![port(Proto::Udp, 53)]),
            ],
        );
        let t = table(&[a, b]);
        assert!(allowed(&t, dir, DB, WEB, TCP, 80), "{dir:?}");
        assert!(allowed(&t, dir, DB, WEB, UDP, 53), "{dir:?}");
        assert!(allowed(&t, dir, DB, CACHE, TCP, 443), "{dir:?}");
        assert!(!allowed(&t, dir, DB, WEB, TCP, 443), "{dir:?}");
        assert!(!allowed(&t, dir, DB, CACHE, TCP, 80), "{dir:?}");
        let set = t.pod(ip(DB)).unwrap();
        let compiled = match dir {
            Dir::In => set.ingress.as_ref(),
            Dir::Out => set.egress.as_ref(),
        };
        assert_eq!(compiled.unwrap().rule_count(), 3);
    }
}

#[test]
fn policy_in_another_namespace_does_not_select() {
    for dir in BOTH {
        // Selects app=web, but only in dev.
        let t = table(&[policy(dir, "dev", "deny", sel(&[("app", "web")]), vec![])]);
        assert!(allowed(&t, dir, WEB, MON, TCP, 80), "{dir:?}");
        assert!(!allowed(&t, dir, DEV_WEB, MON, TCP, 80), "{dir:?}");
        assert!(allowed(&t, dir, CLIENT, MON, TCP, 80), "{dir:?}");
    }
}

#[test]
fn rules_of_a_direction_the_policy_does_not_isolate_are_ignored() {
    let mut p = policy(Dir::In, "prod", "p", sel(&[("app", "db")]), vec![]);
    p.egress = vec![rule(vec![block("192.168.0.0/16", &[])], vec![])];
    let (t, warnings) = compile(&[p]);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(allowed(&t, Dir::Out, DB, WEB, TCP, 1));
    assert!(!allowed(&t, Dir::In, DB, WEB, TCP, 1));
}

#[test]
fn pods_off_this_node_and_unknown_addresses_are_not_isolated() {
    let all = pods();
    let local: Vec<&Pod> = all.iter().filter(|p| p.namespace == "dev").collect();
    let deny = policy(Dir::In, "prod", "deny", LabelSelector::default(), vec![]);
    let (t, _) = PolicyTable::compile(&local, &all, &namespaces(), &[deny]);
    assert_eq!(t.len(), 2);
    assert!(t.pod(ip(WEB)).is_none());
    assert!(
        t.allows_ingress(ip(WEB), ip(MON), TCP, 80),
        "remote pod: its node enforces"
    );
    assert!(t.allows_egress(ip("172.16.0.1"), ip(MON), TCP, 80));
    assert!(PolicyTable::empty().allows_ingress(ip(WEB), 0, TCP, 1));
}

#[test]
fn identical_sets_are_shared() {
    let selected = policy(
        Dir::In,
        "prod",
        "p",
        LabelSelector::default(),
        vec![rule(vec![], vec![port(Proto::Tcp, 80)])],
    );
    let deny_dev = policy(Dir::In, "dev", "deny", LabelSelector::default(), vec![]);
    let deny_ops = policy(Dir::Out, "ops", "deny", LabelSelector::default(), vec![]);
    let t = table(&[selected, deny_dev, deny_ops]);
    let ingress = |addr: &str| t.pod(ip(addr)).unwrap().ingress.clone().unwrap();
    assert!(Arc::ptr_eq(&ingress(WEB), &ingress(CACHE)));
    assert!(Arc::ptr_eq(&ingress(DEV_WEB), &ingress(CLIENT)));
    let egress_mon = t.pod(ip(MON)).unwrap().egress.clone().unwrap();
    assert!(
        Arc::ptr_eq(&ingress(DEV_WEB), &egress_mon),
        "default deny is one set"
    );
    assert!(!Arc::ptr_eq(&ingress(WEB), &ingress(CLIENT)));
}

#[test]
fn warnings_name_the_policy_and_the_problem() {
    let p = policy(
        Dir::In,
        "prod",
        "bad",
        LabelSelector::default(),
        vec![rule(
            vec![block("10.0.0.0/24", &["10.0.1.0/24"])],
            vec![PolicyPort {
                proto: Proto::Tcp,
                port: Some(PortRef::Name("http".into())),
                end_port: Some(90),
            }],
        )],
    );
    let (_, warnings) = compile(&[p]);
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(warnings.iter().all(|w| w.policy == "prod/bad"));
    assert!(warnings.iter().any(|w| w.message.contains("outside cidr")));
    assert!(warnings
        .iter()
        .any(|w| w.to_string().contains("endPort 90")));
}

#[test]
fn ip_block_intervals_keep_single_addresses_between_holes() {
    let cidr: Cidr = "10.0.0.0/29".parse().unwrap();
    let holes: Vec<Cidr> = ["10.0.0.1/32", "10.0.0.3/32", "10.0.0.4/31", "10.0.1.0/24"]
        .iter()
        .map(|c| c.parse().unwrap())
        .collect();
    let base = ip("10.0.0.0");
    assert_eq!(
        super::compile::block_intervals(cidr, &holes),
        [(base, base), (base + 2, base + 2), (base + 6, base + 7)]
    );
    let all: Cidr = "0.0.0.0/0".parse().unwrap();
    let top: Cidr = "255.255.255.255/32".parse().unwrap();
    assert_eq!(super::compile::block_intervals(all, &[all]), []);
    assert_eq!(
        super::compile::block_intervals(all, &[top]),
        [(0, u32::MAX - 1)]
    );
}
