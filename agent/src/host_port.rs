//! The host port: a veth pair whose switch side the agent serves like any
//! port and whose node side belongs to the node's own network stack, so the
//! node (kubelet probes, hostNetwork pods) reaches pods and services.
//!
//! The node side routes the pod CIDR, the cluster CIDR and the service CIDR
//! via 169.254.1.1 (with a link route to it), which the switch answers ARP
//! for, exactly as a pod routes everything. Both sides have TX checksum offload off.

use std::net::Ipv4Addr;

use tables::model::Cidr;

use netlink::links;
use netlink::NetlinkError;

/// The gateway the node side routes through.
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);

/// A created host port; deleted on drop.
#[derive(Debug)]
pub struct HostPort {
    pub switch_side: String,
    pub node_side: String,
    pub switch_index: u32,
    pub node_mac: [u8; 6],
}

impl HostPort {
    /// Creates (or re-creates, after a crash) the pair `switch_side` <->
    /// `node_side` with `mtu` and the node side's routes to `cidrs`.
    pub fn create(
        switch_side: &str,
        node_side: &str,
        mtu: u32,
        cidrs: &[Cidr],
    ) -> Result<HostPort, NetlinkError> {
        for stale in [switch_side, node_side] {
            if let Some(index) = links::index_of(stale) {
                links::delete_link(index)?;
            }
        }
        links::create_veth(node_side, switch_side)?;
        let mut port = HostPort {
            switch_side: switch_side.into(),
            node_side: node_side.into(),
            switch_index: links::index_of(switch_side).unwrap_or(0),
            node_mac: [0; 6],
        };
        let node_index = links::index_of(node_side).unwrap_or(0);
        for (index, name) in [(port.switch_index, switch_side), (node_index, node_side)] {
            links::set_mtu(index, mtu)?;
            links::set_tx_checksum(name, false)?;
            links::set_up(index)?;
        }
        let gateway = Cidr::new(GATEWAY, 32).ok_or(NetlinkError::NoRoute(GATEWAY))?;
        links::add_route(gateway, node_index, None)?;
        for &cidr in cidrs {
            links::add_route(cidr, node_index, Some(GATEWAY))?;
        }
        port.node_mac = links::mac_of(node_index)?;
        Ok(port)
    }
}

impl Drop for HostPort {
    fn drop(&mut self) {
        if let Some(index) = links::index_of(&self.switch_side) {
            let _ = links::delete_link(index);
        }
    }
}
