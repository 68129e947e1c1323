//! Stage `reject`: answers what kube-proxy rejects, so clients see
//! "connection refused" at once instead of a timeout.
//!
//! Uses: `reject` (set by `balance`: a service port without endpoints, or a
//! cluster IP port no service declares), the frame's headroom. Rewrites the
//! frame in place into the answer from the address the client tried: a TCP
//! segment gets a RST (RFC 793's reset generation, as the kernel's
//! `nf_send_reset`), anything else an ICMP destination unreachable (port
//! unreachable) quoting the packet, at most 576 bytes in all as Linux's
//! `icmp_send` sends. A RST is never answered. The reason is counted as a
//! drop, and `rejects` counts the answers. Next: the answer goes back out of
//! the port the packet came in on (`Tx(in_port)`), or, for a packet that
//! came through the overlay, to `forward` to be encapsulated back.

use tables::flow::FlowKey;

use super::{pending, Class, Ctx, Frag, Meta, Verdict};
use crate::frame::{Desc, FramePool};
use crate::wire::ethernet::{self, EthernetFrame, EthernetRepr};
use crate::wire::icmp::{self, IcmpPacket};
use crate::wire::ipv4::{self, Ipv4Packet, Ipv4Repr};
use crate::wire::tcp::{self, TcpPacket};

/// The largest ICMP error Linux sends (RFC 1812's 576-byte minimum MTU).
const ICMP_ERROR_MAX: usize = 576;
/// Headers put in front of the quoted packet: Ethernet, IPv4, ICMP.
const ICMP_ERROR_HEADERS: usize = ethernet::HEADER_LEN + ipv4::HEADER_LEN + icmp::HEADER_LEN;
const PORT_UNREACHABLE: u8 = 3;
const FRAGMENTATION_NEEDED: u8 = 4;
const TTL: u8 = 64;

pub(super) fn run(ctx: &Ctx<'_>, pool: &mut FramePool, metas: &mut [Meta]) {
    for m in pending(metas) {
        let Some(reason) = m.reject else {
            continue;
        };
        m.frag = Frag::Whole;
        let answered = if m.key.proto == ipv4::protocol::TCP {
            if m.tcp_flags & tcp::flags::RST != 0 {
                None
            } else {
                reset(pool, m)
            }
        } else {
            unreachable(pool, m, Unreachable::Port)
        };
        match answered {
            Some(()) => {
                // The answer is a small packet of the switch's own, fully
                // checksummed, whatever the sender's frame left to finish.
                pool.set_vnet(m.desc, crate::wire::vnet::VnetHeader::default());
                m.partial_csum = false;
                ctx.counters.count_drop(reason);
                ctx.counters.rejects.add(1);
                m.class = Class::Flow;
                m.nat = None;
                m.tracked = true;
                if !m.overlay {
                    m.verdict = Verdict::Tx(ctx.in_port);
                }
            }
            // Not answerable (a RST, or no room): dropped.
            None => m.verdict = Verdict::Drop(reason),
        }
    }
}

/// Swaps the frame's MAC addresses: the answer goes back to the sender.
fn turn_around(frame: &mut [u8]) {
    let mut eth = EthernetFrame::new_unchecked(frame);
    let (src, dst) = (eth.src_addr(), eth.dst_addr());
    eth.set_src_addr(dst);
    eth.set_dst_addr(src);
}

/// Turns a TCP segment into the RST that answers it.
fn reset(pool: &mut FramePool, m: &mut Meta) -> Option<()> {
    let (l3, l4) = (usize::from(m.l3), usize::from(m.l4));
    let frame = pool.data_mut(m.desc)?;
    let (seq, ack) = {
        let ip = Ipv4Packet::new_unchecked(frame.get(l3..)?);
        let seg = TcpPacket::new_checked(ip.payload()).ok()?;
        let data = seg.payload().len() as u64;
        let flags = seg.flags();
        if flags & tcp::flags::ACK != 0 {
            (Some(seg.ack_number()), None)
        } else {
            let used = data
                + u64::from(flags & tcp::flags::SYN != 0)
                + u64::from(flags & tcp::flags::FIN != 0);
            let ack = u64::from(seg.seq_number()).wrapping_add(used);
            // Sequence numbers are modulo 2^32.
            (None, Some(u32::try_from(ack & 0xffff_ffff).unwrap_or(0)))
        }
    };
    turn_around(frame);
    let answer = m.key.reversed();
    let seg = frame.get_mut(l4..l4 + tcp::HEADER_LEN)?;
    let mut t = TcpPacket::new_unchecked(&mut *seg);
    t.set_src_port(answer.sport);
    t.set_dst_port(answer.dport);
    t.set_seq_number(seq.unwrap_or(0));
    t.set_ack_number(ack.unwrap_or(0));
    t.set_header_len(u8::try_from(tcp::HEADER_LEN).ok()?);
    t.set_flags(tcp::flags::RST | if ack.is_some() { tcp::flags::ACK } else { 0 });
    t.set_window_len(0);
    t.set_urgent_at(0);
    t.fill_checksum(answer.src, answer.dst);
    Ipv4Repr {
        src_addr: answer.src,
        dst_addr: answer.dst,
        protocol: ipv4::protocol::TCP,
        ttl: TTL,
        dscp_ecn: 0,
        ident: 0,
        dont_frag: true,
        payload_len: tcp::HEADER_LEN,
    }
    .emit(frame.get_mut(l3..)?)
    .ok()?;
    m.desc.len = u32::try_from(l4 + tcp::HEADER_LEN).ok()?;
    m.key = answer;
    m.tcp_flags = tcp::flags::RST;
    Some(())
}

