//! Benchmark scenarios shared by the criterion benches: the example cluster
//! grown to a given number of services and policy rules, and the frames of
//! the flows being measured.
//!
//! For the control-plane benchmark (`control-bench`): a generated cluster
//! as Kubernetes objects ([`cluster`]) and measuring helpers ([`measure`]);
//! for the end-to-end benches, the node they run an agent on ([`node`]).
//!
//! It may depend on every crate (it measures them); nothing depends on it.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use fixtures::example::{self, addrs};
use tables::cluster::ClusterState;
use tables::model::{
    Cidr, Endpoint, LabelSelector, NetworkPolicy, Peer, PolicyPort, PolicyRule, PortRef, Proto,
    Service, ServicePort, ServiceType, TrafficPolicy,
};
use tables::service::ServiceEntry;

pub mod cluster;
pub mod gen;
pub mod measure;
pub mod node;

/// The example cluster with `services` extra ClusterIP services (two
/// backends each, on node2) and one ingress policy on web-2 and one egress
/// policy on the client with `rules` rules each (the last one allows the
/// measured flow, so every rule is in the compiled set).
pub fn scaled(services: usize, rules: usize) -> ClusterState {
    let mut state = example::state();
    for i in 0..services {
        let i = u32::try_from(i).unwrap_or(u32::MAX);
        let vip = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 100, 0, 0)) + i);
        let backend = |n: u32| Endpoint {
            ip: Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 244, 2, 0)) + 100 + (i * 2 + n) % 150),
            node: "node2".into(),
            ready: true,
            serving: true,
            terminating: false,
            ports: vec![("http".into(), 8080)],
        };
        state.services.push(ServiceEntry {
            service: Service {
                namespace: "bench".into(),
                name: format!("svc-{i}"),
                kind: ServiceType::ClusterIp,
                cluster_ips: vec![vip],
                ports: vec![ServicePort {
                    name: "http".into(),
                    proto: Proto::Tcp,
                    port: 80,
                    node_port: None,
                }],
                external_ips: vec![],
                load_balancer_ips: vec![],
                affinity_timeout_s: None,
                external_traffic_policy: TrafficPolicy::Cluster,
                internal_traffic_policy: TrafficPolicy::Cluster,
                health_check_node_port: None,
            },
            endpoints: vec![backend(0), backend(1)],
        });
    }
    if rules > 0 {
        let select = |app: &str| LabelSelector {
            match_labels: BTreeMap::from([("app".to_string(), app.to_string())]),
            ..LabelSelector::default()
        };
        // Rules for other peers (distinct /32s outside the cluster) and
        // ports, then the one that matters.
        let filler = |n: usize| PolicyRule {
            peers: vec![Peer::IpBlock {
                cidr: Cidr::new(
                    Ipv4Addr::from(0xc612_0000 + u32::try_from(n).unwrap_or(0) * 4),
                    30,
                )
                .unwrap_or_else(|| unreachable!()),
                except: vec![],
            }],
            ports: vec![PolicyPort {
                proto: Proto::Tcp,
                port: Some(PortRef::Number(1000 + u16::try_from(n % 5000).unwrap_or(0))),
                end_port: None,
            }],
        };
        let mut ingress: Vec<PolicyRule> = (0..rules - 1).map(filler).collect();
        ingress.push(PolicyRule {
            peers: vec![Peer::Pods {
                namespace_selector: None,
                pod_selector: Some(select("client")),
            }],
            ports: vec![PolicyPort {
                proto: Proto::Tcp,
                port: Some(PortRef::Number(8080)),
                end_port: None,
            }],
        });
        let mut egress: Vec<PolicyRule> = (0..rules - 1).map(filler).collect();
        egress.push(PolicyRule {
            peers: vec![Peer::Pods {
                namespace_selector: None,
                pod_selector: Some(select("web")),
            }],
            ports: vec![],
        });
        state.policies.push(NetworkPolicy {
            namespace: "demo".into(),
            name: "web-ingress".into(),
            pod_selector: select("web"),
            ingress_isolation: true,
            egress_isolation: false,
            ingress,
            egress: vec![],
        });
        state.policies.push(NetworkPolicy {
            namespace: "demo".into(),
            name: "client-egress".into(),
            pod_selector: select("client"),
            ingress_isolation: false,
            egress_isolation: true,
            ingress: vec![],
            egress,
        });
    }
    // Only web-2 backs the web service, so the measured ClusterIP flow
    // crosses to node2.
    state.services[0]
        .endpoints
        .retain(|e| e.ip.to_string() == addrs::WEB_2);
    state
}
