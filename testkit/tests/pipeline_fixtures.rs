//! Fixture tables for the whole pipeline: each case is a fresh example node,
//! a sequence of `{input port, input frame}` steps and, per step, the frame
//! expected out of which port (decoded and checksum-verified by etherparse)
//! or the drop reason. Stateful cases (replies through conntrack) are
//! sequences. The benchmarks replay the same frames.

// Test data is generated from counters on purpose: truncation is intended.
#![allow(clippy::cast_possible_truncation)]

use dataplane::counters::DropReason;
use tables::cluster::ClusterState;
use tables::model::TrafficPolicy;
use tables::route::PortId;
use testkit::example::{self, addrs::*, GATEWAY_MAC, HOST_MAC, HOST_PORT, ROUTER_MAC, UPLINK_PORT};
use testkit::fixture::*;
use testkit::packets::{self, ip, tcp, L2};
use testkit::{decode, Node};

// ---- forwarding ------------------------------------------------------------

#[test]
fn pod_to_pod_on_the_same_node() {
    let (c, w) = ((ip(CLIENT), 40_000), (ip(WEB_1), 8080));
    run(Case {
        name: "pod to pod, same node",
        node: node1(),
        steps: vec![
            step(
                port(CLIENT),
                packets::tcp(from_pod(CLIENT), c, w, SYN, b"hi"),
                Expect::Out(port(WEB_1), to_pod(WEB_1, c, w)),
            ),
            step(
                port(WEB_1),
                packets::tcp(from_pod(WEB_1), w, c, SYNACK, b""),
                Expect::Out(port(CLIENT), to_pod(CLIENT, w, c)),
            ),
        ],
    });
}

#[test]
fn cross_node_encap_and_decap() {
    let (c, w) = ((ip(CLIENT), 40_001), (ip(WEB_2), 8080));
    let reply = packets::tcp(inner_l2(), w, c, SYNACK, b"");
    run(Case {
        name: "pod to pod across nodes",
        node: node1(),
        steps: vec![
            step(
                port(CLIENT),
                packets::tcp(from_pod(CLIENT), c, w, SYN, b"x"),
                Expect::Out(UPLINK_PORT, to_node2(c, w)),
            ),
            step(
                UPLINK_PORT,
                from_node2(&reply),
                Expect::Out(port(CLIENT), to_pod(CLIENT, w, c)),
            ),
        ],
    });
}

#[test]
fn node_reaches_its_pods_through_the_host_port() {
    let (h, w) = ((n1().node_ip, 50_000), (ip(WEB_1), 8080));
    let from_host = L2 {
        src: HOST_MAC,
        dst: GATEWAY_MAC,
    };
    let back = Want {
        src_mac: Some(GATEWAY_MAC),
        dst_mac: Some(HOST_MAC),
        src: Some(w),
        dst: Some(h),
        ttl: Some(63),
        vxlan: None,
    };
    run(Case {
        name: "host port",
        node: node1(),
        steps: vec![
            step(
                HOST_PORT,
                packets::tcp(from_host, h, w, SYN, b""),
                Expect::Out(port(WEB_1), to_pod(WEB_1, h, w)),
            ),
            step(
                port(WEB_1),
                packets::tcp(from_pod(WEB_1), w, h, SYNACK, b""),
                Expect::Out(HOST_PORT, back),
            ),
        ],
    });
}

// ---- services ----------------------------------------------------------------

#[test]
fn cluster_ip_dnat_and_reverse_nat_of_the_reply() {
    let (c, vip, backend) = ((ip(CLIENT), 40_002), (ip(WEB_VIP), 80), (ip(WEB_1), 8080));
    run(Case {
        name: "ClusterIP",
        node: node_with("node1", |s| web_endpoints(s, &[WEB_1])),
        steps: vec![
            step(
                port(CLIENT),
                packets::tcp(from_pod(CLIENT), c, vip, SYN, b""),
                Expect::Out(port(WEB_1), to_pod(WEB_1, c, backend)),
            ),
            step(
                port(WEB_1),
                packets::tcp(from_pod(WEB_1), backend, c, SYNACK, b""),
                Expect::Out(port(CLIENT), to_pod(CLIENT, vip, c)),
            ),
            step(
                port(CLIENT),
                packets::tcp(from_pod(CLIENT), c, vip, tcp::ACK, b"GET /"),
                Expect::Out(port(WEB_1), to_pod(WEB_1, c, backend)),
            ),
        ],
    });
}

