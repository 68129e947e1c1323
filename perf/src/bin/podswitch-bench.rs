//! `podswitch-bench`: pod-to-pod forwarding of 64-byte UDP on one node,
//! through the kernel's routing and through podswitch, in the same
//! namespace topology and the same run (DESIGN.md: quote ratios measured in
//! one run). The generator (BPF_PROG_RUN live frames) runs in the sending
//! pod pinned to the last core; podswitch runs one busy-polling worker
//! pinned to core 0. Each scenario runs `--runs` times; min/median/max Mpps
//! at the sink are printed and written as JSON.
//!
//! A second pair of scenarios measures the full path on node1: pod a sends
//! to a ClusterIP whose backend is on node2 (DNAT + conntrack + a 100-rule
//! policy + VXLAN encap), by the kernel (nftables verdict-map DNAT in the
//! style of kube-proxy's nftables mode, conntrack, a `vxlan` device, a
//! 100-rule filter) and by podswitch; frames are counted as they arrive at
//! node2's uplink (`--routing-only` skips these). Still to come: the minimal
//! AF_XDP forwarder, CPU-seconds per million packets, profiles.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use control::agent::config::AgentArgs;
use perf::gen::{Generator, Sink, FRAME};
use testkit::netns::{require_root, Netns};
use testkit::topology::Topology;

const CALLS: u32 = 4;
const PER_CALL: u32 = 1_000_000;

