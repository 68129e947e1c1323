//! In-place address translation with incremental checksum updates
//! (RFC 1624): the IPv4 header checksum and the L4 checksum are adjusted for
//! exactly the words that change, so NAT costs the same for any packet size.
//! SCTP's CRC32c cannot be updated incrementally and is recomputed; ICMP
//! errors (rare) get their ICMP checksum recomputed after the quoted header
//! is translated.

use tables::flow::FlowKey;

use crate::wire::checksum::{self, update16, update32, update_udp16, update_udp32};
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

/// Rewrites the addresses of the IPv4 header at `l3`.
fn rewrite_ip(frame: &mut [u8], l3: usize, from: &FlowKey, to: &FlowKey) {
    let Some(ip_bytes) = frame.get_mut(l3..) else {
        return;
    };
    let mut ip = Ipv4Packet::new_unchecked(ip_bytes);
    let mut csum = ip.checksum();
    if from.src != to.src {
        csum = update32(csum, from.src, to.src);
        ip.set_src_addr(to.src);
    }
    if from.dst != to.dst {
        csum = update32(csum, from.dst, to.dst);
        ip.set_dst_addr(to.dst);
    }
    ip.set_checksum(csum);
}

/// Rewrites ports (and the L4 checksum, which covers the addresses through
/// the pseudo-header) of one L4 header in `l4`.
fn rewrite_l4(l4: &mut [u8], from: &FlowKey, to: &FlowKey) {
    match from.proto {
        ipv4::protocol::TCP => rewrite_ports(l4, 16, update16, update32, from, to),
        ipv4::protocol::UDP => rewrite_ports(l4, 6, update_udp16, update_udp32, from, to),
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
/// also covers the addresses through the pseudo-header) with the protocol's
/// incremental update rules.
fn rewrite_ports(
    l4: &mut [u8],
    csum_at: usize,
    up16: fn(u16, u16, u16) -> u16,
    up32: fn(u16, u32, u32) -> u16,
    from: &FlowKey,
    to: &FlowKey,
) {
    let Some(c) = get16(l4, csum_at) else { return };
    let c = up32(up32(c, from.src, to.src), from.dst, to.dst);
    let c = up16(up16(c, from.sport, to.sport), from.dport, to.dport);
    put16(l4, 0, to.sport);
    put16(l4, 2, to.dport);
    put16(l4, csum_at, c);
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

    #[test]
    fn crc32c_matches_the_rfc_3720_vector() {
        // RFC 3720 B.4: 32 bytes of zeros.
        assert_eq!(crc32c(&[0u8; 32]), 0x8a91_36aa);
        assert_eq!(crc32c(b"123456789"), 0xe306_9283);
    }
}
