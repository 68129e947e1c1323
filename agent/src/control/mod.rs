//! The agent's control loop as a state machine: [`Control::step`] takes one
//! [`Input`] (a source event, a port change the CNI plugin asked for, what
//! the kernel reported, the clock) and returns the [`Effect`]s the I/O
//! around it carries out (bind or release a pod port's sockets, resolve next
//! hops, publish a snapshot, change the uplink filter, answer the plugin).
//! The core does no I/O, so its rules are tested here without root or
//! sockets; [`crate::run`] is the loop around it.
//!
//! The rules:
//! - An attachment is checked (`registry::Registry::check`) before
//!   anything is bound; one that replaces an attached port releases the old
//!   one first. The answer waits until the tables with the change are
//!   published: a pod is reachable when its CNI ADD returns, and unreachable
//!   when its DEL does.
//! - Every input of a round is stepped, then [`Input::Tick`] ends the
//!   round: when the next hops are due for resolving it asks for that
//!   ([`Effect::Resolve`], answered by [`Input::NextHops`]), and the round
//!   ends there instead; then one snapshot is built for everything the
//!   round changed, and the answers go out after it.
//! - A source that loses its origin (API server outage) keeps the tables in
//!   force; readiness follows the source, and the tables are rebuilt when
//!   it is back in sync.

mod filter;
mod registry;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::ops::Range;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;

use crate::dns;
use crate::feed::Feed;
use api::ports::{AttachedPort, Attachment, Refusal};
use sources::SourceEvent;
use tables::model::Cidr;
use tables::route::{LocalPod, NodeConfig, PortId};
use tables::snapshot::Snapshot;

pub use filter::FilterChange;
use filter::UplinkFilter;
use registry::Registry;

/// Next hops are resolved again when the kernel reports a neighbour, route
/// or link change; while one is unresolved (or without the kernel's
/// notifications), at this interval.
pub const NEIGHBOUR_RETRY: Duration = Duration::from_millis(500);
/// And in any case at this interval (a missed notification heals).
pub const NEIGHBOUR_RESYNC: Duration = Duration::from_secs(30);

/// Remote node address to underlay MAC.
pub type Macs = HashMap<Ipv4Addr, [u8; 6]>;

/// What the core is told.
// Source events, the largest, are most of the inputs: boxing them would
// save nothing.
#[allow(clippy::large_enum_variant)]
pub enum Input {
    /// An event of the live source.
    Source(SourceEvent),
    /// The CNI plugin asks to attach `attachment`, whose host end has index
    /// `ifindex` in the agent's namespace (`None`: it is not there). With
    /// no `reply`, it is an attachment restored from the saved list, and a
    /// refusal becomes a warning.
    Attach {
        attachment: Attachment,
        ifindex: Option<u32>,
        reply: Option<Sender<Result<AttachedPort, Refusal>>>,
    },
    /// The CNI plugin asks to detach `container_id`'s `ifname`.
    Detach {
        container_id: String,
        ifname: String,
        reply: Sender<Result<bool, Refusal>>,
    },
    /// How an [`Effect::Bind`] went.
    Bound {
        id: PortId,
        result: Result<(), Refusal>,
    },
    /// The kernel reported a link, route or neighbour change; `present`
    /// maps each of [`Control::pod_interfaces`] that still exists to its
    /// index, read just before this is stepped (an attachment stepped in
    /// between would count as gone).
    LinksChanged { present: HashMap<String, u32> },
    /// The answer to an [`Effect::Resolve`]: the remote nodes' MACs that
    /// resolved, and the uplink's neighbours.
    NextHops {
        macs: Macs,
        on_link: Vec<(Ipv4Addr, [u8; 6])>,
    },
    /// The round's inputs are in: do what is due at `now` and publish.
    Tick(Instant),
}

