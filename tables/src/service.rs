//! The service table: (IP, port, protocol) -> frontend, and per frontend the
//! backends to balance over.
//!
//! Written by control: [`ServiceTable::build`] compiles services and their
//! endpoints for one node, reusing the previous table's Maglev tables so a
//! backend change moves only that backend's flows. Read by workers through an
//! immutable snapshot, only for packets that start a flow (conntrack carries
//! the decision afterwards): one hash lookup and one Maglev load.
//!
//! Which backends a frontend uses follows kube-proxy:
//! - only ready endpoints; when none is ready, the serving and terminating
//!   ones (graceful termination fallback); none at all -> no backends;
//! - ClusterIP frontends honour `internalTrafficPolicy`, NodePort and external
//!   (LoadBalancer ingress, externalIPs) frontends `externalTrafficPolicy`:
//!   `Local` restricts to endpoints on this node;
//! - external traffic with `externalTrafficPolicy: Cluster` is masqueraded to
//!   the node IP (`snat`), so replies return through this node.

use std::net::Ipv4Addr;
use std::sync::Arc;

use hashbrown::HashMap;

use crate::maglev::Maglev;
use crate::model::{Endpoint, Service, ServiceType, TrafficPolicy};

/// What a packet addressed: destination IP, port and IP protocol number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FrontendKey {
    pub ip: u32,
    pub port: u16,
    pub proto: u8,
}

/// How a frontend was reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrontendKind {
    /// A cluster IP.
    ClusterIp,
    /// A node port on one of this node's IPs.
    NodePort,
    /// A LoadBalancer ingress IP or an externalIP.
    External,
    /// A pod's `hostPort` on this node's IPs (CNI portmap semantics).
    HostPort,
}

/// One backend (endpoint address and target port).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Backend {
    pub ip: u32,
    pub port: u16,
    /// Runs on this node.
    pub local: bool,
}

impl Backend {
    /// The key Maglev hashes for this backend.
    pub fn key(&self) -> u64 {
        (u64::from(self.ip) << 16) | u64::from(self.port)
    }
}

/// The backends one frontend balances over, with their Maglev table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendSet {
    backends: Box<[Backend]>,
    maglev: Option<Maglev>,
}

impl BackendSet {
    /// A set over `backends` (order kept); the Maglev table is built from
    /// `prev` when given, moving as few slots as possible.
    pub fn new(backends: Vec<Backend>, prev: Option<&BackendSet>) -> BackendSet {
        let keys: Vec<u64> = backends.iter().map(Backend::key).collect();
        let maglev = if backends.len() < 2 {
            None
        } else {
            match prev.and_then(|p| p.maglev.as_ref().map(|m| (p, m))) {
                Some((p, m)) => {
                    let prev_keys: Vec<u64> = p.backends.iter().map(Backend::key).collect();
                    Maglev::rebuild(m, &prev_keys, &keys)
                }
                None => Maglev::build(&keys),
            }
        };
        BackendSet {
            backends: backends.into_boxed_slice(),
            maglev,
        }
    }

    /// The backend for a flow hash; `None` when the set is empty.
    #[inline]
    pub fn pick(&self, hash: u64) -> Option<&Backend> {
        match &self.maglev {
            Some(m) => self.backends.get(m.pick(hash) as usize),
            None => self.backends.first(),
        }
    }

    /// Whether `(ip, port)` is still a backend (session affinity checks this
    /// before reusing a remembered backend).
    pub fn contains(&self, ip: u32, port: u16) -> bool {
        self.backends.iter().any(|b| b.ip == ip && b.port == port)
    }

    /// The backends, in order.
    pub fn backends(&self) -> &[Backend] {
        &self.backends
    }

    /// The Maglev table, absent for fewer than two backends.
    pub fn maglev(&self) -> Option<&Maglev> {
        self.maglev.as_ref()
    }

