//! Link, address and route changes over rtnetlink (no shelling out to
//! `ip`): veth pairs, up/down, MTU, MAC lookup, addresses and routes. Used to
//! build the host port and, in `podswitch-cni`, to wire pods (a veth whose
//! peer is created directly in the pod's namespace) and to check them
//! (addresses and routes of a namespace).

// FFI constants and C struct sizes are small known values: their casts to
// the kernel's field types are exact.
#![allow(clippy::cast_possible_truncation)]

use std::ffi::CString;
use std::net::Ipv4Addr;

use tables::model::Cidr;

use crate::nl::*;
use crate::{attributes, io, NetlinkError, Socket};

/// One request, with errors naming `step`.
fn call(
    step: &'static str,
    kind: u16,
    flags: u16,
    body: &[u8],
) -> Result<Vec<(u16, Vec<u8>)>, NetlinkError> {
    Socket::open()?
        .request(kind, flags, body)
        .map_err(|e| match e {
            NetlinkError::Io { source, .. } => NetlinkError::Io { step, source },
            e => e,
        })
}

/// Appends a netlink attribute (4-byte aligned).
fn attr(buf: &mut Vec<u8>, kind: u16, value: &[u8]) {
    let len = u16::try_from(4 + value.len()).unwrap_or(u16::MAX);
    buf.extend_from_slice(&len.to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(value);
    while !buf.len().is_multiple_of(4) {
        buf.push(0);
    }
}

/// Appends a nested attribute whose content `fill` writes.
fn nested(buf: &mut Vec<u8>, kind: u16, fill: impl FnOnce(&mut Vec<u8>)) {
    let start = buf.len();
    buf.extend_from_slice(&[0, 0]);
    buf.extend_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
    fill(buf);
    let len = u16::try_from(buf.len() - start).unwrap_or(u16::MAX);
    buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
}

/// `struct ifinfomsg` for interface `index` with `flags` under `change`.
fn ifinfo(index: u32, flags: u32, change: u32) -> Vec<u8> {
    let mut b = vec![libc::AF_UNSPEC as u8, 0, 0, 0];
    b.extend_from_slice(&(index as i32).to_ne_bytes());
    b.extend_from_slice(&flags.to_ne_bytes());
    b.extend_from_slice(&change.to_ne_bytes());
    b
}

fn name_attr(name: &str) -> Vec<u8> {
    let mut v = name.as_bytes().to_vec();
    v.push(0);
    v
}

/// The index of interface `name`, if it exists in this namespace.
pub fn index_of(name: &str) -> Option<u32> {
    let c = CString::new(name).ok()?;
    // SAFETY: `c` is a valid NUL-terminated string for the call.
    let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (index != 0).then_some(index)
}

/// Creates the veth pair `name` <-> `peer`. Fails if either exists.
pub fn create_veth(name: &str, peer: &str) -> Result<(), NetlinkError> {
    new_veth(name, peer, &|_| {}, &|_| {})
}

/// Creates the veth pair `name` <-> `peer` with both ends at `mtu`: `name`
/// in this namespace, `peer` directly inside the network namespace open as
/// `peer_netns` (`IFLA_NET_NS_FD`), so the peer never appears here and
/// cannot clash with this namespace's names. Both ends get `queues` receive
/// and transmit queues (one per switch worker, so that every worker binds a
/// socket on the pod's port). Fails if `name` exists here or `peer` exists
/// there (`EEXIST`).
pub fn create_veth_into(
    name: &str,
    peer: &str,
    peer_netns: std::os::fd::BorrowedFd<'_>,
    mtu: u32,
    queues: u32,
) -> Result<(), NetlinkError> {
    use std::os::fd::AsRawFd;
    let queues = queues.max(1);
    let fd = u32::try_from(peer_netns.as_raw_fd()).map_err(|_| {
        io("create veth")(std::io::Error::other(
            "the namespace descriptor is negative",
        ))
    })?;
    let each = |b: &mut Vec<u8>| {
        attr(b, IFLA_MTU, &mtu.to_ne_bytes());
        attr(b, IFLA_NUM_TX_QUEUES, &queues.to_ne_bytes());
        attr(b, IFLA_NUM_RX_QUEUES, &queues.to_ne_bytes());
    };
    new_veth(name, peer, &each, &|b| {
        attr(b, IFLA_NET_NS_FD, &fd.to_ne_bytes())
    })
}

/// RTM_NEWLINK for the veth pair `name` <-> `peer`: `each` adds attributes
/// to both ends, `peer_only` to the peer's.
fn new_veth(
    name: &str,
    peer: &str,
    each: &dyn Fn(&mut Vec<u8>),
    peer_only: &dyn Fn(&mut Vec<u8>),
) -> Result<(), NetlinkError> {
    let mut body = ifinfo(0, 0, 0);
    attr(&mut body, IFLA_IFNAME, &name_attr(name));
    each(&mut body);
    nested(&mut body, IFLA_LINKINFO, |b| {
        attr(b, IFLA_INFO_KIND, b"veth");
        nested(b, IFLA_INFO_DATA, |b| {
            nested(b, VETH_INFO_PEER, |b| {
                b.extend_from_slice(&ifinfo(0, 0, 0));
                attr(b, IFLA_IFNAME, &name_attr(peer));
                each(b);
                peer_only(b);
            });
        });
    });
    call(
        "create veth",
        RTM_NEWLINK,
        NLM_F_CREATE | NLM_F_EXCL | NLM_F_ACK,
        &body,
    )?;
    Ok(())
}

/// Creates the bridge `name`. Fails if it exists.
pub fn create_bridge(name: &str) -> Result<(), NetlinkError> {
    let mut body = ifinfo(0, 0, 0);
    attr(&mut body, IFLA_IFNAME, &name_attr(name));
    nested(&mut body, IFLA_LINKINFO, |b| {
        attr(b, IFLA_INFO_KIND, b"bridge")
    });
    call(
        "create bridge",
        RTM_NEWLINK,
        NLM_F_CREATE | NLM_F_EXCL | NLM_F_ACK,
        &body,
    )?;
    Ok(())
}

/// Makes interface `index` a port of the bridge `master`.
pub fn set_master(index: u32, master: u32) -> Result<(), NetlinkError> {
    let mut body = ifinfo(index, 0, 0);
    attr(&mut body, IFLA_MASTER, &master.to_ne_bytes());
    call("set master", RTM_NEWLINK, NLM_F_ACK, &body)?;
    Ok(())
}

/// Deletes interface `index` (a veth takes its peer with it).
pub fn delete_link(index: u32) -> Result<(), NetlinkError> {
    call("delete link", RTM_DELLINK, NLM_F_ACK, &ifinfo(index, 0, 0))?;
    Ok(())
}

/// Brings interface `index` up.
pub fn set_up(index: u32) -> Result<(), NetlinkError> {
    let iff_up = libc::IFF_UP as u32;
    call(
        "set link up",
        RTM_NEWLINK,
        NLM_F_ACK,
        &ifinfo(index, iff_up, iff_up),
    )?;
    Ok(())
}

/// Sets the MTU of interface `index`.
pub fn set_mtu(index: u32, mtu: u32) -> Result<(), NetlinkError> {
    let mut body = ifinfo(index, 0, 0);
    attr(&mut body, IFLA_MTU, &mtu.to_ne_bytes());
    call("set MTU", RTM_NEWLINK, NLM_F_ACK, &body)?;
    Ok(())
}

/// Sets the largest GSO packet the stack builds for interface `index`
/// (`gso_max_size`).
pub fn set_gso_max_size(index: u32, size: u32) -> Result<(), NetlinkError> {
    let mut body = ifinfo(index, 0, 0);
    attr(&mut body, IFLA_GSO_MAX_SIZE, &size.to_ne_bytes());
    call("set gso_max_size", RTM_NEWLINK, NLM_F_ACK, &body)?;
    Ok(())
}

/// Moves interface `index` into the network namespace `ns`, renamed
/// `name` there (as a CNI plugin hands a pod its interface).
pub fn move_into(
    index: u32,
    ns: std::os::fd::BorrowedFd<'_>,
    name: &str,
) -> Result<(), NetlinkError> {
    use std::os::fd::AsRawFd;
    let mut body = ifinfo(index, 0, 0);
    attr(&mut body, IFLA_NET_NS_FD, &ns.as_raw_fd().to_ne_bytes());
    attr(&mut body, IFLA_IFNAME, &name_attr(name));
    call("move link", RTM_NEWLINK, NLM_F_ACK, &body)?;
    Ok(())
}

/// Attribute `kind` of interface `index`'s link message, if present.
fn link_attribute(index: u32, kind: u16) -> Result<Option<Vec<u8>>, NetlinkError> {
    let answer = call("link query", RTM_GETLINK, 0, &ifinfo(index, 0, 0))?;
    Ok(answer
        .iter()
        .filter(|(k, _)| *k == RTM_NEWLINK)
        .find_map(|(_, payload)| {
            attributes(payload, 16)
                .into_iter()
                .find(|(k, _)| *k == kind)
                .map(|(_, v)| v.to_vec())
        }))
}

fn u32_attribute(index: u32, kind: u16) -> Result<Option<u32>, NetlinkError> {
    Ok(link_attribute(index, kind)?
        .and_then(|v| <[u8; 4]>::try_from(v.as_slice()).ok())
        .map(u32::from_ne_bytes))
}

/// The MAC address of interface `index`.
pub fn mac_of(index: u32) -> Result<[u8; 6], NetlinkError> {
    link_attribute(index, IFLA_ADDRESS)?
        .and_then(|v| <[u8; 6]>::try_from(v.as_slice()).ok())
        .ok_or_else(|| {
            io("link query")(std::io::Error::other(format!(
                "interface {index} has no Ethernet address"
            )))
        })
}

/// The MTU of interface `index`.
pub fn mtu_of(index: u32) -> Result<u32, NetlinkError> {
    u32_attribute(index, IFLA_MTU)?.ok_or_else(|| {
        io("link query")(std::io::Error::other(format!(
            "interface {index} reports no MTU"
        )))
    })
}

/// The number of receive queues of interface `index` (`IFLA_NUM_RX_QUEUES`).
pub fn rx_queues(index: u32) -> Result<u32, NetlinkError> {
    const IFLA_NUM_RX_QUEUES: u16 = 32;
    Ok(u32_attribute(index, IFLA_NUM_RX_QUEUES)?
        .unwrap_or(1)
        .max(1))
}

/// Adds `addr/len` to interface `index`.
pub fn add_address(index: u32, addr: Ipv4Addr, len: u8) -> Result<(), NetlinkError> {
    // struct ifaddrmsg: family, prefixlen, flags, scope, index(u32)
    let mut body = vec![libc::AF_INET as u8, len, 0, 0];
    body.extend_from_slice(&index.to_ne_bytes());
    attr(&mut body, IFA_LOCAL, &addr.octets());
    attr(&mut body, IFA_ADDRESS, &addr.octets());
    call(
        "add address",
        RTM_NEWADDR,
        NLM_F_CREATE | NLM_F_REPLACE | NLM_F_ACK,
        &body,
    )?;
    Ok(())
}

/// The IPv4 addresses (address, prefix length) of interface `index`.
pub fn ipv4_addresses(index: u32) -> Result<Vec<(Ipv4Addr, u8)>, NetlinkError> {
    // struct ifaddrmsg: family, prefixlen, flags, scope, index(u32)
    let mut body = vec![libc::AF_INET as u8, 0, 0, 0];
    body.extend_from_slice(&0u32.to_ne_bytes());
    let answer = call("list addresses", RTM_GETADDR, NLM_F_DUMP, &body)?;
    let mut out = Vec::new();
    for (kind, payload) in answer {
        if kind != RTM_NEWADDR || payload.len() < 8 {
            continue;
        }
        let len = payload[1];
        let owner = u32::from_ne_bytes([payload[4], payload[5], payload[6], payload[7]]);
        if owner != index {
            continue;
        }
        let attrs = attributes(&payload, 8);
        let addr = [IFA_LOCAL, IFA_ADDRESS].iter().find_map(|want| {
            attrs
                .iter()
                .find(|(k, _)| k == want)
                .and_then(|(_, v)| <[u8; 4]>::try_from(*v).ok())
        });
        if let Some(addr) = addr {
            out.push((Ipv4Addr::from(addr), len));
        }
    }
    Ok(out)
}

/// One IPv4 route of the main table, as the kernel lists it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RouteEntry {
    /// The destination prefix (0.0.0.0/0 for the default route).
    pub dst: Ipv4Addr,
    pub len: u8,
    /// The output interface, if the route names one.
    pub ifindex: Option<u32>,
    pub gateway: Option<Ipv4Addr>,
    /// `rtm_scope`: 0 universe, 253 link, 254 host.
    pub scope: u8,
}

