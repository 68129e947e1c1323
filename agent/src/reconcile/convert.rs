//! Kubernetes objects (k8s-openapi types, from either source) -> the object
//! model the tables are compiled from (`tables::model`).
//!
//! Each function checks what forwarding depends on and returns an error
//! naming the field when the object cannot be used (a Service port without
//! a protocol, an unparseable CIDR, a selector with an unknown operator):
//! the reconciler then skips that one object with a warning naming it, and
//! every other object still applies. Defaults are the API server's (a
//! manifest may omit what the API server would fill in).

use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::discovery::v1 as discovery;
use k8s_openapi::api::networking::v1 as networking;
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tables::model::{
    Cidr, Endpoint, HostPort, LabelSelector, NamedPort, Namespace, NetworkPolicy, Peer, Pod,
    PolicyPort, PolicyRule, PortRef, Proto, RemoteNode, Requirement, SelectorOp, Service,
    ServicePort, ServiceType, TrafficPolicy,
};

/// The label naming an EndpointSlice's service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// A node annotation giving its VTEP MAC, where it is not derived from its
/// address (`02:56:` + the address).
pub const VTEP_MAC_ANNOTATION: &str = "podswitch.io/vtep-mac";
/// `sessionAffinityConfig.clientIP.timeoutSeconds` default (3 hours).
const DEFAULT_AFFINITY_TIMEOUT_S: u32 = 10_800;

fn name_of(meta: &meta::ObjectMeta) -> String {
    meta.name.clone().unwrap_or_default()
}

fn namespace_of(meta: &meta::ObjectMeta) -> String {
    meta.namespace
        .clone()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "default".to_owned())
}

fn ipv4(s: &str, field: &str) -> Result<Ipv4Addr, String> {
    s.parse()
        .map_err(|_| format!("{field}: {s:?} is not an IPv4 address"))
}

fn cidr(s: &str, field: &str) -> Result<Cidr, String> {
    s.parse()
        .map_err(|_| format!("{field}: {s:?} is not an IPv4 CIDR"))
}

fn port16(n: i32, field: &str) -> Result<u16, String> {
    u16::try_from(n)
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("{field}: {n} is not a port number (1-65535)"))
}

fn protocol(p: Option<&str>, field: &str) -> Result<Proto, String> {
    let p = p.ok_or_else(|| format!("{field}: missing protocol"))?;
    Proto::from_k8s(p).ok_or_else(|| format!("{field}: unknown protocol {p:?}"))
}

/// A Namespace and its labels.
pub fn namespace(ns: &core::Namespace) -> Namespace {
    Namespace {
        name: name_of(&ns.metadata),
        labels: ns.metadata.labels.clone().unwrap_or_default(),
    }
}

/// A Node: its InternalIP (the VTEP address), pod CIDRs and VTEP MAC.
pub fn node(node: &core::Node) -> Result<RemoteNode, String> {
    let addresses = node
        .status
        .as_ref()
        .and_then(|s| s.addresses.as_ref())
        .map(Vec::as_slice)
        .unwrap_or_default();
    let internal = addresses
        .iter()
        .find(|a| a.type_ == "InternalIP" && a.address.parse::<Ipv4Addr>().is_ok())
        .ok_or("status.addresses: no IPv4 InternalIP")?;
    let ip = ipv4(&internal.address, "status.addresses InternalIP")?;
    let spec = node.spec.as_ref();
    let mut cidrs: Vec<String> = spec.and_then(|s| s.pod_cidrs.clone()).unwrap_or_default();
    if let Some(c) = spec.and_then(|s| s.pod_cidr.clone()) {
        if !cidrs.contains(&c) {
            cidrs.insert(0, c);
        }
    }
    let pod_cidrs = cidrs
        .iter()
        .filter(|c| !c.contains(':'))
        .map(|c| cidr(c, "spec.podCIDRs"))
        .collect::<Result<Vec<_>, _>>()?;
    let vtep_mac = match node
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(VTEP_MAC_ANNOTATION))
    {
        Some(s) => s
            .parse::<tables::mac::MacAddr>()
            .map_err(|e| format!("{VTEP_MAC_ANNOTATION}: {e}"))?
            .octets(),
        None => tables::cluster::vtep_mac(ip),
    };
    Ok(RemoteNode {
        name: name_of(&node.metadata),
        ip,
        vtep_mac,
        pod_cidrs,
    })
}

