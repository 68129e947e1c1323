//! `podswitch-bench`: 64-byte UDP through the kernel and through podswitch,
//! in the same namespace topology and the same run (ratios are quoted
//! from one run: the VM drifts by tens of percent between runs). The generator (BPF_PROG_RUN live frames) runs in the
//! sending pod pinned to the last core; the switch (podswitch's one busy
//! worker, or the minimal forwarder) is pinned to core 0; both run under
//! SCHED_FIFO 50 unless `--no-rt`.
//!
//! Bare forwarding, pod a to pod b on one node, counted by an XDP sink in
//! pod b: the kernel's routing; a minimal AF_XDP forwarder (the limit of
//! this path on veth); podswitch with no services and no policy.
//!
//! The full path on node1: pod a sends to a ClusterIP whose backend is on
//! node2 (DNAT + conntrack + a 100-rule policy + VXLAN encap), by the kernel
//! (nftables verdict-map DNAT in the style of kube-proxy's nftables mode,
//! conntrack, a `vxlan` device, a 100-rule filter) and by podswitch; frames
//! are counted as they leave node1 (`--routing-only` skips these).
//!
//! Each scenario runs `--runs` times; min/median/max Mpps at the sink and
//! the machine's busy CPU-seconds per million frames are printed, and
//! written as JSON with `--json FILE`. `--profile FILE` records the podswitch
//! full-path scenario with `perf record -a -g`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use agent::config::AgentArgs;
use perf::gen::{Generator, Sink, FRAME};
use testkit::netns::require_root;
use testkit::topology::Topology;

const CALLS: u32 = 4;
const PER_CALL: u32 = 1_000_000;

fn mac(m: [u8; 6]) -> String {
    tables::mac::MacAddr(m).to_string()
}

/// One run of a scenario.
#[derive(Clone, Copy, Debug)]
struct Sample {
    /// Frames per second at the sink, in millions.
    mpps: f64,
    /// Busy CPU time of the whole machine (both cores: generator, switch,
    /// kernel softirqs) per million frames at the sink, in seconds.
    cpu_per_mpkt: f64,
}

/// Busy CPU time of the whole machine so far (all cores, from /proc/stat:
/// everything but idle and iowait), in seconds.
fn cpu_busy_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").expect("read /proc/stat");
    let ticks: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal ...
    let busy: u64 = ticks
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, v)| v)
        .sum();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1);
    busy as f64 / hz as f64
}

/// One measurement: frames sent from pod a to pod b, as seen at b.
fn measure(t: &Topology, dst_mac: [u8; 6], sink: &Sink) -> Sample {
    measure_to(t, dst_mac, (u32::from(t.pods[1].ip), 9), sink)
}

/// One measurement: frames from pod a to `dst`, as seen by `sink`.
fn measure_to(t: &Topology, dst_mac: [u8; 6], dst: (u32, u16), sink: &Sink) -> Sample {
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
    let gen_if = perf::node::ifindex(&t.pods[0].ns, "eth0");
    let before = sink.received();
    let cpu_before = cpu_busy_secs();
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
    let secs = start.elapsed().as_secs_f64();
    let cpu = cpu_busy_secs() - cpu_before;
    let mpkt = got as f64 / 1e6;
    Sample {
        mpps: mpkt / secs,
        cpu_per_mpkt: if mpkt > 0.0 { cpu / mpkt } else { f64::NAN },
    }
}

fn topology() -> (Topology, Sink) {
    let mut t = Topology::new();
    let node = t.add_node();
    t.add_pod(node, "10.244.1.10".parse().unwrap());
    t.add_pod(node, "10.244.1.11".parse().unwrap());
    let sink_if = perf::node::ifindex(&t.pods[1].ns, "eth0");
    let sink = t.pods[1]
        .ns
        .enter(move || Sink::attach(sink_if).expect("sink"));
    (t, sink)
}