    /// Heap bytes used.
    pub fn memory_bytes(&self) -> usize {
        self.backends.len() * std::mem::size_of::<Backend>()
            + self.maglev.as_ref().map_or(0, Maglev::memory_bytes)
    }
}

/// Where a frontend sends new flows.
#[derive(Clone, Debug)]
pub struct Frontend {
    /// Index into [`ServiceTable::services`].
    pub service: u32,
    /// Index of the port in the service's `ports`.
    pub port_index: u16,
    pub kind: FrontendKind,
    pub backends: Arc<BackendSet>,
    /// Masquerade the client to the node IP (external traffic, policy Cluster).
    pub snat: bool,
    /// `sessionAffinity: ClientIP` timeout in milliseconds; 0 = no affinity.
    pub affinity_ms: u64,
    /// The service port has usable endpoints somewhere in the cluster. With
    /// no backends here, traffic is rejected when it has none anywhere and
    /// dropped when a traffic policy `Local` leaves none on this node (as
    /// kube-proxy does).
    pub has_endpoints: bool,
}

/// Names of a service, for counters, the CLI and the local API. A removed
/// service's index holds an empty `ServiceInfo` until it is reused.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceInfo {
    pub namespace: String,
    pub name: String,
    pub ports: Vec<String>,
    /// Its cluster IPs (host order).
    pub cluster_ips: Vec<u32>,
    /// Where this node answers whether it has local endpoints (a
    /// LoadBalancer's `healthCheckNodePort`, with `externalTrafficPolicy:
    /// Local`).
    pub health_check_node_port: Option<u16>,
}

/// This node's view of every forwarding service.
///
/// Per-service parts are shared (`Arc`) so that [`ServiceTable::update`]'s
/// copy of the table costs one copy of the frontend index and reference
/// counts, not a copy of every service's names and sets.
#[derive(Clone, Debug, Default)]
pub struct ServiceTable {
    frontends: HashMap<FrontendKey, Frontend>,
    /// By service index; a removed service's slot holds an empty
    /// `ServiceInfo` until reused.
    services: Vec<Arc<ServiceInfo>>,
    /// By service index: the frontend keys it installed, and per port (in
    /// `ServiceInfo::ports` order) its (all, local) backend sets, kept so
    /// the next build reuses their Maglev tables.
    parts: Vec<Arc<ServiceParts>>,
    /// (namespace, name) -> service index, for incremental updates.
    index: HashMap<Arc<(String, String)>, u32>,
    /// Indices of removed services, reused by the next additions.
    free: Vec<u32>,
    /// Every cluster IP in use, with the number of services holding it:
    /// traffic to a port of one that no service declares is rejected.
    cluster_ips: HashMap<u32, u32>,
}

/// What one service installed.
#[derive(Debug, Default)]
struct ServiceParts {
    keys: Vec<FrontendKey>,
    sets: Vec<(Arc<BackendSet>, Arc<BackendSet>)>,
}

/// A service and its endpoints, the input of [`ServiceTable::build`].
#[derive(Clone, Debug)]
pub struct ServiceEntry {
    pub service: Service,
    pub endpoints: Vec<Endpoint>,
}

impl ServiceTable {
    /// An empty table.
    pub fn new() -> ServiceTable {
        ServiceTable::default()
    }

    /// Compiles `entries` for the node `node` whose addresses (NodePorts
    /// listen on each) are `node_ips`. `prev` is the table being replaced:
    /// backend sets of the same service port reuse its Maglev tables.
    pub fn build(
        entries: &[ServiceEntry],
        node: &str,
        node_ips: &[Ipv4Addr],
        prev: Option<&ServiceTable>,
    ) -> ServiceTable {
        let mut table = ServiceTable::new();
        for entry in entries {
            table.add(entry, node, node_ips, prev);
        }
        table
    }

