//! `podswitch-cni` against a running agent, executed exactly as a container
//! runtime executes it (`testkit::cni`: env + stdin, in the node's
//! namespace) with the standard `host-local` IPAM plugin: pods it adds
//! talk through the switch, CHECK and DEL round trips, DEL is idempotent
//! (also after the pod's namespace is gone), a refused registration leaves
//! nothing behind, GC releases what the runtime no longer lists, and 50
//! concurrent ADDs then DELs on one node leave no duplicate or leaked IP,
//! veth or port. Needs root.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{iperf3_server, serial, Agent};
use serde_json::Value;
use testkit::cni::{allocations, plugin_binary, test_config, Cni, Pod};
use testkit::netns::{require_root, Netns};
use testkit::topology::Topology;

const NETWORK: &str = "podswitch-test";

/// One node running an agent, and the plugin's config for it.
struct Node {
    // The agent before the topology: it stops before its namespace goes.
    agent: Agent,
    topology: Topology,
    cni: Cni,
    config: Value,
    ipam_dir: PathBuf,
    state_dir: PathBuf,
    _dir: tempfile::TempDir,
}

impl Node {
    fn start() -> Node {
        Node::start_with("veth")
    }

    /// A node whose agent gives pods `pod_port` ports.
    fn start_with(pod_port: &str) -> Node {
        let mut topology = Topology::new();
        let node = topology.add_node();
        let dir = tempfile::tempdir().unwrap();
        let manifests = dir.path().join("manifests");
        std::fs::create_dir(&manifests).unwrap();
        let socket = dir.path().join("agent.sock");
        let agent = start_agent(
            &topology.nodes[node].ns,
            &manifests,
            socket.clone(),
            pod_port,
        );
        let (ipam_dir, state_dir) = (dir.path().join("ipam"), dir.path().join("state"));
        let config = test_config("1.1.0", NETWORK, &socket, &state_dir, 1, &ipam_dir);
        let binary = plugin_binary(Some(Path::new(env!("CARGO_BIN_EXE_podswitch"))));
        let cni = Cni::new(&binary, &topology.nodes[node].ns);
        Node {
            agent,
            topology,
            cni,
            config,
            ipam_dir,
            state_dir,
            _dir: dir,
        }
    }

    fn node_ns(&self) -> &Netns {
        &self.topology.nodes[0].ns
    }

    /// The IPs host-local has handed out.
    fn allocated(&self) -> Vec<String> {
        allocations(&self.ipam_dir, NETWORK)
    }

    /// The plugin's attachment records.
    fn records(&self) -> usize {
        std::fs::read_dir(self.state_dir.join(NETWORK)).map_or(0, |d| {
            d.filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
                .count()
        })
    }

    /// The pod veths (host ends) in the node's namespace.
    fn pod_veths(&self) -> Vec<String> {
        self.node_ns()
            .ip(&["-o", "link", "show"])
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|name| name.split('@').next().unwrap_or(name).to_string())
            .filter(|name| name.starts_with("psw") && name != "psw-host" && name != "psw-node")
            .collect()
    }

    /// The attachments the agent serves: (container, ip).
    fn agent_ports(&self) -> Vec<(String, String)> {
        let mut ports: Vec<(String, String)> = api::ports::attachments(&self.agent.socket)
            .unwrap()
            .ports
            .into_iter()
            .map(|p| (p.attachment.container_id, p.attachment.ip.to_string()))
            .collect();
        ports.sort();
        ports
    }
}

/// The pod's address from an ADD result (`10.244.1.2/32` -> `10.244.1.2`).
fn pod_ip(result: &Value) -> String {
    let address = result["ips"][0]["address"].as_str().unwrap_or_default();
    address.split('/').next().unwrap_or_default().to_string()
}

/// Bytes one second of iperf3 TCP from `client` to the server at `ip` in
/// `server` moved (0 when iperf3 reported nothing).
fn iperf3_bytes(client: &Netns, server: &Netns, ip: &str) -> u64 {
    let mut listening = iperf3_server(server, ip, "5201", "15");
    let out = client.exec(
        &["iperf3", "-c", ip, "-t", "1", "-J"],
        Duration::from_secs(10),
    );
    let _ = listening.wait();
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "iperf3 printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    report["end"]["sum_received"]["bytes"].as_u64().unwrap_or(0)
}

