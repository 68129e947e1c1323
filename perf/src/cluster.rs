//! A generated cluster as Kubernetes objects (the `k8s-openapi` types the
//! reconciler reads), for the control-plane benchmark (`control-bench`).
//!
//! Deterministic: the same [`Scale`] always gives the same objects. Shape,
//! for `Scale::FULL`:
//! - 100 nodes `node1`..`node100`, node `n` with pod CIDR `10.244.n.0/24`
//!   and InternalIP `198.18.0.n` (node1 is `fixtures::example`'s node1);
//! - 100 namespaces `ns-0`..`ns-99`, labelled `env`, `team`, and
//!   `purpose=monitoring` (the first 5) or `purpose=dns` (`ns-5`);
//! - 10,000 pods spread round-robin over the nodes (100 per node, so node1
//!   runs 100 local pods, each in another namespace), in apps of 10 pods
//!   labelled `app`, `tier`, `team`, `version`, with named container ports
//!   (`http`, `metrics`, and `postgres` or `redis` by tier);
//! - 10,000 services: ClusterIP, every 10th NodePort, every 7th with
//!   `sessionAffinity: ClientIP`, named ports (`http`, every 4th also
//!   `metrics`, every 25th also `dns`/UDP), each selecting one app;
//! - 100,000 endpoints, 10 per service on average: every 100th service has
//!   208 (three slices: 100, 100, 8), the others 8 (one slice); about 5%
//!   terminating and 3% not ready;
//! - 1,000 NetworkPolicies, 10 per namespace, of ten kinds (see
//!   [`policy`]): default deny, pod and namespace selectors (matchLabels and
//!   matchExpressions), ipBlocks with `except`, port ranges (`endPort`),
//!   named ports, ingress and egress.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::discovery::v1 as discovery;
use k8s_openapi::api::networking::v1 as networking;
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use sources::Object;
use tables::route::LocalPod;

use crate::measure::Rng;

mod policies;

pub use policies::policy;

/// Pods per app (and per label set).
pub const APP_SIZE: usize = 10;
/// The host octets of a node's pods: `10.244.n.10` to `10.244.n.249`.
const FIRST_POD_HOST: usize = 10;
const LAST_POD_HOST: usize = 250;
const TIERS: [&str; 5] = ["web", "api", "db", "cache", "worker"];
const ENVS: [&str; 3] = ["prod", "staging", "dev"];
const TEAMS: usize = 20;

/// How big a cluster to generate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Scale {
    pub nodes: usize,
    pub namespaces: usize,
    pub pods: usize,
    /// Services; endpoints are 10 per service on average (see the module
    /// doc), exactly 10 when this is a multiple of 100.
    pub services: usize,
    pub policies: usize,
}

impl Scale {
    /// The target: 10k services, 100k endpoints, 10k pods, 1k
    /// policies.
    pub const FULL: Scale = Scale {
        nodes: 100,
        namespaces: 100,
        pods: 10_000,
        services: 10_000,
        policies: 1_000,
    };

    /// A tenth of [`Scale::FULL`] (smoke runs).
    pub const QUICK: Scale = Scale {
        nodes: 20,
        namespaces: 20,
        pods: 1_000,
        services: 1_000,
        policies: 100,
    };

    /// The same cluster with `services` services (and 10x endpoints).
    pub fn with_services(self, services: usize) -> Scale {
        Scale { services, ..self }
    }

    /// Number of endpoints generated.
    pub fn endpoints(&self) -> usize {
        (0..self.services).map(endpoint_count).sum()
    }
}

/// Every object of a generated cluster, by kind.
#[derive(Clone, Debug, Default)]
pub struct Cluster {
    pub namespaces: Vec<core::Namespace>,
    pub nodes: Vec<core::Node>,
    pub pods: Vec<core::Pod>,
    pub services: Vec<core::Service>,
    pub slices: Vec<discovery::EndpointSlice>,
    pub policies: Vec<networking::NetworkPolicy>,
}