    /// A copy of this table with the services in `changes` replaced:
    /// `(namespace, name, Some(entry))` adds or replaces that service,
    /// `(namespace, name, None)` removes it. Only those services' frontends
    /// and backend sets are rebuilt (their Maglev tables from this table's,
    /// moving as few flows as possible); every other service's entries are
    /// shared with this table. Cost: one copy of the frontend index plus
    /// the changed services.
    pub fn update(
        &self,
        changes: &[(&str, &str, Option<&ServiceEntry>)],
        node: &str,
        node_ips: &[Ipv4Addr],
    ) -> ServiceTable {
        let mut next = self.clone();
        for &(namespace, name, _) in changes {
            next.remove(namespace, name);
        }
        for (_, _, entry) in changes {
            if let Some(entry) = entry {
                next.add(entry, node, node_ips, Some(self));
            }
        }
        next
    }

    /// Removes a service's frontends and backend sets; its index is reused.
    fn remove(&mut self, namespace: &str, name: &str) {
        let Some(idx) = self.index.remove(&(namespace.to_owned(), name.to_owned())) else {
            return;
        };
        let slot = usize::try_from(idx).unwrap_or(usize::MAX);
        if let Some(parts) = self.parts.get_mut(slot) {
            for key in &std::mem::take(parts).keys {
                if self.frontends.get(key).is_some_and(|f| f.service == idx) {
                    self.frontends.remove(key);
                }
            }
        }
        if let Some(info) = self.services.get_mut(slot) {
            for ip in &info.cluster_ips {
                if let Some(n) = self.cluster_ips.get_mut(ip) {
                    *n -= 1;
                    if *n == 0 {
                        self.cluster_ips.remove(ip);
                    }
                }
            }
            *info = Arc::default();
        }
        self.free.push(idx);
    }

    /// The backend sets of port `port_name` of service `namespace/name`.
    fn port_sets(
        &self,
        namespace: &str,
        name: &str,
        port_name: &str,
    ) -> Option<&(Arc<BackendSet>, Arc<BackendSet>)> {
        let idx = *self.index.get(&(namespace.to_owned(), name.to_owned()))?;
        let slot = usize::try_from(idx).ok()?;
        let port = self
            .services
            .get(slot)?
            .ports
            .iter()
            .position(|p| p == port_name)?;
        self.parts.get(slot)?.sets.get(port)
    }

