//! The kernel's network configuration over rtnetlink, for the agent, the
//! CNI plugin and the lab: links, veths, addresses, routes ([`links`]),
//! next-hop resolution (which MAC to send a remote node's VXLAN frames to:
//! the route lookup gives the next hop, the neighbour table its MAC; a
//! missing entry is made to resolve by sending one UDP datagram to the next
//! hop, then read again), change notices ([`Watch`]), and entering network
//! namespaces ([`netns`]). No shelling out to `ip`.
//!
//! Control path only: one small netlink socket per call, bounded waits. It
//! depends on `tables` (for its CIDR type) and libc, and must never depend
//! on the agent, the dataplane, tokio or kube: the CNI plugin links it.

// FFI constants (address families) and C struct sizes are small known
// values: their casts to the kernel's field types are exact.
#![allow(clippy::cast_possible_truncation)]

pub mod links;
pub mod netns;
mod nl;

use std::net::{Ipv4Addr, UdpSocket};
use std::time::{Duration, Instant};

use nl::*;

/// Why a next hop could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("netlink {step} failed: {source}")]
    Io {
        step: &'static str,
        source: std::io::Error,
    },
    #[error("no route to {0} in this network namespace")]
    NoRoute(Ipv4Addr),
    #[error("next hop {next_hop} (for {dst}) did not answer ARP within {waited_ms} ms")]
    Unresolved {
        dst: Ipv4Addr,
        next_hop: Ipv4Addr,
        waited_ms: u64,
    },
}

/// Where the kernel sends packets for an address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RouteInfo {
    pub ifindex: u32,
    /// The gateway, or `None` when the destination is on the link.
    pub gateway: Option<Ipv4Addr>,
    pub source: Option<Ipv4Addr>,
}

impl RouteInfo {
    /// The address to ARP for.
    pub fn next_hop(&self, dst: Ipv4Addr) -> Ipv4Addr {
        self.gateway.unwrap_or(dst)
    }
}

pub(crate) struct Socket(i32);

impl Drop for Socket {
    fn drop(&mut self) {
        // SAFETY: the descriptor is owned by this value and closed once.
        unsafe { libc::close(self.0) };
    }
}

pub(crate) fn io(step: &'static str) -> impl Fn(std::io::Error) -> NetlinkError {
    move |source| NetlinkError::Io { step, source }
}

