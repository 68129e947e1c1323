//! The node the end-to-end benches run podswitch on: node1 of the lab's
//! addressing (the README's "Addresses and pod wiring"), its agent run on a thread
//! of the bench that entered the node's namespace.

use std::time::Duration;

use agent::config::AgentArgs;
use testkit::netns::Netns;

/// Moves the calling thread into the network namespace `ns_name`.
pub fn enter(ns_name: &str) {
    let path = netlink::netns::named(ns_name);
    let file =
        std::fs::File::open(&path).unwrap_or_else(|e| panic!("namespace {}: {e}", path.display()));
    netlink::netns::setns(&file).unwrap_or_else(|e| panic!("setns into {}: {e}", path.display()));
}

/// The index of interface `dev` inside `ns` (0 if it has none).
pub fn ifindex(ns: &Netns, dev: &str) -> u32 {
    let text = ns.ip(&["-o", "link", "show", "dev", dev]);
    text.split(':')
        .next()
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

/// Loads the nftables ruleset `rules` inside `ns` (`nft -f`), panicking
/// with nft's complaint if it refuses them.
pub fn load_nft(ns: &Netns, rules: &str) {
    let path = std::env::temp_dir().join(format!("podswitch-perf-{}.nft", std::process::id()));
    std::fs::write(&path, rules).expect("nft rules");
    let nft = ns.exec(
        &["nft", "-f", &path.display().to_string()],
        Duration::from_secs(10),
    );
    let _ = std::fs::remove_file(&path);
    assert!(
        nft.status.success(),
        "nft: {}",
        String::from_utf8_lossy(&nft.stderr)
    );
}

/// node1's agent settings (uplink `eth0` at 198.18.0.1, pods 10.244.1.0/24)
/// with `workers` workers polling in `poll_mode`; the table source and
/// socket are the caller's.
pub fn node1_args(workers: usize, poll_mode: &str) -> AgentArgs {
    AgentArgs {
        node_name: Some("node1".into()),
        uplink: Some("eth0".into()),
        node_ip: Some(std::net::Ipv4Addr::new(198, 18, 0, 1)),
        pod_cidr: Some("10.244.1.0/24".into()),
        cluster_cidr: Some("10.244.0.0/16".into()),
        service_cidr: Some("10.96.0.0/12".into()),
        workers: Some(workers),
        poll_mode: Some(poll_mode.into()),
        ..AgentArgs::default()
    }
}
