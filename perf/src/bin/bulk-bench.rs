//! `bulk-bench`: bulk TCP with iperf3 through the kernel's path and through
//! podswitch with veth and with TAP pod ports, on the same two-node shape
//! in the same run (ratios are quoted from one run: the VM drifts by tens
//! of percent between runs).
//!
//! The shape: node1 runs pods `client` and `same`, node2 runs `cross`; two
//! ClusterIPs front `same` and `cross` on port 5201. Scenarios, each with 1
//! and 4 streams: pod -> pod and pod -> ClusterIP -> pod, same node and
//! across the nodes.
//!
//! - **kernel**: veth pods routed by each node (`ip_forward`, a route per
//!   pod, offloads left on as a stock CNI leaves them), kube-proxy
//!   nftables-mode DNAT (a verdict map into a per-service chain) with
//!   conntrack on node1, and flannel-style `vxlan` devices between the
//!   nodes;
//! - **kernel, XDP pass**: the same with an XDP program passing everything
//!   on each node's underlay interface, as podswitch's uplink has one: the
//!   most that handing super-packets to the node's own vxlan device could
//!   reach while the uplink keeps its program;
//! - **podswitch veth** / **podswitch tap**: `podswitch lab up --pod-port
//!   veth|tap` with the same pods and services (each agent one adaptive
//!   worker, pods attached by `podswitch-cni`).
//!
//! Per scenario: Gbit/s at the receiver, retransmits, and the busy
//! CPU-seconds of the whole machine (both cores, /proc/stat) per GB moved.
//! `--seconds N` (default 10) per iperf3 run; `--workers N` per agent
//! (default 1); `--only PATH` runs one path (`kernel`, `kernel-xdp`,
//! `veth`, `tap`); `--json FILE` writes the results. Needs root, iperf3, and the `podswitch` and `podswitch-cni`
//! binaries beside this one (`cargo build --release -p podswitch -p cni -p
//! perf`).

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use perf::gen::Sink;
use testkit::netns::{require_root, Netns};
use testkit::topology::Topology;

const PORT: &str = "5201";
const SAME_VIP: &str = "10.96.0.21";
const CROSS_VIP: &str = "10.96.0.22";
const LAB: &str = "bulk";

/// Where a scenario's traffic goes.
#[derive(Clone, Copy)]
enum Target {
    SamePod,
    SameService,
    CrossPod,
    CrossService,
}

impl Target {
    const ALL: [Target; 4] = [
        Target::SamePod,
        Target::SameService,
        Target::CrossPod,
        Target::CrossService,
    ];

    fn name(self) -> &'static str {
        match self {
            Target::SamePod => "same node, pod -> pod",
            Target::SameService => "same node, pod -> ClusterIP -> pod",
            Target::CrossPod => "two nodes, pod -> pod",
            Target::CrossService => "two nodes, pod -> ClusterIP -> pod",
        }
    }

    fn same_node(self) -> bool {
        matches!(self, Target::SamePod | Target::SameService)
    }
}

/// Makes the command that runs argv inside pod `client`, `same` or
/// `cross`.
type PodExec = Box<dyn Fn(&str, &[&str]) -> Command>;
/// Builds one path's shape.
type Build<'a> = Box<dyn Fn() -> Shape + 'a>;

/// A built shape: how to run a command in each pod, and the addresses.
struct Shape {
    exec: PodExec,
    same_ip: Ipv4Addr,
    cross_ip: Ipv4Addr,
    /// Torn down on drop.
    _keep: Box<dyn std::any::Any>,
}

impl Shape {
    fn address(&self, t: Target) -> String {
        match t {
            Target::SamePod => self.same_ip.to_string(),
            Target::CrossPod => self.cross_ip.to_string(),
            Target::SameService => SAME_VIP.into(),
            Target::CrossService => CROSS_VIP.into(),
        }
    }
}

/// One iperf3 run.
#[derive(Clone, Copy, Debug, Default)]
struct Sample {
    gbps: f64,
    retransmits: u64,
    cpu_s_per_gb: f64,
}

/// Busy and total jiffies of the whole machine.
fn cpu_jiffies() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let fields: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    let total: u64 = fields.iter().sum();
    let idle = fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

