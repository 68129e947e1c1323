//! The pod's interface, over rtnetlink (the README's "Addresses and pod
//! wiring"). A veth: the host end in the node's namespace, the pod end
//! created directly inside the pod's namespace; both ends have TX checksum
//! offload off (AF_XDP copy mode would see partial checksums otherwise). A
//! TAP device the agent created: moved into the pod's namespace under its
//! interface name, offloads left on (the switch takes them). Either way the
//! pod end gets the pod IP /32, a link route to 169.254.1.1 and a default
//! route via it.

use std::fs::File;
use std::net::Ipv4Addr;
use std::os::fd::AsFd;

use netlink::links::{self, RouteEntry};
use tables::model::Cidr;

use crate::error::CniError;
use crate::netns;
use crate::result::GATEWAY;

/// What [`create`] made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodLink {
    pub host_mac: [u8; 6],
    pub pod_mac: [u8; 6],
}

fn prefix(addr: Ipv4Addr, len: u8) -> Result<Cidr, CniError> {
    Cidr::new(addr, len).ok_or_else(|| CniError::Other(format!("{addr}/{len} is not a prefix")))
}

/// Deletes the host end `host_ifname` (and with it the pod end) if it
/// exists in this namespace; true if it did.
pub fn remove_host_end(host_ifname: &str) -> Result<bool, CniError> {
    let Some(index) = links::index_of(host_ifname) else {
        return Ok(false);
    };
    match links::delete_link(index) {
        Ok(()) => Ok(true),
        // Gone in between (a concurrent DEL, or the namespace went away).
        Err(_) if links::index_of(host_ifname).is_none() => Ok(false),
        Err(e) => Err(CniError::netlink(format!(
            "cannot delete the host veth {host_ifname}"
        ))(e)),
    }
}

/// Creates the veth `host_ifname` <-> `pod_ifname` (the latter inside
/// `pod_ns`, the namespace at `netns_path`) at `mtu` with `queues` queues
/// (the agent's worker count) and configures both ends for `ip`. A stale host end of the same name is deleted first. On
/// error the caller deletes the host end (which takes the pod end along).
pub fn create(
    host_ifname: &str,
    pod_ifname: &str,
    pod_ns: &File,
    netns_path: &str,
    ip: Ipv4Addr,
    mtu: u32,
    queues: u32,
) -> Result<PodLink, CniError> {
    remove_host_end(host_ifname)?;
    links::create_veth_into(host_ifname, pod_ifname, pod_ns.as_fd(), mtu, queues).map_err(|e| {
        CniError::netlink(format!(
            "cannot create the veth {host_ifname} <-> {pod_ifname} (in {netns_path}; an interface {pod_ifname} may already exist there)"
        ))(e)
    })?;
    let host_index = links::index_of(host_ifname).ok_or_else(|| {
        CniError::Other(format!(
            "the host veth {host_ifname} vanished right after it was created"
        ))
    })?;
    let host = |what: &str| CniError::netlink(format!("host veth {host_ifname}: cannot {what}"));
    links::set_tx_checksum(host_ifname, false).map_err(host("turn TX checksum offload off"))?;
    links::set_up(host_index).map_err(host("bring it up"))?;
    let host_mac = links::mac_of(host_index).map_err(host("read its MAC"))?;

    let pod_mac = configure_pod_end(pod_ns, netns_path, pod_ifname, ip, mtu, false)?;
    Ok(PodLink { host_mac, pod_mac })
}

/// Moves the TAP device `tap_ifname` the agent created in this namespace
/// into `pod_ns` (at `netns_path`) as `pod_ifname`, and configures it for
/// `ip` at `mtu`. Returns its MAC. On error the caller has the agent
/// detach the port, which deletes the device wherever it is.
pub fn adopt_tap(
    tap_ifname: &str,
    pod_ifname: &str,
    pod_ns: &File,
    netns_path: &str,
    ip: Ipv4Addr,
    mtu: u32,
) -> Result<[u8; 6], CniError> {
    let index = links::index_of(tap_ifname).ok_or_else(|| {
        CniError::Other(format!(
            "the agent's TAP device {tap_ifname} is not in this namespace"
        ))
    })?;
    links::move_into(index, pod_ns.as_fd(), pod_ifname).map_err(CniError::netlink(format!(
        "cannot move the TAP device {tap_ifname} into {netns_path} as {pod_ifname} (an interface {pod_ifname} may already exist there)"
    )))?;
    configure_pod_end(pod_ns, netns_path, pod_ifname, ip, mtu, true)
}

