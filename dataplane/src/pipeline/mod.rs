//! The packet pipeline: a batch of frames from one port in, a verdict per
//! frame out (an output port, or a drop with its reason).
//!
//! Stages run in order over the whole batch, each a plain loop:
//!
//! ```text
//! parse -> admit (ARP, anti-spoofing, VXLAN decap) -> track (conntrack
//!       hit, reopen) -> balance (service DNAT/SNAT, new flows) -> police
//!       (policy, commit with a unique reply tuple) -> reject (RST / ICMP
//!       port unreachable) -> forward (later fragments follow their first;
//!       route, NAT rewrite, TTL, MACs, VXLAN encap; first fragments
//!       recorded)
//! ```
//!
//! A super-packet from a TAP port (up to 64 KB, a large frame of the pool
//! with its virtio-net header) runs through the stages once, like any
//! packet: `parse` checks its header against the frame, NAT keeps a partial
//! checksum partial, and the worker segments it only where the egress
//! cannot take it whole.
//!
//! A stage only looks at packets still [`Verdict::Pending`]. The pipeline
//! reads one immutable snapshot for the whole batch and the clock once per
//! batch (`now_ms`); it allocates nothing, takes no lock and makes no system
//! call.

mod admit;
mod balance;
mod forward;
mod fragment;
pub mod nat;
mod parse;
mod police;
mod reject;
mod track;

use std::sync::Arc;

use tables::affinity::AffinityTable;
use tables::conntrack::Conntrack;
use tables::flow::FlowKey;
use tables::fragments::FragmentTable;
use tables::route::PortId;
use tables::snapshot::Snapshot;

use crate::counters::{Counters, DropReason};
use crate::frame::{Desc, FramePool, BATCH};
use crate::port::PortKind;

pub use forward::encapsulate;
pub use parse::{parse_frame, Parsed};

/// What becomes of a packet.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Verdict {
    /// Still being processed.
    #[default]
    Pending,
    /// Send out of this port.
    Tx(PortId),
    /// Dropped and counted.
    Drop(DropReason),
}

/// What kind of frame a packet is, after parsing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Class {
    /// An IPv4 packet the switch tracks as a flow.
    #[default]
    Flow,
    /// An ICMP error about another flow (`inner` holds that flow's tuple as
    /// it appears in the quoted header).
    IcmpError,
    /// An ARP packet.
    Arp,
    /// An IPv4 fragment after the first: no L4 header (`key` has ports 0);
    /// it follows its datagram's first fragment.
    Fragment,
}

/// Where a packet sits in a fragmented datagram.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Frag {
    /// Not a fragment.
    #[default]
    Whole,
    /// The first fragment (offset 0, more to follow): `len` payload bytes.
    First { id: u16, len: u16 },
    /// A later fragment at byte `offset` with `len` payload bytes; `last`
    /// when "more fragments" is clear.
    Later {
        id: u16,
        offset: u16,
        len: u16,
        last: bool,
    },
}

/// Per-packet state carried between stages.
#[derive(Clone, Copy, Debug, Default)]
pub struct Meta {
    pub desc: Desc,
    pub verdict: Verdict,
    pub class: Class,
    /// Offset of the IPv4 header in the frame.
    pub l3: u16,
    /// Offset of the L4 header in the frame.
    pub l4: u16,
    /// The flow as on the wire (inner headers after decapsulation).
    pub key: FlowKey,
    pub tcp_flags: u8,
    /// For ICMP errors: the quoted packet's tuple.
    pub inner: FlowKey,
    /// Offset of the quoted IPv4 header (ICMP errors).
    pub inner_l3: u16,
    /// Sent by a pod on this node (its egress policy applies).
    pub from_pod: bool,
    /// Arrived through the VXLAN overlay.
    pub overlay: bool,
    /// The flow has a conntrack entry (found or just created).
    pub tracked: bool,
    /// Rewrite the packet's tuple to this (NAT), if set.
    pub nat: Option<FlowKey>,
    /// New flow: the reply tuple chosen by `balance`.
    pub reply: FlowKey,
    /// New flow: `reply.dst` is the node's address (masquerade).
    pub masquerade: bool,
    /// Answer the packet with a TCP RST or an ICMP port unreachable from
    /// its destination, counting this reason (set by `balance`).
    pub reject: Option<DropReason>,
    pub frag: Frag,
    /// The L4 checksum holds only the pseudo-header sum (the sender left
    /// it to the egress: a virtio-net NEEDS_CSUM frame); NAT updates it as
    /// the kernel does for CHECKSUM_PARTIAL.
    pub partial_csum: bool,
}