    fn add(
        &mut self,
        entry: &ServiceEntry,
        node: &str,
        node_ips: &[Ipv4Addr],
        prev: Option<&ServiceTable>,
    ) {
        let svc = &entry.service;
        let info = ServiceInfo {
            namespace: svc.namespace.clone(),
            name: svc.name.clone(),
            ports: svc.ports.iter().map(|p| p.name.clone()).collect(),
            cluster_ips: svc.cluster_ips.iter().map(|&ip| u32::from(ip)).collect(),
            health_check_node_port: svc
                .health_check_node_port
                .filter(|_| svc.external_traffic_policy == TrafficPolicy::Local),
        };
        for ip in &info.cluster_ips {
            *self.cluster_ips.entry(*ip).or_default() += 1;
        }
        let service = match self.free.pop() {
            Some(idx) => {
                let slot = usize::try_from(idx).unwrap_or(usize::MAX);
                if let Some(s) = self.services.get_mut(slot) {
                    *s = Arc::new(info);
                }
                idx
            }
            None => {
                let Ok(idx) = u32::try_from(self.services.len()) else {
                    return;
                };
                self.services.push(Arc::new(info));
                self.parts.push(Arc::default());
                idx
            }
        };
        self.index
            .insert(Arc::new((svc.namespace.clone(), svc.name.clone())), service);
        let mut installed = ServiceParts::default();
        let affinity_ms = svc.affinity_timeout_s.map_or(0, |s| u64::from(s) * 1000);
        for (port_index, port) in svc.ports.iter().enumerate() {
            let Ok(port_index) = u16::try_from(port_index) else {
                break;
            };
            let prev_sets = prev.and_then(|p| p.port_sets(&svc.namespace, &svc.name, &port.name));
            let all = usable_backends(&entry.endpoints, &port.name, node, false);
            let local = usable_backends(&entry.endpoints, &port.name, node, true);
            let all = Arc::new(BackendSet::new(all, prev_sets.map(|s| &*s.0)));
            let local = Arc::new(BackendSet::new(local, prev_sets.map(|s| &*s.1)));
            let proto = port.proto as u8;
            let mut frontend = |ip: Ipv4Addr, fport: u16, kind: FrontendKind| {
                let policy = match kind {
                    FrontendKind::ClusterIp => svc.internal_traffic_policy,
                    FrontendKind::NodePort | FrontendKind::External => svc.external_traffic_policy,
                    // The pod runs here: never masqueraded but for hairpin.
                    FrontendKind::HostPort => TrafficPolicy::Local,
                };
                let local_only = policy == TrafficPolicy::Local;
                let key = FrontendKey {
                    ip: u32::from(ip),
                    port: fport,
                    proto,
                };
                installed.keys.push(key);
                self.frontends.insert(
                    key,
                    Frontend {
                        service,
                        port_index,
                        kind,
                        backends: if local_only {
                            local.clone()
                        } else {
                            all.clone()
                        },
                        snat: kind != FrontendKind::ClusterIp && !local_only,
                        affinity_ms,
                        has_endpoints: !all.backends().is_empty(),
                    },
                );
            };
            for &ip in &svc.cluster_ips {
                frontend(ip, port.port, FrontendKind::ClusterIp);
            }
            for &ip in svc.external_ips.iter().chain(svc.load_balancer_ips.iter()) {
                frontend(ip, port.port, FrontendKind::External);
            }
            let on_nodes = match svc.kind {
                ServiceType::NodePort | ServiceType::LoadBalancer => Some(FrontendKind::NodePort),
                ServiceType::HostPort => Some(FrontendKind::HostPort),
                ServiceType::ClusterIp => None,
            };
            if let (Some(kind), Some(np)) = (on_nodes, port.node_port) {
                for &ip in node_ips {
                    frontend(ip, np, kind);
                }
            }
            installed.sets.push((all, local));
        }
        if let Some(slot) = self
            .parts
            .get_mut(usize::try_from(service).unwrap_or(usize::MAX))
        {
            *slot = Arc::new(installed);
        }
    }

    /// The frontend a packet to `(ip, port, proto)` addresses.
    #[inline]
    pub fn lookup(&self, ip: u32, port: u16, proto: u8) -> Option<&Frontend> {
        self.frontends.get(&FrontendKey { ip, port, proto })
    }

    /// Every service with a health check node port: the port, the service,
    /// and its endpoints on this node (distinct addresses over its ports'
    /// local backend sets).
    pub fn health_checks(&self) -> Vec<(u16, &ServiceInfo, usize)> {
        self.services
            .iter()
            .zip(&self.parts)
            .filter_map(|(info, parts)| {
                let port = info.health_check_node_port?;
                let mut local: Vec<u32> = parts
                    .sets
                    .iter()
                    .flat_map(|(_, l)| l.backends().iter().map(|b| b.ip))
                    .collect();
                local.sort_unstable();
                local.dedup();
                Some((port, &**info, local.len()))
            })
            .collect()
    }

    /// Whether `ip` is the cluster IP of a service (any of its ports).
    #[inline]
    pub fn is_cluster_ip(&self, ip: u32) -> bool {
        self.cluster_ips.contains_key(&ip)
    }

    /// Every frontend, for the CLI and tests.
    pub fn frontends(&self) -> impl Iterator<Item = (&FrontendKey, &Frontend)> {
        self.frontends.iter()
    }

    /// Service names by index.
    pub fn services(&self) -> &[Arc<ServiceInfo>] {
        &self.services
    }

    /// Number of frontends.
    pub fn len(&self) -> usize {
        self.frontends.len()
    }

    /// Whether no service forwards.
    pub fn is_empty(&self) -> bool {
        self.frontends.is_empty()
    }

