//! The I/O of pod ports attached at run time (the interfaces
//! `podswitch-cni` hands over, `POST /ports`): what the control core
//! ([`crate::control`]) decides, carried out while traffic flows on the
//! other ports.
//!
//! Binding a pod interface (the core has checked it and given it a port
//! id): attach the `xdp_port` program, bind an AF_XDP socket on every
//! receive queue of it that a worker serves (queue q: worker q mod workers)
//! and hand each worker its sockets between two polls. The core then
//! publishes tables with the pod's route before it answers, so the pod is
//! reachable when the CNI ADD returns.
//!
//! Releasing: XDP first (nothing is redirected to the sockets any more),
//! then each worker gives its sockets back, which closes them.
//!
//! Loading the XDP program (libbpf and the verifier, ~15 ms here) is most
//! of an attach's cost, so the loop keeps [`SPARES`] programs loaded ahead
//! ([`PodIo::top_up`], when it is idle) and a bind only links one to the
//! interface.
//!
//! TAP ports (`--pod-port tap`): the agent creates the pod's TAP device
//! itself when the attachment arrives, in its own namespace under the
//! attachment's `host_ifname` (one queue per worker, `gso_max_size` set,
//! persistent), fills in the device's MAC, and on bind gives queue w to
//! worker w (registered with the worker's readiness). The plugin then moves
//! the device into the pod. Releasing makes it non-persistent before the
//! workers close its queues, so it goes with them. A restarted agent opens
//! a restored pod's TAP again inside the pod's namespace; on shutdown the
//! devices persist, so pods keep their interfaces across a restart.
//!
//! The attachments are saved to a file (JSON, written to a temporary name
//! and renamed) after every change, so a restarted agent attaches the pods
//! that still exist again ([`load_saved`]).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use afxdp::runner::{Command, Runner};
use afxdp::tap::{TapDevice, TapRegistrar, GSO_MAX_SIZE};
use afxdp::xdp::{XdpKind, XdpProgram};
use afxdp::{Umem, XskConfig, XskPort};
use dataplane::port::{MultiQueue, Port, PortKind};
use serde::{Deserialize, Serialize};
use tables::route::PortId;

use super::run::AgentError;
use api::ports::{Attachment, PodPortKind, Refusal};
use netlink::links;
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
    /// Each worker's TAP readiness, to register TAP queues with.
    pub taps: &'a [TapRegistrar],
}

/// The saved form (the attachments only: port ids are given anew).
#[derive(Default, Serialize, Deserialize)]
struct Saved {
    attachments: Vec<Attachment>,
}

/// The XDP programs of the bound pod ports, and the spares; the TAP
/// devices of TAP ports.
#[derive(Default)]
pub struct PodIo {
    /// Dropping one detaches it.
    programs: HashMap<PortId, XdpProgram>,
    /// Loaded, not yet attached programs.
    spares: Vec<XdpProgram>,
    /// A duplicate of queue 0 of each bound TAP port's device (to make it
    /// non-persistent on release).
    taps: HashMap<PortId, TapDevice>,
    /// TAP devices made or opened for attachments not yet bound, by
    /// `container_id/ifname`; `fresh` ones were created for this attach.
    pending: HashMap<String, (TapDevice, bool)>,
}

fn key(a: &Attachment) -> String {
    format!("{}/{}", a.container_id, a.ifname)
}

impl PodIo {
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

    /// Creates the TAP device of a new TAP attachment in the agent's
    /// namespace, named `a.host_ifname`, with one queue per worker, and
    /// writes its MAC into `a`. Returns its index.
    pub fn create_tap(&mut self, a: &mut Attachment, workers: usize) -> Result<u32, Refusal> {
        let failed = |what: &str, e: &dyn std::fmt::Display| {
            Refusal::new(500, format!("TAP device {}: {what}: {e}", a.host_ifname))
        };
        let queues = u32::try_from(workers).unwrap_or(1);
        let device =
            TapDevice::create(&a.host_ifname, queues).map_err(|e| failed("creating", &e))?;
        let set_up = || -> Result<(u32, [u8; 6]), String> {
            let index = links::index_of(&a.host_ifname)
                .ok_or_else(|| "not found right after creating it".to_string())?;
            links::set_gso_max_size(index, GSO_MAX_SIZE).map_err(|e| e.to_string())?;
            Ok((index, links::mac_of(index).map_err(|e| e.to_string())?))
        };
        match set_up() {
            Ok((index, mac)) => {
                a.mac = MacAddr(mac).to_string();
                self.pending.insert(key(a), (device, true));
                Ok(index)
            }
            Err(e) => {
                let _ = device.release();
                Err(failed("setting it up", &e))
            }
        }
    }

