//! The in-memory port: frames injected by a test (or replayed from a list,
//! for `selftest` and benchmarks) and frames sent collected (or counted).
//!
//! A queue-backed port takes one mutex per burst, not per frame; a replaying
//! or discarding port takes none. Received frames are copied into the
//! worker's pool as AF_XDP copy mode does; sent frames are copied out and
//! their chunks freed at once.
//!
//! An offloading port ([`MemPort::offloading`]) stands in for a TAP port:
//! every frame it exchanges starts with a virtio-net header, received
//! frames land in large chunks with it, and it takes super-packets whole.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};

use super::Port;
use crate::frame::{Desc, FramePool, MAX_LARGE_FRAME};
use crate::gso;
use crate::wire::vnet::{VnetHeader, VNET_HDR_LEN};

type Queue = Arc<Mutex<VecDeque<Vec<u8>>>>;

enum Inbox {
    Queue(Queue),
    Replay {
        frames: Vec<Vec<u8>>,
        next: usize,
        remaining: u64,
    },
}

enum Outbox {
    Queue(Queue),
    Discard,
}

/// An in-memory port.
pub struct MemPort {
    name: String,
    inbox: Inbox,
    outbox: Outbox,
    /// Frames sent and their bytes (also for discarding ports).
    pub sent: u64,
    pub sent_bytes: u64,
    /// Frames carry a virtio-net header (a TAP port's view).
    offloads: bool,
}

/// The other end of a queue-backed [`MemPort`], held by the test.
#[derive(Clone)]
pub struct MemPortHandle {
    inbox: Queue,
    outbox: Queue,
}

fn lock(q: &Queue) -> std::sync::MutexGuard<'_, VecDeque<Vec<u8>>> {
    q.lock().unwrap_or_else(PoisonError::into_inner)
}

impl MemPortHandle {
    /// Queues a frame for the switch to receive.
    pub fn inject(&self, frame: &[u8]) {
        lock(&self.inbox).push_back(frame.to_vec());
    }

    /// Takes every frame the switch has sent out of this port.
    pub fn take_sent(&self) -> Vec<Vec<u8>> {
        lock(&self.outbox).drain(..).collect()
    }

    /// Takes the oldest frame sent, if any.
    pub fn pop_sent(&self) -> Option<Vec<u8>> {
        lock(&self.outbox).pop_front()
    }

    /// Frames injected but not yet received by the switch.
    pub fn pending(&self) -> usize {
        lock(&self.inbox).len()
    }
}

impl MemPort {
    /// A port fed and drained by the returned handle.
    pub fn new(name: &str) -> (MemPort, MemPortHandle) {
        let handle = MemPortHandle {
            inbox: Queue::default(),
            outbox: Queue::default(),
        };
        let port = MemPort {
            name: name.to_owned(),
            inbox: Inbox::Queue(handle.inbox.clone()),
            outbox: Outbox::Queue(handle.outbox.clone()),
            sent: 0,
            sent_bytes: 0,
            offloads: false,
        };
        (port, handle)
    }

    /// A port like [`MemPort::new`] whose frames, injected and sent, start
    /// with a virtio-net header, as a TAP port's do.
    pub fn offloading(name: &str) -> (MemPort, MemPortHandle) {
        let (mut port, handle) = MemPort::new(name);
        port.offloads = true;
        (port, handle)
    }

    /// A port that receives `frames` round-robin, `count` frames in all, and
    /// discards (but counts) what it sends.
    pub fn replay(name: &str, frames: Vec<Vec<u8>>, count: u64) -> MemPort {
        MemPort {
            name: name.to_owned(),
            inbox: Inbox::Replay {
                frames,
                next: 0,
                remaining: count,
            },
            outbox: Outbox::Discard,
            sent: 0,
            sent_bytes: 0,
            offloads: false,
        }
    }

    /// Frames a replaying port has yet to deliver (0 for queue ports).
    pub fn remaining(&self) -> u64 {
        match &self.inbox {
            Inbox::Replay { remaining, .. } => *remaining,
            Inbox::Queue(_) => 0,
        }
    }
}

impl Port for MemPort {
    fn name(&self) -> &str {
        &self.name
    }

