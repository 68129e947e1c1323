//! Longest-prefix match over IPv4 addresses: a multibit trie with fixed 8-bit
//! strides and controlled prefix expansion.
//!
//! A lookup reads at most four nodes (one per address byte), however many
//! prefixes are stored. Each node is 256 slots; a slot is empty, holds the
//! value of the longest prefix covering it (with that prefix's length, so a
//! longer prefix always wins over a shorter one whatever the insertion
//! order), or links to a child node one byte further down. A prefix whose
//! length is not a multiple of 8 is expanded over every slot it covers in its
//! node; a value covering a slot that later gets a child is pushed down into
//! every slot of that child.
//!
//! Nodes live in one flat `Vec` and link by index (no allocation per node).
//!
//! **Who writes, who reads.** Control builds an [`Lpm`] while it builds a table
//! snapshot ([`Lpm::insert`], [`Lpm::remove`], [`Lpm::from_ranges`]). Once the
//! snapshot is published the structure is never mutated again, so workers call
//! [`Lpm::lookup`] on it from any number of threads without a lock; lookup
//! neither allocates nor panics.

use std::net::Ipv4Addr;

use hashbrown::HashMap;

use crate::model::Cidr;

/// Slots per node: one per value of an address byte.
const FANOUT: usize = 256;

/// One slot of a node.
#[derive(Clone, Copy, Debug)]
enum Slot<V: Copy> {
    /// No prefix covers the slot.
    Empty,
    /// The longest prefix covering the slot is `len` bits long and maps to
    /// `value`.
    Value { len: u8, value: V },
    /// The slot's addresses continue in the node at this index.
    Child(u32),
}

type Node<V> = [Slot<V>; FANOUT];

/// A longest-prefix-match table from IPv4 prefixes to small `Copy` values.
///
/// Written by control while it builds a snapshot; read lock-free by workers
/// once published (see the module documentation).
#[derive(Clone, Debug)]
pub struct Lpm<V: Copy> {
    /// Node 0 is the root (the first address byte); it always exists.
    nodes: Vec<Node<V>>,
    /// Indices of nodes freed by [`Lpm::remove`], reused by later inserts.
    free: Vec<u32>,
    /// The prefixes as inserted: the source of truth for `remove`.
    prefixes: HashMap<Cidr, V>,
}

impl<V: Copy> Default for Lpm<V> {
    fn default() -> Self {
        Lpm::new()
    }
}

impl<V: Copy> Lpm<V> {
    /// An empty table: every lookup misses.
    pub fn new() -> Lpm<V> {
        Lpm {
            nodes: vec![[Slot::Empty; FANOUT]],
            free: Vec::new(),
            prefixes: HashMap::new(),
        }
    }

    /// A table built from inclusive address ranges `(first, last, value)`.
    ///
    /// Each range is decomposed into the fewest prefixes that cover it
    /// exactly (see [`range_prefixes`]). The ranges should be disjoint; where
    /// they overlap, the longest of the decomposed prefixes wins. A range
    /// with `first > last` is empty.
    pub fn from_ranges(ranges: &[(u32, u32, V)]) -> Lpm<V> {
        let mut lpm = Lpm::new();
        for &(first, last, value) in ranges {
            for cidr in range_prefixes(first, last) {
                lpm.insert(cidr, value);
            }
        }
        lpm
    }

    /// The value of the longest stored prefix containing `addr` (host
    /// order). At most four memory reads; never allocates or panics.
    #[inline]
    pub fn lookup(&self, addr: u32) -> Option<V> {
        let mut node = self.nodes.first()?;
        for byte in addr.to_be_bytes() {
            match node[usize::from(byte)] {
                Slot::Empty => return None,
                Slot::Value { value, .. } => return Some(value),
                Slot::Child(child) => node = self.nodes.get(index(child))?,
            }
        }
        None
    }

    /// Stores `value` for `cidr`, replacing the value of the same prefix if
    /// it was already present (returned).
    pub fn insert(&mut self, cidr: Cidr, value: V) -> Option<V> {
        let old = self.prefixes.insert(cidr, value);
        let (level, first, count) = placement(cidr);
        let mut node = 0;
        for byte in &cidr.addr().to_be_bytes()[..level] {
            node = self.child_or_split(node, usize::from(*byte));
        }
        for slot in first..first + count {
            self.paint(node, slot, cidr.len(), value);
        }
        old
    }

