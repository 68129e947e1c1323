//! The reconciler: Kubernetes objects in, table snapshots out, changing
//! only what a change touches.
//!
//! **Who writes, who reads.** One control thread owns a [`Reconciler`]. It
//! feeds it the sources' [`SourceEvent`]s ([`Reconciler::apply`]), then asks
//! for the next snapshot ([`Reconciler::build`]) and publishes it; workers
//! only ever see published snapshots.
//!
//! **Incremental.** Each event marks what it can affect:
//! - a Service or one of its EndpointSlices: that service alone. The next
//!   snapshot's service table is the previous one with only those services'
//!   frontends and backend sets rebuilt (their Maglev tables from the old
//!   ones, so only the flows of a changed backend move); every other
//!   service's entries are shared.
//! - a Pod: the compiled policy of the local pods it can affect, before
//!   or after the change: itself if it runs here, and the local pods
//!   selected by each policy with a peer selector matching it; the rest of
//!   the policy table is shared. A pod no policy can see leaves the policy
//!   table (and with it the policy epoch, which makes established flows
//!   re-check) untouched.
//! - a NetworkPolicy or a Namespace's labels: the policy table, compiled
//!   for this node's pods.
//! - a Node: the route table (remote pod CIDRs and VTEPs).
//! - a local pod's host ports, or the runtime's for an attached pod: the
//!   host-port entries that changed (see [`tables::host_ports`]).
//!
//! Unchanged tables are shared with the previous snapshot (`Arc`).
//!
//! **Bad input.** An object that cannot be converted (see [`convert`]) is
//! left out with a warning naming it and saying what is wrong; it does not
//! block any other object, and a later valid version of it applies.

pub mod convert;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::sync::Arc;

use tables::model::{
    Endpoint, Namespace, NetworkPolicy, Peer, Pod, RemoteNode, Service, ServicePort,
};
use tables::policy::{PolicyContext, PolicyTable};
use tables::route::{LocalPod, NodeConfig};
use tables::service::{ServiceEntry, ServiceTable};
use tables::snapshot::Snapshot;

use sources::{Kind, Object, ObjectKey, SourceEvent};
use tables::cluster::{self, ClusterState};
use tables::host_ports::{self, Published};

type NsName = (String, String);

/// What the pending changes touch.
#[derive(Debug, Default)]
struct Dirty {
    services: BTreeSet<NsName>,
    routes: bool,
    /// Recompile every local pod's policy.
    policy: bool,
    /// Recompile just these local pods' policies...
    policy_pods: BTreeSet<NsName>,
    /// ...after dropping the entries of these addresses (pods that left,
    /// or changed address).
    policy_gone: BTreeSet<Ipv4Addr>,
}

/// Objects, their converted form, and what changed since the last build.
pub struct Reconciler {
    node: NodeConfig,
    attached: Vec<LocalPod>,
    objects: HashMap<ObjectKey, Object>,
    namespaces: BTreeMap<String, Namespace>,
    nodes: BTreeMap<String, RemoteNode>,
    pods: BTreeMap<NsName, Pod>,
    /// The pods running on this node.
    local: BTreeSet<NsName>,
    /// Forwarding services, with `publishNotReadyAddresses`.
    services: BTreeMap<NsName, (Service, bool)>,
    /// (namespace, slice name) -> (service name, endpoints).
    slices: BTreeMap<NsName, (String, Vec<Endpoint>)>,
    /// (namespace, service name) -> its slices' names.
    slices_of: BTreeMap<NsName, BTreeSet<String>>,
    policies: BTreeMap<NsName, NetworkPolicy>,
    /// Services the agent itself adds (the cluster DNS frontend): not
    /// watched objects, so no source event removes them; they win over a
    /// watched service of the same name, and over the ports of any watched
    /// service at the same frontend (in [`Reconciler::entry`]).
    synthetic: BTreeMap<NsName, ServiceEntry>,
    /// Host ports of this node's pods, as service entries; recomputed when
    /// `host_ports_dirty`.
    host_ports: BTreeMap<NsName, ServiceEntry>,
    /// The host ports attached pods' runtime asked for (CNI portMappings).
    runtime_ports: Vec<Published>,
    host_ports_dirty: bool,
    warnings: Vec<String>,
    dirty: Dirty,
    /// A Service, EndpointSlice or Pod changed since the last
    /// [`Reconciler::take_dns_change`]: the DNS zone is out of date.
    dns_dirty: bool,
    synced: bool,
    /// The source's last [`SourceEvent::Revision`].
    revision: Option<String>,
}

