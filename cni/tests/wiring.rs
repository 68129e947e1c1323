//! The netlink pieces of pod wiring against a real kernel, inside network
//! namespaces the test creates (and deletes, also on failure). Needs root:
//! fails, never skips, without it. Nothing touches the root namespace.

use std::fs::File;
use std::net::Ipv4Addr;

use cni::naming::host_ifname;
use cni::result::GATEWAY;
use cni::wiring;
use netlink::links;
use testkit::cni::netns_path;
use testkit::netns::{require_root, Netns};

#[test]
fn a_pod_veth_is_created_into_the_pod_namespace_configured_and_removed() {
    require_root();
    let node = Netns::new("cnode");
    let pod = Netns::new("cpod");
    let pod_path = netns_path(&pod);
    let host = host_ifname("wiring-test", "eth0");
    let ip = Ipv4Addr::new(10, 244, 7, 9);

    let (link, state, host_mtu, in_node) = node.enter({
        let (host, pod_path) = (host.clone(), pod_path.clone());
        move || {
            let pod_ns = File::open(&pod_path).unwrap();
            // A stale host end of the same name is replaced.
            links::create_veth(&host, "stale-peer").unwrap();
            let link = wiring::create(&host, "eth0", &pod_ns, &pod_path, ip, 1400, 2).unwrap();
            let state = wiring::inspect(&pod_ns, &pod_path, "eth0").unwrap();
            let index = links::index_of(&host).unwrap();
            let host_mtu = links::mtu_of(index).unwrap();
            // The pod end never appears in the node's namespace.
            let in_node = (links::index_of("eth0"), links::index_of("stale-peer"));
            (link, state, host_mtu, in_node)
        }
    });
    assert_eq!(in_node, (None, None));
    assert_eq!(host_mtu, 1400);
    assert_eq!(link.host_mac, node.mac(&host));
    assert_eq!(link.pod_mac, pod.mac("eth0"));
    let state = state.expect("eth0 exists in the pod namespace");
    assert_eq!(state.mtu, 1400);
    assert_eq!(state.addresses, vec![(ip, 32)]);
    let link_route = state
        .routes
        .iter()
        .find(|r| r.dst == GATEWAY && r.len == 32)
        .expect("a route to the gateway");
    assert_eq!(link_route.scope, links::SCOPE_LINK);
    assert_eq!(link_route.ifindex, Some(state.index));
    let default = state
        .routes
        .iter()
        .find(|r| r.len == 0)
        .expect("a default route");
    assert_eq!(default.gateway, Some(GATEWAY));
    assert_eq!(default.ifindex, Some(state.index));
    // The kernel agrees (as `ip` shows it).
    let routes = pod.ip(&["route", "show"]);
    assert!(
        routes.contains("default via 169.254.1.1 dev eth0"),
        "{routes}"
    );
    assert!(routes.contains("169.254.1.1 dev eth0"), "{routes}");
    // One queue per agent worker on both ends.
    for detail in [
        pod.ip(&["-d", "link", "show", "dev", "eth0"]),
        node.ip(&["-d", "link", "show", "dev", &host]),
    ] {
        assert!(detail.contains("numtxqueues 2 numrxqueues 2"), "{detail}");
    }
    let pod_link = pod.ip(&["link", "show", "dev", "eth0"]);
    assert!(
        pod_link.contains("state UP") || pod_link.contains("LOWER_UP"),
        "{pod_link}"
    );
    let lo = pod.ip(&["link", "show", "dev", "lo"]);
    assert!(lo.contains("UP"), "{lo}");
    let features = pod.exec(
        &["ethtool", "-k", "eth0"],
        std::time::Duration::from_secs(5),
    );
    assert!(
        features.status.success(),
        "ethtool -k eth0 failed (ethtool is installed by deploy/setup.sh): {}",
        String::from_utf8_lossy(&features.stderr)
    );
    let text = String::from_utf8_lossy(&features.stdout);
    assert!(text.contains("tx-checksumming: off"), "{text}");

    // Deleting the host end takes the pod end along; twice is fine.
    let (removed, again) = node.enter({
        let host = host.clone();
        move || {
            (
                wiring::remove_host_end(&host).unwrap(),
                wiring::remove_host_end(&host).unwrap(),
            )
        }
    });
    assert!(removed);
    assert!(!again);
    let left = pod.ip(&["-o", "link", "show"]);
    assert!(!left.contains("eth0"), "{left}");
}

#[test]
fn an_existing_pod_interface_fails_creation_and_leaves_the_host_side_clean() {
    require_root();
    let node = Netns::new("cnode2");
    let pod = Netns::new("cpod2");
    pod.ip(&[
        "link",
        "add",
        "eth0",
        "type",
        "veth",
        "peer",
        "name",
        "eth0-peer",
    ]);
    let pod_path = netns_path(&pod);
    let host = host_ifname("clash", "eth0");
    let (error, host_left) = node.enter({
        let (host, pod_path) = (host.clone(), pod_path.clone());
        move || {
            let pod_ns = File::open(&pod_path).unwrap();
            let error = wiring::create(
                &host,
                "eth0",
                &pod_ns,
                &pod_path,
                Ipv4Addr::new(10, 244, 7, 10),
                1400,
                1,
            )
            .unwrap_err();
            (error.to_string(), links::index_of(&host))
        }
    });
    assert!(error.contains("eth0"), "{error}");
    assert_eq!(host_left, None, "the kernel creates both ends or neither");
}
