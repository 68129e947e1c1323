//! The pod and route table: where a destination address lives.
//!
//! Written by control whenever a pod is attached or removed on this node or a
//! node joins or leaves; read by workers through an immutable snapshot. A
//! lookup is one hash probe for local pods and a fixed-stride trie walk (at
//! most four loads) for remote pod CIDRs.

use hashbrown::HashMap;

use crate::lpm::Lpm;
use crate::model::Cidr;

/// Index of a port in every worker's port list (the same on all workers).
pub type PortId = u16;

/// The gateway address every pod routes through (see the README's
/// "Addresses and pod wiring").
pub const POD_GATEWAY_IP: u32 = 0xa9fe_0101; // 169.254.1.1
/// The MAC the switch answers ARP for [`POD_GATEWAY_IP`] with, on pod ports.
pub const GATEWAY_MAC: [u8; 6] = [0xee; 6];

/// Port ids with a fixed role, the same on every node: the uplink, the
/// host port (the node's own stack) and, from [`FIRST_POD_PORT`] on, pods.
pub const UPLINK_PORT: PortId = 0;
pub const HOST_PORT: PortId = 1;
pub const FIRST_POD_PORT: PortId = 2;

/// The node this switch runs on, and the ports with a fixed role.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeConfig {
    pub name: String,
    /// Underlay address: VTEP, NodePort address, masquerade source.
    pub node_ip: u32,
    /// MAC of the uplink interface (outer source MAC of VXLAN frames).
    pub uplink_mac: [u8; 6],
    /// MAC of this node's VTEP (inner source MAC we send, inner destination
    /// MAC we accept), as flannel's `flannel.1` device has.
    pub vtep_mac: [u8; 6],
    /// MAC the switch answers ARP for 169.254.1.1 with, on pod ports.
    pub gateway_mac: [u8; 6],
    /// VXLAN network identifier of the overlay.
    pub vni: u32,
    /// This node's pod CIDR.
    pub pod_cidr: Cidr,
    /// Every pod CIDR of the cluster; traffic leaving it from a pod is
    /// masqueraded to `node_ip`.
    pub cluster_cidr: Cidr,
    pub service_cidr: Cidr,
    pub uplink_port: PortId,
    /// Port whose other end is the node's own network stack.
    pub host_port: Option<PortId>,
    /// MAC of the node-stack end of the host port.
    pub host_mac: [u8; 6],
    /// Next-hop MAC for traffic to outside the cluster (the default gateway
    /// on the underlay).
    pub uplink_gateway_mac: [u8; 6],
    /// The underlay's MTU: a don't-fragment packet that would not fit it
    /// after VXLAN encapsulation is answered with ICMP "fragmentation
    /// needed" (0: unknown, nothing is checked).
    pub uplink_mtu: u16,
}

/// A pod attached to this switch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LocalPod {
    pub ip: u32,
    pub mac: [u8; 6],
    pub port: PortId,
}

/// Another node's VXLAN endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vtep {
    pub node: String,
    /// Underlay address of the node.
    pub ip: u32,
    /// The node's VTEP MAC (inner destination MAC of frames we send it).
    pub vtep_mac: [u8; 6],
    /// The node's (or the next hop's) MAC on the underlay.
    pub underlay_mac: [u8; 6],
}

