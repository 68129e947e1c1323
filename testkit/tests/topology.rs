//! The test topology itself: nodes reach each other over the underlay, pods
//! are wired as the CNI plugin wires pods, and nothing is left behind.

use std::process::Command;
use std::time::Duration;

use testkit::netns::require_root;
use testkit::topology::Topology;

fn namespaces() -> String {
    String::from_utf8_lossy(
        &Command::new("ip")
            .args(["netns", "list"])
            .output()
            .unwrap()
            .stdout,
    )
    .into_owned()
}

#[test]
fn nodes_share_the_underlay_and_pods_are_wired() {
    require_root();
    let names;
    {
        let mut t = Topology::new();
        let a = t.add_node();
        let b = t.add_node();
        let pod = t.add_pod(a, "10.244.1.10".parse().unwrap());
        names = vec![
            t.underlay.name.clone(),
            t.nodes[a].ns.name.clone(),
            t.pods[pod].ns.name.clone(),
        ];
        let ping = t.nodes[a].ns.exec(
            &["ping", "-c", "1", "-W", "2", &t.nodes[b].ip.to_string()],
            Duration::from_secs(5),
        );
        assert!(
            ping.status.success(),
            "node1 -> node2: {}{}",
            String::from_utf8_lossy(&ping.stdout),
            String::from_utf8_lossy(&ping.stderr)
        );
        let routes = t.pods[pod].ns.ip(&["route", "show"]);
        assert!(
            routes.contains("default via 169.254.1.1 dev eth0"),
            "{routes}"
        );
        assert!(
            routes.contains("169.254.1.1 dev eth0 scope link"),
            "{routes}"
        );
        let addr = t.pods[pod].ns.ip(&["addr", "show", "eth0"]);
        assert!(
            addr.contains("10.244.1.10/32") && addr.contains("mtu 1450"),
            "{addr}"
        );
        let host = t.nodes[a].ns.ip(&["link", "show", &t.pods[pod].host_if]);
        assert!(host.contains("state UP") || host.contains(",UP"), "{host}");
    }
    let left = namespaces();
    for n in names {
        assert!(!left.contains(&n), "{n} left behind: {left}");
    }
}