fn ns_name(key: &ObjectKey) -> NsName {
    (key.namespace.clone(), key.name.clone())
}

impl Reconciler {
    /// A reconciler for the node `node`, whose switch has `attached` pods.
    pub fn new(node: NodeConfig, attached: Vec<LocalPod>) -> Reconciler {
        Reconciler {
            node,
            attached,
            objects: HashMap::new(),
            namespaces: BTreeMap::new(),
            nodes: BTreeMap::new(),
            pods: BTreeMap::new(),
            local: BTreeSet::new(),
            services: BTreeMap::new(),
            slices: BTreeMap::new(),
            slices_of: BTreeMap::new(),
            policies: BTreeMap::new(),
            synthetic: BTreeMap::new(),
            host_ports: BTreeMap::new(),
            runtime_ports: Vec::new(),
            host_ports_dirty: true,
            warnings: Vec::new(),
            dirty: Dirty {
                routes: true,
                policy: true,
                ..Dirty::default()
            },
            dns_dirty: true,
            synced: false,
            revision: None,
        }
    }

    /// Adds (or replaces) a service of the agent's own (see `synthetic`).
    pub fn set_synthetic(&mut self, entry: ServiceEntry) {
        let key = (entry.service.namespace.clone(), entry.service.name.clone());
        // Watched services at its address lose the ports it takes.
        let sharing: Vec<NsName> = self
            .services
            .iter()
            .filter(|(_, (s, _))| {
                s.cluster_ips
                    .iter()
                    .any(|ip| entry.service.cluster_ips.contains(ip))
            })
            .map(|(k, _)| k.clone())
            .collect();
        self.dirty.services.extend(sharing);
        self.synthetic.insert(key.clone(), entry);
        self.dirty.services.insert(key);
    }

    /// Whether the objects DNS answers from changed since the last call.
    pub fn take_dns_change(&mut self) -> bool {
        std::mem::take(&mut self.dns_dirty)
    }

    /// Every object held, as the source sent it (headless and ExternalName
    /// services included: what DNS needs beyond the forwarding model).
    pub fn objects(&self) -> impl Iterator<Item = &Object> {
        self.objects.values()
    }

    /// Keys of every service with entries: watched, synthetic and host
    /// ports.
    fn service_keys(&self) -> BTreeSet<NsName> {
        self.services
            .keys()
            .chain(self.synthetic.keys())
            .chain(self.host_ports.keys())
            .cloned()
            .collect()
    }

    /// Replaces the host ports the runtime asked for (from the attachments).
    pub fn set_runtime_ports(&mut self, ports: &[Published]) {
        if self.runtime_ports != ports {
            self.runtime_ports = ports.to_vec();
            self.host_ports_dirty = true;
        }
    }

    /// Recomputes the host-port entries if their inputs changed, marking
    /// the entries that differ for rebuilding.
    fn refresh_host_ports(&mut self) {
        if !std::mem::take(&mut self.host_ports_dirty) {
            return;
        }
        let published: Vec<Published> = self
            .local
            .iter()
            .filter_map(|k| self.pods.get(k))
            .filter_map(|p| Published::of_pod(p, &self.node.name))
            .chain(self.runtime_ports.iter().cloned())
            .collect();
        let (fresh, warnings) = host_ports::entries(&published, &self.node);
        for key in self.host_ports.keys().chain(fresh.keys()) {
            let (old, new) = (self.host_ports.get(key), fresh.get(key));
            if old.map(|e| (&e.service, &e.endpoints)) != new.map(|e| (&e.service, &e.endpoints)) {
                self.dirty.services.insert(key.clone());
            }
        }
        self.host_ports = fresh;
        self.warnings.extend(warnings);
    }

