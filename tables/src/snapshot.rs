//! Snapshot publication: control builds a complete, immutable [`Snapshot`]
//! and swaps it in with one pointer store; workers read the current one
//! between batches without taking a lock; an old snapshot is freed once no
//! worker can still hold it (epoch-based reclamation, `crossbeam-epoch`).
//!
//! Writer: the control thread (one writer; concurrent publishers are safe but
//! the last one wins). Readers: every worker, once per batch, through
//! [`Publisher::read`] or a guard from [`Publisher::pin`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crossbeam_epoch::{self as epoch, Atomic, Guard, Owned};

use crate::policy::PolicyTable;
use crate::route::{NodeConfig, RouteTable};
use crate::service::ServiceTable;

/// Everything the fast path reads except conntrack. Cloning shares the
/// tables.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// Set by [`Publisher::publish`]: increases with every snapshot.
    pub generation: u64,
    /// Changes whenever the compiled policy changes; conntrack entries
    /// remember the epoch their flow was last allowed under, and flows are
    /// checked again when it moves.
    pub policy_epoch: u32,
    pub node: NodeConfig,
    /// The tables, each shared with the snapshots before and after it that
    /// did not change it: control builds a new snapshot from the previous
    /// one by replacing only the tables a change touched.
    pub routes: Arc<RouteTable>,
    pub services: Arc<ServiceTable>,
    pub policy: Arc<PolicyTable>,
}

impl Snapshot {
    /// Tables for `node` that hold nothing yet: no pods, no other nodes,
    /// no services, no policy.
    pub fn empty(node: NodeConfig) -> Snapshot {
        Snapshot {
            generation: 0,
            policy_epoch: 0,
            routes: Arc::new(RouteTable::new(&[node.node_ip], node.pod_cidr)),
            services: Arc::new(ServiceTable::new()),
            policy: Arc::new(PolicyTable::empty()),
            node,
        }
    }
}

/// The current snapshot and the means to replace it.
pub struct Publisher {
    current: Atomic<Snapshot>,
    generation: AtomicU64,
}

impl Publisher {
    /// A publisher whose first snapshot is `first`.
    pub fn new(mut first: Snapshot) -> Publisher {
        first.generation = 1;
        Publisher {
            current: Atomic::new(first),
            generation: AtomicU64::new(1),
        }
    }

    /// Makes `next` the current snapshot. Readers in the middle of a batch
    /// keep the one they started with; it is freed after they unpin.
    pub fn publish(&self, mut next: Snapshot) -> u64 {
        let generation = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
        next.generation = generation;
        let guard = epoch::pin();
        // Ordering: AcqRel publishes the fully built snapshot to readers that
        // load with Acquire, and acquires the old one we are about to retire.
        let old = self
            .current
            .swap(Owned::new(next), Ordering::AcqRel, &guard);
        if !old.is_null() {
            // SAFETY: `old` was just unlinked, so no reader can load it any
            // more; readers that loaded it before are pinned, and the epoch
            // scheme runs the destructor only after all of them unpin.
            unsafe { guard.defer_destroy(old) };
        }
        guard.flush();
        generation
    }

    /// The current snapshot, valid while `guard` is held.
    #[inline]
    pub fn load<'g>(&self, guard: &'g Guard) -> &'g Snapshot {
        let shared = self.current.load(Ordering::Acquire, guard);
        // SAFETY: `current` is never null (set in `new`, only ever swapped
        // for another non-null pointer), and the pointee stays alive while
        // `guard` pins the epoch, which bounds the returned lifetime.
        unsafe { shared.deref() }
    }

    /// Pins the current thread; pass the guard to [`Publisher::load`].
    #[inline]
    pub fn pin(&self) -> Guard {
        epoch::pin()
    }

    /// Runs `f` on the current snapshot (one batch's worth of work).
    #[inline]
    pub fn read<R>(&self, f: impl FnOnce(&Snapshot) -> R) -> R {
        let guard = epoch::pin();
        f(self.load(&guard))
    }

    /// The generation of the current snapshot.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        // SAFETY: `&mut self` proves no reader can reach `current` any more
        // (readers borrow the publisher), so it can be taken and freed now.
        unsafe {
            let guard = epoch::unprotected();
            let cur = self
                .current
                .swap(crate::snapshot::null(), Ordering::AcqRel, guard);
            if !cur.is_null() {
                drop(cur.into_owned());
            }
        }
    }
}

fn null<'g>() -> epoch::Shared<'g, Snapshot> {
    epoch::Shared::null()
}

// SAFETY-free marker: Publisher is Send + Sync because Atomic<Snapshot> is
// Send + Sync when Snapshot is (all its tables are plain owned data).
const _: fn() = || {
    fn assert_sync<T: Send + Sync>() {}
    assert_sync::<Publisher>();
};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Cidr;

    pub(crate) fn snapshot(name: &str) -> Snapshot {
        let cidr: Cidr = "10.244.0.0/24".parse().unwrap();
        Snapshot::empty(NodeConfig {
            name: name.into(),
            node_ip: 1,
            uplink_mac: [0; 6],
            vtep_mac: [0; 6],
            gateway_mac: [0; 6],
            vni: 1,
            pod_cidr: cidr,
            cluster_cidr: "10.244.0.0/16".parse().unwrap(),
            service_cidr: "10.96.0.0/12".parse().unwrap(),
            uplink_port: 0,
            host_port: None,
            host_mac: [0; 6],
            uplink_gateway_mac: [0; 6],
            uplink_mtu: 0,
        })
    }

    #[test]
    fn readers_see_whole_snapshots_and_keep_theirs_while_pinned() {
        let publisher = Arc::new(Publisher::new(snapshot("gen1")));
        let guard = publisher.pin();
        let held = publisher.load(&guard);
        assert_eq!(held.node.name, "gen1");
        let reader = {
            let p = publisher.clone();
            std::thread::spawn(move || {
                let mut seen = 0u64;
                for _ in 0..20_000 {
                    p.read(|s| {
                        // Name and generation were written together: a torn
                        // snapshot would pair them wrongly.
                        assert_eq!(s.node.name, format!("gen{}", s.generation));
                        assert!(s.generation >= seen);
                        seen = s.generation;
                    });
                }
            })
        };
        for i in 2..=200 {
            assert_eq!(publisher.publish(snapshot(&format!("gen{i}"))), i);
        }
        reader.join().unwrap();
        // The guard taken before all the publishes still sees its snapshot.
        assert_eq!(held.node.name, "gen1");
        drop(guard);
        assert_eq!(publisher.read(|s| s.generation), 200);
    }
}