/// The scope of a route to a destination on the link (`RT_SCOPE_LINK`).
pub const SCOPE_LINK: u8 = libc::RT_SCOPE_LINK;

/// Every IPv4 route of this namespace's main table.
pub fn ipv4_routes() -> Result<Vec<RouteEntry>, NetlinkError> {
    // struct rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type, flags(u32)
    let mut body = vec![libc::AF_INET as u8, 0, 0, 0, 0, 0, 0, 0];
    body.extend_from_slice(&0u32.to_ne_bytes());
    let answer = call("list routes", RTM_GETROUTE, NLM_F_DUMP, &body)?;
    let mut out = Vec::new();
    for (kind, payload) in answer {
        if kind != RTM_NEWROUTE || payload.len() < 12 {
            continue;
        }
        let (len, header_table, scope) = (payload[1], payload[4], payload[6]);
        let attrs = attributes(&payload, 12);
        let value = |want: u16| attrs.iter().find(|(k, _)| *k == want).map(|(_, v)| *v);
        let table = value(RTA_TABLE)
            .and_then(|v| <[u8; 4]>::try_from(v).ok())
            .map_or(u32::from(header_table), u32::from_ne_bytes);
        if table != RT_TABLE_MAIN {
            continue;
        }
        let v4 = |v: &[u8]| <[u8; 4]>::try_from(v).ok().map(Ipv4Addr::from);
        out.push(RouteEntry {
            dst: value(RTA_DST).and_then(v4).unwrap_or(Ipv4Addr::UNSPECIFIED),
            len,
            ifindex: value(RTA_OIF)
                .and_then(|v| <[u8; 4]>::try_from(v).ok())
                .map(u32::from_ne_bytes),
            gateway: value(RTA_GATEWAY).and_then(v4),
            scope,
        });
    }
    Ok(out)
}

