//! Builders of well-formed test frames (pods' TCP/UDP/ICMP, ARP, VXLAN as
//! Linux's `vxlan` device sends it), for `selftest`, the tests and the
//! benchmarks. Built with `etherparse`, independently of the switch's own
//! packet views, so a bug in one is caught by the other.

use etherparse::{PacketBuilder, TcpHeader};
use std::net::Ipv4Addr;

/// TCP flag bits.
pub mod tcp {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
}

/// Link-layer addresses of a frame.
#[derive(Clone, Copy, Debug)]
pub struct L2 {
    pub src: [u8; 6],
    pub dst: [u8; 6],
}

/// An IPv4 address as the host-order integer the tables use.
pub fn ip(s: &str) -> u32 {
    u32::from(s.parse::<Ipv4Addr>().unwrap_or(Ipv4Addr::UNSPECIFIED))
}

fn octets(ip: u32) -> [u8; 4] {
    ip.to_be_bytes()
}

/// A TCP segment with `flags` (see [`tcp`]) and `payload`, TTL 64.
pub fn tcp(l2: L2, src: (u32, u16), dst: (u32, u16), flags: u8, payload: &[u8]) -> Vec<u8> {
    tcp_seq(l2, src, dst, flags, 1000, 0, payload)
}

/// A TCP segment with explicit sequence and acknowledgement numbers.
pub fn tcp_seq(
    l2: L2,
    src: (u32, u16),
    dst: (u32, u16),
    flags: u8,
    seq: u32,
    ack: u32,
    payload: &[u8],
) -> Vec<u8> {
    let mut header = TcpHeader::new(src.1, dst.1, seq, 64240);
    header.fin = flags & tcp::FIN != 0;
    header.syn = flags & tcp::SYN != 0;
    header.rst = flags & tcp::RST != 0;
    header.psh = flags & tcp::PSH != 0;
    header.ack = flags & tcp::ACK != 0;
    header.acknowledgment_number = ack;
    let builder = PacketBuilder::ethernet2(l2.src, l2.dst)
        .ipv4(octets(src.0), octets(dst.0), 64)
        .tcp_header(header);
    let mut out = Vec::with_capacity(builder.size(payload.len()));
    // Writing into a Vec cannot fail for a well-formed header.
    let _ = builder.write(&mut out, payload);
    out
}

/// A UDP datagram, TTL 64.
pub fn udp(l2: L2, src: (u32, u16), dst: (u32, u16), payload: &[u8]) -> Vec<u8> {
    let builder = PacketBuilder::ethernet2(l2.src, l2.dst)
        .ipv4(octets(src.0), octets(dst.0), 64)
        .udp(src.1, dst.1);
    let mut out = Vec::with_capacity(builder.size(payload.len()));
    let _ = builder.write(&mut out, payload);
    out
}

/// An ICMP echo request.
pub fn ping(l2: L2, src: u32, dst: u32, ident: u16, seq: u16) -> Vec<u8> {
    let builder = PacketBuilder::ethernet2(l2.src, l2.dst)
        .ipv4(octets(src), octets(dst), 64)
        .icmpv4_echo_request(ident, seq);
    let payload = [0x42u8; 32];
    let mut out = Vec::with_capacity(builder.size(payload.len()));
    let _ = builder.write(&mut out, &payload);
    out
}

/// An ICMP echo reply.
pub fn pong(l2: L2, src: u32, dst: u32, ident: u16, seq: u16) -> Vec<u8> {
    let builder = PacketBuilder::ethernet2(l2.src, l2.dst)
        .ipv4(octets(src), octets(dst), 64)
        .icmpv4_echo_reply(ident, seq);
    let payload = [0x42u8; 32];
    let mut out = Vec::with_capacity(builder.size(payload.len()));
    let _ = builder.write(&mut out, &payload);
    out
}

