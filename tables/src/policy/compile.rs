//! The policy compiler (control path only).
//!
//! [`PolicyContext`] indexes pods, namespaces and policies once, then
//! compiles pods one at a time. For one (pod, direction) it:
//!
//! 1. finds the selecting policies that isolate the direction (cached per
//!    namespace and label set);
//! 2. takes each of their rules' peers as address intervals, each with the
//!    rule's port set (peer selectors are evaluated once per policy and
//!    cached; named ports resolve on the destination pod);
//! 3. sweeps the interval endpoints into disjoint intervals, each with the
//!    union of the port sets of the rules covering it;
//! 4. interns the result by content, so identical sets are built once and
//!    shared.

use std::collections::BTreeMap;
use std::sync::Arc;

use hashbrown::{Equivalent, HashMap};

use super::{CompiledSet, PodPolicy, PolicyWarning, PortSet};
use crate::model::{
    Cidr, LabelSelector, Labels, NamedPort, Namespace, NetworkPolicy, Peer, Pod, PolicyRule,
    PortRef, Proto,
};

/// Labels of a namespace missing from the namespace list.
static NO_LABELS: Labels = BTreeMap::new();

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Direction {
    Ingress,
    Egress,
}

/// The `ports` of one rule, parsed once.
#[derive(Debug, Default)]
struct RulePorts {
    /// The rule has no ports: every port of every protocol.
    all_protocols: bool,
    /// Numeric ports, ranges and whole protocols.
    numbers: PortSet,
    /// Named ports, resolved on the destination pod.
    named: Vec<(String, Proto)>,
}

impl RulePorts {
    /// The ports the rule opens on `destination` (`None`: not a pod, so no
    /// named port resolves).
    fn on(&self, destination: Option<&Pod>) -> PortSet {
        if self.all_protocols {
            return PortSet::all_protocols();
        }
        let mut set = self.numbers.clone();
        if let Some(pod) = destination {
            for (name, proto) in &self.named {
                if let Some(port) = pod.named_port(name, *proto) {
                    set.add(*proto, port, port);
                }
            }
        }
        set
    }
}

/// The `from`/`to` of one rule, resolved against the cluster.
#[derive(Debug, Default)]
struct RulePeers {
    /// The rule has no peers: every address.
    all: bool,
    /// Indices (into the pod list) of pods matched by pod peers, deduplicated.
    pods: Vec<usize>,
    /// Disjoint, sorted address intervals matched by ipBlock peers.
    blocks: Vec<(u32, u32)>,
}

/// A policy's rules, per direction (index 0 ingress, 1 egress).
type PerDirection<T> = [Vec<T>; 2];

fn slot(direction: Direction) -> usize {
    match direction {
        Direction::Ingress => 0,
        Direction::Egress => 1,
    }
}

/// Key of the selecting-policies cache, looked up without cloning.
#[derive(Hash)]
struct SelectionKey<'b>(&'b str, &'b Labels);

impl Equivalent<(String, Labels)> for SelectionKey<'_> {
    fn equivalent(&self, key: &(String, Labels)) -> bool {
        self.0 == key.0 && *self.1 == key.1
    }
}

/// What a compiled set depends on: direction, the selecting policies, and
/// (for ingress with named ports) the local pod's declared ports.
type InputsKey = (Direction, Vec<usize>, Vec<NamedPort>);

/// What a compiled set contains: rule count and disjoint intervals, each
/// with a global port-set id.
type ContentKey = (usize, Vec<(u32, u32, u32)>);