    /// Whether the source last said it is in sync.
    pub fn synced(&self) -> bool {
        self.synced
    }

    /// What the objects held were read from, when the source says.
    pub fn revision(&self) -> Option<&str> {
        self.revision.as_deref()
    }

    /// Whether a change is waiting for [`Reconciler::build`].
    pub fn pending(&self) -> bool {
        self.host_ports_dirty
            || self.dirty.routes
            || self.dirty.policy
            || !self.dirty.services.is_empty()
            || !self.dirty.policy_pods.is_empty()
            || !self.dirty.policy_gone.is_empty()
    }

    /// Number of objects held, per kind name.
    pub fn counts(&self) -> BTreeMap<String, usize> {
        let mut counts: BTreeMap<String, usize> =
            Kind::ALL.iter().map(|k| (k.name().to_owned(), 0)).collect();
        for key in self.objects.keys() {
            *counts.entry(key.kind.name().to_owned()).or_default() += 1;
        }
        counts
    }

    /// The warnings since the last call (objects skipped and why, source
    /// problems).
    pub fn take_warnings(&mut self) -> Vec<String> {
        std::mem::take(&mut self.warnings)
    }

    /// The remote nodes (for next-hop resolution).
    pub fn remote_nodes(&self) -> impl Iterator<Item = &RemoteNode> {
        self.nodes.values().filter(|n| n.name != self.node.name)
    }

    /// Marks the routes for rebuilding (e.g. a next hop's MAC changed).
    pub fn invalidate_routes(&mut self) {
        self.dirty.routes = true;
    }

    /// Replaces the pods attached to this switch.
    pub fn set_attached(&mut self, attached: Vec<LocalPod>) {
        self.attached = attached;
        self.dirty.routes = true;
    }

    /// Applies one source event.
    pub fn apply(&mut self, event: SourceEvent) {
        match event {
            SourceEvent::Replace { kinds, objects } => {
                let mut fresh: HashMap<ObjectKey, Object> = HashMap::new();
                for o in objects.into_iter().filter(|o| kinds.contains(&o.kind())) {
                    fresh.insert(o.key(), o);
                }
                let gone: Vec<ObjectKey> = self
                    .objects
                    .keys()
                    .filter(|k| kinds.contains(&k.kind) && !fresh.contains_key(*k))
                    .cloned()
                    .collect();
                for key in gone {
                    self.delete(&key);
                }
                // Kinds in dependency order: services before their slices.
                let mut fresh: Vec<Object> = fresh.into_values().collect();
                fresh.sort_by_key(|o| o.kind());
                for o in fresh {
                    self.upsert(o);
                }
            }
            SourceEvent::Apply(o) => self.upsert(o),
            SourceEvent::Delete(key) => self.delete(&key),
            SourceEvent::Synced(s) => self.synced = s,
            SourceEvent::Warning(w) => self.warnings.push(w),
            SourceEvent::Revision(r) => self.revision = Some(r),
        }
    }

    /// Whether port `p` of a service at `ips` is a frontend of a service
    /// of the agent's own (the cluster DNS at `--cluster-dns`, e.g. where a
    /// cluster's `kube-dns` Service is): the agent's wins.
    fn shadowed(&self, ips: &[Ipv4Addr], p: &ServicePort) -> bool {
        self.synthetic.values().any(|e| {
            e.service.cluster_ips.iter().any(|ip| ips.contains(ip))
                && e.service
                    .ports
                    .iter()
                    .any(|s| s.port == p.port && s.proto == p.proto)
        })
    }

    /// Warns when a watched service's ports are left to a synthetic one.
    fn warn_if_shadowed(&mut self, key: &ObjectKey, svc: &Service) {
        let yielded: Vec<String> = svc
            .ports
            .iter()
            .filter(|p| self.shadowed(&svc.cluster_ips, p))
            .map(|p| format!("{}/{:?}", p.port, p.proto))
            .collect();
        if !yielded.is_empty() {
            self.warnings.push(format!(
                "{key}: port(s) {} of cluster IP {} are the agent's own cluster DNS (--cluster-dns): the agent answers them, not this service's endpoints",
                yielded.join(", "),
                svc.cluster_ips
                    .iter()
                    .map(Ipv4Addr::to_string)
                    .collect::<Vec<_>>()
                    .join(",")
            ));
        }
    }