    fn recv(&mut self, pool: &mut FramePool, out: &mut [Desc]) -> usize {
        let mut n = 0;
        match &mut self.inbox {
            Inbox::Queue(q) => {
                let mut q = lock(q);
                while n < out.len() {
                    let Some(frame) = q.front() else { break };
                    if self.offloads {
                        let Some(desc) = receive_offloaded(pool, frame) else {
                            break;
                        };
                        q.pop_front();
                        out[n] = desc;
                        n += 1;
                        continue;
                    }
                    let Some(desc) = pool.alloc_with(frame) else {
                        if frame.len() > crate::frame::MAX_FRAME as usize {
                            q.pop_front(); // can never fit: the wire would not carry it either
                            continue;
                        }
                        break; // pool empty: leave it queued
                    };
                    q.pop_front();
                    out[n] = desc;
                    n += 1;
                }
            }
            Inbox::Replay {
                frames,
                next,
                remaining,
            } => {
                while n < out.len() && *remaining > 0 && !frames.is_empty() {
                    let frame = &frames[*next % frames.len()];
                    let Some(desc) = pool.alloc_with(frame) else {
                        break;
                    };
                    *next = (*next + 1) % frames.len();
                    *remaining -= 1;
                    out[n] = desc;
                    n += 1;
                }
            }
        }
        n
    }

    fn send(&mut self, pool: &mut FramePool, descs: &[Desc]) -> usize {
        let mut queue = match &self.outbox {
            Outbox::Queue(q) => Some(lock(q)),
            Outbox::Discard => None,
        };
        for d in descs {
            if let (Some(q), Some(data)) = (queue.as_mut(), pool.data(*d)) {
                if self.offloads {
                    let header = gso::egress_header(data, &pool.vnet(*d)).unwrap_or_default();
                    let mut bytes = vec![0; VNET_HDR_LEN];
                    let _ = header.emit(&mut bytes);
                    bytes.extend_from_slice(data);
                    q.push_back(bytes);
                } else {
                    q.push_back(data.to_vec());
                }
            }
            self.sent += 1;
            self.sent_bytes += u64::from(d.len);
            pool.free(d.addr);
        }
        descs.len()
    }

    fn offloads(&self) -> bool {
        self.offloads
    }
}

/// A frame with its virtio-net header in front, into a large chunk. One too
/// short for the header arrives empty (the pipeline drops it as truncated).
/// `None` when no large chunk is free.
fn receive_offloaded(pool: &mut FramePool, bytes: &[u8]) -> Option<Desc> {
    let (header, frame) = match VnetHeader::parse(bytes) {
        Ok(header) => (header, &bytes[VNET_HDR_LEN..]),
        Err(_) => (VnetHeader::default(), &[][..]),
    };
    let frame = frame.get(..MAX_LARGE_FRAME as usize).unwrap_or(frame);
    pool.alloc_large_with(frame, header)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_port_moves_frames_both_ways() {
        let mut pool = FramePool::new(4);
        let (mut port, handle) = MemPort::new("p0");
        handle.inject(&[1, 2, 3]);
        handle.inject(&[4, 5]);
        let mut descs = [Desc::default(); 8];
        assert_eq!(port.recv(&mut pool, &mut descs), 2);
        assert_eq!(pool.data(descs[1]).unwrap(), &[4, 5]);
        assert_eq!(port.send(&mut pool, &descs[..2]), 2);
        assert_eq!(handle.take_sent(), vec![vec![1, 2, 3], vec![4, 5]]);
        assert_eq!(pool.free_count(), 4);
    }

    #[test]
    fn recv_stops_when_the_pool_is_empty_and_keeps_the_rest() {
        let mut pool = FramePool::new(1);
        let (mut port, handle) = MemPort::new("p0");
        handle.inject(&[1]);
        handle.inject(&[2]);
        let mut descs = [Desc::default(); 8];
        assert_eq!(port.recv(&mut pool, &mut descs), 1);
        assert_eq!(handle.pending(), 1);
    }

    #[test]
    fn replay_port_delivers_exactly_count_frames() {
        let mut pool = FramePool::new(64);
        let mut port = MemPort::replay("gen", vec![vec![1], vec![2]], 5);
        let mut descs = [Desc::default(); 8];
        assert_eq!(port.recv(&mut pool, &mut descs), 5);
        assert_eq!(pool.data(descs[2]).unwrap(), &[1]);
        assert_eq!(port.recv(&mut pool, &mut descs), 0);
    }
}
