//! IPv4 fragments, forwarded without reassembly.
//!
//! Only a datagram's first fragment (offset 0) carries the L4 header, so
//! only it can be classified: conntrack, NAT, policy and the route are
//! decided for it as for any packet, and the decision (the tuple it was
//! rewritten to) is recorded here under (source, destination, protocol, IP
//! ID). Later fragments look the record up and get the same address
//! rewrite and the same route; nothing is reassembled or re-fragmented (the
//! pod MTU leaves room for the VXLAN headers). Cilium tracks fragments the
//! same way; the kernel reassembles before conntrack instead.
//!
//! Writers and readers: every worker, lock-free. A record is one 64-byte
//! slot guarded by a seqlock version (odd while written). The bytes of the
//! datagram seen so far (its coverage: the run from offset 0 and at most one
//! more run after a gap) are one word, updated by compare-and-swap and tagged
//! with the slot's incarnation, so an update can never land on a reused slot.
//! A fragment that overlaps or repeats what was seen, or would leave a
//! second gap, is refused; a record ends when its datagram is complete or
//! its timeout passes. The table is fixed at construction (buckets of
//! [`WAYS`] slots); when a new datagram's bucket holds only live records the
//! first fragment is refused ([`FragError::Full`]) and counted by the caller.

use std::sync::atomic::{fence, AtomicU64, Ordering};

use crate::flow::{flow_hash, random_seed, FlowKey};

/// Slots per bucket.
pub const WAYS: usize = 4;
/// How long a datagram's fragments may take to pass (a record's lifetime
/// from its first fragment): fragments of one datagram leave their sender
/// back to back, so this is generous.
pub const DEFAULT_TIMEOUT_MS: u64 = 2_000;

/// What identifies the fragments of one datagram (RFC 791).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FragKey {
    pub src: u32,
    pub dst: u32,
    pub id: u16,
    pub proto: u8,
}

impl FragKey {
    fn pack(&self) -> (u64, u64) {
        (
            (u64::from(self.src) << 32) | u64::from(self.dst),
            (u64::from(self.id) << 8) | u64::from(self.proto) | 1 << 63,
        )
    }
}

/// Why a fragment was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FragError {
    /// No record of the datagram's first fragment (never seen, not
    /// forwarded, expired, or the datagram is already complete).
    NoFirst,
    /// The fragment overlaps or repeats bytes already forwarded, or
    /// contradicts the datagram's end.
    Overlap,
    /// The fragment would leave a second gap in the datagram.
    Gaps,
    /// No free slot for a new datagram.
    Full,
}

/// Coverage of a datagram in 8-byte units: `[0, a_end)`, an optional second
/// run `[b_start, b_end)`, and the datagram's end once its last fragment was
/// seen. Packed with the slot's incarnation tag into one word.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Coverage {
    a_end: u16,
    b_start: u16,
    b_end: u16,
    /// End of the datagram, when known.
    total: Option<u16>,
}

const UNIT_BITS: u32 = 14;
const UNIT_MASK: u64 = (1 << UNIT_BITS) - 1;

impl Coverage {
    fn pack(self, tag: u8) -> u64 {
        u64::from(self.a_end)
            | u64::from(self.b_start) << UNIT_BITS
            | u64::from(self.b_end) << (2 * UNIT_BITS)
            | u64::from(self.total.unwrap_or(0)) << (3 * UNIT_BITS)
            | u64::from(self.total.is_some()) << (4 * UNIT_BITS)
            | u64::from(tag) << 57
    }

    #[allow(clippy::cast_possible_truncation)] // each field is masked to 14 bits
    fn unpack(word: u64) -> (Coverage, u8) {
        let field = |i: u32| ((word >> (i * UNIT_BITS)) & UNIT_MASK) as u16;
        let known = (word >> (4 * UNIT_BITS)) & 1 == 1;
        (
            Coverage {
                a_end: field(0),
                b_start: field(1),
                b_end: field(2),
                total: known.then(|| field(3)),
            },
            (word >> 57) as u8,
        )
    }