/// Indexed cluster state and caches for compiling pod policies.
///
/// Built by control from one consistent view of pods, namespaces and
/// policies; used once for a full [`super::PolicyTable::compile`], or kept
/// to recompile just the pods that changed (a pod's labels, ports or
/// placement) with [`PolicyContext::compile_pod`] and patch a copy of the
/// table with [`super::PolicyTable::insert`]. When pods, namespaces or
/// policies change, build a new context: its caches assume the view is
/// fixed.
pub struct PolicyContext<'a> {
    pods: &'a [Pod],
    policies: &'a [NetworkPolicy],
    namespace_labels: HashMap<&'a str, &'a Labels>,
    /// Pods with an IP, by namespace (indices into `pods`).
    pods_by_namespace: HashMap<&'a str, Vec<usize>>,
    /// Pods with an IP (indices into `pods`).
    addressed: Vec<usize>,
    policies_by_namespace: HashMap<&'a str, Vec<usize>>,
    /// Parsed ports of every rule of every policy.
    ports: Vec<PerDirection<RulePorts>>,
    /// Resolved peers, filled on first use.
    peers: Vec<Option<PerDirection<RulePeers>>>,
    warnings: Vec<PolicyWarning>,
    selecting: HashMap<(String, Labels), Vec<usize>>,
    port_sets: Vec<PortSet>,
    port_set_ids: HashMap<PortSet, u32>,
    unions: HashMap<Vec<u32>, u32>,
    by_inputs: HashMap<InputsKey, Arc<CompiledSet>>,
    by_content: HashMap<ContentKey, Arc<CompiledSet>>,
}

