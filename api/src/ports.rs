//! `/ports`: pod interfaces the CNI plugin hands to the agent.
//!
//! | request | answer |
//! |---------|--------|
//! | `GET /ports` | [`PortsView`]: every attached pod interface with its port id |
//! | `POST /ports` with an [`Attachment`] | 200 and the [`AttachedPort`] once the port is served and its pod IP is in the published tables (the pod is reachable when the answer arrives); 400 for a bad attachment (no such interface, bad MAC), 409 when the IP belongs to another attachment or every port id is taken, 503 when the agent cannot attach ports |
//! | `DELETE /ports?container_id=ID&ifname=IF` | 200 and [`Detached`] (`removed: false` when there was nothing to remove: deleting is idempotent) |
//!
//! Attaching again with the same container ID and interface name replaces
//! the earlier attachment. The agent's API thread does not touch the
//! dataplane: it hands each change to the agent's control thread and waits
//! for the answer.

use std::net::Ipv4Addr;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::http::percent_encode;
use super::{call, decode, ApiError};

/// A pod interface to serve: what `podswitch-cni` registers on ADD.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// `CNI_IFNAME`: the interface's name inside the pod.
    pub ifname: String,
    /// The pod's namespace and name (`K8S_POD_NAMESPACE`, `K8S_POD_NAME`;
    /// empty when the runtime did not say).
    #[serde(default)]
    pub namespace: String,
    #[serde(default)]
    pub name: String,
    /// The pod's address.
    pub ip: Ipv4Addr,
    /// The pod side's MAC, `aa:bb:cc:dd:ee:ff`.
    pub mac: String,
    /// The host end of the veth, in the agent's network namespace; for a
    /// TAP port, the name the agent creates the device under there before
    /// the plugin moves it into the pod as `ifname`.
    pub host_ifname: String,
    /// Which kind of port the pod has (the agent's `--pod-port`).
    #[serde(default)]
    pub kind: PodPortKind,
    /// The pod's network namespace (`CNI_NETNS`), for operators.
    #[serde(default)]
    pub netns: String,
    /// Ports the runtime publishes on the node for this pod (the CNI
    /// `runtimeConfig.portMappings`, i.e. the pod's `hostPort`s).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub port_mappings: Vec<PortMapping>,
}

/// How a pod is attached to the switch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PodPortKind {
    /// A veth pair whose host end the switch serves with AF_XDP sockets:
    /// one MTU-sized frame at a time.
    #[default]
    Veth,
    /// A TAP device the agent creates and keeps the queues of, moved into
    /// the pod: 64 KB super-packets with virtio-net offloads.
    Tap,
}

impl PodPortKind {
    /// `veth` or `tap`.
    pub fn name(self) -> &'static str {
        match self {
            PodPortKind::Veth => "veth",
            PodPortKind::Tap => "tap",
        }
    }
}

impl std::fmt::Display for PodPortKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for PodPortKind {
    type Err = String;

    fn from_str(s: &str) -> Result<PodPortKind, String> {
        match s {
            "veth" => Ok(PodPortKind::Veth),
            "tap" => Ok(PodPortKind::Tap),
            _ => Err(format!("pod port kind {s:?}: expected \"tap\" or \"veth\"")),
        }
    }
}

/// One published port: `host_ip:host_port` on the node to the pod's
/// `container_port`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMapping {
    pub host_port: u16,
    pub container_port: u16,
    /// `tcp` or `udp`.
    pub protocol: String,
    /// Empty (or 0.0.0.0): every node address.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub host_ip: String,
}

impl PortMapping {
    /// The mapping in the tables' model, or what is wrong with it.
    pub fn to_model(&self) -> Result<tables::model::HostPort, String> {
        let proto = match self.protocol.to_ascii_lowercase().as_str() {
            "tcp" | "" => tables::model::Proto::Tcp,
            "udp" => tables::model::Proto::Udp,
            other => {
                return Err(format!(
                    "port mapping {}: protocol {other:?} is not tcp or udp",
                    self.host_port
                ))
            }
        };
        if self.host_port == 0 || self.container_port == 0 {
            return Err(format!(
                "port mapping {}->{}: ports must be 1-65535",
                self.host_port, self.container_port
            ));
        }
        let host_ip = match self.host_ip.as_str() {
            "" => None,
            s => Some(s.parse::<Ipv4Addr>().map_err(|_| {
                format!(
                    "port mapping {}: hostIP {s:?} is not an IPv4 address",
                    self.host_port
                )
            })?),
        }
        .filter(|ip| !ip.is_unspecified());
        Ok(tables::model::HostPort {
            host_port: self.host_port,
            container_port: self.container_port,
            proto,
            host_ip,
        })
    }
}

impl Attachment {
    /// Whether `other` is the same interface of the same container.
    pub fn same_key(&self, container_id: &str, ifname: &str) -> bool {
        self.container_id == container_id && self.ifname == ifname
    }
}

/// An attachment the agent serves, with its port id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachedPort {
    #[serde(flatten)]
    pub attachment: Attachment,
    pub port: u16,
}

/// Everything `GET /ports` returns.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortsView {
    pub ports: Vec<AttachedPort>,
}

/// The answer to `DELETE /ports`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Detached {
    pub removed: bool,
}

/// Why the control thread refused a change: HTTP status and message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub message: String,
}

impl Refusal {
    pub fn new(status: u16, message: impl Into<String>) -> Refusal {
        Refusal {
            status,
            message: message.into(),
        }
    }
}

/// `POST /ports`: attaches `attachment`; returns once the pod is reachable.
pub fn attach(socket: &Path, attachment: &Attachment) -> Result<AttachedPort, ApiError> {
    let body = serde_json::to_string(attachment).map_err(|e| ApiError::BadAnswer {
        path: socket.to_path_buf(),
        reason: format!("cannot encode the attachment: {e}"),
    })?;
    decode(
        socket,
        "POST /ports",
        call(socket, "POST", "/ports", &body)?,
    )
}

/// `DELETE /ports`: detaches `container_id`'s `ifname`; false when the agent
/// had no such attachment.
pub fn detach(socket: &Path, container_id: &str, ifname: &str) -> Result<bool, ApiError> {
    let path = format!(
        "/ports?container_id={}&ifname={}",
        percent_encode(container_id),
        percent_encode(ifname)
    );
    let answer: Detached = decode(
        socket,
        &format!("DELETE {path}"),
        call(socket, "DELETE", &path, "")?,
    )?;
    Ok(answer.removed)
}

/// `GET /ports`.
pub fn attachments(socket: &Path) -> Result<PortsView, ApiError> {
    super::get(socket, "/ports")
}

impl PortsView {
    /// `podswitch ports`: one row per attached pod interface.
    pub fn render(&self) -> String {
        let mut t = super::render::Table::new(&[
            "PORT",
            "INTERFACE",
            "POD",
            "IP",
            "MAC",
            "CONTAINER",
            "IFNAME",
        ]);
        for p in &self.ports {
            let a = &p.attachment;
            let pod = if a.name.is_empty() {
                String::new()
            } else {
                format!("{}/{}", a.namespace, a.name)
            };
            let container: String = a.container_id.chars().take(12).collect();
            t.row(vec![
                p.port.to_string(),
                a.host_ifname.clone(),
                pod,
                a.ip.to_string(),
                a.mac.clone(),
                container,
                a.ifname.clone(),
            ]);
        }
        t.render()
    }
}
