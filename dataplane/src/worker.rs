//! A worker: one frame pool, the ports it serves (queue i of every port for
//! worker i), and the pipeline. One call to [`Worker::poll`] gives every
//! port one burst of at most `BATCH` frames, so a flooding port cannot
//! starve the others (fair batch budget), processes each burst through the
//! pipeline and transmits the results, grouped per output port.
//!
//! Super-packets (large frames from offload-aware ports) go whole to a port
//! that takes offloads; for any other port the worker splits them into
//! segments (software GSO) and completes partial checksums as it transmits,
//! the segments of one super-packet in one burst. Towards a port that takes
//! offloads, consecutive segments of one TCP flow in a burst are coalesced
//! into a super-packet first (software GRO).
//!
//! A worker is owned by one thread; ports are added and removed between
//! polls by that thread (the caller passes changes in), never stopping the
//! other ports.

use std::sync::Arc;

use tables::route::PortId;
use tables::snapshot::Publisher;

use crate::counters::{Counters, DropReason};
use crate::frame::{Desc, FramePool, BATCH, LARGE_FRAMES};
use crate::gro;
use crate::gso::{self, ExpandError};
use crate::pipeline::{Pipeline, Verdict};
use crate::port::{Port, PortKind, Readiness};

struct Slot {
    port: Box<dyn Port>,
    kind: PortKind,
}

/// Frames staged for one output port during a poll.
struct TxQueue {
    descs: [Desc; BATCH],
    len: usize,
}

/// One worker's ports, pool and pipeline.
pub struct Worker {
    // Ports before the pool: fields drop in order, and a port may have
    // registered the pool's memory with the kernel (AF_XDP UMEM).
    ports: Vec<Option<Slot>>,
    /// The ids of the occupied slots, in the order they are polled: a
    /// round visits only ports that exist, however many ids there are.
    active: Vec<PortId>,
    pool: FramePool,
    tx: Vec<TxQueue>,
    dirty: Vec<PortId>,
    rx: [Desc; BATCH],
    /// Segments and copies of large frames for a port without offloads.
    small: Box<[Desc; SEGMENTS]>,
    pipeline: Pipeline,
    publisher: Arc<Publisher>,
    /// Marks the ports with frames among those that need asking (TAP).
    readiness: Option<Box<dyn Readiness>>,
}

/// Frames one transmit to a port without offloads may carry: the segments
/// of several super-packets (one of 64 KB in 1448-byte segments is 46).
/// A super-packet of more segments than this (a segment size under 256
/// bytes) is dropped as `gso_too_many_segments`.
pub const SEGMENTS: usize = 256;

impl Worker {
    /// A worker with a pool of `frames` frames reading tables from
    /// `publisher`. `max_ports` bounds the port ids it can serve.
    pub fn new(
        frames: u32,
        max_ports: usize,
        publisher: Arc<Publisher>,
        pipeline: Pipeline,
    ) -> Worker {
        Worker {
            pool: FramePool::with_large(frames, LARGE_FRAMES),
            ports: (0..max_ports).map(|_| None).collect(),
            active: Vec::with_capacity(max_ports),
            tx: (0..max_ports)
                .map(|_| TxQueue {
                    descs: [Desc::default(); BATCH],
                    len: 0,
                })
                .collect(),
            dirty: Vec::with_capacity(max_ports),
            rx: [Desc::default(); BATCH],
            small: Box::new([Desc::default(); SEGMENTS]),
            pipeline,
            publisher,
            readiness: None,
        }
    }

    /// Asks `readiness` once per round which of its ports have frames.
    pub fn set_readiness(&mut self, readiness: Box<dyn Readiness>) {
        self.readiness = Some(readiness);
    }

