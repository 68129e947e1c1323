//! The four AF_XDP rings (fill, completion, RX, TX), mapped from the kernel.
//!
//! Each ring is a power-of-two array plus a producer and a consumer index
//! (free-running `u32`s, wrapping) and a flags word, shared with the kernel.
//! We follow libxdp's `xsk.h` exactly: we load the other side's index with
//! acquire ordering (so the entries it published are visible before we read
//! them, or the slots it freed are no longer read by it before we overwrite
//! them) and store our own index with release ordering (so our entries are
//! written before the kernel sees the new index). We cache both indices and
//! only reload the other side's when the cache says the ring is empty/full.
//!
//! The index arithmetic lives in pure functions ([`free_slots`],
//! [`ready_entries`], [`slot`]) with proptests for wraparound.

use std::sync::atomic::{AtomicU32, Ordering};

/// Slots a producer can still fill: `size` minus entries outstanding between
/// our producer and the kernel's consumer (wrapping `u32` indices).
#[inline]
pub fn free_slots(size: u32, producer: u32, consumer: u32) -> u32 {
    size.wrapping_sub(producer.wrapping_sub(consumer))
}

/// Entries a consumer can take: published by the producer, not yet consumed.
#[inline]
pub fn ready_entries(producer: u32, consumer: u32) -> u32 {
    producer.wrapping_sub(consumer)
}

/// Array slot of the free-running index `idx` in a ring of `mask + 1` slots.
#[inline]
pub fn slot(idx: u32, mask: u32) -> usize {
    (idx & mask) as usize
}

/// One mmapped ring. Entries are `u64` addresses (fill, completion) or
/// `libc::xdp_desc` (RX, TX).
pub struct RingMap {
    map: *mut libc::c_void,
    map_len: usize,
    producer: *const AtomicU32,
    consumer: *const AtomicU32,
    flags: *const AtomicU32,
    desc: *mut u8,
    mask: u32,
    size: u32,
}

// SAFETY: the mapping belongs to this RingMap alone (one socket ring, never
// shared between threads by podswitch); moving it to another thread moves
// sole ownership, as with a Box.
unsafe impl Send for RingMap {}

impl RingMap {
    /// Wraps a mapping of `map_len` bytes at `map` laid out by `off`;
    /// `None` if an offset the kernel gave lies outside the mapping.
    ///
    /// # Safety
    /// `map` must be a live `mmap` of `map_len` bytes of an AF_XDP ring of
    /// `size` entries (a power of two) whose layout the kernel reported as
    /// `off`. The returned value owns the mapping and unmaps it on drop.
    pub unsafe fn new(
        map: *mut libc::c_void,
        map_len: usize,
        off: &libc::xdp_ring_offset,
        size: u32,
    ) -> Option<RingMap> {
        let base = map.cast::<u8>();
        let inside = |o: u64| usize::try_from(o).ok().filter(|&o| o + 4 <= map_len);
        let (p, c, f, d) = (
            inside(off.producer)?,
            inside(off.consumer)?,
            inside(off.flags)?,
            inside(off.desc)?,
        );
        // SAFETY: each offset was checked to lie inside the mapping.
        let (producer, consumer, flags, desc) =
            unsafe { (base.add(p), base.add(c), base.add(f), base.add(d)) };
        Some(RingMap {
            map,
            map_len,
            producer: producer.cast::<AtomicU32>(),
            consumer: consumer.cast::<AtomicU32>(),
            flags: flags.cast::<AtomicU32>(),
            desc,
            mask: size - 1,
            size,
        })
    }

    #[inline]
    fn producer(&self) -> &AtomicU32 {
        // SAFETY: points to an aligned u32 in the live mapping (see `new`);
        // the kernel updates it concurrently, hence the atomic view.
        unsafe { &*self.producer }
    }

    #[inline]
    fn consumer(&self) -> &AtomicU32 {
        // SAFETY: as in `producer`.
        unsafe { &*self.consumer }
    }

    #[inline]
    fn flags(&self) -> &AtomicU32 {
        // SAFETY: as in `producer`.
        unsafe { &*self.flags }
    }