/// An ICMP destination-unreachable (`code`) from `src` to `dst` quoting the
/// IPv4 header and first 8 payload bytes of `quoted` (an Ethernet frame).
pub fn icmp_unreachable(l2: L2, src: u32, dst: u32, code: u8, quoted: &[u8]) -> Vec<u8> {
    let ihl = usize::from(quoted.get(14).copied().unwrap_or(0x45) & 0x0f) * 4;
    let quote = &quoted[14..(14 + ihl + 8).min(quoted.len())];
    let builder = PacketBuilder::ethernet2(l2.src, l2.dst)
        .ipv4(octets(src), octets(dst), 64)
        .icmpv4(etherparse::Icmpv4Type::DestinationUnreachable(
            etherparse::icmpv4::DestUnreachableHeader::from_values(code, 0)
                .unwrap_or(etherparse::icmpv4::DestUnreachableHeader::Port),
        ));
    let mut out = Vec::with_capacity(builder.size(quote.len()));
    let _ = builder.write(&mut out, quote);
    out
}

/// An ARP request from `sender` asking for `target`.
pub fn arp_request(src_mac: [u8; 6], sender: u32, target: u32) -> Vec<u8> {
    let mut f = Vec::with_capacity(42);
    f.extend_from_slice(&[0xff; 6]);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&octets(sender));
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&octets(target));
    f
}

/// `inner` encapsulated the way Linux's `vxlan` device sends it: outer UDP
/// to 4789 with checksum 0, VXLAN flags 0x08, `vni`.
pub fn vxlan(l2: L2, src: u32, dst: u32, sport: u16, vni: u32, inner: &[u8]) -> Vec<u8> {
    let mut payload = Vec::with_capacity(8 + inner.len());
    payload.extend_from_slice(&[0x08, 0, 0, 0]);
    payload.extend_from_slice(&(vni << 8).to_be_bytes());
    payload.extend_from_slice(inner);
    let mut out = udp(l2, (src, sport), (dst, 4789), &payload);
    // Linux leaves the outer UDP checksum 0 for IPv4 VXLAN.
    out[14 + 20 + 6] = 0;
    out[14 + 20 + 7] = 0;
    out
}

/// Splits an Ethernet/IPv4 frame (options-free header at byte 14) into IPv4
/// fragments of IP ID `id` carrying at most `size` payload bytes each
/// (rounded down to a multiple of 8), as a sender's stack does. A frame
/// that fits is returned whole.
pub fn fragment(frame: &[u8], id: u16, size: usize) -> Vec<Vec<u8>> {
    let (head, payload) = frame.split_at(34);
    let total = usize::from(u16::from_be_bytes([frame[16], frame[17]])) - 20;
    let payload = &payload[..total];
    let size = (size / 8).max(1) * 8;
    let mut out = Vec::new();
    let mut offset = 0;
    while offset < payload.len() {
        let end = (offset + size).min(payload.len());
        let mut f = head.to_vec();
        f.extend_from_slice(&payload[offset..end]);
        let len = u16::try_from(20 + end - offset).unwrap_or(u16::MAX);
        f[16..18].copy_from_slice(&len.to_be_bytes());
        f[18..20].copy_from_slice(&id.to_be_bytes());
        let more = if end < payload.len() { 0x2000 } else { 0 };
        let word = more | u16::try_from(offset / 8).unwrap_or(0x1fff);
        f[20..22].copy_from_slice(&word.to_be_bytes());
        refill_ip_checksum(&mut f);
        out.push(f);
        offset = end;
    }
    out
}

/// Recomputes the IPv4 header checksum of an Ethernet frame in place, for
/// frames a test has edited (even into nonsense: only the header length
/// nibble and the frame's length are trusted).
pub fn refill_ip_checksum(frame: &mut [u8]) {
    let ihl = usize::from(frame.get(14).copied().unwrap_or(0x45) & 0x0f) * 4;
    let end = (14 + ihl.max(20)).min(frame.len());
    if end < 26 {
        return;
    }
    frame[24] = 0;
    frame[25] = 0;
    let mut sum = 0u32;
    for chunk in frame[14..end].chunks(2) {
        sum += u32::from(u16::from_be_bytes([
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
        ]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    let csum = !u16::try_from(sum).unwrap_or(0);
    frame[24..26].copy_from_slice(&csum.to_be_bytes());
}
