//! Pod ports attached at run time: the interfaces `podswitch-cni` hands
//! over (`POST /ports`), served while traffic flows on the others.
//!
//! Attaching a pod interface: check it (its host end exists in the agent's
//! namespace, its IP is in the node's pod CIDR and nobody else's, its MAC
//! parses), give it the lowest free port id, attach the `xdp_port` program,
//! bind an AF_XDP socket on every receive queue of it that a worker serves
//! (queue q: worker q mod workers) and hand each worker its sockets between
//! two polls. The control thread then publishes tables with the pod's route
//! before it answers, so the pod is reachable when the CNI ADD returns.
//!
//! Detaching: XDP first (nothing is redirected to the sockets any more),
//! then each worker gives its sockets back, which closes them.
//!
//! Loading the XDP program (libbpf and the verifier, ~15 ms here) is most
//! of an attach's cost, so the control thread keeps [`SPARES`] programs
//! loaded ahead ([`PodPorts::top_up`], when it is idle) and an attach only
//! links one to the interface.
//!
//! Every change is saved to a file (JSON, written to a temporary name and
//! renamed) so a restarted agent attaches the pods that still exist again:
//! [`PodPorts::restore`]. A pod interface that disappears without a DEL (its
//! namespace deleted) is detached by [`PodPorts::prune`] when the kernel
//! reports a link change.

use std::path::{Path, PathBuf};

use afxdp::runner::{Command, Runner};
use afxdp::xdp::{XdpKind, XdpProgram};
use afxdp::{Umem, XskConfig, XskPort};
use dataplane::port::{MultiQueue, Port, PortKind};
use serde::{Deserialize, Serialize};
use tables::model::Cidr;
use tables::route::{LocalPod, PortId};

use super::run::AgentError;
use api::ports::{AttachedPort, Attachment, Refusal};
use netlink::links;
use tables::host_ports::Published;
use tables::mac::MacAddr;

/// Ring sizes of a pod's sockets: smaller than the uplink's, since a node
/// has many pods and each socket keeps `fill_target` frames of its worker's
/// pool on its fill ring.
pub const POD_RINGS: XskConfig = XskConfig {
    rx_size: 512,
    tx_size: 512,
    fill_size: 512,
    comp_size: 512,
    fill_target: 256,
    zero_copy: false,
    bind_attempts: 10,
};

/// XDP programs kept loaded for the next attachments.
pub const SPARES: usize = 2;

/// What the workers and their memory look like to the port code.
pub struct Dataplane<'a> {
    /// One per worker, in worker order.
    pub umems: &'a mut [Umem],
    pub runner: &'a Runner,
}

/// One attached pod interface.
struct Entry {
    port: AttachedPort,
    ip: u32,
    mac: [u8; 6],
    ifindex: u32,
    /// Dropping it detaches the program.
    program: XdpProgram,
}

/// The saved form (the attachments only: port ids are given anew).
#[derive(Default, Serialize, Deserialize)]
struct Saved {
    attachments: Vec<Attachment>,
}

/// The pod ports of a running agent.
pub struct PodPorts {
    file: PathBuf,
    /// Port ids available to pods.
    ids: std::ops::Range<PortId>,
    pod_cidr: Cidr,
    /// Pods attached otherwise (a static tables file): their IPs are taken.
    fixed: Vec<LocalPod>,
    entries: Vec<Entry>,
    /// Loaded, not yet attached programs.
    spares: Vec<XdpProgram>,
    /// Moves with every attach and detach.
    changes: u64,
}

impl PodPorts {
    /// No pod ports yet; they get ids from `ids`, must have an IP in
    /// `pod_cidr` that none of `fixed` has, and are saved to `file`.
    pub fn new(
        file: PathBuf,
        ids: std::ops::Range<PortId>,
        pod_cidr: Cidr,
        fixed: Vec<LocalPod>,
    ) -> PodPorts {
        PodPorts {
            file,
            ids,
            pod_cidr,
            fixed,
            entries: Vec::new(),
            spares: Vec::new(),
            changes: 0,
        }
    }

    /// Loads one more spare program if fewer than [`SPARES`] are ready;
    /// true if it loaded one, an error if loading failed.
    pub fn top_up(&mut self) -> Result<bool, String> {
        if self.spares.len() >= SPARES {
            return Ok(false);
        }
        let program = XdpProgram::load(XdpKind::Port)
            .map_err(|e| format!("loading a spare XDP program for pod ports: {e}"))?;
        self.spares.push(program);
        Ok(true)
    }