/// Where a destination address lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route<'a> {
    /// A pod on this node.
    LocalPod(&'a LocalPod),
    /// A pod on another node, or that node itself: encapsulate to this VTEP
    /// (so replies to masqueraded flows come back through the overlay).
    Remote(&'a Vtep),
    /// This node's own address: the host port.
    Host,
    /// Outside the cluster overlay: out of the uplink.
    Uplink,
    /// Inside a pod CIDR of this cluster, but no such pod.
    Unreachable,
}

/// Local pods by IP and by port, remote pod CIDRs, node addresses.
#[derive(Clone, Debug, Default)]
pub struct RouteTable {
    pods: HashMap<u32, LocalPod>,
    /// Indexed by port id: the pod attached there (anti-spoofing).
    by_port: Vec<Option<LocalPod>>,
    remote: Lpm<u16>,
    vteps: Vec<Vtep>,
    vtep_by_ip: HashMap<u32, u16>,
    node_ips: Vec<u32>,
    pod_cidrs: Vec<Cidr>,
    /// Underlay hosts on the uplink's link and their MACs (from the
    /// kernel's neighbour table), for replies to clients on the same link.
    neighbours: HashMap<u32, [u8; 6]>,
}

impl RouteTable {
    /// A table with this node's addresses and pod CIDR and nothing else.
    pub fn new(node_ips: &[u32], local_pod_cidr: Cidr) -> RouteTable {
        RouteTable {
            node_ips: node_ips.to_vec(),
            pod_cidrs: vec![local_pod_cidr],
            ..RouteTable::default()
        }
    }

    /// Attaches a local pod (replacing any pod on the same IP or port).
    pub fn add_pod(&mut self, pod: LocalPod) {
        let slot = usize::from(pod.port);
        if self.by_port.len() <= slot {
            self.by_port.resize(slot + 1, None);
        }
        self.by_port[slot] = Some(pod);
        self.pods.insert(pod.ip, pod);
    }

    /// Detaches a local pod by IP.
    pub fn remove_pod(&mut self, ip: u32) -> Option<LocalPod> {
        let pod = self.pods.remove(&ip)?;
        if let Some(slot) = self.by_port.get_mut(usize::from(pod.port)) {
            *slot = None;
        }
        Some(pod)
    }

    /// Adds a remote node and its pod CIDRs. Returns `false` (and changes
    /// nothing) when the table already holds 65535 nodes.
    pub fn add_node(&mut self, vtep: Vtep, pod_cidrs: &[Cidr]) -> bool {
        let Ok(index) = u16::try_from(self.vteps.len()) else {
            return false;
        };
        for &cidr in pod_cidrs {
            self.remote.insert(cidr, index);
            self.pod_cidrs.push(cidr);
        }
        self.vtep_by_ip.insert(vtep.ip, index);
        self.vteps.push(vtep);
        true
    }

    /// Where `dst` lives.
    #[inline]
    pub fn route(&self, dst: u32) -> Route<'_> {
        if let Some(pod) = self.pods.get(&dst) {
            return Route::LocalPod(pod);
        }
        if self.node_ips.contains(&dst) {
            return Route::Host;
        }
        let remote = self
            .remote
            .lookup(dst)
            .or_else(|| self.vtep_by_ip.get(&dst).copied());
        if let Some(vtep) = remote.and_then(|i| self.vteps.get(usize::from(i))) {
            return Route::Remote(vtep);
        }
        if self.pod_cidrs.iter().any(|c| c.contains(dst)) {
            return Route::Unreachable;
        }
        Route::Uplink
    }

    /// The remote node whose pod CIDRs hold `ip`, or whose own address it
    /// is (overlay anti-spoofing: what a VTEP may send from).
    #[inline]
    pub fn remote_owner(&self, ip: u32) -> Option<&Vtep> {
        let index = self
            .remote
            .lookup(ip)
            .or_else(|| self.vtep_by_ip.get(&ip).copied())?;
        self.vteps.get(usize::from(index))
    }

    /// Records the MAC of an on-link underlay host.
    pub fn set_neighbour(&mut self, ip: u32, mac: [u8; 6]) {
        self.neighbours.insert(ip, mac);
    }

    /// The MAC of an on-link underlay host, if known.
    #[inline]
    pub fn neighbour(&self, ip: u32) -> Option<[u8; 6]> {
        self.neighbours.get(&ip).copied()
    }

    /// The pod attached to `port`, if any.
    #[inline]
    pub fn pod_on_port(&self, port: PortId) -> Option<&LocalPod> {
        self.by_port.get(usize::from(port)).and_then(Option::as_ref)
    }

    /// The local pod with address `ip`.
    #[inline]
    pub fn local_pod(&self, ip: u32) -> Option<&LocalPod> {
        self.pods.get(&ip)
    }

    /// The remote VTEP with underlay address `ip` (VXLAN decap accepts
    /// only these as outer sources).
    #[inline]
    pub fn vtep(&self, ip: u32) -> Option<&Vtep> {
        self.vtep_by_ip
            .get(&ip)
            .and_then(|&i| self.vteps.get(usize::from(i)))
    }

    /// Whether `ip` is one of this node's addresses.
    #[inline]
    pub fn is_node_ip(&self, ip: u32) -> bool {
        self.node_ips.contains(&ip)
    }

    /// Local pods, for the CLI and tests.
    pub fn pods(&self) -> impl Iterator<Item = &LocalPod> {
        self.pods.values()
    }

    /// Remote VTEPs.
    pub fn vteps(&self) -> &[Vtep] {
        &self.vteps
    }
}