impl<'a> PolicyContext<'a> {
    /// Indexes the cluster and checks every policy (see
    /// [`PolicyContext::warnings`]). `pods` must include the local pods.
    pub fn new(
        pods: &'a [Pod],
        namespaces: &'a [Namespace],
        policies: &'a [NetworkPolicy],
    ) -> PolicyContext<'a> {
        let namespace_labels = namespaces
            .iter()
            .map(|ns| (ns.name.as_str(), &ns.labels))
            .collect();
        let mut pods_by_namespace: HashMap<&str, Vec<usize>> = HashMap::new();
        let mut addressed = Vec::new();
        for (i, pod) in pods.iter().enumerate() {
            if !pod.ip.is_unspecified() {
                pods_by_namespace
                    .entry(pod.namespace.as_str())
                    .or_default()
                    .push(i);
                addressed.push(i);
            }
        }
        let mut policies_by_namespace: HashMap<&str, Vec<usize>> = HashMap::new();
        let mut warnings = Vec::new();
        let mut ports = Vec::with_capacity(policies.len());
        for (i, policy) in policies.iter().enumerate() {
            policies_by_namespace
                .entry(policy.namespace.as_str())
                .or_default()
                .push(i);
            let mut messages = Vec::new();
            check_policy(policy, &mut messages);
            let parse = |rules: &[PolicyRule], messages: &mut Vec<String>| {
                rules
                    .iter()
                    .map(|rule| parse_ports(rule, messages))
                    .collect()
            };
            ports.push([
                parse(&policy.ingress, &mut messages),
                parse(&policy.egress, &mut messages),
            ]);
            let name = format!("{}/{}", policy.namespace, policy.name);
            warnings.extend(messages.into_iter().map(|message| PolicyWarning {
                policy: name.clone(),
                message,
            }));
        }
        PolicyContext {
            pods,
            policies,
            namespace_labels,
            pods_by_namespace,
            addressed,
            policies_by_namespace,
            ports,
            peers: policies.iter().map(|_| None).collect(),
            warnings,
            selecting: HashMap::new(),
            port_sets: Vec::new(),
            port_set_ids: HashMap::new(),
            unions: HashMap::new(),
            by_inputs: HashMap::new(),
            by_content: HashMap::new(),
        }
    }

    /// The problems found in the policies, one per offending part.
    pub fn warnings(&self) -> &[PolicyWarning] {
        &self.warnings
    }

    /// Consumes the context, keeping its warnings.
    pub fn into_warnings(self) -> Vec<PolicyWarning> {
        self.warnings
    }

    /// The compiled policy of `pod` (a pod on this node). Sets identical to
    /// ones this context built before are shared, not rebuilt.
    pub fn compile_pod(&mut self, pod: &Pod) -> PodPolicy {
        let selecting = self.selecting_policies(pod);
        let isolating = |direction: Direction| -> Vec<usize> {
            selecting
                .iter()
                .copied()
                .filter(|&i| match direction {
                    Direction::Ingress => self.policies[i].ingress_isolation,
                    Direction::Egress => self.policies[i].egress_isolation,
                })
                .collect()
        };
        let (ingress, egress) = (isolating(Direction::Ingress), isolating(Direction::Egress));
        let policies = selecting
            .iter()
            .map(|&i| format!("{}/{}", self.policies[i].namespace, self.policies[i].name))
            .collect();
        PodPolicy {
            ingress: (!ingress.is_empty())
                .then(|| self.compile_direction(Direction::Ingress, ingress, pod)),
            egress: (!egress.is_empty())
                .then(|| self.compile_direction(Direction::Egress, egress, pod)),
            pod: format!("{}/{}", pod.namespace, pod.name),
            policies,
        }
    }

    /// Indices of the policies selecting `pod` (its namespace, its labels).
    fn selecting_policies(&mut self, pod: &Pod) -> Vec<usize> {
        let key = SelectionKey(&pod.namespace, &pod.labels);
        if let Some(found) = self.selecting.get(&key) {
            return found.clone();
        }
        let found: Vec<usize> = self
            .policies_by_namespace
            .get(pod.namespace.as_str())
            .into_iter()
            .flatten()
            .copied()
            .filter(|&i| self.policies[i].pod_selector.matches(&pod.labels))
            .collect();
        self.selecting
            .insert((pod.namespace.clone(), pod.labels.clone()), found.clone());
        found
    }

    fn compile_direction(
        &mut self,
        direction: Direction,
        policies: Vec<usize>,
        local: &Pod,
    ) -> Arc<CompiledSet> {
        let d = slot(direction);
        let named_on_local = direction == Direction::Ingress
            && policies
                .iter()
                .any(|&i| self.ports[i][d].iter().any(|rule| !rule.named.is_empty()));
        let signature = if named_on_local {
            local.ports.clone()
        } else {
            Vec::new()
        };
        let inputs = (direction, policies, signature);
        if let Some(set) = self.by_inputs.get(&inputs) {
            return Arc::clone(set);
        }
        for &i in &inputs.1 {
            self.resolve_peers(i);
        }

        let mut pieces: Vec<(u32, u32, u32)> = Vec::new();
        let mut rules = 0;
        for &i in &inputs.1 {
            let Some(peers) = &self.peers[i] else {
                continue;
            };
            for (ports, peers) in self.ports[i][d].iter().zip(&peers[d]) {
                rules += 1;
                let local_destination = (direction == Direction::Ingress).then_some(local);
                let base = intern(
                    &mut self.port_sets,
                    &mut self.port_set_ids,
                    ports.on(local_destination),
                );
                // Egress named ports resolve on each destination pod.
                let per_pod = direction == Direction::Egress
                    && !ports.all_protocols
                    && !ports.named.is_empty();
                let mut pod_piece = |pod: &Pod, pieces: &mut Vec<(u32, u32, u32)>| {
                    let ip = u32::from(pod.ip);
                    let id = if per_pod {
                        intern(
                            &mut self.port_sets,
                            &mut self.port_set_ids,
                            ports.on(Some(pod)),
                        )
                    } else {
                        base
                    };
                    if let Some(id) = id {
                        pieces.push((ip, ip, id));
                    }
                };
                if peers.all {
                    if let Some(id) = base {
                        pieces.push((0, u32::MAX, id));
                    }
                    if per_pod {
                        for &p in &self.addressed {
                            pod_piece(&self.pods[p], &mut pieces);
                        }
                    }
                }
                for &p in &peers.pods {
                    pod_piece(&self.pods[p], &mut pieces);
                }
                if let Some(id) = base {
                    pieces.extend(peers.blocks.iter().map(|&(first, last)| (first, last, id)));
                }
            }
        }

        let intervals = self.sweep(&pieces);
        let set = match self.by_content.get(&(rules, intervals.clone())) {
            Some(set) => Arc::clone(set),
            None => {
                let set = Arc::new(self.build(&intervals, rules));
                self.by_content.insert((rules, intervals), Arc::clone(&set));
                set
            }
        };
        self.by_inputs.insert(inputs, Arc::clone(&set));
        set
    }

    /// Disjoint intervals, in address order and merged where neighbours
    /// carry the same port set, each with the union of the port sets of the
    /// pieces covering it.
    fn sweep(&mut self, pieces: &[(u32, u32, u32)]) -> Vec<(u32, u32, u32)> {
        // (position, +1 opens / -1 closes, port set); an interval closes
        // just past its last address, which may be 2^32.
        let mut events: Vec<(u64, i32, u32)> = Vec::with_capacity(pieces.len() * 2);
        for &(first, last, id) in pieces {
            events.push((u64::from(first), 1, id));
            events.push((u64::from(last) + 1, -1, id));
        }
        events.sort_unstable();
        let mut active: BTreeMap<u32, u32> = BTreeMap::new();
        let mut out: Vec<(u32, u32, u32)> = Vec::new();
        let mut i = 0;
        while i < events.len() {
            let position = events[i].0;
            while let Some(&(at, delta, id)) = events.get(i) {
                if at != position {
                    break;
                }
                let count = active.entry(id).or_default();
                if delta > 0 {
                    *count += 1;
                } else {
                    *count -= 1;
                    if *count == 0 {
                        active.remove(&id);
                    }
                }
                i += 1;
            }
            // Every opened interval closes later, so a next event exists
            // while anything is active.
            let (Some(&(next, _, _)), Ok(first)) = (events.get(i), u32::try_from(position)) else {
                continue;
            };
            if active.is_empty() {
                continue;
            }
            let Ok(last) = u32::try_from(next - 1) else {
                continue;
            };
            let id = self.union_of(active.keys().copied().collect());
            match out.last_mut() {
                Some(prev) if prev.2 == id && u64::from(prev.1) + 1 == position => prev.1 = last,
                _ => out.push((first, last, id)),
            }
        }
        out
    }

    /// The id of the union of the port sets `ids` (sorted, distinct).
    fn union_of(&mut self, ids: Vec<u32>) -> u32 {
        if let [single] = ids[..] {
            return single;
        }
        if let Some(&id) = self.unions.get(&ids) {
            return id;
        }
        let mut union = PortSet::default();
        for &id in &ids {
            union.union(&self.port_sets[index(id)]);
        }
        let id = intern(&mut self.port_sets, &mut self.port_set_ids, union)
            .expect("a union of non-empty port sets is not empty");
        self.unions.insert(ids, id);
        id
    }

    /// A compiled set from disjoint intervals with global port-set ids,
    /// renumbering the port sets densely.
    fn build(&self, intervals: &[(u32, u32, u32)], rules: usize) -> CompiledSet {
        let mut local_ids: HashMap<u32, u32> = HashMap::new();
        let mut sets = Vec::new();
        let ranges: Vec<(u32, u32, u32)> = intervals
            .iter()
            .map(|&(first, last, id)| {
                let local = *local_ids.entry(id).or_insert_with(|| {
                    sets.push(self.port_sets[index(id)].clone());
                    u32::try_from(sets.len() - 1).expect("port sets are counted by u32")
                });
                (first, last, local)
            })
            .collect();
        CompiledSet::new(&ranges, sets, rules)
    }

    /// Resolves the peers of every rule of policy `i`, once.
    fn resolve_peers(&mut self, i: usize) {
        if self.peers[i].is_some() {
            return;
        }
        let policy = &self.policies[i];
        let resolve = |rules: &[PolicyRule]| {
            rules
                .iter()
                .map(|rule| self.rule_peers(policy, rule))
                .collect()
        };
        let resolved = [resolve(&policy.ingress), resolve(&policy.egress)];
        self.peers[i] = Some(resolved);
    }

    fn rule_peers(&self, policy: &NetworkPolicy, rule: &PolicyRule) -> RulePeers {
        let mut out = RulePeers {
            all: rule.peers.is_empty(),
            ..RulePeers::default()
        };
        for peer in &rule.peers {
            match peer {
                Peer::Pods {
                    namespace_selector,
                    pod_selector,
                } => self.peer_pods(
                    policy,
                    namespace_selector.as_ref(),
                    pod_selector.as_ref(),
                    &mut out.pods,
                ),
                Peer::IpBlock { cidr, except } => out.blocks.extend(block_intervals(*cidr, except)),
            }
        }
        out.pods.sort_unstable();
        out.pods.dedup();
        out.blocks.sort_unstable();
        out
    }

    /// Adds the pods a `podSelector`/`namespaceSelector` peer of `policy`
    /// matches.
    fn peer_pods(
        &self,
        policy: &NetworkPolicy,
        namespace_selector: Option<&LabelSelector>,
        pod_selector: Option<&LabelSelector>,
        out: &mut Vec<usize>,
    ) {
        let mut add = |pods: &[usize]| {
            out.extend(
                pods.iter()
                    .copied()
                    .filter(|&p| pod_selector.is_none_or(|s| s.matches(&self.pods[p].labels))),
            );
        };
        match namespace_selector {
            None => add(self
                .pods_by_namespace
                .get(policy.namespace.as_str())
                .map_or(&[], |v| v)),
            Some(selector) => {
                for (namespace, pods) in &self.pods_by_namespace {
                    let labels = self
                        .namespace_labels
                        .get(namespace)
                        .copied()
                        .unwrap_or(&NO_LABELS);
                    if selector.matches(labels) {
                        add(pods);
                    }
                }
            }
        }
    }
}

