//! What the uplink's XDP program must send to the switch besides the node
//! IP (which never changes): NodePorts, host ports and external or
//! LoadBalancer IPs, kept in step with the service table. The rest of the
//! uplink's traffic stays with the kernel. The core keeps what it asked
//! for and, after each rebuild, asks for the difference.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use tables::service::FrontendKind;
use tables::snapshot::Snapshot;

/// The uplink filter's entries the core last asked for.
#[derive(Default)]
pub struct UplinkFilter {
    node_ports: BTreeSet<(u8, u16)>,
    ips: BTreeSet<Ipv4Addr>,
}

/// Entries to add to and remove from the uplink's filter.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FilterChange {
    /// (IP protocol number, port) of NodePorts and host ports.
    pub add_ports: Vec<(u8, u16)>,
    pub remove_ports: Vec<(u8, u16)>,
    /// External and LoadBalancer IPs.
    pub add_ips: Vec<Ipv4Addr>,
    pub remove_ips: Vec<Ipv4Addr>,
}

impl FilterChange {
    /// Whether there is nothing to change.
    pub fn is_empty(&self) -> bool {
        self.add_ports.is_empty()
            && self.remove_ports.is_empty()
            && self.add_ips.is_empty()
            && self.remove_ips.is_empty()
    }
}

impl UplinkFilter {
    /// What `snapshot`'s services need that was not asked for, and what
    /// was asked for that they no longer need; from now on, what they need
    /// counts as asked for.
    pub fn sync(&mut self, snapshot: &Snapshot) -> FilterChange {
        let mut node_ports = BTreeSet::new();
        let mut ips = BTreeSet::new();
        for (key, frontend) in snapshot.services.frontends() {
            match frontend.kind {
                FrontendKind::NodePort | FrontendKind::HostPort => {
                    node_ports.insert((key.proto, key.port));
                }
                FrontendKind::External => {
                    ips.insert(Ipv4Addr::from(key.ip));
                }
                FrontendKind::ClusterIp => {}
            }
        }
        let change = FilterChange {
            add_ports: node_ports.difference(&self.node_ports).copied().collect(),
            remove_ports: self.node_ports.difference(&node_ports).copied().collect(),
            add_ips: ips.difference(&self.ips).copied().collect(),
            remove_ips: self.ips.difference(&ips).copied().collect(),
        };
        (self.node_ports, self.ips) = (node_ports, ips);
        change
    }
}