    /// Approximate heap bytes used.
    pub fn memory_bytes(&self) -> usize {
        let sets: usize = self
            .parts
            .iter()
            .flat_map(|p| p.sets.iter())
            .map(|(a, l)| a.memory_bytes() + l.memory_bytes())
            .sum();
        self.frontends.capacity() * (std::mem::size_of::<(FrontendKey, Frontend)>() + 1) + sets
    }
}

/// The backends of one service port that new flows may use: ready endpoints,
/// or when none is ready the serving-and-terminating ones (kube-proxy's
/// fallback). With `local_only`, only endpoints on `node`. Sorted by key so
/// the order (and with it the Maglev table) does not depend on input order.
fn usable_backends(
    endpoints: &[Endpoint],
    port_name: &str,
    node: &str,
    local_only: bool,
) -> Vec<Backend> {
    let candidates = || {
        endpoints
            .iter()
            .filter(move |e| !local_only || e.node == node)
            .filter_map(move |e| {
                let port = e.ports.iter().find(|(n, _)| n == port_name)?.1;
                Some((
                    e,
                    Backend {
                        ip: u32::from(e.ip),
                        port,
                        local: e.node == node,
                    },
                ))
            })
    };
    let mut chosen: Vec<Backend> = candidates()
        .filter(|(e, _)| e.ready)
        .map(|(_, b)| b)
        .collect();
    if chosen.is_empty() {
        chosen = candidates()
            .filter(|(e, _)| e.serving && e.terminating)
            .map(|(_, b)| b)
            .collect();
    }
    chosen.sort_by_key(Backend::key);
    chosen.dedup();
    chosen
}

/// Read-only views for the local API and the CLI.
impl ServiceTable {
    /// The two backend sets of port `port_index` of service `service` (an
    /// index into [`ServiceTable::services`]): every usable backend, and the
    /// ones on this node.
    pub fn backend_sets(
        &self,
        service: u32,
        port_index: u16,
    ) -> Option<(&Arc<BackendSet>, &Arc<BackendSet>)> {
        let parts = self.parts.get(usize::try_from(service).ok()?)?;
        parts
            .sets
            .get(usize::from(port_index))
            .map(|(all, local)| (all, local))
    }

