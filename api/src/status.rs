//! What `GET /status` and `GET /readyz` report: [`AgentStatus`], kept
//! current by the agent and its reconciler through
//! the agent's server state.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::unix_ms;

/// Where the agent's objects come from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    /// A static tables file (`--static`).
    #[default]
    Static,
    /// The Kubernetes API.
    Kubernetes,
    /// A folder of manifests.
    Manifests,
}

impl SourceKind {
    /// The name the JSON and the CLI use.
    pub fn name(self) -> &'static str {
        match self {
            SourceKind::Static => "static",
            SourceKind::Kubernetes => "kubernetes",
            SourceKind::Manifests => "manifests",
        }
    }
}

/// The most recent warnings [`AgentStatus`] keeps.
pub const MAX_WARNINGS: usize = 50;

/// Everything `GET /status` returns.
///
/// Written by the agent and its reconciler through [`State::status`]
/// (node, source, synced, objects, last sync, warnings); `ready`,
/// `generation`, `workers` and `ports` are filled in by the server when it
/// answers (from the publisher, the workers' counters and the port list),
/// so nobody has to keep them current.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentStatus {
    pub node: String,
    pub source: SourceKind,
    /// The source is in sync with its origin (and the tables reflect it).
    pub synced: bool,
    /// Synced and the workers are running: what `/readyz` reports.
    pub ready: bool,
    /// Generation of the current table snapshot.
    pub generation: u64,
    /// Objects the source holds, by Kubernetes kind.
    pub objects: BTreeMap<String, usize>,
    /// When the tables were last built from an in-sync source (Unix ms).
    pub last_sync_unix_ms: Option<u64>,
    /// The last [`MAX_WARNINGS`] warnings, oldest first.
    pub warnings: Vec<String>,
    /// Worker threads running.
    pub workers: usize,
    /// Names of the switch's ports, by port id.
    pub ports: Vec<String>,
    /// The MTU pod interfaces get: the uplink's less the VXLAN overhead
    /// (what `podswitch-cni` uses unless its config sets one; 0 when the
    /// agent runs no dataplane).
    #[serde(default)]
    pub pod_mtu: u32,
    /// The kind of port the agent gives pods (`--pod-port`): what the CNI
    /// plugin wires.
    #[serde(default)]
    pub pod_port: crate::ports::PodPortKind,
    /// The cluster DNS server's query and answer counts (`None` when it
    /// does not run).
    #[serde(default)]
    pub dns: Option<DnsStats>,
    /// What the tables in force were built from, as the source names it
    /// (the manifest source: `manifest::folder_revision` of its folder).
    #[serde(default)]
    pub source_revision: Option<String>,
}

impl AgentStatus {
    /// Records a warning, dropping the oldest beyond [`MAX_WARNINGS`].
    pub fn warn(&mut self, warning: String) {
        self.warnings.push(warning);
        let excess = self.warnings.len().saturating_sub(MAX_WARNINGS);
        self.warnings.drain(..excess);
    }

    /// Records that the tables were just built from an in-sync source.
    pub fn mark_synced(&mut self) {
        self.synced = true;
        self.last_sync_unix_ms = Some(unix_ms());
    }

    /// Why the agent is not ready, or `None` when it is.
    pub fn not_ready_reason(&self) -> Option<&'static str> {
        if !self.synced {
            Some("the source has not synced")
        } else if self.workers == 0 {
            Some("no worker is running")
        } else {
            None
        }
    }
}

/// Query and answer counts, as `GET /status` reports them (`dns`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsStats {
    /// Messages received (UDP datagrams and TCP messages).
    pub queries: u64,
    pub noerror: u64,
    /// NOERROR without an answer: the name exists, not with that type.
    pub nodata: u64,
    pub nxdomain: u64,
    pub refused: u64,
    pub formerr: u64,
    pub servfail: u64,
    pub notimp: u64,
    /// Unreadable messages (not even a header) and responses sent to us:
    /// dropped without a reply.
    pub dropped: u64,
    /// UDP replies cut to fit (TC set).
    pub truncated: u64,
    /// Queries for names outside the cluster domain sent upstream.
    pub forwarded: u64,
    /// Messages (or TCP connections) from addresses that are not clients
    /// (the DNS server's clients): not answered.
    #[serde(default)]
    pub outside: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warnings_keep_the_last_fifty() {
        let mut s = AgentStatus::default();
        for i in 0..60 {
            s.warn(format!("w{i}"));
        }
        assert_eq!(s.warnings.len(), MAX_WARNINGS);
        assert_eq!(s.warnings[0], "w10");
        assert_eq!(s.warnings[49], "w59");
    }
}