#[test]
fn cluster_ip_to_a_backend_on_another_node() {
    let (c, vip, backend) = ((ip(CLIENT), 40_003), (ip(WEB_VIP), 80), (ip(WEB_2), 8080));
    let reply = packets::tcp(inner_l2(), backend, c, SYNACK, b"");
    run(Case {
        name: "ClusterIP, remote backend",
        node: node_with("node1", |s| web_endpoints(s, &[WEB_2])),
        steps: vec![
            step(
                port(CLIENT),
                packets::tcp(from_pod(CLIENT), c, vip, SYN, b""),
                Expect::Out(UPLINK_PORT, to_node2(c, backend)),
            ),
            step(
                UPLINK_PORT,
                from_node2(&reply),
                Expect::Out(port(CLIENT), to_pod(CLIENT, vip, c)),
            ),
        ],
    });
}

#[test]
fn node_port_masquerades_with_external_traffic_policy_cluster() {
    let outside = (ip(OUTSIDE), 5555);
    let np = (n1().node_ip, WEB_NODE_PORT);
    let backend = (ip(WEB_2), 8080);
    let masq = (n1().node_ip, 5555); // the client's port is kept when free
    let from_router = L2 {
        src: ROUTER_MAC,
        dst: n1().uplink_mac,
    };
    let reply = packets::tcp(inner_l2(), backend, masq, SYNACK, b"");
    let to_outside = Want {
        src_mac: Some(n1().uplink_mac),
        dst_mac: Some(ROUTER_MAC),
        src: Some(np),
        dst: Some(outside),
        ttl: Some(63),
        vxlan: None,
    };
    run(Case {
        name: "NodePort, Cluster",
        node: node_with("node1", |s| web_endpoints(s, &[WEB_2])),
        steps: vec![
            step(
                UPLINK_PORT,
                packets::tcp(from_router, outside, np, SYN, b""),
                Expect::Out(UPLINK_PORT, to_node2(masq, backend)),
            ),
            step(
                UPLINK_PORT,
                from_node2(&reply),
                Expect::Out(UPLINK_PORT, to_outside),
            ),
        ],
    });
}

#[test]
fn node_port_with_external_traffic_policy_local_keeps_the_client_address() {
    let outside = (ip(OUTSIDE), 5556);
    let np = (n1().node_ip, WEB_NODE_PORT);
    let from_router = L2 {
        src: ROUTER_MAC,
        dst: n1().uplink_mac,
    };
    let local =
        |s: &mut ClusterState| s.services[0].service.external_traffic_policy = TrafficPolicy::Local;
    run(Case {
        name: "NodePort, Local",
        node: node_with("node1", local),
        steps: vec![step(
            UPLINK_PORT,
            packets::tcp(from_router, outside, np, SYN, b""),
            Expect::Out(port(WEB_1), to_pod(WEB_1, outside, (ip(WEB_1), 8080))),
        )],
    });
    run(Case {
        name: "NodePort, Local, no local endpoint",
        node: node_with("node1", |s| {
            local(s);
            web_endpoints(s, &[WEB_2, WEB_3]);
        }),
        steps: vec![step(
            UPLINK_PORT,
            packets::tcp(from_router, outside, np, SYN, b""),
            Expect::Drop(DropReason::NoLocalEndpoints),
        )],
    });
}

#[test]
fn load_balancer_ip() {
    let outside = (ip(OUTSIDE), 5557);
    let lb = (ip(WEB_LB), 80);
    let from_router = L2 {
        src: ROUTER_MAC,
        dst: n1().uplink_mac,
    };
    run(Case {
        name: "LoadBalancer ingress IP",
        node: node_with("node1", |s| web_endpoints(s, &[WEB_1])),
        steps: vec![step(
            UPLINK_PORT,
            packets::tcp(from_router, outside, lb, SYN, b""),
            Expect::Out(
                port(WEB_1),
                to_pod(WEB_1, (n1().node_ip, 5557), (ip(WEB_1), 8080)),
            ),
        )],
    });
}