    /// Removes `cidr` (exactly this prefix) and returns its value. Addresses
    /// it covered fall back to the next longest prefix containing them.
    pub fn remove(&mut self, cidr: Cidr) -> Option<V> {
        let old = self.prefixes.remove(&cidr)?;
        // Every address of `cidr` has the same next-longest covering prefix.
        let fallback = (0..cidr.len())
            .rev()
            .find_map(|len| {
                let shorter = Cidr::new(Ipv4Addr::from(cidr.addr()), len)?;
                let value = *self.prefixes.get(&shorter)?;
                Some(Slot::Value { len, value })
            })
            .unwrap_or(Slot::Empty);
        let (level, first, count) = placement(cidr);
        // (parent node, slot in parent) for each node on the way down.
        let mut path = [(0usize, 0usize); 3];
        let mut node = 0;
        for (depth, byte) in cidr.addr().to_be_bytes()[..level].iter().enumerate() {
            let slot = usize::from(*byte);
            let Slot::Child(child) = self.nodes[node][slot] else {
                // Unreachable while the trie matches `prefixes`: the node
                // holding an inserted prefix is never collapsed.
                return Some(old);
            };
            path[depth] = (node, slot);
            node = index(child);
        }
        for slot in first..first + count {
            self.unpaint(node, slot, cidr.len(), fallback);
        }
        // Fold back children left holding no prefix of their own.
        for depth in (0..level).rev() {
            let (parent, slot) = path[depth];
            let Slot::Child(child) = self.nodes[parent][slot] else {
                break;
            };
            if !self.holds_own_prefix(index(child), depth + 1) {
                self.nodes[parent][slot] = self.nodes[index(child)][0];
                self.free.push(child);
            } else {
                break;
            }
        }
        Some(old)
    }

    /// Number of stored prefixes.
    pub fn len(&self) -> usize {
        self.prefixes.len()
    }

    /// Whether no prefix is stored.
    pub fn is_empty(&self) -> bool {
        self.prefixes.is_empty()
    }

    /// Heap bytes held (nodes, free list and the prefix list kept for
    /// `remove`).
    pub fn memory_bytes(&self) -> usize {
        self.nodes.capacity() * std::mem::size_of::<Node<V>>()
            + self.free.capacity() * std::mem::size_of::<u32>()
            + self.prefixes.capacity() * (std::mem::size_of::<(Cidr, V)>() + 1)
    }

    /// The child under `nodes[node][slot]`, created (inheriting the slot's
    /// value in all its slots) if the slot holds none.
    fn child_or_split(&mut self, node: usize, slot: usize) -> usize {
        match self.nodes[node][slot] {
            Slot::Child(child) => index(child),
            inherited => {
                let fresh = [inherited; FANOUT];
                let child = match self.free.pop() {
                    Some(reused) => {
                        self.nodes[index(reused)] = fresh;
                        reused
                    }
                    None => {
                        self.nodes.push(fresh);
                        // At most 1 + 256 + 65536 nodes ever exist (one per
                        // distinct 0-, 8-, 16- and 24-bit prefix), so the
                        // index always fits.
                        u32::try_from(self.nodes.len() - 1).expect("fewer than 2^17 nodes")
                    }
                };
                self.nodes[node][slot] = Slot::Child(child);
                index(child)
            }
        }
    }

    /// Sets a `len`-bit prefix's value on a slot (and everything below it)
    /// wherever no longer prefix already holds it.
    fn paint(&mut self, node: usize, slot: usize, len: u8, value: V) {
        match self.nodes[node][slot] {
            Slot::Child(child) => {
                for below in 0..FANOUT {
                    self.paint(index(child), below, len, value);
                }
            }
            Slot::Value { len: held, .. } if held > len => {}
            _ => self.nodes[node][slot] = Slot::Value { len, value },
        }
    }

    /// Replaces a removed `len`-bit prefix's value by `fallback` on a slot
    /// (and everything below it) wherever the removed prefix held it.
    fn unpaint(&mut self, node: usize, slot: usize, len: u8, fallback: Slot<V>) {
        match self.nodes[node][slot] {
            Slot::Child(child) => {
                for below in 0..FANOUT {
                    self.unpaint(index(child), below, len, fallback);
                }
            }
            Slot::Value { len: held, .. } if held == len => self.nodes[node][slot] = fallback,
            _ => {}
        }
    }