    /// The coverage after a fragment of units `[start, end)` (`last`: it has
    /// "more fragments" clear).
    fn add(mut self, start: u16, end: u16, last: bool) -> Result<Coverage, FragError> {
        let has_b = self.b_end > self.b_start;
        if start < self.a_end || (has_b && start < self.b_end && self.b_start < end) {
            return Err(FragError::Overlap);
        }
        let furthest = if has_b { self.b_end } else { self.a_end };
        match (self.total, last) {
            (Some(_), true) => return Err(FragError::Overlap),
            (Some(total), false) if end > total => return Err(FragError::Overlap),
            (None, true) if end < furthest => return Err(FragError::Overlap),
            (None, true) => self.total = Some(end),
            _ => {}
        }
        if start == self.a_end {
            self.a_end = end;
            if has_b && self.a_end == self.b_start {
                self.a_end = self.b_end;
                (self.b_start, self.b_end) = (0, 0);
            }
        } else if !has_b {
            (self.b_start, self.b_end) = (start, end);
        } else if end == self.b_start {
            self.b_start = start;
        } else if start == self.b_end {
            self.b_end = end;
        } else {
            return Err(FragError::Gaps);
        }
        Ok(self)
    }

    fn complete(&self) -> bool {
        self.total == Some(self.a_end) && self.b_end == self.b_start
    }
}

#[repr(align(64))]
#[derive(Default)]
struct Slot {
    /// Seqlock: odd while written; bumped again when the record ends.
    version: AtomicU64,
    key: [AtomicU64; 2],
    target: [AtomicU64; 2],
    coverage: AtomicU64,
    expires: AtomicU64,
}

/// A consistent copy of a live record.
struct Record {
    index: usize,
    version: u64,
    target: FlowKey,
}

/// The fragment table (see the module doc).
pub struct FragmentTable {
    slots: Box<[Slot]>,
    buckets: usize,
    timeout_ms: u64,
    seed: u64,
}

/// Bytes to 8-byte units, rounded up (a last fragment may end anywhere).
#[allow(clippy::cast_possible_truncation)] // below 2^14 for any IPv4 offset
fn units(bytes: u32) -> u16 {
    bytes.div_ceil(8).min(UNIT_MASK as u32) as u16
}

impl FragmentTable {
    /// A table for about `capacity` datagrams in flight at once, each
    /// recorded for at most `timeout_ms`.
    pub fn new(capacity: usize, timeout_ms: u64) -> FragmentTable {
        let buckets = capacity.div_ceil(WAYS).max(1);
        FragmentTable {
            slots: (0..buckets * WAYS).map(|_| Slot::default()).collect(),
            buckets,
            timeout_ms,
            seed: random_seed(),
        }
    }

    /// Datagrams the table can track at once.
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// Bytes allocated for the table.
    pub fn memory_bytes(&self) -> usize {
        std::mem::size_of_val(&*self.slots) + std::mem::size_of::<FragmentTable>()
    }

    /// Records currently live at `now_ms` (control path: scans the table).
    pub fn live(&self, now_ms: u64) -> usize {
        self.slots
            .iter()
            .filter(|s| {
                s.version.load(Ordering::Acquire) & 1 == 0
                    && s.key[1].load(Ordering::Relaxed) != 0
                    && s.expires.load(Ordering::Relaxed) > now_ms
            })
            .count()
    }

    fn bucket(&self, key: &FragKey) -> std::ops::Range<usize> {
        let probe = FlowKey {
            src: key.src,
            dst: key.dst,
            sport: key.id,
            dport: 0,
            proto: key.proto,
        };
        let h = flow_hash(&probe, self.seed);
        let b = usize::try_from((u128::from(h) * self.buckets as u128) >> 64).unwrap_or(0);
        b * WAYS..(b + 1) * WAYS
    }

    /// The live record of `key` at `now_ms`.
    fn find(&self, key: &FragKey, now_ms: u64) -> Option<Record> {
        let (k0, k1) = key.pack();
        for index in self.bucket(key) {
            let s = &self.slots[index];
            // Ordering: seqlock read, as conntrack's (Acquire, fields,
            // Acquire fence, the version again).
            let v1 = s.version.load(Ordering::Acquire);
            if v1 & 1 == 1 {
                continue;
            }
            let same =
                s.key[0].load(Ordering::Relaxed) == k0 && s.key[1].load(Ordering::Relaxed) == k1;
            let target = FlowKey::unpack(
                s.target[0].load(Ordering::Relaxed),
                s.target[1].load(Ordering::Relaxed),
            );
            let live = s.expires.load(Ordering::Relaxed) > now_ms;
            fence(Ordering::Acquire);
            if same && live && s.version.load(Ordering::Relaxed) == v1 {
                return Some(Record {
                    index,
                    version: v1,
                    target,
                });
            }
        }
        None
    }