/// A Pod with an address, or `None` for one that has none yet, uses the
/// node's network (`hostNetwork`), or has finished (Succeeded, Failed).
pub fn pod(pod: &core::Pod) -> Result<Option<Pod>, String> {
    let spec = pod.spec.as_ref();
    let status = pod.status.as_ref();
    if spec.and_then(|s| s.host_network).unwrap_or(false) {
        return Ok(None);
    }
    if matches!(
        status.and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    ) {
        return Ok(None);
    }
    let Some(ip) = status
        .and_then(|s| s.pod_ip.as_deref())
        .filter(|s| !s.is_empty())
    else {
        return Ok(None);
    };
    if ip.contains(':') {
        return Ok(None);
    }
    let ip = ipv4(ip, "status.podIP")?;
    let mut ports = Vec::new();
    let mut host_ports = Vec::new();
    for c in spec.map(|s| s.containers.as_slice()).unwrap_or_default() {
        for p in c.ports.as_deref().unwrap_or_default() {
            let proto = p.protocol.as_deref().unwrap_or("TCP");
            if let Some(host_port) = p.host_port {
                let field = format!("container {} port {}", c.name, p.container_port);
                host_ports.push(HostPort {
                    host_port: port16(host_port, &format!("{field}: hostPort"))?,
                    container_port: port16(p.container_port, &field)?,
                    proto: protocol(Some(proto), &field)?,
                    host_ip: p
                        .host_ip
                        .as_deref()
                        .filter(|ip| !ip.is_empty())
                        .map(|ip| ipv4(ip, &format!("{field}: hostIP")))
                        .transpose()?
                        .filter(|ip| !ip.is_unspecified()),
                });
            }
            let Some(name) = p.name.clone() else { continue };
            let field = format!("container {} port {name}", c.name);
            ports.push(NamedPort {
                name,
                proto: protocol(Some(proto), &field)?,
                port: port16(p.container_port, &field)?,
            });
        }
    }
    Ok(Some(Pod {
        namespace: namespace_of(&pod.metadata),
        name: name_of(&pod.metadata),
        ip,
        labels: pod.metadata.labels.clone().unwrap_or_default(),
        ports,
        node: spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        host_ports,
    }))
}

/// Whether a Service has forwarding entries: not ExternalName, not headless.
pub fn forwards(svc: &core::Service) -> bool {
    let Some(spec) = svc.spec.as_ref() else {
        return false;
    };
    spec.type_.as_deref() != Some("ExternalName") && spec.cluster_ip.as_deref() != Some("None")
}

/// A Service, or `None` when it has no forwarding entries (headless,
/// ExternalName). Only IPv4 addresses are used.
pub fn service(svc: &core::Service) -> Result<Option<Service>, String> {
    if !forwards(svc) {
        return Ok(None);
    }
    let spec = svc.spec.as_ref().ok_or("no spec")?;
    let kind = match spec.type_.as_deref().unwrap_or("ClusterIP") {
        "ClusterIP" => ServiceType::ClusterIp,
        "NodePort" => ServiceType::NodePort,
        "LoadBalancer" => ServiceType::LoadBalancer,
        other => return Err(format!("spec.type: unknown type {other:?}")),
    };
    let mut ips: Vec<String> = spec.cluster_ips.clone().unwrap_or_default();
    if ips.is_empty() {
        ips.extend(spec.cluster_ip.clone());
    }
    let cluster_ips = ips
        .iter()
        .filter(|s| !s.contains(':') && !s.is_empty())
        .map(|s| ipv4(s, "spec.clusterIPs"))
        .collect::<Result<Vec<_>, _>>()?;
    let mut ports = Vec::new();
    for (i, p) in spec.ports.as_deref().unwrap_or_default().iter().enumerate() {
        let field = format!("spec.ports[{i}]");
        ports.push(ServicePort {
            name: p.name.clone().unwrap_or_default(),
            proto: protocol(p.protocol.as_deref(), &field)?,
            port: port16(p.port, &format!("{field}.port"))?,
            node_port: p
                .node_port
                .map(|n| port16(n, &format!("{field}.nodePort")))
                .transpose()?,
        });
    }
    let external_ips = spec
        .external_ips
        .as_deref()
        .unwrap_or_default()
        .iter()
        .filter(|s| !s.contains(':'))
        .map(|s| ipv4(s, "spec.externalIPs"))
        .collect::<Result<Vec<_>, _>>()?;
    let load_balancer_ips = svc
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .filter_map(|i| i.ip.as_deref())
        .filter(|s| !s.contains(':'))
        .map(|s| ipv4(s, "status.loadBalancer.ingress"))
        .collect::<Result<Vec<_>, _>>()?;
    let affinity_timeout_s = match spec.session_affinity.as_deref() {
        Some("ClientIP") => Some(
            spec.session_affinity_config
                .as_ref()
                .and_then(|c| c.client_ip.as_ref())
                .and_then(|c| c.timeout_seconds)
                .map_or(Ok(DEFAULT_AFFINITY_TIMEOUT_S), |t| {
                    u32::try_from(t).map_err(|_| {
                        format!("spec.sessionAffinityConfig.clientIP.timeoutSeconds: {t}")
                    })
                })?,
        ),
        None | Some("None") => None,
        Some(other) => return Err(format!("spec.sessionAffinity: unknown value {other:?}")),
    };
    let policy = |v: Option<&str>, field: &str| match v {
        None | Some("Cluster") => Ok(TrafficPolicy::Cluster),
        Some("Local") => Ok(TrafficPolicy::Local),
        Some(other) => Err(format!("{field}: unknown policy {other:?}")),
    };
    Ok(Some(Service {
        namespace: namespace_of(&svc.metadata),
        name: name_of(&svc.metadata),
        kind,
        cluster_ips,
        ports,
        external_ips,
        load_balancer_ips,
        affinity_timeout_s,
        external_traffic_policy: policy(
            spec.external_traffic_policy.as_deref(),
            "spec.externalTrafficPolicy",
        )?,
        internal_traffic_policy: policy(
            spec.internal_traffic_policy.as_deref(),
            "spec.internalTrafficPolicy",
        )?,
        health_check_node_port: spec
            .health_check_node_port
            .filter(|_| kind == ServiceType::LoadBalancer)
            .map(|n| port16(n, "spec.healthCheckNodePort"))
            .transpose()?,
    }))
}

