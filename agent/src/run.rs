//! The node agent's lifetime, and the I/O around its control core
//! ([`crate::control`]): build the host port, bind AF_XDP sockets and
//! attach XDP programs, run the workers, cluster DNS and the local API,
//! then loop: gather a round's inputs (the source's events, the CNI
//! plugin's port changes, the kernel's change notices, the clock), step the
//! core with each and carry out what it asks (bind and release pod ports,
//! resolve next hops, publish snapshots, sync the uplink filter, answer).
//! On SIGTERM/SIGINT it takes it all down again (sockets closed, XDP
//! detached, host port deleted; the pod list is kept for the next start).

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use afxdp::runner::Runner;
use afxdp::tap::{TapReadiness, TapRegistrar};
use afxdp::xdp::{XdpError, XdpKind, XdpProgram};
use afxdp::{Umem, XskConfig, XskError};
use crossbeam_channel::Receiver;
use dataplane::counters::Counters;
use dataplane::pipeline::{Pipeline, Shared};
use dataplane::port::PortKind;
use dataplane::worker::Worker;
use tables::route::{LocalPod, NodeConfig, PortId};
use tables::snapshot::{Publisher, Snapshot};

use super::config::{AgentConfig, TableSource};
use super::control::{Control, Effect, FilterChange, Input, Settings};
use super::feed::{Feed, FeedError, LiveSource};
use super::health::HealthChecks;
use super::host_port::HostPort;
use super::log;
use super::pods::{self, Dataplane, PodIo};
use super::static_source::{self, StaticTables};
use crate::dns;
use crate::server::{PortCommand, State};
use api::ports::PodPortKind;
use api::AgentStatus;
use netlink::links;