/// Interns a port set; `None` for the empty set (it allows nothing, so it
/// is never stored).
fn intern(sets: &mut Vec<PortSet>, ids: &mut HashMap<PortSet, u32>, set: PortSet) -> Option<u32> {
    if set.is_empty() {
        return None;
    }
    if let Some(&id) = ids.get(&set) {
        return Some(id);
    }
    let id = u32::try_from(sets.len()).ok()?;
    sets.push(set.clone());
    ids.insert(set, id);
    Some(id)
}

/// A port-set id as a vector index.
fn index(id: u32) -> usize {
    // u32 always fits in usize on the targets podswitch supports (64-bit).
    id as usize
}

/// The addresses of `cidr` minus every `except`, as sorted disjoint
/// intervals.
pub(crate) fn block_intervals(cidr: Cidr, except: &[Cidr]) -> Vec<(u32, u32)> {
    let (first, last) = cidr.range();
    let mut holes: Vec<(u32, u32)> = except.iter().map(Cidr::range).collect();
    holes.sort_unstable();
    let mut out = Vec::new();
    let mut next = u64::from(first);
    for (hole_first, hole_last) in holes {
        if u64::from(hole_last) < next || hole_first > last {
            continue;
        }
        if u64::from(hole_first) > next {
            // `next` < `hole_first` <= u32::MAX, so it fits.
            out.extend(u32::try_from(next).ok().map(|n| (n, hole_first - 1)));
        }
        next = u64::from(hole_last) + 1;
    }
    if next <= u64::from(last) {
        out.extend(u32::try_from(next).ok().map(|n| (n, last)));
    }
    out
}