#[test]
fn hairpin_through_a_service_is_masqueraded() {
    let (me, vip, backend) = ((ip(WEB_1), 33_000), (ip(WEB_VIP), 80), (ip(WEB_1), 8080));
    let masq = (n1().node_ip, 33_000);
    run(Case {
        name: "hairpin",
        node: node_with("node1", |s| web_endpoints(s, &[WEB_1])),
        steps: vec![
            step(
                port(WEB_1),
                packets::tcp(from_pod(WEB_1), me, vip, SYN, b""),
                Expect::Out(port(WEB_1), to_pod(WEB_1, masq, backend)),
            ),
            step(
                port(WEB_1),
                packets::tcp(from_pod(WEB_1), backend, masq, SYNACK, b""),
                Expect::Out(port(WEB_1), to_pod(WEB_1, vip, me)),
            ),
        ],
    });
}

#[test]
fn pod_to_outside_is_masqueraded_and_replies_come_back() {
    let (c, world) = ((ip(CLIENT), 41_000), (ip("203.0.113.7"), 443));
    let masq = (n1().node_ip, 41_000);
    let from_router = L2 {
        src: ROUTER_MAC,
        dst: n1().uplink_mac,
    };
    let out = Want {
        src_mac: Some(n1().uplink_mac),
        dst_mac: Some(ROUTER_MAC),
        src: Some(masq),
        dst: Some(world),
        ttl: Some(63),
        vxlan: None,
    };
    run(Case {
        name: "egress masquerade",
        node: node1(),
        steps: vec![
            step(
                port(CLIENT),
                packets::tcp(from_pod(CLIENT), c, world, SYN, b""),
                Expect::Out(UPLINK_PORT, out),
            ),
            step(
                UPLINK_PORT,
                packets::tcp(from_router, world, masq, SYNACK, b""),
                Expect::Out(port(CLIENT), to_pod(CLIENT, world, c)),
            ),
        ],
    });
}

// ---- policy ---------------------------------------------------------------------

#[test]
fn ingress_policy_allows_and_denies() {
    let db = (ip(DB), 5432);
    run(Case {
        name: "ingress policy",
        node: node1(),
        steps: vec![
            step(
                port(INTRUDER),
                packets::tcp(from_pod(INTRUDER), (ip(INTRUDER), 1), db, SYN, b""),
                Expect::Drop(DropReason::PolicyDeniedIngress),
            ),
            step(
                port(WEB_1),
                packets::tcp(from_pod(WEB_1), (ip(WEB_1), 2), db, SYN, b""),
                Expect::Out(port(DB), to_pod(DB, (ip(WEB_1), 2), db)),
            ),
            step(
                port(DB),
                packets::tcp(from_pod(DB), db, (ip(WEB_1), 2), SYNACK, b""),
                Expect::Out(port(WEB_1), to_pod(WEB_1, db, (ip(WEB_1), 2))),
            ),
            step(
                port(WEB_1),
                packets::tcp(from_pod(WEB_1), (ip(WEB_1), 3), (ip(DB), 5433), SYN, b""),
                Expect::Drop(DropReason::PolicyDeniedIngress),
            ),
        ],
    });
}

/// The client may only talk to web pods on 8080.
fn client_egress_only_to_web(s: &mut ClusterState) {
    use tables::model::*;
    let sel = |k: &str, v: &str| LabelSelector {
        match_labels: [(k.to_string(), v.to_string())].into(),
        ..LabelSelector::default()
    };
    s.policies.push(NetworkPolicy {
        namespace: "demo".into(),
        name: "client-egress".into(),
        pod_selector: sel("app", "client"),
        ingress_isolation: false,
        egress_isolation: true,
        ingress: vec![],
        egress: vec![PolicyRule {
            peers: vec![Peer::Pods {
                namespace_selector: None,
                pod_selector: Some(sel("app", "web")),
            }],
            ports: vec![PolicyPort {
                proto: Proto::Tcp,
                port: Some(PortRef::Number(8080)),
                end_port: None,
            }],
        }],
    });
}

#[test]
fn egress_policy_allows_and_denies_and_replies_pass() {
    let c = (ip(CLIENT), 9000);
    run(Case {
        name: "egress policy",
        node: node_with("node1", client_egress_only_to_web),
        steps: vec![
            step(
                port(CLIENT),
                packets::tcp(from_pod(CLIENT), c, (ip(DB), 5432), SYN, b""),
                Expect::Drop(DropReason::PolicyDeniedEgress),
            ),
            step(
                port(CLIENT),
                packets::tcp(from_pod(CLIENT), c, (ip(WEB_1), 8080), SYN, b""),
                Expect::Out(port(WEB_1), to_pod(WEB_1, c, (ip(WEB_1), 8080))),
            ),
            step(
                port(CLIENT),
                packets::tcp(from_pod(CLIENT), c, (ip(WEB_1), 8081), SYN, b""),
                Expect::Drop(DropReason::PolicyDeniedEgress),
            ),
            // The database opens a connection to the client (the client's
            // ingress is open); the client's replies pass its egress policy.
            step(
                port(DB),
                packets::tcp(from_pod(DB), (ip(DB), 7000), c, SYN, b""),
                Expect::Out(port(CLIENT), to_pod(CLIENT, (ip(DB), 7000), c)),
            ),
            step(
                port(CLIENT),
                packets::tcp(from_pod(CLIENT), c, (ip(DB), 7000), SYNACK, b""),
                Expect::Out(port(DB), to_pod(DB, c, (ip(DB), 7000))),
            ),
        ],
    });
}

