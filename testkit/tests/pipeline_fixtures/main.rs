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

mod refused;

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

/// `f` with its IPv4 header checksum made right again.
fn with_ip_checksum(mut f: Vec<u8>) -> Vec<u8> {
    packets::refill_ip_checksum(&mut f);
    f
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