    /// Attaches again what `file` lists whose interface still exists.
    /// Returns a warning per attachment left out.
    pub fn restore(&mut self, dp: &mut Dataplane<'_>) -> Vec<String> {
        let saved: Saved = match std::fs::read(&self.file) {
            Ok(bytes) => match serde_json::from_slice(&bytes) {
                Ok(saved) => saved,
                Err(e) => {
                    return vec![format!(
                        "{}: not a saved port list ({e}); no pod ports restored",
                        self.file.display()
                    )]
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
            Err(e) => return vec![format!("reading {}: {e}", self.file.display())],
        };
        let mut warnings = Vec::new();
        for a in saved.attachments {
            let key = format!("{}/{}", a.container_id, a.ifname);
            if let Err(refusal) = self.attach(a, dp) {
                warnings.push(format!("pod port {key} not restored: {}", refusal.message));
            }
        }
        warnings.extend(self.save());
        warnings
    }

    /// Serves `a` (replacing an attachment with the same container and
    /// interface). The caller publishes tables with [`PodPorts::local_pods`]
    /// before telling anyone.
    pub fn attach(
        &mut self,
        a: Attachment,
        dp: &mut Dataplane<'_>,
    ) -> Result<AttachedPort, Refusal> {
        let mac = a
            .mac
            .parse::<MacAddr>()
            .map_err(|e| Refusal::new(400, format!("mac: {e}")))?
            .octets();
        let ip = u32::from(a.ip);
        if !self.pod_cidr.contains(ip) {
            return Err(Refusal::new(
                400,
                format!(
                    "IP {} is outside this node's pod CIDR {} (is the IPAM range right?)",
                    a.ip, self.pod_cidr
                ),
            ));
        }
        if a.container_id.is_empty() || a.ifname.is_empty() {
            return Err(Refusal::new(
                400,
                "container_id and ifname must not be empty",
            ));
        }
        for m in &a.port_mappings {
            m.to_model().map_err(|e| Refusal::new(400, e))?;
        }
        let ifindex = links::index_of(&a.host_ifname).ok_or_else(|| {
            Refusal::new(
                400,
                format!(
                    "interface {:?} does not exist in the agent's network namespace",
                    a.host_ifname
                ),
            )
        })?;
        let same = |e: &Entry| e.port.attachment.same_key(&a.container_id, &a.ifname);
        if let Some(other) = self.entries.iter().find(|e| e.ip == ip && !same(e)) {
            return Err(Refusal::new(
                409,
                format!(
                    "IP {} is already attached for container {} ({})",
                    a.ip, other.port.attachment.container_id, other.port.attachment.ifname
                ),
            ));
        }
        if self.fixed.iter().any(|p| p.ip == ip) {
            return Err(Refusal::new(
                409,
                format!("IP {} belongs to a pod of the static tables", a.ip),
            ));
        }
        // Attaching again replaces (once the new one is known to be valid).
        self.detach(&a.container_id, &a.ifname, dp);
        let id = self
            .ids
            .clone()
            .find(|id| self.entries.iter().all(|e| e.port.port != *id))
            .ok_or_else(|| {
                Refusal::new(
                    409,
                    format!("every pod port is taken ({} pods)", self.entries.len()),
                )
            })?;
        let failed = |what: &str, e: &dyn std::fmt::Display| {
            Refusal::new(500, format!("{what} on {}: {e}", a.host_ifname))
        };
        let loaded = match self.spares.pop() {
            Some(program) => program,
            None => XdpProgram::load(XdpKind::Port)
                .map_err(|e| failed("loading the XDP program", &e))?,
        };
        let mut program = loaded
            .attach_loaded(ifindex)
            .map_err(|e| failed("attaching the XDP program", &e))?;
        let queues = links::rx_queues(ifindex).map_err(|e| failed("reading rx queues", &e))?;
        let workers = dp.umems.len();
        let mut bound = Vec::new();
        for (w, umem) in dp.umems.iter_mut().enumerate() {
            match bind_sockets(
                umem,
                w,
                workers,
                &a.host_ifname,
                ifindex,
                queues,
                &mut program,
                &POD_RINGS,
            ) {
                Ok(sockets) => bound.push(sockets),
                Err(e) => return Err(failed("binding AF_XDP sockets", &e)),
            }
        }
        for (w, sockets) in bound.into_iter().enumerate() {
            if let Some(port) = sockets {
                dp.runner.send(
                    w,
                    Command::AddPort {
                        id,
                        kind: PortKind::Pod,
                        port,
                    },
                );
                // Served (and its fill ring stocked) before anyone hears
                // of it.
                dp.runner.sync(w);
            }
        }
        self.changes += 1;
        let port = AttachedPort {
            attachment: a,
            port: id,
        };
        self.entries.push(Entry {
            port: port.clone(),
            ip,
            mac,
            ifindex,
            program,
        });
        Ok(port)
    }

    /// Stops serving `container_id`'s `ifname`; false if it was not
    /// attached.
    pub fn detach(&mut self, container_id: &str, ifname: &str, dp: &mut Dataplane<'_>) -> bool {
        let Some(at) = self
            .entries
            .iter()
            .position(|e| e.port.attachment.same_key(container_id, ifname))
        else {
            return false;
        };
        let entry = self.entries.remove(at);
        release(entry, dp.runner);
        self.changes += 1;
        true
    }

    /// Detaches pods whose interface is gone (their namespace was deleted
    /// without a CNI DEL) and returns a line for each.
    pub fn prune(&mut self, dp: &mut Dataplane<'_>) -> Vec<String> {
        let (gone, kept): (Vec<Entry>, Vec<Entry>) = std::mem::take(&mut self.entries)
            .into_iter()
            .partition(|e| links::index_of(&e.port.attachment.host_ifname) != Some(e.ifindex));
        self.entries = kept;
        if !gone.is_empty() {
            self.changes += 1;
        }
        gone.into_iter()
            .map(|e| {
                let line = format!(
                    "pod port {} ({}/{} {}) detached: its interface is gone",
                    e.port.attachment.host_ifname,
                    e.port.attachment.namespace,
                    e.port.attachment.name,
                    e.port.attachment.ip
                );
                release(e, dp.runner);
                line
            })
            .collect()
    }

    /// Saves the attachments; a warning if that failed.
    pub fn save(&self) -> Option<String> {
        let saved = Saved {
            attachments: self
                .entries
                .iter()
                .map(|e| e.port.attachment.clone())
                .collect(),
        };
        write_atomic(&self.file, &saved)
            .err()
            .map(|e| format!("saving the pod ports to {}: {e}", self.file.display()))
    }

    /// A count that moves with every change of the attached pods.
    pub fn changes(&self) -> u64 {
        self.changes
    }

    /// The attached pods as the route table wants them.
    pub fn local_pods(&self) -> Vec<LocalPod> {
        self.entries
            .iter()
            .map(|e| LocalPod {
                ip: e.ip,
                mac: e.mac,
                port: e.port.port,
            })
            .collect()
    }

    /// Port ids and interface names (for counters).
    pub fn names(&self) -> Vec<(PortId, String)> {
        self.entries
            .iter()
            .map(|e| (e.port.port, e.port.attachment.host_ifname.clone()))
            .collect()
    }

    /// The host ports the attached pods' runtime asked for. Mappings were
    /// checked when their pod was attached.
    pub fn runtime_ports(&self) -> Vec<Published> {
        self.entries
            .iter()
            .map(|e| &e.port.attachment)
            .filter(|a| !a.port_mappings.is_empty())
            .map(|a| Published {
                namespace: a.namespace.clone(),
                name: if a.name.is_empty() {
                    a.ip.to_string()
                } else {
                    a.name.clone()
                },
                ip: a.ip,
                ports: a
                    .port_mappings
                    .iter()
                    .filter_map(|m| m.to_model().ok())
                    .collect(),
            })
            .collect()
    }

    /// The attachments with their port ids.
    pub fn attached(&self) -> Vec<AttachedPort> {
        self.entries.iter().map(|e| e.port.clone()).collect()
    }

    /// Detaches every XDP program (the ports themselves are taken back with
    /// the workers). The saved list stays, for the next start.
    pub fn shutdown(self) {
        drop(self.entries);
    }
}

/// XDP off, then every worker's sockets back and closed.
fn release(entry: Entry, runner: &Runner) {
    drop(entry.program);
    for w in 0..runner.len() {
        drop(runner.remove_port(w, entry.port.port));
    }
}

/// Binds the sockets worker `w` (of `workers`) serves on interface `name`
/// (`ifindex`, `queues` receive queues): one per queue q with q mod workers
/// = w, each entered in `program`'s socket map. Queues beyond those in use
/// (a veth has 1 of its 2 by default, `ethtool -l`) refuse the bind with
/// EINVAL and are skipped. `None` when the worker serves none.
#[allow(clippy::too_many_arguments)]
pub fn bind_sockets(
    umem: &mut Umem,
    w: usize,
    workers: usize,
    name: &str,
    ifindex: u32,
    queues: u32,
    program: &mut XdpProgram,
    config: &XskConfig,
) -> Result<Option<Box<dyn Port>>, AgentError> {
    let mut sockets: Vec<Box<dyn Port>> = Vec::new();
    for queue in (0..queues).filter(|q| *q as usize % workers == w) {
        let port = match XskPort::bind(umem, name, ifindex, queue, config) {
            Ok(port) => port,
            Err(e) if queue > 0 && e.errno() == Some(libc::EINVAL) => continue,
            Err(e) => return Err(e.into()),
        };
        program.set_socket(queue, port.raw_fd())?;
        sockets.push(Box::new(port));
    }
    Ok(match sockets.len() {
        0 => None,
        1 => sockets.pop(),
        _ => Some(Box::new(MultiQueue::new(sockets))),
    })
}

fn write_atomic(path: &Path, value: &impl Serialize) -> std::io::Result<()> {
    let body = serde_json::to_vec_pretty(value).map_err(std::io::Error::other)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    std::fs::write(&tmp, body)?;
    std::fs::rename(&tmp, path)
}

/// The default saved-ports file of an agent whose API listens on `socket`:
/// beside it, `<socket stem>.ports.json`.
pub fn default_file(socket: &Path) -> PathBuf {
    let stem = socket
        .file_stem()
        .map_or_else(|| "agent".into(), |s| s.to_string_lossy().into_owned());
    socket.with_file_name(format!("{stem}.ports.json"))
}