    /// Opens again, inside the pod's namespace, the TAP device of a TAP
    /// attachment restored from the saved list; its index there, or `None`
    /// when the pod or its interface is gone.
    pub fn reopen_tap(&mut self, a: &Attachment, workers: usize) -> Option<u32> {
        let queues = u32::try_from(workers).unwrap_or(1);
        let ifname = a.ifname.clone();
        let opened = netlink::netns::on_thread(std::path::Path::new(&a.netns), move || {
            // Only a device that is still there: TUNSETIFF would create one.
            let index = links::index_of(&ifname)?;
            TapDevice::create(&ifname, queues).ok().map(|d| (index, d))
        })
        .ok()
        .flatten()?;
        let (index, device) = opened;
        self.pending.insert(key(a), (device, false));
        Some(index)
    }

    /// Lets go of the TAP devices no bind took (refused attachments): one
    /// created for the attempt is deleted, one reopened is left as it was.
    pub fn drop_pending(&mut self) {
        for (_, (device, fresh)) in self.pending.drain() {
            if fresh {
                let _ = device.release();
            }
        }
    }

    /// Serves port `id` on `a`'s host end (index `ifindex`) on every
    /// worker. The caller publishes tables with it before telling anyone.
    pub fn bind(
        &mut self,
        id: PortId,
        ifindex: u32,
        a: &Attachment,
        dp: &mut Dataplane<'_>,
    ) -> Result<(), Refusal> {
        if a.kind == PodPortKind::Tap {
            return self.bind_tap(id, a, dp);
        }
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
                let kind = PortKind::Pod;
                dp.runner.send(w, Command::AddPort { id, kind, port });
                // Served (and its fill ring stocked) before anyone hears
                // of it.
                dp.runner.sync(w);
            }
        }
        self.programs.insert(id, program);
        Ok(())
    }

    /// Gives queue w of `a`'s pending TAP device to worker w.
    fn bind_tap(
        &mut self,
        id: PortId,
        a: &Attachment,
        dp: &mut Dataplane<'_>,
    ) -> Result<(), Refusal> {
        let (device, fresh) = self.pending.remove(&key(a)).ok_or_else(|| {
            Refusal::new(500, format!("TAP device {}: not prepared", a.host_ifname))
        })?;
        let failed = |e: &dyn std::fmt::Display| {
            Refusal::new(500, format!("TAP device {}: {e}", a.host_ifname))
        };
        let keep = device.duplicate().map_err(|e| failed(&e))?;
        let mut queues = Vec::new();
        for (fd, registrar) in device.queues.into_iter().zip(dp.taps) {
            let name = format!("{}/{}", a.host_ifname, queues.len());
            match registrar.queue(&name, fd) {
                Ok(queue) => queues.push(queue),
                Err(e) => {
                    // Refused: a device made for this attach goes with its
                    // queues; a reopened one stays the pod's.
                    if fresh {
                        let _ = keep.release();
                    }
                    return Err(failed(&e));
                }
            }
        }
        for (w, queue) in queues.into_iter().enumerate() {
            let port: Box<dyn Port> = Box::new(queue);
            dp.runner.send(
                w,
                Command::AddPort {
                    id,
                    kind: PortKind::Pod,
                    port,
                },
            );
            dp.runner.sync(w);
        }
        self.taps.insert(id, keep);
        Ok(())
    }

    /// XDP off (a TAP device made non-persistent), then every worker's
    /// sockets or queues of port `id` back and closed.
    pub fn unbind(&mut self, id: PortId, runner: &Runner) {
        drop(self.programs.remove(&id));
        let tap = self.taps.remove(&id);
        if let Some(device) = &tap {
            if let Err(e) = device.release() {
                tracing::warn!("{e}: the device stays after its port is gone");
            }
        }
        for w in 0..runner.len() {
            drop(runner.remove_port(w, id));
        }
        drop(tap);
    }

    /// Detaches every XDP program (the ports themselves are taken back with
    /// the workers). The saved list stays, for the next start.
    pub fn shutdown(self) {
        drop(self.programs);
        // TAP devices persist: the pods keep their interfaces until the
        // next agent opens them again.
        drop(self.taps);
    }
}

/// The attachments saved in `file` (none if there is no file), or why they
/// could not be read.
pub fn load_saved(file: &Path) -> Result<Vec<Attachment>, String> {
    match std::fs::read(file) {
        Ok(bytes) => serde_json::from_slice::<Saved>(&bytes)
            .map(|saved| saved.attachments)
            .map_err(|e| {
                format!(
                    "{}: not a saved port list ({e}); no pod ports restored",
                    file.display()
                )
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(format!("reading {}: {e}", file.display())),
    }
}

/// Saves `attachments` to `file`; a warning if that failed.
pub fn save(file: &Path, attachments: Vec<Attachment>) -> Option<String> {
    write_atomic(file, &Saved { attachments })
        .err()
        .map(|e| format!("saving the pod ports to {}: {e}", file.display()))
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