/// Whether the service publishes not-ready addresses (its endpoints count
/// as ready whatever their conditions say).
pub fn publishes_not_ready(svc: &core::Service) -> bool {
    svc.spec
        .as_ref()
        .and_then(|s| s.publish_not_ready_addresses)
        .unwrap_or(false)
}

/// An EndpointSlice: the service it belongs to and its IPv4 endpoints, with
/// the target port per service port name. Conditions follow the API's
/// rules: an unknown `ready` counts as ready, an unknown `serving` as
/// `ready`, an unknown `terminating` as not terminating.
pub fn endpoint_slice(slice: &discovery::EndpointSlice) -> Result<(String, Vec<Endpoint>), String> {
    let service = slice
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(SERVICE_NAME_LABEL))
        .cloned()
        .ok_or_else(|| format!("metadata.labels: no {SERVICE_NAME_LABEL}"))?;
    if slice.address_type != "IPv4" {
        return Ok((service, Vec::new()));
    }
    let mut ports = Vec::new();
    for (i, p) in slice
        .ports
        .as_deref()
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        let Some(n) = p.port else { continue };
        ports.push((
            p.name.clone().unwrap_or_default(),
            port16(n, &format!("ports[{i}].port"))?,
        ));
    }
    let mut endpoints = Vec::new();
    for (i, e) in slice
        .endpoints
        .as_deref()
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        let Some(addr) = e.addresses.first() else {
            continue;
        };
        let c = e.conditions.as_ref();
        let ready = c.and_then(|c| c.ready).unwrap_or(true);
        endpoints.push(Endpoint {
            ip: ipv4(addr, &format!("endpoints[{i}].addresses"))?,
            node: e.node_name.clone().unwrap_or_default(),
            ready,
            serving: c.and_then(|c| c.serving).unwrap_or(ready),
            terminating: c.and_then(|c| c.terminating).unwrap_or(false),
            ports: ports.clone(),
        });
    }
    Ok((service, endpoints))
}

/// A `metav1.LabelSelector`.
pub fn selector(s: &meta::LabelSelector, field: &str) -> Result<LabelSelector, String> {
    let mut match_expressions = Vec::new();
    for (i, r) in s
        .match_expressions
        .as_deref()
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        let op = match r.operator.as_str() {
            "In" => SelectorOp::In,
            "NotIn" => SelectorOp::NotIn,
            "Exists" => SelectorOp::Exists,
            "DoesNotExist" => SelectorOp::DoesNotExist,
            other => {
                return Err(format!(
                    "{field}.matchExpressions[{i}]: unknown operator {other:?}"
                ))
            }
        };
        match_expressions.push(Requirement {
            key: r.key.clone(),
            op,
            values: r.values.clone().unwrap_or_default(),
        });
    }
    Ok(LabelSelector {
        match_labels: s.match_labels.clone().unwrap_or_default(),
        match_expressions,
    })
}

