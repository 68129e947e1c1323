//! Pods' `hostPort`s as services of this node (the CNI `portmap` plugin's
//! semantics): `node IP:hostPort` forwards to `pod IP:containerPort`, for
//! TCP and UDP, from anywhere (the underlay, other pods, other nodes); a pod
//! reaching its own host port is masqueraded (hairpin), nobody else is.
//!
//! Mappings come from the Pod spec (`containers[].ports[].hostPort`, read by
//! the Kubernetes and manifest sources) and from the runtime (the CNI
//! plugin's `runtimeConfig.portMappings`, handed over with the
//! attachment); the same mapping from both counts once. Each pod with
//! mappings becomes one [`ServiceType::HostPort`] entry named
//! `hostport:POD` in the pod's namespace (no Service can have that name).
//! Only this node's pods publish here: a host port is the pod's node's.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use crate::model::{
    Endpoint, HostPort, Pod, Proto, Service, ServicePort, ServiceType, TrafficPolicy,
};
use crate::route::NodeConfig;
use crate::service::ServiceEntry;

/// The prefix of a host-port entry's name.
pub const PREFIX: &str = "hostport:";

/// One pod's published ports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Published {
    pub namespace: String,
    pub name: String,
    pub ip: Ipv4Addr,
    pub ports: Vec<HostPort>,
}

impl Published {
    /// The host ports of a pod on `node` (none for another node's pod).
    pub fn of_pod(pod: &Pod, node: &str) -> Option<Published> {
        (pod.node == node && !pod.host_ports.is_empty()).then(|| Published {
            namespace: pod.namespace.clone(),
            name: pod.name.clone(),
            ip: pod.ip,
            ports: pod.host_ports.clone(),
        })
    }
}

