//! Stable hashes and made-up name parts: FNV-1a (64-bit) over the parts,
//! each followed by a separator byte, so the answers are the same on every
//! build and machine (std's `DefaultHasher` promises neither).

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// A hash of `parts` that never changes between builds.
pub(super) fn stable_hash(parts: &[&str]) -> u64 {
    let mut h = FNV_OFFSET;
    for part in parts {
        for &b in part.as_bytes().iter().chain(&[0xff]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(FNV_PRIME);
        }
    }
    h
}

/// The characters Kubernetes uses in generated names (no vowels, no
/// look-alikes), so made-up names look like the controllers' own.
const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// `len` characters of `ALPHABET` taken from `h`, lowest digits first.
pub(super) fn encode(mut h: u64, len: usize) -> String {
    let base = ALPHABET.len() as u64;
    let mut out = String::with_capacity(len);
    for _ in 0..len {
        let digit = usize::try_from(h % base).unwrap_or_default();
        out.push(char::from(ALPHABET[digit]));
        h /= base;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_fixed_and_separate_parts() {
        // FNV-1a of the bytes 'a', 0xff: pinned so a change shows up here.
        assert_eq!(stable_hash(&["a"]), 0x089b_c907_b544_c769);
        assert_ne!(stable_hash(&["ab", "c"]), stable_hash(&["a", "bc"]));
        assert_eq!(encode(0, 3), "bbb");
        assert_eq!(encode(28, 2), "cc");
        assert_eq!(encode(u64::MAX, 10).len(), 10);
    }
}