/// What the core asks the I/O around it to do, in order.
#[derive(Debug)]
pub enum Effect {
    /// Bind port `id` to the pod interface `ifindex` (XDP program, AF_XDP
    /// sockets on every worker); answer with [`Input::Bound`].
    Bind {
        id: PortId,
        ifindex: u32,
        attachment: Attachment,
    },
    /// Release port `id`: XDP off, then the workers' sockets.
    Unbind(PortId),
    /// Resolve these remote nodes' next hops (and read the uplink's
    /// neighbours); answer with [`Input::NextHops`].
    Resolve(Vec<Ipv4Addr>),
    /// Change the uplink's XDP filter.
    Filter(FilterChange),
    /// Make `snapshot` the tables in force. `synced`: built from a source
    /// in step with its origin (health checks report it).
    Publish { snapshot: Snapshot, synced: bool },
    /// The tables were rebuilt: the objects they hold per kind, and whether
    /// the source is in sync (the status records the time when it is).
    Built {
        objects: BTreeMap<String, usize>,
        synced: bool,
    },
    /// The source lost sync with its origin: not ready, tables kept.
    Unsynced,
    /// The source's revision the tables in force were built from.
    Revision(String),
    /// Cluster DNS answers from this zone from now on.
    Zone(dns::Zone),
    /// The port list changed: every port's id and interface name (fixed
    /// ports first), and the attached pod ports.
    Ports {
        names: Vec<(PortId, String)>,
        attached: Vec<AttachedPort>,
    },
    /// Save the attachments for the next start.
    Save(Vec<Attachment>),
    /// Tell the operator (log and status).
    Warn(String),
    /// Tell the CNI plugin.
    Answer(Answer),
}

/// An answer to the API thread; sent once the tables are published.
// Few, and sent once: their size does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Answer {
    Attach(
        Sender<Result<AttachedPort, Refusal>>,
        Result<AttachedPort, Refusal>,
    ),
    Detach(Sender<Result<bool, Refusal>>, bool),
}

impl Answer {
    /// Sends it (the API thread may have given up waiting: nothing to tell).
    pub fn send(self) {
        match self {
            Answer::Attach(to, answer) => drop(to.send(answer)),
            Answer::Detach(to, answer) => drop(to.send(Ok(answer))),
        }
    }
}

/// An attach waiting for the tables (or, restored, for nobody).
enum Pending {
    Answer(Answer),
    /// A restored attachment: only a refusal is told, as a warning.
    Restored {
        id: Option<PortId>,
        key: String,
        refusal: Option<Refusal>,
    },
}

/// What the core is set up with.
pub struct Settings {
    pub node: NodeConfig,
    pub cluster_domain: String,
    /// Pods of a static tables file, attached from the start.
    pub fixed: Vec<LocalPod>,
    /// Ports that never change (uplink, host port, the fixed pods').
    pub fixed_names: Vec<(PortId, String)>,
    /// Port ids for pods attached at run time, in their pod CIDR.
    pub pod_ids: Range<PortId>,
    pub pod_cidr: Cidr,
    /// Whether the kernel's change notifications arrive ([`Input::LinksChanged`]).
    pub notified: bool,
}

/// The control core.
pub struct Control {
    node: NodeConfig,
    cluster_domain: String,
    fixed_names: Vec<(PortId, String)>,
    notified: bool,
    feed: Feed,
    pods: Registry,
    macs: Macs,
    on_link: Vec<(Ipv4Addr, [u8; 6])>,
    /// The tables in force (the next is built from it).
    current: Snapshot,
    filter: UplinkFilter,
    /// What the status says: the tables came from a source in sync.
    synced: bool,
    revision: Option<String>,
    last_resolve: Instant,
    /// Set by a change report, until the next resolution.
    links_changed: bool,
    /// Something besides the feed asks for a rebuild (next hops, sync).
    rebuild: bool,
    /// The pod ports changed since the last publish.
    pods_changed: bool,
    /// The saved list is written at the end of the round (restores).
    save: bool,
    pending: Vec<Pending>,
}

