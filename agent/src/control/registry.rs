//! The pod ports the control core knows of: which attachment holds which
//! port id, IP and MAC, and the checks an attachment must pass before any
//! of it is bound (see [`Registry::check`]). It does no I/O: binding the
//! sockets is the loop's, on the core's [`super::Effect::Bind`].

use std::collections::HashMap;
use std::ops::Range;

use api::ports::{AttachedPort, Attachment, PodPortKind, Refusal};
use tables::host_ports::Published;
use tables::mac::MacAddr;
use tables::model::Cidr;
use tables::route::{LocalPod, PortId};

/// One attached (or being bound) pod interface.
struct Entry {
    port: AttachedPort,
    ip: u32,
    mac: [u8; 6],
    ifindex: u32,
}

/// An attachment that passed [`Registry::check`].
pub struct Checked {
    pub ip: u32,
    pub mac: [u8; 6],
    pub ifindex: u32,
}

/// The pod ports of a running agent.
pub struct Registry {
    /// Port ids available to pods.
    ids: Range<PortId>,
    pod_cidr: Cidr,
    /// Pods attached otherwise (a static tables file): their IPs are taken.
    fixed: Vec<LocalPod>,
    entries: Vec<Entry>,
}

impl Registry {
    /// No pod ports yet; they get ids from `ids`, must have an IP in
    /// `pod_cidr` that none of `fixed` has.
    pub fn new(ids: Range<PortId>, pod_cidr: Cidr, fixed: Vec<LocalPod>) -> Registry {
        Registry {
            ids,
            pod_cidr,
            fixed,
            entries: Vec::new(),
        }
    }

    /// Checks `a`, whose host end has index `ifindex` in the agent's
    /// namespace (`None`: it does not exist there). An attachment with the
    /// same container and interface as an attached one replaces it, so its
    /// IP does not clash with its own.
    pub fn check(&self, a: &Attachment, ifindex: Option<u32>) -> Result<Checked, Refusal> {
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
        let ifindex = ifindex.ok_or_else(|| {
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
        Ok(Checked { ip, mac, ifindex })
    }

    /// The lowest port id no entry holds.
    pub fn free_id(&self) -> Result<PortId, Refusal> {
        self.ids
            .clone()
            .find(|id| self.entries.iter().all(|e| e.port.port != *id))
            .ok_or_else(|| {
                Refusal::new(
                    409,
                    format!("every pod port is taken ({} pods)", self.entries.len()),
                )
            })
    }

    /// Records `a` on port `id`.
    pub fn insert(&mut self, id: PortId, a: Attachment, checked: &Checked) -> AttachedPort {
        let port = AttachedPort {
            attachment: a,
            port: id,
        };
        self.entries.push(Entry {
            port: port.clone(),
            ip: checked.ip,
            mac: checked.mac,
            ifindex: checked.ifindex,
        });
        port
    }

    /// Forgets `container_id`'s `ifname`; its port id, if it was attached.
    pub fn remove_key(&mut self, container_id: &str, ifname: &str) -> Option<PortId> {
        let at = self
            .entries
            .iter()
            .position(|e| e.port.attachment.same_key(container_id, ifname))?;
        Some(self.entries.remove(at).port.port)
    }

    /// Forgets port `id`.
    pub fn remove_id(&mut self, id: PortId) {
        self.entries.retain(|e| e.port.port != id);
    }

    /// Forgets the ports whose host end is gone: not in `present` (name to
    /// index), or there under another index (a new interface with the old
    /// name). Returns each one's id and a line saying so.
    pub fn remove_gone(&mut self, present: &HashMap<String, u32>) -> Vec<(PortId, String)> {
        let (gone, kept): (Vec<Entry>, Vec<Entry>) = std::mem::take(&mut self.entries)
            .into_iter()
            .partition(|e| {
                // A TAP device lives in its pod, not in the agent's namespace.
                e.port.attachment.kind == PodPortKind::Veth
                    && present.get(&e.port.attachment.host_ifname) != Some(&e.ifindex)
            });
        self.entries = kept;
        gone.into_iter()
            .map(|e| {
                let a = &e.port.attachment;
                let line = format!(
                    "pod port {} ({}/{} {}) detached: its interface is gone",
                    a.host_ifname, a.namespace, a.name, a.ip
                );
                (e.port.port, line)
            })
            .collect()
    }

    /// The host-side interface names of the attached pods.
    pub fn interfaces(&self) -> Vec<String> {
        let names = self.entries.iter();
        names
            .filter(|e| e.port.attachment.kind == PodPortKind::Veth)
            .map(|e| e.port.attachment.host_ifname.clone())
            .collect()
    }

    /// The attached pods as the route table wants them, after the fixed
    /// ones.
    pub fn local_pods(&self) -> Vec<LocalPod> {
        let attached = self.entries.iter().map(|e| LocalPod {
            ip: e.ip,
            mac: e.mac,
            port: e.port.port,
        });
        self.fixed.iter().copied().chain(attached).collect()
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

    /// The attachments alone (what is saved for the next start).
    pub fn attachments(&self) -> Vec<Attachment> {
        let entries = self.entries.iter();
        entries.map(|e| e.port.attachment.clone()).collect()
    }
}