    /// Records the first fragment of datagram `key`, rewritten to `target`,
    /// whose payload is `len` bytes (a multiple of 8: more fragments follow).
    pub fn first(
        &self,
        key: &FragKey,
        target: &FlowKey,
        len: u32,
        now_ms: u64,
    ) -> Result<(), FragError> {
        if self.find(key, now_ms).is_some() {
            return Err(FragError::Overlap);
        }
        let (k0, k1) = key.pack();
        let (t0, t1) = target.pack();
        for index in self.bucket(key) {
            let s = &self.slots[index];
            let v = s.version.load(Ordering::Acquire);
            let free = s.key[1].load(Ordering::Relaxed) == 0
                || s.expires.load(Ordering::Relaxed) <= now_ms;
            if v & 1 == 1 || !free {
                continue;
            }
            // Ordering: the CAS to odd takes the slot; readers that raced
            // with it see the version move and ignore what they read.
            if s.version
                .compare_exchange(v, v + 1, Ordering::AcqRel, Ordering::Relaxed)
                .is_err()
            {
                continue;
            }
            fence(Ordering::Release);
            let tag = Self::tag(v + 2);
            let coverage = Coverage {
                a_end: units(len),
                ..Coverage::default()
            };
            s.key[0].store(k0, Ordering::Relaxed);
            s.key[1].store(k1, Ordering::Relaxed);
            s.target[0].store(t0, Ordering::Relaxed);
            s.target[1].store(t1, Ordering::Relaxed);
            s.coverage.store(coverage.pack(tag), Ordering::Relaxed);
            s.expires
                .store(now_ms.saturating_add(self.timeout_ms), Ordering::Relaxed);
            s.version.store(v + 2, Ordering::Release);
            return Ok(());
        }
        Err(FragError::Full)
    }

    /// The incarnation tag of a slot at `version` (7 bits).
    #[allow(clippy::cast_possible_truncation)] // masked to 7 bits
    fn tag(version: u64) -> u8 {
        ((version >> 1) & 0x7f) as u8
    }