    /// Whether the node at `level` (1..=3) holds a prefix longer than the
    /// bits above it, or a child. A node that does not only repeats one
    /// inherited value in all its slots and can fold into its parent's slot.
    fn holds_own_prefix(&self, node: usize, level: usize) -> bool {
        self.nodes[node].iter().any(|slot| match *slot {
            Slot::Child(_) => true,
            Slot::Value { len, .. } => usize::from(len) > 8 * level,
            Slot::Empty => false,
        })
    }
}

/// Where a prefix lives: the level of its node (0..=3, one per address byte)
/// and the range of slots it covers there.
fn placement(cidr: Cidr) -> (usize, usize, usize) {
    let len = usize::from(cidr.len());
    let level = len.saturating_sub(1) / 8;
    let fixed = len - 8 * level;
    let first = usize::from(cidr.addr().to_be_bytes()[level]);
    (level, first, 1 << (8 - fixed))
}

/// A node index as stored in a slot, for indexing the node vector.
#[inline]
fn index(child: u32) -> usize {
    // u32 always fits in usize on the targets podswitch supports (64-bit).
    child as usize
}

/// The fewest prefixes that together cover exactly `first..=last`, in
/// address order. Empty when `first > last`.
pub fn range_prefixes(first: u32, last: u32) -> Vec<Cidr> {
    let mut out = Vec::new();
    let mut start = u64::from(first);
    let end = u64::from(last) + 1;
    while start < end {
        // The largest aligned block starting at `start` that fits.
        let mut bits = start.trailing_zeros().min(32);
        while (1u64 << bits) > end - start {
            bits -= 1;
        }
        let (Ok(addr), Ok(len)) = (u32::try_from(start), u8::try_from(32 - bits)) else {
            break;
        };
        if let Some(cidr) = Cidr::new(Ipv4Addr::from(addr), len) {
            out.push(cidr);
        }
        start += 1u64 << bits;
    }
    out
}