/// Deletes the pod's TAP device `pod_ifname` inside `netns_path`, if the
/// namespace and the device are there (DEL with the agent down: the device
/// persists); true if it did.
pub fn remove_pod_tap(netns_path: &str, pod_ifname: &str) -> Result<bool, CniError> {
    let Ok(pod_ns) = netns::open(std::path::Path::new(netns_path)) else {
        return Ok(false); // the namespace is gone, and the device with it
    };
    netns::within(&pod_ns, netns_path, || {
        let Some(index) = links::index_of(pod_ifname) else {
            return Ok(false);
        };
        links::delete_link(index)
            .map(|()| true)
            .map_err(CniError::netlink(format!(
                "cannot delete the TAP device {pod_ifname} in {netns_path}"
            )))
    })
}

/// Configures the pod end `pod_ifname` inside `pod_ns`: lo up, the MTU,
/// TX checksum offload off unless `offloads`, `ip`/32, up, the link route
/// to the gateway and the default route via it. Returns its MAC.
fn configure_pod_end(
    pod_ns: &File,
    netns_path: &str,
    pod_ifname: &str,
    ip: Ipv4Addr,
    mtu: u32,
    offloads: bool,
) -> Result<[u8; 6], CniError> {
    netns::within(pod_ns, netns_path, || {
        let pod =
            |what: &str| CniError::netlink(format!("{pod_ifname} in {netns_path}: cannot {what}"));
        let index = links::index_of(pod_ifname)
            .ok_or_else(|| CniError::Other(format!("{pod_ifname} is not in {netns_path}")))?;
        if let Some(lo) = links::index_of("lo") {
            links::set_up(lo).map_err(CniError::netlink(format!(
                "lo in {netns_path}: cannot bring it up"
            )))?;
        }
        links::set_mtu(index, mtu).map_err(pod("set the MTU"))?;
        if !offloads {
            links::set_tx_checksum(pod_ifname, false)
                .map_err(pod("turn TX checksum offload off"))?;
        }
        links::add_address(index, ip, 32).map_err(pod(&format!("add {ip}/32")))?;
        links::set_up(index).map_err(pod("bring it up"))?;
        links::add_route(prefix(GATEWAY, 32)?, index, None)
            .map_err(pod(&format!("add the link route to {GATEWAY}")))?;
        links::add_route(prefix(Ipv4Addr::UNSPECIFIED, 0)?, index, Some(GATEWAY))
            .map_err(pod(&format!("add the default route via {GATEWAY}")))?;
        links::mac_of(index).map_err(pod("read its MAC"))
    })
}

/// The pod end as the kernel has it (for CHECK).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodState {
    pub index: u32,
    pub mtu: u32,
    pub addresses: Vec<(Ipv4Addr, u8)>,
    pub routes: Vec<RouteEntry>,
}

/// Reads `pod_ifname`'s MTU, addresses and the namespace's routes inside
/// `pod_ns`; `None` when there is no such interface.
pub fn inspect(
    pod_ns: &File,
    netns_path: &str,
    pod_ifname: &str,
) -> Result<Option<PodState>, CniError> {
    netns::within(pod_ns, netns_path, || {
        let Some(index) = links::index_of(pod_ifname) else {
            return Ok(None);
        };
        let read = |what: &str| {
            CniError::netlink(format!("{pod_ifname} in {netns_path}: cannot read {what}"))
        };
        Ok(Some(PodState {
            index,
            mtu: links::mtu_of(index).map_err(read("its MTU"))?,
            addresses: links::ipv4_addresses(index).map_err(read("its addresses"))?,
            routes: links::ipv4_routes().map_err(read("the routes"))?,
        }))
    })
}
