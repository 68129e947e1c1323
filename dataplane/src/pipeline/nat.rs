//! In-place address translation with incremental checksum updates
//! (RFC 1624): the IPv4 header checksum and the L4 checksum are adjusted for
//! exactly the words that change, so NAT costs the same for any packet size.
//! SCTP's CRC32c cannot be updated incrementally and is recomputed; ICMP
//! errors (rare) get their ICMP checksum recomputed after the quoted header
//! is translated.

use tables::flow::FlowKey;

use crate::wire::checksum::{self, update16, update32};
use crate::wire::ipv4::{self, Ipv4Packet};

/// Rewrites the packet at `l3`/`l4` of `frame`, whose tuple is `from`, to the
/// tuple `to`. The caller has validated the headers (`parse`).
pub fn rewrite(frame: &mut [u8], l3: usize, l4: usize, from: &FlowKey, to: &FlowKey) {
    rewrite_ip(frame, l3, from, to);
    let Some(l4_bytes) = frame.get_mut(l4..) else {
        return;
    };
    rewrite_l4(l4_bytes, from, to);
}

/// Rewrites a TCP or UDP packet whose L4 checksum is partial: the field
/// holds the folded pseudo-header sum, not a checksum (the kernel's
/// CHECKSUM_PARTIAL, left for the egress to complete over the segment). As
/// `inet_proto_csum_replace4` does for it, the address changes are added to
/// the sum without complementing it, and port changes leave it alone (the
/// ports are summed when the checksum is completed).
pub fn rewrite_partial(frame: &mut [u8], l3: usize, l4: usize, from: &FlowKey, to: &FlowKey) {
    rewrite_ip(frame, l3, from, to);
    let csum_at = match from.proto {
        ipv4::protocol::TCP => 16,
        ipv4::protocol::UDP => 6,
        // parse admits partial checksums on TCP and UDP only.
        _ => return,
    };
    let Some(h) = frame.get_mut(l4..l4 + csum_at + 2) else {
        return;
    };
    let sum = u16::from_be_bytes([h[csum_at], h[csum_at + 1]]);
    let sum = !apply_delta(!sum, delta32(from.src, to.src) + delta32(from.dst, to.dst));
    let ([s0, s1], [d0, d1]) = (to.sport.to_be_bytes(), to.dport.to_be_bytes());
    (h[0], h[1], h[2], h[3]) = (s0, s1, d0, d1);
    [h[csum_at], h[csum_at + 1]] = sum.to_be_bytes();
}

/// Rewrites the addresses of the IPv4 header at `l3` only: a later fragment
/// of a translated datagram (its L4 header, ports and checksum, are in the
/// first fragment, rewritten with [`rewrite`]).
pub fn rewrite_addresses(frame: &mut [u8], l3: usize, from: &FlowKey, to: &FlowKey) {
    rewrite_ip(frame, l3, from, to);
}

/// Rewrites the addresses of the IPv4 header at `l3`.
fn rewrite_ip(frame: &mut [u8], l3: usize, from: &FlowKey, to: &FlowKey) {
    // One bounds check for the fixed header; fixed offsets after it.
    let Some(h) = frame.get_mut(l3..l3 + ipv4::HEADER_LEN) else {
        return;
    };
    let csum = u16::from_be_bytes([h[10], h[11]]);
    let csum = apply_delta(csum, delta32(from.src, to.src) + delta32(from.dst, to.dst));
    h[10..12].copy_from_slice(&csum.to_be_bytes());
    h[12..16].copy_from_slice(&to.src.to_be_bytes());
    h[16..20].copy_from_slice(&to.dst.to_be_bytes());
}

/// RFC 1624's `~m + m'` for each 16-bit half of a changed 32-bit field,
/// summed without folding (callers add a handful of these).
#[inline]
fn delta32(old: u32, new: u32) -> u32 {
    let ([a, b, c, d], [e, f, g, h]) = (old.to_be_bytes(), new.to_be_bytes());
    delta16(u16::from_be_bytes([a, b]), u16::from_be_bytes([e, f]))
        + delta16(u16::from_be_bytes([c, d]), u16::from_be_bytes([g, h]))
}

#[inline]
fn delta16(old: u16, new: u16) -> u32 {
    u32::from(!old) + u32::from(new)
}

/// HC' = ~(~HC + sum of deltas) (RFC 1624 eqn. 3), folded once.
#[inline]
fn apply_delta(csum: u16, delta: u32) -> u16 {
    let mut sum = u32::from(!csum) + delta;
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !u16::try_from(sum).unwrap_or(0xffff)
}