fn peer(p: &networking::NetworkPolicyPeer, field: &str) -> Result<Peer, String> {
    if let Some(block) = &p.ip_block {
        return Ok(Peer::IpBlock {
            cidr: cidr(&block.cidr, &format!("{field}.ipBlock.cidr"))?,
            except: block
                .except
                .as_deref()
                .unwrap_or_default()
                .iter()
                .map(|c| cidr(c, &format!("{field}.ipBlock.except")))
                .collect::<Result<_, _>>()?,
        });
    }
    Ok(Peer::Pods {
        namespace_selector: p
            .namespace_selector
            .as_ref()
            .map(|s| selector(s, &format!("{field}.namespaceSelector")))
            .transpose()?,
        pod_selector: p
            .pod_selector
            .as_ref()
            .map(|s| selector(s, &format!("{field}.podSelector")))
            .transpose()?,
    })
}

fn policy_port(p: &networking::NetworkPolicyPort, field: &str) -> Result<PolicyPort, String> {
    let proto = protocol(Some(p.protocol.as_deref().unwrap_or("TCP")), field)?;
    let port = match &p.port {
        None => None,
        Some(IntOrString::Int(n)) => Some(PortRef::Number(port16(*n, &format!("{field}.port"))?)),
        Some(IntOrString::String(s)) => Some(match s.parse::<i32>() {
            Ok(n) => PortRef::Number(port16(n, &format!("{field}.port"))?),
            Err(_) => PortRef::Name(s.clone()),
        }),
    };
    let end_port = p
        .end_port
        .map(|n| port16(n, &format!("{field}.endPort")))
        .transpose()?;
    Ok(PolicyPort {
        proto,
        port,
        end_port,
    })
}

fn rule(
    peers: Option<&Vec<networking::NetworkPolicyPeer>>,
    ports: Option<&Vec<networking::NetworkPolicyPort>>,
    field: &str,
) -> Result<PolicyRule, String> {
    Ok(PolicyRule {
        peers: peers
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .enumerate()
            .map(|(i, p)| peer(p, &format!("{field}.peers[{i}]")))
            .collect::<Result<_, _>>()?,
        ports: ports
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .enumerate()
            .map(|(i, p)| policy_port(p, &format!("{field}.ports[{i}]")))
            .collect::<Result<_, _>>()?,
    })
}

type PeersAndPorts<'a> = (
    Option<&'a Vec<networking::NetworkPolicyPeer>>,
    Option<&'a Vec<networking::NetworkPolicyPort>>,
);

/// The ingress or egress rules of a policy (`parts` picks a rule's peers
/// and ports).
fn rules<R>(
    list: Option<&[R]>,
    field: &str,
    parts: impl Fn(&R) -> PeersAndPorts<'_>,
) -> Result<Vec<PolicyRule>, String> {
    list.unwrap_or_default()
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let (peers, ports) = parts(r);
            rule(peers, ports, &format!("{field}[{i}]"))
        })
        .collect()
}

/// A NetworkPolicy, `policyTypes` defaulted as the API server does:
/// Ingress always, Egress when there are egress rules.
pub fn network_policy(p: &networking::NetworkPolicy) -> Result<NetworkPolicy, String> {
    let spec = p.spec.as_ref().ok_or("no spec")?;
    let ingress = rules(spec.ingress.as_deref(), "spec.ingress", |r| {
        (r.from.as_ref(), r.ports.as_ref())
    })?;
    let egress = rules(spec.egress.as_deref(), "spec.egress", |r| {
        (r.to.as_ref(), r.ports.as_ref())
    })?;
    let (ingress_isolation, egress_isolation) = match &spec.policy_types {
        Some(types) => {
            for t in types {
                if t != "Ingress" && t != "Egress" {
                    return Err(format!("spec.policyTypes: unknown type {t:?}"));
                }
            }
            (
                types.iter().any(|t| t == "Ingress"),
                types.iter().any(|t| t == "Egress"),
            )
        }
        None => (true, !egress.is_empty()),
    };
    Ok(NetworkPolicy {
        namespace: namespace_of(&p.metadata),
        name: name_of(&p.metadata),
        pod_selector: spec
            .pod_selector
            .as_ref()
            .map(|s| selector(s, "spec.podSelector"))
            .transpose()?
            .unwrap_or_default(),
        ingress_isolation,
        egress_isolation,
        ingress,
        egress,
    })
}
