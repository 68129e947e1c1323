//! The node agent's lifetime: build the tables, create the host port, bind
//! AF_XDP sockets and attach XDP programs, run the workers and the local
//! API, attach the pod interfaces the CNI plugin hands over ([`super::pods`]),
//! keep next-hop MACs fresh, and on SIGTERM/SIGINT take it all down again
//! (sockets closed, XDP detached, host port deleted; the pod list is kept
//! for the next start). It also answers cluster DNS on the node address
//! (see [`crate::dns`] for how pods' queries get there).

use std::collections::{BTreeSet, HashMap};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use afxdp::runner::Runner;
use afxdp::xdp::{XdpKind, XdpProgram};
use afxdp::{Umem, XskConfig, XskError};
use dataplane::counters::Counters;
use dataplane::pipeline::{Pipeline, Shared};
use dataplane::port::PortKind;
use dataplane::worker::Worker;
use tables::route::{LocalPod, NodeConfig, PortId};
use tables::service::FrontendKind;
use tables::snapshot::{Publisher, Snapshot};

use super::config::AgentConfig;
use super::config::TableSource;
use super::feed::{Feed, FeedError};
use super::health;
use super::host_port::HostPort;
use super::log;
use super::pods::{self, Dataplane, PodPorts};
use super::static_source;
use crate::dns;
use crate::server::PortCommand;
use api::ports::{AttachedPort, Refusal};
use netlink::links;

/// Port ids with a fixed role.
pub use tables::route::{FIRST_POD_PORT, GATEWAY_MAC, HOST_PORT, UPLINK_PORT};
/// Names of the host port's two ends.
pub const HOST_SWITCH_SIDE: &str = "psw-host";
pub const HOST_NODE_SIDE: &str = "psw-node";
/// Frames per worker: the uplink's and host port's fill rings (1024 each)
/// and up to ~100 pods' (256 each) with room to spare; 64 MiB of UMEM.
const FRAMES_PER_WORKER: u32 = 32768;
/// Port ids a worker serves: the uplink, the host port and the pods.
const MAX_PORTS: usize = 1024;
/// Outer Ethernet, IPv4, UDP and VXLAN headers: what the pod MTU leaves
/// room for under the uplink's.
const VXLAN_OVERHEAD: u32 = 50;
const CONNTRACK_CAPACITY: u32 = 1 << 18;
/// Fragmented datagrams in flight at once (256 KiB).
const FRAGMENT_CAPACITY: usize = 4096;
/// Next hops are resolved again when the kernel reports a neighbour, route
/// or link change; while one is unresolved (or without the subscription),
/// at this interval.
const NEIGHBOUR_RETRY: Duration = Duration::from_millis(500);
/// And in any case at this interval (a missed notification heals).
const NEIGHBOUR_RESYNC: Duration = Duration::from_secs(30);

pub use tables::cluster::vtep_mac;