#[test]
fn ingress_is_enforced_at_the_destination_node_for_overlay_traffic() {
    use tables::model::*;
    let only_client = |s: &mut ClusterState| {
        let sel = |k: &str, v: &str| LabelSelector {
            match_labels: [(k.to_string(), v.to_string())].into(),
            ..LabelSelector::default()
        };
        s.policies.push(NetworkPolicy {
            namespace: "demo".into(),
            name: "web-from-client".into(),
            pod_selector: sel("app", "web"),
            ingress_isolation: true,
            egress_isolation: false,
            ingress: vec![PolicyRule {
                peers: vec![Peer::Pods {
                    namespace_selector: None,
                    pod_selector: Some(sel("app", "client")),
                }],
                ports: vec![],
            }],
            egress: vec![],
        });
    };
    // node2 receives from node1's pods: the client is allowed, the intruder not.
    let node1_l2 = L2 {
        src: n1().vtep_mac,
        dst: n2().vtep_mac,
    };
    let outer = L2 {
        src: n1().uplink_mac,
        dst: n2().uplink_mac,
    };
    let wrap = |inner: Vec<u8>| {
        packets::vxlan(
            outer,
            n1().node_ip,
            n2().node_ip,
            45_000,
            example::VNI,
            &inner,
        )
    };
    let web2 = (ip(WEB_2), 8080);
    let to_web2 = |src| Want {
        src_mac: Some(GATEWAY_MAC),
        dst_mac: Some(mac(WEB_2)),
        src: Some(src),
        dst: Some(web2),
        ttl: Some(63),
        vxlan: None,
    };
    run(Case {
        name: "ingress at the destination node",
        node: node_with("node2", only_client),
        steps: vec![
            step(
                UPLINK_PORT,
                wrap(packets::tcp(node1_l2, (ip(CLIENT), 1), web2, SYN, b"")),
                Expect::Out(port(WEB_2), to_web2((ip(CLIENT), 1))),
            ),
            step(
                UPLINK_PORT,
                wrap(packets::tcp(node1_l2, (ip(INTRUDER), 1), web2, SYN, b"")),
                Expect::Drop(DropReason::PolicyDeniedIngress),
            ),
        ],
    });
}

// ---- conntrack --------------------------------------------------------------------

#[test]
fn a_full_conntrack_table_refuses_new_flows_and_keeps_old_ones() {
    let mut node = Node::with_capacity(example::snapshot("node1"), 64);
    let w = (ip(WEB_1), 8080);
    let mut admitted = Vec::new();
    for sport in 1..=200u16 {
        let out = node.send(
            port(CLIENT),
            &packets::tcp(from_pod(CLIENT), (ip(CLIENT), sport), w, SYN, b""),
        );
        if out.len() == 1 {
            admitted.push(sport);
        }
    }
    assert!(
        admitted.len() <= 64 && admitted.len() >= 32,
        "admitted {}",
        admitted.len()
    );
    assert!(node.drops(DropReason::ConntrackFull) + node.drops(DropReason::ConntrackCollision) > 0);
    for &sport in &admitted {
        let out = node.send(
            port(CLIENT),
            &packets::tcp(from_pod(CLIENT), (ip(CLIENT), sport), w, tcp::ACK, b"more"),
        );
        assert_eq!(out.len(), 1, "established flow {sport} stopped");
    }
}

// ---- ARP ----------------------------------------------------------------------------

