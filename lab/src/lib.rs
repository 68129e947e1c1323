//! `podswitch lab`: a whole multi-node cluster network on one machine, in
//! network namespaces the lab creates and owns (addresses as in the
//! README's lab section):
//!
//! - an underlay namespace `<lab>-ul` with bridge `br0`;
//! - node namespaces `<lab>-nodeN`, each with its uplink `eth0` =
//!   198.18.0.N/24 on the bridge and a `podswitch agent` (adaptive polling,
//!   the lab's manifest folder as its source);
//! - one namespace per Pod, `<lab>-<namespace>-<pod>`, attached by executing
//!   `podswitch-cni` in the node's namespace exactly as a runtime does, with
//!   `host-local` IPAM asked for the address the lab planned for the pod
//!   (and pinned in the agents' manifest folder, so the agents' tables and
//!   the pods agree), and a built-in echo server ([`serve`]) on every
//!   declared `containerPort`.
//!
//! The lab keeps the objects it was given ([`objects`]) and plans its
//! manifest folder from them (`plan`): pods pinned to node and address,
//! services to their cluster IPs and node ports, so `apply` changes only
//! what it is given.
//!
//! Everything the lab creates is written to its state file
//! (`/run/podswitch/lab/<name>/state.json`) *before* it is created, so
//! `podswitch lab down` removes it all, also after a crash or a `kill -9`
//! of `lab up`.
//!
//! Verbs: [`up`], [`apply`] (and delete), [`down`], `status`, [`probe`]
//! and `matrix`, `exec`, [`demo`].
//!
//! It depends on the `api` crate (to talk to the agents it starts as
//! processes), `netlink` (namespaces), `sources` (the manifest parser) and
//! `tables`; it must never depend on the agent or the dataplane: it drives
//! them through the `podswitch` binary as a user would.

pub mod apply;
pub mod cli;
pub mod demo;
pub mod objects;
mod place;
mod plan;
mod pods;
pub mod probe;
pub mod serve;
mod state;
mod sys;
pub mod up;

pub use pods::CLUSTER_DNS;
pub use state::{LabPod, LabState, State};

use std::path::PathBuf;

/// The binaries a lab runs: `podswitch` (agents, pod servers) and the CNI
/// plugin it attaches pods with.
#[derive(Clone, Debug)]
pub struct Binaries {
    pub podswitch: PathBuf,
    pub cni: PathBuf,
}

/// Where labs keep their state.
pub const STATE_ROOT: &str = "/run/podswitch/lab";
/// The lab's pod CIDRs: node N gets 10.244.N.0/24.
pub const CLUSTER_CIDR: &str = "10.244.0.0/16";
pub const SERVICE_CIDR: &str = "10.96.0.0/12";

/// Why a lab verb failed; each says what to do.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error("lab {0:?} is already up (state in {1}); `podswitch lab down --name {0}` first")]
    AlreadyUp(String, PathBuf),
    #[error("lab {0:?} is not up (no {1}); start it with `podswitch lab up --name {0}`")]
    NotUp(String, PathBuf),
    #[error("lab name {0:?}: use 1-8 lowercase letters and digits")]
    BadName(String),
    #[error("--nodes {0}: the lab runs 1 to 9 nodes")]
    BadNodes(usize),
    #[error("the manifests cannot be used (nothing was changed):\n{}", .0.join("\n"))]
    Refused(Vec<String>),
    #[error("{0}")]
    Io(String),
    #[error("{what}: {detail}")]
    Step { what: String, detail: String },
}

impl LabError {
    pub(crate) fn step(what: impl Into<String>, detail: impl std::fmt::Display) -> LabError {
        LabError::Step {
            what: what.into(),
            detail: detail.to_string(),
        }
    }
}

/// The state directory of lab `name`.
pub fn dir(name: &str) -> PathBuf {
    PathBuf::from(STATE_ROOT).join(name)
}

/// Checks a lab name (it prefixes namespace and interface names).
pub fn check_name(name: &str) -> Result<(), LabError> {
    let ok = !name.is_empty()
        && name.len() <= 8
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(LabError::BadName(name.to_string()))
    }
}

/// Removes everything lab `name` created, as its state file lists it.
/// Succeeds when there is nothing (left) to remove.
pub fn down(name: &str) -> Result<Vec<String>, LabError> {
    check_name(name)?;
    let dir = dir(name);
    let state = match State::load(&dir) {
        Ok(state) => state,
        Err(_) if !dir.exists() => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut done = Vec::new();
    // Every pod's processes get their grace at once.
    for pod in &state.lab.pods {
        sys::terminate_processes_in(&pod.netns);
    }
    for pod in &state.lab.pods {
        sys::stop_processes_in(&pod.netns);
        sys::remove_resolv_conf(&pod.netns);
        if sys::delete_netns(&pod.netns) {
            done.push(format!("deleted pod namespace {}", pod.netns));
        }
    }
    for node in &state.lab.nodes {
        if sys::stop_processes_in(&node.netns) > 0 {
            done.push(format!("stopped the agent of {}", node.name));
        }
        if sys::delete_netns(&node.netns) {
            done.push(format!("deleted node namespace {}", node.netns));
        }
    }
    for client in &state.lab.clients {
        if sys::delete_netns(client) {
            done.push(format!("deleted client namespace {client}"));
        }
    }
    if let Some(ul) = &state.lab.underlay {
        if sys::delete_netns(ul) {
            done.push(format!("deleted underlay namespace {ul}"));
        }
    }
    std::fs::remove_dir_all(&dir)
        .map_err(|e| LabError::Io(format!("removing {}: {e}", dir.display())))?;
    Ok(done)
}