/// Port ids with a fixed role.
pub use tables::route::{FIRST_POD_PORT, GATEWAY_MAC, HOST_PORT, UPLINK_PORT};
/// Names of the host port's two ends.
pub const HOST_SWITCH_SIDE: &str = "psw-host";
pub const HOST_NODE_SIDE: &str = "psw-node";
/// Frames per worker: the uplink's fill ring (4096), the host port's (1024)
/// and up to ~100 pods' (256 each) with room to spare; 64 MiB of UMEM.
const FRAMES_PER_WORKER: u32 = 32768;
/// The uplink's rings: deep enough for the segments of the super-packets
/// another node's TAP pods send in one burst (a 64 KB one is ~46 frames),
/// which arrive faster than a worker sharing its core drains them.
const UPLINK_RINGS: XskConfig = XskConfig {
    rx_size: 4096,
    tx_size: 4096,
    fill_size: 4096,
    comp_size: 4096,
    fill_target: 4096,
    ..XskConfig::DEFAULT
};
/// Port ids a worker serves: the uplink, the host port and the pods.
const MAX_PORTS: usize = 1024;
/// Outer Ethernet, IPv4, UDP and VXLAN headers: what the pod MTU leaves
/// room for under the uplink's.
const VXLAN_OVERHEAD: u32 = 50;
const CONNTRACK_CAPACITY: u32 = 1 << 18;
/// Fragmented datagrams in flight at once (256 KiB).
const FRAGMENT_CAPACITY: usize = 4096;
/// How long a round waits for its first input.
const ROUND: Duration = Duration::from_millis(50);

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
    Xdp(#[from] XdpError),
    #[error(transparent)]
    Api(#[from] api::ApiError),
    #[error(transparent)]
    Feed(#[from] FeedError),
    #[error("too many ports: {0} (the workers serve at most 1024)")]
    TooManyPorts(usize),
    #[error("the workers' TAP readiness (epoll): {0}")]
    Readiness(std::io::Error),
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
    let cidrs = [config.pod_cidr, config.cluster_cidr, config.service_cidr];
    // The node reaches pods through the host port with the pods' MTU: the
    // uplink's less the VXLAN overhead (see the README's "Addresses and pod wiring").
    let uplink_mtu = links::mtu_of(uplink_index)?;
    let pod_mtu = uplink_mtu.saturating_sub(VXLAN_OVERHEAD);
    let host = HostPort::create(HOST_SWITCH_SIDE, HOST_NODE_SIDE, pod_mtu, &cidrs)?;
    let (ports, fixed) = fixed_ports(config, uplink_index, &host, static_tables.as_ref())?;
    let node = node_config(
        config,
        links::mac_of(uplink_index)?,
        host.node_mac,
        uplink_mtu,
    );
    let (mut feed, live) = Feed::start(&config.source, static_tables, &node, &fixed)?;
    feed.set_synthetic_service(dns::service_entry(
        config.cluster_dns,
        config.node_ip,
        &config.node_name,
    ));
    let watch = netlink::Watch::open()
        .map_err(|e| tracing::warn!("{e}; next hops are re-resolved every 500 ms"))
        .ok();
    let macs = resolve_all(&feed.remote_node_ips());
    let on_link = netlink::neighbours(uplink_index).unwrap_or_default();
    let settings = Settings {
        node,
        cluster_domain: config.cluster_domain.clone(),
        fixed,
        fixed_names: ports.iter().map(|p| (p.id, p.name.clone())).collect(),
        pod_ids: PortId::try_from(ports.len()).unwrap_or(PortId::MAX)
            ..PortId::try_from(MAX_PORTS).unwrap_or(PortId::MAX),
        pod_cidr: config.pod_cidr,
        notified: watch.is_some(),
    };
    let (mut control, first) = Control::new(settings, feed, macs, on_link, Instant::now());
    let publisher = Arc::new(Publisher::new(control.snapshot().clone()));
    let shared = Shared::new(CONNTRACK_CAPACITY, 1 << 16, FRAGMENT_CAPACITY);

    // One XDP program per interface; workers, their UMEMs and sockets.
    let mut programs = HashMap::new();
    for p in &ports {
        let kind = match p.kind {
            PortKind::Uplink => XdpKind::Uplink,
            _ => XdpKind::Port,
        };
        programs.insert(p.ifindex, XdpProgram::attach(p.ifindex, kind)?);
    }
    if let Some(uplink) = programs.get_mut(&uplink_index) {
        uplink.add_node_ip(config.node_ip)?;
    }
    let (runner, umems, taps) = start_workers(config, &ports, &mut programs, &publisher, &shared)?;
    let status = Arc::new(Mutex::new(AgentStatus {
        node: config.node_name.clone(),
        source: match config.source {
            TableSource::Static(_) => api::SourceKind::Static,
            TableSource::Manifests(_) => api::SourceKind::Manifests,
            TableSource::Kubernetes(_) => api::SourceKind::Kubernetes,
        },
        objects: control.counts(),
        pod_mtu,
        pod_port: config.pod_port,
        ..AgentStatus::default()
    }));
    if control.synced() {
        status
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .mark_synced();
    }
    // Cluster DNS on the node address (see [`crate::dns`] for how pods'
    // queries get there): a failure to listen leaves the rest of the agent
    // running, with a warning that says why.
    let zone = Arc::new(dns::SharedZone::new(dns::Zone::empty(
        &config.cluster_domain,
    )));
    let dns_server = dns::DnsServer::start(
        SocketAddrV4::new(config.node_ip, dns::PORT),
        zone.clone(),
        config.dns_upstream,
        dns::Clients::of_node(config.cluster_cidr, config.node_ip),
    )
    .map_err(|e| log::warn_shared(&status, format!("{e}; cluster DNS is not answered")))
    .ok();
    let (port_tx, port_rx) = crossbeam_channel::unbounded();
    let state = Arc::new(Mutex::new(State {
        counters: runner.counters(),
        ports: control.port_names(),
        status: status.clone(),
        publisher: Some(publisher.clone()),
        conntrack: Some(shared.conntrack.clone()),
        port_control: Some(port_tx),
        attachments: Vec::new(),
    }));
    let mut io = Io {
        publisher,
        programs,
        uplink_index,
        pods: PodIo::default(),
        spares_load: true,
        umems,
        taps,
        runner,
        health: HealthChecks::start(config.node_ip),
        zone,
        status,
        state: state.clone(),
        retired: Retired::default(),
        pods_file: pods::default_file(&config.socket),
        answered: false,
    };
    let warnings = io.health.sync(control.snapshot(), control.synced());
    warnings.into_iter().for_each(|w| io.warn(w));
    let uplink_queues = links::rx_queues(uplink_index).unwrap_or(1) as usize;
    if uplink_queues < config.workers {
        io.warn(format!(
            "uplink {} has {uplink_queues} receive queue(s) for {} workers: workers {uplink_queues} and up have no socket on it, and what they send to the uplink is dropped as unknown_port; give it a queue per worker (ethtool -L, or numrxqueues/numtxqueues on a veth)",
            config.uplink, config.workers
        ));
    }
    io.carry_out(&mut control, first);
    // Pods attached before a restart, attached again before the API opens.
    io.restore(&mut control);
    let api = crate::server::Server::start(&config.socket, state)?;
    tracing::info!(
        node = %config.node_name,
        workers = io.runner.counters().len(),
        socket = %config.socket.display(),
        "serving"
    );
    let rounds = Rounds {
        source: live,
        commands: port_rx,
        watch,
        dns: dns_server.as_ref(),
        stop,
    };
    rounds.run(&mut control, &mut io);
    tracing::info!("stopping");
    drop(api);
    drop(dns_server);
    io.shutdown();
    drop(host);
    Ok(())
}

/// The uplink, the host port and a static tables file's pods: the ports
/// that never change, and the static pods as the routes want them.
fn fixed_ports(
    config: &AgentConfig,
    uplink_index: u32,
    host: &HostPort,
    static_tables: Option<&StaticTables>,
) -> Result<(Vec<PortSpec>, Vec<LocalPod>), AgentError> {
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
    let mut fixed = Vec::new();
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
        fixed.push(LocalPod {
            ip: u32::from(pod.pod.ip),
            mac: pod.mac,
            port: id,
        });
    }
    if ports.len() >= MAX_PORTS {
        return Err(AgentError::TooManyPorts(ports.len()));
    }
    Ok((ports, fixed))
}

/// The node as the tables see it.
fn node_config(
    config: &AgentConfig,
    uplink_mac: [u8; 6],
    host_mac: [u8; 6],
    uplink_mtu: u32,
) -> NodeConfig {
    NodeConfig {
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
        host_mac,
        uplink_gateway_mac: default_gateway_mac(),
        uplink_mtu: u16::try_from(uplink_mtu).unwrap_or(u16::MAX),
    }
}

/// Starts the workers with their UMEMs and the sockets of `ports` (whose
/// programs are in `programs`, by interface index).
fn start_workers(
    config: &AgentConfig,
    ports: &[PortSpec],
    programs: &mut HashMap<u32, XdpProgram>,
    publisher: &Arc<Publisher>,
    shared: &Shared,
) -> Result<(Runner, Vec<Umem>, Vec<TapRegistrar>), AgentError> {
    // Every receive queue in use on every port is served: queue q by worker
    // q mod workers (on a veth, frames land on queue = sending CPU mod the
    // queue count, so a queue without a socket would leak to the kernel).
    let queues: Vec<u32> = ports
        .iter()
        .map(|p| links::rx_queues(p.ifindex))
        .collect::<Result<_, _>>()?;
    let seed = tables::flow::random_seed();
    let mut workers = Vec::new();
    let mut umems = Vec::new();
    let mut taps = Vec::new();
    for w in 0..config.workers {
        let counters = Arc::new(Counters::new(MAX_PORTS));
        let pipeline = Pipeline::new(shared, counters, seed);
        let mut worker = Worker::new(FRAMES_PER_WORKER, MAX_PORTS, publisher.clone(), pipeline);
        // Asked once per round only while TAP queues are registered.
        let readiness = TapReadiness::new().map_err(AgentError::Readiness)?;
        taps.push(readiness.registrar());
        worker.set_readiness(Box::new(readiness));
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
                if p.kind == PortKind::Uplink {
                    &UPLINK_RINGS
                } else {
                    &XskConfig::DEFAULT
                },
            )?;
            if let Some(port) = sockets {
                let _ = worker.add_port(p.id, p.kind, port);
            }
        }
        workers.push(worker);
        umems.push(umem);
    }
    let cores: Vec<_> = core_affinity::get_core_ids()
        .unwrap_or_default()
        .into_iter()
        .map(Some)
        .collect();
    Ok((
        Runner::start(workers, &cores, config.poll_mode),
        umems,
        taps,
    ))
}