    /// A later fragment of datagram `key` at byte `offset` with `len` bytes
    /// of payload (`last`: "more fragments" clear): the tuple its datagram's
    /// first fragment was rewritten to, once the bytes are accounted for.
    /// The record ends with the datagram's last missing bytes.
    pub fn follow(
        &self,
        key: &FragKey,
        offset: u32,
        len: u32,
        last: bool,
        now_ms: u64,
    ) -> Result<FlowKey, FragError> {
        let record = self.find(key, now_ms).ok_or(FragError::NoFirst)?;
        let s = &self.slots[record.index];
        let (start, end) = (units(offset), units(offset + len));
        let mut word = s.coverage.load(Ordering::Acquire);
        loop {
            let (coverage, tag) = Coverage::unpack(word);
            if tag != Self::tag(record.version) {
                return Err(FragError::NoFirst);
            }
            let next = coverage.add(start, end, last)?;
            match s.coverage.compare_exchange(
                word,
                next.pack(tag),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    if next.complete() {
                        self.end(record.index, record.version);
                    }
                    return Ok(record.target);
                }
                Err(w) => word = w,
            }
        }
    }

    /// Frees slot `index` if it still holds the record of `version`.
    fn end(&self, index: usize, version: u64) {
        let s = &self.slots[index];
        if s.version
            .compare_exchange(version, version + 1, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            s.key[1].store(0, Ordering::Relaxed);
            s.expires.store(0, Ordering::Relaxed);
            s.version.store(version + 2, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::Proto;
    use proptest::prelude::*;

    fn key(id: u16) -> FragKey {
        FragKey {
            src: 0x0af4_010b,
            dst: 0x0a60_0014,
            id,
            proto: Proto::Udp.number(),
        }
    }

    fn target() -> FlowKey {
        FlowKey {
            src: 0x0af4_010b,
            dst: 0x0af4_020a,
            sport: 40_000,
            dport: 8080,
            proto: Proto::Udp.number(),
        }
    }

    #[test]
    fn later_fragments_follow_the_first_until_the_datagram_is_complete() {
        let t = FragmentTable::new(64, 1000);
        t.first(&key(7), &target(), 1480, 0).unwrap();
        assert_eq!(t.follow(&key(7), 1480, 1480, false, 1), Ok(target()));
        assert_eq!(t.live(1), 1);
        assert_eq!(t.follow(&key(7), 2960, 100, true, 2), Ok(target()));
        assert_eq!(t.live(2), 0, "a complete datagram frees its record");
        assert_eq!(
            t.follow(&key(7), 2960, 100, true, 3),
            Err(FragError::NoFirst),
            "a duplicate after completion has no record"
        );
        assert_eq!(t.follow(&key(8), 1480, 8, true, 3), Err(FragError::NoFirst));
    }

    #[test]
    fn overlaps_duplicates_and_a_second_gap_are_refused() {
        let t = FragmentTable::new(64, 1000);
        t.first(&key(1), &target(), 1480, 0).unwrap();
        assert_eq!(
            t.first(&key(1), &target(), 1480, 0),
            Err(FragError::Overlap)
        );
        assert_eq!(t.follow(&key(1), 8, 8, false, 0), Err(FragError::Overlap));
        // Out of order: the last fragment first leaves one gap (allowed).
        assert_eq!(t.follow(&key(1), 4440, 40, true, 0), Ok(target()));
        assert_eq!(
            t.follow(&key(1), 4440, 40, true, 0),
            Err(FragError::Overlap)
        );
        // A fragment in the middle of the gap would make two gaps.
        assert_eq!(t.follow(&key(1), 2960, 8, false, 0), Err(FragError::Gaps));
        assert_eq!(
            t.follow(&key(1), 1480, 3000, false, 0),
            Err(FragError::Overlap),
            "past the datagram's end"
        );
        assert_eq!(t.follow(&key(1), 1480, 2960, false, 0), Ok(target()));
        assert_eq!(t.live(0), 0);
    }

    #[test]
    fn records_expire_and_a_full_bucket_refuses_new_datagrams() {
        let t = FragmentTable::new(WAYS, 100);
        for id in 0..u16::try_from(WAYS).unwrap() {
            t.first(&key(id), &target(), 8, 0).unwrap();
        }
        assert_eq!(t.first(&key(99), &target(), 8, 50), Err(FragError::Full));
        assert_eq!(t.follow(&key(0), 8, 8, true, 100), Err(FragError::NoFirst));
        t.first(&key(99), &target(), 8, 100).unwrap();
        assert_eq!(t.follow(&key(99), 8, 8, true, 101), Ok(target()));
    }

    /// The bytes of a datagram a reference model accepts: no byte twice,
    /// nothing past the end once the end is known, at most two runs.
    fn model_accepts(
        seen: &mut Vec<(u16, u16)>,
        total: &mut Option<u16>,
        s: u16,
        e: u16,
        last: bool,
    ) -> bool {
        if seen.iter().any(|&(a, b)| s < b && a < e) {
            return false;
        }
        match (*total, last) {
            (Some(_), true) => return false,
            (Some(t), false) if e > t => return false,
            (None, true) if seen.iter().any(|&(_, b)| b > e) => return false,
            _ => {}
        }
        let mut next = seen.clone();
        next.push((s, e));
        next.sort_unstable();
        let mut runs: Vec<(u16, u16)> = Vec::new();
        for (a, b) in next {
            match runs.last_mut() {
                Some(r) if r.1 == a => r.1 = b,
                _ => runs.push((a, b)),
            }
        }
        if runs.len() > 2 {
            return false;
        }
        *seen = runs;
        if last {
            *total = Some(e);
        }
        true
    }

    proptest! {
        /// Random trains of later fragments (any order, overlaps, repeats)
        /// are accepted exactly when the reference model accepts them.
        #[test]
        fn coverage_matches_a_reference_model(
            first_units in 1u16..16,
            frags in proptest::collection::vec((0u16..40, 1u16..10, any::<bool>()), 0..24),
        ) {
            let t = FragmentTable::new(8, 1000);
            t.first(&key(3), &target(), u32::from(first_units) * 8, 0).unwrap();
            let mut seen = vec![(0, first_units)];
            let mut total = None;
            let mut done = false;
            for (s, n, last) in frags {
                let got = t.follow(&key(3), u32::from(s) * 8, u32::from(n) * 8, last, 0);
                if done {
                    prop_assert_eq!(got, Err(FragError::NoFirst));
                    continue;
                }
                let want = model_accepts(&mut seen, &mut total, s, s + n, last);
                prop_assert_eq!(got.is_ok(), want, "{:?} at {} +{} last={}", got, s, n, last);
                done = total.is_some() && seen == vec![(0, total.unwrap_or(0))];
            }
            prop_assert_eq!(t.live(0), usize::from(!done));
        }
    }
}
