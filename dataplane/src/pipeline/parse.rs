//! Stage `parse`: validates a frame's headers once and records what later
//! stages need (offsets, the flow tuple, TCP flags).
//!
//! Uses: the frame bytes. Sets: `class`, `l3`, `l4`, `key`, `tcp_flags`,
//! `inner`/`inner_l3` for ICMP errors. Next: `admit`; malformed frames are
//! dropped with their reason here, so no later stage sees a bad length.

use tables::flow::FlowKey;

use super::{pending, Class, Ctx, Meta, Verdict};
use crate::counters::DropReason;
use crate::frame::FramePool;
use crate::wire::ethernet::{self, EthernetFrame};
use crate::wire::icmp;
use crate::wire::ipv4::{self, Ipv4Packet};
use crate::wire::{IcmpPacket, TcpPacket, UdpPacket};

/// What parsing a frame found. Offsets are from the start of the frame.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Parsed {
    pub class: Class,
    pub l3: u16,
    pub l4: u16,
    pub key: FlowKey,
    pub tcp_flags: u8,
    pub inner: FlowKey,
    pub inner_l3: u16,
}

pub(super) fn run(_ctx: &Ctx<'_>, pool: &FramePool, metas: &mut [Meta]) {
    for m in pending(metas) {
        let result = match pool.data(m.desc) {
            Some(data) => parse_frame(data),
            None => Err(DropReason::Truncated),
        };
        match result {
            Ok(p) => apply(m, &p, 0),
            Err(reason) => m.verdict = Verdict::Drop(reason),
        }
    }
}

/// Copies a parse result into the packet's metadata; `base` is added to
/// every offset (the start of an inner frame within the buffer).
pub(super) fn apply(m: &mut Meta, p: &Parsed, base: u16) {
    m.class = p.class;
    m.l3 = p.l3 + base;
    m.l4 = p.l4 + base;
    m.key = p.key;
    m.tcp_flags = p.tcp_flags;
    m.inner = p.inner;
    m.inner_l3 = p.inner_l3 + base;
}

/// Parses an Ethernet frame carrying ARP or IPv4 (TCP, UDP, SCTP, ICMP echo
/// or an ICMP error). Never panics; every rejection names its reason.
#[inline]
pub fn parse_frame(data: &[u8]) -> Result<Parsed, DropReason> {
    let eth = EthernetFrame::new_checked(data).map_err(|_| DropReason::Truncated)?;
    if eth.vlan_id().is_some() {
        return Err(DropReason::VlanTagged);
    }
    let l3 = eth.header_len();
    match eth.ethertype() {
        ethernet::ethertype::ARP => Ok(Parsed {
            class: Class::Arp,
            l3: off(l3)?,
            ..Parsed::default()
        }),
        ethernet::ethertype::IPV4 => parse_ipv4(data, l3),
        _ => Err(DropReason::UnknownEthertype),
    }
}

fn off(n: usize) -> Result<u16, DropReason> {
    u16::try_from(n).map_err(|_| DropReason::Truncated)
}

#[inline]
fn parse_ipv4(data: &[u8], l3: usize) -> Result<Parsed, DropReason> {
    let ip = Ipv4Packet::new_checked(data.get(l3..).unwrap_or_default())
        .map_err(|_| DropReason::BadIpHeader)?;
    if ip.has_options() {
        return Err(DropReason::IpOptions);
    }
    if !ip.verify_checksum() {
        return Err(DropReason::BadIpChecksum);
    }
    if ip.is_fragment() {
        return Err(DropReason::Fragment);
    }
    let l4 = l3 + ip.header_len();
    let mut p = Parsed {
        l3: off(l3)?,
        l4: off(l4)?,
        ..Parsed::default()
    };
    let (sport, dport) = l4_ports(ip.protocol(), ip.payload(), &mut p)?;
    p.key = FlowKey {
        src: ip.src_addr(),
        dst: ip.dst_addr(),
        sport,
        dport,
        proto: ip.protocol(),
    };
    if p.class == Class::IcmpError {
        p.inner_l3 = off(l4 + icmp::HEADER_LEN)?;
    }
    Ok(p)
}

/// The flow ports of an L4 header (ICMP echo: the identifier as both).
#[inline]
fn l4_ports(proto: u8, payload: &[u8], p: &mut Parsed) -> Result<(u16, u16), DropReason> {
    match proto {
        ipv4::protocol::TCP => {
            let tcp = TcpPacket::new_checked(payload).map_err(|_| DropReason::BadL4Header)?;
            p.tcp_flags = tcp.flags();
            Ok((tcp.src_port(), tcp.dst_port()))
        }
        ipv4::protocol::UDP => {
            let udp = UdpPacket::new_checked(payload).map_err(|_| DropReason::BadL4Header)?;
            Ok((udp.src_port(), udp.dst_port()))
        }
        ipv4::protocol::SCTP => match payload {
            // Common header: ports, verification tag, checksum.
            [a, b, c, d, _, _, _, _, _, _, _, _, ..] => {
                Ok((u16::from_be_bytes([*a, *b]), u16::from_be_bytes([*c, *d])))
            }
            _ => Err(DropReason::BadL4Header),
        },
        ipv4::protocol::ICMP => {
            let msg = IcmpPacket::new_checked(payload).map_err(|_| DropReason::BadL4Header)?;
            match msg.msg_type() {
                icmp::msg_type::ECHO_REQUEST | icmp::msg_type::ECHO_REPLY => {
                    Ok((msg.echo_ident(), msg.echo_ident()))
                }
                icmp::msg_type::DEST_UNREACHABLE | icmp::msg_type::TIME_EXCEEDED => {
                    p.class = Class::IcmpError;
                    p.inner = quoted_flow(&msg)?;
                    Ok((0, 0))
                }
                _ => Err(DropReason::UnsupportedIcmp),
            }
        }
        _ => Err(DropReason::UnsupportedProtocol),
    }
}

/// The tuple of the packet an ICMP error quotes (its IPv4 header and first
/// eight payload bytes, which hold the ports or the echo identifier).
fn quoted_flow(msg: &IcmpPacket<&[u8]>) -> Result<FlowKey, DropReason> {
    let quoted = msg.data();
    let bad = || DropReason::BadL4Header;
    let ihl = usize::from(quoted.first().ok_or_else(bad)? & 0x0f) * 4;
    if ihl != ipv4::HEADER_LEN || quoted.len() < ihl + 8 || quoted[0] >> 4 != 4 {
        return Err(bad());
    }
    let word = |at: usize| u16::from_be_bytes([quoted[at], quoted[at + 1]]);
    let addr = |at: usize| {
        u32::from_be_bytes([quoted[at], quoted[at + 1], quoted[at + 2], quoted[at + 3]])
    };
    let proto = quoted[9];
    let (sport, dport) = match proto {
        ipv4::protocol::TCP | ipv4::protocol::UDP | ipv4::protocol::SCTP => {
            (word(ihl), word(ihl + 2))
        }
        ipv4::protocol::ICMP => (word(ihl + 4), word(ihl + 4)),
        _ => return Err(DropReason::UnsupportedProtocol),
    };
    Ok(FlowKey {
        src: addr(12),
        dst: addr(16),
        sport,
        dport,
        proto,
    })
}
