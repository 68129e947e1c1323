//! `podswitch agent` on real veths: a node namespace with its uplink on an
//! underlay bridge and two pods wired per DESIGN.md; the agent runs in the
//! node namespace (adaptive polling) and real `ping` goes pod to pod and
//! node to pod through it. On SIGTERM it leaves nothing behind. Needs root.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use testkit::netns::require_root;
use testkit::topology::Topology;

/// The agent process; SIGTERM (then SIGKILL) by PID when dropped.
struct Agent {
    child: Option<Child>,
    socket: PathBuf,
}

impl Agent {
    fn start(node_ns: &str, tables: &std::path::Path, socket: PathBuf) -> Agent {
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                node_ns,
                env!("CARGO_BIN_EXE_podswitch"),
                "agent",
            ])
            .args([
                "--node-name",
                "node1",
                "--uplink",
                "eth0",
                "--node-ip",
                "198.18.0.1",
            ])
            .args([
                "--pod-cidr",
                "10.244.1.0/24",
                "--cluster-cidr",
                "10.244.0.0/16",
                "--service-cidr",
                "10.96.0.0/12",
            ])
            .args(["--workers", "1", "--poll-mode", "adaptive"])
            .arg("--static")
            .arg(tables)
            .arg("--socket")
            .arg(&socket)
            .stdout(Stdio::null())
            .spawn()
            .expect("start the agent");
        let agent = Agent {
            child: Some(child),
            socket,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !agent.socket.exists() {
            assert!(
                Instant::now() < deadline,
                "the agent did not come up within 20 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        agent
    }

    /// SIGTERM and wait; returns whether it exited cleanly.
    fn stop(&mut self) -> bool {
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

impl Drop for Agent {
    fn drop(&mut self) {
        self.stop();
    }
}

fn mac(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[test]
fn pods_reach_each_other_and_the_node_reaches_pods_through_the_agent() {
    require_root();
    let mut t = Topology::new();
    let node = t.add_node();
    let a = t.add_pod(node, "10.244.1.10".parse().unwrap());
    let b = t.add_pod(node, "10.244.1.11".parse().unwrap());
    let dir = std::env::temp_dir().join(format!("podswitch-agent-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let tables = dir.join("tables.json");
    let pod = |i: usize, name: &str| {
        format!(
            r#"{{"namespace": "demo", "name": "{name}", "ip": "{}", "mac": "{}", "ifname": "{}"}}"#,
            t.pods[i].ip,
            mac(t.pods[i].mac),
            t.pods[i].host_if
        )
    };
    std::fs::write(
        &tables,
        format!(r#"{{"pods": [{}, {}]}}"#, pod(a, "a"), pod(b, "b")),
    )
    .unwrap();
    let mut agent = Agent::start(&t.nodes[node].ns.name, &tables, dir.join("agent.sock"));

    let ping = t.pods[a].ns.exec(
        &["ping", "-c", "3", "-i", "0.2", "-W", "2", "10.244.1.11"],
        Duration::from_secs(10),
    );
    assert!(
        ping.status.success(),
        "pod a -> pod b: {}",
        String::from_utf8_lossy(&ping.stdout)
    );
    let ping = t.nodes[node].ns.exec(
        &["ping", "-c", "2", "-i", "0.2", "-W", "2", "10.244.1.10"],
        Duration::from_secs(10),
    );
    assert!(
        ping.status.success(),
        "node -> pod a through the host port: {}",
        String::from_utf8_lossy(&ping.stdout)
    );

    let stats = control::api::stats(&agent.socket).expect("stats from the running agent");
    assert!(stats.forwarded >= 10, "{stats:?}");
    assert!(
        stats.arp_replies >= 2,
        "pods and node asked for the gateway: {stats:?}"
    );
    assert!(
        stats
            .ports
            .iter()
            .any(|p| p.name == t.pods[a].host_if && p.rx_packets >= 3),
        "{stats:?}"
    );

    assert!(agent.stop(), "the agent exits cleanly on SIGTERM");
    let links = t.nodes[node].ns.ip(&["-d", "link", "show"]);
    assert!(!links.contains("prog/xdp"), "XDP left attached:\n{links}");
    assert!(
        !links.contains("psw-host"),
        "host port left behind:\n{links}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