#[test]
fn arp_for_the_gateway_is_answered() {
    let mut node = node1();
    let out = node.send(
        port(CLIENT),
        &packets::arp_request(mac(CLIENT), ip(CLIENT), tables::route::POD_GATEWAY_IP),
    );
    assert_eq!(out.len(), 1);
    let (p, f) = &out[0];
    assert_eq!(*p, port(CLIENT));
    assert_eq!(&f[0..6], &mac(CLIENT), "to the asker");
    assert_eq!(&f[6..12], &GATEWAY_MAC);
    assert_eq!(&f[12..14], &[0x08, 0x06]);
    assert_eq!(&f[20..22], &[0, 2], "reply");
    assert_eq!(&f[22..28], &GATEWAY_MAC, "sender MAC");
    assert_eq!(&f[28..32], &[169, 254, 1, 1], "sender IP");
    assert_eq!(&f[32..38], &mac(CLIENT), "target MAC");
    assert_eq!(&f[38..42], &addr(CLIENT).octets(), "target IP");
}

// ---- malformed and refused input, one case per drop reason -----------------------------

fn with_ip_checksum(mut f: Vec<u8>) -> Vec<u8> {
    packets::refill_ip_checksum(&mut f);
    f
}

#[test]
fn every_class_of_bad_input_is_dropped_with_its_reason() {
    let c = (ip(CLIENT), 1234);
    let w = (ip(WEB_1), 8080);
    let good = || packets::udp(from_pod(CLIENT), c, w, &[1, 2, 3, 4]);
    let edit = |f: fn(&mut Vec<u8>)| {
        let mut g = good();
        f(&mut g);
        g
    };
    let node2_inner = packets::tcp(inner_l2(), (ip(WEB_2), 1), (ip(CLIENT), 2), SYN, b"");
    let from_router = L2 {
        src: ROUTER_MAC,
        dst: n1().uplink_mac,
    };
    let cases: Vec<(&str, PortId, Vec<u8>, DropReason)> = vec![
        (
            "runt frame",
            port(CLIENT),
            good()[..10].to_vec(),
            DropReason::Truncated,
        ),
        (
            "IP header cut short",
            port(CLIENT),
            good()[..24].to_vec(),
            DropReason::BadIpHeader,
        ),
        (
            "IPv6 ethertype",
            port(CLIENT),
            edit(|g| g[12..14].copy_from_slice(&[0x86, 0xdd])),
            DropReason::Ipv6,
        ),
        (
            "unknown ethertype",
            port(CLIENT),
            edit(|g| g[12..14].copy_from_slice(&[0x88, 0xb5])),
            DropReason::UnknownEthertype,
        ),
        (
            "802.1Q tag",
            port(CLIENT),
            {
                let mut g = good();
                g.splice(12..12, [0x81, 0x00, 0x00, 0x05]);
                g
            },
            DropReason::VlanTagged,
        ),
        (
            "bad IP checksum",
            port(CLIENT),
            edit(|g| g[24] ^= 0xff),
            DropReason::BadIpChecksum,
        ),
        (
            "IP total length past the frame",
            port(CLIENT),
            with_ip_checksum(edit(|g| g[16] = 0x05)),
            DropReason::BadIpHeader,
        ),
        (
            "IP version 6 in an IPv4 frame",
            port(CLIENT),
            with_ip_checksum(edit(|g| g[14] = 0x65)),
            DropReason::BadIpHeader,
        ),
        (
            "IP options",
            port(CLIENT),
            with_ip_checksum(edit(|g| {
                g[14] = 0x46;
                g.splice(34..34, [1, 1, 1, 0]);
                let len = u16::from_be_bytes([g[16], g[17]]) + 4;
                g[16..18].copy_from_slice(&len.to_be_bytes());
            })),
            DropReason::IpOptions,
        ),
        (
            "fragment with more to follow and a length not a multiple of 8",
            port(CLIENT),
            with_ip_checksum(edit(|g| g[20] = 0x20)),
            DropReason::FragmentMalformed,
        ),
        (
            "later fragment whose first never came",
            port(CLIENT),
            with_ip_checksum(edit(|g| g[21] = 0x10)),
            DropReason::FragmentNoFirst,
        ),
        (
            "fragment ending past 64 KB",
            port(CLIENT),
            with_ip_checksum(edit(|g| g[20..22].copy_from_slice(&[0x1f, 0xff]))),
            DropReason::FragmentMalformed,
        ),
        (
            "first fragment too short for its TCP header",
            port(CLIENT),
            with_ip_checksum({
                let mut g = packets::tcp(from_pod(CLIENT), c, w, SYN, b"");
                g.truncate(14 + 20 + 8);
                g[16..18].copy_from_slice(&28u16.to_be_bytes());
                g[20] = 0x20;
                g
            }),
            DropReason::FragmentShortFirst,
        ),
        (
            "GRE",
            port(CLIENT),
            with_ip_checksum(edit(|g| g[23] = 47)),
            DropReason::UnsupportedProtocol,
        ),
        (
            "UDP length past the packet",
            port(CLIENT),
            edit(|g| g[38] = 0x40),
            DropReason::BadL4Header,
        ),
        (
            "TCP header cut short",
            port(CLIENT),
            with_ip_checksum(edit(|g| {
                g[23] = 6;
                g[16..18].copy_from_slice(&30u16.to_be_bytes());
            })),
            DropReason::BadL4Header,
        ),
        (
            "ICMP timestamp",
            port(CLIENT),
            with_ip_checksum(edit(|g| {
                g[23] = 1;
                g[34] = 13;
            })),
            DropReason::UnsupportedIcmp,
        ),
        (
            "spoofed source MAC",
            port(CLIENT),
            packets::udp(
                L2 {
                    src: [2, 9, 9, 9, 9, 9],
                    dst: GATEWAY_MAC,
                },
                c,
                w,
                b"",
            ),
            DropReason::SpoofedMac,
        ),
        (
            "spoofed source IP",
            port(CLIENT),
            packets::udp(from_pod(CLIENT), (ip(WEB_1), 1), w, b""),
            DropReason::SpoofedIp,
        ),
        (
            "bad ARP",
            port(CLIENT),
            {
                let mut a =
                    packets::arp_request(mac(CLIENT), ip(CLIENT), tables::route::POD_GATEWAY_IP);
                a[18] = 8;
                a
            },
            DropReason::BadArp,
        ),
        (
            "ARP for another address",
            port(CLIENT),
            packets::arp_request(mac(CLIENT), ip(CLIENT), ip(WEB_1)),
            DropReason::ArpNotForGateway,
        ),
        (
            "ARP from another MAC",
            port(CLIENT),
            packets::arp_request(
                [2, 9, 9, 9, 9, 9],
                ip(CLIENT),
                tables::route::POD_GATEWAY_IP,
            ),
            DropReason::SpoofedMac,
        ),
        (
            "TTL 1",
            port(CLIENT),
            with_ip_checksum(edit(|g| g[22] = 1)),
            DropReason::TtlExceeded,
        ),
        (
            "unknown pod address",
            port(CLIENT),
            packets::udp(from_pod(CLIENT), c, (ip("10.244.1.99"), 1), b""),
            DropReason::NoRoute,
        ),
        (
            "unknown service address",
            port(CLIENT),
            packets::udp(from_pod(CLIENT), c, (ip("10.96.0.99"), 80), b""),
            DropReason::NoService,
        ),
        (
            "service CIDR address no service holds",
            port(CLIENT),
            packets::udp(from_pod(CLIENT), c, (ip("10.96.0.99"), 80), b""),
            DropReason::NoService,
        ),
        (
            "RST cannot start a flow",
            port(CLIENT),
            packets::tcp(from_pod(CLIENT), c, w, tcp::RST, b""),
            DropReason::TcpNoSyn,
        ),
        (
            "uplink frame for nothing we own",
            UPLINK_PORT,
            packets::tcp(from_router, (ip(OUTSIDE), 1), (n1().node_ip, 22), SYN, b""),
            DropReason::NotForSwitch,
        ),
        (
            "ARP on the uplink",
            UPLINK_PORT,
            packets::arp_request(ROUTER_MAC, ip(OUTSIDE), n1().node_ip),
            DropReason::NotForSwitch,
        ),
        (
            "VXLAN from an unknown node",
            UPLINK_PORT,
            packets::vxlan(
                from_router,
                ip("198.18.0.77"),
                n1().node_ip,
                1,
                example::VNI,
                &node2_inner,
            ),
            DropReason::UnknownVtep,
        ),
        (
            "VXLAN with another VNI",
            UPLINK_PORT,
            packets::vxlan(
                L2 {
                    src: n2().uplink_mac,
                    dst: n1().uplink_mac,
                },
                n2().node_ip,
                n1().node_ip,
                1,
                99,
                &node2_inner,
            ),
            DropReason::WrongVni,
        ),
        (
            "VXLAN without the I flag",
            UPLINK_PORT,
            {
                let mut f = from_node2(&node2_inner);
                f[42] = 0;
                f
            },
            DropReason::BadVxlan,
        ),
        (
            "VXLAN with a cut inner frame",
            UPLINK_PORT,
            {
                // Outer lengths consistent with the cut: only the inner
                // frame (10 bytes) is too short.
                let mut f = from_node2(&node2_inner)[..60].to_vec();
                f[16..18].copy_from_slice(&46u16.to_be_bytes());
                f[38..40].copy_from_slice(&26u16.to_be_bytes());
                with_ip_checksum(f)
            },
            DropReason::BadVxlan,
        ),
        (
            "VXLAN to another VTEP MAC",
            UPLINK_PORT,
            from_node2(&packets::tcp(
                L2 {
                    src: n2().vtep_mac,
                    dst: [2, 1, 1, 1, 1, 1],
                },
                (ip(WEB_2), 1),
                (ip(CLIENT), 2),
                SYN,
                b"",
            )),
            DropReason::WrongInnerMac,
        ),
        (
            "VXLAN with another node's pod inside",
            UPLINK_PORT,
            from_node2(&packets::tcp(
                inner_l2(),
                (ip(WEB_1), 1),
                (ip(CLIENT), 2),
                SYN,
                b"",
            )),
            DropReason::SpoofedIp,
        ),
        (
            "ICMP error about no known flow",
            port(CLIENT),
            packets::icmp_unreachable(from_pod(CLIENT), ip(CLIENT), ip(WEB_1), 3, &good()),
            DropReason::IcmpUnrelated,
        ),
    ];
    for (name, p, frame, reason) in cases {
        let mut node = node1();
        let out = node.send(p, &frame);
        assert!(out.is_empty(), "{name}: forwarded {out:?}");
        assert_eq!(
            node.drops(reason),
            1,
            "{name}: expected {reason:?}, counted {:?}",
            node.drop_summary()
        );
        assert_eq!(
            node.counters.total_drops(),
            1,
            "{name}: {:?}",
            node.drop_summary()
        );
    }
}

