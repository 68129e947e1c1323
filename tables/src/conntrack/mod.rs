//! Connection tracking: the one shared mutable table.
//!
//! Writers and readers: every worker looks up, inserts, updates and removes
//! entries per packet; control dumps and reaps. No global lock: lookups take
//! no lock at all (each entry is a seqlock: a version that is odd while the
//! entry is being (re)written, checked before and after reading), inserts
//! and removals claim single index slots with compare-and-swap, and state
//! changes are compare-and-swaps on one word. Everything is allocated at
//! construction; nothing on the packet path allocates.
//!
//! Layout (see [`Conntrack::memory_bytes`], about 100 bytes per entry):
//! - `entries`: one 64-byte cache line per connection: version, state,
//!   flags, the original tuple, the reply tuple, last-seen time, policy epoch;
//! - `buckets`: 8-slot cache lines; each tuple of an entry (original and
//!   reply) sits in one of two candidate buckets (two-choice hashing), as
//!   (32-bit hash tag, entry index, direction). A lookup reads at most two
//!   buckets and validates a tag match against the entry's stored tuple, so a
//!   stale slot or a reused entry can never produce a wrong hit;
//! - `free`: a lock-free stack of free entry indices (ABA-safe with a tag).
//!
//! Tuples follow the kernel's convention: the *original* tuple is the first
//! packet as seen, the *reply* tuple what a reply looks like after NAT. A
//! packet matching the original tuple is rewritten to `reply.reversed()`,
//! one matching the reply tuple to `orig.reversed()`.
//!
//! Every tuple is held by at most one entry, as in the kernel, whose NAT
//! makes reply tuples unique (`nf_nat_core`'s `get_unique_tuple`). An
//! insert whose original tuple is tracked reports that entry
//! ([`InsertError::Exists`]: the same flow); one whose reply tuple another
//! connection holds reports the holder ([`InsertError::Clash`]): the caller
//! picks another source port or replaces a closed holder, and never forwards
//! with the holder's rewrite. Two workers inserting the same tuple at the same
//! instant cannot both succeed: an insert reserves its slots before it goes
//! live, and backs off when it finds another entry's slot for one of its
//! tuples (live or reserved) after its own ([`InsertError::Busy`] when the
//! other is still being inserted).
//!
//! When every entry is in use, new flows are refused ([`InsertError::Full`])
//! and established ones keep working; [`Conntrack::reap`] frees expired
//! entries.

mod tcp;
mod types;

pub use tcp::{next_state as tcp_next_state, reopens as tcp_reopens};
pub use types::{CtState, CtStats, Dir, EntryInfo, Hit, InsertError, Timeouts};

use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};

use crate::flow::{flow_hash, random_seed, FlowKey};
use crate::proto;

/// Meta word: version (bits 0-31), state (32-39), flags (40-47), FIN bits
/// (48-55).
#[derive(Clone, Copy)]
struct Meta(u64);

#[allow(clippy::cast_possible_truncation)] // each getter keeps exactly its field's bits
impl Meta {
    fn new(version: u32, state: u8, flags: u8, fins: u8) -> Meta {
        Meta(
            u64::from(version)
                | u64::from(state) << 32
                | u64::from(flags) << 40
                | u64::from(fins) << 48,
        )
    }
    fn version(self) -> u32 {
        (self.0 & 0xffff_ffff) as u32
    }
    fn state(self) -> u8 {
        (self.0 >> 32) as u8
    }
    fn flags(self) -> u8 {
        (self.0 >> 40) as u8
    }
    fn fins(self) -> u8 {
        (self.0 >> 48) as u8
    }
}

#[repr(align(64))]
#[derive(Default)]
struct Entry {
    meta: AtomicU64,
    orig: [AtomicU64; 2],
    reply: [AtomicU64; 2],
    last_seen: AtomicU64,
    epoch: AtomicU64,
}

#[repr(align(64))]
#[derive(Default)]
struct Bucket([AtomicU64; 8]);

/// The connection tracking table (see the module doc).
pub struct Conntrack {
    entries: Box<[Entry]>,
    buckets: Box<[Bucket]>,
    /// Free-list links: `next[i]` is the free entry after `i`.
    next: Box<[AtomicU32]>,
    /// Free-list head: tag (high 32 bits) and index + 1 (low 32; 0 = empty).
    head: AtomicU64,
    len: AtomicU32,
    cursor: AtomicU32,
    seed: u64,
    timeouts: Timeouts,
    stats: [AtomicU64; 5],
}

