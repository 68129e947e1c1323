//! `podswitch lab up`: checks the manifests (refusing, before anything
//! changes, what the lab cannot honour), then builds the lab step by step,
//! recording each thing in the state file before creating it, and returns
//! when every pod is attached and its servers listen.

use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Pod, Service};

use super::probe::{self, Protocol};
use super::state::{LabNode, LabPod, LabService, LabServicePort, LabState};
use super::{check_name, dir, sys, LabError, State, CLUSTER_CIDR, SERVICE_CIDR};
use crate::source::manifest::load_dir;
use crate::source::Object;

/// The built-in example (`lab up` without `-f`).
pub const EXAMPLE: &str = include_str!("example.yaml");
/// The cluster DNS address pods are pointed at.
pub const CLUSTER_DNS: &str = "10.96.0.10";

/// What `lab up` was asked for.
pub struct UpOptions {
    pub name: String,
    pub nodes: usize,
    /// A manifest file or folder; `None`: the built-in example.
    pub manifests: Option<PathBuf>,
    /// The `podswitch` and `podswitch-cni` binaries.
    pub podswitch: PathBuf,
    pub cni: PathBuf,
}

/// Builds lab `o.name`; on success the lab is up and its state returned.
pub fn up(o: &UpOptions) -> Result<State, LabError> {
    check_name(&o.name)?;
    if !(1..=9).contains(&o.nodes) {
        return Err(LabError::BadNodes(o.nodes));
    }
    let dir = dir(&o.name);
    if State::file(&dir).exists() {
        return Err(LabError::AlreadyUp(o.name.clone(), dir));
    }
    // Check everything in a staging folder first: nothing changes if the
    // manifests are refused.
    let staging = dir.with_file_name(format!(".{}-staging-{}", o.name, std::process::id()));
    let checked = stage(o, &staging);
    let lab = match checked {
        Ok(lab) => lab,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(e);
        }
    };
    std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::rename(&staging, dir.join("manifests")))
        .map_err(|e| LabError::Io(format!("creating {}: {e}", dir.display())))?;
    let mut state = State { dir, lab };
    state.save()?;
    build(&mut state, o)?;
    Ok(state)
}

/// Writes the lab's manifests (its Nodes and the user's objects) to
/// `staging`, loads them as the agents will, and returns the lab's plan,
/// or every reason they cannot be used.
fn stage(o: &UpOptions, staging: &Path) -> Result<LabState, LabError> {
    let io = |e: std::io::Error| {
        LabError::Io(format!("staging manifests in {}: {e}", staging.display()))
    };
    std::fs::create_dir_all(staging).map_err(io)?;
    std::fs::write(staging.join("00-lab-nodes.yaml"), nodes_yaml(o.nodes)).map_err(io)?;
    let mut problems = Vec::new();
    match &o.manifests {
        None => std::fs::write(staging.join("example.yaml"), EXAMPLE).map_err(io)?,
        Some(path) if path.is_dir() => {
            let entries = std::fs::read_dir(path)
                .map_err(|e| LabError::Io(format!("reading {}: {e}", path.display())))?;
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let lower = name.to_ascii_lowercase();
                if lower.ends_with(".yaml") || lower.ends_with(".yml") {
                    std::fs::copy(entry.path(), staging.join(format!("user-{name}")))
                        .map_err(io)?;
                }
            }
        }
        Some(path) => match std::fs::copy(path, staging.join("user.yaml")) {
            Ok(_) => {}
            Err(e) => problems.push(format!("{}: cannot read: {e}", path.display())),
        },
    }
    let cidr: tables::model::Cidr = SERVICE_CIDR.parse().map_err(LabError::Io)?;
    let loaded = load_dir(staging, cidr);
    // The loader names files by their staged path: name the user's.
    let shown = |w: &str| match &o.manifests {
        Some(path) => w
            .replace(
                &format!("{}/user-", staging.display()),
                &format!("{}/", path.display()),
            )
            .replace(
                &format!("{}/user.yaml", staging.display()),
                &path.display().to_string(),
            ),
        None => w.replace(&staging.display().to_string(), "(built-in example)"),
    };
    problems.extend(loaded.warnings.iter().map(|w| shown(w)));
    let mut lab = LabState {
        name: o.name.clone(),
        ..LabState::default()
    };
    for n in 1..=o.nodes {
        lab.nodes.push(LabNode {
            name: format!("node{n}"),
            netns: format!("{}-node{n}", o.name),
            ip: Some(Ipv4Addr::new(198, 18, 0, u8::try_from(n).unwrap_or(1))),
            pod_cidr: format!("10.244.{n}.0/24"),
            agent_pid: None,
            socket: dir(&o.name).join(format!("node{n}.sock")),
        });
    }
    let origins = origins(staging);
    for object in &loaded.objects {
        match object {
            Object::Pod(pod) => match lab_pod(&o.name, pod) {
                Ok(p) => lab.pods.push(p),
                Err(reason) => {
                    let file = origin_of(&origins, pod).map(|f| shown(&f));
                    problems.push(match file {
                        Some(file) => format!("{file}: {reason}"),
                        None => reason,
                    });
                }
            },
            Object::Service(svc) => lab.services.push(lab_service(svc)),
            _ => {}
        }
    }
    if problems.is_empty() {
        Ok(lab)
    } else {
        Err(LabError::Refused(problems))
    }
}