/// Rewrites ports (and the L4 checksum, which covers the addresses through
/// the pseudo-header) of one L4 header in `l4`.
fn rewrite_l4(l4: &mut [u8], from: &FlowKey, to: &FlowKey) {
    match from.proto {
        ipv4::protocol::TCP => rewrite_ports(l4, 16, false, from, to),
        ipv4::protocol::UDP => rewrite_ports(l4, 6, true, from, to),
        ipv4::protocol::ICMP => {
            // Echo request and reply: the identifier is both "ports".
            let Some(c) = get16(l4, 2) else { return };
            let (old, new) = (from.sport, to.sport);
            put16(l4, 4, new);
            put16(l4, 2, update16(c, old, new));
        }
        ipv4::protocol::SCTP => {
            if from.sport == to.sport && from.dport == to.dport {
                return; // addresses are not covered by SCTP's checksum
            }
            put16(l4, 0, to.sport);
            put16(l4, 2, to.dport);
            if l4.len() >= 12 {
                l4[8..12].fill(0);
                let crc = crc32c(l4);
                l4[8..12].copy_from_slice(&crc.to_le_bytes());
            }
        }
        _ => {}
    }
}

/// Rewrites TCP or UDP ports and adjusts the checksum at `csum_at` (which
/// also covers the addresses through the pseudo-header), all changed words
/// summed into one update. A UDP checksum of 0 means "none" and stays 0; a
/// UDP result of 0 is sent as 0xFFFF.
fn rewrite_ports(l4: &mut [u8], csum_at: usize, udp: bool, from: &FlowKey, to: &FlowKey) {
    // One bounds check for the whole header prefix; the indexing below is
    // then provably in range.
    let Some(h) = l4.get_mut(..csum_at + 2) else {
        return;
    };
    let c = u16::from_be_bytes([h[csum_at], h[csum_at + 1]]);
    let ([s0, s1], [d0, d1]) = (to.sport.to_be_bytes(), to.dport.to_be_bytes());
    (h[0], h[1], h[2], h[3]) = (s0, s1, d0, d1);
    if udp && c == 0 {
        return;
    }
    let delta = delta32(from.src, to.src)
        + delta32(from.dst, to.dst)
        + delta16(from.sport, to.sport)
        + delta16(from.dport, to.dport);
    let mut c = apply_delta(c, delta);
    if udp && c == 0 {
        c = 0xffff;
    }
    [h[csum_at], h[csum_at + 1]] = c.to_be_bytes();
}

/// Translates an ICMP error at `l3`/`l4` whose quoted packet sits at
/// `inner_l3`: the quoted header becomes `to.reversed()` (the quoted packet
/// went the other way), the outer destination becomes `to.dst`, and the
/// outer source `to.src` if the error came from the quoted packet's
/// destination itself.
pub fn rewrite_icmp_error(
    frame: &mut [u8],
    l3: usize,
    l4: usize,
    inner_l3: usize,
    inner: &FlowKey,
    to: &FlowKey,
) {
    let outer_from = {
        let Some(b) = frame.get(l3..) else { return };
        let ip = Ipv4Packet::new_unchecked(b);
        FlowKey {
            src: ip.src_addr(),
            dst: ip.dst_addr(),
            sport: 0,
            dport: 0,
            proto: ip.protocol(),
        }
    };
    let new_inner = to.reversed();
    // The quoted header: addresses, its checksum, and ports/ids in the 8
    // bytes that follow (the L4 checksum is updated only where quoted).
    if let Some(q) = frame.get_mut(inner_l3..) {
        if q.len() >= ipv4::HEADER_LEN + 8 {
            let mut qip = Ipv4Packet::new_unchecked(&mut q[..]);
            let mut c = qip.checksum();
            c = update32(
                update32(c, inner.src, new_inner.src),
                inner.dst,
                new_inner.dst,
            );
            qip.set_src_addr(new_inner.src);
            qip.set_dst_addr(new_inner.dst);
            qip.set_checksum(c);
            let ql4 = &mut q[ipv4::HEADER_LEN..];
            match inner.proto {
                ipv4::protocol::TCP | ipv4::protocol::SCTP => {
                    put16(ql4, 0, new_inner.sport);
                    put16(ql4, 2, new_inner.dport);
                }
                ipv4::protocol::UDP => rewrite_l4(&mut ql4[..8], inner, &new_inner),
                ipv4::protocol::ICMP => rewrite_l4(&mut ql4[..8], inner, &new_inner),
                _ => {}
            }
        }
    }
    let outer_to = FlowKey {
        src: if outer_from.src == inner.dst {
            to.src
        } else {
            outer_from.src
        },
        dst: to.dst,
        ..outer_from
    };
    rewrite_ip(frame, l3, &outer_from, &outer_to);
    // The ICMP checksum covers the whole message: recompute it.
    let total = frame
        .get(l3..)
        .map(|b| usize::from(Ipv4Packet::new_unchecked(b).total_len()));
    if let Some(msg) = total.and_then(|t| frame.get_mut(l4..(l3 + t))) {
        if msg.len() >= 4 {
            msg[2..4].fill(0);
            let c = checksum::finish(checksum::sum(msg));
            msg[2..4].copy_from_slice(&c.to_be_bytes());
        }
    }
}

fn get16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

fn put16(b: &mut [u8], at: usize, v: u16) {
    if let Some(s) = b.get_mut(at..at + 2) {
        s.copy_from_slice(&v.to_be_bytes());
    }
}