/// What the loop waits on between rounds.
struct Rounds<'a> {
    source: Option<LiveSource>,
    commands: Receiver<PortCommand>,
    /// The kernel's link, route and neighbour change notices.
    watch: Option<netlink::Watch>,
    dns: Option<&'a dns::DnsServer>,
    stop: &'a AtomicBool,
}

impl Rounds<'_> {
    /// Runs rounds until asked to stop: waits for a first input (or
    /// [`ROUND`]), takes every other one waiting, steps the core with each
    /// and a closing [`Input::Tick`], and carries out its effects.
    fn run(self, control: &mut Control, io: &mut Io) {
        let mut events = self
            .source
            .as_ref()
            .map_or_else(crossbeam_channel::never, |s| s.events.clone());
        while !self.stop.load(Ordering::Acquire) && !SIGNALLED.load(Ordering::Acquire) {
            let mut inputs = Vec::new();
            crossbeam_channel::select! {
                recv(events) -> event => match event {
                    Ok(event) => inputs.push(Input::Source(event)),
                    // The source stopped (it never does on its own): keep
                    // the tables in force.
                    Err(_) => events = crossbeam_channel::never(),
                },
                recv(self.commands) -> command => {
                    inputs.extend(command.ok().and_then(|c| io.port_input(c)));
                }
                default(ROUND) => {}
            }
            inputs.extend(events.try_iter().map(Input::Source));
            inputs.extend(self.commands.try_iter().filter_map(|c| io.port_input(c)));
            io.answered = false;
            for input in inputs {
                let effects = control.step(input);
                io.carry_out(control, effects);
            }
            io.pods.drop_pending();
            // After the attachments of the round: which of them still
            // exist is read now.
            if self.watch.as_ref().is_some_and(|w| w.wait(Duration::ZERO)) {
                let present = control
                    .pod_interfaces()
                    .into_iter()
                    .filter_map(|name| links::index_of(&name).map(|index| (name, index)))
                    .collect();
                let effects = control.step(Input::LinksChanged { present });
                io.carry_out(control, effects);
            }
            let effects = control.step(Input::Tick(Instant::now()));
            io.carry_out(control, effects);
            io.status().dns = self.dns.map(dns::DnsServer::stats);
            io.retired.release();
            // When nothing waits, load a program for the next attachment
            // (after a failure, attachments load their own and report it).
            if !io.answered && io.spares_load {
                if let Err(w) = io.pods.top_up() {
                    io.warn(w);
                    io.spares_load = false;
                }
            }
        }
    }
}