fn ifindex(ns: &Netns, dev: &str) -> u32 {
    let text = ns.ip(&["-o", "link", "show", "dev", dev]);
    text.split(':')
        .next()
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

fn mac(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// One measurement: frames sent from pod a to pod b, Mpps seen at b.
fn measure(t: &Topology, dst_mac: [u8; 6], sink: &Sink) -> f64 {
    measure_to(t, dst_mac, (u32::from(t.pods[1].ip), 9), sink)
}

/// One measurement: frames from pod a to `dst`, Mpps seen by `sink`.
fn measure_to(t: &Topology, dst_mac: [u8; 6], dst: (u32, u16), sink: &Sink) -> f64 {
    let mut frame = testkit::packets::udp(
        testkit::packets::L2 {
            src: t.pods[0].mac,
            dst: dst_mac,
        },
        (u32::from(t.pods[0].ip), 1024),
        dst,
        &[0u8; 22],
    );
    frame.resize(FRAME, 0);
    let gen_if = ifindex(&t.pods[0].ns, "eth0");
    let before = sink.received();
    let start = Instant::now();
    t.pods[0].ns.enter(move || {
        if let Some(core) = core_affinity::get_core_ids().and_then(|c| c.last().copied()) {
            core_affinity::set_for_current(core);
        }
        let gen = Generator::new(gen_if, &frame, 64).expect("generator");
        for _ in 0..CALLS {
            gen.send(PER_CALL).expect("send");
        }
    });
    std::thread::sleep(Duration::from_millis(50));
    let got = sink.received() - before;
    got as f64 / start.elapsed().as_secs_f64() / 1e6
}

fn topology() -> (Topology, Sink) {
    let mut t = Topology::new();
    let node = t.add_node();
    t.add_pod(node, "10.244.1.10".parse().unwrap());
    t.add_pod(node, "10.244.1.11".parse().unwrap());
    let sink_if = ifindex(&t.pods[1].ns, "eth0");
    let sink = t.pods[1]
        .ns
        .enter(move || Sink::attach(sink_if).expect("sink"));
    (t, sink)
}

fn kernel(runs: usize) -> Vec<f64> {
    let (t, sink) = topology();
    let node = &t.nodes[0].ns;
    node.exec(
        &["sysctl", "-qw", "net.ipv4.ip_forward=1"],
        Duration::from_secs(5),
    );
    for p in &t.pods {
        node.ip(&["route", "add", &p.ip.to_string(), "dev", &p.host_if]);
        node.ip(&[
            "neigh",
            "replace",
            &p.ip.to_string(),
            "lladdr",
            &mac(p.mac),
            "dev",
            &p.host_if,
            "nud",
            "permanent",
        ]);
        // The receiving veth end needs GRO (or XDP) for XDP_TX'd frames.
        node.exec(
            &["ethtool", "-K", &p.host_if, "gro", "on"],
            Duration::from_secs(5),
        );
    }
    let host_a = node.mac(&t.pods[0].host_if);
    (0..runs).map(|_| measure(&t, host_a, &sink)).collect()
}

fn podswitch(runs: usize) -> Vec<f64> {
    let (t, sink) = topology();
    let pods: Vec<String> = t
        .pods
        .iter()
        .enumerate()
        .map(|(i, p)| format!(r#"{{"namespace": "bench", "name": "p{i}", "ip": "{}", "mac": "{}", "ifname": "{}"}}"#, p.ip, mac(p.mac), p.host_if))
        .collect();
    let tables = format!(r#"{{"pods": [{}]}}"#, pods.join(","));
    with_agent(&t, &tables, || {
        (0..runs)
            .map(|_| measure(&t, control::agent::run::GATEWAY_MAC, &sink))
            .collect()
    })
}

/// Two nodes; pod a on node1 sends to a ClusterIP whose backend is pod b on
/// node2. node1 does the work being compared: DNAT + conntrack + a 100-rule
/// policy + VXLAN encap, by the kernel (nftables) or by podswitch; the sink
/// counts the encapsulated frames arriving at node2's uplink.
fn full_topology() -> (Topology, Sink) {
    let mut t = Topology::new();
    let n1 = t.add_node();
    let n2 = t.add_node();
    t.add_pod(n1, "10.244.1.10".parse().unwrap());
    t.add_pod(n2, "10.244.2.10".parse().unwrap());
    // node2: kernel VXLAN towards node1 (VTEP MAC as podswitch derives it).
    let node2 = &t.nodes[n2].ns;
    node2.ip(&[
        "link",
        "add",
        "flannel.1",
        "address",
        "02:56:c6:12:00:02",
        "type",
        "vxlan",
        "id",
        "1",
        "local",
        "198.18.0.2",
        "dev",
        "eth0",
        "dstport",
        "4789",
        "nolearning",
    ]);
    node2.ip(&["link", "set", "flannel.1", "mtu", "1450", "up"]);
    node2.ip(&["addr", "add", "10.244.2.0/32", "dev", "flannel.1"]);
    node2.exec(
        &["sysctl", "-qw", "net.ipv4.ip_forward=1"],
        Duration::from_secs(5),
    );
    let b = &t.pods[1];
    node2.ip(&["route", "add", &b.ip.to_string(), "dev", &b.host_if]);
    node2.ip(&[
        "neigh",
        "replace",
        &b.ip.to_string(),
        "lladdr",
        &mac(b.mac),
        "dev",
        &b.host_if,
        "nud",
        "permanent",
    ]);
    // Count what node1 emits on the underlay (at node2's uplink): node2's
    // own decapsulation, on the same two cores, stays out of the figure.
    let _ = b;
    let sink_if = ifindex(node2, "eth0");
    let sink = node2.enter(move || Sink::attach(sink_if).expect("sink"));
    (t, sink)
}

const VIP: (u32, u16) = (0x0a60_0014, 80); // 10.96.0.20:80

fn kernel_full(runs: usize) -> Vec<f64> {
    let (t, sink) = full_topology();
    let node = &t.nodes[0].ns;
    let a = &t.pods[0];
    node.exec(
        &["sysctl", "-qw", "net.ipv4.ip_forward=1"],
        Duration::from_secs(5),
    );
    node.ip(&["route", "add", &a.ip.to_string(), "dev", &a.host_if]);
    node.exec(
        &["ethtool", "-K", &a.host_if, "gro", "on"],
        Duration::from_secs(5),
    );
    // flannel-style VXLAN to node2.
    node.ip(&[
        "link",
        "add",
        "flannel.1",
        "address",
        "02:56:c6:12:00:01",
        "type",
        "vxlan",
        "id",
        "1",
        "local",
        "198.18.0.1",
        "dev",
        "eth0",
        "dstport",
        "4789",
        "nolearning",
    ]);
    node.ip(&["link", "set", "flannel.1", "mtu", "1450", "up"]);
    node.ip(&["addr", "add", "10.244.1.0/32", "dev", "flannel.1"]);
    node.ip(&[
        "neigh",
        "add",
        "10.244.2.0",
        "lladdr",
        "02:56:c6:12:00:02",
        "dev",
        "flannel.1",
        "nud",
        "permanent",
    ]);
    let fdb = node.exec(
        &[
            "bridge",
            "fdb",
            "replace",
            "02:56:c6:12:00:02",
            "dev",
            "flannel.1",
            "dst",
            "198.18.0.2",
            "self",
            "permanent",
        ],
        Duration::from_secs(5),
    );
    assert!(
        fdb.status.success(),
        "bridge fdb: {}",
        String::from_utf8_lossy(&fdb.stderr)
    );
    node.ip(&[
        "route",
        "add",
        "10.244.2.0/24",
        "via",
        "10.244.2.0",
        "dev",
        "flannel.1",
        "onlink",
    ]);
    // kube-proxy nftables-mode style DNAT (verdict map into a per-service
    // chain) with conntrack, and a 100-rule filter the flow matches last.
    let mut rules = String::from(
        "table ip bench {\n  map services { type ipv4_addr . inet_proto . inet_service : verdict; elements = { 10.96.0.20 . udp . 80 : goto svc-web } }\n  chain svc-web { meta l4proto udp dnat to 10.244.2.10:9; }\n  chain prerouting { type nat hook prerouting priority dstnat; ip daddr . meta l4proto . th dport vmap @services; }\n  chain forward { type filter hook forward priority filter; policy drop;\n    ct state established,related accept\n",
    );
    for i in 0..99 {
        rules.push_str(&format!(
            "    ip saddr 10.244.1.10 ip daddr 203.0.113.{} udp dport {} accept\n",
            i % 250 + 1,
            1000 + i
        ));
    }
    rules.push_str("    ip saddr 10.244.1.10 ip daddr 10.244.2.10 udp dport 9 accept\n  }\n}\n");
    let path = std::env::temp_dir().join(format!("podswitch-bench-{}.nft", std::process::id()));
    std::fs::write(&path, rules).expect("nft rules");
    let nft = node.exec(
        &["nft", "-f", &path.display().to_string()],
        Duration::from_secs(10),
    );
    let _ = std::fs::remove_file(&path);
    assert!(
        nft.status.success(),
        "nft: {}",
        String::from_utf8_lossy(&nft.stderr)
    );
    let host_a = node.mac(&a.host_if);
    let results = (0..runs)
        .map(|_| measure_to(&t, host_a, VIP, &sink))
        .collect();
    if std::env::var_os("BENCH_DEBUG").is_some() {
        for dev in [a.host_if.as_str(), "flannel.1", "eth0"] {
            eprintln!("{}", node.ip(&["-s", "link", "show", dev]));
        }
        let out = node.exec(&["nstat", "-az"], Duration::from_secs(5));
        let text = String::from_utf8_lossy(&out.stdout);
        for line in text
            .lines()
            .filter(|l| l.split_whitespace().nth(1).is_some_and(|v| v != "0"))
        {
            eprintln!("{line}");
        }
        let ct = node.exec(
            &["sh", "-c", "cat /proc/sys/net/netfilter/nf_conntrack_count"],
            Duration::from_secs(5),
        );
        eprintln!("conntrack entries: {}", String::from_utf8_lossy(&ct.stdout));
    }
    results
}

fn podswitch_full(runs: usize) -> Vec<f64> {
    let (t, sink) = full_topology();
    let a = &t.pods[0];
    let mut rules: Vec<String> = (0..99)
        .map(|i| {
            format!(
                r#"{{"cidr": "203.0.113.{}/32", "ports": [{{"protocol": "UDP", "port": {}}}]}}"#,
                i % 250 + 1,
                1000 + i
            )
        })
        .collect();
    rules.push(r#"{"cidr": "10.244.2.10/32", "ports": [{"protocol": "UDP", "port": 9}]}"#.into());
    let tables = format!(
        r#"{{"pods": [{{"namespace": "bench", "name": "a", "ip": "{}", "mac": "{}", "ifname": "{}", "labels": {{"app": "a"}}}}],
            "remotePods": [{{"namespace": "bench", "name": "b", "ip": "10.244.2.10", "node": "node2"}}],
            "nodes": [{{"name": "node2", "ip": "198.18.0.2", "vtepMac": "02:56:c6:12:00:02", "podCIDR": "10.244.2.0/24"}}],
            "services": [{{"namespace": "bench", "name": "web", "clusterIPs": ["10.96.0.20"],
                           "ports": [{{"name": "p", "protocol": "UDP", "port": 80}}],
                           "endpoints": [{{"ip": "10.244.2.10", "node": "node2", "ports": {{"p": 9}}}}]}}],
            "policies": [{{"namespace": "bench", "name": "egress", "podSelector": {{"app": "a"}}, "egress": [{}]}}]}}"#,
        a.ip,
        mac(a.mac),
        a.host_if,
        rules.join(",")
    );
    with_agent(&t, &tables, || {
        (0..runs)
            .map(|_| measure_to(&t, control::agent::run::GATEWAY_MAC, VIP, &sink))
            .collect()
    })
}

/// Runs the node1 agent (1 busy worker) on `tables` while `f` runs.
fn with_agent<T>(t: &Topology, tables_json: &str, f: impl FnOnce() -> T) -> T {
    let dir = std::env::temp_dir().join(format!("podswitch-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let tables = dir.join("tables.json");
    std::fs::write(&tables, tables_json).expect("tables");
    let args = AgentArgs {
        node_name: Some("node1".into()),
        uplink: Some("eth0".into()),
        node_ip: Some("198.18.0.1".parse().unwrap()),
        pod_cidr: Some("10.244.1.0/24".into()),
        cluster_cidr: Some("10.244.0.0/16".into()),
        service_cidr: Some("10.96.0.0/12".into()),
        workers: Some(1),
        poll_mode: Some("busy".into()),
        static_tables: Some(tables),
        socket: Some(dir.join("agent.sock")),
        ..AgentArgs::default()
    };
    let config = args.resolve().expect("config");
    let stop = Arc::new(AtomicBool::new(false));
    let agent = {
        let (stop, config) = (stop.clone(), config.clone());
        let path = format!("/run/netns/{}", t.nodes[0].ns.name);
        std::thread::spawn(move || {
            let file = std::fs::File::open(&path).expect("node namespace");
            // SAFETY: setns(2) on a valid namespace descriptor, for this thread only.
            let rc =
                unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&file), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns");
            control::agent::run::run(&config, &stop).expect("agent")
        })
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while control::api::stats(&config.socket).is_err() {
        assert!(Instant::now() < deadline, "the agent did not come up");
        std::thread::sleep(Duration::from_millis(50));
    }
    let result = f();
    if std::env::var_os("BENCH_STATS").is_some() {
        if let Ok(s) = control::api::stats(&config.socket) {
            eprintln!("{}", s.render());
        }
    }
    stop.store(true, Ordering::Release);
    let _ = agent.join();
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn summary(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[0], v[v.len() / 2], v[v.len() - 1])
}

fn main() {
    require_root();
    let runs: usize = std::env::args()
        .skip_while(|a| a != "--runs")
        .nth(1)
        .and_then(|r| r.parse().ok())
        .unwrap_or(3);
    let json_path = std::env::args().skip_while(|a| a != "--json").nth(1);
    // `--routing-only` skips the two-node full-path scenarios.
    let full = !std::env::args().any(|a| a == "--routing-only");
    let kernel = summary(kernel(runs));
    let ours = summary(podswitch(runs));
    let (kernel_full, ours_full) = if full {
        (summary(kernel_full(runs)), summary(podswitch_full(runs)))
    } else {
        ((0.0, 0.0, 0.0), (0.0, 0.0, 0.0))
    };
    println!(
        "64-byte UDP, pod to pod on one node, {runs} runs of {} frames",
        u64::from(CALLS) * u64::from(PER_CALL)
    );
    println!(
        "{:<28} {:>8} {:>8} {:>8}",
        "scenario (Mpps at the sink)", "min", "median", "max"
    );
    println!(
        "{:<28} {:>8.3} {:>8.3} {:>8.3}",
        "kernel routing", kernel.0, kernel.1, kernel.2
    );
    println!(
        "{:<28} {:>8.3} {:>8.3} {:>8.3}",
        "podswitch (1 busy worker)", ours.0, ours.1, ours.2
    );
    println!(
        "routing: podswitch / kernel (medians): {:.2}",
        ours.1 / kernel.1
    );
    if full {
        println!(
            "{:<28} {:>8.3} {:>8.3} {:>8.3}",
            "full path, kernel", kernel_full.0, kernel_full.1, kernel_full.2
        );
        println!(
            "{:<28} {:>8.3} {:>8.3} {:>8.3}",
            "full path, podswitch", ours_full.0, ours_full.1, ours_full.2
        );
        println!("full path (ClusterIP DNAT + conntrack + 100-rule policy + VXLAN): podswitch / kernel: {:.2}", ours_full.1 / kernel_full.1);
        println!("(full path: counted as VXLAN frames arriving at node2's uplink)");
    }
    if let Some(path) = json_path {
        let mut json = serde_json::json!({
            "frame_bytes": FRAME,
            "runs": runs,
            "kernel_routing_mpps": {"min": kernel.0, "median": kernel.1, "max": kernel.2},
            "podswitch_mpps": {"min": ours.0, "median": ours.1, "max": ours.2},
        });
        if full {
            json["full_path_kernel_mpps"] = serde_json::json!({"min": kernel_full.0, "median": kernel_full.1, "max": kernel_full.2});
            json["full_path_podswitch_mpps"] =
                serde_json::json!({"min": ours_full.0, "median": ours_full.1, "max": ours_full.2});
        }
        std::fs::write(
            &path,
            serde_json::to_string_pretty(&json).unwrap_or_default(),
        )
        .expect("write the JSON results");
    }
}
