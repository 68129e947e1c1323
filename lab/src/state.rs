//! The lab's state file: what the lab created (or is about to create), so
//! that `down` can remove it whatever happened to `up`.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::LabError;

/// A node of the lab.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabNode {
    pub name: String,
    pub netns: String,
    pub ip: Option<Ipv4Addr>,
    pub pod_cidr: String,
    /// The agent's PID once started.
    pub agent_pid: Option<u32>,
    /// The agent's local API socket.
    pub socket: PathBuf,
}

/// A pod of the lab.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabPod {
    pub namespace: String,
    pub name: String,
    pub node: String,
    pub netns: String,
    pub ip: Option<Ipv4Addr>,
    /// What the lab gives the CNI plugin as `CNI_CONTAINERID`.
    pub container_id: String,
    /// Declared container ports: (protocol, port).
    pub ports: Vec<(String, u16)>,
    /// Container ports published on the node: (protocol, hostPort,
    /// containerPort), handed to the CNI plugin as a runtime hands them.
    #[serde(default)]
    pub host_ports: Vec<(String, u16, u16)>,
    /// The echo server's PID once started.
    pub server_pid: Option<u32>,
}

impl LabPod {
    /// `namespace/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// A service port: name, protocol, port, node port.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabServicePort {
    pub name: String,
    pub protocol: String,
    pub port: u16,
    pub node_port: Option<u16>,
}

/// A service of the lab, as the manifest source allocated it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabService {
    pub namespace: String,
    pub name: String,
    pub kind: String,
    pub cluster_ip: Option<Ipv4Addr>,
    pub ports: Vec<LabServicePort>,
}

/// Everything the lab holds.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabState {
    pub name: String,
    /// The underlay namespace, once it is being created.
    pub underlay: Option<String>,
    pub nodes: Vec<LabNode>,
    pub pods: Vec<LabPod>,
    pub services: Vec<LabService>,
    /// Other namespaces the lab made (the demo's client on the underlay).
    #[serde(default)]
    pub clients: Vec<String>,
    /// The objects the lab was given, as it keeps them.
    #[serde(default)]
    pub objects: Vec<super::objects::LabObject>,
    /// The kind of port the agents give pods.
    #[serde(default)]
    pub pod_port: api::ports::PodPortKind,
    /// Set when `up` finished.
    pub ready: bool,
}

/// The state file and its contents.
pub struct State {
    pub dir: PathBuf,
    pub lab: LabState,
}

impl State {
    /// The state file of the lab in `dir`.
    pub fn file(dir: &Path) -> PathBuf {
        dir.join("state.json")
    }

    /// Reads the state of the lab in `dir`.
    pub fn load(dir: &Path) -> Result<State, LabError> {
        let file = State::file(dir);
        let bytes = std::fs::read(&file)
            .map_err(|e| LabError::Io(format!("reading {}: {e}", file.display())))?;
        let lab = serde_json::from_slice(&bytes)
            .map_err(|e| LabError::Io(format!("{} is not a lab state: {e}", file.display())))?;
        Ok(State {
            dir: dir.to_path_buf(),
            lab,
        })
    }

    /// Writes the state (to a temporary name, then renamed): called before
    /// each thing the lab creates.
    pub fn save(&self) -> Result<(), LabError> {
        let file = State::file(&self.dir);
        let tmp = self.dir.join(".state.json.tmp");
        let body = serde_json::to_vec_pretty(&self.lab)
            .map_err(|e| LabError::Io(format!("encoding the lab state: {e}")))?;
        std::fs::write(&tmp, body)
            .and_then(|()| std::fs::rename(&tmp, &file))
            .map_err(|e| LabError::Io(format!("writing {}: {e}", file.display())))
    }

    /// The pod `namespace/name`.
    pub fn pod(&self, key: &str) -> Option<&LabPod> {
        self.lab.pods.iter().find(|p| p.key() == key)
    }

    /// The node named `name`.
    pub fn node(&self, name: &str) -> Option<&LabNode> {
        self.lab.nodes.iter().find(|n| n.name == name)
    }
}