impl Control {
    /// A core over `feed` with the next hops known at `now`. The tables
    /// in force are [`Control::snapshot`]; the returned effects (the
    /// uplink filter for them) are for the loop to carry out first.
    pub fn new(
        settings: Settings,
        mut feed: Feed,
        macs: Macs,
        on_link: Vec<(Ipv4Addr, [u8; 6])>,
        now: Instant,
    ) -> (Control, Vec<Effect>) {
        let Settings {
            node,
            cluster_domain,
            fixed,
            fixed_names,
            pod_ids,
            pod_cidr,
            notified,
        } = settings;
        let current = feed.snapshot(&node, &fixed, &[], &macs, &on_link, None);
        let mut filter = UplinkFilter::default();
        let first = filter.sync(&current);
        let control = Control {
            synced: feed.synced(),
            node,
            cluster_domain,
            fixed_names,
            notified,
            feed,
            pods: Registry::new(pod_ids, pod_cidr, fixed),
            macs,
            on_link,
            current,
            filter,
            revision: None,
            last_resolve: now,
            links_changed: false,
            rebuild: false,
            pods_changed: false,
            save: false,
            pending: Vec::new(),
        };
        let effects = if first.is_empty() {
            Vec::new()
        } else {
            vec![Effect::Filter(first)]
        };
        (control, effects)
    }

    /// The tables in force.
    pub fn snapshot(&self) -> &Snapshot {
        &self.current
    }

    /// Whether the tables came from a source in sync with its origin.
    pub fn synced(&self) -> bool {
        self.synced
    }

    /// Objects held per kind.
    pub fn counts(&self) -> BTreeMap<String, usize> {
        self.feed.counts()
    }

    /// Every port's id and interface name.
    pub fn port_names(&self) -> Vec<(PortId, String)> {
        [self.fixed_names.as_slice(), &self.pods.names()].concat()
    }

    /// The attached pod ports.
    pub fn attached(&self) -> Vec<AttachedPort> {
        self.pods.attached()
    }

    /// The host ends of the attached pods (for [`Input::LinksChanged`]).
    pub fn pod_interfaces(&self) -> Vec<String> {
        self.pods.interfaces()
    }

    /// Takes one input; returns what to do, in order.
    pub fn step(&mut self, input: Input) -> Vec<Effect> {
        let mut out = Vec::new();
        match input {
            Input::Source(event) => self.feed.apply(event),
            Input::Attach {
                attachment,
                ifindex,
                reply,
            } => self.attach(attachment, ifindex, reply, &mut out),
            Input::Detach {
                container_id,
                ifname,
                reply,
            } => {
                let id = self.pods.remove_key(&container_id, &ifname);
                if let Some(id) = id {
                    out.push(Effect::Unbind(id));
                    self.pods_changed = true;
                }
                let answer = Answer::Detach(reply, id.is_some());
                self.pending.push(Pending::Answer(answer));
            }
            Input::Bound { id, result } => match result {
                Ok(()) => self.pods_changed = true,
                Err(refusal) => {
                    self.pods.remove_id(id);
                    self.refuse(id, refusal);
                }
            },
            Input::LinksChanged { present } => {
                self.links_changed = true;
                for (id, line) in self.pods.remove_gone(&present) {
                    out.push(Effect::Unbind(id));
                    out.push(Effect::Warn(line));
                    self.pods_changed = true;
                }
            }
            Input::NextHops { macs, on_link } => {
                if macs != self.macs || on_link != self.on_link {
                    (self.macs, self.on_link) = (macs, on_link);
                    self.feed.next_hops_changed();
                    self.rebuild = true;
                }
                self.flush(&mut out);
            }
            Input::Tick(now) => {
                if self.resolve_due(now) {
                    self.last_resolve = now;
                    self.links_changed = false;
                    out.push(Effect::Resolve(self.feed.remote_node_ips()));
                } else {
                    self.flush(&mut out);
                }
            }
        }
        out
    }

