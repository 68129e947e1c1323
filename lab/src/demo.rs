//! `podswitch lab demo`: a scripted tour of a lab running the built-in
//! example, printed as a short report (or JSON): the connectivity matrix
//! before and after a default-deny plus allow policy, requests spread over
//! a service's backends, a NodePort reached from a client on the underlay
//! (outside the cluster), cluster DNS answers, and iperf3 throughput pod to
//! pod across nodes and through a ClusterIP.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde::Serialize;

use super::objects::Mode;
use super::probe::{self, Protocol};
use super::serve::WHOAMI;
use super::{sys, Binaries, LabError, State};

/// The policies the demo applies (and removes again).
const POLICIES: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: default-deny, namespace: demo}
spec:
  podSelector: {}
  policyTypes: [Ingress]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-from-client, namespace: demo}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress:
    - from:
        - podSelector: {matchLabels: {app: client}}
      ports:
        - port: http
"#;

/// What the demo found.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub matrix_before: BTreeMap<String, BTreeMap<String, bool>>,
    pub matrix_after: BTreeMap<String, BTreeMap<String, bool>>,
    /// Backend -> requests answered, of 30 to svc/demo/web:80.
    pub spread: BTreeMap<String, usize>,
    /// `node:port` -> the pod that answered, from 198.18.0.100.
    pub node_port: BTreeMap<String, String>,
    /// Name -> what the pod's resolver said (empty: no answer).
    pub dns: BTreeMap<String, String>,
    /// iperf3 TCP, Gbit/s: client (node1) -> iperf pod (node2), direct
    /// and through the iperf Service's ClusterIP.
    pub iperf3_pod_to_pod_gbps: f64,
    pub iperf3_cluster_ip_gbps: f64,
    /// The kind of port the lab's pods have (`lab up --pod-port`).
    pub pod_port: String,
}

/// Runs the tour on lab `state` (the built-in example).
pub fn run(state: &mut State, bins: &Binaries) -> Result<Report, LabError> {
    for needed in ["demo/client", "demo/iperf", "other/intruder"] {
        if state.pod(needed).is_none() {
            return Err(LabError::Io(format!(
                "lab {} does not run the built-in example (no pod {needed}); `lab demo` tours that one",
                state.lab.name
            )));
        }
    }
    let mut report = Report::default();
    let timeout = Duration::from_millis(400);
    report.matrix_before = probe::matrix(state, 8080, Protocol::Tcp, timeout)?;
    let file = state.dir.join("demo-policies.yaml");
    std::fs::write(&file, POLICIES)
        .map_err(|e| LabError::Io(format!("{}: {e}", file.display())))?;
    super::apply::apply(state, &file, Mode::Apply, bins)?;
    report.matrix_after = probe::matrix(state, 8080, Protocol::Tcp, timeout)?;
    super::apply::apply(state, &file, Mode::Delete, bins)?;

    let web = probe::resolve(state, "svc/demo/web")?;
    for _ in 0..30 {
        let who = in_pod(state, "demo/client", move || {
            whoami(SocketAddr::from((web, 80)), Duration::from_secs(1))
        })?;
        *report
            .spread
            .entry(who.unwrap_or_else(|| "(no answer)".into()))
            .or_default() += 1;
    }

    // A client outside the cluster: a namespace on the underlay bridge.
    let ext = format!("{}-ext", state.lab.name);
    if !state.lab.clients.contains(&ext) {
        state.lab.clients.push(ext.clone());
        state.save()?;
        let ul = state.lab.underlay.clone().unwrap_or_default();
        sys::add_netns(&ext)?;
        sys::plug_into_underlay(&ul, "ulext", &ext, Ipv4Addr::new(198, 18, 0, 100), 1)?;
    }
    for node in &state.lab.nodes {
        let Some(ip) = node.ip else { continue };
        let port = state
            .lab
            .services
            .iter()
            .find(|s| s.namespace == "demo" && s.name == "web")
            .and_then(|s| s.ports.first().and_then(|p| p.node_port))
            .unwrap_or(30080);
        // The first SYN may wait for the node to learn the client's MAC:
        // allow for TCP's retransmission after 1 s.
        let who = sys::in_netns(&ext, move || {
            whoami(SocketAddr::from((ip, port)), Duration::from_secs(3))
        })?;
        report.node_port.insert(
            format!("{ip}:{port}"),
            who.unwrap_or_else(|| "(no answer)".into()),
        );
    }

    let client = state
        .pod("demo/client")
        .map(|p| p.netns.clone())
        .unwrap_or_default();
    for name in [
        "web.demo.svc.cluster.local",
        "web",
        "db.demo",
        "nosuch.demo.svc.cluster.local",
    ] {
        let out = Command::new("timeout")
            .args(["5", "ip", "netns", "exec", &client, "getent", "hosts", name])
            .output()
            .map_err(|e| LabError::step("getent", e))?;
        let answer = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_string();
        report.dns.insert(name.to_string(), answer);
    }

    let iperf = state.pod("demo/iperf").cloned().unwrap_or_default();
    let iperf_ip = iperf.ip.unwrap_or(Ipv4Addr::UNSPECIFIED);
    let svc_ip = probe::resolve(state, "svc/demo/iperf")?;
    report.iperf3_pod_to_pod_gbps = iperf3(&iperf.netns, &client, iperf_ip)?;
    report.iperf3_cluster_ip_gbps = iperf3(&iperf.netns, &client, svc_ip)?;
    report.pod_port = state.lab.pod_port.name().to_string();
    Ok(report)
}

