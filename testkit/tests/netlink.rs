//! Next-hop resolution against a real kernel, inside network namespaces the
//! test creates (and deletes, also on failure). Needs root: fails, never
//! skips, without it.

use std::net::Ipv4Addr;
use std::time::Duration;

use netlink::{next_hop_mac, route, NetlinkError, Watch};
use testkit::netns::{require_root, run, Netns};

#[test]
fn resolves_neighbours_and_gateways_from_the_kernel() {
    require_root();
    let a = Netns::new("a");
    let b = Netns::new("b");
    a.ip(&[
        "link", "add", "va", "type", "veth", "peer", "name", "vb", "netns", &b.name,
    ]);
    a.ip(&["addr", "add", "198.18.0.1/24", "dev", "va"]);
    b.ip(&["addr", "add", "198.18.0.2/24", "dev", "vb"]);
    a.ip(&["link", "set", "va", "up"]);
    b.ip(&["link", "set", "vb", "up"]);
    a.ip(&["route", "add", "203.0.113.0/24", "via", "198.18.0.2"]);
    let peer_mac = b.mac("vb");
    let (on_link, behind_gateway, peer, gateway, unroutable) = a.enter(|| {
        (
            route(Ipv4Addr::new(198, 18, 0, 2)).unwrap(),
            route(Ipv4Addr::new(203, 0, 113, 5)).unwrap(),
            next_hop_mac(Ipv4Addr::new(198, 18, 0, 2), Duration::from_secs(3)).unwrap(),
            next_hop_mac(Ipv4Addr::new(203, 0, 113, 5), Duration::from_secs(3)).unwrap(),
            route(Ipv4Addr::new(10, 99, 0, 1)),
        )
    });
    assert_eq!(on_link.gateway, None);
    assert_eq!(behind_gateway.gateway, Some(Ipv4Addr::new(198, 18, 0, 2)));
    assert_eq!(on_link.ifindex, behind_gateway.ifindex);
    assert_eq!(peer, peer_mac, "the peer's MAC, resolved by ARP");
    assert_eq!(
        gateway, peer_mac,
        "the gateway's MAC for an address behind it"
    );
    assert!(
        matches!(unroutable, Err(NetlinkError::NoRoute(_))),
        "{unroutable:?}"
    );
}

#[test]
fn host_port_is_created_with_routes_and_removed_on_drop() {
    require_root();
    let ns = Netns::new("host");
    let cidrs: Vec<tables::model::Cidr> = ["10.244.1.0/24", "10.244.0.0/16", "10.96.0.0/12"]
        .iter()
        .map(|c| c.parse().unwrap())
        .collect();
    let (mac, node_mac) = ns.enter(move || {
        use agent::host_port::HostPort;
        let first = HostPort::create("pswhost", "pswnode", 1450, &cidrs).unwrap();
        // Creating it again (as after a crash) replaces the old pair; the
        // first value must not delete the new pair when it goes.
        std::mem::forget(first);
        let port = HostPort::create("pswhost", "pswnode", 1450, &cidrs).unwrap();
        let mac = netlink::links::mac_of(netlink::links::index_of("pswnode").unwrap()).unwrap();
        let node_mac = port.node_mac;
        // Keep the pair for the checks below; the namespace goes at the end.
        std::mem::forget(port);
        (mac, node_mac)
    });
    assert_eq!(mac, node_mac);
    let routes = ns.ip(&["route", "show"]);
    assert!(
        routes.contains("10.244.1.0/24 via 169.254.1.1 dev pswnode"),
        "{routes}"
    );
    assert!(
        routes.contains("10.96.0.0/12 via 169.254.1.1 dev pswnode"),
        "{routes}"
    );
    let link = ns.ip(&["link", "show", "pswnode"]);
    assert!(
        link.contains("mtu 1450") && link.contains("state UP") || link.contains(",UP"),
        "{link}"
    );
    assert_eq!(mac, ns.mac("pswnode"));
    let features = run(&["ip", "netns", "exec", &ns.name, "ethtool", "-k", "pswnode"]);
    assert!(features.contains("tx-checksumming: off"), "{features}");
    // Dropping the owner deletes the pair.
    ns.enter(|| {
        let port = agent::host_port::HostPort::create("pswhost", "pswnode", 1450, &[]).unwrap();
        drop(port);
        assert!(netlink::links::index_of("pswhost").is_none());
        assert!(netlink::links::index_of("pswnode").is_none());
    });
}

#[test]
fn a_watch_reports_neighbour_changes_and_stays_quiet_otherwise() {
    require_root();
    let a = Netns::new("w");
    a.ip(&["link", "add", "wa", "type", "veth", "peer", "name", "wb"]);
    a.ip(&["addr", "add", "198.18.0.1/24", "dev", "wa"]);
    a.ip(&["link", "set", "wa", "up"]);
    a.ip(&["link", "set", "wb", "up"]);
    let name = a.name.clone();
    let (quiet, after_add, after_change) = a.enter(move || {
        let watch = Watch::open().unwrap();
        // Let the links' own notifications (and any late ones) pass.
        while watch.wait(Duration::from_millis(300)) {}
        let quiet = watch.wait(Duration::from_millis(300));
        let neigh = |verb: &str, mac: &str| {
            run(&[
                "ip",
                "-n",
                &name,
                "neigh",
                verb,
                "198.18.0.9",
                "lladdr",
                mac,
                "dev",
                "wa",
            ])
        };
        neigh("add", "02:00:00:00:00:09");
        let after_add = watch.wait(Duration::from_secs(2));
        while watch.wait(Duration::from_millis(100)) {}
        neigh("replace", "02:00:00:00:00:0a");
        let after_change = watch.wait(Duration::from_secs(2));
        (quiet, after_add, after_change)
    });
    assert!(!quiet, "no change happened, yet the watch reported one");
    assert!(after_add, "a new neighbour entry was not reported");
    assert!(after_change, "a neighbour's new MAC was not reported");
}
