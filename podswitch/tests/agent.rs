//! `podswitch agent` on real veths: a node namespace with its uplink on an
//! underlay bridge and two pods wired as the CNI plugin wires pods; the agent runs in the
//! node namespace (adaptive polling) and real `ping` goes pod to pod and
//! node to pod through it. On SIGTERM it leaves nothing behind. Needs root.

mod common;

use std::process::{Child, Command};
use std::time::Duration;

use common::{iperf3_server, serial, Agent};
use testkit::netns::require_root;
use testkit::topology::Topology;

/// One node with pods a (10.244.1.10) and b (10.244.1.11), and the static
/// tables file naming them; returns the topology, node, pods, and the
/// directory holding the tables (and the agent's socket).
fn one_node_two_pods(tag: &str) -> (Topology, usize, usize, usize, std::path::PathBuf) {
    let mut t = Topology::new();
    let node = t.add_node();
    let a = t.add_pod(node, "10.244.1.10".parse().unwrap());
    let b = t.add_pod(node, "10.244.1.11".parse().unwrap());
    let dir = std::env::temp_dir().join(format!("podswitch-agent-{tag}-{}", std::process::id()));
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
    (t, node, a, b, dir)
}

/// Three pings from `ns` to `dst` must all be answered.
fn assert_ping(ns: &testkit::netns::Netns, dst: &str, what: &str) {
    let out = ns.exec(
        &["ping", "-c", "3", "-i", "0.2", "-W", "2", dst],
        Duration::from_secs(10),
    );
    assert!(
        out.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// What a 5-second iperf3 TCP test reported.
#[derive(Debug)]
#[allow(dead_code)] // `report` is read through Debug, in failure messages.
struct TcpRun {
    bits_per_second: f64,
    retransmits: u64,
    /// Full-sized segments sent (bytes / MSS 1398 at MTU 1450).
    segments: u64,
    report: String,
}

/// Runs an iperf3 TCP client in `ns` against `server` (started with
/// `iperf3_server`) through `target:port` for 5 s, then reaps the server.
fn iperf3_tcp(ns: &testkit::netns::Netns, mut server: Child, target: &str, port: &str) -> TcpRun {
    let out = ns.exec(
        &["iperf3", "-c", target, "-p", port, "-t", "5", "-J"],
        Duration::from_secs(20),
    );
    let _ = server.wait();
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "iperf3 to {target}:{port} failed: {report}"
    );
    let json: serde_json::Value = serde_json::from_str(&report)
        .unwrap_or_else(|e| panic!("iperf3 -J output is not JSON ({e}): {report}"));
    let end = &json["end"];
    TcpRun {
        bits_per_second: end["sum_received"]["bits_per_second"]
            .as_f64()
            .unwrap_or(0.0),
        retransmits: end["sum_sent"]["retransmits"]
            .as_u64()
            .unwrap_or(u64::MAX / 200),
        segments: end["sum_sent"]["bytes"].as_u64().unwrap_or(0) / 1398,
        report,
    }
}

fn mac(m: [u8; 6]) -> String {
    tables::mac::MacAddr(m).to_string()
}

#[test]
fn pods_reach_each_other_and_the_node_reaches_pods_through_the_agent() {
    require_root();
    let _serial = serial();
    let (t, node, a, _b, dir) = one_node_two_pods("one");
    let tables = dir.join("tables.json");
    let mut agent = Agent::start(1, &t.nodes[node].ns.name, &tables, dir.join("agent.sock"));

    assert_ping(&t.pods[a].ns, "10.244.1.11", "pod a -> pod b");
    assert_ping(
        &t.nodes[node].ns,
        "10.244.1.10",
        "node -> pod a through the host port",
    );

    let stats = api::stats(&agent.socket).expect("stats from the running agent");
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

    // The inspection routes answer from the running agent's tables.
    assert!(api::ready(&agent.socket).unwrap(), "ready");
    let status = api::status(&agent.socket).unwrap();
    assert_eq!((status.node.as_str(), status.workers), ("node1", 1));
    let routes = api::routes(&agent.socket).unwrap();
    assert!(
        routes
            .local_pods
            .iter()
            .any(|p| p.port.name.as_deref() == Some(t.pods[a].host_if.as_str())),
        "{routes:?}"
    );

    // Frame accounting once traffic has stopped.
    std::thread::sleep(Duration::from_millis(100));
    let stats = api::stats(&agent.socket).unwrap();
    assert!(stats.frames_total > 0);
    assert_eq!(
        stats.frames_free + stats.frames_in_flight,
        stats.frames_total,
        "frames lost: {stats:?}"
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

/// The static tables of node `n` in the two-node test: its own pod, the
/// other node's pod and VTEP, and a ClusterIP + NodePort service backed by
/// the pod on node 2.
fn two_node_tables(t: &Topology, n: usize) -> String {
    let other = 1 - n;
    format!(
        r#"{{
          "pods": [{{"namespace": "demo", "name": "pod{n}", "ip": "{ip}", "mac": "{mac}", "ifname": "{ifname}", "labels": {{"app": "p{n}"}}}}],
          "remotePods": [{{"namespace": "demo", "name": "pod{other}", "ip": "{rip}", "node": "node{on}", "labels": {{"app": "p{other}"}}}}],
          "nodes": [{{"name": "node{on}", "ip": "{nip}", "vtepMac": "{vtep}", "podCIDR": "10.244.{on}.0/24"}}],
          "services": [{{"namespace": "demo", "name": "web", "type": "NodePort", "clusterIPs": ["10.96.0.20"],
                         "ports": [{{"name": "http", "protocol": "TCP", "port": 80, "nodePort": 30080}}],
                         "endpoints": [{{"ip": "10.244.2.10", "node": "node2", "ports": {{"http": 5201}}}}]}},
                       {{"namespace": "demo", "name": "local", "type": "NodePort", "clusterIPs": ["10.96.0.21"],
                         "externalTrafficPolicy": "Local",
                         "ports": [{{"name": "http", "protocol": "TCP", "port": 80, "nodePort": 30081}}],
                         "endpoints": [{{"ip": "10.244.2.10", "node": "node2", "ports": {{"http": 5201}}}}]}}]
        }}"#,
        ip = t.pods[n].ip,
        mac = mac(t.pods[n].mac),
        ifname = t.pods[n].host_if,
        rip = t.pods[other].ip,
        on = other + 1,
        nip = t.nodes[other].ip,
        vtep = mac(tables::cluster::vtep_mac(t.nodes[other].ip)),
    )
}

#[test]
fn pods_across_nodes_over_vxlan_and_through_a_cluster_ip() {
    require_root();
    let _serial = serial();
    let mut t = Topology::new();
    let n1 = t.add_node();
    let n2 = t.add_node();
    t.add_pod(n1, "10.244.1.10".parse().unwrap());
    t.add_pod(n2, "10.244.2.10".parse().unwrap());
    let dir = std::env::temp_dir().join(format!("podswitch-agent2-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut agents = Vec::new();
    for (i, node) in [n1, n2].into_iter().enumerate() {
        let tables = dir.join(format!("node{}.json", i + 1));
        std::fs::write(&tables, two_node_tables(&t, i)).unwrap();
        let n = u8::try_from(i + 1).unwrap();
        agents.push(Agent::start(
            n,
            &t.nodes[node].ns.name,
            &tables,
            dir.join(format!("agent{n}.sock")),
        ));
    }
    assert_ping(&t.pods[0].ns, "10.244.2.10", "pod on node1 -> pod on node2");

    // TCP for 5 s pod to pod across nodes, then through the ClusterIP (DNAT
    // on node1, VXLAN to node2, reverse NAT back): each against a one-shot
    // iperf3 server in the pod on node2.
    for (what, target, port) in [
        ("pod -> pod on the other node", "10.244.2.10", "5201"),
        (
            "pod -> ClusterIP -> pod on the other node",
            "10.96.0.20",
            "80",
        ),
    ] {
        let server = iperf3_server(&t.pods[1].ns, "10.244.2.10", "5201", "25");
        let tcp = iperf3_tcp(&t.pods[0].ns, server, target, port);
        assert!(
            tcp.bits_per_second > 1e6 && tcp.retransmits * 100 <= tcp.segments,
            "{what}: {tcp:?}\nnode1: {:?}\nnode2: {:?}",
            api::stats(&agents[0].socket),
            api::stats(&agents[1].socket),
        );
        eprintln!(
            "iperf3 {what}: {:.0} Mbit/s, {} retransmits in {} segments",
            tcp.bits_per_second / 1e6,
            tcp.retransmits,
            tcp.segments
        );
    }
    let s1 = api::stats(&agents[0].socket).unwrap();
    assert!(s1.encapsulated > 0 && s1.decapsulated > 0, "{s1:?}");

    // UDP too, pod to pod across nodes, bounded in rate and time.
    let server = iperf3_server(&t.pods[1].ns, "10.244.2.10", "5202", "15");
    let udp = t.pods[0].ns.exec(
        &[
            "iperf3",
            "-c",
            "10.244.2.10",
            "-p",
            "5202",
            "-u",
            "-b",
            "50M",
            "-t",
            "2",
            "-J",
        ],
        Duration::from_secs(12),
    );
    let mut server = server;
    let _ = server.wait();
    let report = String::from_utf8_lossy(&udp.stdout);
    assert!(udp.status.success(), "iperf3 UDP failed: {report}");
    let lost: f64 = report
        .split("\"lost_percent\":")
        .last()
        .and_then(|s| s.split([',', '}']).next())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0);
    assert!(lost < 10.0, "UDP at 50 Mbit/s across nodes lost {lost}%");

    // NodePorts from a client on the underlay (a namespace with no agent).
    let client = t.add_node();
    let through = |node_ip: &str, port: &str| {
        let server = iperf3_server(&t.pods[1].ns, "10.244.2.10", "5201", "10");
        let out = t.nodes[client].ns.exec(
            &[
                "iperf3",
                "-c",
                node_ip,
                "-p",
                port,
                "-t",
                "1",
                "--connect-timeout",
                "4000",
            ],
            Duration::from_secs(10),
        );
        let mut server = server;
        let _ = Command::new("kill").arg(server.id().to_string()).status();
        let _ = server.wait();
        out.status.success()
    };
    // externalTrafficPolicy Cluster: node1 has no endpoint, forwards (SNAT) to node2.
    assert!(
        through("198.18.0.1", "30080"),
        "NodePort (Cluster) via node1"
    );
    // externalTrafficPolicy Local: only node2, which has the endpoint, serves it.
    assert!(through("198.18.0.2", "30081"), "NodePort (Local) via node2");
    assert!(
        !through("198.18.0.1", "30081"),
        "NodePort (Local) via node1 must not answer"
    );
    let s1 = api::stats(&agents[0].socket).unwrap();
    assert!(
        s1.drops
            .iter()
            .any(|(r, n)| r == "no_local_endpoints" && *n > 0),
        "{s1:?}"
    );
    for agent in &mut agents {
        assert!(agent.stop());
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_agent_killed_with_sigkill_recovers_on_restart() {
    require_root();
    let _serial = serial();
    let (t, node, a, _b, dir) = one_node_two_pods("kill");
    let tables = dir.join("tables.json");
    let ns = t.nodes[node].ns.name.clone();
    let ping = |t: &Topology| {
        t.pods[a].ns.exec(
            &["ping", "-c", "2", "-i", "0.2", "-W", "2", "10.244.1.11"],
            Duration::from_secs(10),
        )
    };
    let mut first = Agent::start(1, &ns, &tables, dir.join("agent.sock"));
    assert!(ping(&t).status.success(), "before the kill");
    first.kill9();
    // Restart with nothing cleaned up by hand: stale socket file, host
    // port, XDP attachments and AF_XDP queues from the dead process.
    let mut second = Agent::start(1, &ns, &tables, dir.join("agent.sock"));
    assert!(ping(&t).status.success(), "after SIGKILL and restart");
    assert!(second.stop(), "clean exit after the restart");
    let links = t.nodes[node].ns.ip(&["-d", "link", "show"]);
    assert!(
        !links.contains("prog/xdp") && !links.contains("psw-host"),
        "{links}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A node configured the way flannel's VXLAN backend configures it, with the
/// kernel's own `vxlan` device, routes and static FDB/neighbour entries.
fn make_flannel_node(
    t: &Topology,
    node: usize,
    pod: usize,
    peer_ip: &str,
    peer_vtep_mac: &str,
    peer_cidr: &str,
) {
    let ns = &t.nodes[node].ns;
    let me = t.nodes[node].ip;
    let vtep_mac = mac(tables::cluster::vtep_mac(me));
    let peer_gw = peer_cidr.split('/').next().unwrap();
    ns.ip(&[
        "link",
        "add",
        "flannel.1",
        "address",
        &vtep_mac,
        "type",
        "vxlan",
        "id",
        "1",
        "local",
        &me.to_string(),
        "dev",
        "eth0",
        "dstport",
        "4789",
        "nolearning",
    ]);
    ns.ip(&["link", "set", "flannel.1", "mtu", "1450", "up"]);
    ns.ip(&["addr", "add", "10.244.2.0/32", "dev", "flannel.1"]);
    ns.ip(&[
        "neigh",
        "add",
        peer_gw,
        "lladdr",
        peer_vtep_mac,
        "dev",
        "flannel.1",
        "nud",
        "permanent",
    ]);
    run_in(
        ns,
        &[
            "bridge",
            "fdb",
            "replace",
            peer_vtep_mac,
            "dev",
            "flannel.1",
            "dst",
            peer_ip,
            "self",
            "permanent",
        ],
    );
    ns.ip(&[
        "route",
        "add",
        peer_cidr,
        "via",
        peer_gw,
        "dev",
        "flannel.1",
        "onlink",
    ]);
    // The pod: routed by the node (flannel would bridge it on cni0; a routed
    // veth behaves the same here). Its gateway 169.254.1.1 resolves to the
    // node's end of the veth.
    let host_if = &t.pods[pod].host_if;
    ns.ip(&["route", "add", &t.pods[pod].ip.to_string(), "dev", host_if]);
    run_in(ns, &["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    let host_mac = mac(ns.mac(host_if));
    t.pods[pod].ns.ip(&[
        "neigh",
        "replace",
        "169.254.1.1",
        "lladdr",
        &host_mac,
        "dev",
        "eth0",
        "nud",
        "permanent",
    ]);
}

fn run_in(ns: &testkit::netns::Netns, args: &[&str]) {
    let out = ns.exec(args, Duration::from_secs(5));
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn interoperates_with_a_flannel_style_kernel_vxlan_node() {
    require_root();
    let _serial = serial();
    let mut t = Topology::new();
    let n1 = t.add_node();
    let flannel = t.add_node();
    let ours = t.add_pod(n1, "10.244.1.10".parse().unwrap());
    let theirs = t.add_pod(flannel, "10.244.2.10".parse().unwrap());
    // node1's VTEP MAC, as the agent derives it from its node IP.
    make_flannel_node(
        &t,
        flannel,
        theirs,
        "198.18.0.1",
        "02:56:c6:12:00:01",
        "10.244.1.0/24",
    );
    let dir = std::env::temp_dir().join(format!("podswitch-agent-flannel-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let tables = dir.join("node1.json");
    std::fs::write(
        &tables,
        format!(
            r#"{{"pods": [{{"namespace": "demo", "name": "ours", "ip": "10.244.1.10", "mac": "{}", "ifname": "{}"}}],
                "nodes": [{{"name": "node2", "ip": "198.18.0.2", "vtepMac": "02:56:c6:12:00:02", "podCIDR": "10.244.2.0/24"}}]}}"#,
            mac(t.pods[ours].mac),
            t.pods[ours].host_if
        ),
    )
    .unwrap();
    let mut agent = Agent::start(1, &t.nodes[n1].ns.name, &tables, dir.join("agent.sock"));
    assert_ping(
        &t.pods[ours].ns,
        "10.244.2.10",
        "podswitch pod -> flannel pod",
    );
    assert_ping(
        &t.pods[theirs].ns,
        "10.244.1.10",
        "flannel pod -> podswitch pod",
    );
    let stats = api::stats(&agent.socket).unwrap();
    assert!(
        stats.encapsulated >= 3 && stats.decapsulated >= 3,
        "{stats:?}"
    );
    assert!(agent.stop());
    let _ = std::fs::remove_dir_all(&dir);
}