    /// Serves `port` as port `id`. Returns the port back if `id` is out of
    /// range.
    pub fn add_port(
        &mut self,
        id: PortId,
        kind: PortKind,
        port: Box<dyn Port>,
    ) -> Result<(), Box<dyn Port>> {
        match self.ports.get_mut(usize::from(id)) {
            Some(slot) => {
                // Stock its fill ring now: a frame that reaches a socket
                // with an empty fill ring is lost (say, the ARP request
                // of a pod answering the first packet sent to it).
                let mut port = port;
                port.service(&mut self.pool);
                *slot = Some(Slot { port, kind });
                if !self.active.contains(&id) {
                    self.active.push(id);
                    self.active.sort_unstable();
                }
                Ok(())
            }
            None => Err(port),
        }
    }

    /// Stops serving port `id` and hands it back, after taking back every
    /// frame it held.
    pub fn remove_port(&mut self, id: PortId) -> Option<Box<dyn Port>> {
        let mut slot = self.ports.get_mut(usize::from(id)).and_then(Option::take)?;
        self.active.retain(|a| *a != id);
        slot.port.close(&mut self.pool);
        Some(slot.port)
    }

    /// The worker's frame pool (frame accounting, tests).
    pub fn pool(&self) -> &FramePool {
        &self.pool
    }

    /// The frame pool, to register it as the worker's AF_XDP UMEM before
    /// its sockets are bound.
    pub fn pool_mut(&mut self) -> &mut FramePool {
        &mut self.pool
    }

    /// The descriptors to sleep on when idle (adaptive polling).
    pub fn poll_fds(&self, out: &mut Vec<i32>) {
        out.clear();
        out.extend(self.ports.iter().flatten().filter_map(|s| s.port.poll_fd()));
        out.extend(self.readiness.as_ref().and_then(|r| r.fd()));
    }

    /// Refreshes the frame-accounting gauges and copies the ports' own ring
    /// counters into the worker's per-port counters (for the local API).
    pub fn publish_gauges(&self) {
        let c = &self.pipeline.counters;
        c.frames_total.set(u64::from(self.pool.total()));
        c.frames_free.set(u64::from(self.pool.free_count()));
        let in_flight: u32 = self
            .ports
            .iter()
            .flatten()
            .map(|s| s.port.in_flight())
            .sum();
        c.frames_in_flight.set(u64::from(in_flight));
        for (index, slot) in self.ports.iter().enumerate() {
            let (Some(slot), Some(mine)) = (slot, c.port(index)) else {
                continue;
            };
            if let Some(ring) = slot.port.ring_counters() {
                mine.fill_empty.set(ring.fill_empty.get());
                mine.wakeups.set(ring.wakeups.get());
                mine.ebusy_retries.set(ring.ebusy_retries.get());
            }
        }
    }

    /// The pipeline (its counters and shared tables).
    pub fn pipeline(&self) -> &Pipeline {
        &self.pipeline
    }

    /// One round over every port; returns the frames received.
    pub fn poll(&mut self, now_ms: u64) -> usize {
        if let Some(readiness) = self.readiness.as_mut() {
            readiness.refresh();
        }
        let guard = self.publisher.pin();
        let snap = self.publisher.load(&guard);
        let mut total = 0;
        for a in 0..self.active.len() {
            let in_port = self.active[a];
            let index = usize::from(in_port);
            let Some(slot) = self.ports.get_mut(index).and_then(Option::as_mut) else {
                continue;
            };
            let kind = slot.kind;
            let n = slot.port.recv(&mut self.pool, &mut self.rx);
            if n == 0 {
                continue;
            }
            total += n;
            if let Some(c) = self.pipeline.counters.port(index) {
                c.rx_packets.add(n as u64);
                c.rx_bytes
                    .add(self.rx[..n].iter().map(|d| u64::from(d.len)).sum());
            }
            self.pipeline.counters.batches.add(1);
            let done =
                self.pipeline
                    .process(snap, &mut self.pool, in_port, kind, &self.rx[..n], now_ms);
            let counters = &self.pipeline.counters;
            for m in &self.pipeline.metas()[..done] {
                match m.verdict {
                    Verdict::Tx(out) => {
                        let q = &mut self.tx[usize::from(out)];
                        if q.len == 0 {
                            self.dirty.push(out);
                        }
                        q.descs[q.len] = m.desc;
                        q.len += 1;
                        if q.len == BATCH {
                            let small = &mut self.small;
                            Self::flush(&mut self.ports, &mut self.pool, counters, out, q, small);
                        }
                    }
                    Verdict::Drop(_) | Verdict::Pending => self.pool.free(m.desc.addr),
                }
            }
            for out in self.dirty.drain(..) {
                let q = &mut self.tx[usize::from(out)];
                let small = &mut self.small;
                Self::flush(&mut self.ports, &mut self.pool, counters, out, q, small);
            }
        }
        for &id in &self.active {
            if let Some(slot) = self.ports.get_mut(usize::from(id)).and_then(Option::as_mut) {
                slot.port.service(&mut self.pool);
            }
        }
        total
    }