/// The state byte of an entry an insert has reserved but not yet published.
const RESERVED: u8 = 0xff;

const STAT_INSERTS: usize = 0;
const STAT_FULL: usize = 1;
const STAT_BUCKETS: usize = 2;
const STAT_REMOVALS: usize = 3;
const STAT_REAPED: usize = 4;

/// Refresh last-seen at most this often per flow: timeouts are in seconds,
/// and a store per packet would bounce the line between cores.
const TOUCH_MS: u64 = 250;

#[allow(clippy::cast_possible_truncation)] // packs and unpacks fixed bit fields
impl Conntrack {
    /// A table for `capacity` connections with Linux's timeouts.
    pub fn new(capacity: u32) -> Conntrack {
        Conntrack::with_timeouts(capacity, Timeouts::default())
    }

    /// A table for `capacity` connections (at most 2^31 - 2).
    pub fn with_timeouts(capacity: u32, timeouts: Timeouts) -> Conntrack {
        let capacity = capacity.clamp(1, (1 << 31) - 2);
        let n = capacity as usize;
        // Two tuples per entry in 8-slot buckets: 50% load when full.
        let buckets = (n / 2).max(2);
        // Free list: entry i links to entry i + 1 (stored as index + 1; 0 ends it).
        let next: Box<[AtomicU32]> = (0..capacity)
            .map(|i| AtomicU32::new(if i + 1 < capacity { i + 2 } else { 0 }))
            .collect();
        Conntrack {
            entries: (0..n).map(|_| Entry::default()).collect(),
            buckets: (0..buckets).map(|_| Bucket::default()).collect(),
            next,
            head: AtomicU64::new(1), // index 0 + 1, tag 0
            len: AtomicU32::new(0),
            cursor: AtomicU32::new(0),
            seed: random_seed(),
            timeouts,
            stats: Default::default(),
        }
    }

    /// Entries the table can hold.
    pub fn capacity(&self) -> u32 {
        self.entries.len() as u32
    }

    /// Live entries.
    pub fn len(&self) -> u32 {
        self.len.load(Ordering::Relaxed)
    }

    /// Whether no connection is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes allocated for the table.
    pub fn memory_bytes(&self) -> usize {
        std::mem::size_of_val(&*self.entries)
            + std::mem::size_of_val(&*self.buckets)
            + std::mem::size_of_val(&*self.next)
            + std::mem::size_of::<Conntrack>()
    }

    /// The timeouts in force.
    pub fn timeouts(&self) -> &Timeouts {
        &self.timeouts
    }

    /// Operation counters.
    pub fn stats(&self) -> CtStats {
        let s = |i: usize| self.stats[i].load(Ordering::Relaxed);
        CtStats {
            inserts: s(STAT_INSERTS),
            refused_full: s(STAT_FULL),
            refused_buckets: s(STAT_BUCKETS),
            removals: s(STAT_REMOVALS),
            reaped: s(STAT_REAPED),
        }
    }

    fn count(&self, stat: usize) {
        self.stats[stat].fetch_add(1, Ordering::Relaxed);
    }

    /// The two candidate buckets and the tag of a tuple.
    #[inline]
    fn place(&self, key: &FlowKey) -> (usize, usize, u32) {
        let h = flow_hash(key, self.seed);
        let n = self.buckets.len() as u64;
        let reduce = |x: u64| ((u128::from(x) * u128::from(n)) >> 64) as usize;
        (
            reduce(h),
            // The halves swapped and multiplied: independent enough of the
            // first bucket for two-choice placement, without another round.
            reduce(h.rotate_left(32).wrapping_mul(0x9e37_79b9_7f4a_7c15)),
            (h >> 32) as u32 | 1,
        )
    }

    fn slot_value(tag: u32, index: u32, dir: Dir) -> u64 {
        u64::from(tag) << 32 | u64::from(index + 1) << 1 | u64::from(dir == Dir::Reply)
    }

