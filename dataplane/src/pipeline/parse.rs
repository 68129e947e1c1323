//! Stage `parse`: validates a frame's headers once and records what later
//! stages need (offsets, the flow tuple, TCP flags).
//!
//! Uses: the frame bytes. Sets: `class`, `l3`, `l4`, `key`, `tcp_flags`,
//! `inner`/`inner_l3` for ICMP errors, `frag` for fragments. Next: `admit`;
//! malformed frames are dropped with their reason here, so no later stage
//! sees a bad length.
//!
//! Fragments: a first fragment (offset 0) is parsed like a whole packet,
//! except that its L4 header only has to fit in it (the UDP length covers
//! the whole datagram); a later one has no L4 header and is classed
//! [`Class::Fragment`] with ports 0. Both must end within 64 KB, and every
//! fragment but the last must carry a multiple of 8 bytes.

use tables::flow::FlowKey;

use super::{pending, Class, Ctx, Frag, Meta, Verdict};
use crate::counters::DropReason;
use crate::frame::FramePool;
use crate::wire::ethernet::{self, EthernetFrame};
use crate::wire::icmp;
use crate::wire::ipv4::{self, Ipv4Packet};
use crate::wire::vnet::{Gso, VnetHeader};
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
    pub frag: Frag,
}

pub(super) fn run(_ctx: &Ctx<'_>, pool: &FramePool, metas: &mut [Meta]) {
    for m in pending(metas) {
        let Some(data) = pool.data(m.desc) else {
            m.verdict = Verdict::Drop(DropReason::Truncated);
            continue;
        };
        match parse_frame(data) {
            Ok(p) => {
                // Only a TAP port's frames (large chunks) carry a header.
                if m.desc.is_large() {
                    match check_offload(&pool.vnet(m.desc), data, &p) {
                        Ok(partial) => m.partial_csum = partial,
                        Err(reason) => {
                            m.verdict = Verdict::Drop(reason);
                            continue;
                        }
                    }
                }
                apply(m, &p, 0);
            }
            Err(reason) => m.verdict = Verdict::Drop(reason),
        }
    }
}

/// Checks a frame's virtio-net header against what parsing found: a TCPv4
/// GSO type only on unfragmented TCP, a partial checksum only at the TCP or
/// UDP checksum of an unfragmented packet. Returns whether the checksum is
/// partial.
pub fn check_offload(vnet: &VnetHeader, data: &[u8], p: &Parsed) -> Result<bool, DropReason> {
    let gso = vnet.check(data)?;
    let whole = p.class == Class::Flow && p.frag == Frag::Whole;
    let tcp = whole && p.key.proto == ipv4::protocol::TCP;
    match gso {
        Gso::None => {}
        Gso::TcpV4 { .. } if tcp => {}
        Gso::TcpV4 { .. } => return Err(DropReason::GsoWrongProtocol),
        Gso::TcpV6 { .. } | Gso::UdpL4 { .. } => return Err(DropReason::GsoUnsupported),
    }
    if !vnet.needs_csum() {
        return Ok(false);
    }
    let field = match p.key.proto {
        ipv4::protocol::TCP if whole => 16,
        ipv4::protocol::UDP if whole => 6,
        _ => return Err(DropReason::VnetChecksumNotL4),
    };
    if vnet.csum_start != p.l4 || vnet.csum_offset != field {
        return Err(DropReason::VnetChecksumNotL4);
    }
    Ok(true)
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
    m.frag = p.frag;
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
        ethernet::ethertype::IPV6 => Err(DropReason::Ipv6),
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
    let l4 = l3 + ip.header_len();
    if ip.is_fragment() {
        return parse_fragment(&ip, l3, l4);
    }
    // A whole packet: the path nearly every packet takes.
    let mut p = Parsed {
        l3: off(l3)?,
        l4: off(l4)?,
        ..Parsed::default()
    };
    let (sport, dport) = l4_ports(ip.protocol(), ip.payload(), false, &mut p)?;
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

/// A fragment: its place in the datagram, and the L4 header's ports for a
/// first fragment (later ones have none).
#[cold]
#[inline(never)]
fn parse_fragment<T: AsRef<[u8]>>(
    ip: &Ipv4Packet<T>,
    l3: usize,
    l4: usize,
) -> Result<Parsed, DropReason> {
    let mut p = Parsed {
        l3: off(l3)?,
        l4: off(l4)?,
        frag: fragment_of(ip)?,
        ..Parsed::default()
    };
    p.key = FlowKey {
        src: ip.src_addr(),
        dst: ip.dst_addr(),
        sport: 0,
        dport: 0,
        proto: ip.protocol(),
    };
    if let Frag::Later { .. } = p.frag {
        p.class = Class::Fragment;
        return Ok(p);
    }
    if p.key.proto == ipv4::protocol::SCTP {
        return Err(DropReason::FragmentUnsupported);
    }
    (p.key.sport, p.key.dport) =
        l4_ports(p.key.proto, ip.payload(), true, &mut p).map_err(|e| match e {
            DropReason::BadL4Header => DropReason::FragmentShortFirst,
            other => other,
        })?;
    if p.class == Class::IcmpError {
        return Err(DropReason::FragmentUnsupported);
    }
    Ok(p)
}

/// Where the packet sits in its datagram; fragments must end within 64 KB,
/// and all but the last carry a multiple of 8 bytes.
fn fragment_of<T: AsRef<[u8]>>(ip: &Ipv4Packet<T>) -> Result<Frag, DropReason> {
    let len = ip.payload().len();
    let offset = ip.frag_offset();
    let more = ip.more_frags();
    if usize::from(offset) + len > usize::from(u16::MAX) - ipv4::HEADER_LEN
        || (more && !len.is_multiple_of(8))
        || len == 0
    {
        return Err(DropReason::FragmentMalformed);
    }
    let len = u16::try_from(len).map_err(|_| DropReason::FragmentMalformed)?;
    let id = ip.ident();
    Ok(if offset == 0 {
        Frag::First { id, len }
    } else {
        Frag::Later {
            id,
            offset,
            len,
            last: !more,
        }
    })
}

/// The flow ports of an L4 header (ICMP echo: the identifier as both). In
/// a first fragment (`first`) a UDP header's length covers bytes that are
/// not in this packet.
// Always inline: on the whole-packet path `first` is a constant false.
#[inline(always)]
fn l4_ports(
    proto: u8,
    payload: &[u8],
    first: bool,
    p: &mut Parsed,
) -> Result<(u16, u16), DropReason> {
    match proto {
        ipv4::protocol::TCP => {
            let tcp = TcpPacket::new_checked(payload).map_err(|_| DropReason::BadL4Header)?;
            p.tcp_flags = tcp.flags();
            Ok((tcp.src_port(), tcp.dst_port()))
        }
        ipv4::protocol::UDP => {
            let udp = if first {
                UdpPacket::new_checked_header(payload, payload.len())
            } else {
                UdpPacket::new_checked(payload)
            }
            .map_err(|_| DropReason::BadL4Header)?;
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