impl Cluster {
    /// Generates the cluster of `scale`.
    ///
    /// # Panics
    /// When `scale` does not fit the address plan: more than 250 nodes, or
    /// more than 240 pods per node.
    pub fn generate(scale: Scale) -> Cluster {
        assert!(
            (1..=250).contains(&scale.nodes),
            "1-250 nodes: node n has pod CIDR 10.244.n.0/24"
        );
        assert!(
            scale.pods.div_ceil(scale.nodes) <= LAST_POD_HOST - FIRST_POD_HOST,
            "at most {} pods per node",
            LAST_POD_HOST - FIRST_POD_HOST
        );
        assert!(scale.namespaces >= 6, "namespaces 0-5 have special roles");
        Cluster {
            namespaces: (0..scale.namespaces).map(namespace).collect(),
            nodes: (1..=scale.nodes).map(node).collect(),
            pods: (0..scale.pods).map(|i| pod(&scale, i)).collect(),
            services: (0..scale.services).map(|s| service(&scale, s)).collect(),
            slices: (0..scale.services)
                .flat_map(|s| endpoint_slices(&scale, s))
                .collect(),
            policies: (0..scale.policies).map(|p| policy(&scale, p)).collect(),
        }
    }

    /// Every object, as the reconciler takes them (cloned).
    pub fn objects(&self) -> Vec<Object> {
        let mut objects = Vec::with_capacity(self.len());
        objects.extend(self.namespaces.iter().cloned().map(Object::Namespace));
        objects.extend(self.nodes.iter().cloned().map(Object::Node));
        objects.extend(self.pods.iter().cloned().map(Object::Pod));
        objects.extend(self.services.iter().cloned().map(Object::Service));
        objects.extend(self.slices.iter().cloned().map(Object::EndpointSlice));
        objects.extend(self.policies.iter().cloned().map(Object::NetworkPolicy));
        objects
    }

    /// Number of objects.
    pub fn len(&self) -> usize {
        self.namespaces.len()
            + self.nodes.len()
            + self.pods.len()
            + self.services.len()
            + self.slices.len()
            + self.policies.len()
    }

    /// Whether there are no objects.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The slices of each service: indices into `self.slices`.
    pub fn slices_by_service(&self, services: usize) -> Vec<Vec<usize>> {
        let mut by_service = vec![Vec::new(); services];
        for (i, slice) in self.slices.iter().enumerate() {
            let service = slice
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(agent::reconcile::convert::SERVICE_NAME_LABEL))
                .and_then(|n| n.strip_prefix("svc-"))
                .and_then(|n| n.parse::<usize>().ok())
                .expect("generated slices name their service svc-N");
            by_service[service].push(i);
        }
        by_service
    }

    /// The pods on node `name`, attached to ports from `first_port` on.
    pub fn attachments(&self, name: &str, first_port: u16) -> Vec<LocalPod> {
        self.pods
            .iter()
            .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(name))
            .filter_map(|p| p.status.as_ref()?.pod_ip.as_deref()?.parse().ok())
            .zip(first_port..)
            .map(|(ip, port): (Ipv4Addr, u16)| LocalPod {
                ip: u32::from(ip),
                mac: fixtures::example::pod_mac(ip),
                port,
            })
            .collect()
    }
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn object_meta(
    namespace: Option<&str>,
    name: String,
    labels: BTreeMap<String, String>,
) -> meta::ObjectMeta {
    meta::ObjectMeta {
        namespace: namespace.map(str::to_owned),
        uid: Some(format!("00000000-0000-0000-0000-{:012x}", fxhash(&name))),
        resource_version: Some("1".to_owned()),
        name: Some(name),
        labels: Some(labels),
        ..meta::ObjectMeta::default()
    }
}

/// A stable 48-bit hash for made-up UIDs.
fn fxhash(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    }) & 0xffff_ffff_ffff
}

/// `base` + `offset` as an address.
fn add(base: Ipv4Addr, offset: usize) -> Ipv4Addr {
    let offset = u32::try_from(offset).expect("address offset fits 32 bits");
    Ipv4Addr::from(u32::from(base) + offset)
}

fn i32_of(n: usize) -> i32 {
    i32::try_from(n).expect("port number fits i32")
}

pub fn namespace_name(i: usize) -> String {
    format!("ns-{i}")
}

fn namespace(i: usize) -> core::Namespace {
    let name = namespace_name(i);
    let team = format!("team-{}", i % TEAMS);
    let mut l = labels(&[
        ("kubernetes.io/metadata.name", &name),
        ("env", ENVS[i % ENVS.len()]),
        ("team", &team),
    ]);
    match i {
        0..=4 => l.insert("purpose".into(), "monitoring".into()),
        5 => l.insert("purpose".into(), "dns".into()),
        _ => None,
    };
    core::Namespace {
        metadata: object_meta(None, name, l),
        ..core::Namespace::default()
    }
}