    /// Checks `a` and, if it passes, asks for it to be bound (after the
    /// port it replaces is released).
    fn attach(
        &mut self,
        a: Attachment,
        ifindex: Option<u32>,
        reply: Option<Sender<Result<AttachedPort, Refusal>>>,
        out: &mut Vec<Effect>,
    ) {
        let key = format!("{}/{}", a.container_id, a.ifname);
        let checked = self.pods.check(&a, ifindex).and_then(|checked| {
            // Attaching again replaces, once the new one is known to be valid.
            if let Some(old) = self.pods.remove_key(&a.container_id, &a.ifname) {
                out.push(Effect::Unbind(old));
                self.pods_changed = true;
            }
            Ok((self.pods.free_id()?, checked))
        });
        let result = checked.map(|(id, checked)| {
            out.push(Effect::Bind {
                id,
                ifindex: checked.ifindex,
                attachment: a.clone(),
            });
            self.pods.insert(id, a, &checked)
        });
        // A restore rewrites the saved list, without what it left out.
        self.save |= reply.is_none();
        self.pending.push(match reply {
            Some(reply) => Pending::Answer(Answer::Attach(reply, result)),
            None => match result {
                Ok(port) => Pending::Restored {
                    id: Some(port.port),
                    key,
                    refusal: None,
                },
                Err(refusal) => Pending::Restored {
                    id: None,
                    key,
                    refusal: Some(refusal),
                },
            },
        });
    }

    /// The bind of port `id` failed: its answer becomes `refusal`.
    fn refuse(&mut self, id: PortId, refusal: Refusal) {
        for p in &mut self.pending {
            match p {
                Pending::Answer(Answer::Attach(_, result))
                    if result.as_ref().is_ok_and(|port| port.port == id) =>
                {
                    *result = Err(refusal);
                    return;
                }
                Pending::Restored {
                    id: at, refusal: r, ..
                } if *at == Some(id) => {
                    (*at, *r) = (None, Some(refusal));
                    return;
                }
                _ => {}
            }
        }
    }

    /// Whether the next hops are due for resolving at `now`.
    fn resolve_due(&self, now: Instant) -> bool {
        let remote = self.feed.remote_node_ips();
        let unresolved = remote.iter().any(|ip| !self.macs.contains_key(ip));
        let every = if unresolved || !self.notified {
            NEIGHBOUR_RETRY
        } else {
            NEIGHBOUR_RESYNC
        };
        self.links_changed || now.saturating_duration_since(self.last_resolve) >= every
    }

    /// Ends the round: one snapshot for what changed, then the answers.
    fn flush(&mut self, out: &mut Vec<Effect>) {
        out.extend(self.feed.take_warnings().into_iter().map(Effect::Warn));
        if let Some(zone) = self.feed.dns_zone(&self.cluster_domain) {
            out.push(Effect::Zone(zone));
        }
        let synced = self.feed.synced();
        if !synced && self.synced {
            self.synced = false;
            out.push(Effect::Unsynced);
        }
        // Newly in sync: the tables are rebuilt.
        self.rebuild |= synced && !self.synced;
        let attached = self.pods.local_pods();
        if self.pods_changed {
            self.feed.set_attached(&attached);
            self.rebuild = true;
        }
        if std::mem::take(&mut self.rebuild) || self.feed.pending() {
            let runtime_ports = self.pods.runtime_ports();
            let next = self.feed.snapshot(
                &self.node,
                &attached,
                &runtime_ports,
                &self.macs,
                &self.on_link,
                Some(&self.current),
            );
            let change = self.filter.sync(&next);
            if !change.is_empty() {
                out.push(Effect::Filter(change));
            }
            self.current = next.clone();
            out.push(Effect::Publish {
                snapshot: next,
                synced,
            });
            out.push(Effect::Built {
                objects: self.feed.counts(),
                synced,
            });
            self.synced = synced;
        }
        // Every event applied so far is in the tables in force.
        if let Some(revision) = self.feed.revision() {
            if self.revision.as_deref() != Some(revision) {
                self.revision = Some(revision.to_owned());
                out.push(Effect::Revision(revision.to_owned()));
            }
        }
        if std::mem::take(&mut self.pods_changed) {
            out.push(Effect::Ports {
                names: self.port_names(),
                attached: self.pods.attached(),
            });
            self.save = true;
        }
        if std::mem::take(&mut self.save) {
            out.push(Effect::Save(self.pods.attachments()));
        }
        for p in self.pending.drain(..) {
            match p {
                Pending::Answer(answer) => out.push(Effect::Answer(answer)),
                Pending::Restored {
                    key,
                    refusal: Some(r),
                    ..
                } => out.push(Effect::Warn(format!(
                    "pod port {key} not restored: {}",
                    r.message
                ))),
                Pending::Restored { .. } => {}
            }
        }
    }
}
