//! The object model the tables are compiled from: a plain, validated subset of
//! the Kubernetes objects that change forwarding (pods, namespaces, services,
//! endpoints, network policies, nodes).
//!
//! Written by control (from the Kubernetes API or manifest files), read only
//! by the table compilers in this crate. Nothing here is on the fast path.

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;

pub use crate::proto::Proto;

/// An IPv4 prefix. The address is stored with host bits cleared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cidr {
    addr: u32,
    len: u8,
}

impl Cidr {
    /// A prefix; host bits of `addr` are cleared. `None` when `len > 32`.
    pub fn new(addr: Ipv4Addr, len: u8) -> Option<Cidr> {
        if len > 32 {
            return None;
        }
        let addr = u32::from(addr) & Self::mask_of(len);
        Some(Cidr { addr, len })
    }

    /// The prefix address as a host-order integer.
    pub fn addr(&self) -> u32 {
        self.addr
    }

    /// The prefix length in bits.
    // A prefix always covers at least one address: no `is_empty` to pair.
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> u8 {
        self.len
    }

    /// The network mask as a host-order integer.
    pub fn mask(&self) -> u32 {
        Self::mask_of(self.len)
    }

    fn mask_of(len: u8) -> u32 {
        if len == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(len))
        }
    }

    /// The first and last address covered, host order.
    pub fn range(&self) -> (u32, u32) {
        (self.addr, self.addr | !self.mask())
    }

    /// Whether `ip` (host order) lies inside the prefix.
    pub fn contains(&self, ip: u32) -> bool {
        ip & self.mask() == self.addr
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.addr), self.len)
    }
}

impl std::str::FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Cidr, String> {
        let (ip, len) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not a CIDR: expected ADDRESS/LENGTH"))?;
        let ip: Ipv4Addr = ip
            .parse()
            .map_err(|_| format!("{s:?} is not a CIDR: {ip:?} is not an IPv4 address"))?;
        let len: u8 = len
            .parse()
            .map_err(|_| format!("{s:?} is not a CIDR: {len:?} is not a prefix length"))?;
        Cidr::new(ip, len).ok_or_else(|| format!("{s:?} is not a CIDR: prefix length above 32"))
    }
}

/// Labels of a pod or namespace.
pub type Labels = BTreeMap<String, String>;

/// A label selector operator, as in `metav1.LabelSelectorRequirement`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SelectorOp {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

/// One `matchExpressions` requirement.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Requirement {
    pub key: String,
    pub op: SelectorOp,
    pub values: Vec<String>,
}

/// A `metav1.LabelSelector`. The empty selector matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct LabelSelector {
    pub match_labels: BTreeMap<String, String>,
    pub match_expressions: Vec<Requirement>,
}

impl LabelSelector {
    /// Whether `labels` satisfy every term of the selector.
    pub fn matches(&self, labels: &Labels) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|r| {
                let value = labels.get(&r.key);
                match r.op {
                    SelectorOp::In => value.is_some_and(|v| r.values.contains(v)),
                    SelectorOp::NotIn => value.is_none_or(|v| !r.values.contains(v)),
                    SelectorOp::Exists => value.is_some(),
                    SelectorOp::DoesNotExist => value.is_none(),
                }
            })
    }
}

/// A declared container port, used to resolve named ports.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct NamedPort {
    pub name: String,
    pub proto: Proto,
    pub port: u16,
}

/// A pod as the tables need it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pod {
    pub namespace: String,
    pub name: String,
    pub ip: Ipv4Addr,
    pub labels: Labels,
    pub ports: Vec<NamedPort>,
    /// The node the pod runs on.
    pub node: String,
    /// Its containers' `hostPort`s.
    pub host_ports: Vec<HostPort>,
}

/// A container port published on the node (`containerPort.hostPort`, or a
/// runtime's CNI `portMappings` entry): `host_ip:host_port` on the pod's
/// node forwards to the pod's `container_port`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HostPort {
    pub host_port: u16,
    pub container_port: u16,
    pub proto: Proto,
    /// Only this node address (`None`: every node address).
    pub host_ip: Option<Ipv4Addr>,
}

