//! The generated cluster's NetworkPolicies: ten kinds, one per namespace
//! each in ten rounds, as real clusters write them (default deny, pod and
//! namespace selectors, matchExpressions, ipBlocks with `except`, port
//! ranges, named ports, ingress and egress).

use std::collections::BTreeMap;

use k8s_openapi::api::networking::v1 as networking;
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{apps, labels, namespace_name, object_meta, Scale, APP_SIZE, TEAMS};

fn match_labels(pairs: &[(&str, &str)]) -> meta::LabelSelector {
    meta::LabelSelector {
        match_labels: Some(labels(pairs)),
        match_expressions: None,
    }
}

fn expression(key: &str, operator: &str, values: &[&str]) -> meta::LabelSelectorRequirement {
    meta::LabelSelectorRequirement {
        key: key.into(),
        operator: operator.into(),
        values: (!values.is_empty()).then(|| values.iter().map(|v| (*v).to_owned()).collect()),
    }
}

fn pods_peer(selector: meta::LabelSelector) -> networking::NetworkPolicyPeer {
    networking::NetworkPolicyPeer {
        pod_selector: Some(selector),
        ..networking::NetworkPolicyPeer::default()
    }
}

fn namespaces_peer(
    namespaces: meta::LabelSelector,
    pods: Option<meta::LabelSelector>,
) -> networking::NetworkPolicyPeer {
    networking::NetworkPolicyPeer {
        namespace_selector: Some(namespaces),
        pod_selector: pods,
        ..networking::NetworkPolicyPeer::default()
    }
}

fn block(cidr: &str, except: &[&str]) -> networking::NetworkPolicyPeer {
    networking::NetworkPolicyPeer {
        ip_block: Some(networking::IPBlock {
            cidr: cidr.into(),
            except: (!except.is_empty()).then(|| except.iter().map(|c| (*c).to_owned()).collect()),
        }),
        ..networking::NetworkPolicyPeer::default()
    }
}

fn port(protocol: &str, port: IntOrString, end_port: Option<i32>) -> networking::NetworkPolicyPort {
    networking::NetworkPolicyPort {
        protocol: Some(protocol.into()),
        port: Some(port),
        end_port,
    }
}

fn tcp(n: i32) -> networking::NetworkPolicyPort {
    port("TCP", IntOrString::Int(n), None)
}

fn named(name: &str) -> networking::NetworkPolicyPort {
    port("TCP", IntOrString::String(name.into()), None)
}

fn ingress(
    from: Vec<networking::NetworkPolicyPeer>,
    ports: Vec<networking::NetworkPolicyPort>,
) -> networking::NetworkPolicyIngressRule {
    networking::NetworkPolicyIngressRule {
        from: Some(from),
        ports: Some(ports),
    }
}

fn egress(
    to: Vec<networking::NetworkPolicyPeer>,
    ports: Vec<networking::NetworkPolicyPort>,
) -> networking::NetworkPolicyEgressRule {
    networking::NetworkPolicyEgressRule {
        to: Some(to),
        ports: Some(ports),
    }
}

