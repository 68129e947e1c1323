//! A lab pod's life: its namespace, attached by executing `podswitch-cni`
//! in its node's namespace exactly as a runtime does (and detached the
//! same way), its built-in server and its resolver.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::probe::{self, Protocol};
use super::state::{LabNode, LabPod};
use super::{sys, Binaries, LabError, State};

/// The cluster DNS address pods are pointed at.
pub const CLUSTER_DNS: &str = "10.96.0.10";

/// Pod `i` of the state: its namespace, CNI ADD on its node, its server,
/// its resolver. The state records each before it exists.
pub fn attach(state: &mut State, i: usize, bins: &Binaries) -> Result<(), LabError> {
    let pod = state.lab.pods[i].clone();
    let node = node_of(state, &pod)?;
    if pod.ip.is_none() {
        return Err(LabError::step(
            format!("pod {}", pod.key()),
            "the lab gave it no address",
        ));
    }
    sys::add_netns(&pod.netns)?;
    cni(state, &pod, &node, "ADD", bins)?;
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
    let pid = sys::spawn_in(&pod.netns, &bins.podswitch, &serve, &log)?;
    state.lab.pods[i].server_pid = Some(pid);
    state.save()?;
    sys::write_resolv_conf(&pod.netns, &pod.namespace, CLUSTER_DNS)
}

/// Asks the pod's processes to end (SIGTERM): its server finishes the
/// connections it has, then exits; [`detach`] waits for it.
pub fn terminate(pod: &LabPod) {
    sys::terminate_processes_in(&pod.netns);
}

/// Undoes [`attach`]: stops the pod's processes, CNI DEL on its node
/// (which releases its address), removes its namespace and resolver.
pub fn detach(state: &State, pod: &LabPod, bins: &Binaries) -> Result<(), LabError> {
    sys::stop_processes_in(&pod.netns);
    let node = node_of(state, pod)?;
    cni(state, pod, &node, "DEL", bins)?;
    sys::remove_resolv_conf(&pod.netns);
    sys::delete_netns(&pod.netns);
    let _ = std::fs::remove_file(
        state
            .dir
            .join(format!("pod-{}-{}.log", pod.namespace, pod.name)),
    );
    Ok(())
}

fn node_of(state: &State, pod: &LabPod) -> Result<LabNode, LabError> {
    state.node(&pod.node).cloned().ok_or_else(|| {
        LabError::step(
            format!("pod {}", pod.key()),
            format!("node {:?} is not in the lab", pod.node),
        )
    })
}

/// Executes the plugin for `command` on `pod`, in its node's namespace,
/// with host-local asked for the pod's planned address.
fn cni(
    state: &State,
    pod: &LabPod,
    node: &LabNode,
    command: &str,
    bins: &Binaries,
) -> Result<(), LabError> {
    // As a runtime sends a pod's hostPorts (the conflist declares the
    // portMappings capability).
    let mappings: Vec<serde_json::Value> = pod
        .host_ports
        .iter()
        .map(|(proto, host, container)| {
            serde_json::json!({
                "hostPort": host,
                "containerPort": container,
                "protocol": proto.to_ascii_lowercase(),
                "hostIP": "",
            })
        })
        .collect();
    let config = serde_json::json!({
        "cniVersion": "1.1.0",
        "name": format!("lab-{}", state.lab.name),
        "type": "podswitch-cni",
        "agentSocket": node.socket,
        "capabilities": {"portMappings": true},
        "runtimeConfig": {"portMappings": mappings},
        "stateDir": state.dir.join("cni"),
        "ipam": {
            "type": "host-local",
            "ranges": [[{"subnet": node.pod_cidr}]],
            "dataDir": state.dir.join("ipam"),
        },
    });
    let cni_dir = bins
        .cni
        .parent()
        .map(|d| d.display().to_string())
        .unwrap_or_default();
    let ip = pod.ip.map(|ip| ip.to_string()).unwrap_or_default();
    let args = format!(
        "IgnoreUnknown=1;IP={ip};K8S_POD_NAMESPACE={};K8S_POD_NAME={}",
        pod.namespace, pod.name
    );
    let executing = || format!("executing {}", bins.cni.display());
    let mut child = Command::new("ip")
        .args(["netns", "exec", &node.netns])
        .arg(&bins.cni)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", &pod.container_id)
        .env("CNI_NETNS", format!("/run/netns/{}", pod.netns))
        .env("CNI_IFNAME", "eth0")
        .env("CNI_ARGS", &args)
        .env("CNI_PATH", format!("{cni_dir}:/usr/lib/cni"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| LabError::step(executing(), e))?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(config.to_string().as_bytes());
    }
    let out = child
        .wait_with_output()
        .map_err(|e| LabError::step(executing(), e))?;
    if !out.status.success() {
        return Err(LabError::step(
            format!("CNI {command} of pod {} on {}", pod.key(), node.name),
            String::from_utf8_lossy(&out.stdout),
        ));
    }
    Ok(())
}

/// Waits until the pod's TCP servers answer (probed from inside the pod).
pub fn wait_serving(state: &State, pod: &LabPod) -> Result<(), LabError> {
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