    /// The kernel set `XDP_RING_NEED_WAKEUP` on this ring.
    #[inline]
    pub fn needs_wakeup(&self) -> bool {
        self.flags().load(Ordering::Relaxed) & libc::XDP_RING_NEED_WAKEUP != 0
    }

    /// Entries in the ring.
    pub fn size(&self) -> u32 {
        self.size
    }
}

impl Drop for RingMap {
    fn drop(&mut self) {
        // SAFETY: `map`/`map_len` are the mapping this value owns (see
        // `new`); no reference into it outlives `self`.
        unsafe { libc::munmap(self.map, self.map_len) };
    }
}

/// Our side of a ring we produce into (fill, TX).
pub struct ProdRing {
    ring: RingMap,
    cached_prod: u32,
    cached_cons: u32,
}

impl ProdRing {
    pub fn new(ring: RingMap) -> ProdRing {
        let cached_prod = ring.producer().load(Ordering::Relaxed);
        let cached_cons = ring.consumer().load(Ordering::Acquire);
        ProdRing {
            ring,
            cached_prod,
            cached_cons,
        }
    }

    /// Free slots, reloading the kernel's consumer only if the cache shows
    /// fewer than `want`.
    #[inline]
    pub fn free(&mut self, want: u32) -> u32 {
        let free = free_slots(self.ring.size, self.cached_prod, self.cached_cons);
        if free >= want {
            return free;
        }
        self.cached_cons = self.ring.consumer().load(Ordering::Acquire);
        free_slots(self.ring.size, self.cached_prod, self.cached_cons)
    }

    /// Entries we published that the kernel has not consumed yet.
    pub fn outstanding(&mut self) -> u32 {
        self.cached_cons = self.ring.consumer().load(Ordering::Acquire);
        ready_entries(self.cached_prod, self.cached_cons)
    }

    /// Writes address `addr` at offset `i` past our producer (fill ring).
    /// Callers stay below [`ProdRing::free`].
    #[inline]
    pub fn write_addr(&mut self, i: u32, addr: u64) {
        let s = slot(self.cached_prod.wrapping_add(i), self.ring.mask);
        // SAFETY: `s` < size and the ring holds `size` u64 entries starting
        // at `desc` (8-byte aligned per the kernel's layout); the slot is
        // free (below `free()`), so the kernel does not read it now.
        unsafe { self.ring.desc.cast::<u64>().add(s).write(addr) };
    }

    /// Writes descriptor (addr, len) at offset `i` past our producer (TX).
    #[inline]
    pub fn write_desc(&mut self, i: u32, addr: u64, len: u32) {
        let s = slot(self.cached_prod.wrapping_add(i), self.ring.mask);
        let d = libc::xdp_desc {
            addr,
            len,
            options: 0,
        };
        // SAFETY: as in `write_addr`, with `xdp_desc` entries.
        unsafe { self.ring.desc.cast::<libc::xdp_desc>().add(s).write(d) };
    }

    /// The address at offset `i` past the kernel's consumer among the
    /// entries it has not consumed (fill ring; for draining on close).
    pub fn outstanding_addr(&self, i: u32) -> u64 {
        let s = slot(self.cached_cons.wrapping_add(i), self.ring.mask);
        // SAFETY: `s` < size; the entry lies between the kernel's consumer
        // and our producer, written by us; on close the socket is out of
        // the XSKMAP, so the kernel no longer consumes it.
        unsafe { self.ring.desc.cast::<u64>().add(s).read() }
    }

    /// The descriptor address at offset `i` past the kernel's consumer (TX
    /// ring; for draining on close).
    pub fn outstanding_desc_addr(&self, i: u32) -> u64 {
        let s = slot(self.cached_cons.wrapping_add(i), self.ring.mask);
        // SAFETY: as in `outstanding_addr`, with `xdp_desc` entries (copy
        // mode transmits inside sendto, so nothing consumes them now).
        unsafe { self.ring.desc.cast::<libc::xdp_desc>().add(s).read().addr }
    }

    /// Publishes `n` entries written since the last submit.
    #[inline]
    pub fn submit(&mut self, n: u32) {
        self.cached_prod = self.cached_prod.wrapping_add(n);
        self.ring
            .producer()
            .store(self.cached_prod, Ordering::Release);
    }

