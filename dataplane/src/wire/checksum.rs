//! The Internet checksum (RFC 1071) and its incremental update (RFC 1624).
//!
//! A checksum is built in two steps: accumulate ones' complement sums of the
//! pieces ([`sum`], [`pseudo_header`], joined with [`combine`]), then
//! [`finish`] (fold to 16 bits and complement). A buffer verifies when the
//! folded sum over it, checksum field included, is `0xffff`.
//!
//! Rewrites in the fast path (NAT, TTL) patch checksums with [`update16`] and
//! [`update32`] instead of summing the packet again. UDP over IPv4 is the
//! special case: a checksum of 0 means "none" and must stay 0, and a computed
//! 0 is sent as `0xffff`; [`update_udp16`] and [`update_udp32`] do both.
//!
//! Nothing here panics or allocates.

/// Ones' complement sum of `data` read as big-endian 16-bit words, the last
/// odd byte padded with zero. The result is already folded to at most
/// `0xffff`, so results of many calls can be added with [`combine`].
///
/// `data` must start at an even offset of the checksummed message for the sum
/// to join the others correctly (headers and payloads always do).
#[inline]
pub fn sum(data: &[u8]) -> u32 {
    // Summing 32-bit words into a 64-bit accumulator and folding at the end
    // gives the same residue modulo 0xffff as 16-bit words (RFC 1071, 2.(B)):
    // 2^32 and 2^16 are both 1 modulo 0xffff.
    let mut acc: u64 = 0;
    let mut words = data.chunks_exact(4);
    for w in &mut words {
        acc += u64::from(u32::from_be_bytes([w[0], w[1], w[2], w[3]]));
    }
    let mut tail = [0u8; 4];
    for (t, b) in tail.iter_mut().zip(words.remainder()) {
        *t = *b;
    }
    acc += u64::from(u32::from_be_bytes(tail));
    fold64(acc)
}

/// Folds a 64-bit accumulator to at most `0xffff` with end-around carries.
#[inline]
fn fold64(mut acc: u64) -> u32 {
    acc = (acc & 0xffff_ffff) + (acc >> 32); // < 2^33
    acc = (acc & 0xffff) + (acc >> 16); // < 0x30000
    acc = (acc & 0xffff) + (acc >> 16); // <= 0x10001
    acc = (acc & 0xffff) + (acc >> 16); // <= 0xffff
    let [.., hi, lo] = acc.to_be_bytes();
    u32::from(u16::from_be_bytes([hi, lo]))
}

/// Folds a ones' complement sum to 16 bits (end-around carries). Not
/// complemented: the checksum field holds `!fold(..)`, see [`finish`].
#[inline]
pub fn fold(mut s: u32) -> u16 {
    s = (s & 0xffff) + (s >> 16); // <= 0x1fffe
    s = (s & 0xffff) + (s >> 16); // <= 0xffff
    let [.., hi, lo] = s.to_be_bytes();
    u16::from_be_bytes([hi, lo])
}

/// Adds two ones' complement sums, keeping the carry out of bit 31.
#[inline]
pub fn combine(a: u32, b: u32) -> u32 {
    let (s, carry) = a.overflowing_add(b);
    // With a carry, `s` is at most 2^32 - 2, so adding it back cannot overflow.
    s + u32::from(carry)
}

/// The checksum field value for a complete sum: folded and complemented.
#[inline]
pub fn finish(s: u32) -> u16 {
    !fold(s)
}

/// Ones' complement sum of the IPv4 pseudo-header that TCP and UDP checksums
/// cover: source and destination address (host order), protocol and the L4
/// length (header plus payload).
#[inline]
pub fn pseudo_header(src: u32, dst: u32, proto: u8, len: u16) -> u32 {
    (src >> 16) + (src & 0xffff) + (dst >> 16) + (dst & 0xffff) + u32::from(proto) + u32::from(len)
}

/// The checksum after one 16-bit word of the covered data changes from `old`
/// to `new` (RFC 1624, eqn. 3: `HC' = ~(~HC + ~m + m')`).
///
/// For a checksum that a full computation produced, the result equals a full
/// recomputation exactly. Not for UDP checksums, see [`update_udp16`].
#[inline]
pub fn update16(csum: u16, old: u16, new: u16) -> u16 {
    !fold(u32::from(!csum) + u32::from(!old) + u32::from(new))
}

/// [`update16`] for a 32-bit field (an IPv4 address, in host order): both of
/// its 16-bit words change at once. Use it on the IPv4 header checksum and on
/// TCP/UDP checksums, whose pseudo-header carries the addresses.
#[inline]
pub fn update32(csum: u16, old: u32, new: u32) -> u16 {
    let (old_hi, old_lo) = halves(old);
    let (new_hi, new_lo) = halves(new);
    !fold(
        u32::from(!csum)
            + u32::from(!old_hi)
            + u32::from(!old_lo)
            + u32::from(new_hi)
            + u32::from(new_lo),
    )
}