/// Node `n` (from 1): `node{n}`, InternalIP 198.18.0.n, pod CIDR
/// 10.244.n.0/24.
pub fn node(n: usize) -> core::Node {
    let name = format!("node{n}");
    core::Node {
        metadata: object_meta(
            None,
            name.clone(),
            labels(&[
                ("kubernetes.io/hostname", &name),
                ("kubernetes.io/os", "linux"),
            ]),
        ),
        spec: Some(core::NodeSpec {
            pod_cidr: Some(format!("10.244.{n}.0/24")),
            pod_cidrs: Some(vec![format!("10.244.{n}.0/24")]),
            ..core::NodeSpec::default()
        }),
        status: Some(core::NodeStatus {
            addresses: Some(vec![
                core::NodeAddress {
                    type_: "InternalIP".into(),
                    address: add(Ipv4Addr::new(198, 18, 0, 0), n).to_string(),
                },
                core::NodeAddress {
                    type_: "Hostname".into(),
                    address: name,
                },
            ]),
            ..core::NodeStatus::default()
        }),
    }
}

/// Whether `pod` is in a namespace some policy selects as a whole
/// (`purpose=monitoring` or `purpose=dns`): policies see its every change.
pub fn special_namespace(pod: &core::Pod) -> bool {
    pod.metadata
        .namespace
        .as_deref()
        .and_then(|n| n.strip_prefix("ns-"))
        .and_then(|n| n.parse::<usize>().ok())
        .is_none_or(|n| n <= 5)
}

/// Where pod `i` runs: node number (from 1) and address.
pub fn pod_placement(scale: &Scale, i: usize) -> (usize, Ipv4Addr) {
    let node = i % scale.nodes + 1;
    let slot = i / scale.nodes;
    let ip = add(
        Ipv4Addr::new(10, 244, 0, 0),
        (node << 8) + FIRST_POD_HOST + slot,
    );
    (node, ip)
}

/// The app of pod `i` (pods come in apps of [`APP_SIZE`]).
fn app_of_pod(i: usize) -> usize {
    i / APP_SIZE
}

/// The namespace of app `a`: all its pods share it.
fn namespace_of_app(scale: &Scale, a: usize) -> usize {
    (a * APP_SIZE / scale.nodes) % scale.namespaces
}

/// Mixes an app number so that apps picked at a regular stride (a node's
/// pods) still differ in tier and team.
fn mix(a: usize) -> usize {
    a + a / APP_SIZE
}

fn tier_of_app(a: usize) -> &'static str {
    TIERS[mix(a) % TIERS.len()]
}

/// The labels of pod `i`, `version` as given.
pub fn pod_labels(i: usize, version: &str) -> BTreeMap<String, String> {
    let a = app_of_pod(i);
    labels(&[
        ("app", &format!("app-{a}")),
        ("tier", tier_of_app(a)),
        ("team", &format!("team-{}", mix(a) % TEAMS)),
        ("version", version),
        (
            "pod-template-hash",
            &format!("{:08x}", fxhash(&a.to_string())),
        ),
    ])
}

fn container_port(name: &str, port: i32, protocol: &str) -> core::ContainerPort {
    core::ContainerPort {
        name: Some(name.into()),
        container_port: port,
        protocol: Some(protocol.into()),
        ..core::ContainerPort::default()
    }
}

/// Pod `i`: running, with an address on its node.
pub fn pod(scale: &Scale, i: usize) -> core::Pod {
    let (node, ip) = pod_placement(scale, i);
    let a = app_of_pod(i);
    let namespace = namespace_name(namespace_of_app(scale, a));
    let mut ports = vec![
        container_port("http", 8080, "TCP"),
        container_port("metrics", 9090, "TCP"),
    ];
    match tier_of_app(a) {
        "db" => ports.push(container_port("postgres", 5432, "TCP")),
        "cache" => ports.push(container_port("redis", 6379, "TCP")),
        _ => {}
    }
    core::Pod {
        metadata: object_meta(
            Some(&namespace),
            format!("app-{a}-{i}"),
            pod_labels(i, "v1"),
        ),
        spec: Some(core::PodSpec {
            node_name: Some(format!("node{node}")),
            containers: vec![core::Container {
                name: "main".into(),
                image: Some(format!("registry.example/app-{a}:1.0")),
                ports: Some(ports),
                ..core::Container::default()
            }],
            ..core::PodSpec::default()
        }),
        status: Some(core::PodStatus {
            phase: Some("Running".into()),
            pod_ip: Some(ip.to_string()),
            pod_ips: Some(vec![core::PodIP { ip: ip.to_string() }]),
            host_ip: Some(add(Ipv4Addr::new(198, 18, 0, 0), node).to_string()),
            ..core::PodStatus::default()
        }),
    }
}

