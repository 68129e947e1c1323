//! Session affinity (`sessionAffinity: ClientIP`): which backend a client was
//! last sent to, per frontend, until the service's timeout passes.
//!
//! Shared mutable state like conntrack: workers read and write it while
//! balancing new flows (never for established ones); control never writes it.
//! It is a fixed-size, 4-way set-associative cache of seqlocked slots: no
//! lock, no allocation after construction. When every way of a set is live
//! the least recently used one is replaced, so under extreme pressure a
//! client may lose its affinity, never get a wrong backend: an entry is only
//! used after its backend is confirmed to still be in the set.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::flow::fmix64;

const WAYS: usize = 4;

/// One remembered choice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Affinity {
    pub backend_ip: u32,
    pub backend_port: u16,
}

#[derive(Default)]
struct Slot {
    /// Seqlock: odd while a writer fills the slot.
    version: AtomicU64,
    /// Client IP (high 32 bits) and frontend hash (low 32 bits); 0 = empty.
    key: AtomicU64,
    /// Backend IP (high 32) and port (low 16).
    value: AtomicU64,
    /// Expiry time in milliseconds.
    expires: AtomicU64,
}

/// The affinity table (see the module doc).
pub struct AffinityTable {
    slots: Box<[Slot]>,
    mask: usize,
    seed: u64,
}

impl AffinityTable {
    /// A table with at least `capacity` slots (rounded up to a power of two,
    /// in sets of four).
    pub fn new(capacity: usize) -> AffinityTable {
        let sets = (capacity.max(WAYS) / WAYS).next_power_of_two();
        let slots = (0..sets * WAYS).map(|_| Slot::default()).collect();
        AffinityTable {
            slots,
            mask: sets - 1,
            seed: crate::flow::random_seed(),
        }
    }

    fn key(client: u32, frontend: u64) -> u64 {
        // Low 32 bits of the frontend hash; never 0 so 0 can mean "empty".
        #[allow(clippy::cast_possible_truncation)] // keeps the low half on purpose
        let f = (fmix64(frontend) as u32) | 1;
        (u64::from(client) << 32) | u64::from(f)
    }

    fn set(&self, key: u64) -> &[Slot] {
        #[allow(clippy::cast_possible_truncation)] // masked to the set count
        let set = (fmix64(key ^ self.seed) as usize) & self.mask;
        self.slots.get(set * WAYS..set * WAYS + WAYS).unwrap_or(&[])
    }

    /// The remembered backend of `client` for the frontend identified by
    /// `frontend` (any stable 64-bit identity), if not expired at `now_ms`.
    #[inline]
    pub fn get(&self, client: u32, frontend: u64, now_ms: u64) -> Option<Affinity> {
        let key = Self::key(client, frontend);
        for slot in self.set(key) {
            // Ordering: Acquire on the version pairs with the writer's
            // Release stores; re-reading it after the fields detects a
            // concurrent write (seqlock).
            let v1 = slot.version.load(Ordering::Acquire);
            if v1 & 1 == 1 {
                continue;
            }
            let k = slot.key.load(Ordering::Acquire);
            let value = slot.value.load(Ordering::Acquire);
            let expires = slot.expires.load(Ordering::Acquire);
            if slot.version.load(Ordering::Acquire) != v1 || k != key || expires <= now_ms {
                continue;
            }
            #[allow(clippy::cast_possible_truncation)] // unpacks what `put` packed
            return Some(Affinity {
                backend_ip: (value >> 32) as u32,
                backend_port: value as u16,
            });
        }
        None
    }

    /// Remembers `affinity` for `client` until `now_ms + timeout_ms`.
    #[inline]
    pub fn put(
        &self,
        client: u32,
        frontend: u64,
        affinity: Affinity,
        now_ms: u64,
        timeout_ms: u64,
    ) {
        let key = Self::key(client, frontend);
        let set = self.set(key);
        // Same key first, then an expired or empty way, then the one expiring soonest.
        let victim = set
            .iter()
            .find(|s| s.key.load(Ordering::Relaxed) == key)
            .or_else(|| {
                set.iter()
                    .find(|s| s.expires.load(Ordering::Relaxed) <= now_ms)
            })
            .or_else(|| set.iter().min_by_key(|s| s.expires.load(Ordering::Relaxed)));
        let Some(slot) = victim else { return };
        let v = slot.version.load(Ordering::Relaxed);
        if v & 1 == 1
            || slot
                .version
                .compare_exchange(v, v + 1, Ordering::Acquire, Ordering::Relaxed)
                .is_err()
        {
            return; // another worker is writing this slot; affinity is best effort for that race
        }
        let value = (u64::from(affinity.backend_ip) << 32) | u64::from(affinity.backend_port);
        slot.key.store(key, Ordering::Relaxed);
        slot.value.store(value, Ordering::Relaxed);
        slot.expires
            .store(now_ms.saturating_add(timeout_ms), Ordering::Relaxed);
        slot.version.store(v + 2, Ordering::Release);
    }

    /// Heap bytes used.
    pub fn memory_bytes(&self) -> usize {
        self.slots.len() * std::mem::size_of::<Slot>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const B1: Affinity = Affinity {
        backend_ip: 0x0af4_0105,
        backend_port: 8080,
    };
    const B2: Affinity = Affinity {
        backend_ip: 0x0af4_0106,
        backend_port: 8080,
    };

    #[test]
    fn remembers_until_timeout() {
        let t = AffinityTable::new(64);
        assert_eq!(t.get(1, 7, 0), None);
        t.put(1, 7, B1, 1000, 10_000);
        assert_eq!(t.get(1, 7, 5000), Some(B1));
        assert_eq!(t.get(1, 8, 5000), None, "other frontend");
        assert_eq!(t.get(2, 7, 5000), None, "other client");
        assert_eq!(t.get(1, 7, 11_000), None, "expired");
        t.put(1, 7, B2, 12_000, 10_000);
        assert_eq!(t.get(1, 7, 12_001), Some(B2));
    }

    #[test]
    fn full_sets_evict_but_never_mix_entries() {
        let t = AffinityTable::new(4);
        for client in 0..100u32 {
            t.put(
                client,
                1,
                Affinity {
                    backend_ip: client,
                    backend_port: 1,
                },
                0,
                1000 + u64::from(client),
            );
        }
        let mut hits = 0;
        for client in 0..100u32 {
            if let Some(a) = t.get(client, 1, 1) {
                assert_eq!(a.backend_ip, client);
                hits += 1;
            }
        }
        assert!(hits > 0 && hits <= 4);
    }
}