#[test]
fn icmp_errors_follow_their_flow_through_nat() {
    let (c, vip, backend) = ((ip(CLIENT), 40_010), (ip(WEB_VIP), 80), (ip(WEB_1), 8080));
    let mut node = node_with("node1", |s| web_endpoints(s, &[WEB_1]));
    let syn = packets::tcp(from_pod(CLIENT), c, vip, SYN, b"");
    let out = node.send(port(CLIENT), &syn);
    assert_eq!(out.len(), 1);
    // The backend refuses with a port unreachable quoting what it received.
    let error = packets::icmp_unreachable(from_pod(WEB_1), ip(WEB_1), ip(CLIENT), 3, &out[0].1);
    let out = node.send(port(WEB_1), &error);
    assert_eq!(out.len(), 1, "drops: {:?}", node.drop_summary());
    let f = decode(&out[0].1);
    assert_eq!(
        (f.src, f.dst, f.proto),
        (ip(WEB_VIP), ip(CLIENT), 1),
        "outer header looks like it came from the service"
    );
    // The quoted header now shows the packet the client sent: to the VIP.
    let q = &f.payload;
    assert_eq!(
        u32::from_be_bytes(q[12..16].try_into().unwrap()),
        ip(CLIENT)
    );
    assert_eq!(
        u32::from_be_bytes(q[16..20].try_into().unwrap()),
        ip(WEB_VIP)
    );
    assert_eq!(u16::from_be_bytes(q[22..24].try_into().unwrap()), vip.1);
    let qh = etherparse::Ipv4HeaderSlice::from_slice(&q[..20])
        .unwrap()
        .to_header();
    assert_eq!(
        qh.header_checksum,
        qh.calc_header_checksum(),
        "quoted header checksum"
    );
    let _ = backend;
}

