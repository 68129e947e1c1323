//! Flow keys and the flow hash shared by conntrack, Maglev and VXLAN source
//! ports.

/// A 5-tuple in host byte order. For ICMP echo both ports carry the echo
/// identifier, so the reply's tuple is the exact reverse of the request's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub src: u32,
    pub dst: u32,
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
}

impl FlowKey {
    /// The same flow seen from the other end.
    #[inline]
    pub fn reversed(&self) -> FlowKey {
        FlowKey {
            src: self.dst,
            dst: self.src,
            sport: self.dport,
            dport: self.sport,
            proto: self.proto,
        }
    }

    /// The tuple packed into two words (the hash input and the stored form).
    #[inline]
    pub fn pack(&self) -> (u64, u64) {
        (
            (u64::from(self.src) << 32) | u64::from(self.dst),
            (u64::from(self.sport) << 48) | (u64::from(self.dport) << 32) | u64::from(self.proto),
        )
    }

    /// Inverse of [`FlowKey::pack`].
    #[inline]
    pub fn unpack(a: u64, b: u64) -> FlowKey {
        // Each field is extracted from its own bit range, so the casts keep
        // exactly the bits that `pack` stored there.
        #[allow(clippy::cast_possible_truncation)]
        FlowKey {
            src: (a >> 32) as u32,
            dst: a as u32,
            sport: (b >> 48) as u16,
            dport: (b >> 32) as u16,
            proto: b as u8,
        }
    }
}

/// A keyed 64-bit hash of a flow key: two multiply-xorshift rounds over the
/// packed tuple (a few instructions; it runs several times per packet).
/// `seed` comes from [`random_seed`] per table, so hash flooding by a pod
/// needs the seed.
#[inline]
pub fn flow_hash(key: &FlowKey, seed: u64) -> u64 {
    let (a, b) = key.pack();
    let h = (a ^ seed).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ b.rotate_left(23);
    let h = (h ^ (h >> 29)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^ (h >> 32)
}

/// A hash that is the same for both directions of a flow (used where the two
/// directions must agree, e.g. for the VXLAN source port of a connection).
#[inline]
pub fn symmetric_hash(key: &FlowKey, seed: u64) -> u64 {
    let (lo_ip, hi_ip) = if key.src <= key.dst {
        (key.src, key.dst)
    } else {
        (key.dst, key.src)
    };
    let (lo_p, hi_p) = if key.sport <= key.dport {
        (key.sport, key.dport)
    } else {
        (key.dport, key.sport)
    };
    let canon = FlowKey {
        src: lo_ip,
        dst: hi_ip,
        sport: lo_p,
        dport: hi_p,
        proto: key.proto,
    };
    flow_hash(&canon, seed)
}

/// MurmurHash3's 64-bit finaliser: a cheap full-avalanche mix.
#[inline]
pub fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^= k >> 33;
    k
}

/// A random seed for a table's hash, drawn from the standard library's
/// per-process random keys.
pub fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0x7064_7377_6974_6368);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::Proto;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn pack_round_trips(src: u32, dst: u32, sport: u16, dport: u16, proto: u8) {
            let k = FlowKey { src, dst, sport, dport, proto };
            let (a, b) = k.pack();
            prop_assert_eq!(FlowKey::unpack(a, b), k);
        }

        #[test]
        fn symmetric_hash_ignores_direction(src: u32, dst: u32, sport: u16, dport: u16) {
            let k = FlowKey { src, dst, sport, dport, proto: Proto::Tcp.number() };
            prop_assert_eq!(symmetric_hash(&k, 7), symmetric_hash(&k.reversed(), 7));
        }
    }

    #[test]
    fn hash_spreads_close_keys_over_buckets() {
        // Flows differing only in the source port (the common case) must
        // spread evenly: 64k of them over 1024 buckets.
        let mut counts = vec![0u32; 1024];
        for sport in 0..=u16::MAX {
            let k = FlowKey {
                src: 0x0af4_010b,
                dst: 0x0a60_0014,
                sport,
                dport: 80,
                proto: Proto::Tcp.number(),
            };
            let h = flow_hash(&k, 0x1234);
            counts[usize::try_from((u128::from(h) * 1024) >> 64).unwrap()] += 1;
        }
        let (min, max) = (*counts.iter().min().unwrap(), *counts.iter().max().unwrap());
        assert!(
            min > 30 && max < 110,
            "bucket counts {min}..{max} (mean 64)"
        );
    }

    #[test]
    fn hash_depends_on_every_field() {
        let k = FlowKey {
            src: 1,
            dst: 2,
            sport: 3,
            dport: 4,
            proto: Proto::Tcp.number(),
        };
        let h = flow_hash(&k, 0);
        for other in [
            FlowKey { src: 9, ..k },
            FlowKey { dst: 9, ..k },
            FlowKey { sport: 9, ..k },
            FlowKey { dport: 9, ..k },
            FlowKey {
                proto: Proto::Udp.number(),
                ..k
            },
        ] {
            assert_ne!(flow_hash(&other, 0), h, "{other:?}");
        }
    }
}