/// (kind, namespace, name, file) of every document in the staged files.
fn origins(staging: &Path) -> Vec<(String, String, String, String)> {
    use serde::Deserialize;
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(staging) else {
        return out;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let Ok(value) = serde_yaml::Value::deserialize(doc) else {
                continue;
            };
            let get = |v: &serde_yaml::Value, k: &str| {
                v.get(k)
                    .and_then(|x| x.as_str())
                    .unwrap_or_default()
                    .to_string()
            };
            let meta = value.get("metadata").cloned().unwrap_or_default();
            let namespace = match get(&meta, "namespace") {
                ns if ns.is_empty() => "default".to_string(),
                ns => ns,
            };
            out.push((
                get(&value, "kind"),
                namespace,
                get(&meta, "name"),
                path.display().to_string(),
            ));
        }
    }
    out
}

/// The file a resolved pod came from: its own document, or its
/// Deployment's.
fn origin_of(origins: &[(String, String, String, String)], pod: &Pod) -> Option<String> {
    let ns = pod
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let name = pod.metadata.name.clone().unwrap_or_default();
    origins
        .iter()
        .find(|(k, n, m, _)| k == "Pod" && *n == ns && *m == name)
        .or_else(|| {
            origins.iter().find(|(k, n, m, _)| {
                k == "Deployment" && *n == ns && name.starts_with(&format!("{m}-"))
            })
        })
        .map(|(_, _, _, file)| file.clone())
}

fn nodes_yaml(nodes: usize) -> String {
    (1..=nodes)
        .map(|n| {
            format!(
                "apiVersion: v1\nkind: Node\nmetadata:\n  name: node{n}\nspec:\n  podCIDR: 10.244.{n}.0/24\nstatus:\n  addresses:\n    - type: InternalIP\n      address: 198.18.0.{n}\n"
            )
        })
        .collect::<Vec<_>>()
        .join("---\n")
}