// ---- session affinity -----------------------------------------------------------------

#[test]
fn session_affinity_keeps_a_client_on_one_backend_until_the_timeout() {
    let mut node = node_with("node1", |s| {
        s.services[0].service.affinity_timeout_s = Some(60)
    });
    let vip = (ip(WEB_VIP), 80);
    let backend_of = |node: &mut Node, sport: u16| -> (u32, u16) {
        let out = node.send(
            port(CLIENT),
            &packets::tcp(from_pod(CLIENT), (ip(CLIENT), sport), vip, SYN, b""),
        );
        assert_eq!(out.len(), 1, "{:?}", node.drop_summary());
        let f = decode(&out[0].1);
        match f.vxlan {
            Some((_, inner)) => (inner.dst, inner.dport),
            None => (f.dst, f.dport),
        }
    };
    let first = backend_of(&mut node, 20_000);
    for sport in 20_001..20_040 {
        assert_eq!(
            backend_of(&mut node, sport),
            first,
            "flow from port {sport} left the client's backend"
        );
    }
    // After the timeout, new flows are balanced again: over many of them,
    // more than one backend appears.
    node.now_ms += 61_000;
    let mut seen = std::collections::HashSet::new();
    for sport in 0..64u16 {
        node.now_ms += 61_000;
        seen.insert(backend_of(&mut node, 30_000 + sport));
    }
    assert!(seen.len() > 1, "affinity outlived its timeout: {seen:?}");

    // Without affinity the same client spreads over the backends.
    let mut plain = node1();
    let spread: std::collections::HashSet<_> = (0..64u16)
        .map(|p| backend_of(&mut plain, 40_000 + p))
        .collect();
    assert_eq!(
        spread.len(),
        3,
        "Maglev over web-1, web-2 and web-3: {spread:?}"
    );
}

