//! Multi-node topologies in network namespaces (the README's "Addresses
//! and pod wiring"): an underlay namespace with a bridge, node
//! namespaces each with an uplink `eth0` on it (198.18.0.N/24), and pod
//! namespaces wired to a node: `eth0` with the pod IP /32, a link route to
//! 169.254.1.1 and a default route via it, TX checksum offload off, MTU
//! 1450; the host end of the pod's veth stays in the node namespace for the
//! switch. Everything is deleted when the topology drops.

use std::net::Ipv4Addr;

use crate::netns::Netns;

/// A node: its namespace and underlay address.
pub struct Node {
    pub ns: Netns,
    pub ip: Ipv4Addr,
    pub name: String,
}

/// A pod: its namespace, address, MAC, and its node's end of the veth.
pub struct Pod {
    pub ns: Netns,
    pub ip: Ipv4Addr,
    pub mac: [u8; 6],
    pub node: usize,
    /// The host side of the veth, in the node's namespace.
    pub host_if: String,
}

/// An underlay bridge and the namespaces on it.
pub struct Topology {
    // Pods and nodes before the underlay: dropped (deleted) first.
    pub pods: Vec<Pod>,
    pub nodes: Vec<Node>,
    pub underlay: Netns,
}

impl Default for Topology {
    fn default() -> Self {
        Topology::new()
    }
}

impl Topology {
    /// An underlay namespace with bridge `br0`.
    pub fn new() -> Topology {
        let underlay = Netns::new("ul");
        underlay.ip(&["link", "add", "br0", "type", "bridge"]);
        underlay.ip(&["link", "set", "br0", "up"]);
        Topology {
            pods: Vec::new(),
            nodes: Vec::new(),
            underlay,
        }
    }

    /// Adds node `nodeN` (N from 1) with uplink `eth0` = 198.18.0.N/24.
    pub fn add_node(&mut self) -> usize {
        let index = self.nodes.len();
        let n = u8::try_from(index + 1).expect("at most 254 nodes");
        let ns = Netns::new(&format!("node{n}"));
        let port = format!("ul{n}");
        self.underlay.ip(&[
            "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &ns.name,
        ]);
        self.underlay
            .ip(&["link", "set", &port, "master", "br0", "up"]);
        let ip = Ipv4Addr::new(198, 18, 0, n);
        ns.ip(&["addr", "add", &format!("{ip}/24"), "dev", "eth0"]);
        ns.ip(&["link", "set", "eth0", "up"]);
        // Frames on the underlay carry complete checksums, as on a wire (a
        // veth would otherwise hand the switch partial ones).
        tx_checksum_off(&ns, "eth0");
        self.nodes.push(Node {
            ns,
            ip,
            name: format!("node{n}"),
        });
        index
    }

    /// Adds a pod with address `ip` on node `node`, wired as the CNI plugin wires pods.
    pub fn add_pod(&mut self, node: usize, ip: Ipv4Addr) -> usize {
        let index = self.pods.len();
        let ns = Netns::new(&format!("pod{index}"));
        let host_if = format!("vp{}", u32::from(ip) & 0x00ff_ffff);
        let node_ns = &self.nodes[node].ns;
        node_ns.ip(&[
            "link", "add", &host_if, "type", "veth", "peer", "name", "eth0", "netns", &ns.name,
        ]);
        node_ns.ip(&["link", "set", &host_if, "mtu", "1450", "up"]);
        wire_pod_end(&ns, ip);
        let offload = ns.exec(
            &["ethtool", "-K", "eth0", "tx", "off"],
            std::time::Duration::from_secs(5),
        );
        assert!(
            offload.status.success(),
            "ethtool -K eth0 tx off: {}",
            String::from_utf8_lossy(&offload.stderr)
        );
        let mac = ns.mac("eth0");
        self.pods.push(Pod {
            ns,
            ip,
            mac,
            node,
            host_if,
        });
        index
    }
}

/// Wires `eth0` in `ns` as a pod's interface: MTU 1450, up, `ip`/32, a
/// link route to 169.254.1.1 and a default route via it.
pub fn wire_pod_end(ns: &Netns, ip: Ipv4Addr) {
    ns.ip(&["link", "set", "eth0", "mtu", "1450", "up"]);
    ns.ip(&["addr", "add", &format!("{ip}/32"), "dev", "eth0"]);
    ns.ip(&[
        "route",
        "add",
        "169.254.1.1",
        "dev",
        "eth0",
        "scope",
        "link",
    ]);
    ns.ip(&[
        "route",
        "add",
        "default",
        "via",
        "169.254.1.1",
        "dev",
        "eth0",
    ]);
}

/// `ethtool -K DEV tx off` inside `ns`.
fn tx_checksum_off(ns: &Netns, dev: &str) {
    let out = ns.exec(
        &["ethtool", "-K", dev, "tx", "off"],
        std::time::Duration::from_secs(5),
    );
    assert!(
        out.status.success(),
        "ethtool -K {dev} tx off: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