/// Read-only views for the local API and the CLI (control path: allocates).
impl<V: Copy> Lpm<V> {
    /// Every stored prefix with its value, in address order (a shorter
    /// prefix before the longer ones it contains).
    pub fn prefixes(&self) -> Vec<(Cidr, V)> {
        let mut out: Vec<(Cidr, V)> = self.prefixes.iter().map(|(c, v)| (*c, *v)).collect();
        out.sort_unstable_by_key(|(c, _)| (c.addr(), c.len()));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cidr(s: &str) -> Cidr {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> u32 {
        u32::from(s.parse::<Ipv4Addr>().unwrap())
    }

    fn overlapping() -> Vec<(&'static str, u32)> {
        vec![
            ("0.0.0.0/0", 0),
            ("10.0.0.0/8", 8),
            ("10.1.0.0/16", 16),
            ("10.1.2.0/24", 24),
            ("10.1.2.3/32", 32),
            ("10.1.2.128/25", 25),
            ("10.128.0.0/9", 9),
            ("10.1.2.0/23", 23),
        ]
    }

    fn check_overlapping(lpm: &Lpm<u32>) {
        let cases = [
            ("1.2.3.4", 0),
            ("10.2.0.1", 8),
            ("10.200.0.1", 9),
            ("10.1.9.9", 16),
            ("10.1.3.1", 23),
            ("10.1.2.1", 24),
            ("10.1.2.3", 32),
            ("10.1.2.200", 25),
            ("255.255.255.255", 0),
        ];
        for (addr, want) in cases {
            assert_eq!(lpm.lookup(ip(addr)), Some(want), "{addr}");
        }
    }

    #[test]
    fn empty_table_misses() {
        let lpm: Lpm<u32> = Lpm::new();
        assert_eq!(lpm.lookup(0), None);
        assert_eq!(lpm.lookup(u32::MAX), None);
        assert!(lpm.is_empty());
    }

    #[test]
    fn default_route_matches_everything() {
        let mut lpm = Lpm::new();
        lpm.insert(cidr("0.0.0.0/0"), 7u8);
        assert_eq!(lpm.lookup(0), Some(7));
        assert_eq!(lpm.lookup(ip("192.168.1.1")), Some(7));
        assert_eq!(lpm.lookup(u32::MAX), Some(7));
        assert_eq!(lpm.len(), 1);
    }

    #[test]
    fn longer_prefixes_win_in_any_insertion_order() {
        let forward = overlapping();
        let mut backward = forward.clone();
        backward.reverse();
        let mut shuffled = forward.clone();
        shuffled.swap(0, 4);
        shuffled.swap(2, 7);
        for order in [forward, backward, shuffled] {
            let mut lpm = Lpm::new();
            for (c, v) in &order {
                lpm.insert(cidr(c), *v);
            }
            check_overlapping(&lpm);
        }
    }

    #[test]
    fn reinsert_replaces_value() {
        let mut lpm = Lpm::new();
        assert_eq!(lpm.insert(cidr("10.0.0.0/8"), 1u32), None);
        lpm.insert(cidr("10.1.0.0/16"), 2);
        assert_eq!(lpm.insert(cidr("10.0.0.0/8"), 3), Some(1));
        assert_eq!(lpm.lookup(ip("10.2.0.0")), Some(3));
        assert_eq!(lpm.lookup(ip("10.1.0.0")), Some(2));
        assert_eq!(lpm.len(), 2);
    }

    #[test]
    fn remove_falls_back_to_shorter_prefix_and_frees_nodes() {
        let mut lpm = Lpm::new();
        for (c, v) in overlapping() {
            lpm.insert(cidr(c), v);
        }
        assert_eq!(lpm.remove(cidr("10.1.2.3/32")), Some(32));
        assert_eq!(lpm.lookup(ip("10.1.2.3")), Some(24));
        assert_eq!(lpm.remove(cidr("10.1.2.0/24")), Some(24));
        assert_eq!(lpm.lookup(ip("10.1.2.3")), Some(23));
        assert_eq!(lpm.remove(cidr("10.1.2.0/24")), None);
        assert_eq!(lpm.remove(cidr("0.0.0.0/0")), Some(0));
        assert_eq!(lpm.lookup(ip("1.2.3.4")), None);
        for (c, _) in overlapping() {
            lpm.remove(cidr(c));
        }
        assert!(lpm.is_empty());
        assert_eq!(lpm.lookup(ip("10.1.2.3")), None);
        assert_eq!(
            lpm.free.len(),
            lpm.nodes.len() - 1,
            "all but the root freed"
        );
        // Freed nodes are reused.
        let before = lpm.nodes.len();
        lpm.insert(cidr("10.1.2.3/32"), 5);
        assert_eq!(lpm.nodes.len(), before);
        assert_eq!(lpm.lookup(ip("10.1.2.3")), Some(5));
        assert_eq!(lpm.lookup(ip("10.1.2.4")), None);
    }

    #[test]
    fn host_routes_use_four_levels() {
        let mut lpm = Lpm::new();
        lpm.insert(cidr("1.2.3.4/32"), 1u16);
        lpm.insert(cidr("1.2.3.5/32"), 2);
        assert_eq!(lpm.lookup(ip("1.2.3.4")), Some(1));
        assert_eq!(lpm.lookup(ip("1.2.3.5")), Some(2));
        assert_eq!(lpm.lookup(ip("1.2.3.6")), None);
        assert_eq!(lpm.nodes.len(), 4);
        assert!(lpm.memory_bytes() >= 4 * 256 * 4);
    }

    #[test]
    fn range_decomposition_is_minimal() {
        let strs = |v: Vec<Cidr>| v.iter().map(|c| c.to_string()).collect::<Vec<_>>();
        assert_eq!(strs(range_prefixes(0, u32::MAX)), ["0.0.0.0/0"]);
        assert_eq!(strs(range_prefixes(5, 5)), ["0.0.0.5/32"]);
        assert_eq!(
            strs(range_prefixes(ip("10.0.0.1"), ip("10.0.0.6"))),
            ["10.0.0.1/32", "10.0.0.2/31", "10.0.0.4/31", "10.0.0.6/32"]
        );
        assert_eq!(
            strs(range_prefixes(ip("10.0.0.0"), ip("10.0.1.255"))),
            ["10.0.0.0/23"]
        );
        assert!(range_prefixes(6, 5).is_empty());
        assert_eq!(
            strs(range_prefixes(u32::MAX, u32::MAX)),
            ["255.255.255.255/32"]
        );
    }

    #[test]
    fn from_ranges_fixture() {
        let lpm = Lpm::from_ranges(&[
            (ip("10.0.0.1"), ip("10.0.0.6"), 1u32),
            (ip("10.0.0.7"), ip("10.0.0.7"), 2),
        ]);
        assert_eq!(lpm.lookup(ip("10.0.0.0")), None);
        for a in 1..=6 {
            assert_eq!(lpm.lookup(ip("10.0.0.0") + a), Some(1));
        }
        assert_eq!(lpm.lookup(ip("10.0.0.7")), Some(2));
        assert_eq!(lpm.lookup(ip("10.0.0.8")), None);
    }

    /// The longest matching prefix by a linear scan.
    fn naive(prefixes: &[(Cidr, u32)], addr: u32) -> Option<u32> {
        prefixes
            .iter()
            .filter(|(c, _)| c.contains(addr))
            .max_by_key(|(c, _)| c.len())
            .map(|(_, v)| *v)
    }

    /// Prefixes clustered in a small part of the space, so they overlap.
    fn arb_prefix() -> impl Strategy<Value = Cidr> {
        (0u32..4, any::<u32>(), 0u8..=32).prop_map(|(top, low, len)| {
            let addr = (top << 30) | (0x0a00_0000 & 0x3fff_ffff) | (low & 0x0003_ffff);
            Cidr::new(Ipv4Addr::from(addr), len).unwrap()
        })
    }

    /// Addresses near the prefixes' edges and random ones.
    fn probes(prefixes: &[(Cidr, u32)], random: &[u32]) -> Vec<u32> {
        let mut out = random.to_vec();
        for (c, _) in prefixes {
            let (a, b) = c.range();
            out.extend([a, b, a.wrapping_sub(1), b.wrapping_add(1)]);
        }
        out
    }

    /// Deduplicated by prefix, last value wins (what `insert` does).
    fn dedup(inserted: &[(Cidr, u32)]) -> Vec<(Cidr, u32)> {
        let mut map = std::collections::BTreeMap::new();
        for (c, v) in inserted {
            map.insert(*c, *v);
        }
        map.into_iter().collect()
    }

    proptest! {
        #[test]
        fn lookup_matches_linear_scan(
            inserted in prop::collection::vec((arb_prefix(), any::<u32>()), 0..40),
            random in prop::collection::vec(any::<u32>(), 0..40),
        ) {
            let mut lpm = Lpm::new();
            for (c, v) in &inserted {
                lpm.insert(*c, *v);
            }
            let stored = dedup(&inserted);
            prop_assert_eq!(lpm.len(), stored.len());
            for addr in probes(&stored, &random) {
                prop_assert_eq!(lpm.lookup(addr), naive(&stored, addr), "addr {:#x}", addr);
            }
        }

        #[test]
        fn remove_matches_linear_scan(
            inserted in prop::collection::vec((arb_prefix(), any::<u32>()), 0..40),
            removed in prop::collection::vec(any::<prop::sample::Index>(), 0..40),
            random in prop::collection::vec(any::<u32>(), 0..20),
        ) {
            let mut lpm = Lpm::new();
            for (c, v) in &inserted {
                lpm.insert(*c, *v);
            }
            let mut stored = dedup(&inserted);
            let all = stored.clone();
            for i in removed {
                if stored.is_empty() {
                    break;
                }
                let (c, v) = stored.remove(i.index(stored.len()));
                prop_assert_eq!(lpm.remove(c), Some(v));
            }
            prop_assert_eq!(lpm.len(), stored.len());
            for addr in probes(&all, &random) {
                prop_assert_eq!(lpm.lookup(addr), naive(&stored, addr), "addr {:#x}", addr);
            }
        }

        #[test]
        fn from_ranges_matches_interval_membership(
            mut cuts in prop::collection::vec(any::<u32>(), 0..30),
            values in prop::collection::vec(any::<u32>(), 15),
            random in prop::collection::vec(any::<u32>(), 0..40),
        ) {
            cuts.sort_unstable();
            cuts.dedup();
            // Consecutive cut pairs make disjoint inclusive ranges.
            let ranges: Vec<(u32, u32, u32)> = cuts
                .chunks_exact(2)
                .zip(&values)
                .map(|(pair, v)| (pair[0], pair[1], *v))
                .collect();
            let lpm = Lpm::from_ranges(&ranges);
            let mut addrs = random;
            for (a, b, _) in &ranges {
                addrs.extend([*a, *b, a.wrapping_sub(1), b.wrapping_add(1)]);
            }
            for addr in addrs {
                let want = ranges.iter().find(|(a, b, _)| (*a..=*b).contains(&addr)).map(|r| r.2);
                prop_assert_eq!(lpm.lookup(addr), want, "addr {:#x}", addr);
            }
        }
    }
}