// ---- wire compatibility ----------------------------------------------------------------

#[test]
fn vxlan_encapsulation_matches_linux_byte_for_byte() {
    // What Linux's vxlan device (dstport 4789, VNI 1, default options) sends
    // for the same inner frame: outer UDP checksum 0, TTL 64, no DF, IP ID 0
    // here (Linux's ID varies per packet, so it is masked below).
    let mut node = node1();
    let (c, w) = ((ip(CLIENT), 40_100), (ip(WEB_2), 8080));
    let out = node.send(
        port(CLIENT),
        &packets::tcp(from_pod(CLIENT), c, w, SYN, b"payload"),
    );
    assert_eq!(out.len(), 1);
    let ours = &out[0].1;
    let sport = u16::from_be_bytes([ours[34], ours[35]]);
    assert!(
        (32768..=60999).contains(&sport),
        "source port {sport} in Linux's range"
    );
    let mut inner = packets::tcp(
        L2 {
            src: n1().vtep_mac,
            dst: n2().vtep_mac,
        },
        c,
        w,
        SYN,
        b"payload",
    );
    // The inner packet was routed once: TTL 63, checksum adjusted.
    inner[22] = 63;
    let mut inner = with_ip_checksum(inner);
    inner[24..26].copy_from_slice(&out_ip_checksum(&ours[50..]));
    let linux = packets::vxlan(
        L2 {
            src: n1().uplink_mac,
            dst: n2().uplink_mac,
        },
        n1().node_ip,
        n2().node_ip,
        sport,
        example::VNI,
        &inner,
    );
    let mask = |f: &[u8]| {
        let mut f = f.to_vec();
        f[18..20].fill(0); // IP identification
        f[20] &= !0x40; // DF, which the builder may set
        f[24..26].fill(0); // header checksum (covers both)
        f
    };
    assert_eq!(
        mask(ours),
        mask(&linux),
        "\nours:  {ours:02x?}\nlinux: {linux:02x?}"
    );
    assert_eq!(ours[20] & 0x40, 0, "DF is not set, as Linux's default");
    assert_eq!(&ours[40..42], &[0, 0], "outer UDP checksum 0");
}

fn out_ip_checksum(inner_frame: &[u8]) -> [u8; 2] {
    [inner_frame[24], inner_frame[25]]
}

// ---- fairness ----------------------------------------------------------------

#[test]
fn a_flooding_port_does_not_starve_the_others() {
    // The client floods (10k frames queued); a frame from web-1 queued after
    // them is still forwarded in the first poll round: every port gets one
    // burst per round.
    let mut node = node1();
    let flood = packets::udp(from_pod(CLIENT), (ip(CLIENT), 1), (ip(WEB_2), 9), b"flood");
    for _ in 0..10_000 {
        node.inject(port(CLIENT), &flood);
    }
    node.inject(
        port(WEB_1),
        &packets::udp(from_pod(WEB_1), (ip(WEB_1), 2), (ip(CLIENT), 9), b"me too"),
    );
    let now = node.now_ms;
    node.worker.poll(now);
    let to_client = node.ports[&port(CLIENT)].take_sent();
    assert_eq!(to_client.len(), 1, "web-1's frame waited behind the flood");
    assert!(
        node.ports[&port(CLIENT)].pending() > 9_000,
        "the flood is served one burst per round"
    );
}