/// Runs `f` on a thread inside pod `key`'s namespace.
fn in_pod<T: Send + 'static>(
    state: &State,
    key: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, LabError> {
    let netns = state
        .pod(key)
        .map(|p| p.netns.clone())
        .ok_or_else(|| LabError::Io(format!("no pod {key}")))?;
    sys::in_netns(&netns, f)
}

/// Asks the server at `to` who it is.
fn whoami(to: SocketAddr, timeout: Duration) -> Option<String> {
    let mut stream = TcpStream::connect_timeout(&to, timeout).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
    stream.write_all(WHOAMI).ok()?;
    let mut buf = [0u8; 256];
    let n = stream.read(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).trim().to_string())
}

/// iperf3 TCP for 2 s from `client_ns` to `target` (served in `server_ns`):
/// Gbit/s received.
fn iperf3(server_ns: &str, client_ns: &str, target: Ipv4Addr) -> Result<f64, LabError> {
    let mut server = Command::new("timeout")
        .args([
            "15", "ip", "netns", "exec", server_ns, "iperf3", "-s", "-1", "-p", "5201",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| LabError::step("starting iperf3 (deploy/setup.sh installs it)", e))?;
    // Start the client once the server listens.
    for _ in 0..100 {
        let out = Command::new("ip")
            .args(["netns", "exec", server_ns, "ss", "-Htln"])
            .output()
            .map_err(|e| LabError::step("ss", e))?;
        if String::from_utf8_lossy(&out.stdout).contains(":5201") {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let target = target.to_string();
    let out = Command::new("timeout")
        .args(["15", "ip", "netns", "exec", client_ns])
        .args(["iperf3", "-c", &target, "-p", "5201", "-t", "2", "-J"])
        .output()
        .map_err(|e| LabError::step("iperf3", e))?;
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let result = json["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap_or(0.0)
        / 1e9;
    let _ = server.kill();
    let _ = server.wait();
    Ok(result)
}

impl Report {
    /// The report as a terminal reads it.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str("1. Connectivity on port 8080 (. connected, X not), no policy:\n\n");
        out.push_str(&probe::render_matrix(&self.matrix_before));
        out.push_str("\n   after a default-deny in demo plus \"web from client on http\":\n\n");
        out.push_str(&probe::render_matrix(&self.matrix_after));
        out.push_str("\n2. 30 requests from demo/client to svc/demo/web:80, by backend:\n");
        for (who, n) in &self.spread {
            out.push_str(&format!("   {who:<32} {n}\n"));
        }
        out.push_str("\n3. NodePort from 198.18.0.100 (outside the cluster):\n");
        for (to, who) in &self.node_port {
            out.push_str(&format!("   {to:<22} answered by {who}\n"));
        }
        out.push_str("\n4. Cluster DNS from demo/client (getent hosts):\n");
        for (name, answer) in &self.dns {
            let shown = if answer.is_empty() {
                "(no such host)"
            } else {
                answer
            };
            out.push_str(&format!("   {name:<34} {shown}\n"));
        }
        out.push_str(&format!(
            "\n5. iperf3 TCP, demo/client (node1) -> demo/iperf (node2), 2 s, {} ports:\n   pod to pod    {:.2} Gbit/s\n   via ClusterIP {:.2} Gbit/s\n",
            self.pod_port, self.iperf3_pod_to_pod_gbps, self.iperf3_cluster_ip_gbps
        ));
        out
    }
}