fn run(cmd: &mut Command, what: &str) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn iperf3(shape: &Shape, t: Target, streams: usize, seconds: u64) -> Sample {
    let server_pod = if t.same_node() { "same" } else { "cross" };
    let limit = (seconds + 10).to_string();
    let mut server: Child = (shape.exec)(
        server_pod,
        &["timeout", &limit, "iperf3", "-s", "-1", "-p", PORT],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .expect("iperf3 server");
    std::thread::sleep(Duration::from_millis(500));
    let (busy0, _) = cpu_jiffies();
    let address = shape.address(t);
    let (secs, p) = (seconds.to_string(), streams.to_string());
    let out = run(
        &mut (shape.exec)(
            "client",
            &[
                "timeout", &limit, "iperf3", "-c", &address, "-p", PORT, "-t", &secs, "-P", &p,
                "-J",
            ],
        ),
        "iperf3 client",
    );
    let (busy1, _) = cpu_jiffies();
    let _ = server.wait();
    let report: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("iperf3 -J prints JSON");
    let end = &report["end"];
    let bits = end["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap_or(0.0);
    let bytes = end["sum_received"]["bytes"].as_f64().unwrap_or(0.0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let cpu_s = (busy1 - busy0) as f64 / hz;
    Sample {
        gbps: bits / 1e9,
        retransmits: end["sum_sent"]["retransmits"].as_u64().unwrap_or(0),
        cpu_s_per_gb: if bytes > 0.0 {
            cpu_s / (bytes / 1e9)
        } else {
            0.0
        },
    }
}

/// The kernel's path with an XDP program on each node's underlay
/// interface that passes everything: what handing super-packets to the
/// node's own vxlan device would reach at best while the uplink keeps its
/// XDP program (veth turns GSO off towards an interface with one).
fn kernel_xdp_shape() -> Shape {
    let shape = kernel_shape();
    let topology = shape
        ._keep
        .downcast_ref::<Topology>()
        .expect("the kernel shape keeps its topology");
    let passers: Vec<Sink> = topology
        .nodes
        .iter()
        .map(|n| {
            let index = perf::node::ifindex(&n.ns, "eth0");
            n.ns.enter(move || Sink::attach_pass(index).expect("XDP pass program"))
        })
        .collect();
    Shape {
        _keep: Box::new((passers, shape._keep)),
        ..shape
    }
}

/// The kernel's path on the topology of the tests.
fn kernel_shape() -> Shape {
    let mut t = Topology::new();
    let n1 = t.add_node();
    let n2 = t.add_node();
    let client = t.add_pod(n1, "10.244.1.10".parse().unwrap());
    let same = t.add_pod(n1, "10.244.1.11".parse().unwrap());
    let cross = t.add_pod(n2, "10.244.2.10".parse().unwrap());
    let sh = |ns: &Netns, script: &str| {
        let out = ns.exec(&["sh", "-ec", script], Duration::from_secs(10));
        assert!(
            out.status.success(),
            "{script}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    // Offloads on, as a stock CNI leaves them (the topology turns TX
    // checksum offload off for AF_XDP).
    for n in &t.nodes {
        sh(
            &n.ns,
            "ethtool -K eth0 tx on >/dev/null; sysctl -qw net.ipv4.ip_forward=1",
        );
    }
    for p in &t.pods {
        let node = &t.nodes[p.node].ns;
        let host_mac = tables::mac::MacAddr(node.mac(&p.host_if)).to_string();
        sh(
            &p.ns,
            &format!("ethtool -K eth0 tx on >/dev/null; ip neigh add 169.254.1.1 lladdr {host_mac} dev eth0 nud permanent"),
        );
        sh(
            node,
            &format!(
                "ethtool -K {dev} tx on gro on >/dev/null; ip route add {ip} dev {dev}",
                dev = p.host_if,
                ip = p.ip
            ),
        );
    }
    // flannel-style VXLAN both ways.
    for (me, other) in [(1u8, 2u8), (2, 1)] {
        let ns = &t.nodes[usize::from(me - 1)].ns;
        sh(
            ns,
            &format!(
                "ip link add flannel.1 address 02:56:c6:12:00:0{me} type vxlan id 1 local 198.18.0.{me} dev eth0 dstport 4789 nolearning
                 ip link set flannel.1 mtu 1450 up
                 ip addr add 10.244.{me}.0/32 dev flannel.1
                 ip neigh add 10.244.{other}.0 lladdr 02:56:c6:12:00:0{other} dev flannel.1 nud permanent
                 bridge fdb replace 02:56:c6:12:00:0{other} dev flannel.1 dst 198.18.0.{other} self permanent
                 ip route add 10.244.{other}.0/24 via 10.244.{other}.0 dev flannel.1 onlink"
            ),
        );
    }
    // kube-proxy nftables-mode DNAT with conntrack on node1.
    let rules = format!(
        "table ip bench {{
  map services {{ type ipv4_addr . inet_proto . inet_service : verdict; elements = {{ {SAME_VIP} . tcp . {PORT} : goto svc-same, {CROSS_VIP} . tcp . {PORT} : goto svc-cross }} }}
  chain svc-same {{ meta l4proto tcp dnat to 10.244.1.11:{PORT}; }}
  chain svc-cross {{ meta l4proto tcp dnat to 10.244.2.10:{PORT}; }}
  chain prerouting {{ type nat hook prerouting priority dstnat; ip daddr . meta l4proto . th dport vmap @services; }}
  chain forward {{ type filter hook forward priority filter; policy accept; ct state established,related accept; }}
}}
"
    );
    let node1 = &t.nodes[n1].ns;
    perf::node::load_nft(node1, &rules);
    let names = [
        ("client", t.pods[client].ns.name.clone()),
        ("same", t.pods[same].ns.name.clone()),
        ("cross", t.pods[cross].ns.name.clone()),
    ];
    let (same_ip, cross_ip) = (t.pods[same].ip, t.pods[cross].ip);
    Shape {
        exec: Box::new(move |pod, argv| {
            let ns = &names.iter().find(|(p, _)| *p == pod).expect("a pod").1;
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns]).args(argv);
            c
        }),
        same_ip,
        cross_ip,
        _keep: Box::new(t),
    }
}

const MANIFEST: &str = r#"apiVersion: v1
kind: Namespace
metadata:
  name: bench
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: bench, labels: {app: client}}
spec:
  nodeName: node1
  containers: [{name: client, image: podswitch/echo}]