/// Why the agent could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Tables(#[from] static_source::StaticError),
    #[error("interface {0:?} does not exist in this network namespace")]
    NoInterface(String),
    #[error(transparent)]
    Netlink(#[from] netlink::NetlinkError),
    #[error(transparent)]
    Xsk(#[from] XskError),
    #[error(transparent)]
    Xdp(#[from] afxdp::xdp::XdpError),
    #[error(transparent)]
    Api(#[from] api::ApiError),
    #[error(transparent)]
    Feed(#[from] FeedError),
    #[error("too many ports: {0} (the workers serve at most 1024)")]
    TooManyPorts(usize),
}

struct PortSpec {
    id: PortId,
    name: String,
    ifindex: u32,
    kind: PortKind,
}

/// Set by SIGTERM/SIGINT.
static SIGNALLED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    SIGNALLED.store(true, Ordering::Release);
}

/// Makes SIGTERM and SIGINT request a clean shutdown.
pub fn install_signal_handlers() {
    for sig in [libc::SIGTERM, libc::SIGINT] {
        // SAFETY: the handler only stores to an atomic, which is
        // async-signal-safe.
        unsafe { libc::signal(sig, on_signal as *const () as libc::sighandler_t) };
    }
}

/// Runs the agent until `stop` is set or a signal arrives.
pub fn run(config: &AgentConfig, stop: &AtomicBool) -> Result<(), AgentError> {
    let static_tables = match &config.source {
        TableSource::Static(path) => Some(static_source::load(path, &config.node_name)?),
        _ => None,
    };
    let uplink_index = links::index_of(&config.uplink)
        .ok_or_else(|| AgentError::NoInterface(config.uplink.clone()))?;
    let uplink_mac = links::mac_of(uplink_index)?;
    let cidrs = [config.pod_cidr, config.cluster_cidr, config.service_cidr];
    // The node reaches pods through the host port with the pods' MTU: the
    // uplink's less the VXLAN overhead (see the README's "Addresses and pod wiring").
    let pod_mtu = links::mtu_of(uplink_index)?.saturating_sub(VXLAN_OVERHEAD);
    let host = HostPort::create(HOST_SWITCH_SIDE, HOST_NODE_SIDE, pod_mtu, &cidrs)?;
    let mut ports = vec![
        PortSpec {
            id: UPLINK_PORT,
            name: config.uplink.clone(),
            ifindex: uplink_index,
            kind: PortKind::Uplink,
        },
        PortSpec {
            id: HOST_PORT,
            name: HOST_SWITCH_SIDE.into(),
            ifindex: host.switch_index,
            kind: PortKind::Host,
        },
    ];
    let mut attached = Vec::new();
    let local_pods = static_tables.iter().flat_map(|t| t.local_pods.iter());
    for (pod, id) in local_pods.zip(FIRST_POD_PORT..) {
        let ifindex = links::index_of(&pod.ifname)
            .ok_or_else(|| AgentError::NoInterface(pod.ifname.clone()))?;
        ports.push(PortSpec {
            id,
            name: pod.ifname.clone(),
            ifindex,
            kind: PortKind::Pod,
        });
        attached.push(LocalPod {
            ip: u32::from(pod.pod.ip),
            mac: pod.mac,
            port: id,
        });
    }
    let max_ports = MAX_PORTS;
    if ports.len() >= max_ports {
        return Err(AgentError::TooManyPorts(ports.len()));
    }
    let first_dynamic = PortId::try_from(ports.len()).unwrap_or(PortId::MAX);
    let node = NodeConfig {
        name: config.node_name.clone(),
        node_ip: u32::from(config.node_ip),
        uplink_mac,
        vtep_mac: vtep_mac(config.node_ip),
        gateway_mac: GATEWAY_MAC,
        vni: config.vni,
        pod_cidr: config.pod_cidr,
        cluster_cidr: config.cluster_cidr,
        service_cidr: config.service_cidr,
        uplink_port: UPLINK_PORT,
        host_port: Some(HOST_PORT),
        host_mac: host.node_mac,
        uplink_gateway_mac: default_gateway_mac(),
    };
    let mut feed = Feed::start(&config.source, static_tables, &node, &attached)?;
    feed.set_synthetic_service(dns::service_entry(
        config.cluster_dns,
        config.node_ip,
        &config.node_name,
    ));
    let mut macs = resolve_all(&feed.remote_node_ips());
    let mut on_link = netlink::neighbours(uplink_index).unwrap_or_default();
    let snapshot = feed.snapshot(&node, &attached, &[], &macs, &on_link, None);
    let publisher = Arc::new(Publisher::new(snapshot));
    let shared = Shared::new(CONNTRACK_CAPACITY, 1 << 16, FRAGMENT_CAPACITY);
    let conntrack = shared.conntrack.clone();
    let seed = tables::flow::random_seed();

    // Workers, their UMEMs and sockets; one XDP program per interface.
    let mut programs: HashMap<u32, XdpProgram> = HashMap::new();
    for p in &ports {
        let kind = if p.kind == PortKind::Uplink {
            XdpKind::Uplink
        } else {
            XdpKind::Port
        };
        programs.insert(p.ifindex, XdpProgram::attach(p.ifindex, kind)?);
    }
    let mut uplink_filter = UplinkFilter::default();
    if let Some(uplink) = programs.get_mut(&uplink_index) {
        uplink.add_node_ip(config.node_ip)?;
        publisher.read(|s| uplink_filter.sync(uplink, s))?;
    }
    // Every receive queue in use on every port is served: queue q by worker
    // q mod workers (on a veth, frames land on queue = sending CPU mod the
    // queue count, so a queue without a socket would leak to the kernel).
    let queues: Vec<u32> = ports
        .iter()
        .map(|p| links::rx_queues(p.ifindex))
        .collect::<Result<_, _>>()?;
    let mut workers = Vec::new();
    let mut umems = Vec::new();
    let mut names = Vec::new();
    for w in 0..config.workers {
        let counters = Arc::new(Counters::new(max_ports));
        let pipeline = Pipeline::new(&shared, counters, seed);
        let mut worker = Worker::new(FRAMES_PER_WORKER, max_ports, publisher.clone(), pipeline);
        // SAFETY: the worker drops its ports before its pool, and the umem
        // is dropped (in `shutdown`) after the ports and before the pool.
        let mut umem = unsafe { Umem::new(worker.pool_mut()) }?;
        for (p, &count) in ports.iter().zip(&queues) {
            let Some(program) = programs.get_mut(&p.ifindex) else {
                continue;
            };
            let sockets = pods::bind_sockets(
                &mut umem,
                w,
                config.workers,
                &p.name,
                p.ifindex,
                count,
                program,
                &XskConfig::default(),
            )?;
            if let Some(port) = sockets {
                let _ = worker.add_port(p.id, p.kind, port);
            }
        }
        workers.push(worker);
        umems.push(umem);
    }
    names.extend(ports.iter().map(|p| (p.id, p.name.clone())));
    let cores: Vec<_> = core_affinity::get_core_ids()
        .unwrap_or_default()
        .into_iter()
        .map(Some)
        .collect();
    let runner = Runner::start(workers, &cores, config.poll_mode);
    let static_names = names;
    let mut pods = PodPorts::new(
        pods::default_file(&config.socket),
        first_dynamic..PortId::try_from(MAX_PORTS).unwrap_or(PortId::MAX),
        config.pod_cidr,
        attached.clone(),
    );
    let static_attached = attached;
    // A static source is in sync for good once its snapshot is published
    // (above); a live one when it says so.
    let mut status = api::AgentStatus {
        node: config.node_name.clone(),
        source: match config.source {
            TableSource::Static(_) => api::SourceKind::Static,
            TableSource::Manifests(_) => api::SourceKind::Manifests,
            TableSource::Kubernetes(_) => api::SourceKind::Kubernetes,
        },
        objects: feed.counts(),
        pod_mtu,
        ..api::AgentStatus::default()
    };
    // Pods attached before a restart, attached again before the API opens.
    while let Ok(true) = pods.top_up() {}
    let restored = pods.restore(&mut Dataplane {
        umems: &mut umems,
        runner: &runner,
    });
    for w in restored {
        log::warn(&mut status, w);
    }
    let mut attached = [static_attached.as_slice(), &pods.local_pods()].concat();
    let mut runtime_ports = pods.runtime_ports();
    if !pods.names().is_empty() {
        feed.set_attached(&attached);
        let next = publisher.read(|prev| {
            feed.snapshot(
                &node,
                &attached,
                &runtime_ports,
                &macs,
                &on_link,
                Some(prev),
            )
        });
        publisher.publish(next);
    }
    if feed.synced() {
        status.mark_synced();
    }
    // Cluster DNS on the node address: a failure to listen leaves the rest
    // of the agent running, with a warning that says why.
    let zone = Arc::new(dns::SharedZone::new(
        feed.dns_zone(&config.cluster_domain)
            .unwrap_or_else(|| dns::Zone::empty(&config.cluster_domain)),
    ));
    let dns_server = match dns::DnsServer::start(
        SocketAddrV4::new(config.node_ip, dns::PORT),
        zone.clone(),
        config.dns_upstream,
        dns::Clients::of_node(config.cluster_cidr, config.node_ip),
    ) {
        Ok(server) => Some(server),
        Err(e) => {
            log::warn(&mut status, format!("{e}; cluster DNS is not answered"));
            None
        }
    };
    let mut health = health::HealthChecks::start(config.node_ip);
    publisher.read(|s| {
        for w in health.sync(s, feed.synced()) {
            log::warn(&mut status, w);
        }
    });
    let status = Arc::new(Mutex::new(status));
    let (port_tx, port_rx) = crossbeam_channel::unbounded();
    let state = Arc::new(Mutex::new(crate::server::State {
        counters: runner.counters(),
        ports: [static_names.as_slice(), &pods.names()].concat(),
        status: status.clone(),
        publisher: Some(publisher.clone()),
        conntrack: Some(conntrack.clone()),
        port_control: Some(port_tx),
        attachments: pods.attached(),
    }));
    let api = crate::server::Server::start(&config.socket, state.clone())?;
    tracing::info!(
        node = %config.node_name,
        workers = runner.counters().len(),
        socket = %config.socket.display(),
        "serving"
    );

    // Control loop, until asked to stop: apply the source's events and the
    // CNI plugin's port changes, keep next hops fresh (re-resolving when
    // the kernel says something changed), publish a snapshot when the
    // tables changed, and only then answer the port changes.
    let watch = netlink::Watch::open()
        .map_err(|e| tracing::warn!("{e}; next hops are re-resolved every 500 ms"))
        .ok();
    let mut events = feed
        .events()
        .cloned()
        .unwrap_or_else(crossbeam_channel::never);
    let mut retired = Retired::default();
    let mut last = Instant::now();
    let mut spares_load = true;
    while !stop.load(Ordering::Acquire) && !SIGNALLED.load(Ordering::Acquire) {
        let mut commands = Vec::new();
        crossbeam_channel::select! {
            recv(events) -> event => match event {
                Ok(event) => feed.apply(event),
                // The source stopped (it never does on its own): keep the
                // tables in force.
                Err(_) => events = crossbeam_channel::never(),
            },
            recv(port_rx) -> command => commands.extend(command.ok()),
            default(Duration::from_millis(50)) => {}
        }
        commands.extend(port_rx.try_iter());
        let mut rebuild = feed.drain();
        if let Some(next) = feed.dns_zone(&config.cluster_domain) {
            zone.replace(next);
        }
        let warnings = feed.take_warnings();
        let synced = feed.synced();
        {
            let mut status = status.lock().unwrap_or_else(PoisonError::into_inner);
            status.dns = dns_server.as_ref().map(dns::DnsServer::stats);
            for w in warnings {
                log::warn(&mut status, w);
            }
            if !synced {
                status.synced = false;
            } else if !status.synced {
                // Newly in sync: the tables are rebuilt below.
                rebuild = true;
            }
        }
        let changed = watch.as_ref().is_some_and(|w| w.wait(Duration::ZERO));
        let mut dp = Dataplane {
            umems: &mut umems,
            runner: &runner,
        };
        let before = pods.changes();
        let replies: Vec<Reply> = commands
            .into_iter()
            .map(|c| serve(c, &mut pods, &mut dp))
            .collect();
        if changed {
            let gone = pods.prune(&mut dp);
            let mut status = status.lock().unwrap_or_else(PoisonError::into_inner);
            for line in gone {
                log::warn(&mut status, line);
            }
        }
        let pods_changed = pods.changes() != before;
        if pods_changed {
            attached = [static_attached.as_slice(), &pods.local_pods()].concat();
            runtime_ports = pods.runtime_ports();
            feed.set_attached(&attached);
            rebuild = true;
            if let Some(w) = pods.save() {
                log::warn_shared(&status, w);
            }
        }
        let remote = feed.remote_node_ips();
        let unresolved = remote.iter().any(|ip| !macs.contains_key(ip));
        let every = if unresolved || watch.is_none() {
            NEIGHBOUR_RETRY
        } else {
            NEIGHBOUR_RESYNC
        };
        if changed || last.elapsed() >= every {
            last = Instant::now();
            let fresh = resolve_all(&remote);
            let fresh_link = netlink::neighbours(uplink_index).unwrap_or_default();
            if fresh != macs || fresh_link != on_link {
                (macs, on_link) = (fresh, fresh_link);
                feed.next_hops_changed();
                rebuild = true;
            }
        }
        retired.release();
        if rebuild {
            let next = publisher.read(|prev| {
                feed.snapshot(
                    &node,
                    &attached,
                    &runtime_ports,
                    &macs,
                    &on_link,
                    Some(prev),
                )
            });
            if let Some(uplink) = programs.get_mut(&uplink_index) {
                if let Err(e) = uplink_filter.sync(uplink, &next) {
                    tracing::error!("updating the uplink's XDP filter: {e}");
                }
            }
            let health_warnings = health.sync(&next, synced);
            publisher.read(|prev| retired.hold(prev));
            publisher.publish(next);
            let mut status = status.lock().unwrap_or_else(PoisonError::into_inner);
            for w in health_warnings {
                log::warn(&mut status, w);
            }
            status.objects = feed.counts();
            if synced {
                status.mark_synced();
            }
        }
        // Every event applied so far is in the tables in force.
        if let Some(revision) = feed.revision() {
            let mut status = status.lock().unwrap_or_else(PoisonError::into_inner);
            if status.source_revision.as_deref() != Some(revision) {
                status.source_revision = Some(revision.to_owned());
            }
        }
        if pods_changed {
            let mut state = state.lock().unwrap_or_else(PoisonError::into_inner);
            state.ports = [static_names.as_slice(), &pods.names()].concat();
            state.attachments = pods.attached();
        }
        // The tables with the change are published: answer.
        let idle = replies.is_empty();
        for reply in replies {
            reply.send();
        }
        // When nothing waits, load a program for the next attachment (after
        // a failure, attachments load their own and report it).
        if idle && spares_load {
            if let Err(w) = pods.top_up() {
                log::warn_shared(&status, w);
                spares_load = false;
            }
        }
    }
    tracing::info!("stopping");
    drop(api);
    drop(health);
    drop(dns_server);
    pods.shutdown();
    let workers = runner.stop();
    shutdown(workers, umems, programs);
    drop(host);
    Ok(())
}

/// An answer to the API thread, sent once the tables are published.
enum Reply {
    Attach(
        crossbeam_channel::Sender<Result<AttachedPort, Refusal>>,
        Box<Result<AttachedPort, Refusal>>,
    ),
    Detach(crossbeam_channel::Sender<Result<bool, Refusal>>, bool),
}

impl Reply {
    fn send(self) {
        // The API thread may have given up waiting: nothing to tell.
        match self {
            Reply::Attach(to, answer) => drop(to.send(*answer)),
            Reply::Detach(to, answer) => drop(to.send(Ok(answer))),
        }
    }
}

/// Applies one port change; the answer to send once tables are published.
fn serve(command: PortCommand, pods: &mut PodPorts, dp: &mut Dataplane<'_>) -> Reply {
    match command {
        PortCommand::Attach { attachment, reply } => {
            Reply::Attach(reply, Box::new(pods.attach(attachment, dp)))
        }
        PortCommand::Detach {
            container_id,
            ifname,
            reply,
        } => Reply::Detach(reply, pods.detach(&container_id, &ifname, dp)),
    }
}

/// Detaches XDP (nothing is redirected to the sockets any more), takes
/// every frame back from the sockets and closes them, then the UMEM
/// registrations, then frees the pools.
fn shutdown(mut workers: Vec<Worker>, umems: Vec<Umem>, programs: HashMap<u32, XdpProgram>) {
    drop(programs);
    for w in &mut workers {
        for id in 0..MAX_PORTS {
            if let Ok(id) = PortId::try_from(id) {
                drop(w.remove_port(id));
            }
        }
    }
    drop(umems);
    drop(workers);
}

/// Tables of replaced snapshots, held by the control thread so that their
/// memory is freed here, not on a worker: a replaced snapshot is destroyed
/// by whichever thread next collects the epoch garbage, often a worker in
/// its poll loop, and a large table takes milliseconds to free. Each table
/// is released once nothing else holds it.
#[derive(Default)]
struct Retired {
    services: Vec<Arc<tables::service::ServiceTable>>,
    policy: Vec<Arc<tables::policy::PolicyTable>>,
    routes: Vec<Arc<tables::route::RouteTable>>,
}

impl Retired {
    /// Holds `snapshot`'s tables (each once).
    fn hold(&mut self, snapshot: &Snapshot) {
        fn push<T>(list: &mut Vec<Arc<T>>, table: &Arc<T>) {
            if !list.iter().any(|t| Arc::ptr_eq(t, table)) {
                list.push(table.clone());
            }
        }
        push(&mut self.services, &snapshot.services);
        push(&mut self.policy, &snapshot.policy);
        push(&mut self.routes, &snapshot.routes);
    }

    /// Frees the tables no snapshot holds any more.
    fn release(&mut self) {
        self.services.retain(|t| Arc::strong_count(t) > 1);
        self.policy.retain(|t| Arc::strong_count(t) > 1);
        self.routes.retain(|t| Arc::strong_count(t) > 1);
    }
}

/// What the uplink's XDP program sends to the switch besides the node IP
/// (which never changes): NodePorts and external/LoadBalancer IPs, kept in
/// step with the service table. The rest of the uplink's traffic stays
/// with the kernel.
#[derive(Default)]
struct UplinkFilter {
    node_ports: BTreeSet<(u8, u16)>,
    ips: BTreeSet<Ipv4Addr>,
}

impl UplinkFilter {
    /// Adds what `snapshot`'s services need and removes what they no longer
    /// do.
    fn sync(&mut self, uplink: &mut XdpProgram, snapshot: &Snapshot) -> Result<(), AgentError> {
        let mut node_ports = BTreeSet::new();
        let mut ips = BTreeSet::new();
        for (key, frontend) in snapshot.services.frontends() {
            match frontend.kind {
                FrontendKind::NodePort | FrontendKind::HostPort => {
                    node_ports.insert((key.proto, key.port));
                }
                FrontendKind::External => {
                    ips.insert(Ipv4Addr::from(key.ip));
                }
                FrontendKind::ClusterIp => {}
            }
        }
        for &(proto, port) in self.node_ports.difference(&node_ports) {
            uplink.remove_node_port(proto, port)?;
        }
        for &(proto, port) in node_ports.difference(&self.node_ports) {
            uplink.add_node_port(proto, port)?;
        }
        for &ip in self.ips.difference(&ips) {
            uplink.remove_service_ip(ip)?;
        }
        for &ip in ips.difference(&self.ips) {
            uplink.add_service_ip(ip)?;
        }
        (self.node_ports, self.ips) = (node_ports, ips);
        Ok(())
    }
}

/// The underlay MAC of every remote node (unresolvable ones are left out:
/// frames to them wait for the next refresh).
fn resolve_all(nodes: &[Ipv4Addr]) -> HashMap<Ipv4Addr, [u8; 6]> {
    nodes
        .iter()
        .filter_map(|&ip| {
            netlink::next_hop_mac(ip, Duration::from_millis(500))
                .ok()
                .map(|mac| (ip, mac))
        })
        .collect()
}

/// The default gateway's MAC, if there is a default route (found by asking
/// the kernel how it would route a documentation address; nothing is sent
/// there, only to the gateway itself to resolve it).
fn default_gateway_mac() -> [u8; 6] {
    let probe = Ipv4Addr::new(203, 0, 113, 1);
    match netlink::route(probe) {
        Ok(route) if route.gateway.is_some() => {
            netlink::next_hop_mac(probe, Duration::from_millis(500)).unwrap_or([0; 6])
        }
        _ => [0; 6],
    }
}