/// The lab's view of a resolved Pod; an error names what it cannot honour.
fn lab_pod(lab: &str, pod: &Pod) -> Result<LabPod, String> {
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let what = format!("Pod {namespace}/{name}");
    let spec = pod.spec.as_ref().ok_or(format!("{what}: no spec"))?;
    if spec.host_network.unwrap_or(false) {
        return Err(format!(
            "{what}: hostNetwork pods are not supported by the lab"
        ));
    }
    if spec.containers.is_empty() {
        return Err(format!("{what}: no containers"));
    }
    let mut ports = Vec::new();
    for c in &spec.containers {
        for p in c.ports.as_deref().unwrap_or_default() {
            let port = u16::try_from(p.container_port)
                .ok()
                .filter(|p| *p > 0)
                .ok_or(format!(
                    "{what}: container {} port {} is out of range (1-65535)",
                    c.name, p.container_port
                ))?;
            let protocol = p.protocol.clone().unwrap_or_else(|| "TCP".into());
            if protocol != "TCP" && protocol != "UDP" {
                return Err(format!(
                    "{what}: container {} port {port}: protocol {protocol} is not served by the lab (TCP and UDP are)",
                    c.name
                ));
            }
            ports.push((protocol, port));
        }
    }
    let ip = pod
        .status
        .as_ref()
        .and_then(|s| s.pod_ip.as_deref())
        .and_then(|ip| ip.parse().ok());
    let node = spec.node_name.clone().unwrap_or_default();
    let netns = format!("{lab}-{namespace}-{name}");
    Ok(LabPod {
        container_id: format!("lab-{lab}-{namespace}-{name}"),
        namespace,
        name,
        node,
        netns,
        ip,
        ports,
        server_pid: None,
    })
}

fn lab_service(svc: &Service) -> LabService {
    let spec = svc.spec.clone().unwrap_or_default();
    LabService {
        namespace: svc.metadata.namespace.clone().unwrap_or_default(),
        name: svc.metadata.name.clone().unwrap_or_default(),
        kind: spec.type_.clone().unwrap_or_else(|| "ClusterIP".into()),
        cluster_ip: spec.cluster_ip.as_deref().and_then(|ip| ip.parse().ok()),
        ports: spec
            .ports
            .unwrap_or_default()
            .into_iter()
            .map(|p| LabServicePort {
                name: p.name.unwrap_or_default(),
                protocol: p.protocol.unwrap_or_else(|| "TCP".into()),
                port: u16::try_from(p.port).unwrap_or(0),
                node_port: p.node_port.and_then(|n| u16::try_from(n).ok()),
            })
            .collect(),
    }
}

/// Creates the underlay, the nodes with their agents, the pods; recording
/// each in the state before it exists.
fn build(state: &mut State, o: &UpOptions) -> Result<(), LabError> {
    let ul = format!("{}-ul", o.name);
    state.lab.underlay = Some(ul.clone());
    state.save()?;
    sys::add_netns(&ul)?;
    sys::ip_in(&ul, &["link", "add", "br0", "type", "bridge"])?;
    sys::ip_in(&ul, &["link", "set", "br0", "up"])?;
    let manifests = state.dir.join("manifests").display().to_string();
    for i in 0..state.lab.nodes.len() {
        let node = state.lab.nodes[i].clone();
        let n = i + 1;
        let ip = node.ip.unwrap_or(Ipv4Addr::UNSPECIFIED);
        sys::add_netns(&node.netns)?;
        let port = format!("ul{n}");
        sys::ip_in(
            &ul,
            &[
                "link",
                "add",
                &port,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                &node.netns,
            ],
        )?;
        sys::ip_in(&ul, &["link", "set", &port, "master", "br0", "up"])?;
        sys::ip_in(
            &node.netns,
            &["addr", "add", &format!("{ip}/24"), "dev", "eth0"],
        )?;
        sys::ip_in(&node.netns, &["link", "set", "eth0", "up"])?;
        sys::tx_checksum_off(&node.netns, "eth0")?;
        let log = state.dir.join(format!("{}.log", node.name));
        let socket = node.socket.display().to_string();
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
            "1",
            "--poll-mode",
            "adaptive",
            "--manifests",
            &manifests,
            "--socket",
            &socket,
        ];
        let pid = sys::spawn_in(&node.netns, &o.podswitch, &args, &log)?;
        state.lab.nodes[i].agent_pid = Some(pid);
        state.save()?;
    }
    for node in &state.lab.nodes {
        wait_ready(node, &state.dir)?;
    }
    for i in 0..state.lab.pods.len() {
        attach(state, i, o)?;
    }
    for pod in &state.lab.pods {
        wait_serving(state, pod)?;
    }
    state.lab.ready = true;
    state.save()
}