    /// Finds the connection `key` belongs to, in either direction.
    #[inline]
    pub fn lookup(&self, key: &FlowKey) -> Option<Hit> {
        self.lookup_at(key, self.place(key))
    }

    /// [`Self::lookup`] with `key`'s buckets and tag already computed.
    #[inline]
    fn lookup_at(&self, key: &FlowKey, (b1, b2, tag): (usize, usize, u32)) -> Option<Hit> {
        for b in [b1, b2] {
            let Some(bucket) = self.buckets.get(b) else {
                continue;
            };
            for slot in &bucket.0 {
                let v = slot.load(Ordering::Acquire);
                if v == 0 || (v >> 32) as u32 != tag {
                    continue;
                }
                let index = ((v >> 1) & 0x7fff_ffff) as u32 - 1;
                let dir = if v & 1 == 1 { Dir::Reply } else { Dir::Orig };
                if let Some(hit) = self.read(index, dir) {
                    let own = if dir == Dir::Orig {
                        hit.orig
                    } else {
                        hit.reply
                    };
                    if own == *key {
                        return Some(hit);
                    }
                }
            }
        }
        None
    }

    /// A consistent copy of entry `index`, if live.
    fn read(&self, index: u32, dir: Dir) -> Option<Hit> {
        let e = self.entries.get(index as usize)?;
        // Ordering: seqlock read. Acquire on the first version load orders
        // the field loads after it; the Acquire fence orders them before the
        // second version load. Equal, even versions mean no writer ran.
        let m1 = Meta(e.meta.load(Ordering::Acquire));
        if m1.version() & 1 == 1 || m1.state() == 0 {
            return None;
        }
        let orig = FlowKey::unpack(
            e.orig[0].load(Ordering::Relaxed),
            e.orig[1].load(Ordering::Relaxed),
        );
        let reply = FlowKey::unpack(
            e.reply[0].load(Ordering::Relaxed),
            e.reply[1].load(Ordering::Relaxed),
        );
        let epoch = e.epoch.load(Ordering::Relaxed) as u32;
        fence(Ordering::Acquire);
        let m2 = Meta(e.meta.load(Ordering::Relaxed));
        if m2.version() != m1.version() {
            return None;
        }
        Some(Hit {
            index,
            version: m2.version(),
            dir,
            orig,
            reply,
            state: CtState::from_u8(m2.state())?,
            flags: m2.flags(),
            epoch,
        })
    }

    fn pop_free(&self) -> Option<u32> {
        let mut head = self.head.load(Ordering::Acquire);
        loop {
            let index = (head & 0xffff_ffff) as u32;
            if index == 0 || index > self.capacity() {
                return None;
            }
            let next = self.next[(index - 1) as usize].load(Ordering::Relaxed);
            let tag = (head >> 32).wrapping_add(1);
            let new = tag << 32 | u64::from(next);
            // Ordering: the tag makes a concurrent pop/push pair visible
            // (ABA); Acquire pairs with the Release of `push_free`.
            match self
                .head
                .compare_exchange_weak(head, new, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return Some(index - 1),
                Err(h) => head = h,
            }
        }
    }

    fn push_free(&self, index: u32) {
        let mut head = self.head.load(Ordering::Acquire);
        loop {
            self.next[index as usize].store((head & 0xffff_ffff) as u32, Ordering::Relaxed);
            let tag = (head >> 32).wrapping_add(1);
            let new = tag << 32 | u64::from(index + 1);
            match self
                .head
                .compare_exchange_weak(head, new, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return,
                Err(h) => head = h,
            }
        }
    }

    /// Puts `value` into an empty slot of bucket `b1` or `b2`.
    fn claim(&self, b1: usize, b2: usize, value: u64) -> bool {
        for b in [b1, b2] {
            for slot in &self.buckets[b].0 {
                if slot.load(Ordering::Relaxed) == 0
                    && slot
                        // SeqCst: one half of the insert race (see `insert`).
                        .compare_exchange(0, value, Ordering::SeqCst, Ordering::Relaxed)
                        .is_ok()
                {
                    return true;
                }
            }
        }
        false
    }

