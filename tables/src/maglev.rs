//! Maglev consistent hashing (Eisenbud et al., NSDI 2016) for choosing a
//! service backend from a flow hash.
//!
//! Written by control when a service's backend set changes; read by workers
//! through an immutable snapshot. A lookup is one multiply and one load.
//!
//! The table size is a prime above 100 x the backend count (200 x when built
//! fresh), so the counts of slots per backend differ by at most one:
//! imbalance <= 1%.
//!
//! [`Maglev::rebuild`] goes further than the paper: it starts from the
//! previous table, so removing a backend moves only the flows that backend
//! had, and adding one moves only the slots it takes over (each taken from a
//! backend above its fair share). The table size is kept while it still
//! exceeds 100 x backends, because a new size would move every flow.

use crate::flow::fmix64;

/// A Maglev lookup table: slot -> index into the service's backend list.
/// Slots are 16 bits: a table serves at most [`MAX_BACKENDS`] backends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Maglev {
    slots: Box<[u16]>,
}

/// Sentinel for a slot not yet assigned during population.
const EMPTY: u16 = u16::MAX;

/// The most backends one table balances over; callers pass at most this
/// many keys (more are ignored).
pub const MAX_BACKENDS: usize = EMPTY as usize;

impl Maglev {
    /// The table size a fresh build uses for `backends` backends: the
    /// smallest prime above 200 x backends, so the set can double before the
    /// size (and with it every flow's slot) has to change.
    pub fn size_for(backends: usize) -> usize {
        next_prime(200 * backends.max(1) + 1)
    }

    /// Builds a table from scratch. `keys` identify the backends (e.g. IP and
    /// port packed into a `u64`); their order defines the returned indices.
    /// Returns `None` when `keys` is empty.
    pub fn build(keys: &[u64]) -> Option<Maglev> {
        Self::populate(keys, None, Self::size_for(keys.len()))
    }

    /// Builds the table for `keys` from the previous table over `prev_keys`,
    /// moving as few slots as possible (see the module doc).
    pub fn rebuild(prev: &Maglev, prev_keys: &[u64], keys: &[u64]) -> Option<Maglev> {
        if keys.is_empty() {
            return None;
        }
        let size = prev.slots.len();
        if size <= 100 * keys.len() || size > 400 * keys.len() + 400 {
            // The old size no longer keeps imbalance under 1% (or wastes
            // memory): start over with a size that leaves room to grow.
            return Self::populate(keys, None, Self::size_for(keys.len()));
        }
        Self::populate(keys, Some((prev, prev_keys)), size)
    }

    /// The backend index for a flow hash.
    #[inline]
    pub fn pick(&self, hash: u64) -> u32 {
        // Multiply-high maps the hash onto [0, len) without a division.
        let len = self.slots.len() as u64;
        // Below `len`, which is a usize: the cast is exact.
        #[allow(clippy::cast_possible_truncation)]
        let slot = ((u128::from(hash) * u128::from(len)) >> 64) as usize;
        self.slots.get(slot).map_or(0, |&b| u32::from(b))
    }

    /// Number of slots.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Always false: a table has at least 101 slots.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Slots per backend index, for balance checks and the CLI.
    pub fn counts(&self, backends: usize) -> Vec<usize> {
        let mut counts = vec![0; backends];
        for &b in self.slots.iter() {
            if let Some(c) = counts.get_mut(b as usize) {
                *c += 1;
            }
        }
        counts
    }

    /// Heap bytes used by the table.
    pub fn memory_bytes(&self) -> usize {
        self.slots.len() * std::mem::size_of::<u16>()
    }

    fn populate(keys: &[u64], prev: Option<(&Maglev, &[u64])>, size: usize) -> Option<Maglev> {
        let keys = &keys[..keys.len().min(MAX_BACKENDS)];
        let n = keys.len();
        if n == 0 {
            return None;
        }
        let mut slots = vec![EMPTY; size];
        let mut counts = vec![0usize; n];
        if let Some((prev, prev_keys)) = prev {
            // Old backend index -> new index (None if gone), built once:
            // the slot walk below is then linear in the table size.
            let new_index: std::collections::HashMap<u64, usize> = keys
                .iter()
                .enumerate()
                .rev()
                .map(|(i, &k)| (k, i))
                .collect();
            let moved: Vec<Option<usize>> = prev_keys
                .iter()
                .map(|k| new_index.get(k).copied())
                .collect();
            for (slot, &old) in slots.iter_mut().zip(prev.slots.iter()) {
                let kept = moved.get(old as usize).copied().flatten();
                if let Some(i) = kept {
                    *slot = index_u16(i);
                    counts[i] += 1;
                }
            }
        }
        // Fair shares: q each, q + 1 for the r backends holding most slots
        // now (ties by key, so the result is deterministic).
        let (q, r) = (size / n, size % n);
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|&a, &b| counts[b].cmp(&counts[a]).then(keys[a].cmp(&keys[b])));
        let mut target = vec![q; n];
        for &i in order.iter().take(r) {
            target[i] = q + 1;
        }
        // Both values are below `size`, a usize: the casts are exact.
        #[allow(clippy::cast_possible_truncation)]
        let perms: Vec<(usize, usize)> = keys
            .iter()
            .map(|&k| {
                let offset = (fmix64(k ^ 0x9e37_79b9_7f4a_7c15) % size as u64) as usize;
                let skip = (fmix64(k ^ 0xc2b2_ae3d_27d4_eb4f) % (size as u64 - 1)) as usize + 1;
                (offset, skip)
            })
            .collect();
        let mut next = vec![0usize; n];
        let mut deficit: usize = (0..n).map(|i| target[i].saturating_sub(counts[i])).sum();
        // Backends below their share take turns walking their permutation;
        // a slot is taken if empty or if its owner is above its own share.
        while deficit > 0 {
            let mut progressed = false;
            for i in 0..n {
                if counts[i] >= target[i] {
                    continue;
                }
                let (offset, skip) = perms[i];
                while next[i] < size {
                    let slot = (offset + next[i] * skip) % size;
                    next[i] += 1;
                    let owner = slots[slot];
                    let free = owner == EMPTY;
                    let surplus = !free && counts[owner as usize] > target[owner as usize];
                    if free || surplus {
                        if surplus {
                            counts[owner as usize] -= 1;
                        }
                        slots[slot] = index_u16(i);
                        counts[i] += 1;
                        deficit -= 1;
                        progressed = true;
                        break;
                    }
                }
            }
            if !progressed {
                // Unreachable for a prime size (each permutation visits every
                // slot), kept so a logic error cannot loop forever.
                return None;
            }
        }
        Some(Maglev {
            slots: slots.into_boxed_slice(),
        })
    }
}

