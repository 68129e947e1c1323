//! Ports: where frames come from and go to.
//!
//! AF_XDP sockets (the `afxdp` crate's `XskPort`) are one implementation of
//! [`Port`]; the in-memory
//! [`MemPort`] is another, so the whole pipeline runs in tests without root;
//! [`PcapPort`] wraps any port and records what crosses it.
//!
//! A worker calls `recv` and `send` with its own frame pool; ports never
//! allocate per frame and make at most a few system calls per burst.

mod mem;
mod multi;
mod pcap;

pub use mem::{MemPort, MemPortHandle};
pub use multi::MultiQueue;
pub use pcap::{PcapPort, PcapWriter};

use crate::frame::{Desc, FramePool};

/// What a port is for; decides which pipeline checks apply to its frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PortKind {
    /// The host end of a pod's veth: anti-spoofing, ARP for the gateway.
    Pod,
    /// The veth to the node's own network stack.
    Host,
    /// The node's underlay interface: VXLAN, NodePorts, external IPs.
    Uplink,
}

/// A source and sink of frames in a worker's pool.
pub trait Port: Send {
    /// Interface name, for counters and logs.
    fn name(&self) -> &str;

    /// Receives up to `out.len()` frames into chunks of `pool`, writing their
    /// descriptors to the front of `out`. Returns how many.
    fn recv(&mut self, pool: &mut FramePool, out: &mut [Desc]) -> usize;

    /// Queues `descs` for transmission and takes ownership of the frames it
    /// accepts (a prefix of `descs`); returns how many. The caller still owns
    /// (and must free or count) the rest.
    fn send(&mut self, pool: &mut FramePool, descs: &[Desc]) -> usize;

    /// Housekeeping between bursts: reap transmit completions back into
    /// `pool`, refill receive rings, kick the kernel if it asked.
    fn service(&mut self, _pool: &mut FramePool) {}

    /// A file descriptor that becomes readable when frames arrive, for
    /// adaptive polling to sleep on; `None` if the port has none.
    fn poll_fd(&self) -> Option<i32> {
        None
    }

    /// Frames of the pool the port (or the kernel behind it) holds now.
    fn in_flight(&self) -> u32 {
        0
    }

    /// Gives every frame the port holds back to `pool` before the port is
    /// dropped (AF_XDP: fill stock, unread RX, unsent TX, completions). The
    /// port must no longer receive (e.g. out of the XSKMAP).
    fn close(&mut self, _pool: &mut FramePool) {}

    /// Ring-condition counters the port keeps itself (fill ring empty,
    /// wake-ups, EBUSY retries), if any.
    fn ring_counters(&self) -> Option<&crate::counters::PortCounters> {
        None
    }

    /// Whether the port takes super-packets and partial checksums whole,
    /// with their virtio-net header (a TAP port). For a port that does not,
    /// the worker segments them and completes checksums first.
    fn offloads(&self) -> bool {
        false
    }
}

/// Readiness of ports that cost a system call to find empty (TAP queues):
/// asked once per worker round, before the ports are polled, so an idle
/// port costs no system call of its own. The ports it serves read only
/// when it has marked them.
pub trait Readiness: Send {
    /// Marks the ports that have frames.
    fn refresh(&mut self);

    /// A descriptor that becomes readable when any of its ports has frames,
    /// for adaptive polling to sleep on.
    fn fd(&self) -> Option<i32>;
}

impl<P: Port + ?Sized> Port for Box<P> {
    fn name(&self) -> &str {
        (**self).name()
    }

    fn recv(&mut self, pool: &mut FramePool, out: &mut [Desc]) -> usize {
        (**self).recv(pool, out)
    }

    fn send(&mut self, pool: &mut FramePool, descs: &[Desc]) -> usize {
        (**self).send(pool, descs)
    }

    fn service(&mut self, pool: &mut FramePool) {
        (**self).service(pool)
    }

    fn poll_fd(&self) -> Option<i32> {
        (**self).poll_fd()
    }

    fn in_flight(&self) -> u32 {
        (**self).in_flight()
    }

    fn close(&mut self, pool: &mut FramePool) {
        (**self).close(pool)
    }

    fn ring_counters(&self) -> Option<&crate::counters::PortCounters> {
        (**self).ring_counters()
    }

    fn offloads(&self) -> bool {
        (**self).offloads()
    }
}