    fn warn(&mut self, key: &ObjectKey, why: &str) {
        self.warnings.push(format!("{key}: {why}; skipped"));
    }

    fn upsert(&mut self, object: Object) {
        let key = object.key();
        if key.name.is_empty() {
            self.warnings.push(format!(
                "a {} without metadata.name; skipped",
                key.kind.name()
            ));
            return;
        }
        if self.objects.get(&key) == Some(&object) {
            return;
        }
        self.remove_converted(&key);
        self.dns_dirty |= matches!(key.kind, Kind::Pod | Kind::Service | Kind::EndpointSlice);
        match &object {
            Object::Namespace(ns) => {
                self.namespaces
                    .insert(key.name.clone(), convert::namespace(ns));
                self.dirty.policy |= !self.policies.is_empty();
            }
            Object::Node(n) => match convert::node(n) {
                Ok(node) => {
                    self.nodes.insert(key.name.clone(), node);
                    self.dirty.routes = true;
                }
                Err(e) => self.warn(&key, &e),
            },
            Object::Pod(p) => match convert::pod(p) {
                Ok(Some(pod)) => {
                    let nn = ns_name(&key);
                    if pod.node == self.node.name {
                        self.local.insert(nn.clone());
                        self.host_ports_dirty = true;
                    }
                    self.pods.insert(nn.clone(), pod);
                    self.mark_policy(&nn);
                }
                Ok(None) => {}
                Err(e) => self.warn(&key, &e),
            },
            Object::Service(s) => {
                match convert::service(s) {
                    Ok(Some(svc)) => {
                        let pnr = convert::publishes_not_ready(s);
                        self.warn_if_shadowed(&key, &svc);
                        self.services.insert(ns_name(&key), (svc, pnr));
                    }
                    Ok(None) => {}
                    Err(e) => self.warn(&key, &e),
                }
                self.dirty.services.insert(ns_name(&key));
            }
            Object::EndpointSlice(s) => match convert::endpoint_slice(s) {
                Ok((service, endpoints)) => {
                    let svc_key = (key.namespace.clone(), service.clone());
                    self.slices_of
                        .entry(svc_key.clone())
                        .or_default()
                        .insert(key.name.clone());
                    self.slices.insert(ns_name(&key), (service, endpoints));
                    self.dirty.services.insert(svc_key);
                }
                Err(e) => self.warn(&key, &e),
            },
            Object::NetworkPolicy(p) => match convert::network_policy(p) {
                Ok(policy) => {
                    self.policies.insert(ns_name(&key), policy);
                    self.dirty.policy = true;
                }
                Err(e) => self.warn(&key, &e),
            },
        }
        self.objects.insert(key, object);
    }

    fn delete(&mut self, key: &ObjectKey) {
        if self.objects.remove(key).is_some() {
            self.remove_converted(key);
        }
    }

    /// Drops the converted form of `key` and marks what it touched.
    fn remove_converted(&mut self, key: &ObjectKey) {
        let nn = ns_name(key);
        self.dns_dirty |= matches!(key.kind, Kind::Pod | Kind::Service | Kind::EndpointSlice);
        match key.kind {
            Kind::Namespace => {
                if self.namespaces.remove(&key.name).is_some() {
                    self.dirty.policy |= !self.policies.is_empty();
                }
            }
            Kind::Node => {
                if self.nodes.remove(&key.name).is_some() {
                    self.dirty.routes = true;
                }
            }
            Kind::Pod => {
                if self.pods.contains_key(&nn) {
                    self.mark_policy(&nn);
                    if let Some(pod) = self.pods.remove(&nn) {
                        if self.local.remove(&nn) {
                            self.dirty.policy_gone.insert(pod.ip);
                            self.host_ports_dirty = true;
                        }
                    }
                }
            }
            Kind::Service => {
                self.services.remove(&nn);
                self.dirty.services.insert(nn);
            }
            Kind::EndpointSlice => {
                if let Some((service, _)) = self.slices.remove(&nn) {
                    let svc_key = (key.namespace.clone(), service);
                    if let Some(set) = self.slices_of.get_mut(&svc_key) {
                        set.remove(&key.name);
                        if set.is_empty() {
                            self.slices_of.remove(&svc_key);
                        }
                    }
                    self.dirty.services.insert(svc_key);
                }
            }
            Kind::NetworkPolicy => {
                if self.policies.remove(&nn).is_some() {
                    self.dirty.policy = true;
                }
            }
        }
    }