fn wait_ready(node: &LabNode, dir: &Path) -> Result<(), LabError> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !crate::api::ready(&node.socket).unwrap_or(false) {
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

/// Pod `i`: its namespace, CNI ADD on its node, its server, its resolver.
fn attach(state: &mut State, i: usize, o: &UpOptions) -> Result<(), LabError> {
    let pod = state.lab.pods[i].clone();
    let node = state.node(&pod.node).cloned().ok_or_else(|| {
        LabError::step(
            format!("pod {}", pod.key()),
            format!("node {:?} is not in the lab", pod.node),
        )
    })?;
    let ip = pod.ip.ok_or_else(|| {
        LabError::step(
            format!("pod {}", pod.key()),
            "the manifest source gave it no address",
        )
    })?;
    sys::add_netns(&pod.netns)?;
    let config = serde_json::json!({
        "cniVersion": "1.1.0",
        "name": format!("lab-{}", state.lab.name),
        "type": "podswitch-cni",
        "agentSocket": node.socket,
        "stateDir": state.dir.join("cni"),
        "ipam": {
            "type": "host-local",
            "ranges": [[{"subnet": node.pod_cidr}]],
            "dataDir": state.dir.join("ipam"),
        },
    });
    let cni_dir = o
        .cni
        .parent()
        .map(|d| d.display().to_string())
        .unwrap_or_default();
    let args = format!(
        "IgnoreUnknown=1;IP={ip};K8S_POD_NAMESPACE={};K8S_POD_NAME={}",
        pod.namespace, pod.name
    );
    let mut child = Command::new("ip")
        .args(["netns", "exec", &node.netns])
        .arg(&o.cni)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("CNI_COMMAND", "ADD")
        .env("CNI_CONTAINERID", &pod.container_id)
        .env("CNI_NETNS", format!("/run/netns/{}", pod.netns))
        .env("CNI_IFNAME", "eth0")
        .env("CNI_ARGS", &args)
        .env("CNI_PATH", format!("{cni_dir}:/usr/lib/cni"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| LabError::step(format!("executing {}", o.cni.display()), e))?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(config.to_string().as_bytes());
    }
    let out = child
        .wait_with_output()
        .map_err(|e| LabError::step(format!("executing {}", o.cni.display()), e))?;
    if !out.status.success() {
        return Err(LabError::step(
            format!("CNI ADD of pod {} on {}", pod.key(), node.name),
            String::from_utf8_lossy(&out.stdout),
        ));
    }
    let mut serve = vec![
        "lab".to_string(),
        "serve".to_string(),
        "--identity".to_string(),
        pod.key(),
    ];
    for (protocol, port) in &pod.ports {
        serve.push(if protocol == "UDP" { "--udp" } else { "--tcp" }.to_string());
        serve.push(port.to_string());
    }
    let serve: Vec<&str> = serve.iter().map(String::as_str).collect();
    let log = state
        .dir
        .join(format!("pod-{}-{}.log", pod.namespace, pod.name));
    let pid = sys::spawn_in(&pod.netns, &o.podswitch, &serve, &log)?;
    state.lab.pods[i].server_pid = Some(pid);
    state.save()?;
    sys::write_resolv_conf(&pod.netns, &pod.namespace, CLUSTER_DNS)
}

/// Waits until the pod's TCP servers answer (probed from inside the pod).
fn wait_serving(state: &State, pod: &LabPod) -> Result<(), LabError> {
    let Some(ip) = pod.ip else { return Ok(()) };
    for (protocol, port) in pod.ports.iter().filter(|(p, _)| p == "TCP") {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !probe::probe(
            state,
            &pod.key(),
            ip,
            *port,
            Protocol::Tcp,
            Duration::from_millis(200),
        )? {
            if Instant::now() > deadline {
                return Err(LabError::step(
                    format!("pod {}", pod.key()),
                    format!("its server does not answer on {protocol} {port}"),
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    Ok(())
}