    fn flush(
        ports: &mut [Option<Slot>],
        pool: &mut FramePool,
        counters: &Counters,
        out: PortId,
        q: &mut TxQueue,
        small: &mut [Desc; SEGMENTS],
    ) {
        let len = q.len;
        q.len = 0;
        let descs = &q.descs[..len];
        let Some(slot) = ports.get_mut(usize::from(out)).and_then(Option::as_mut) else {
            for d in descs {
                pool.free(d.addr);
                counters.count_drop(DropReason::UnknownPort);
            }
            return;
        };
        if slot.port.offloads() {
            // Segments of one flow become one super-packet (GRO).
            let (n, done) = gro::coalesce(pool, descs, &mut small[..]);
            counters.gro_merged.add(done.merged);
            counters.gro_segments.add(done.segments);
            Self::send(slot, pool, counters, out, &small[..n]);
            return;
        }
        if !descs.iter().any(Desc::is_large) {
            Self::send(slot, pool, counters, out, descs);
            return;
        }
        // An egress without offloads: large frames become small ones.
        let mut n = 0;
        for &d in descs {
            if !d.is_large() {
                if n == SEGMENTS {
                    Self::send(slot, pool, counters, out, &small[..n]);
                    n = 0;
                }
                small[n] = d;
                n += 1;
                continue;
            }
            let mut made = gso::expand(pool, d, &mut small[n..]);
            if made == Err(ExpandError::NoRoom) && n > 0 {
                Self::send(slot, pool, counters, out, &small[..n]);
                n = 0;
                made = gso::expand(pool, d, &mut small[..]);
            }
            match made {
                Ok(count) => {
                    let vnet = pool.vnet(d);
                    if vnet.gso_type != crate::wire::vnet::gso_type::NONE {
                        counters.gso_split.add(1);
                        counters.gso_segments.add(count as u64);
                    } else if vnet.needs_csum() {
                        counters.csum_completed.add(1);
                    }
                    n += count;
                }
                Err(ExpandError::NoRoom) => counters.count_drop(DropReason::GsoTooManySegments),
                Err(ExpandError::Drop(reason)) => counters.count_drop(reason),
            }
            pool.free(d.addr);
        }
        Self::send(slot, pool, counters, out, &small[..n]);
    }

    /// Hands `descs` to the port, counting what it took and dropping the
    /// rest (ring full).
    fn send(
        slot: &mut Slot,
        pool: &mut FramePool,
        counters: &Counters,
        out: PortId,
        descs: &[Desc],
    ) {
        if descs.is_empty() {
            return;
        }
        let sent = slot.port.send(pool, descs);
        if let Some(c) = counters.port(usize::from(out)) {
            c.tx_packets.add(sent as u64);
            c.tx_bytes
                .add(descs[..sent].iter().map(|d| u64::from(d.len)).sum());
            c.tx_full.add((descs.len() - sent) as u64);
        }
        for d in &descs[sent..] {
            pool.free(d.addr);
            counters.count_drop(DropReason::TxRingFull);
        }
    }
}