    pub fn needs_wakeup(&self) -> bool {
        self.ring.needs_wakeup()
    }

    pub fn size(&self) -> u32 {
        self.ring.size()
    }
}

/// Our side of a ring we consume from (RX, completion).
pub struct ConsRing {
    ring: RingMap,
    cached_prod: u32,
    cached_cons: u32,
}

impl ConsRing {
    pub fn new(ring: RingMap) -> ConsRing {
        let cached_cons = ring.consumer().load(Ordering::Relaxed);
        let cached_prod = ring.producer().load(Ordering::Acquire);
        ConsRing {
            ring,
            cached_prod,
            cached_cons,
        }
    }

    /// Entries ready, at most `want`; reloads the kernel's producer only if
    /// the cache shows none.
    #[inline]
    pub fn ready(&mut self, want: u32) -> u32 {
        let mut n = ready_entries(self.cached_prod, self.cached_cons);
        if n == 0 {
            self.cached_prod = self.ring.producer().load(Ordering::Acquire);
            n = ready_entries(self.cached_prod, self.cached_cons);
        }
        n.min(want)
    }

    /// Address at offset `i` past our consumer (completion ring).
    #[inline]
    pub fn read_addr(&self, i: u32) -> u64 {
        let s = slot(self.cached_cons.wrapping_add(i), self.ring.mask);
        // SAFETY: `s` < size; the entry was published by the kernel (below
        // `ready()`, ordered by the acquire load) and is not rewritten until
        // we release it.
        unsafe { self.ring.desc.cast::<u64>().add(s).read() }
    }

    /// Descriptor (addr, len) at offset `i` past our consumer (RX ring).
    #[inline]
    pub fn read_desc(&self, i: u32) -> (u64, u32) {
        let s = slot(self.cached_cons.wrapping_add(i), self.ring.mask);
        // SAFETY: as in `read_addr`, with `xdp_desc` entries.
        let d = unsafe { self.ring.desc.cast::<libc::xdp_desc>().add(s).read() };
        (d.addr, d.len)
    }

    /// Hands `n` read entries back to the kernel.
    #[inline]
    pub fn release(&mut self, n: u32) {
        self.cached_cons = self.cached_cons.wrapping_add(n);
        self.ring
            .consumer()
            .store(self.cached_cons, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// A model with unbounded u64 counters agrees with the wrapping u32
        /// arithmetic for any start point (including near u32::MAX) and any
        /// sequence of produce/consume steps.
        #[test]
        fn indices_wrap_like_unbounded_counters(
            start in any::<u32>(),
            order in 0u32..12,
            steps in proptest::collection::vec((any::<bool>(), 0u32..5000), 0..200),
        ) {
            let size = 1u32 << order;
            let mask = size - 1;
            let (mut prod, mut cons) = (start, start);
            let (mut mprod, mut mcons) = (u64::from(start), u64::from(start));
            for (produce, n) in steps {
                if produce {
                    let n = n.min(free_slots(size, prod, cons));
                    prod = prod.wrapping_add(n);
                    mprod += u64::from(n);
                } else {
                    let n = n.min(ready_entries(prod, cons));
                    cons = cons.wrapping_add(n);
                    mcons += u64::from(n);
                }
                let outstanding = mprod - mcons;
                prop_assert!(outstanding <= u64::from(size));
                prop_assert_eq!(u64::from(ready_entries(prod, cons)), outstanding);
                prop_assert_eq!(u64::from(free_slots(size, prod, cons)), u64::from(size) - outstanding);
                prop_assert_eq!(slot(prod, mask) as u64, mprod % u64::from(size));
            }
        }
    }

    #[test]
    fn wrap_at_u32_max() {
        assert_eq!(ready_entries(3, u32::MAX - 1), 5);
        assert_eq!(free_slots(8, 3, u32::MAX - 1), 3);
        assert_eq!(slot(u32::MAX, 7), 7);
        assert_eq!(slot(u32::MAX.wrapping_add(1), 7), 0);
    }

    #[test]
    fn xdp_desc_layout() {
        assert_eq!(std::mem::size_of::<libc::xdp_desc>(), 16);
        assert_eq!(std::mem::align_of::<libc::xdp_desc>(), 8);
    }
}