/// Number of apps (pods / 10).
fn apps(scale: &Scale) -> usize {
    scale.pods.div_ceil(APP_SIZE).max(1)
}

/// The app service `s` selects.
fn app_of_service(scale: &Scale, s: usize) -> usize {
    s % apps(scale)
}

/// The (namespace, name) of service `s`.
pub fn service_key(scale: &Scale, s: usize) -> (String, String) {
    let ns = namespace_of_app(scale, app_of_service(scale, s));
    (namespace_name(ns), format!("svc-{s}"))
}

/// The cluster IP of service `s` (10.96.0.10 on).
pub fn cluster_ip(s: usize) -> Ipv4Addr {
    add(Ipv4Addr::new(10, 96, 0, 10), s)
}

/// The ports of service `s`: (name, protocol, port, target port).
fn service_ports(s: usize) -> Vec<(&'static str, &'static str, i32, i32)> {
    let mut ports = vec![("http", "TCP", 80, 8080)];
    if s.is_multiple_of(4) {
        ports.push(("metrics", "TCP", 9090, 9090));
    }
    if s.is_multiple_of(25) {
        ports.push(("dns", "UDP", 53, 5353));
    }
    ports
}

fn service(scale: &Scale, s: usize) -> core::Service {
    let (namespace, name) = service_key(scale, s);
    let node_port = (s.is_multiple_of(10))
        .then(|| 30_000 + i32_of(s / 10))
        .filter(|p| *p <= 32_767);
    let ports = service_ports(s)
        .into_iter()
        .enumerate()
        .map(|(i, (pname, proto, port, target))| core::ServicePort {
            name: Some(pname.into()),
            protocol: Some(proto.into()),
            port,
            target_port: Some(if i == 0 {
                IntOrString::String(pname.into())
            } else {
                IntOrString::Int(target)
            }),
            node_port: node_port.filter(|_| i == 0),
            ..core::ServicePort::default()
        })
        .collect();
    let ip = cluster_ip(s).to_string();
    let affinity = s.is_multiple_of(7);
    core::Service {
        metadata: object_meta(
            Some(&namespace),
            name.clone(),
            labels(&[("app.kubernetes.io/name", &name)]),
        ),
        spec: Some(core::ServiceSpec {
            type_: Some(
                if node_port.is_some() {
                    "NodePort"
                } else {
                    "ClusterIP"
                }
                .into(),
            ),
            cluster_ip: Some(ip.clone()),
            cluster_ips: Some(vec![ip]),
            selector: Some(labels(&[(
                "app",
                &format!("app-{}", app_of_service(scale, s)),
            )])),
            ports: Some(ports),
            session_affinity: Some(if affinity { "ClientIP" } else { "None" }.into()),
            session_affinity_config: (affinity && s.is_multiple_of(14)).then_some(
                core::SessionAffinityConfig {
                    client_ip: Some(core::ClientIPConfig {
                        timeout_seconds: Some(600),
                    }),
                },
            ),
            external_traffic_policy: node_port.map(|_| {
                if s.is_multiple_of(20) {
                    "Local"
                } else {
                    "Cluster"
                }
                .into()
            }),
            internal_traffic_policy: Some(if s % 50 == 1 { "Local" } else { "Cluster" }.into()),
            publish_not_ready_addresses: (s.is_multiple_of(97)).then_some(true),
            ..core::ServiceSpec::default()
        }),
        status: None,
    }
}

/// Endpoints of service `s`: 10 on average.
fn endpoint_count(s: usize) -> usize {
    if s.is_multiple_of(100) {
        208
    } else {
        8
    }
}

/// Endpoints per slice, as the EndpointSlice controller caps them.
pub const SLICE_CAPACITY: usize = 100;

/// Endpoint `j` of service `s`: the `j`th pod from its app's first pod.
pub fn endpoint(scale: &Scale, s: usize, j: usize) -> discovery::Endpoint {
    let p = (app_of_service(scale, s) * APP_SIZE + j) % scale.pods;
    let (node, ip) = pod_placement(scale, p);
    let (ready, serving, terminating) = if (s + j).is_multiple_of(20) {
        (false, true, true)
    } else if (s + j).is_multiple_of(33) {
        (false, false, false)
    } else {
        (true, true, false)
    };
    discovery::Endpoint {
        addresses: vec![ip.to_string()],
        conditions: Some(discovery::EndpointConditions {
            ready: Some(ready),
            serving: Some(serving),
            terminating: Some(terminating),
        }),
        node_name: Some(format!("node{node}")),
        target_ref: Some(core::ObjectReference {
            kind: Some("Pod".into()),
            namespace: Some(namespace_name(namespace_of_app(scale, p / APP_SIZE))),
            name: Some(format!("app-{}-{p}", p / APP_SIZE)),
            ..core::ObjectReference::default()
        }),
        ..discovery::Endpoint::default()
    }
}

