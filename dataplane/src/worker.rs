//! A worker: one frame pool, the ports it serves (queue i of every port for
//! worker i), and the pipeline. One call to [`Worker::poll`] gives every
//! port one burst of at most `BATCH` frames, so a flooding port cannot
//! starve the others (fair batch budget), processes each burst through the
//! pipeline and transmits the results, grouped per output port.
//!
//! A worker is owned by one thread; ports are added and removed between
//! polls by that thread (the caller passes changes in), never stopping the
//! other ports.

use std::sync::Arc;

use tables::route::PortId;
use tables::snapshot::Publisher;

use crate::counters::{Counters, DropReason};
use crate::frame::{Desc, FramePool, BATCH};
use crate::pipeline::{Pipeline, Verdict};
use crate::port::{Port, PortKind};

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
    pipeline: Pipeline,
    publisher: Arc<Publisher>,
}

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
            pool: FramePool::new(frames),
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
            pipeline,
            publisher,
        }
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
                            Self::flush(&mut self.ports, &mut self.pool, counters, out, q);
                        }
                    }
                    Verdict::Drop(_) | Verdict::Pending => self.pool.free(m.desc.addr),
                }
            }
            for out in self.dirty.drain(..) {
                let q = &mut self.tx[usize::from(out)];
                Self::flush(&mut self.ports, &mut self.pool, counters, out, q);
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