/// CRC32c (Castagnoli), as SCTP uses; table-driven, reflected.
pub fn crc32c(data: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut i = 0u32;
        while i < 256 {
            let mut crc = i;
            let mut k = 0;
            while k < 8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ 0x82f6_3b78
                } else {
                    crc >> 1
                };
                k += 1;
            }
            table[i as usize] = crc;
            i += 1;
        }
        table
    };
    let mut crc = !0u32;
    for &b in data {
        crc = TABLE[((crc ^ u32::from(b)) & 0xff) as usize] ^ (crc >> 8);
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{PacketBuilder, SlicedPacket, TransportSlice};
    use proptest::prelude::*;

    fn build(udp: bool, from: &FlowKey, payload: &[u8]) -> Vec<u8> {
        let b = PacketBuilder::ethernet2([2; 6], [4; 6]).ipv4(
            from.src.to_be_bytes(),
            from.dst.to_be_bytes(),
            64,
        );
        let mut out = Vec::new();
        if udp {
            b.udp(from.sport, from.dport)
                .write(&mut out, payload)
                .unwrap();
        } else {
            b.tcp(from.sport, from.dport, 1, 1000)
                .write(&mut out, payload)
                .unwrap();
        }
        out
    }

    /// The tuples `from` and `to` of a TCP or UDP flow.
    fn keys(udp: bool, from: (u32, u32, u16, u16), to: (u32, u32, u16, u16)) -> (FlowKey, FlowKey) {
        let proto = if udp {
            ipv4::protocol::UDP
        } else {
            ipv4::protocol::TCP
        };
        let key = |t: (u32, u32, u16, u16)| FlowKey {
            src: t.0,
            dst: t.1,
            sport: t.2,
            dport: t.3,
            proto,
        };
        (key(from), key(to))
    }

    proptest! {
        /// NAT by incremental update gives exactly the checksums a full
        /// recomputation gives (IPv4 header and TCP/UDP with pseudo-header).
        #[test]
        fn incremental_nat_equals_full_recomputation(
            udp: bool,
            zero_udp_checksum: bool,
            from in (any::<u32>(), any::<u32>(), any::<u16>(), any::<u16>()),
            to in (any::<u32>(), any::<u32>(), any::<u16>(), any::<u16>()),
            payload in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let (from, to) = keys(udp, from, to);
            let mut frame = build(udp, &from, &payload);
            if udp && zero_udp_checksum {
                frame[40] = 0;
                frame[41] = 0;
            }
            rewrite(&mut frame, 14, 34, &from, &to);
            let expected = build(udp, &to, &payload);
            let sliced = SlicedPacket::from_ethernet(&frame).unwrap();
            let Some(etherparse::NetSlice::Ipv4(ip)) = sliced.net else { panic!("not IPv4") };
            let header = ip.header().to_header();
            prop_assert_eq!(header.header_checksum, header.calc_header_checksum());
            match sliced.transport {
                Some(TransportSlice::Udp(u)) if zero_udp_checksum => prop_assert_eq!(u.checksum(), 0),
                Some(TransportSlice::Udp(u)) => {
                    prop_assert_eq!(u.checksum(), u.to_header().calc_checksum_ipv4(&header, u.payload()).unwrap());
                    prop_assert_eq!(&frame[..], &expected[..]);
                }
                Some(TransportSlice::Tcp(t)) => {
                    prop_assert_eq!(t.checksum(), t.to_header().calc_checksum_ipv4(&header, t.payload()).unwrap());
                    prop_assert_eq!(&frame[..], &expected[..]);
                }
                _ => prop_assert!(false, "lost the L4 header"),
            }
        }
    }

    proptest! {
        /// A partial checksum rewritten by NAT and completed afterwards is
        /// the checksum of the translated packet: the kernel's
        /// CHECKSUM_PARTIAL handling.
        #[test]
        fn partial_checksums_stay_partial_through_nat(
            udp: bool,
            from in (any::<u32>(), any::<u32>(), any::<u16>(), any::<u16>()),
            to in (any::<u32>(), any::<u32>(), any::<u16>(), any::<u16>()),
            payload in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let (from, to) = keys(udp, from, to);
            let proto = from.proto;
            let mut frame = build(udp, &from, &payload);
            let at = if udp { 34 + 6 } else { 34 + 16 };
            let l4_len = u16::try_from(frame.len() - 34).unwrap();
            let pseudo = checksum::fold(checksum::pseudo_header(from.src, from.dst, proto, l4_len));
            frame[at..at + 2].copy_from_slice(&pseudo.to_be_bytes());
            rewrite_partial(&mut frame, 14, 34, &from, &to);
            let expected_sum = checksum::fold(checksum::pseudo_header(to.src, to.dst, proto, l4_len));
            prop_assert_eq!(u16::from_be_bytes([frame[at], frame[at + 1]]), expected_sum);
            crate::gso::complete_checksum(&mut frame).unwrap();
            let expected = build(udp, &to, &payload);
            prop_assert_eq!(&frame[..], &expected[..]);
        }
    }

    #[test]
    fn crc32c_matches_the_rfc_3720_vector() {
        // RFC 3720 B.4: 32 bytes of zeros.
        assert_eq!(crc32c(&[0u8; 32]), 0x8a91_36aa);
        assert_eq!(crc32c(b"123456789"), 0xe306_9283);
    }
}