/// Which ICMP destination unreachable to answer with.
#[derive(Clone, Copy)]
pub(super) enum Unreachable {
    /// Port unreachable, from the address the client tried.
    Port,
    /// Fragmentation needed (RFC 1191), from `from` (the node), with the
    /// next hop's MTU.
    FragmentationNeeded { from: u32, mtu: u16 },
}

/// Turns a packet into the ICMP destination unreachable that answers it:
/// new Ethernet, IPv4 and ICMP headers in the headroom in front of the
/// packet's own IPv4 header, which stays where it is as the quoted
/// datagram.
pub(super) fn unreachable(pool: &mut FramePool, m: &mut Meta, kind: Unreachable) -> Option<()> {
    let l3 = usize::from(m.l3);
    let (src_mac, dst_mac, quoted) = {
        let frame = pool.data(m.desc)?;
        let eth = EthernetFrame::new_unchecked(frame);
        let ip = Ipv4Packet::new_unchecked(frame.get(l3..)?);
        let quoted =
            usize::from(ip.total_len()).min(ICMP_ERROR_MAX - ipv4::HEADER_LEN - icmp::HEADER_LEN);
        (eth.dst_addr(), eth.src_addr(), quoted)
    };
    // The answer starts `back` bytes before the current frame.
    let back = ICMP_ERROR_HEADERS.checked_sub(l3)?;
    let back32 = u32::try_from(back).ok()?;
    if m.desc.headroom() < back32 {
        return None;
    }
    let desc = Desc {
        addr: m.desc.addr - u64::from(back32),
        len: u32::try_from(ICMP_ERROR_HEADERS + quoted).ok()?,
    };
    let frame = pool.data_mut(desc)?;
    let (src, code, mtu) = match kind {
        Unreachable::Port => (m.key.dst, PORT_UNREACHABLE, 0),
        Unreachable::FragmentationNeeded { from, mtu } => (from, FRAGMENTATION_NEEDED, mtu),
    };
    let answer = FlowKey {
        src,
        dst: m.key.src,
        sport: 0,
        dport: 0,
        proto: ipv4::protocol::ICMP,
    };
    EthernetRepr {
        dst_addr: dst_mac,
        src_addr: src_mac,
        ethertype: ethernet::ethertype::IPV4,
    }
    .emit(frame)
    .ok()?;
    let l4 = ethernet::HEADER_LEN + ipv4::HEADER_LEN;
    Ipv4Repr {
        src_addr: answer.src,
        dst_addr: answer.dst,
        protocol: ipv4::protocol::ICMP,
        ttl: TTL,
        dscp_ecn: 0,
        ident: 0,
        dont_frag: false,
        payload_len: icmp::HEADER_LEN + quoted,
    }
    .emit(frame.get_mut(ethernet::HEADER_LEN..)?)
    .ok()?;
    let msg = frame.get_mut(l4..)?;
    msg.get_mut(..icmp::HEADER_LEN)?.fill(0);
    // The second word: unused, or (RFC 1191) the next-hop MTU in its low half.
    msg[6..8].copy_from_slice(&mtu.to_be_bytes());
    let mut icmp = IcmpPacket::new_unchecked(msg);
    icmp.set_msg_type(icmp::msg_type::DEST_UNREACHABLE);
    icmp.set_code(code);
    icmp.fill_checksum();
    m.desc = desc;
    m.l3 = u16::try_from(ethernet::HEADER_LEN).ok()?;
    m.l4 = u16::try_from(l4).ok()?;
    m.key = answer;
    Some(())
}
