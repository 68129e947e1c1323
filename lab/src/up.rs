//! `podswitch lab up`: plans the lab from the manifests (refusing, before
//! anything changes, what the lab cannot honour), then builds it step by
//! step, recording each thing in the state file before creating it, and
//! returns when every pod is attached and its servers listen.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use api::ports::PodPortKind;

use super::apply::write_folder;
use super::objects::{self, Input, Mode};
use super::pods;
use super::state::{LabNode, LabState};
use super::{check_name, dir, sys, Binaries, LabError, State, CLUSTER_CIDR, SERVICE_CIDR};

/// The built-in example (`lab up` without `-f`).
pub const EXAMPLE: &str = include_str!("example.yaml");

/// What `lab up` was asked for.
pub struct UpOptions {
    pub name: String,
    pub nodes: usize,
    /// A manifest file or folder; `None`: the built-in example.
    pub manifests: Option<PathBuf>,
    /// The port the agents give pods (their `--pod-port`).
    pub pod_port: PodPortKind,
    /// Worker threads per agent (their `--workers`).
    pub workers: usize,
    pub bins: Binaries,
}

/// Builds lab `o.name`; on success the lab is up and its state returned.
pub fn up(o: &UpOptions) -> Result<State, LabError> {
    check_name(&o.name)?;
    if !(1..=9).contains(&o.nodes) {
        return Err(LabError::BadNodes(o.nodes));
    }
    if !(1..=8).contains(&o.workers) {
        return Err(LabError::Io(format!(
            "--workers {}: an agent of the lab runs 1 to 8 workers",
            o.workers
        )));
    }
    let dir = dir(&o.name);
    if State::file(&dir).exists() {
        return Err(LabError::AlreadyUp(o.name.clone(), dir));
    }
    let inputs = match &o.manifests {
        None => vec![Input {
            shown: "(built-in example)".into(),
            file_name: "example.yaml".into(),
            text: EXAMPLE.into(),
        }],
        Some(path) => objects::read_inputs(path)?,
    };
    let mut lab = LabState {
        name: o.name.clone(),
        nodes: lab_nodes(&o.name, o.nodes),
        pod_port: o.pod_port,
        ..LabState::default()
    };
    let desired = objects::merge(&[], &objects::parse_all(&inputs)?, Mode::Replace)
        .map_err(LabError::Refused)?;
    // Checked in a scratch folder: nothing changes if the manifests are
    // refused.
    let scratch = dir.with_file_name(format!(".{}-scratch-{}", o.name, std::process::id()));
    let plan = super::plan::plan(&lab, desired, &inputs, &scratch)?;
    let files = plan.files(&Default::default(), &[]);
    lab.pods = plan.pods;
    lab.services = plan.services;
    lab.objects = plan.objects;
    std::fs::create_dir_all(&dir)
        .map_err(|e| LabError::Io(format!("creating {}: {e}", dir.display())))?;
    let mut state = State { dir, lab };
    state.save()?;
    write_folder(&state.dir.join("manifests"), &files)?;
    build(&mut state, o)?;
    Ok(state)
}

/// The lab's nodes: node N has 198.18.0.N on the underlay and pod CIDR
/// 10.244.N.0/24.
fn lab_nodes(lab: &str, count: usize) -> Vec<LabNode> {
    (1..=count)
        .map(|n| LabNode {
            name: format!("node{n}"),
            netns: format!("{lab}-node{n}"),
            ip: Some(Ipv4Addr::new(198, 18, 0, u8::try_from(n).unwrap_or(1))),
            pod_cidr: format!("10.244.{n}.0/24"),
            agent_pid: None,
            socket: dir(lab).join(format!("node{n}.sock")),
        })
        .collect()
}

/// Creates the underlay, the nodes with their agents, the pods; recording
/// each in the state before it exists.
fn build(state: &mut State, o: &UpOptions) -> Result<(), LabError> {
    let ul = format!("{}-ul", o.name);
    state.lab.underlay = Some(ul.clone());
    state.save()?;
    sys::add_netns(&ul)?;
    sys::add_bridge(&ul)?;
    let manifests = state.dir.join("manifests").display().to_string();
    for i in 0..state.lab.nodes.len() {
        let node = state.lab.nodes[i].clone();
        let n = i + 1;
        let ip = node.ip.unwrap_or(Ipv4Addr::UNSPECIFIED);
        sys::add_netns(&node.netns)?;
        // A queue per worker: each worker transmits on its own socket.
        let queues = u32::try_from(o.workers).unwrap_or(1);
        sys::plug_into_underlay(&ul, &format!("ul{n}"), &node.netns, ip, queues)?;
        let log = state.dir.join(format!("{}.log", node.name));
        let socket = node.socket.display().to_string();
        let pod_port = o.pod_port.name();
        let workers = o.workers.to_string();
        let args = [
            "agent",
            "--node-name",
            &node.name,
            "--uplink",
            "eth0",
            "--node-ip",
            &ip.to_string(),
            "--pod-cidr",
            &node.pod_cidr,
            "--cluster-cidr",
            CLUSTER_CIDR,
            "--service-cidr",
            SERVICE_CIDR,
            "--workers",
            &workers,
            "--poll-mode",
            "adaptive",
            "--pod-port",
            pod_port,
            "--manifests",
            &manifests,
            "--socket",
            &socket,
        ];
        let pid = sys::spawn_in(&node.netns, &o.bins.podswitch, &args, &log)?;
        state.lab.nodes[i].agent_pid = Some(pid);
        state.save()?;
    }
    for node in &state.lab.nodes {
        wait_ready(node, &state.dir)?;
    }
    for i in 0..state.lab.pods.len() {
        pods::attach(state, i, &o.bins)?;
    }
    for pod in &state.lab.pods {
        pods::wait_serving(state, pod)?;
    }
    state.lab.ready = true;
    state.save()
}

fn wait_ready(node: &LabNode, dir: &Path) -> Result<(), LabError> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !api::ready(&node.socket).unwrap_or(false) {
        let alive = node
            .agent_pid
            .is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists());
        if !alive || Instant::now() > deadline {
            let log =
                std::fs::read_to_string(dir.join(format!("{}.log", node.name))).unwrap_or_default();
            return Err(LabError::step(
                format!("the agent of {} did not become ready", node.name),
                format!(
                    "its log ({}):\n{log}",
                    dir.join(format!("{}.log", node.name)).display()
                ),
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}