/// Everything the core's effects act on.
struct Io {
    publisher: Arc<Publisher>,
    /// By interface index: the uplink's, the host port's, static pods'.
    programs: HashMap<u32, XdpProgram>,
    uplink_index: u32,
    pods: PodIo,
    /// Spare programs load while idle, until loading one fails.
    spares_load: bool,
    /// One per worker.
    umems: Vec<Umem>,
    /// One per worker: where its TAP queues register.
    taps: Vec<TapRegistrar>,
    runner: Runner,
    health: HealthChecks,
    zone: Arc<dns::SharedZone>,
    status: Arc<Mutex<AgentStatus>>,
    state: Arc<Mutex<State>>,
    retired: Retired,
    pods_file: PathBuf,
    /// This round answered the CNI plugin.
    answered: bool,
}

impl Io {
    /// A port change of the API thread as the core's input (with the
    /// interface's index, which only the kernel knows). A TAP attachment's
    /// device is created here, its MAC filled in; if that fails, the plugin
    /// is answered at once and there is no input.
    fn port_input(&mut self, command: PortCommand) -> Option<Input> {
        match command {
            PortCommand::Attach {
                mut attachment,
                reply,
            } => {
                let ifindex = if attachment.kind == PodPortKind::Tap {
                    match self.pods.create_tap(&mut attachment, self.runner.len()) {
                        Ok(index) => Some(index),
                        Err(refusal) => {
                            let _ = reply.send(Err(refusal));
                            return None;
                        }
                    }
                } else {
                    links::index_of(&attachment.host_ifname)
                };
                Some(Input::Attach {
                    ifindex,
                    attachment,
                    reply: Some(reply),
                })
            }
            PortCommand::Detach {
                container_id,
                ifname,
                reply,
            } => Some(Input::Detach {
                container_id,
                ifname,
                reply,
            }),
        }
    }

    fn status(&self) -> std::sync::MutexGuard<'_, AgentStatus> {
        self.status.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn warn(&self, message: String) {
        log::warn_shared(&self.status, message);
    }

    /// Carries out `effects` in order; an effect whose result the core
    /// wants is stepped in at once, and what that asks is carried out
    /// before the rest.
    fn carry_out(&mut self, control: &mut Control, effects: Vec<Effect>) {
        for effect in effects {
            if let Some(input) = self.apply(effect) {
                let more = control.step(input);
                self.carry_out(control, more);
            }
        }
    }