fn ping_once(ns: &Netns, dst: &str) -> bool {
    ns.exec(&["ping", "-c", "1", "-W", "2", dst], Duration::from_secs(5))
        .status
        .success()
}

#[test]
fn added_pods_talk_through_the_switch_and_check_and_del_round_trip() {
    require_root();
    let _serial = serial();
    let node = Node::start();
    let (a_ns, b_ns) = (Netns::new("cnia"), Netns::new("cnib"));
    let (a, b) = (Pod::new("ctr-a", &a_ns), Pod::new("ctr-b", &b_ns));

    let ra = node.cni.add(&a, &node.config).expect("ADD a");
    let rb = node.cni.add(&b, &node.config).expect("ADD b");
    // The spec's result: the host end, the pod end in its sandbox, the
    // address on the pod end, the default route through the gateway.
    assert_eq!(ra["cniVersion"], "1.1.0");
    assert_eq!(ra["interfaces"][1]["name"], "eth0");
    assert_eq!(
        ra["interfaces"][1]["sandbox"],
        testkit::cni::netns_path(&a_ns)
    );
    assert_eq!(ra["interfaces"][1]["mtu"], 1450, "uplink 1500 - VXLAN 50");
    assert_eq!(ra["ips"][0]["interface"], 1);
    assert_eq!(ra["ips"][0]["gateway"], "169.254.1.1");
    assert!(ra["ips"][0]["address"].as_str().unwrap().ends_with("/32"));
    assert_eq!(
        ra["routes"],
        serde_json::json!([{"dst": "0.0.0.0/0", "gw": "169.254.1.1"}])
    );
    let (ip_a, ip_b) = (pod_ip(&ra), pod_ip(&rb));
    assert_ne!(ip_a, ip_b);
    let addresses = a_ns.ip(&["-4", "-o", "addr", "show", "dev", "eth0"]);
    assert!(addresses.contains(&format!("{ip_a}/32")), "{addresses}");

    // Reachable when ADD returns: the first ping is answered, and it went
    // through the switch (the agent counted it on both pods' ports).
    assert!(ping_once(&a_ns, &ip_b), "the first ping a -> b after ADD");
    assert!(ping_once(&b_ns, &ip_a), "b -> a");
    let host_a = ra["interfaces"][0]["name"].as_str().unwrap().to_string();
    let host_b = rb["interfaces"][0]["name"].as_str().unwrap().to_string();
    let stats = api::stats(&node.agent.socket).unwrap();
    for host in [&host_a, &host_b] {
        let port = stats
            .ports
            .iter()
            .find(|p| &p.name == host)
            .unwrap_or_else(|| panic!("the agent has no port {host}: {:?}", stats.ports));
        assert!(port.rx_packets > 0 && port.tx_packets > 0, "{port:?}");
    }
    // TCP too (the pod's TX checksum offload is off, as AF_XDP needs).
    let received = iperf3_bytes(&a_ns, &b_ns, &ip_b);
    assert!(
        received > 1_000_000,
        "iperf3 moved {received} bytes; agent: {:?}",
        api::stats(&node.agent.socket)
    );

    // CHECK passes on what ADD made, and names what is broken.
    node.cni.check(&a, &node.config, &ra).expect("CHECK a");
    a_ns.ip(&["route", "del", "default"]);
    let broken = node.cni.check(&a, &node.config, &ra).unwrap_err();
    assert!(broken.msg.contains("default route"), "{broken:?}");

    // DEL, twice; then everything of a is gone and b is untouched.
    node.cni.del(&a, &node.config).expect("DEL a");
    node.cni.del(&a, &node.config).expect("DEL a again");
    assert_eq!(node.allocated(), std::slice::from_ref(&ip_b));
    assert_eq!(node.pod_veths(), std::slice::from_ref(&host_b));
    assert_eq!(node.agent_ports(), [("ctr-b".to_string(), ip_b.clone())]);
    assert_eq!(node.records(), 1);
    assert!(!ping_once(&a_ns, &ip_b), "a is detached");
    assert!(
        ping_once(&b_ns, &node.topology.nodes[0].ip.to_string()),
        "b still reaches its node"
    );

    // DEL after the pod's namespace is gone.
    drop(b_ns);
    node.cni
        .del(&b, &node.config)
        .expect("DEL b without its namespace");
    assert!(node.allocated().is_empty(), "{:?}", node.allocated());
    assert!(node.pod_veths().is_empty(), "{:?}", node.pod_veths());
    assert!(node.agent_ports().is_empty(), "{:?}", node.agent_ports());
    assert_eq!(node.records(), 0);

    // The agent is up and ready: STATUS succeeds.
    node.cni.status(&node.config).expect("STATUS");
}