---
apiVersion: v1
kind: Pod
metadata: {name: same, namespace: bench, labels: {app: same}}
spec:
  nodeName: node1
  containers: [{name: same, image: podswitch/echo}]
---
apiVersion: v1
kind: Pod
metadata: {name: cross, namespace: bench, labels: {app: cross}}
spec:
  nodeName: node2
  containers: [{name: cross, image: podswitch/echo}]
---
apiVersion: v1
kind: Service
metadata: {name: same, namespace: bench}
spec:
  clusterIP: 10.96.0.21
  selector: {app: same}
  ports: [{name: iperf, port: 5201, targetPort: 5201}]
---
apiVersion: v1
kind: Service
metadata: {name: cross, namespace: bench}
spec:
  clusterIP: 10.96.0.22
  selector: {app: cross}
  ports: [{name: iperf, port: 5201, targetPort: 5201}]
"#;

/// Takes the bench's lab down when dropped.
struct LabGuard(PathBuf);

impl Drop for LabGuard {
    fn drop(&mut self) {
        let _ = Command::new(&self.0)
            .args(["lab", "down", "--name", LAB])
            .output();
    }
}

/// podswitch on `podswitch lab` with `pod_port` ports and `workers`
/// workers per agent.
fn podswitch_shape(bin: &Path, pod_port: &str, workers: usize) -> Shape {
    let _ = Command::new(bin)
        .args(["lab", "down", "--name", LAB])
        .output();
    let manifest = std::env::temp_dir().join(format!("bulk-bench-{}.yaml", std::process::id()));
    std::fs::write(&manifest, MANIFEST).expect("manifest");
    let guard = LabGuard(bin.to_path_buf());
    run(
        Command::new(bin).args([
            "lab",
            "up",
            "--name",
            LAB,
            "-f",
            &manifest.display().to_string(),
            "--pod-port",
            pod_port,
            "--workers",
            &workers.to_string(),
        ]),
        "podswitch lab up",
    );
    let _ = std::fs::remove_file(&manifest);
    let status = run(
        Command::new(bin).args(["lab", "status", "--name", LAB, "-o", "json"]),
        "podswitch lab status",
    );
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).expect("status JSON");
    let ip_of = |pod: &str| -> Ipv4Addr {
        status["pods"]
            .as_array()
            .and_then(|pods| {
                pods.iter()
                    .find(|p| p["name"] == pod && p["namespace"] == "bench")
            })
            .and_then(|p| p["ip"].as_str())
            .and_then(|ip| ip.parse().ok())
            .unwrap_or_else(|| panic!("no bench/{pod} in the lab's status: {status}"))
    };
    let (same_ip, cross_ip) = (ip_of("same"), ip_of("cross"));
    let bin = bin.to_path_buf();
    Shape {
        exec: Box::new(move |pod, argv| {
            let mut c = Command::new(&bin);
            c.args(["lab", "exec", "--name", LAB, &format!("bench/{pod}"), "--"])
                .args(argv);
            c
        }),
        same_ip,
        cross_ip,
        _keep: Box::new(guard),
    }
}