/// The slices of service `s`, [`SLICE_CAPACITY`] endpoints each at most.
fn endpoint_slices(scale: &Scale, s: usize) -> Vec<discovery::EndpointSlice> {
    let (namespace, service) = service_key(scale, s);
    let endpoints: Vec<discovery::Endpoint> = (0..endpoint_count(s))
        .map(|j| endpoint(scale, s, j))
        .collect();
    let ports: Vec<discovery::EndpointPort> = service_ports(s)
        .into_iter()
        .map(|(name, proto, _, target)| discovery::EndpointPort {
            name: Some(name.into()),
            protocol: Some(proto.into()),
            port: Some(target),
            ..discovery::EndpointPort::default()
        })
        .collect();
    endpoints
        .chunks(SLICE_CAPACITY)
        .enumerate()
        .map(|(k, chunk)| discovery::EndpointSlice {
            metadata: object_meta(
                Some(&namespace),
                format!("{service}-{k:05x}"),
                labels(&[
                    ("kubernetes.io/service-name", &service),
                    (
                        "endpointslice.kubernetes.io/managed-by",
                        "endpointslice-controller.k8s.io",
                    ),
                ]),
            ),
            address_type: "IPv4".into(),
            endpoints: Some(chunk.to_vec()),
            ports: Some(ports.clone()),
        })
        .collect()
}

/// Changes one endpoint of `slice`: adds one (at a fresh address, from
/// 10.250.0.0 on), removes one, or flips one's readiness. Returns the
/// address added, if any.
pub fn change_one_endpoint(
    slice: &mut discovery::EndpointSlice,
    rng: &mut Rng,
    fresh: &mut u32,
) -> Option<Ipv4Addr> {
    let endpoints = slice.endpoints.get_or_insert_with(Vec::new);
    match rng.below(3) {
        1 if endpoints.len() > 1 => {
            endpoints.remove(rng.below(endpoints.len()));
            None
        }
        2 if !endpoints.is_empty() => {
            let i = rng.below(endpoints.len());
            let c = endpoints[i].conditions.get_or_insert_with(Default::default);
            let ready = !c.ready.unwrap_or(true);
            (c.ready, c.serving, c.terminating) = (Some(ready), Some(ready), Some(false));
            None
        }
        _ => {
            let ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 250, 0, 0)) + *fresh);
            *fresh += 1;
            endpoints.push(discovery::Endpoint {
                addresses: vec![ip.to_string()],
                conditions: Some(discovery::EndpointConditions {
                    ready: Some(true),
                    serving: Some(true),
                    terminating: Some(false),
                }),
                node_name: Some("node2".into()),
                ..discovery::Endpoint::default()
            });
            Some(ip)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use agent::reconcile::Reconciler;
    use sources::{Kind, SourceEvent};

    #[test]
    fn a_small_cluster_converts_without_warnings() {
        let scale = Scale {
            nodes: 10,
            namespaces: 10,
            pods: 200,
            services: 200,
            policies: 40,
        };
        let cluster = Cluster::generate(scale);
        assert_eq!(scale.endpoints(), 10 * scale.services);
        let node = fixtures::example::node_config("node1");
        let attached = cluster.attachments("node1", fixtures::example::FIRST_POD_PORT);
        assert_eq!(attached.len(), scale.pods / scale.nodes);
        let mut r = Reconciler::new(node, attached);
        r.apply(SourceEvent::Replace {
            kinds: Kind::ALL.to_vec(),
            objects: cluster.objects(),
        });
        let snap = r.build(None, &|_| [0; 6]);
        assert_eq!(r.take_warnings(), Vec::<String>::new());
        assert_eq!(r.counts()["Service"], scale.services);
        assert_eq!(r.counts()["Pod"], scale.pods);
        assert!(snap.services.len() >= scale.services);
        assert_eq!(snap.policy.len(), scale.pods / scale.nodes);
        assert!(snap
            .routes
            .remote_owner(u32::from(Ipv4Addr::new(10, 244, 2, 10)))
            .is_some());
    }
}