/// Routes `dst` out of interface `index`, through `via` if given (which
/// needs a route to `via` itself first, e.g. a /32 link route: the pod
/// gateway 169.254.1.1 is in no local subnet).
pub fn add_route(dst: Cidr, index: u32, via: Option<Ipv4Addr>) -> Result<(), NetlinkError> {
    // struct rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type, flags(u32)
    let scope = if via.is_some() { 0 } else { 253 }; // universe, or link
    let mut body = vec![libc::AF_INET as u8, dst.len(), 0, 0, 254, 4, scope, 1];
    body.extend_from_slice(&0u32.to_ne_bytes());
    attr(&mut body, RTA_DST, &Ipv4Addr::from(dst.addr()).octets());
    attr(&mut body, RTA_OIF, &index.to_ne_bytes());
    if let Some(gw) = via {
        attr(&mut body, RTA_GATEWAY, &gw.octets());
    }
    call(
        "add route",
        RTM_NEWROUTE,
        NLM_F_CREATE | NLM_F_REPLACE | NLM_F_ACK,
        &body,
    )?;
    Ok(())
}

/// Turns TX checksum offload of interface `name` on or off (what `ethtool -K
/// NAME tx off` does). Frames from a veth with offload on reach AF_XDP with
/// partial L4 checksums (the kernel leaves them to the NIC), so the pod and node sides of the
/// switch's veths turn it off.
pub fn set_tx_checksum(name: &str, on: bool) -> Result<(), NetlinkError> {
    // linux/ethtool.h; not in libc.
    const ETHTOOL_STXCSUM: u32 = 0x17;
    #[repr(C)]
    struct EthtoolValue {
        cmd: u32,
        data: u32,
    }
    #[repr(C)]
    struct IfReq {
        name: [libc::c_char; 16],
        data: *mut EthtoolValue,
        _pad: [u8; 16],
    }
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() > 15 {
        return Err(io("ethtool")(std::io::Error::other(format!(
            "{name:?} is not an interface name"
        ))));
    }
    let mut value = EthtoolValue {
        cmd: ETHTOOL_STXCSUM,
        data: u32::from(on),
    };
    let mut req = IfReq {
        name: [0; 16],
        data: &mut value,
        _pad: [0; 16],
    };
    for (d, s) in req.name.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    // SAFETY: a plain datagram socket used only for the ioctl, closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io("ethtool socket")(std::io::Error::last_os_error()));
    }
    // SAFETY: `req` is a valid ifreq whose data points at `value`, both
    // alive for the call; SIOCETHTOOL reads and writes only those.
    let rc = unsafe { libc::ioctl(fd, libc::SIOCETHTOOL, &mut req as *mut IfReq) };
    let err = std::io::Error::last_os_error();
    // SAFETY: `fd` was opened above and is closed once.
    unsafe { libc::close(fd) };
    if rc < 0 {
        return Err(io("ethtool tx checksum")(err));
    }
    Ok(())
}