/// The limit of this path on veth: a minimal AF_XDP forwarder, one busy
/// thread pinned to core 0 (as podswitch's worker), one UMEM, a socket on
/// each pod's host veth, frames from pod a rewritten to pod b's MACs and
/// sent, nothing else (xdpsock's l2fwd, with our own AF_XDP binding and XDP
/// program so both sides pay the same per-frame costs).
fn afxdp_minimal(runs: usize) -> Vec<Sample> {
    use afxdp::xdp::{XdpKind, XdpProgram};
    use afxdp::xsk::{ifindex as xsk_ifindex, Umem, XskConfig, XskPort};
    use dataplane::frame::{Desc, FramePool, BATCH};
    use dataplane::port::Port;

    let (t, sink) = topology();
    let (host_a, host_b) = (t.pods[0].host_if.clone(), t.pods[1].host_if.clone());
    let node_b_mac = t.nodes[0].ns.mac(&host_b);
    let mut l2 = [0u8; 12];
    l2[..6].copy_from_slice(&t.pods[1].mac);
    l2[6..].copy_from_slice(&node_b_mac);
    let stop = Arc::new(AtomicBool::new(false));
    let ready = Arc::new(AtomicBool::new(false));
    let forwarder = {
        let (stop, ready) = (stop.clone(), ready.clone());
        let ns_name = t.nodes[0].ns.name.clone();
        std::thread::spawn(move || {
            perf::node::enter(&ns_name);
            if let Some(core) = core_affinity::get_core_ids().and_then(|c| c.first().copied()) {
                core_affinity::set_for_current(core);
            }
            let mut pool = FramePool::new(4096);
            // SAFETY: both ports below are dropped before `pool` (declared
            // after it, closed and dropped at the end of this closure) and
            // only ever see this pool.
            let mut umem = unsafe { Umem::new(&mut pool) }.expect("register UMEM");
            let (ia, ib) = (
                xsk_ifindex(&host_a).expect("host_a"),
                xsk_ifindex(&host_b).expect("host_b"),
            );
            let mut xa = XdpProgram::attach(ia, XdpKind::Port).expect("XDP on host_a");
            let mut xb = XdpProgram::attach(ib, XdpKind::Port).expect("XDP on host_b");
            let cfg = XskConfig::default();
            let mut a = XskPort::bind(&mut umem, &host_a, ia, 0, &cfg).expect("bind host_a");
            let mut b = XskPort::bind(&mut umem, &host_b, ib, 0, &cfg).expect("bind host_b");
            xa.set_socket(0, a.raw_fd()).expect("XSKMAP host_a");
            xb.set_socket(0, b.raw_fd()).expect("XSKMAP host_b");
            a.service(&mut pool);
            b.service(&mut pool);
            ready.store(true, Ordering::Release);
            let mut descs = [Desc::default(); BATCH];
            while !stop.load(Ordering::Relaxed) {
                let n = a.recv(&mut pool, &mut descs);
                for d in &descs[..n] {
                    if let Some(f) = pool.data_mut(*d) {
                        if f.len() >= 12 {
                            f[..12].copy_from_slice(&l2);
                        }
                    }
                }
                let sent = b.send(&mut pool, &descs[..n]);
                for d in &descs[sent..n] {
                    pool.free(d.addr);
                }
                a.service(&mut pool);
                b.service(&mut pool);
            }
            let _ = xa.clear_socket(0);
            let _ = xb.clear_socket(0);
            a.close(&mut pool);
            b.close(&mut pool);
            drop((a, b, xa, xb, umem));
        })
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ready.load(Ordering::Acquire) {
        assert!(
            Instant::now() < deadline && !forwarder.is_finished(),
            "the minimal forwarder did not come up"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let host_a_mac = t.nodes[0].ns.mac(&t.pods[0].host_if);
    let results = (0..runs).map(|_| measure(&t, host_a_mac, &sink)).collect();
    stop.store(true, Ordering::Release);
    forwarder.join().expect("the minimal forwarder panicked");
    results
}

fn kernel(runs: usize) -> Vec<Sample> {
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

fn podswitch(runs: usize) -> Vec<Sample> {
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
            .map(|_| measure(&t, agent::run::GATEWAY_MAC, &sink))
            .collect()
    })
}

/// Two nodes; pod a on node1 sends to a ClusterIP whose backend is pod b on
/// node2. node1 does the work being compared: DNAT + conntrack + a 100-rule
/// policy + VXLAN encap, by the kernel (nftables) or by podswitch; the sink
/// counts the encapsulated frames as they leave node1's uplink.
fn full_topology() -> (Topology, Sink) {
    let mut t = Topology::new();
    let n1 = t.add_node();
    let n2 = t.add_node();
    t.add_pod(n1, "10.244.1.10".parse().unwrap());
    t.add_pod(n2, "10.244.2.10".parse().unwrap());
    // Count what node1 emits on the underlay where it leaves node1: at the
    // underlay end of its uplink veth (`ul1`), before the bridge. The sink
    // drops what it counts (ARP passes, so node1 still resolves node2), so
    // the bridge, node2's decapsulation and pod b stay out of the figure,
    // as the bare scenarios count at the first hop after the switch.
    let sink_if = perf::node::ifindex(&t.underlay, "ul1");
    let sink = t
        .underlay
        .enter(move || Sink::attach(sink_if).expect("sink"));
    (t, sink)
}

const VIP: (u32, u16) = (0x0a60_0014, 80); // 10.96.0.20:80

fn kernel_full(runs: usize) -> Vec<Sample> {
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
    perf::node::load_nft(node, &rules);
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

fn podswitch_full(runs: usize) -> Vec<Sample> {
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
            .map(|_| measure_to(&t, agent::run::GATEWAY_MAC, VIP, &sink))
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
        static_tables: Some(tables),
        socket: Some(dir.join("agent.sock")),
        ..perf::node::node1_args(1, "busy")
    };
    let config = args.resolve().expect("config");
    let stop = Arc::new(AtomicBool::new(false));
    let agent = {
        let (stop, config) = (stop.clone(), config.clone());
        let ns_name = t.nodes[0].ns.name.clone();
        std::thread::spawn(move || {
            perf::node::enter(&ns_name);
            agent::run::run(&config, &stop).expect("agent")
        })
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while api::stats(&config.socket).is_err() {
        assert!(Instant::now() < deadline, "the agent did not come up");
        std::thread::sleep(Duration::from_millis(50));
    }
    let result = f();
    if std::env::var_os("BENCH_STATS").is_some() {
        if let Ok(s) = api::stats(&config.socket) {
            eprintln!("{}", s.render(agent::server::drop_help));
        }
    }
    stop.store(true, Ordering::Release);
    let _ = agent.join();
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// min / median / max of one figure over the runs.
#[derive(Clone, Copy, Debug, Default)]
struct Spread {
    min: f64,
    median: f64,
    max: f64,
}

impl Spread {
    fn of(samples: &[Sample], figure: impl Fn(&Sample) -> f64) -> Spread {
        let mut v: Vec<f64> = samples.iter().map(figure).collect();
        v.sort_by(f64::total_cmp);
        Spread {
            min: v[0],
            median: v[v.len() / 2],
            max: v[v.len() - 1],
        }
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({"min": self.min, "median": self.median, "max": self.max})
    }
}

/// One scenario's results.
struct Scenario {
    key: &'static str,
    label: &'static str,
    mpps: Spread,
    cpu: Spread,
}

impl Scenario {
    fn run(key: &'static str, label: &'static str, f: impl FnOnce() -> Vec<Sample>) -> Scenario {
        let samples = f();
        Scenario {
            key,
            label,
            mpps: Spread::of(&samples, |s| s.mpps),
            cpu: Spread::of(&samples, |s| s.cpu_per_mpkt),
        }
    }
}

/// Runs this process (and the threads it starts: generator, switch,
/// forwarder) under SCHED_FIFO 50, for stable figures.
fn realtime() -> bool {
    let param = libc::sched_param { sched_priority: 50 };
    // SAFETY: sched_setscheduler on this process with a valid parameter.
    unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) == 0 }
}

/// `perf record` of the whole machine while `f` runs, written to `out`.
fn profiled<T>(out: Option<&str>, f: impl FnOnce() -> T) -> T {
    let Some(out) = out else { return f() };
    let mut perf = std::process::Command::new("perf")
        .args(["record", "-a", "-g", "-q", "-o", out])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("perf (apt-get install linux-perf) for --profile");
    let result = f();
    // perf writes its file on SIGINT.
    let pid = i32::try_from(perf.id()).expect("pid");
    // SAFETY: kill(2) on the child we spawned.
    unsafe { libc::kill(pid, libc::SIGINT) };
    let _ = perf.wait();
    eprintln!("profile written to {out} (perf report -i {out} --no-children)");
    result
}

fn arg(name: &str) -> Option<String> {
    std::env::args().skip_while(|a| a != name).nth(1)
}

fn main() {
    require_root();
    let runs: usize = arg("--runs").and_then(|r| r.parse().ok()).unwrap_or(3);
    let json_path = arg("--json");
    // `--profile FILE`: perf record the podswitch full-path scenario.
    let profile = arg("--profile");
    // `--routing-only` skips the two-node full-path scenarios.
    let full = !std::env::args().any(|a| a == "--routing-only");
    let rt = !std::env::args().any(|a| a == "--no-rt") && realtime();
    let mut scenarios = vec![
        Scenario::run("kernel_routing", "kernel routing", || kernel(runs)),
        Scenario::run("afxdp_minimal", "minimal AF_XDP forwarder", || {
            afxdp_minimal(runs)
        }),
        Scenario::run("podswitch_bare", "podswitch, bare", || podswitch(runs)),
    ];
    if full {
        scenarios.push(Scenario::run("kernel_full", "full path, kernel", || {
            kernel_full(runs)
        }));
        scenarios.push(Scenario::run(
            "podswitch_full",
            "full path, podswitch",
            || profiled(profile.as_deref(), || podswitch_full(runs)),
        ));
    }
    println!(
        "64-byte UDP, {runs} runs of {} frames each; {}",
        u64::from(CALLS) * u64::from(PER_CALL),
        if rt {
            "generator and switch under SCHED_FIFO 50"
        } else {
            "normal scheduling (no SCHED_FIFO)"
        }
    );
    println!(
        "{:<26} {:>7} {:>7} {:>7}   {:>12}",
        "scenario", "Mpps", "min", "max", "CPU-s / Mpkt"
    );
    for s in &scenarios {
        println!(
            "{:<26} {:>7.3} {:>7.3} {:>7.3}   {:>12.3}",
            s.label, s.mpps.median, s.mpps.min, s.mpps.max, s.cpu.median
        );
    }
    let median = |key: &str| {
        scenarios
            .iter()
            .find(|s| s.key == key)
            .map_or(f64::NAN, |s| s.mpps.median)
    };
    let mut ratios = vec![
        (
            "podswitch_bare_over_afxdp_minimal",
            "bare podswitch / minimal AF_XDP forwarder",
            median("podswitch_bare") / median("afxdp_minimal"),
        ),
        (
            "podswitch_bare_over_kernel_routing",
            "bare podswitch / kernel routing",
            median("podswitch_bare") / median("kernel_routing"),
        ),
    ];
    if full {
        ratios.push((
            "podswitch_full_over_bare",
            "full path / bare podswitch",
            median("podswitch_full") / median("podswitch_bare"),
        ));
        ratios.push((
            "podswitch_full_over_kernel_full",
            "full path: podswitch / kernel",
            median("podswitch_full") / median("kernel_full"),
        ));
    }
    for (_, label, r) in &ratios {
        println!("{label:<44} {r:.2}");
    }
    println!("(CPU-s / Mpkt: busy time of both cores, generator included, per million frames at the sink)");
    if let Some(path) = json_path {
        let mut json = serde_json::json!({
            "frame_bytes": FRAME,
            "frames_per_run": u64::from(CALLS) * u64::from(PER_CALL),
            "runs": runs,
            "sched_fifo": rt,
        });
        for s in &scenarios {
            json[s.key] =
                serde_json::json!({"mpps": s.mpps.json(), "cpu_s_per_mpkt": s.cpu.json()});
        }
        for (key, _, r) in &ratios {
            json[*key] = serde_json::json!(r);
        }
        std::fs::write(
            &path,
            serde_json::to_string_pretty(&json).unwrap_or_default(),
        )
        .unwrap_or_else(|e| panic!("write {path}: {e}"));
    }
}