impl Socket {
    pub(crate) fn open() -> Result<Socket, NetlinkError> {
        // SAFETY: plain socket(2) call; the result is checked.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if fd < 0 {
            return Err(io("socket")(std::io::Error::last_os_error()));
        }
        let socket = Socket(fd);
        let timeout = libc::timeval {
            tv_sec: 2,
            tv_usec: 0,
        };
        // SAFETY: `timeout` is a valid timeval for the duration of the call.
        unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&timeout as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        Ok(socket)
    }

    /// Sends one request and returns every message of the answer.
    pub(crate) fn request(
        &self,
        kind: u16,
        flags: u16,
        body: &[u8],
    ) -> Result<Vec<(u16, Vec<u8>)>, NetlinkError> {
        let len = u32::try_from(NLMSG_HDR + body.len()).unwrap_or(u32::MAX);
        let mut msg = Vec::with_capacity(NLMSG_HDR + body.len());
        msg.extend_from_slice(&len.to_ne_bytes());
        msg.extend_from_slice(&kind.to_ne_bytes());
        msg.extend_from_slice(&(NLM_F_REQUEST | flags).to_ne_bytes());
        msg.extend_from_slice(&1u32.to_ne_bytes()); // sequence
        msg.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel fills it
        msg.extend_from_slice(body);
        // SAFETY: `msg` is a valid buffer of `msg.len()` bytes; a zeroed
        // sockaddr_nl addresses the kernel.
        let sent = unsafe {
            let mut addr: libc::sockaddr_nl = std::mem::zeroed();
            addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
            libc::sendto(
                self.0,
                msg.as_ptr().cast(),
                msg.len(),
                0,
                (&addr as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if sent < 0 {
            return Err(io("send")(std::io::Error::last_os_error()));
        }
        let mut out = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            // SAFETY: `buf` is a valid writable buffer of its length.
            let n = unsafe { libc::recv(self.0, buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                return Err(io("receive")(std::io::Error::last_os_error()));
            }
            let mut rest = &buf[..usize::try_from(n).unwrap_or(0)];
            let mut done = flags & NLM_F_DUMP == 0;
            while rest.len() >= NLMSG_HDR {
                let len = u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
                let kind = u16::from_ne_bytes([rest[4], rest[5]]);
                if len < NLMSG_HDR || len > rest.len() {
                    break;
                }
                let payload = &rest[NLMSG_HDR..len];
                match kind {
                    NLMSG_DONE => done = true,
                    NLMSG_ERROR => {
                        let errno = payload
                            .get(..4)
                            .map_or(0, |b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
                        if errno != 0 {
                            return Err(io("request")(std::io::Error::from_raw_os_error(-errno)));
                        }
                        done = true;
                    }
                    _ => out.push((kind, payload.to_vec())),
                }
                rest = rest.get((len + 3) & !3..).unwrap_or(&[]);
                if rest.is_empty() {
                    break;
                }
            }
            if done {
                return Ok(out);
            }
        }
    }
}

/// The attributes after a fixed header of `fixed` bytes.
pub(crate) fn attributes(payload: &[u8], fixed: usize) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    let mut rest = payload.get(fixed..).unwrap_or(&[]);
    while rest.len() >= 4 {
        let len = usize::from(u16::from_ne_bytes([rest[0], rest[1]]));
        let kind = u16::from_ne_bytes([rest[2], rest[3]]) & 0x3fff;
        if len < 4 || len > rest.len() {
            break;
        }
        out.push((kind, &rest[4..len]));
        rest = rest.get((len + 3) & !3..).unwrap_or(&[]);
    }
    out
}

fn ipv4(b: &[u8]) -> Option<Ipv4Addr> {
    let a: [u8; 4] = b.try_into().ok()?;
    Some(Ipv4Addr::from(a))
}

/// Asks the kernel how it would route to `dst`.
pub fn route(dst: Ipv4Addr) -> Result<RouteInfo, NetlinkError> {
    let socket = Socket::open()?;
    // struct rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type, flags(u32)
    let mut body = vec![libc::AF_INET as u8, 32, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    body.extend_from_slice(&8u16.to_ne_bytes());
    body.extend_from_slice(&RTA_DST.to_ne_bytes());
    body.extend_from_slice(&dst.octets());
    let answer = socket
        .request(RTM_GETROUTE, 0, &body)
        .map_err(|e| match e {
            NetlinkError::Io { source, .. } if source.raw_os_error() == Some(libc::ENETUNREACH) => {
                NetlinkError::NoRoute(dst)
            }
            e => e,
        })?;
    let (_, payload) = answer
        .into_iter()
        .find(|(k, _)| *k == RTM_NEWROUTE)
        .ok_or(NetlinkError::NoRoute(dst))?;
    let mut info = RouteInfo {
        ifindex: 0,
        gateway: None,
        source: None,
    };
    for (kind, value) in attributes(&payload, 12) {
        match kind {
            RTA_OIF => info.ifindex = value.try_into().map(u32::from_ne_bytes).unwrap_or(0),
            RTA_GATEWAY => info.gateway = ipv4(value),
            RTA_PREFSRC => info.source = ipv4(value),
            _ => {}
        }
    }
    if info.ifindex == 0 {
        return Err(NetlinkError::NoRoute(dst));
    }
    Ok(info)
}

/// The MAC of `ip` on interface `ifindex` from the neighbour table, if it
/// has a usable entry.
pub fn neighbour(ifindex: u32, ip: Ipv4Addr) -> Result<Option<[u8; 6]>, NetlinkError> {
    let socket = Socket::open()?;
    // struct ndmsg: family, pad1, pad2(u16), ifindex(i32), state(u16), flags(u8), type(u8)
    let mut body = vec![libc::AF_INET as u8, 0, 0, 0];
    body.extend_from_slice(&0i32.to_ne_bytes());
    body.extend_from_slice(&[0, 0, 0, 0]);
    for (kind, payload) in socket.request(RTM_GETNEIGH, NLM_F_DUMP, &body)? {
        if kind != RTM_NEWNEIGH || payload.len() < 12 {
            continue;
        }
        let index = u32::from_ne_bytes([payload[4], payload[5], payload[6], payload[7]]);
        let state = u16::from_ne_bytes([payload[8], payload[9]]);
        if index != ifindex || state & NUD_VALID == 0 {
            continue;
        }
        let attrs = attributes(&payload, 12);
        let dst = attrs
            .iter()
            .find(|(k, _)| *k == NDA_DST)
            .and_then(|(_, v)| ipv4(v));
        let mac = attrs
            .iter()
            .find(|(k, _)| *k == NDA_LLADDR)
            .and_then(|(_, v)| <[u8; 6]>::try_from(*v).ok());
        if dst == Some(ip) {
            return Ok(mac);
        }
    }
    Ok(None)
}

/// Every usable IPv4 neighbour entry on interface `ifindex`.
pub fn neighbours(ifindex: u32) -> Result<Vec<(Ipv4Addr, [u8; 6])>, NetlinkError> {
    let socket = Socket::open()?;
    let mut body = vec![libc::AF_INET as u8, 0, 0, 0];
    body.extend_from_slice(&0i32.to_ne_bytes());
    body.extend_from_slice(&[0, 0, 0, 0]);
    let mut out = Vec::new();
    for (kind, payload) in socket.request(RTM_GETNEIGH, NLM_F_DUMP, &body)? {
        if kind != RTM_NEWNEIGH || payload.len() < 12 {
            continue;
        }
        let index = u32::from_ne_bytes([payload[4], payload[5], payload[6], payload[7]]);
        let state = u16::from_ne_bytes([payload[8], payload[9]]);
        if index != ifindex || state & NUD_VALID == 0 {
            continue;
        }
        let attrs = attributes(&payload, 12);
        let dst = attrs
            .iter()
            .find(|(k, _)| *k == NDA_DST)
            .and_then(|(_, v)| ipv4(v));
        let mac = attrs
            .iter()
            .find(|(k, _)| *k == NDA_LLADDR)
            .and_then(|(_, v)| <[u8; 6]>::try_from(*v).ok());
        if let (Some(ip), Some(mac)) = (dst, mac) {
            out.push((ip, mac));
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// The MAC to send frames for `dst` to: its next hop's, resolving it if
/// the kernel has no entry yet (waits at most `timeout`).
pub fn next_hop_mac(dst: Ipv4Addr, timeout: Duration) -> Result<[u8; 6], NetlinkError> {
    let info = route(dst)?;
    let hop = info.next_hop(dst);
    let start = Instant::now();
    let mut poked = false;
    loop {
        if let Some(mac) = neighbour(info.ifindex, hop)? {
            return Ok(mac);
        }
        if start.elapsed() >= timeout {
            let waited_ms = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
            return Err(NetlinkError::Unresolved {
                dst,
                next_hop: hop,
                waited_ms,
            });
        }
        if !poked {
            // One datagram to the discard port makes the kernel ARP for the
            // next hop (it is never a destination outside the node's
            // network: it is the node's own next hop).
            if let Ok(s) = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)) {
                let _ = s.send_to(&[], (hop, 9));
            }
            poked = true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Multicast groups of the changes that move a next hop: neighbour entries,
/// IPv4 routes, links.
const WATCH_GROUPS: u32 = (libc::RTMGRP_NEIGH | libc::RTMGRP_IPV4_ROUTE | libc::RTMGRP_LINK) as u32;

/// A subscription to the kernel's neighbour, route and link changes, so the
/// agent re-resolves next hops when they change instead of on a timer.
pub struct Watch(Socket);

impl Watch {
    /// Subscribes, in the calling thread's network namespace.
    pub fn open() -> Result<Watch, NetlinkError> {
        // SAFETY: plain socket(2) call; the result is checked.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                libc::NETLINK_ROUTE,
            )
        };
        if fd < 0 {
            return Err(io("socket")(std::io::Error::last_os_error()));
        }
        let socket = Socket(fd);
        // SAFETY: a zeroed sockaddr_nl with the family and groups set is a
        // valid address for bind(2); `fd` is an open netlink socket.
        let rc = unsafe {
            let mut addr: libc::sockaddr_nl = std::mem::zeroed();
            addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
            addr.nl_groups = WATCH_GROUPS;
            libc::bind(
                fd,
                (&addr as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io("bind to neighbour/route/link groups")(
                std::io::Error::last_os_error(),
            ));
        }
        Ok(Watch(socket))
    }

    /// Waits up to `timeout` for change notifications and drains them.
    /// True if any arrived, or if the kernel dropped some (ENOBUFS: the
    /// socket overflowed, so something changed that we did not see).
    pub fn wait(&self, timeout: Duration) -> bool {
        let mut pfd = libc::pollfd {
            fd: self.0 .0,
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: one valid pollfd.
        if unsafe { libc::poll(&mut pfd, 1, ms) } <= 0 {
            return false;
        }
        let mut changed = false;
        let mut buf = [0u8; 8192];
        loop {
            // SAFETY: `buf` is a valid writable buffer of its length.
            let n = unsafe { libc::recv(self.0 .0, buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n > 0 {
                changed = true;
                continue;
            }
            if n < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ENOBUFS) {
                changed = true;
                continue;
            }
            return changed;
        }
    }
}