struct Row {
    path: &'static str,
    target: Target,
    streams: usize,
    sample: Sample,
}

fn main() {
    require_root();
    let args: Vec<String> = std::env::args().collect();
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let seconds: u64 = flag("--seconds").and_then(|s| s.parse().ok()).unwrap_or(10);
    let workers: usize = flag("--workers").and_then(|s| s.parse().ok()).unwrap_or(1);
    let me = std::env::current_exe().expect("own path");
    let bin = me.with_file_name("podswitch");
    for needed in [bin.clone(), me.with_file_name("podswitch-cni")] {
        assert!(
            needed.is_file(),
            "{} not found: build it (`cargo build --release -p podswitch -p cni -p perf`)",
            needed.display()
        );
    }
    let mut rows = Vec::new();
    let paths: [(&'static str, Build<'_>); 4] = [
        ("kernel", Box::new(kernel_shape)),
        ("kernel, XDP pass", Box::new(kernel_xdp_shape)),
        (
            "podswitch veth",
            Box::new(|| podswitch_shape(&bin, "veth", workers)),
        ),
        (
            "podswitch tap",
            Box::new(|| podswitch_shape(&bin, "tap", workers)),
        ),
    ];
    let only = flag("--only");
    let short = |path: &str| match path {
        "kernel" => "kernel",
        "kernel, XDP pass" => "kernel-xdp",
        "podswitch veth" => "veth",
        _ => "tap",
    };
    for (path, build) in &paths {
        if only.as_deref().is_some_and(|o| o != short(path)) {
            continue;
        }
        let shape = build();
        for target in Target::ALL {
            for streams in [1, 4] {
                let sample = iperf3(&shape, target, streams, seconds);
                eprintln!(
                    "{path:<15} {:<36} P{streams}  {:>6.2} Gbit/s  {:>6} retr  {:>5.2} CPU-s/GB",
                    target.name(),
                    sample.gbps,
                    sample.retransmits,
                    sample.cpu_s_per_gb
                );
                rows.push(Row {
                    path,
                    target,
                    streams,
                    sample,
                });
            }
        }
    }
    println!(
        "\n| scenario | streams | kernel Gbit/s | kernel, XDP pass | veth Gbit/s | tap Gbit/s | tap / kernel | retransmits k / veth / tap | CPU-s/GB k / veth / tap |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let mut json = Vec::new();
    for target in Target::ALL {
        for streams in [1, 4] {
            let get = |p: &str| {
                rows.iter()
                    .find(|r| {
                        r.path == p && r.target.name() == target.name() && r.streams == streams
                    })
                    .map(|r| r.sample)
                    .unwrap_or_default()
            };
            let (k, v, t) = (get("kernel"), get("podswitch veth"), get("podswitch tap"));
            let x = get("kernel, XDP pass");
            println!(
                "| {} | {streams} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2}x | {} / {} / {} | {:.2} / {:.2} / {:.2} |",
                target.name(),
                k.gbps,
                x.gbps,
                v.gbps,
                t.gbps,
                t.gbps / k.gbps.max(1e-9),
                k.retransmits,
                v.retransmits,
                t.retransmits,
                k.cpu_s_per_gb,
                v.cpu_s_per_gb,
                t.cpu_s_per_gb
            );
            for (path, s) in [
                ("kernel", k),
                ("kernel_xdp_pass", x),
                ("veth", v),
                ("tap", t),
            ] {
                json.push(serde_json::json!({
                    "scenario": target.name(), "streams": streams, "path": path,
                    "gbps": s.gbps, "retransmits": s.retransmits, "cpu_s_per_gb": s.cpu_s_per_gb,
                }));
            }
        }
    }
    if let Some(file) = flag("--json") {
        std::fs::write(
            &file,
            serde_json::to_string_pretty(&json).unwrap_or_default(),
        )
        .unwrap_or_else(|e| panic!("writing {file}: {e}"));
    }
}