/// Per-worker pipeline state: the shared tables it reads and writes, its
/// counters, and scratch space for one batch.
pub struct Pipeline {
    pub conntrack: Arc<Conntrack>,
    pub affinity: Arc<AffinityTable>,
    pub fragments: Arc<FragmentTable>,
    pub counters: Arc<Counters>,
    /// Seed of the hash that picks backends and VXLAN source ports.
    seed: u64,
    metas: [Meta; BATCH],
}

impl Pipeline {
    /// A pipeline over the shared tables, counting into `counters`. All
    /// workers of a node must use the same `seed` so both directions of a
    /// flow hash alike on every worker.
    pub fn new(shared: &Shared, counters: Arc<Counters>, seed: u64) -> Pipeline {
        Pipeline {
            conntrack: shared.conntrack.clone(),
            affinity: shared.affinity.clone(),
            fragments: shared.fragments.clone(),
            counters,
            seed,
            metas: [Meta::default(); BATCH],
        }
    }

    /// Runs `descs` (received on `in_port`, of kind `kind`) through every
    /// stage and returns how many it took (at most `BATCH`). On return the
    /// first that many [`Pipeline::metas`] hold each frame's verdict and
    /// final descriptor (encapsulation and decapsulation move the start).
    pub fn process(
        &mut self,
        snap: &Snapshot,
        pool: &mut FramePool,
        in_port: PortId,
        kind: PortKind,
        descs: &[Desc],
        now_ms: u64,
    ) -> usize {
        let n = descs.len().min(BATCH);
        let metas = &mut self.metas[..n];
        for (m, d) in metas.iter_mut().zip(descs) {
            *m = Meta {
                desc: *d,
                ..Meta::default()
            };
        }
        let ctx = Ctx {
            snap,
            in_port,
            kind,
            now_ms,
            seed: self.seed,
            conntrack: &self.conntrack,
            affinity: &self.affinity,
            fragments: &self.fragments,
            counters: &self.counters,
        };
        parse::run(&ctx, pool, metas);
        admit::run(&ctx, pool, metas);
        track::run(&ctx, metas);
        balance::run(&ctx, metas);
        police::run(&ctx, metas);
        reject::run(&ctx, pool, metas);
        forward::run(&ctx, pool, metas);
        for m in metas.iter_mut() {
            match m.verdict {
                Verdict::Drop(reason) => self.counters.count_drop(reason),
                Verdict::Tx(_) => self.counters.forwarded.add(1),
                Verdict::Pending => {
                    m.verdict = Verdict::Drop(DropReason::Unclassified);
                    self.counters.count_drop(DropReason::Unclassified);
                }
            }
        }
        n
    }

    /// The metadata of the last processed batch.
    pub fn metas(&self) -> &[Meta] {
        &self.metas
    }
}

/// The tables every worker of a node shares: conntrack, session affinity
/// and the fragment table (all mutable, lock-free).
#[derive(Clone)]
pub struct Shared {
    pub conntrack: Arc<Conntrack>,
    pub affinity: Arc<AffinityTable>,
    pub fragments: Arc<FragmentTable>,
}

impl Shared {
    /// Tables for `conntrack` connections, `affinity` remembered clients and
    /// `fragments` fragmented datagrams in flight.
    pub fn new(conntrack: u32, affinity: usize, fragments: usize) -> Shared {
        Shared {
            conntrack: Arc::new(Conntrack::new(conntrack)),
            affinity: Arc::new(AffinityTable::new(affinity)),
            fragments: Arc::new(FragmentTable::new(
                fragments,
                tables::fragments::DEFAULT_TIMEOUT_MS,
            )),
        }
    }
}

/// What every stage may read for one batch.
pub(crate) struct Ctx<'a> {
    pub snap: &'a Snapshot,
    pub in_port: PortId,
    pub kind: PortKind,
    pub now_ms: u64,
    pub seed: u64,
    pub conntrack: &'a Conntrack,
    pub affinity: &'a AffinityTable,
    pub fragments: &'a FragmentTable,
    pub counters: &'a Counters,
}

/// The packets of a batch still being processed.
#[inline]
pub(crate) fn pending(metas: &mut [Meta]) -> impl Iterator<Item = &mut Meta> {
    metas.iter_mut().filter(|m| m.verdict == Verdict::Pending)
}