    /// Marks the local pods whose compiled policy pod `key` (as it is now)
    /// can change: itself if it runs here (which policies select it), and
    /// the local pods selected by every policy with a peer selector that
    /// matches it. Called before and after a pod changes.
    fn mark_policy(&mut self, key: &NsName) {
        let Some(pod) = self.pods.get(key) else {
            return;
        };
        if self.policies.is_empty() {
            return;
        }
        if pod.node == self.node.name {
            self.dirty.policy_pods.insert(key.clone());
        }
        let ns_labels = self.namespaces.get(&pod.namespace).map(|n| &n.labels);
        let sees = |p: &NetworkPolicy| {
            p.ingress.iter().chain(p.egress.iter()).any(|rule| {
                rule.peers.iter().any(|peer| match peer {
                    Peer::IpBlock { .. } => false,
                    Peer::Pods {
                        namespace_selector,
                        pod_selector,
                    } => {
                        let ns_ok = match namespace_selector {
                            None => p.namespace == pod.namespace,
                            Some(sel) => ns_labels.is_none_or(|l| sel.matches(l)),
                        };
                        ns_ok && pod_selector.as_ref().is_none_or(|s| s.matches(&pod.labels))
                    }
                })
            })
        };
        let mut marked = Vec::new();
        for policy in self.policies.values().filter(|p| sees(p)) {
            for local in &self.local {
                let selected = self.pods.get(local).is_some_and(|l| {
                    l.namespace == policy.namespace && policy.pod_selector.matches(&l.labels)
                });
                if selected {
                    marked.push(local.clone());
                }
            }
        }
        self.dirty.policy_pods.extend(marked);
    }

    /// The service entry of `key` (its endpoints from every slice, each
    /// address once), or `None` if it does not forward.
    fn entry(&self, key: &NsName) -> Option<ServiceEntry> {
        if let Some(entry) = self.synthetic.get(key).or_else(|| self.host_ports.get(key)) {
            return Some(entry.clone());
        }
        let (service, publish_not_ready) = self.services.get(key)?;
        let mut service = service.clone();
        let (ports, ips) = (&mut service.ports, &service.cluster_ips);
        ports.retain(|p| !self.shadowed(ips, p));
        let mut seen = BTreeSet::new();
        let mut endpoints = Vec::new();
        for slice in self.slices_of.get(key).into_iter().flatten() {
            let Some((_, eps)) = self.slices.get(&(key.0.clone(), slice.clone())) else {
                continue;
            };
            for e in eps {
                if seen.insert(e.ip) {
                    let mut e = e.clone();
                    if *publish_not_ready {
                        (e.ready, e.serving) = (true, true);
                    }
                    endpoints.push(e);
                }
            }
        }
        Some(ServiceEntry { service, endpoints })
    }

    /// Every object in the tables' model: what a whole-state compile of the
    /// same objects takes (tests compare the two).
    pub fn state(&self) -> ClusterState {
        ClusterState {
            namespaces: self.namespaces.values().cloned().collect(),
            pods: self.pods.values().cloned().collect(),
            // Host ports are derived from the pods (a whole-state compile
            // derives them again).
            services: self
                .service_keys()
                .iter()
                .filter(|k| !self.host_ports.contains_key(*k))
                .filter_map(|k| self.entry(k))
                .collect(),
            policies: self.policies.values().cloned().collect(),
            nodes: self.nodes.values().cloned().collect(),
        }
    }

