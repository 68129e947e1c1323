//! The host end's interface name: derived from the container ID and the pod
//! interface name alone, so DEL and GC find it again with nothing else.

/// Every host veth this plugin creates starts with this.
pub const HOST_PREFIX: &str = "psw";

/// 64-bit FNV-1a.
fn fnv1a(bytes: impl IntoIterator<Item = u8>) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// `psw` and 12 hex digits (the low 48 bits of FNV-1a over
/// `container_id NUL ifname`): 15 characters, the kernel's limit.
pub fn host_ifname(container_id: &str, ifname: &str) -> String {
    let bytes = container_id
        .bytes()
        .chain(std::iter::once(0))
        .chain(ifname.bytes());
    format!("{HOST_PREFIX}{:012x}", fnv1a(bytes) & 0xffff_ffff_ffff)
}

/// Whether `name` looks like a host veth this plugin made.
pub fn is_ours(name: &str) -> bool {
    name.len() == HOST_PREFIX.len() + 12
        && name.starts_with(HOST_PREFIX)
        && name[HOST_PREFIX.len()..]
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_are_short_deterministic_and_distinct() {
        let a = host_ifname("0123456789abcdef0123456789abcdef", "eth0");
        assert_eq!(a.len(), 15);
        assert!(a.starts_with("psw"));
        assert!(is_ours(&a));
        assert_eq!(a, host_ifname("0123456789abcdef0123456789abcdef", "eth0"));
        assert_ne!(a, host_ifname("0123456789abcdef0123456789abcdef", "eth1"));
        assert_ne!(a, host_ifname("0123456789abcdef0123456789abcdee", "eth0"));
        // The separator keeps ("ab", "c") and ("a", "bc") apart.
        assert_ne!(host_ifname("ab", "c"), host_ifname("a", "bc"));
        // FNV-1a of the empty input is its offset basis.
        assert_eq!(fnv1a([]), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(*b"a"), 0xaf63_dc4c_8601_ec8c);
        assert!(!is_ours("pswhost"));
        assert!(!is_ours("eth0"));
    }
}