    /// Clears the slot holding exactly `value`.
    fn release(&self, b1: usize, b2: usize, value: u64) {
        for b in [b1, b2] {
            for slot in &self.buckets[b].0 {
                if slot
                    .compare_exchange(value, 0, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
                {
                    return;
                }
            }
        }
    }

    /// Starts tracking a connection whose first packet has tuple `orig` and
    /// whose replies will have tuple `reply`. The initial state follows the
    /// protocol: a TCP SYN starts at SYN_SENT, any other TCP segment but a
    /// RST picks the connection up as ESTABLISHED (Linux's
    /// `nf_conntrack_tcp_loose`), UDP and ICMP start unreplied. `flags` and
    /// `epoch` are stored for the pipeline.
    pub fn insert(
        &self,
        orig: FlowKey,
        reply: FlowKey,
        tcp_flags: u8,
        flags: u8,
        epoch: u32,
        now_ms: u64,
    ) -> Result<Hit, InsertError> {
        let state = match orig.proto {
            proto::TCP if tcp_flags & tcp::flags::RST != 0 => return Err(InsertError::Invalid),
            proto::TCP if tcp_flags & tcp::flags::SYN != 0 && tcp_flags & tcp::flags::ACK == 0 => {
                CtState::SynSent
            }
            proto::TCP => CtState::Established,
            proto::ICMP => CtState::IcmpUnreplied,
            _ => CtState::UdpUnreplied,
        };
        // Each tuple is hashed once: its buckets serve the lookup, the
        // claim and the rival check.
        let (oplace, rplace) = (self.place(&orig), self.place(&reply));
        if let Some(hit) = self.lookup_at(&orig, oplace) {
            return Err(InsertError::Exists(hit));
        }
        if let Some(hit) = self.lookup_at(&reply, rplace) {
            return Err(InsertError::Clash(hit));
        }
        let Some(index) = self.pop_free() else {
            self.count(STAT_FULL);
            return Err(InsertError::Full);
        };
        let e = &self.entries[index as usize];
        // Ordering: the entry is unpublished (its slots are empty) but a
        // stale reader may still read it: mark it odd while writing, then
        // publish the even version with Release.
        let old = Meta(e.meta.load(Ordering::Relaxed));
        let writing = old.version().wrapping_add(1) | 1;
        e.meta
            .store(Meta::new(writing, 0, 0, 0).0, Ordering::Relaxed);
        fence(Ordering::Release);
        let (o0, o1) = orig.pack();
        let (r0, r1) = reply.pack();
        e.orig[0].store(o0, Ordering::Relaxed);
        e.orig[1].store(o1, Ordering::Relaxed);
        e.reply[0].store(r0, Ordering::Relaxed);
        e.reply[1].store(r1, Ordering::Relaxed);
        e.last_seen.store(now_ms, Ordering::Relaxed);
        e.epoch.store(u64::from(epoch), Ordering::Relaxed);
        // The fields are complete but the entry is only reserved: lookups
        // that find a slot before it goes live see a miss, neither `remove`
        // nor `reap` can take it (they act on live entries only), and a
        // concurrent insert of one of its tuples sees the reservation.
        let version = writing.wrapping_add(1);
        e.meta
            .store(Meta::new(version, RESERVED, 0, 0).0, Ordering::Release);
        let ((ob1, ob2, otag), (rb1, rb2, rtag)) = (oplace, rplace);
        let ov = Self::slot_value(otag, index, Dir::Orig);
        let rv = Self::slot_value(rtag, index, Dir::Reply);
        if !self.claim(ob1, ob2, ov) {
            self.retire(index);
            self.count(STAT_BUCKETS);
            return Err(InsertError::BucketsFull);
        }
        if orig != reply && !self.claim(rb1, rb2, rv) {
            self.release(ob1, ob2, ov);
            self.retire(index);
            self.count(STAT_BUCKETS);
            return Err(InsertError::BucketsFull);
        }
        // Ordering: two inserts of one tuple each claim a slot (a SeqCst
        // compare-exchange), then look for the other's (SeqCst loads): in
        // the single order of SeqCst operations one claim comes first, so
        // the later inserter's scan sees it; whoever sees a rival backs
        // off, so both cannot go live. (On x86 this costs nothing beyond the
        // locked instruction the claim already is.)
        let rival = self
            .rival(&orig, oplace, index)
            .map(|r| (r, true))
            .or_else(|| self.rival(&reply, rplace, index).map(|r| (r, false)));
        if let Some((rival, same_flow)) = rival {
            self.release(ob1, ob2, ov);
            if orig != reply {
                self.release(rb1, rb2, rv);
            }
            self.retire(index);
            return Err(match rival {
                Some(hit) if same_flow => InsertError::Exists(hit),
                Some(hit) => InsertError::Clash(hit),
                None => InsertError::Busy,
            });
        }
        self.len.fetch_add(1, Ordering::Relaxed);
        // Ordering: Release makes the fields and the claimed slots visible
        // before readers can see the entry live.
        e.meta.store(
            Meta::new(version, state as u8, flags, 0).0,
            Ordering::Release,
        );
        self.count(STAT_INSERTS);
        Ok(Hit {
            index,
            version,
            dir: Dir::Orig,
            orig,
            reply,
            state,
            flags,
            epoch,
        })
    }

    /// Another entry than `own` holding tuple `key`, live (`Some(hit)`) or
    /// still reserved by an insert under way (`None`).
    fn rival(
        &self,
        key: &FlowKey,
        (b1, b2, tag): (usize, usize, u32),
        own: u32,
    ) -> Option<Option<Hit>> {
        for b in [b1, b2] {
            for slot in &self.buckets[b].0 {
                // SeqCst: the other half of the insert race.
                let v = slot.load(Ordering::SeqCst);
                if v == 0 || (v >> 32) as u32 != tag {
                    continue;
                }
                let index = ((v >> 1) & 0x7fff_ffff) as u32 - 1;
                if index == own {
                    continue;
                }
                let dir = if v & 1 == 1 { Dir::Reply } else { Dir::Orig };
                match self.holder(index, dir) {
                    Some((held, hit)) if held == *key => return Some(hit),
                    _ => {}
                }
            }
        }
        None
    }

    /// The tuple of direction `dir` of entry `index` and the entry, if it
    /// is live; only the tuple if an insert has it reserved; `None` if it is
    /// free or changing.
    fn holder(&self, index: u32, dir: Dir) -> Option<(FlowKey, Option<Hit>)> {
        let e = self.entries.get(index as usize)?;
        // Ordering: the seqlock read of `read`. Going live changes only the
        // state, never the fields, so the state of the second load decides.
        let m1 = Meta(e.meta.load(Ordering::Acquire));
        if m1.version() & 1 == 1 || m1.state() == 0 {
            return None;
        }
        let words = if dir == Dir::Orig { &e.orig } else { &e.reply };
        let key = FlowKey::unpack(
            words[0].load(Ordering::Relaxed),
            words[1].load(Ordering::Relaxed),
        );
        fence(Ordering::Acquire);
        let m2 = Meta(e.meta.load(Ordering::Relaxed));
        if m2.version() != m1.version() || m2.state() == 0 {
            return None;
        }
        if m2.state() == RESERVED {
            return Some((key, None));
        }
        Some((key, self.read(index, dir)))
    }

    /// Marks an unpublished entry free again.
    fn retire(&self, index: u32) {
        let e = &self.entries[index as usize];
        let m = Meta(e.meta.load(Ordering::Relaxed));
        e.meta.store(
            Meta::new(m.version().wrapping_add(2), 0, 0, 0).0,
            Ordering::Release,
        );
        self.push_free(index);
    }

    /// Per-packet update: advances the state machine for a packet of the
    /// hit's direction with `tcp_flags`, and refreshes last-seen. Returns
    /// the new state, or `None` if the entry was removed meanwhile.
    #[inline]
    pub fn update(&self, hit: &Hit, tcp_flags: u8, now_ms: u64) -> Option<CtState> {
        let e = self.entries.get(hit.index as usize)?;
        let mut current = Meta(e.meta.load(Ordering::Acquire));
        let state = loop {
            if current.version() != hit.version {
                return None;
            }
            let state = CtState::from_u8(current.state())?;
            let (next, fins) = match (hit.orig.proto, state, hit.dir) {
                (proto::TCP, _, _) => tcp::next_state(state, current.fins(), hit.dir, tcp_flags),
                (_, CtState::UdpUnreplied, Dir::Reply) => (CtState::UdpReplied, 0),
                (_, CtState::IcmpUnreplied, Dir::Reply) => (CtState::IcmpReplied, 0),
                _ => (state, current.fins()),
            };
            if next == state && fins == current.fins() {
                break state;
            }
            let new = Meta::new(current.version(), next as u8, current.flags(), fins);
            match e
                .meta
                .compare_exchange(current.0, new.0, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => break next,
                Err(m) => current = Meta(m),
            }
        };
        let last = e.last_seen.load(Ordering::Relaxed);
        if now_ms >= last + TOUCH_MS || state != hit.state {
            e.last_seen.store(now_ms.max(last), Ordering::Relaxed);
        }
        Some(state)
    }

    /// Records that the flow is allowed under policy `epoch`.
    pub fn set_epoch(&self, hit: &Hit, epoch: u32) {
        if let Some(e) = self.entries.get(hit.index as usize) {
            if Meta(e.meta.load(Ordering::Acquire)).version() == hit.version {
                e.epoch.store(u64::from(epoch), Ordering::Relaxed);
            }
        }
    }

    /// Stops tracking the hit's connection. Returns false if it was already
    /// gone (removed or reused by another flow).
    pub fn remove(&self, hit: &Hit) -> bool {
        let Some(e) = self.entries.get(hit.index as usize) else {
            return false;
        };
        let current = Meta(e.meta.load(Ordering::Acquire));
        if current.version() != hit.version || current.version() & 1 == 1 || current.state() == 0 {
            return false;
        }
        let locked = Meta::new(
            current.version().wrapping_add(1),
            current.state(),
            current.flags(),
            current.fins(),
        );
        // Ordering: the CAS to an odd version excludes concurrent updates
        // and removals and tells readers the entry is changing.
        if e.meta
            .compare_exchange(current.0, locked.0, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
        {
            return false;
        }
        let (ob1, ob2, otag) = self.place(&hit.orig);
        let (rb1, rb2, rtag) = self.place(&hit.reply);
        self.release(ob1, ob2, Self::slot_value(otag, hit.index, Dir::Orig));
        self.release(rb1, rb2, Self::slot_value(rtag, hit.index, Dir::Reply));
        e.meta.store(
            Meta::new(locked.version().wrapping_add(1), 0, 0, 0).0,
            Ordering::Release,
        );
        self.push_free(hit.index);
        self.len.fetch_sub(1, Ordering::Relaxed);
        self.count(STAT_REMOVALS);
        true
    }

    /// When entry `hit` expires if no packet refreshes it.
    fn expiry(&self, state: CtState, last_seen: u64) -> u64 {
        last_seen.saturating_add(self.timeouts.of(state))
    }

    /// Frees expired entries, scanning at most `budget` entries from a
    /// round-robin cursor. Returns how many were freed.
    pub fn reap(&self, now_ms: u64, budget: u32) -> u32 {
        let cap = self.capacity();
        let start = self.cursor.fetch_add(budget, Ordering::Relaxed) % cap;
        let mut freed = 0;
        for i in 0..budget.min(cap) {
            let index = (start + i) % cap;
            let Some(hit) = self.read(index, Dir::Orig) else {
                continue;
            };
            let last = self.entries[index as usize]
                .last_seen
                .load(Ordering::Relaxed);
            if self.expiry(hit.state, last) <= now_ms && self.remove(&hit) {
                freed += 1;
                self.count(STAT_REAPED);
            }
        }
        freed
    }

    /// A copy of every live entry (control path: allocates).
    pub fn dump(&self) -> Vec<EntryInfo> {
        let now = self
            .entries
            .iter()
            .map(|e| e.last_seen.load(Ordering::Relaxed))
            .max()
            .unwrap_or(0);
        self.dump_at(now)
    }

    /// A copy of every live entry, with expiry times relative to `now_ms`.
    pub fn dump_at(&self, now_ms: u64) -> Vec<EntryInfo> {
        (0..self.capacity())
            .filter_map(|i| {
                let hit = self.read(i, Dir::Orig)?;
                let last = self.entries[i as usize].last_seen.load(Ordering::Relaxed);
                Some(EntryInfo {
                    orig: hit.orig,
                    reply: hit.reply,
                    state: hit.state,
                    flags: hit.flags,
                    epoch: hit.epoch,
                    last_seen_ms: last,
                    expires_in_ms: self.expiry(hit.state, last).saturating_sub(now_ms),
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