/// node1's agent in `node`, on the manifests in `manifests`, giving pods
/// `pod_port` ports.
fn start_agent(node: &Netns, manifests: &Path, socket: PathBuf, pod_port: &str) -> Agent {
    let manifests = manifests.display().to_string();
    let source = ["--manifests", &manifests, "--pod-port", pod_port];
    Agent::start_with(1, &node.name, &source, socket)
}

/// Restarts the node's agent with `pod_port` ports (same socket, so the
/// saved attachments are restored).
fn restart(node: &mut Node, pod_port: &str) {
    assert!(node.agent.stop(), "the agent stops cleanly");
    let manifests = node._dir.path().join("manifests");
    let socket = node.agent.socket.clone();
    node.agent = start_agent(node.node_ns(), &manifests, socket, pod_port);
}

#[test]
fn tap_pods_are_wired_take_super_packets_and_survive_an_agent_restart() {
    require_root();
    let _serial = serial();
    let mut node = Node::start_with("tap");
    let (a_ns, b_ns) = (Netns::new("cnita"), Netns::new("cnitb"));
    let (a, b) = (Pod::new("ctr-ta", &a_ns), Pod::new("ctr-tb", &b_ns));
    let ra = node.cni.add(&a, &node.config).expect("ADD a");
    let rb = node.cni.add(&b, &node.config).expect("ADD b");
    // The pod's interface is the TAP device itself: no host end.
    assert_eq!(ra["interfaces"].as_array().map(Vec::len), Some(1), "{ra}");
    assert_eq!(ra["interfaces"][0]["name"], "eth0");
    assert_eq!(ra["ips"][0]["interface"], 0);
    let link = a_ns.ip(&["-d", "link", "show", "dev", "eth0"]);
    assert!(
        link.contains("tun type tap")
            && link.contains("vnet_hdr on")
            && link.contains("multi_queue"),
        "{link}"
    );
    assert!(
        node.pod_veths().is_empty(),
        "nothing left in the node: {:?}",
        node.pod_veths()
    );
    let (ip_a, ip_b) = (pod_ip(&ra), pod_ip(&rb));
    assert!(ping_once(&a_ns, &ip_b), "the first ping a -> b after ADD");

    // Bulk TCP: the pod's stack hands the switch super-packets.
    let received = iperf3_bytes(&a_ns, &b_ns, &ip_b);
    assert!(received > 10_000_000, "iperf3 moved {received} bytes");
    let stats = api::stats(&node.agent.socket).unwrap();
    let pods: Vec<_> = stats.ports.iter().filter(|p| p.id >= 2).collect();
    let (bytes, packets) = pods
        .iter()
        .fold((0, 0), |(b, n), p| (b + p.rx_bytes, n + p.rx_packets));
    assert!(bytes / packets.max(1) > 8_000, "super-packets: {pods:?}");
    node.cni.check(&a, &node.config, &ra).expect("CHECK a");

    // A restart: the devices persist in the pods, and the new agent opens
    // them again.
    restart(&mut node, "tap");
    assert_eq!(node.agent_ports().len(), 2, "both restored");
    assert!(ping_once(&a_ns, &ip_b), "a -> b after the restart");
    assert!(ping_once(&b_ns, &ip_a), "b -> a");

    // DEL takes the device out of the pod.
    node.cni.del(&a, &node.config).expect("DEL a");
    let links = a_ns.ip(&["-o", "link", "show"]);
    assert!(!links.contains("eth0"), "{links}");
    assert_eq!(node.agent_ports(), [("ctr-tb".to_string(), ip_b.clone())]);
    drop(b_ns);
    node.cni
        .del(&b, &node.config)
        .expect("DEL b without its namespace");
    assert!(node.agent_ports().is_empty());
    assert!(node.allocated().is_empty(), "{:?}", node.allocated());
    assert_eq!(node.records(), 0);
}