/// Parses a rule's `ports`, noting entries that match nothing.
fn parse_ports(rule: &PolicyRule, messages: &mut Vec<String>) -> RulePorts {
    let mut out = RulePorts {
        all_protocols: rule.ports.is_empty(),
        ..RulePorts::default()
    };
    for entry in &rule.ports {
        let proto = entry.proto;
        if proto == Proto::Icmp {
            messages.push(
                "a port entry names protocol ICMP, which has no ports; the entry matches nothing"
                    .into(),
            );
            continue;
        }
        match (&entry.port, entry.end_port) {
            (None, None) => out.numbers.add(proto, 0, u16::MAX),
            (Some(PortRef::Number(port)), None) => out.numbers.add(proto, *port, *port),
            (Some(PortRef::Number(port)), Some(end)) if end >= *port => {
                out.numbers.add(proto, *port, end)
            }
            (Some(PortRef::Number(port)), Some(end)) => messages.push(format!(
                "port range {proto} {port}-{end} ends before it starts; the entry matches nothing"
            )),
            (Some(PortRef::Name(name)), None) => out.named.push((name.clone(), proto)),
            (_, Some(end)) => messages.push(format!(
                "endPort {end} needs a numeric port ({proto}); the entry matches nothing"
            )),
        }
    }
    out
}

/// Notes parts of a policy that have no effect.
fn check_policy(policy: &NetworkPolicy, messages: &mut Vec<String>) {
    if !policy.ingress_isolation && !policy.ingress.is_empty() {
        messages
            .push("has ingress rules but policyTypes lacks Ingress; the rules are ignored".into());
    }
    if !policy.egress_isolation && !policy.egress.is_empty() {
        messages
            .push("has egress rules but policyTypes lacks Egress; the rules are ignored".into());
    }
    for rule in policy.ingress.iter().chain(&policy.egress) {
        for peer in &rule.peers {
            if let Peer::IpBlock { cidr, except } = peer {
                for hole in except {
                    let (first, last) = hole.range();
                    if !cidr.contains(first) || !cidr.contains(last) {
                        messages.push(format!("ipBlock except {hole} lies outside cidr {cidr}"));
                    }
                }
            }
        }
    }
}
