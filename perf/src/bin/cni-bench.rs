//! `cni-bench`: how long a pod takes from the runtime's CNI ADD to being
//! reachable through podswitch.
//!
//! One node namespace runs the agent (in this process, on a thread that
//! entered the namespace; manifest source on an empty folder, one worker
//! unless `--workers N`, adaptive polling unless `--poll-mode busy`). A client pod is attached
//! first. Then, one pod after another (`--pods N`, default 100), the bench
//! creates the pod's namespace (not timed), starts the clock, executes
//! `podswitch-cni ADD` exactly as a runtime does (env + stdin, `host-local`
//! IPAM) and, as soon as it returns, pings the new pod from the client pod
//! every millisecond (raw ICMP socket, no process start) until it answers.
//! Reported per pod: ADD's own time and ADD-to-reachable; then every pod is
//! deleted with `DEL`, timed too. Order statistics (min, p50, p99, max) go
//! to stdout, and as JSON with `--json FILE`. Needs root; leaves nothing
//! behind (namespaces and the agent's ports go when it ends).

use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use agent::config::AgentArgs;
use dataplane::wire::checksum;
use perf::measure::{ms, Stats};
use testkit::cni::{plugin_binary, test_config, Cni, Pod};
use testkit::netns::{require_root, Netns};
use testkit::topology::Topology;

struct Options {
    pods: usize,
    workers: usize,
    poll_mode: String,
    json: Option<String>,
}

fn options() -> Options {
    let mut o = Options {
        pods: 100,
        workers: 1,
        poll_mode: "adaptive".into(),
        json: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| {
            args.next()
                .unwrap_or_else(|| panic!("{name} needs a value"))
        };
        match arg.as_str() {
            "--pods" => o.pods = value("--pods").parse().expect("--pods N"),
            "--poll-mode" => o.poll_mode = value("--poll-mode"),
            "--workers" => o.workers = value("--workers").parse().expect("--workers N"),
            "--json" => o.json = Some(value("--json")),
            other => panic!(
                "unknown argument {other:?} (--pods N, --workers N, --poll-mode busy|adaptive, --json FILE)"
            ),
        }
    }
    assert!(
        o.pods > 0 && o.pods <= 250,
        "--pods must be 1..=250 (one /24)"
    );
    o
}