#[test]
fn a_refused_registration_leaves_nothing_and_gc_releases_unlisted_attachments() {
    require_root();
    let _serial = serial();
    let node = Node::start();

    // The IPAM range is not this node's pod CIDR: the agent refuses the
    // port, and ADD undoes the veth, the address and the record.
    let mut wrong = node.config.clone();
    wrong["ipam"]["ranges"] = serde_json::json!([[{"subnet": "10.244.9.0/24"}]]);
    let ns = Netns::new("cniw");
    let error = node.cni.add(&Pod::new("ctr-w", &ns), &wrong).unwrap_err();
    assert!(
        error.msg.contains("outside this node's pod CIDR"),
        "{error:?}"
    );
    assert!(allocations(&node.ipam_dir, NETWORK).is_empty());
    assert!(node.pod_veths().is_empty(), "{:?}", node.pod_veths());
    assert_eq!(node.records(), 0);
    let eth0 = ns.exec(&["ip", "link", "show", "eth0"], Duration::from_secs(5));
    assert!(!eth0.status.success(), "the pod end is gone too");

    // GC keeps what the runtime lists and releases the rest.
    let namespaces: Vec<Netns> = (0..3).map(|i| Netns::new(&format!("cnig{i}"))).collect();
    let pods: Vec<Pod> = namespaces
        .iter()
        .enumerate()
        .map(|(i, ns)| Pod::new(&format!("ctr-g{i}"), ns))
        .collect();
    let results: Vec<Value> = pods
        .iter()
        .map(|p| node.cni.add(p, &node.config).expect("ADD"))
        .collect();
    assert_eq!(node.agent_ports().len(), 3);
    node.cni
        .gc(&node.config, &[("ctr-g0", "eth0")])
        .expect("GC");
    let kept = pod_ip(&results[0]);
    assert_eq!(node.allocated(), std::slice::from_ref(&kept));
    assert_eq!(node.agent_ports(), [("ctr-g0".to_string(), kept)]);
    assert_eq!(node.pod_veths().len(), 1);
    assert_eq!(node.records(), 1);
    node.cni.del(&pods[0], &node.config).expect("DEL");
    assert!(node.allocated().is_empty());
}

#[test]
fn fifty_concurrent_adds_then_dels_leave_no_duplicate_or_leaked_ip_veth_or_port() {
    require_root();
    let _serial = serial();
    let node = Node::start();
    const PODS: usize = 50;
    let namespaces: Vec<Netns> = (0..PODS).map(|i| Netns::new(&format!("cnic{i}"))).collect();
    let pods: Vec<Pod> = namespaces
        .iter()
        .enumerate()
        .map(|(i, ns)| Pod::new(&format!("ctr-c{i:02}"), ns))
        .collect();

    // Every ADD at once, as a runtime starting 50 pods does.
    let results: Vec<Result<Value, testkit::cni::CniError>> = std::thread::scope(|s| {
        let handles: Vec<_> = pods
            .iter()
            .map(|p| s.spawn(|| node.cni.add(p, &node.config)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut ips: Vec<String> = results
        .iter()
        .map(|r| pod_ip(r.as_ref().expect("every concurrent ADD succeeds")))
        .collect();
    ips.sort();
    let unique: std::collections::BTreeSet<&String> = ips.iter().collect();
    assert_eq!(unique.len(), PODS, "duplicate IPs: {ips:?}");
    assert_eq!(node.allocated(), ips);
    assert_eq!(node.agent_ports().len(), PODS);
    assert_eq!(node.pod_veths().len(), PODS);
    let first = pod_ip(results[0].as_ref().unwrap());
    let last = pod_ip(results[PODS - 1].as_ref().unwrap());
    assert!(ping_once(&namespaces[0], &last), "pod 0 -> pod 49");
    assert!(ping_once(&namespaces[PODS - 1], &first), "pod 49 -> pod 0");

    // Every DEL at once.
    let dels: Vec<Result<(), testkit::cni::CniError>> = std::thread::scope(|s| {
        let handles: Vec<_> = pods
            .iter()
            .map(|p| s.spawn(|| node.cni.del(p, &node.config)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (i, d) in dels.iter().enumerate() {
        assert!(d.is_ok(), "DEL {i}: {d:?}");
    }
    assert!(
        node.allocated().is_empty(),
        "leaked IPs: {:?}",
        node.allocated()
    );
    assert!(
        node.pod_veths().is_empty(),
        "leaked veths: {:?}",
        node.pod_veths()
    );
    assert!(
        node.agent_ports().is_empty(),
        "leaked ports: {:?}",
        node.agent_ports()
    );
    assert_eq!(node.records(), 0);
}
