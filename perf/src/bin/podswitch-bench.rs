//! `podswitch-bench`: pod-to-pod forwarding of 64-byte UDP on one node,
//! through the kernel's routing and through podswitch, in the same
//! namespace topology and the same run (DESIGN.md: quote ratios measured in
//! one run). The generator (BPF_PROG_RUN live frames) runs in the sending
//! pod pinned to the last core; podswitch runs one busy-polling worker
//! pinned to core 0. Each scenario runs `--runs` times; min/median/max Mpps
//! at the sink are printed and written as JSON.
//!
//! This is the first scenario of the harness the AF_XDP issue asks for; the
//! ClusterIP + VXLAN + policy path, the minimal AF_XDP forwarder and the
//! nftables/vxlan kernel path are still to come.

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
    let mut frame = testkit::packets::udp(
        testkit::packets::L2 {
            src: t.pods[0].mac,
            dst: dst_mac,
        },
        (u32::from(t.pods[0].ip), 1024),
        (u32::from(t.pods[1].ip), 9),
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
    let dir = std::env::temp_dir().join(format!("podswitch-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let tables = dir.join("tables.json");
    let pods: Vec<String> = t
        .pods
        .iter()
        .enumerate()
        .map(|(i, p)| format!(r#"{{"namespace": "bench", "name": "p{i}", "ip": "{}", "mac": "{}", "ifname": "{}"}}"#, p.ip, mac(p.mac), p.host_if))
        .collect();
    std::fs::write(&tables, format!(r#"{{"pods": [{}]}}"#, pods.join(","))).expect("tables");
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
    let results = (0..runs)
        .map(|_| measure(&t, control::agent::run::GATEWAY_MAC, &sink))
        .collect();
    stop.store(true, Ordering::Release);
    let _ = agent.join();
    let _ = std::fs::remove_dir_all(&dir);
    results
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
    let kernel = summary(kernel(runs));
    let ours = summary(podswitch(runs));
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
    println!("podswitch / kernel (medians): {:.2}", ours.1 / kernel.1);
    if let Some(path) = json_path {
        let json = serde_json::json!({
            "frame_bytes": FRAME,
            "runs": runs,
            "kernel_routing_mpps": {"min": kernel.0, "median": kernel.1, "max": kernel.2},
            "podswitch_mpps": {"min": ours.0, "median": ours.1, "max": ours.2},
        });
        std::fs::write(
            &path,
            serde_json::to_string_pretty(&json).unwrap_or_default(),
        )
        .expect("write the JSON results");
    }
}