/// Pings `dst` from the namespace `client` every millisecond until it
/// answers (or 5 s pass); returns when the first reply arrived.
fn first_reply(client: &str, dst: Ipv4Addr) -> Option<Instant> {
    let client = client.to_string();
    std::thread::spawn(move || {
        perf::node::enter(&client);
        // SAFETY: a raw ICMP socket, closed below.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP) };
        assert!(
            fd >= 0,
            "raw ICMP socket: {}",
            std::io::Error::last_os_error()
        );
        let addr = libc::sockaddr_in {
            sin_family: libc::sa_family_t::try_from(libc::AF_INET).unwrap_or(2),
            sin_port: 0,
            sin_addr: libc::in_addr {
                s_addr: u32::from(dst).to_be(),
            },
            sin_zero: [0; 8],
        };
        let id = (std::process::id() & 0xffff) as u16;
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut seq: u16 = 0;
        let mut answered = None;
        while answered.is_none() && Instant::now() < deadline {
            seq = seq.wrapping_add(1);
            let mut echo = [0u8; 16];
            echo[0] = 8;
            echo[4..6].copy_from_slice(&id.to_be_bytes());
            echo[6..8].copy_from_slice(&seq.to_be_bytes());
            let sum = checksum::finish(checksum::sum(&echo));
            echo[2..4].copy_from_slice(&sum.to_be_bytes());
            // SAFETY: `echo` and `addr` are valid for the call's duration.
            unsafe {
                libc::sendto(
                    fd,
                    echo.as_ptr().cast(),
                    echo.len(),
                    0,
                    std::ptr::addr_of!(addr).cast(),
                    libc::socklen_t::try_from(std::mem::size_of::<libc::sockaddr_in>())
                        .unwrap_or(16),
                )
            };
            let until = Instant::now() + Duration::from_millis(1);
            while answered.is_none() && Instant::now() < until {
                let mut pfd = libc::pollfd {
                    fd,
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: one valid pollfd.
                if unsafe { libc::poll(&mut pfd, 1, 1) } <= 0 {
                    continue;
                }
                let mut buf = [0u8; 1500];
                // SAFETY: `buf` is writable for its length.
                let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
                let Ok(n) = usize::try_from(n) else { continue };
                let ihl = usize::from(buf[0] & 0x0f) * 4;
                let from = Ipv4Addr::new(buf[12], buf[13], buf[14], buf[15]);
                if n >= ihl + 8
                    && from == dst
                    && buf[ihl] == 0
                    && buf[ihl + 4..ihl + 6] == id.to_be_bytes()
                {
                    answered = Some(Instant::now());
                }
            }
        }
        // SAFETY: `fd` was opened above and is closed once.
        unsafe { libc::close(fd) };
        answered
    })
    .join()
    .expect("probe thread")
}

fn main() {
    require_root();
    let o = options();
    let mut topology = Topology::new();
    let node = topology.add_node();
    let node_ns = topology.nodes[node].ns.name.clone();
    let dir = std::env::temp_dir().join(format!("podswitch-cni-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let manifests = dir.join("manifests");
    std::fs::create_dir_all(&manifests).expect("temp dir");
    let socket = dir.join("agent.sock");
    let args = AgentArgs {
        manifests: Some(manifests),
        socket: Some(socket.clone()),
        ..perf::node::node1_args(o.workers, &o.poll_mode)
    };
    let config = args.resolve().expect("agent config");
    let stop = Arc::new(AtomicBool::new(false));
    let agent = {
        let (stop, config, ns) = (stop.clone(), config.clone(), node_ns.clone());
        std::thread::spawn(move || {
            perf::node::enter(&ns);
            agent::run::run(&config, &stop).expect("agent")
        })
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while !api::ready(&socket).unwrap_or(false) {
        assert!(Instant::now() < deadline, "the agent did not become ready");
        std::thread::sleep(Duration::from_millis(20));
    }

    let exe = std::env::current_exe().expect("own path");
    let cni = Cni::new(
        &plugin_binary(Some(Path::new(&exe))),
        &topology.nodes[node].ns,
    );
    let cni_config = test_config(
        "1.1.0",
        "bench",
        &socket,
        &dir.join("state"),
        1,
        &dir.join("ipam"),
    );
    let client_ns = Netns::new("cbc");
    let client = Pod::new("bench-client", &client_ns);
    cni.add(&client, &cni_config)
        .expect("ADD of the client pod");

    let mut adds = Vec::new();
    let mut reach = Vec::new();
    let mut pods = Vec::new();
    for i in 0..o.pods {
        let ns = Netns::new(&format!("cb{i}"));
        let pod = Pod::new(&format!("bench-{i:03}"), &ns);
        let start = Instant::now();
        let result = cni
            .add(&pod, &cni_config)
            .unwrap_or_else(|e| panic!("ADD {i}: {e:?}"));
        let added = Instant::now();
        let ip: Ipv4Addr = result["ips"][0]["address"]
            .as_str()
            .and_then(|a| a.split('/').next())
            .and_then(|a| a.parse().ok())
            .expect("an address in the result");
        let replied = first_reply(&client_ns.name, ip)
            .unwrap_or_else(|| panic!("pod {i} ({ip}) did not answer within 5 s of ADD"));
        adds.push(added - start);
        reach.push(replied - start);
        pods.push((ns, pod));
    }
    let mut dels = Vec::new();
    for (_, pod) in &pods {
        let start = Instant::now();
        cni.del(pod, &cni_config).expect("DEL");
        dels.push(start.elapsed());
    }
    cni.del(&client, &cni_config).expect("DEL of the client");
    stop.store(true, Ordering::Release);
    let _ = agent.join();
    drop(pods);
    let _ = std::fs::remove_dir_all(&dir);

    let (add, reachable, del) = (Stats::of(&adds), Stats::of(&reach), Stats::of(&dels));
    println!(
        "{} pods, one after another; agent: {} worker(s), {} polling",
        o.pods, o.workers, o.poll_mode
    );
    println!(
        "{:<22} {:>8} {:>8} {:>8} {:>8}",
        "ms", "min", "p50", "p99", "max"
    );
    for (name, s) in [
        ("ADD (plugin returns)", add),
        ("ADD -> reachable", reachable),
        ("DEL", del),
    ] {
        println!(
            "{name:<22} {:>8.1} {:>8.1} {:>8.1} {:>8.1}",
            ms(s.min),
            ms(s.p50),
            ms(s.p99),
            ms(s.max)
        );
    }
    if let Some(path) = o.json {
        let json = serde_json::json!({
            "pods": o.pods,
            "poll_mode": o.poll_mode,
            "workers": o.workers,
            "add": add.json(),
            "add_to_reachable": reachable.json(),
            "del": del.json(),
        });
        std::fs::write(
            &path,
            serde_json::to_string_pretty(&json).unwrap_or_default(),
        )
        .unwrap_or_else(|e| panic!("{path}: {e}"));
    }
}
