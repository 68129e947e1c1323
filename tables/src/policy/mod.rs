//! NetworkPolicy (networking.k8s.io/v1), compiled per local pod and
//! direction into sets whose lookup cost does not depend on the number of
//! policies, rules or peers.
//!
//! Semantics are upstream's: a pod is isolated for a direction when a policy
//! of its namespace selects it and lists that direction in `policyTypes`;
//! isolated traffic is allowed iff some rule of some selecting policy allows
//! it; a direction nobody isolates allows everything.
//!
//! For each isolated (pod, direction) the compiler ([`PolicyContext`]) builds a
//! [`CompiledSet`]: an [`Lpm`] from peer address to a [`PortSet`], the union
//! of the ports of every rule whose peers include that address. A check is
//! one hash lookup (the pod), at most four trie reads (the peer) and a binary
//! search over a handful of port ranges.
//!
//! **Who writes, who reads.** Control builds a [`PolicyTable`] (with
//! [`PolicyTable::compile`], or pod by pod through a [`PolicyContext`]) as
//! part of a table snapshot and publishes the snapshot by a pointer swap; it
//! never mutates a published table. Workers read it without locks:
//! [`PolicyTable::allows_ingress`] and [`PolicyTable::allows_egress`] neither
//! allocate nor panic.

mod compile;
pub mod portset;

#[cfg(test)]
mod reference_tests;
#[cfg(test)]
mod tests;

use std::fmt;
use std::sync::Arc;

use hashbrown::HashMap;

pub use compile::PolicyContext;
pub use portset::{PortRanges, PortSet};

use crate::lpm::Lpm;
use crate::model::{Namespace, NetworkPolicy, Pod};

/// The compiled policy of every pod on this node, by pod IP (host order).
///
/// Written by control (compiled whole with [`PolicyTable::compile`], or
/// patched pod by pod with [`PolicyTable::insert`] on a copy before it is
/// published); read lock-free by workers from the published snapshot.
///
/// Only pods on this node have an entry. A pod without an entry (another
/// node's pod, or an address that is no pod) is treated as not isolated: the
/// `allows_*` checks return `true` for it, since its own node enforces its
/// policy.
#[derive(Clone, Debug, Default)]
pub struct PolicyTable {
    pods: HashMap<u32, PodPolicy>,
}

/// The compiled policy of one local pod. `None` means the direction is not
/// isolated (everything allowed). Sets are shared between pods whose
/// compiled sets are identical.
#[derive(Clone, Debug, Default)]
pub struct PodPolicy {
    /// Who may connect to the pod.
    pub ingress: Option<Arc<CompiledSet>>,
    /// Where the pod may connect to.
    pub egress: Option<Arc<CompiledSet>>,
    /// The pod, as `namespace/name` (for the local API; empty when the
    /// entry was not compiled from a pod).
    pub pod: String,
    /// The policies selecting the pod, as `namespace/name`, in policy
    /// order (for the local API).
    pub policies: Vec<String>,
}

/// The peers and ports one isolated (pod, direction) allows.
///
/// Built by the compiler (control), immutable afterwards, shared by `Arc`
/// between pods and read lock-free by workers.
#[derive(Debug)]
pub struct CompiledSet {
    /// Peer address -> index into `port_sets`.
    peers: Lpm<u32>,
    port_sets: Vec<PortSet>,
    rules: usize,
}

impl CompiledSet {
    /// A set from disjoint peer ranges, each mapped to an index of
    /// `port_sets`. `rules` is the number of rules it was compiled from.
    pub(crate) fn new(
        ranges: &[(u32, u32, u32)],
        port_sets: Vec<PortSet>,
        rules: usize,
    ) -> CompiledSet {
        CompiledSet {
            peers: Lpm::from_ranges(ranges),
            port_sets,
            rules,
        }
    }

    /// Whether traffic with `peer` (host order), IP protocol `proto` and
    /// destination `port` (0 for ICMP) is allowed.
    #[inline]
    pub fn allows(&self, peer: u32, proto: u8, port: u16) -> bool {
        self.peers
            .lookup(peer)
            .and_then(|id| self.port_sets.get(usize::try_from(id).ok()?))
            .is_some_and(|ports| ports.allows(proto, port))
    }

    /// Number of rules (of all selecting policies, this direction) compiled
    /// into the set. Zero means default deny.
    pub fn rule_count(&self) -> usize {
        self.rules
    }

    /// The distinct port sets the peers map to.
    pub fn port_sets(&self) -> &[PortSet] {
        &self.port_sets
    }

