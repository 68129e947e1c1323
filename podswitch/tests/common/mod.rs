//! The agent process for end-to-end tests: started in a node namespace,
//! stopped by PID (SIGTERM, then SIGKILL) when dropped.
#![allow(dead_code)] // each test binary uses a part

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The tests here run one at a time: each starts agents with pinned workers
/// and real traffic, and two cores shared by several at once starve them.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The agent process; SIGTERM (then SIGKILL) by PID when dropped.
pub struct Agent {
    child: Option<Child>,
    pub socket: PathBuf,
}

impl Agent {
    /// Starts the agent of node `n` (1-based: 198.18.0.n, pods
    /// 10.244.n.0/24) on the static tables file `tables`.
    pub fn start(n: u8, node_ns: &str, tables: &std::path::Path, socket: PathBuf) -> Agent {
        let tables = tables.display().to_string();
        Agent::start_with(n, node_ns, &["--static", &tables], socket)
    }

    /// Starts the agent of node `n` with the table source `source` (e.g.
    /// `["--manifests", dir]`).
    pub fn start_with(n: u8, node_ns: &str, source: &[&str], socket: PathBuf) -> Agent {
        let (name, ip, cidr) = (
            format!("node{n}"),
            format!("198.18.0.{n}"),
            format!("10.244.{n}.0/24"),
        );
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                node_ns,
                env!("CARGO_BIN_EXE_podswitch"),
                "agent",
            ])
            .args(["--node-name", &name, "--uplink", "eth0", "--node-ip", &ip])
            .args([
                "--pod-cidr",
                &cidr,
                "--cluster-cidr",
                "10.244.0.0/16",
                "--service-cidr",
                "10.96.0.0/12",
            ])
            .args(["--workers", "1", "--poll-mode", "adaptive"])
            .args(source)
            .arg("--socket")
            .arg(&socket)
            .stdout(Stdio::null())
            .spawn()
            .expect("start the agent");
        let mut agent = Agent {
            child: Some(child),
            socket,
        };
        // Up when its API answers (a stale socket file from a killed agent
        // does not count).
        let deadline = Instant::now() + Duration::from_secs(20);
        while api::stats(&agent.socket).is_err() {
            if let Some(Ok(Some(status))) = agent.child.as_mut().map(|c| c.try_wait()) {
                panic!("the agent exited during start-up: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "the agent did not come up within 20 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        agent
    }

    /// SIGTERM and wait; returns whether it exited cleanly.
    pub fn stop(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return false;
        };
        let pid = i32::try_from(child.id()).unwrap_or(0);
        // SAFETY: kill(2) on the PID of a child this test started.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }
}

impl Agent {
    /// SIGKILL: no cleanup runs.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A one-shot iperf3 server on `addr:port` inside `ns`, killed after `secs`.
pub fn iperf3_server(ns: &testkit::netns::Netns, addr: &str, port: &str, secs: &str) -> Child {
    let mut server = Command::new("timeout")
        .args([
            secs, "ip", "netns", "exec", &ns.name, "iperf3", "-s", "-1", "-B", addr, "-p", port,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("iperf3 server (deploy/setup.sh installs iperf3)");
    // Wait until it listens: a fixed sleep raced the client on a loaded
    // machine. `ss` exits 0 either way; the listener shows as a line.
    let listening = format!("{addr}:{port}");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while std::time::Instant::now() < deadline {
        let out = ns.exec(&["ss", "-Htln"], Duration::from_secs(2));
        if String::from_utf8_lossy(&out.stdout).contains(&listening) {
            return server;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = server.kill();
    let _ = server.wait();
    panic!(
        "iperf3 server in {} did not listen on {listening} within 5 s",
        ns.name
    );
}

/// Runs the `podswitch` binary with `args` and returns its output.
pub fn podswitch(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_podswitch"))
        .args(args)
        .output()
        .expect("run podswitch")
}

/// A command's stdout and stderr, for failure messages.
pub fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Every pod of lab `lab` as `lab status -o json` shows it:
/// `namespace/name` -> (IP, node).
pub fn lab_pods(lab: &str) -> std::collections::BTreeMap<String, (String, String)> {
    let out = podswitch(&["lab", "status", "--name", lab, "-o", "json"]);
    let status: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("lab status: {e}: {}", text(&out)));
    let field = |p: &serde_json::Value, k: &str| p[k].as_str().unwrap_or_default().to_string();
    status["pods"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            (
                format!("{}/{}", field(p, "namespace"), field(p, "name")),
                (field(p, "ip"), field(p, "node")),
            )
        })
        .collect()
}