/// Read-only views for the local API and the CLI (control path: they
/// allocate and sort).
impl RouteTable {
    /// This node's own addresses.
    pub fn node_ips(&self) -> &[u32] {
        &self.node_ips
    }

    /// Every remote pod CIDR with the VTEP of the node that holds it, in
    /// address order.
    pub fn remote_routes(&self) -> Vec<(Cidr, &Vtep)> {
        self.remote
            .prefixes()
            .into_iter()
            .filter_map(|(cidr, i)| Some((cidr, self.vteps.get(usize::from(i))?)))
            .collect()
    }

    /// The on-link underlay hosts with their MACs, by address.
    pub fn neighbours(&self) -> Vec<(u32, [u8; 6])> {
        let mut out: Vec<(u32, [u8; 6])> = self.neighbours.iter().map(|(i, m)| (*i, *m)).collect();
        out.sort_unstable();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str) -> Cidr {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> u32 {
        u32::from(s.parse::<std::net::Ipv4Addr>().unwrap())
    }

    #[test]
    fn routes_each_kind_of_destination() {
        let mut t = RouteTable::new(&[ip("198.18.0.1")], cidr("10.244.0.0/24"));
        let pod = LocalPod {
            ip: ip("10.244.0.5"),
            mac: [2, 0, 0, 0, 0, 5],
            port: 3,
        };
        t.add_pod(pod);
        let vtep = Vtep {
            node: "node2".into(),
            ip: ip("198.18.0.2"),
            vtep_mac: [2; 6],
            underlay_mac: [3; 6],
        };
        assert!(t.add_node(vtep.clone(), &[cidr("10.244.1.0/24")]));
        assert_eq!(t.route(ip("10.244.0.5")), Route::LocalPod(&pod));
        assert_eq!(t.route(ip("10.244.1.9")), Route::Remote(&vtep));
        assert_eq!(t.route(ip("198.18.0.1")), Route::Host);
        assert_eq!(t.route(ip("10.244.0.6")), Route::Unreachable);
        assert_eq!(t.route(ip("10.244.1.9")), Route::Remote(&vtep));
        assert_eq!(t.route(ip("8.8.8.8")), Route::Uplink);
        assert_eq!(
            t.route(ip("198.18.0.2")),
            Route::Remote(&vtep),
            "a node's own address"
        );
        assert_eq!(t.pod_on_port(3), Some(&pod));
        assert_eq!(t.pod_on_port(4), None);
        assert_eq!(t.vtep(ip("198.18.0.2")), Some(&vtep));
        assert_eq!(t.remove_pod(pod.ip), Some(pod));
        assert_eq!(t.pod_on_port(3), None);
        assert_eq!(t.route(ip("10.244.0.5")), Route::Unreachable);
    }
}