/// Policy `p`, in namespace `p % namespaces`; its round in that namespace
/// (`p / namespaces`) picks which of the ten kinds (so that each namespace
/// gets each kind once in ten rounds) and which of the namespace's apps it
/// is about.
pub fn policy(scale: &Scale, p: usize) -> networking::NetworkPolicy {
    let ns = p % scale.namespaces;
    let round = p / scale.namespaces;
    // An app of this namespace (apps are laid out namespace after
    // namespace, nodes/10 apps per namespace per lap).
    let app = |k: usize| {
        let per_ns = (scale.nodes / APP_SIZE).max(1);
        format!("app-{}", (ns * per_ns + k % per_ns) % apps(scale))
    };
    let team = format!("team-{}", (ns + round) % TEAMS);
    let (name, spec) = match (round + ns) % 10 {
        0 => (
            "default-deny-ingress",
            networking::NetworkPolicySpec {
                pod_selector: Some(meta::LabelSelector::default()),
                policy_types: Some(vec!["Ingress".into()]),
                ..networking::NetworkPolicySpec::default()
            },
        ),
        1 => (
            "web-to-app",
            networking::NetworkPolicySpec {
                pod_selector: Some(match_labels(&[("app", &app(round))])),
                ingress: Some(vec![ingress(
                    vec![pods_peer(match_labels(&[("tier", "web")]))],
                    vec![named("http")],
                )]),
                ..networking::NetworkPolicySpec::default()
            },
        ),
        2 => (
            "db-clients",
            networking::NetworkPolicySpec {
                pod_selector: Some(match_labels(&[("tier", "db")])),
                ingress: Some(vec![ingress(
                    vec![
                        pods_peer(match_labels(&[("tier", "api")])),
                        namespaces_peer(
                            match_labels(&[("team", &team)]),
                            Some(match_labels(&[("tier", "api")])),
                        ),
                    ],
                    vec![tcp(5432), named("postgres")],
                )]),
                ..networking::NetworkPolicySpec::default()
            },
        ),
        3 => (
            "allow-monitoring",
            networking::NetworkPolicySpec {
                pod_selector: Some(meta::LabelSelector::default()),
                ingress: Some(vec![ingress(
                    vec![namespaces_peer(
                        match_labels(&[("purpose", "monitoring")]),
                        None,
                    )],
                    vec![named("metrics"), tcp(9100)],
                )]),
                ..networking::NetworkPolicySpec::default()
            },
        ),
        4 => (
            "from-networks",
            networking::NetworkPolicySpec {
                pod_selector: Some(meta::LabelSelector {
                    match_labels: None,
                    match_expressions: Some(vec![expression("tier", "In", &["web", "api"])]),
                }),
                ingress: Some(vec![ingress(
                    vec![
                        block("10.0.0.0/8", &["10.244.0.0/16", "10.96.0.0/12"]),
                        block("172.16.0.0/12", &["172.16.5.0/24", "172.17.0.0/16"]),
                    ],
                    vec![
                        tcp(8080),
                        port("TCP", IntOrString::Int(30_000), Some(30_100)),
                    ],
                )]),
                ..networking::NetworkPolicySpec::default()
            },
        ),
        5 => (
            "api-egress",
            networking::NetworkPolicySpec {
                pod_selector: Some(match_labels(&[("tier", "api")])),
                policy_types: Some(vec!["Egress".into()]),
                egress: Some(vec![
                    egress(
                        vec![pods_peer(match_labels(&[("tier", "db")]))],
                        vec![named("postgres")],
                    ),
                    egress(
                        vec![namespaces_peer(match_labels(&[("purpose", "dns")]), None)],
                        vec![port("UDP", IntOrString::Int(53), None), tcp(53)],
                    ),
                ]),
                ..networking::NetworkPolicySpec::default()
            },
        ),
        6 => (
            "internet-egress",
            networking::NetworkPolicySpec {
                pod_selector: Some(match_labels(&[("team", &team)])),
                policy_types: Some(vec!["Egress".into()]),
                egress: Some(vec![egress(
                    vec![block(
                        "0.0.0.0/0",
                        &["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"],
                    )],
                    vec![tcp(443), port("TCP", IntOrString::Int(8000), Some(8999))],
                )]),
                ..networking::NetworkPolicySpec::default()
            },
        ),
        7 => (
            "prod-web",
            networking::NetworkPolicySpec {
                pod_selector: Some(match_labels(&[("app", &app(round + 1))])),
                ingress: Some(vec![ingress(
                    vec![namespaces_peer(
                        match_labels(&[("env", "prod")]),
                        Some(match_labels(&[("tier", "web")])),
                    )],
                    vec![
                        port("TCP", IntOrString::Int(8000), Some(8999)),
                        port("UDP", IntOrString::Int(53), None),
                    ],
                )]),
                ..networking::NetworkPolicySpec::default()
            },
        ),
        8 => (
            "expressions",
            networking::NetworkPolicySpec {
                pod_selector: Some(meta::LabelSelector {
                    match_labels: None,
                    match_expressions: Some(vec![
                        expression("tier", "NotIn", &["db"]),
                        expression("team", "Exists", &[]),
                    ]),
                }),
                ingress: Some(vec![ingress(
                    vec![pods_peer(meta::LabelSelector {
                        match_labels: None,
                        match_expressions: Some(vec![expression(
                            "app",
                            "In",
                            &[&app(round), &app(round + 2), &app(round + 4)],
                        )]),
                    })],
                    vec![named("http"), named("metrics")],
                )]),
                ..networking::NetworkPolicySpec::default()
            },
        ),
        _ => (
            "cache",
            networking::NetworkPolicySpec {
                pod_selector: Some(match_labels(&[("tier", "cache")])),
                policy_types: Some(vec!["Ingress".into(), "Egress".into()]),
                ingress: Some(vec![ingress(
                    vec![pods_peer(match_labels(&[("tier", "api")]))],
                    vec![named("redis")],
                )]),
                egress: Some(vec![egress(
                    vec![namespaces_peer(
                        meta::LabelSelector::default(),
                        Some(match_labels(&[("tier", "cache")])),
                    )],
                    vec![tcp(6379)],
                )]),
            },
        ),
    };
    let namespace = namespace_name(ns);
    networking::NetworkPolicy {
        metadata: object_meta(Some(&namespace), format!("{name}-{round}"), BTreeMap::new()),
        spec: Some(spec),
    }
}