/// [`update16`] for a UDP checksum over IPv4: 0 ("no checksum") stays 0, and
/// a result of 0 is sent as `0xffff`, as a full computation would send it.
#[inline]
pub fn update_udp16(csum: u16, old: u16, new: u16) -> u16 {
    if csum == 0 {
        return 0;
    }
    nonzero(update16(csum, old, new))
}

/// [`update32`] for a UDP checksum over IPv4, with the rules of
/// [`update_udp16`].
#[inline]
pub fn update_udp32(csum: u16, old: u32, new: u32) -> u16 {
    if csum == 0 {
        return 0;
    }
    nonzero(update32(csum, old, new))
}

/// A computed UDP checksum as sent: 0 is reserved for "none", so 0 becomes
/// `0xffff` (the same value in ones' complement).
#[inline]
pub fn nonzero(csum: u16) -> u16 {
    if csum == 0 {
        0xffff
    } else {
        csum
    }
}

/// The high and low 16-bit words of `v`.
#[inline]
fn halves(v: u32) -> (u16, u16) {
    let [a, b, c, d] = v.to_be_bytes();
    (u16::from_be_bytes([a, b]), u16::from_be_bytes([c, d]))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference: 16-bit words, one at a time (RFC 1071, 4.1).
    fn naive(data: &[u8]) -> u16 {
        let mut s: u64 = 0;
        for pair in data.chunks(2) {
            let hi = pair[0];
            let lo = pair.get(1).copied().unwrap_or(0);
            s += u64::from(u16::from_be_bytes([hi, lo]));
        }
        while s > 0xffff {
            s = (s & 0xffff) + (s >> 16);
        }
        u16::try_from(s).unwrap()
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071, 3: the words 0001 f203 f4f5 f6f7 sum to 0xddf2.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(sum(&data)), 0xddf2);
        assert_eq!(finish(sum(&data)), !0xddf2);
    }

    #[test]
    fn odd_lengths_pad_with_zero() {
        assert_eq!(fold(sum(&[0xab])), 0xab00);
        assert_eq!(fold(sum(&[0x01, 0x02, 0x03])), 0x0102 + 0x0300);
        assert_eq!(fold(sum(&[])), 0);
    }

    #[test]
    fn combine_keeps_the_carry() {
        assert_eq!(combine(u32::MAX, 1), 1);
        assert_eq!(fold(combine(0xffff, 0x0001)), 0x0001);
    }

    #[test]
    fn udp_zero_stays_zero_and_computed_zero_is_ffff() {
        assert_eq!(update_udp16(0, 0x1234, 0x4321), 0);
        assert_eq!(update_udp32(0, 0x0a00_0001, 0x0a00_0002), 0);
        // Raising a word by the complement of the checksum makes the sum
        // 0xffff, a computed checksum of 0, which UDP sends as 0xffff.
        assert_eq!(update16(0x0001, 0x0000, 0x0001), 0x0000);
        assert_eq!(update_udp16(0x0001, 0x0000, 0x0001), 0xffff);
    }

    proptest::proptest! {
        #[test]
        fn sum_matches_naive(data in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            proptest::prop_assert_eq!(fold(sum(&data)), naive(&data));
        }

        #[test]
        fn update16_matches_recomputation(
            mut data in proptest::collection::vec(proptest::num::u8::ANY, 4..64),
            word in proptest::num::usize::ANY,
            new in proptest::num::u16::ANY,
        ) {
            // A nonzero first word, as every header has (version, ports).
            data[0] |= 0x40;
            let at = 2 * (1 + word % (data.len() / 2 - 1));
            let before = finish(sum(&data));
            let old = u16::from_be_bytes([data[at], data[at + 1]]);
            data[at..at + 2].copy_from_slice(&new.to_be_bytes());
            proptest::prop_assert_eq!(update16(before, old, new), finish(sum(&data)));
        }
    }

    /// The NAT property: rewriting addresses and ports of etherparse-built
    /// packets with incremental updates gives exactly the packet etherparse
    /// builds with the new addresses and ports (a full recomputation).
    mod nat {
        use super::super::*;
        use crate::wire::ipv4::{protocol, Ipv4Packet};
        use crate::wire::{TcpPacket, UdpPacket};
        use proptest::prelude::*;

        #[derive(Debug, Clone, Copy)]
        struct Flow {
            src: u32,
            dst: u32,
            sport: u16,
            dport: u16,
        }

        fn arb_flow() -> impl Strategy<Value = Flow> {
            any::<(u32, u32, u16, u16)>().prop_map(|(src, dst, sport, dport)| Flow {
                src,
                dst,
                sport,
                dport,
            })
        }

        fn ip(flow: Flow, ttl: u8) -> etherparse::PacketBuilderStep<etherparse::IpHeaders> {
            etherparse::PacketBuilder::ipv4(flow.src.to_be_bytes(), flow.dst.to_be_bytes(), ttl)
        }

        fn tcp(flow: Flow, ttl: u8, seq: u32, payload: &[u8]) -> Vec<u8> {
            let mut bytes = Vec::new();
            ip(flow, ttl)
                .tcp(flow.sport, flow.dport, seq, 64_240)
                .ack(seq.rotate_left(7))
                .write(&mut bytes, payload)
                .unwrap();
            bytes
        }

        fn udp(flow: Flow, ttl: u8, payload: &[u8], with_checksum: bool) -> Vec<u8> {
            let mut bytes = Vec::new();
            ip(flow, ttl)
                .udp(flow.sport, flow.dport)
                .write(&mut bytes, payload)
                .unwrap();
            if !with_checksum {
                bytes[26..28].fill(0);
            }
            bytes
        }

        /// Rewrites `packet` to `to` the way the NAT stage does: set each
        /// field and patch the checksums it is covered by.
        fn rewrite(packet: &mut [u8], to: Flow) {
            let mut ip = Ipv4Packet::new_checked(packet).unwrap();
            let (src, dst) = (ip.src_addr(), ip.dst_addr());
            let ip_csum = update32(update32(ip.checksum(), src, to.src), dst, to.dst);
            ip.set_src_addr(to.src);
            ip.set_dst_addr(to.dst);
            ip.set_checksum(ip_csum);
            match ip.protocol() {
                protocol::TCP => {
                    let mut tcp = TcpPacket::new_checked(ip.payload_mut()).unwrap();
                    let mut csum = update32(tcp.checksum(), src, to.src);
                    csum = update32(csum, dst, to.dst);
                    csum = update16(csum, tcp.src_port(), to.sport);
                    csum = update16(csum, tcp.dst_port(), to.dport);
                    tcp.set_src_port(to.sport);
                    tcp.set_dst_port(to.dport);
                    tcp.set_checksum(csum);
                }
                protocol::UDP => {
                    let mut udp = UdpPacket::new_checked(ip.payload_mut()).unwrap();
                    let mut csum = update_udp32(udp.checksum(), src, to.src);
                    csum = update_udp32(csum, dst, to.dst);
                    csum = update_udp16(csum, udp.src_port(), to.sport);
                    csum = update_udp16(csum, udp.dst_port(), to.dport);
                    udp.set_src_port(to.sport);
                    udp.set_dst_port(to.dport);
                    udp.set_checksum(csum);
                }
                other => panic!("test built protocol {other}"),
            }
        }

        /// Every checksum in `packet` verifies.
        fn verifies(packet: &[u8]) -> bool {
            let ip = Ipv4Packet::new_checked(packet).unwrap();
            let (src, dst) = (ip.src_addr(), ip.dst_addr());
            let l4_len = u16::try_from(ip.payload().len()).unwrap();
            ip.verify_checksum()
                && match ip.protocol() {
                    protocol::TCP => TcpPacket::new_checked(ip.payload())
                        .unwrap()
                        .verify_checksum(src, dst, l4_len),
                    _ => UdpPacket::new_checked(ip.payload())
                        .unwrap()
                        .verify_checksum(src, dst),
                }
        }

        proptest! {
            #[test]
            fn tcp_incremental_equals_recomputed(
                from in arb_flow(),
                to in arb_flow(),
                (ttl, seq) in any::<(u8, u32)>(),
                payload in proptest::collection::vec(any::<u8>(), 0..200),
            ) {
                let mut packet = tcp(from, ttl, seq, &payload);
                rewrite(&mut packet, to);
                prop_assert_eq!(&packet, &tcp(to, ttl, seq, &payload));
                prop_assert!(verifies(&packet));
            }

            #[test]
            fn udp_incremental_equals_recomputed(
                from in arb_flow(),
                to in arb_flow(),
                ttl in any::<u8>(),
                with_checksum in any::<bool>(),
                payload in proptest::collection::vec(any::<u8>(), 0..200),
            ) {
                let mut packet = udp(from, ttl, &payload, with_checksum);
                rewrite(&mut packet, to);
                prop_assert_eq!(&packet, &udp(to, ttl, &payload, with_checksum));
                prop_assert!(verifies(&packet));
            }

            #[test]
            fn udp_near_zero_checksums_stay_exact(
                from in arb_flow(),
                to_sport in any::<u16>(),
                payload in proptest::collection::vec(any::<u8>(), 0..16),
            ) {
                // Pick the new destination port that makes the recomputed
                // checksum 0 (sent as 0xffff): the incremental path must agree.
                let mut probe = udp(Flow { dport: 0, sport: to_sport, ..from }, 64, &payload, true);
                probe[26..28].fill(0);
                let rest = fold(combine(
                    pseudo_header(from.src, from.dst, protocol::UDP, u16::try_from(probe.len() - 20).unwrap()),
                    sum(&probe[20..]),
                ));
                let to = Flow { sport: to_sport, dport: !rest, ..from };
                let mut packet = udp(from, 64, &payload, true);
                rewrite(&mut packet, to);
                prop_assert_eq!(&packet[26..28], &[0xff, 0xff]);
                prop_assert_eq!(&packet, &udp(to, 64, &payload, true));
            }
        }
    }
}