/// The service entries of `published` (merged per pod address) for `node`,
/// keyed (namespace, `hostport:POD`), and a warning for each mapping left
/// out: another pod's (first come by namespace and name), or bound to an
/// address this node does not have.
pub fn entries(
    published: &[Published],
    node: &NodeConfig,
) -> (BTreeMap<(String, String), ServiceEntry>, Vec<String>) {
    let node_ip = Ipv4Addr::from(node.node_ip);
    let mut by_pod: BTreeMap<(String, String), Published> = BTreeMap::new();
    for p in published {
        let key = (p.namespace.clone(), p.name.clone());
        let merged = by_pod.entry(key).or_insert_with(|| Published {
            ports: Vec::new(),
            ..p.clone()
        });
        for hp in &p.ports {
            if !merged.ports.contains(hp) {
                merged.ports.push(hp.clone());
            }
        }
    }
    let mut claimed: BTreeMap<(Proto, u16), String> = BTreeMap::new();
    let mut warnings = Vec::new();
    let mut out = BTreeMap::new();
    for ((namespace, name), pod) in by_pod {
        let who = format!("pod {namespace}/{name}");
        let mut ports = Vec::new();
        let mut endpoint_ports = Vec::new();
        for hp in &pod.ports {
            if hp.host_ip.is_some_and(|ip| ip != node_ip) {
                warnings.push(format!(
                    "{who}: hostPort {}/{} is bound to {}, not an address of this node ({node_ip}); skipped",
                    hp.host_port,
                    hp.proto,
                    hp.host_ip.unwrap_or(Ipv4Addr::UNSPECIFIED)
                ));
                continue;
            }
            if !matches!(hp.proto, Proto::Tcp | Proto::Udp) {
                warnings.push(format!(
                    "{who}: hostPort {}/{}: only TCP and UDP host ports are published; skipped",
                    hp.host_port, hp.proto
                ));
                continue;
            }
            if let Some(owner) = claimed.get(&(hp.proto, hp.host_port)) {
                if *owner != who {
                    warnings.push(format!(
                        "{who}: hostPort {}/{} is already published by {owner}; skipped",
                        hp.host_port, hp.proto
                    ));
                }
                continue;
            }
            claimed.insert((hp.proto, hp.host_port), who.clone());
            let port_name = format!("{}-{}", hp.proto, hp.host_port).to_lowercase();
            ports.push(ServicePort {
                name: port_name.clone(),
                proto: hp.proto,
                port: hp.container_port,
                node_port: Some(hp.host_port),
            });
            endpoint_ports.push((port_name, hp.container_port));
        }
        if ports.is_empty() {
            continue;
        }
        let service = Service {
            namespace: namespace.clone(),
            name: format!("{PREFIX}{name}"),
            kind: ServiceType::HostPort,
            cluster_ips: Vec::new(),
            ports,
            external_ips: Vec::new(),
            load_balancer_ips: Vec::new(),
            affinity_timeout_s: None,
            external_traffic_policy: TrafficPolicy::Local,
            internal_traffic_policy: TrafficPolicy::Cluster,
            health_check_node_port: None,
        };
        let endpoint = Endpoint {
            ip: pod.ip,
            node: node.name.clone(),
            ready: true,
            serving: true,
            terminating: false,
            ports: endpoint_ports,
        };
        out.insert(
            (namespace, service.name.clone()),
            ServiceEntry {
                service,
                endpoints: vec![endpoint],
            },
        );
    }
    (out, warnings)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hp(host: u16, container: u16, proto: Proto) -> HostPort {
        HostPort {
            host_port: host,
            container_port: container,
            proto,
            host_ip: None,
        }
    }

    fn published(name: &str, ip: &str, ports: Vec<HostPort>) -> Published {
        Published {
            namespace: "demo".into(),
            name: name.into(),
            ip: ip.parse().unwrap(),
            ports,
        }
    }

    #[test]
    fn spec_and_runtime_mappings_merge_and_conflicts_are_refused() {
        let node = NodeConfig {
            name: "node1".into(),
            node_ip: u32::from(Ipv4Addr::new(198, 18, 0, 1)),
            uplink_mac: [2, 0, 0, 0, 0, 1],
            vtep_mac: [2, 0, 0, 0, 0, 2],
            gateway_mac: [2, 0, 0, 0, 0, 3],
            vni: 1,
            pod_cidr: "10.244.1.0/24".parse().unwrap(),
            cluster_cidr: "10.244.0.0/16".parse().unwrap(),
            service_cidr: "10.96.0.0/12".parse().unwrap(),
            uplink_port: 0,
            host_port: Some(1),
            host_mac: [2, 0, 0, 0, 0, 4],
            uplink_gateway_mac: [2, 0, 0, 0, 0, 5],
            uplink_mtu: 1500,
        };
        let (entries, warnings) = entries(
            &[
                published("a", "10.244.1.5", vec![hp(8080, 80, Proto::Tcp)]),
                // The same mapping again, from the runtime, plus a UDP one.
                published(
                    "a",
                    "10.244.1.5",
                    vec![hp(8080, 80, Proto::Tcp), hp(5353, 53, Proto::Udp)],
                ),
                published("b", "10.244.1.6", vec![hp(8080, 81, Proto::Tcp)]),
                published(
                    "c",
                    "10.244.1.7",
                    vec![HostPort {
                        host_ip: Some("198.18.0.99".parse().unwrap()),
                        ..hp(9000, 90, Proto::Tcp)
                    }],
                ),
            ],
            &node,
        );
        let a = &entries[&("demo".to_string(), "hostport:a".to_string())];
        assert_eq!(a.service.kind, ServiceType::HostPort);
        let ports: Vec<_> = a
            .service
            .ports
            .iter()
            .map(|p| (p.node_port, p.port, p.proto))
            .collect();
        assert_eq!(
            ports,
            [(Some(8080), 80, Proto::Tcp), (Some(5353), 53, Proto::Udp)]
        );
        assert_eq!(a.endpoints[0].ip, "10.244.1.5".parse::<Ipv4Addr>().unwrap());
        assert_eq!(entries.len(), 1, "b and c publish nothing");
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(
            warnings[0].contains("already published by pod demo/a"),
            "{warnings:?}"
        );
        assert!(
            warnings[1].contains("not an address of this node"),
            "{warnings:?}"
        );
    }
}