    /// Whether `frontend` balances over its port's local-only backend set,
    /// i.e. its traffic policy (internal for ClusterIP frontends, external
    /// for the others) is `Local`.
    pub fn uses_local_backends(&self, frontend: &Frontend) -> bool {
        self.backend_sets(frontend.service, frontend.port_index)
            .is_some_and(|(all, local)| {
                !Arc::ptr_eq(&frontend.backends, all) && Arc::ptr_eq(&frontend.backends, local)
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Proto, ServicePort};

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn svc(kind: ServiceType) -> Service {
        Service {
            namespace: "demo".into(),
            name: "web".into(),
            kind,
            cluster_ips: vec![ip("10.96.0.20")],
            ports: vec![ServicePort {
                name: "http".into(),
                proto: Proto::Tcp,
                port: 80,
                node_port: Some(30080),
            }],
            external_ips: vec![ip("198.18.0.200")],
            load_balancer_ips: vec![ip("198.18.0.201")],
            affinity_timeout_s: None,
            external_traffic_policy: TrafficPolicy::Cluster,
            internal_traffic_policy: TrafficPolicy::Cluster,
            health_check_node_port: None,
        }
    }

    fn ep(addr: &str, node: &str, ready: bool, serving: bool, terminating: bool) -> Endpoint {
        Endpoint {
            ip: ip(addr),
            node: node.into(),
            ready,
            serving,
            terminating,
            ports: vec![("http".into(), 8080)],
        }
    }

    fn table(service: Service, endpoints: Vec<Endpoint>) -> ServiceTable {
        ServiceTable::build(
            &[ServiceEntry { service, endpoints }],
            "node1",
            &[ip("198.18.0.1")],
            None,
        )
    }

    fn backend_ips(f: &Frontend) -> Vec<Ipv4Addr> {
        f.backends
            .backends()
            .iter()
            .map(|b| Ipv4Addr::from(b.ip))
            .collect()
    }

    #[test]
    fn every_frontend_kind_is_installed() {
        let t = table(
            svc(ServiceType::LoadBalancer),
            vec![ep("10.244.1.5", "node2", true, true, false)],
        );
        let cip = t.lookup(u32::from(ip("10.96.0.20")), 80, 6).unwrap();
        assert_eq!(cip.kind, FrontendKind::ClusterIp);
        assert!(!cip.snat);
        let np = t.lookup(u32::from(ip("198.18.0.1")), 30080, 6).unwrap();
        assert_eq!(np.kind, FrontendKind::NodePort);
        assert!(np.snat);
        assert!(t.lookup(u32::from(ip("198.18.0.200")), 80, 6).is_some());
        assert!(t.lookup(u32::from(ip("198.18.0.201")), 80, 6).is_some());
        assert!(
            t.lookup(u32::from(ip("10.96.0.20")), 80, 17).is_none(),
            "UDP is another frontend"
        );
        assert_eq!(t.len(), 4);
    }

    #[test]
    fn cluster_ip_service_has_no_node_port() {
        let t = table(
            svc(ServiceType::ClusterIp),
            vec![ep("10.244.1.5", "node2", true, true, false)],
        );
        assert!(t.lookup(u32::from(ip("198.18.0.1")), 30080, 6).is_none());
    }

    #[test]
    fn only_ready_endpoints_then_terminating_fallback() {
        let t = table(
            svc(ServiceType::ClusterIp),
            vec![
                ep("10.244.1.5", "node2", true, true, false),
                ep("10.244.1.6", "node2", false, true, true),
                ep("10.244.1.7", "node2", false, false, false),
            ],
        );
        let f = t.lookup(u32::from(ip("10.96.0.20")), 80, 6).unwrap();
        assert_eq!(backend_ips(f), vec![ip("10.244.1.5")]);
        let t = table(
            svc(ServiceType::ClusterIp),
            vec![
                ep("10.244.1.6", "node2", false, true, true),
                ep("10.244.1.7", "node2", false, false, false),
            ],
        );
        let f = t.lookup(u32::from(ip("10.96.0.20")), 80, 6).unwrap();
        assert_eq!(backend_ips(f), vec![ip("10.244.1.6")]);
    }

    #[test]
    fn traffic_policies_restrict_to_local_endpoints() {
        let mut s = svc(ServiceType::NodePort);
        s.external_traffic_policy = TrafficPolicy::Local;
        s.internal_traffic_policy = TrafficPolicy::Local;
        let t = table(
            s,
            vec![
                ep("10.244.0.5", "node1", true, true, false),
                ep("10.244.1.5", "node2", true, true, false),
            ],
        );
        let np = t.lookup(u32::from(ip("198.18.0.1")), 30080, 6).unwrap();
        assert_eq!(backend_ips(np), vec![ip("10.244.0.5")]);
        assert!(!np.snat, "Local keeps the client address");
        let cip = t.lookup(u32::from(ip("10.96.0.20")), 80, 6).unwrap();
        assert_eq!(backend_ips(cip), vec![ip("10.244.0.5")]);
    }

    #[test]
    fn rebuild_keeps_flows_of_unchanged_backends() {
        let eps: Vec<Endpoint> = (1..=8)
            .map(|i| ep(&format!("10.244.1.{i}"), "node2", true, true, false))
            .collect();
        let old = table(svc(ServiceType::ClusterIp), eps.clone());
        let mut fewer = eps.clone();
        fewer.remove(2);
        let new = ServiceTable::build(
            &[ServiceEntry {
                service: svc(ServiceType::ClusterIp),
                endpoints: fewer,
            }],
            "node1",
            &[ip("198.18.0.1")],
            Some(&old),
        );
        let key = u32::from(ip("10.96.0.20"));
        let (o, n) = (
            old.lookup(key, 80, Proto::Tcp.number()).unwrap(),
            new.lookup(key, 80, Proto::Tcp.number()).unwrap(),
        );
        let removed = u32::from(ip("10.244.1.3"));
        for h in 0..10_000u64 {
            let hash = crate::flow::fmix64(h);
            let before = o.backends.pick(hash).unwrap();
            let after = n.backends.pick(hash).unwrap();
            if before.ip != removed {
                assert_eq!(before, after, "flow {h} moved although its backend stayed");
            } else {
                assert_ne!(after.ip, removed);
            }
        }
    }

    #[test]
    fn no_endpoints_means_no_backend() {
        let t = table(svc(ServiceType::ClusterIp), vec![]);
        let f = t.lookup(u32::from(ip("10.96.0.20")), 80, 6).unwrap();
        assert!(f.backends.pick(1).is_none());
    }
    #[test]
    fn update_rebuilds_only_the_changed_services() {
        let entry = |name: &str, vip: &str, eps: &[&str]| {
            let mut service = svc(ServiceType::ClusterIp);
            service.name = name.into();
            service.cluster_ips = vec![ip(vip)];
            service.external_ips.clear();
            service.load_balancer_ips.clear();
            ServiceEntry {
                service,
                endpoints: eps
                    .iter()
                    .map(|a| ep(a, "node2", true, true, false))
                    .collect(),
            }
        };
        let a = entry("a", "10.96.0.1", &["10.244.2.1", "10.244.2.2"]);
        let b = entry("b", "10.96.0.2", &["10.244.2.3", "10.244.2.4"]);
        let c = entry("c", "10.96.0.3", &["10.244.2.5"]);
        let node_ips = [ip("198.18.0.1")];
        let old = ServiceTable::build(&[a.clone(), b.clone(), c.clone()], "node1", &node_ips, None);
        let lookup = |t: &ServiceTable, vip: &str| t.lookup(u32::from(ip(vip)), 80, 6).cloned();

        // b scales up, c goes away, d arrives.
        let b2 = entry(
            "b",
            "10.96.0.2",
            &["10.244.2.3", "10.244.2.4", "10.244.2.9"],
        );
        let d = entry("d", "10.96.0.4", &["10.244.2.7"]);
        let new = old.update(
            &[
                ("demo", "b", Some(&b2)),
                ("demo", "c", None),
                ("demo", "d", Some(&d)),
            ],
            "node1",
            &node_ips,
        );
        let (old_a, new_a) = (
            lookup(&old, "10.96.0.1").unwrap(),
            lookup(&new, "10.96.0.1").unwrap(),
        );
        assert!(
            Arc::ptr_eq(&old_a.backends, &new_a.backends),
            "a is shared, not rebuilt"
        );
        assert_eq!(backend_ips(&lookup(&new, "10.96.0.2").unwrap()).len(), 3);
        assert!(lookup(&new, "10.96.0.3").is_none(), "c's frontend is gone");
        assert_eq!(
            backend_ips(&lookup(&new, "10.96.0.4").unwrap()),
            vec![ip("10.244.2.7")]
        );
        // d took c's freed index; names follow.
        let d_index = lookup(&new, "10.96.0.4").unwrap().service as usize;
        assert_eq!(new.services()[d_index].name, "d");
        // The same lookups as a table built from scratch, Maglev included.
        let fresh = ServiceTable::build(&[a, b2, d], "node1", &node_ips, Some(&old));
        assert_eq!(fresh.len(), new.len());
        for (key, f) in fresh.frontends() {
            let g = new.lookup(key.ip, key.port, key.proto).unwrap();
            assert_eq!(f.backends, g.backends, "{key:?}");
        }
        // The old table is untouched (workers may still read it).
        assert!(lookup(&old, "10.96.0.3").is_some());
        assert_eq!(backend_ips(&lookup(&old, "10.96.0.2").unwrap()).len(), 2);
    }
}
