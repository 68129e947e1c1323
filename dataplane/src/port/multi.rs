//! One switch port made of several sockets of the same device (its receive
//! queues that one worker serves). Receive takes from each socket in turn,
//! continuing where the last burst stopped, so no queue starves; transmit
//! uses the first socket (any queue of the device reaches the same wire).

use super::Port;
use crate::frame::{Desc, FramePool};

/// Several queues of one device as one port.
pub struct MultiQueue {
    queues: Vec<Box<dyn Port>>,
    next: usize,
}

impl MultiQueue {
    /// Combines `queues` (at least one).
    pub fn new(queues: Vec<Box<dyn Port>>) -> MultiQueue {
        MultiQueue { queues, next: 0 }
    }
}

impl Port for MultiQueue {
    fn name(&self) -> &str {
        self.queues.first().map_or("", |q| q.name())
    }

    fn recv(&mut self, pool: &mut FramePool, out: &mut [Desc]) -> usize {
        let count = self.queues.len();
        let mut n = 0;
        for i in 0..count {
            if n == out.len() {
                break;
            }
            let q = (self.next + i) % count;
            n += self.queues[q].recv(pool, &mut out[n..]);
        }
        self.next = (self.next + 1) % count.max(1);
        n
    }

    fn send(&mut self, pool: &mut FramePool, descs: &[Desc]) -> usize {
        self.queues.first_mut().map_or(0, |q| q.send(pool, descs))
    }

    fn service(&mut self, pool: &mut FramePool) {
        for q in &mut self.queues {
            q.service(pool);
        }
    }

    fn poll_fd(&self) -> Option<i32> {
        self.queues.first().and_then(|q| q.poll_fd())
    }

    fn in_flight(&self) -> u32 {
        self.queues.iter().map(|q| q.in_flight()).sum()
    }

    fn offloads(&self) -> bool {
        self.queues.first().is_some_and(|q| q.offloads())
    }

    fn close(&mut self, pool: &mut FramePool) {
        for q in &mut self.queues {
            q.close(pool);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::port::MemPort;

    #[test]
    fn receives_from_every_queue_and_sends_on_the_first() {
        let mut pool = FramePool::new(16);
        let (a, ha) = MemPort::new("q0");
        let (b, hb) = MemPort::new("q1");
        let mut port = MultiQueue::new(vec![Box::new(a), Box::new(b)]);
        ha.inject(&[1]);
        hb.inject(&[2]);
        hb.inject(&[3]);
        let mut descs = [Desc::default(); 8];
        let n = port.recv(&mut pool, &mut descs);
        assert_eq!(n, 3);
        let mut got: Vec<u8> = descs[..n]
            .iter()
            .map(|d| pool.data(*d).unwrap()[0])
            .collect();
        got.sort_unstable();
        assert_eq!(got, vec![1, 2, 3]);
        assert_eq!(port.send(&mut pool, &descs[..n]), 3);
        assert_eq!(ha.take_sent().len(), 3);
        assert!(hb.take_sent().is_empty());
    }
}
