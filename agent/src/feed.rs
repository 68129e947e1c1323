//! Where the running agent's tables come from, and how they stay current:
//! a static file (compiled whole, once), or a live source (the Kubernetes
//! API, a folder of manifests) whose events the reconciler turns into
//! snapshots that change only what each event touched.
//!
//! Owned by the control core ([`crate::control`]): the I/O loop around it
//! receives the live source's events and hands them in; the core builds
//! the next snapshot when something changed.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::Arc;

use crossbeam_channel::Receiver;

use tables::route::{LocalPod, NodeConfig};
use tables::snapshot::Snapshot;

use super::config::TableSource;
use super::static_source::StaticTables;
use crate::reconcile::Reconciler;
use sources::kube::{KubeError, KubeSource};
use sources::manifest::{ManifestError, ManifestSource};
use sources::{Kind, SourceEvent};
use tables::cluster;
use tables::host_ports::Published;

/// Why a live source could not start.
#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    #[error(transparent)]
    Kube(#[from] KubeError),
    #[error(transparent)]
    Manifests(#[from] ManifestError),
}

/// A running live source: its events, and the source itself (held for its
/// `Drop`, which stops it).
pub struct LiveSource {
    pub events: Receiver<SourceEvent>,
    _source: Live,
}

#[allow(dead_code)] // the sources are only ever dropped
enum Live {
    Kubernetes(KubeSource),
    Manifests(ManifestSource),
}

/// The agent's tables and what they are built from: a static file's
/// state, or a live source's objects in the reconciler. It does no I/O:
/// the live source's events are handed to it ([`Feed::apply`]).
pub enum Feed {
    Static(StaticTables),
    Live(Box<Reconciler>),
}

impl Feed {
    /// Starts the feed for `source`. A static source's tables are already
    /// loaded (`tables`); a live one starts with no objects and fills in as
    /// the returned source's events arrive.
    pub fn start(
        source: &TableSource,
        tables: Option<StaticTables>,
        node: &NodeConfig,
        attached: &[LocalPod],
    ) -> Result<(Feed, Option<LiveSource>), FeedError> {
        let (tx, rx) = crossbeam_channel::unbounded();
        let live = match source {
            TableSource::Static(_) => return Ok((Feed::Static(tables.unwrap_or_default()), None)),
            TableSource::Kubernetes(kubeconfig) => {
                Live::Kubernetes(KubeSource::start(kubeconfig.clone(), tx)?)
            }
            TableSource::Manifests(dir) => {
                Live::Manifests(ManifestSource::start(dir.clone(), node.service_cidr, tx)?)
            }
        };
        let source = LiveSource {
            events: rx,
            _source: live,
        };
        Ok((Feed::live(node, attached), Some(source)))
    }

    /// A live feed with no objects yet, for the node `node` with
    /// `attached` pods.
    pub fn live(node: &NodeConfig, attached: &[LocalPod]) -> Feed {
        Feed::Live(Box::new(Reconciler::new(node.clone(), attached.to_vec())))
    }

    /// Applies one event of the live source.
    pub fn apply(&mut self, event: SourceEvent) {
        if let Feed::Live(reconciler) = self {
            reconciler.apply(event);
        }
    }

    /// Whether the tables need rebuilding (a static feed's never do).
    pub fn pending(&self) -> bool {
        match self {
            Feed::Static(_) => false,
            Feed::Live(reconciler) => reconciler.pending(),
        }
    }

    /// The pods wired to this switch changed (the CNI plugin attached or
    /// detached one): the routes are rebuilt with `attached` next time.
    pub fn set_attached(&mut self, attached: &[LocalPod]) {
        if let Feed::Live(reconciler) = self {
            reconciler.set_attached(attached.to_vec());
        }
    }

    /// Adds a service of the agent's own (the cluster DNS frontend) to a
    /// live feed's tables. A static feed's tables are the file's alone.
    pub fn set_synthetic_service(&mut self, entry: tables::service::ServiceEntry) {
        if let Feed::Live(reconciler) = self {
            reconciler.set_synthetic(entry);
        }
    }

    /// A new DNS zone of `domain` when the objects it is built from changed
    /// since the last call (live feeds; a static feed's file has no DNS
    /// objects, so its zone stays empty).
    pub fn dns_zone(&mut self, domain: &str) -> Option<crate::dns::Zone> {
        let Feed::Live(reconciler) = self else {
            return None;
        };
        reconciler
            .take_dns_change()
            .then(|| crate::dns::Zone::build(domain, reconciler.objects()))
    }

    /// Warnings since the last call (skipped objects, source problems).
    pub fn take_warnings(&mut self) -> Vec<String> {
        match self {
            Feed::Static(_) => Vec::new(),
            Feed::Live(reconciler) => reconciler.take_warnings(),
        }
    }

    /// What the source's objects were read from (see
    /// [`SourceEvent::Revision`]); `None` for a static feed.
    pub fn revision(&self) -> Option<&str> {
        match self {
            Feed::Static(_) => None,
            Feed::Live(reconciler) => reconciler.revision(),
        }
    }

    /// Whether the tables are in step with the source.
    pub fn synced(&self) -> bool {
        match self {
            Feed::Static(_) => true,
            Feed::Live(reconciler) => reconciler.synced(),
        }
    }

    /// Objects held per kind.
    pub fn counts(&self) -> std::collections::BTreeMap<String, usize> {
        match self {
            Feed::Static(t) => [
                (Kind::Namespace, t.state.namespaces.len()),
                (Kind::Node, t.state.nodes.len()),
                (Kind::Pod, t.state.pods.len()),
                (Kind::Service, t.state.services.len()),
                (Kind::NetworkPolicy, t.state.policies.len()),
            ]
            .into_iter()
            .map(|(kind, n)| (kind.name().to_owned(), n))
            .collect(),
            Feed::Live(reconciler) => reconciler.counts(),
        }
    }

    /// The underlay addresses of the other nodes.
    pub fn remote_node_ips(&self) -> Vec<Ipv4Addr> {
        match self {
            Feed::Static(t) => t.state.nodes.iter().map(|n| n.ip).collect(),
            Feed::Live(reconciler) => reconciler.remote_nodes().map(|n| n.ip).collect(),
        }
    }

    /// Next hops changed: routes must be rebuilt.
    pub fn next_hops_changed(&mut self) {
        if let Feed::Live(reconciler) = self {
            reconciler.invalidate_routes();
        }
    }

    /// The next snapshot after `prev`. `runtime_ports` are the host ports
    /// the attached pods' runtime asked for; `macs` maps remote node
    /// addresses to underlay MACs; `on_link` are the uplink's neighbours
    /// (underlay clients answered directly).
    #[allow(clippy::too_many_arguments)]
    pub fn snapshot(
        &mut self,
        node: &NodeConfig,
        attached: &[LocalPod],
        runtime_ports: &[Published],
        macs: &HashMap<Ipv4Addr, [u8; 6]>,
        on_link: &[(Ipv4Addr, [u8; 6])],
        prev: Option<&Snapshot>,
    ) -> Snapshot {
        let lookup = |ip: Ipv4Addr| macs.get(&ip).copied().unwrap_or([0; 6]);
        let mut snapshot = match self {
            Feed::Static(tables) => {
                cluster::compile(&tables.state, node, attached, runtime_ports, &lookup, prev).0
            }
            Feed::Live(reconciler) => {
                reconciler.set_runtime_ports(runtime_ports);
                reconciler.build(prev, &lookup)
            }
        };
        // Freshly built routes (not shared with `prev`) get the uplink's
        // neighbours; `make_mut` does not copy them.
        if prev.is_none_or(|p| !Arc::ptr_eq(&p.routes, &snapshot.routes)) {
            let routes = Arc::make_mut(&mut snapshot.routes);
            for &(ip, mac) in on_link {
                routes.set_neighbour(u32::from(ip), mac);
            }
        }
        snapshot
    }
}