    /// Number of peer prefixes stored.
    pub fn prefix_count(&self) -> usize {
        self.peers.len()
    }

    /// Heap bytes held by the set.
    pub fn memory_bytes(&self) -> usize {
        self.peers.memory_bytes() + self.port_sets.capacity() * std::mem::size_of::<PortSet>()
    }
}

/// Something in a policy the compiler could not honour as written (it
/// compiles the offending part to "matches nothing" or ignores it, as
/// stated in the message).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyWarning {
    /// The policy, as `namespace/name`.
    pub policy: String,
    /// What is wrong and what the compiler did about it.
    pub message: String,
}

impl fmt::Display for PolicyWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NetworkPolicy {}: {}", self.policy, self.message)
    }
}

impl PolicyTable {
    /// Compiles the policy of every pod in `local_pods` (the pods on this
    /// node). `all_pods` is every pod of the cluster (local ones included):
    /// the candidates for pod peers. `namespaces` gives namespace labels; a
    /// pod's namespace missing from it counts as having no labels.
    ///
    /// Pods without an IP yet (`0.0.0.0`) get no entry and match no peer.
    pub fn compile(
        local_pods: &[&Pod],
        all_pods: &[Pod],
        namespaces: &[Namespace],
        policies: &[NetworkPolicy],
    ) -> (PolicyTable, Vec<PolicyWarning>) {
        let mut ctx = PolicyContext::new(all_pods, namespaces, policies);
        let mut table = PolicyTable::empty();
        for pod in local_pods {
            if !pod.ip.is_unspecified() {
                table.insert(u32::from(pod.ip), ctx.compile_pod(pod));
            }
        }
        (table, ctx.into_warnings())
    }

    /// A table without pods: everything allowed.
    pub fn empty() -> PolicyTable {
        PolicyTable::default()
    }

    /// Sets the policy of the local pod with IP `ip` (control path, on a
    /// table not yet published). Returns the previous entry.
    pub fn insert(&mut self, ip: u32, policy: PodPolicy) -> Option<PodPolicy> {
        self.pods.insert(ip, policy)
    }

    /// Drops the entry of a pod that left this node.
    pub fn remove(&mut self, ip: u32) -> Option<PodPolicy> {
        self.pods.remove(&ip)
    }

    /// Whether `src` (any address) may send to local pod `dst_pod` with IP
    /// protocol `proto` and destination port `dport` (0 for ICMP). `true` for
    /// a `dst_pod` without an entry.
    #[inline]
    pub fn allows_ingress(&self, dst_pod: u32, src: u32, proto: u8, dport: u16) -> bool {
        match self.pods.get(&dst_pod) {
            Some(PodPolicy {
                ingress: Some(set), ..
            }) => set.allows(src, proto, dport),
            _ => true,
        }
    }

    /// Whether local pod `src_pod` may send to `dst` (any address) with IP
    /// protocol `proto` and destination port `dport` (0 for ICMP). `true` for
    /// a `src_pod` without an entry.
    #[inline]
    pub fn allows_egress(&self, src_pod: u32, dst: u32, proto: u8, dport: u16) -> bool {
        match self.pods.get(&src_pod) {
            Some(PodPolicy {
                egress: Some(set), ..
            }) => set.allows(dst, proto, dport),
            _ => true,
        }
    }

    /// The entry of a local pod.
    #[inline]
    pub fn pod(&self, ip: u32) -> Option<&PodPolicy> {
        self.pods.get(&ip)
    }

    /// Number of pods with an entry.
    pub fn len(&self) -> usize {
        self.pods.len()
    }

    /// Whether no pod has an entry.
    pub fn is_empty(&self) -> bool {
        self.pods.is_empty()
    }
}

/// Read-only views for the local API and the CLI (control path).
impl PolicyTable {
    /// Every pod entry with its IP (host order), in no particular order.
    pub fn pods(&self) -> impl Iterator<Item = (u32, &PodPolicy)> {
        self.pods.iter().map(|(ip, p)| (*ip, p))
    }
}

/// Read-only views for the local API and the CLI (control path: allocates).
impl CompiledSet {
    /// Every peer prefix with the ports it may use, in address order.
    pub fn peers(&self) -> Vec<(crate::model::Cidr, &PortSet)> {
        self.peers
            .prefixes()
            .into_iter()
            .filter_map(|(cidr, id)| {
                let set = self.port_sets.get(usize::try_from(id).ok()?)?;
                Some((cidr, set))
            })
            .collect()
    }
}