    /// The policy table and epoch for the next snapshot: `prev`'s when no
    /// change touched policy, `prev`'s with the marked local pods
    /// recompiled when only pods changed, else compiled whole.
    fn policy_table(&mut self, prev: Option<&Snapshot>, dirty: Dirty) -> (Arc<PolicyTable>, u32) {
        let partial = !dirty.policy_pods.is_empty() || !dirty.policy_gone.is_empty();
        if let Some(p) = prev.filter(|_| !dirty.policy && !partial) {
            return (p.policy.clone(), p.policy_epoch);
        }
        // Any change of the policy table moves the epoch: established flows
        // are checked again.
        let epoch = prev.map_or(1, |p| p.policy_epoch.wrapping_add(1));
        let base = prev.filter(|_| !dirty.policy);
        let pods: Vec<Pod> = self.pods.values().cloned().collect();
        let namespaces: Vec<Namespace> = self.namespaces.values().cloned().collect();
        let policies: Vec<NetworkPolicy> = self.policies.values().cloned().collect();
        let mut ctx = PolicyContext::new(&pods, &namespaces, &policies);
        let table = match base {
            Some(p) => {
                let mut table = (*p.policy).clone();
                for ip in &dirty.policy_gone {
                    table.remove(u32::from(*ip));
                }
                let recompile = dirty.policy_pods.iter().filter(|k| self.local.contains(*k));
                for pod in recompile.filter_map(|k| self.pods.get(k)) {
                    table.insert(u32::from(pod.ip), ctx.compile_pod(pod));
                }
                table
            }
            None => {
                let mut table = PolicyTable::empty();
                for pod in self.local.iter().filter_map(|k| self.pods.get(k)) {
                    table.insert(u32::from(pod.ip), ctx.compile_pod(pod));
                }
                table
            }
        };
        self.warnings
            .extend(ctx.into_warnings().into_iter().map(|w| w.to_string()));
        (Arc::new(table), epoch)
    }

    /// The next snapshot: `prev` with the tables the pending changes touch
    /// rebuilt (all of them when there is no `prev`). `underlay_mac`
    /// resolves a remote node's address to the MAC to send to.
    pub fn build(
        &mut self,
        prev: Option<&Snapshot>,
        underlay_mac: &dyn Fn(Ipv4Addr) -> [u8; 6],
    ) -> Snapshot {
        self.refresh_host_ports();
        let dirty = std::mem::take(&mut self.dirty);
        let node_ip = Ipv4Addr::from(self.node.node_ip);
        let routes = match prev {
            Some(p) if !dirty.routes => p.routes.clone(),
            _ => {
                let nodes: Vec<RemoteNode> = self.remote_nodes().cloned().collect();
                Arc::new(cluster::routes(
                    &nodes,
                    &self.node,
                    &self.attached,
                    underlay_mac,
                ))
            }
        };
        let services = match prev {
            Some(p) => {
                if dirty.services.is_empty() {
                    p.services.clone()
                } else {
                    let entries: Vec<(NsName, Option<ServiceEntry>)> = dirty
                        .services
                        .iter()
                        .map(|k| (k.clone(), self.entry(k)))
                        .collect();
                    let changes: Vec<(&str, &str, Option<&ServiceEntry>)> = entries
                        .iter()
                        .map(|((ns, n), e)| (ns.as_str(), n.as_str(), e.as_ref()))
                        .collect();
                    Arc::new(p.services.update(&changes, &self.node.name, &[node_ip]))
                }
            }
            None => {
                let entries: Vec<ServiceEntry> = self
                    .service_keys()
                    .iter()
                    .filter_map(|k| self.entry(k))
                    .collect();
                Arc::new(ServiceTable::build(
                    &entries,
                    &self.node.name,
                    &[node_ip],
                    None,
                ))
            }
        };
        let (policy, policy_epoch) = self.policy_table(prev, dirty);
        Snapshot {
            generation: 0,
            policy_epoch,
            node: self.node.clone(),
            routes,
            services,
            policy,
        }
    }
}

#[cfg(test)]
mod tests;