    /// Carries out one effect; the input that reports on it, if the core
    /// wants one.
    fn apply(&mut self, effect: Effect) -> Option<Input> {
        match effect {
            Effect::Bind {
                id,
                ifindex,
                attachment,
            } => {
                let mut dp = Dataplane {
                    umems: &mut self.umems,
                    runner: &self.runner,
                    taps: &self.taps,
                };
                let result = self.pods.bind(id, ifindex, &attachment, &mut dp);
                return Some(Input::Bound { id, result });
            }
            Effect::Unbind(id) => self.pods.unbind(id, &self.runner),
            Effect::Resolve(nodes) => {
                return Some(Input::NextHops {
                    macs: resolve_all(&nodes),
                    on_link: netlink::neighbours(self.uplink_index).unwrap_or_default(),
                });
            }
            Effect::Filter(change) => {
                if let Some(uplink) = self.programs.get_mut(&self.uplink_index) {
                    if let Err(e) = apply_filter(uplink, &change) {
                        tracing::error!("updating the uplink's XDP filter: {e}");
                    }
                }
            }
            Effect::Publish { snapshot, synced } => {
                let warnings = self.health.sync(&snapshot, synced);
                self.publisher.read(|prev| self.retired.hold(prev));
                self.publisher.publish(snapshot);
                warnings.into_iter().for_each(|w| self.warn(w));
            }
            Effect::Built { objects, synced } => {
                let mut status = self.status();
                status.objects = objects;
                if synced {
                    status.mark_synced();
                }
            }
            Effect::Unsynced => self.status().synced = false,
            Effect::Revision(revision) => self.status().source_revision = Some(revision),
            Effect::Zone(zone) => self.zone.replace(zone),
            Effect::Ports { names, attached } => {
                let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
                (state.ports, state.attachments) = (names, attached);
            }
            Effect::Save(attachments) => {
                if let Some(w) = pods::save(&self.pods_file, attachments) {
                    self.warn(w);
                }
            }
            Effect::Warn(message) => self.warn(message),
            Effect::Answer(answer) => {
                answer.send();
                self.answered = true;
            }
        }
        None
    }

    /// Loads the spare programs, then attaches again the pods of the saved
    /// list whose interfaces still exist, and publishes tables with them.
    fn restore(&mut self, control: &mut Control) {
        while let Ok(true) = self.pods.top_up() {}
        match pods::load_saved(&self.pods_file) {
            Ok(saved) => {
                for attachment in saved {
                    let ifindex = match attachment.kind {
                        PodPortKind::Tap => self.pods.reopen_tap(&attachment, self.runner.len()),
                        PodPortKind::Veth => links::index_of(&attachment.host_ifname),
                    };
                    let effects = control.step(Input::Attach {
                        attachment,
                        ifindex,
                        reply: None,
                    });
                    self.carry_out(control, effects);
                }
                self.pods.drop_pending();
            }
            Err(w) => self.warn(w),
        }
        let effects = control.step(Input::Tick(Instant::now()));
        self.carry_out(control, effects);
    }

    /// Detaches XDP (nothing is redirected to the sockets any more), takes
    /// every frame back from the sockets and closes them, then the UMEM
    /// registrations, then frees the pools.
    fn shutdown(self) {
        drop(self.health);
        self.pods.shutdown();
        let mut workers = self.runner.stop();
        drop(self.programs);
        for w in &mut workers {
            for id in 0..MAX_PORTS {
                if let Ok(id) = PortId::try_from(id) {
                    drop(w.remove_port(id));
                }
            }
        }
        drop(self.umems);
        drop(workers);
    }
}

/// Changes the uplink program's filter maps.
fn apply_filter(uplink: &mut XdpProgram, change: &FilterChange) -> Result<(), XdpError> {
    for &(proto, port) in &change.remove_ports {
        uplink.remove_node_port(proto, port)?;
    }
    for &(proto, port) in &change.add_ports {
        uplink.add_node_port(proto, port)?;
    }
    for &ip in &change.remove_ips {
        uplink.remove_service_ip(ip)?;
    }
    for &ip in &change.add_ips {
        uplink.add_service_ip(ip)?;
    }
    Ok(())
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