fn index_u16(i: usize) -> u16 {
    u16::try_from(i).unwrap_or(EMPTY - 1)
}

fn next_prime(mut n: usize) -> usize {
    while !is_prime(n) {
        n += 1;
    }
    n
}

fn is_prime(n: usize) -> bool {
    if n < 2 {
        return false;
    }
    let mut d = 2;
    while d * d <= n {
        if n.is_multiple_of(d) {
            return false;
        }
        d += 1;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn keys(n: u64) -> Vec<u64> {
        (0..n).map(|i| (0x0af4_0000 + i) << 16 | 8080).collect()
    }

    fn assert_balanced(m: &Maglev, n: usize) {
        let counts = m.counts(n);
        let (min, max) = (*counts.iter().min().unwrap(), *counts.iter().max().unwrap());
        assert!(max - min <= 1, "counts {min}..{max}");
        assert!((max - min) as f64 / (m.len() as f64 / n as f64) <= 0.01);
    }

    #[test]
    fn sizes_are_primes_above_100x() {
        assert_eq!(Maglev::size_for(1), 211);
        assert_eq!(Maglev::size_for(10), 2003);
        assert!(Maglev::size_for(1000) > 200_000);
        assert!(is_prime(Maglev::size_for(1000)));
    }

    #[test]
    fn build_is_balanced_and_deterministic() {
        for n in [1, 2, 3, 7, 50, 300] {
            let m = Maglev::build(&keys(n)).unwrap();
            assert_balanced(&m, usize::try_from(n).unwrap());
            assert_eq!(Some(m), Maglev::build(&keys(n)));
        }
        assert_eq!(Maglev::build(&[]), None);
    }

    #[test]
    fn removal_moves_only_the_removed_backends_slots() {
        let old_keys = keys(10);
        let old = Maglev::build(&old_keys).unwrap();
        let mut new_keys = old_keys.clone();
        let removed = new_keys.remove(3);
        let new = Maglev::rebuild(&old, &old_keys, &new_keys).unwrap();
        assert_balanced(&new, new_keys.len());
        for (o, n) in old.slots.iter().zip(new.slots.iter()) {
            let (ok, nk) = (old_keys[*o as usize], new_keys[*n as usize]);
            if ok != removed {
                assert_eq!(ok, nk, "a slot of a kept backend moved");
            }
        }
    }

    #[test]
    fn addition_moves_slots_only_to_the_new_backend() {
        let old_keys = keys(10);
        let old = Maglev::build(&old_keys).unwrap();
        let mut new_keys = old_keys.clone();
        new_keys.push(0xdead_beef);
        let new = Maglev::rebuild(&old, &old_keys, &new_keys).unwrap();
        assert_balanced(&new, new_keys.len());
        let mut moved = 0;
        for (o, n) in old.slots.iter().zip(new.slots.iter()) {
            let (ok, nk) = (old_keys[*o as usize], new_keys[*n as usize]);
            if ok != nk {
                assert_eq!(nk, 0xdead_beef);
                moved += 1;
            }
        }
        assert_eq!(moved, new.counts(11)[10]);
    }

    proptest! {
        #[test]
        fn any_change_keeps_balance_and_stability(
            n in 1usize..40,
            remove in proptest::collection::vec(any::<prop::sample::Index>(), 0..5),
            add in 0u64..5,
        ) {
            let old_keys = keys(n as u64);
            let old = Maglev::build(&old_keys).unwrap();
            let mut new_keys = old_keys.clone();
            for r in remove {
                if new_keys.len() > 1 {
                    new_keys.remove(r.index(new_keys.len()));
                }
            }
            new_keys.extend((0..add).map(|i| 0xffff_0000 + i));
            let new = Maglev::rebuild(&old, &old_keys, &new_keys).unwrap();
            assert_balanced(&new, new_keys.len());
            if new.len() == old.len() {
                for (o, nw) in old.slots.iter().zip(new.slots.iter()) {
                    let (ok, nk) = (old_keys[*o as usize], new_keys[*nw as usize]);
                    // A slot moves only away from a removed backend or to an added one.
                    prop_assert!(ok == nk || !new_keys.contains(&ok) || !old_keys.contains(&nk));
                }
            }
        }
    }
}