impl Pod {
    /// The port number a named port resolves to on this pod, if declared.
    pub fn named_port(&self, name: &str, proto: Proto) -> Option<u16> {
        self.ports
            .iter()
            .find(|p| p.name == name && p.proto == proto)
            .map(|p| p.port)
    }
}

/// A namespace and its labels (policies select namespaces by label).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Namespace {
    pub name: String,
    pub labels: Labels,
}

/// A port of a NetworkPolicy rule: a number, or a container port name.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum PortRef {
    Number(u16),
    Name(String),
}

/// One entry of a rule's `ports`. `port: None` means every port of `proto`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PolicyPort {
    pub proto: Proto,
    pub port: Option<PortRef>,
    /// Inclusive end of a numeric range (`endPort`); only with a number.
    pub end_port: Option<u16>,
}

/// One entry of a rule's `from`/`to`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Peer {
    /// `podSelector` and/or `namespaceSelector`. With no namespace selector
    /// the pods are taken from the policy's own namespace; with no pod
    /// selector every pod of the selected namespaces matches.
    Pods {
        namespace_selector: Option<LabelSelector>,
        pod_selector: Option<LabelSelector>,
    },
    /// `ipBlock`: a CIDR minus the `except` CIDRs.
    IpBlock { cidr: Cidr, except: Vec<Cidr> },
}

/// One ingress or egress rule. Empty `peers` matches every peer; empty
/// `ports` matches every port and protocol.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct PolicyRule {
    pub peers: Vec<Peer>,
    pub ports: Vec<PolicyPort>,
}

/// A NetworkPolicy with `policyTypes` already defaulted the way the API
/// server does (Ingress always; Egress when egress rules are present).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetworkPolicy {
    pub namespace: String,
    pub name: String,
    pub pod_selector: LabelSelector,
    pub ingress_isolation: bool,
    pub egress_isolation: bool,
    pub ingress: Vec<PolicyRule>,
    pub egress: Vec<PolicyRule>,
}

/// How a service treats traffic that may leave for another node.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum TrafficPolicy {
    #[default]
    Cluster,
    Local,
}

/// The Service types that forward (headless and ExternalName services have
/// no forwarding entries and never reach the tables).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ServiceType {
    #[default]
    ClusterIp,
    NodePort,
    LoadBalancer,
    /// Not a Kubernetes type: the `hostPort`s of one pod on this node, as a
    /// service whose ports listen on the node's IPs at `node_port` and whose
    /// one endpoint is the pod (built by the reconciler).
    HostPort,
}

/// A service port after name resolution of its protocol.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ServicePort {
    pub name: String,
    pub proto: Proto,
    pub port: u16,
    /// Allocated node port (NodePort and LoadBalancer services).
    pub node_port: Option<u16>,
}

/// A Service as the tables need it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Service {
    pub namespace: String,
    pub name: String,
    pub kind: ServiceType,
    pub cluster_ips: Vec<Ipv4Addr>,
    pub ports: Vec<ServicePort>,
    pub external_ips: Vec<Ipv4Addr>,
    pub load_balancer_ips: Vec<Ipv4Addr>,
    /// `sessionAffinity: ClientIP` timeout in seconds, `None` without affinity.
    pub affinity_timeout_s: Option<u32>,
    pub external_traffic_policy: TrafficPolicy,
    pub internal_traffic_policy: TrafficPolicy,
    /// `spec.healthCheckNodePort` (LoadBalancer, `externalTrafficPolicy:
    /// Local`): where each node answers whether it has local endpoints.
    pub health_check_node_port: Option<u16>,
}

/// One endpoint address of a service, with the target port per service port
/// name (EndpointSlice `ports` already matched by name).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub ip: Ipv4Addr,
    /// Node the endpoint runs on (for traffic policies `Local`).
    pub node: String,
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
    /// Service port name -> target port number.
    pub ports: Vec<(String, u16)>,
}

/// Another node of the cluster, reached over VXLAN.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteNode {
    pub name: String,
    /// Underlay address (InternalIP), also its VTEP address.
    pub ip: Ipv4Addr,
    /// The node's VXLAN device MAC (inner source MAC of its frames).
    pub vtep_mac: [u8; 6],
    pub pod_cidrs: Vec<Cidr>,
}
