//! Connections as Kubernetes and the kernel handle them, shown on the
//! pipeline without root: reply-tuple clashes resolved as `nf_nat_core`
//! resolves them, closed connections reopened with a fresh decision,
//! mid-stream pickup, fragments forwarded without reassembly, and rejects
//! like kube-proxy's.

// Test data is generated from counters on purpose: truncation is intended.
#![allow(clippy::cast_possible_truncation)]

use dataplane::counters::DropReason;
use proptest::prelude::*;
use tables::cluster::ClusterState;
use tables::model::{ServiceType, TrafficPolicy};
use tables::proto::Proto;
use testkit::example::{self, addrs::*, ROUTER_MAC, UPLINK_PORT};
use testkit::fixture::*;
use testkit::packets::{self, ip, tcp, L2};
use testkit::{decode, Node};

const ACK: u8 = tcp::ACK;
const FIN_ACK: u8 = tcp::FIN | tcp::ACK;
/// A second ClusterIP service whose only backend is web-1 (as the web
/// service's is, once restricted to it).
const WEB2_VIP: &str = "10.96.0.21";

/// The example with `web` restricted to web-1, and `web2` (another
/// ClusterIP, port 80) backed by web-1 too.
fn two_services_one_backend(s: &mut ClusterState) {
    web_endpoints(s, &[WEB_1]);
    let mut web2 = s.services[0].clone();
    web2.service.name = "web2".into();
    web2.service.kind = ServiceType::ClusterIp;
    web2.service.cluster_ips = vec![WEB2_VIP.parse().unwrap()];
    web2.service.load_balancer_ips.clear();
    web2.service.ports[0].node_port = None;
    s.services.push(web2);
}

/// Runs the steps of one connection on `node` without a fresh node.
fn run_on(node: &mut Node, name: &'static str, steps: Vec<Step>) {
    let case = Case {
        name,
        node: std::mem::replace(node, Node::new(example::snapshot("node1"))),
        steps,
    };
    *node = run_keep(case);
}

/// The TCP exchange that takes a connection from `c` through `vip` to
/// `backend` and back to TIME_WAIT (the client closes first).
fn open_and_close(c: (u32, u16), vip: (u32, u16), backend: (u32, u16)) -> Vec<Step> {
    let to_b = || Expect::Out(port(WEB_1), to_pod(WEB_1, c, backend));
    let to_c = || Expect::Out(port(CLIENT), to_pod(CLIENT, vip, c));
    let from_c = |f| packets::tcp(from_pod(CLIENT), c, vip, f, b"");
    let from_b = |f| packets::tcp(from_pod(WEB_1), backend, c, f, b"");
    vec![
        step(port(CLIENT), from_c(tcp::SYN), to_b()),
        step(port(WEB_1), from_b(tcp::SYN | ACK), to_c()),
        step(port(CLIENT), from_c(ACK), to_b()),
        step(port(CLIENT), from_c(FIN_ACK), to_b()),
        step(port(WEB_1), from_b(ACK), to_c()),
        step(port(WEB_1), from_b(FIN_ACK), to_c()),
        step(port(CLIENT), from_c(ACK), to_b()),
    ]
}

// ---- reply-tuple clashes -----------------------------------------------------

#[test]
fn a_syn_reusing_a_port_towards_another_service_replaces_a_closed_connection() {
    let mut node = node_with("node1", two_services_one_backend);
    let c = (ip(CLIENT), 40_100);
    let (vip1, vip2, b) = ((ip(WEB_VIP), 80), (ip(WEB2_VIP), 80), (ip(WEB_1), 8080));
    run_on(
        &mut node,
        "first connection, to TIME_WAIT",
        open_and_close(c, vip1, b),
    );
    // Linux lets the client reuse its port towards another destination.
    run_on(
        &mut node,
        "same port to the second service",
        vec![
            step(
                port(CLIENT),
                packets::tcp(from_pod(CLIENT), c, vip2, tcp::SYN, b""),
                Expect::Out(port(WEB_1), to_pod(WEB_1, c, b)),
            ),
            step(
                port(WEB_1),
                packets::tcp(from_pod(WEB_1), b, c, tcp::SYN | ACK, b""),
                Expect::Out(port(CLIENT), to_pod(CLIENT, vip2, c)),
            ),
        ],
    );
    assert_eq!(node.conntrack.len(), 1, "the closed entry was replaced");
}

#[test]
fn a_clash_with_a_live_connection_gets_another_source_port() {
    let mut node = node_with("node1", two_services_one_backend);
    let c = (ip(CLIENT), 40_200);
    let (vip1, vip2, b) = ((ip(WEB_VIP), 80), (ip(WEB2_VIP), 80), (ip(WEB_1), 8080));
    run_on(
        &mut node,
        "first connection, established",
        open_and_close(c, vip1, b).into_iter().take(3).collect(),
    );
    let out = node.send(
        port(CLIENT),
        &packets::tcp(from_pod(CLIENT), c, vip2, tcp::SYN, b""),
    );
    assert_eq!(out.len(), 1, "{:?}", node.drop_summary());
    let f = decode(&out[0].1);
    assert_eq!((f.src, f.dst, f.dport), (c.0, b.0, b.1));
    assert_ne!(
        f.sport, c.1,
        "the second flow needs a source port of its own"
    );
    let remapped = (c.0, f.sport);
    run_on(
        &mut node,
        "both flows keep their own rewrite",
        vec![
            step(
                port(WEB_1),
                packets::tcp(from_pod(WEB_1), b, remapped, tcp::SYN | ACK, b""),
                Expect::Out(port(CLIENT), to_pod(CLIENT, vip2, c)),
            ),
            step(
                port(WEB_1),
                packets::tcp(from_pod(WEB_1), b, c, ACK, b"old"),
                Expect::Out(port(CLIENT), to_pod(CLIENT, vip1, c)),
            ),
            step(
                port(CLIENT),
                packets::tcp(from_pod(CLIENT), c, vip2, ACK, b""),
                Expect::Out(port(WEB_1), to_pod(WEB_1, remapped, b)),
            ),
        ],
    );
}

#[test]
fn udp_from_one_port_to_two_services_gets_each_service_s_answers() {
    let mut node = node_with("node1", |s| {
        two_services_one_backend(s);
        for svc in &mut s.services {
            svc.service.ports[0].proto = tables::model::Proto::Udp;
        }
    });
    let c = (ip(CLIENT), 40_300);
    let (vip1, vip2, b) = ((ip(WEB_VIP), 80), (ip(WEB2_VIP), 80), (ip(WEB_1), 8080));
    let out = node.send(
        port(CLIENT),
        &packets::udp(from_pod(CLIENT), c, vip1, b"q1"),
    );
    assert_eq!(decode(&out[0].1).sport, c.1);
    let out = node.send(
        port(CLIENT),
        &packets::udp(from_pod(CLIENT), c, vip2, b"q2"),
    );
    assert_eq!(out.len(), 1, "{:?}", node.drop_summary());
    let second = decode(&out[0].1);
    assert_eq!((second.dst, second.payload.as_slice()), (b.0, &b"q2"[..]));
    assert_ne!(second.sport, c.1);
    // Each answer comes back from the service it answers.
    let out = node.send(port(WEB_1), &packets::udp(from_pod(WEB_1), b, c, b"a1"));
    let a1 = decode(&out[0].1);
    assert_eq!((a1.src, a1.sport, a1.dport), (vip1.0, 80, c.1));
    let back = (c.0, second.sport);
    let out = node.send(port(WEB_1), &packets::udp(from_pod(WEB_1), b, back, b"a2"));
    let a2 = decode(&out[0].1);
    assert_eq!((a2.src, a2.sport, a2.dst, a2.dport), (vip2.0, 80, c.0, c.1));
    assert_eq!(a2.payload, b"a2");
}

#[test]
fn a_client_out_of_source_ports_is_dropped_and_counted_never_misrouted() {
    let mut node = Node::with_capacity(
        example::snapshot_of(
            &{
                let mut s = example::state();
                two_services_one_backend(&mut s);
                s
            },
            "node1",
        ),
        1 << 17,
    );
    let (c_ip, b) = (ip(CLIENT), (ip(WEB_1), 8080));
    // Every reply tuple web-1:8080 -> client:P (P >= 1024) is taken.
    for p in 1024..=u16::MAX {
        let orig = tables::flow::FlowKey {
            src: c_ip,
            dst: ip(WEB_VIP),
            sport: p,
            dport: 80,
            proto: Proto::Tcp.number(),
        };
        let reply = tables::flow::FlowKey {
            src: b.0,
            dst: c_ip,
            sport: b.1,
            dport: p,
            proto: Proto::Tcp.number(),
        };
        node.conntrack.insert(orig, reply, ACK, 0, 0, 0).unwrap();
    }
    let out = node.send(
        port(CLIENT),
        &packets::tcp(
            from_pod(CLIENT),
            (c_ip, 50_000),
            (ip(WEB2_VIP), 80),
            tcp::SYN,
            b"",
        ),
    );
    assert!(
        out.is_empty(),
        "forwarded with another flow's rewrite: {out:?}"
    );
    assert_eq!(
        node.drops(DropReason::TupleClash),
        1,
        "{:?}",
        node.drop_summary()
    );
}

// ---- reopened connections -------------------------------------------------------

#[test]
fn a_syn_on_a_closed_connection_is_decided_afresh() {
    let mut state = example::state();
    web_endpoints(&mut state, &[WEB_1]);
    let mut node = Node::new(example::snapshot_of(&state, "node1"));
    let c = (ip(CLIENT), 40_400);
    let vip = (ip(WEB_VIP), 80);
    run_on(
        &mut node,
        "to TIME_WAIT",
        open_and_close(c, vip, (ip(WEB_1), 8080)),
    );
    // The service now has another backend (and another target port).
    let mut next = example::state();
    web_endpoints(&mut next, &[WEB_2]);
    next.services[0].endpoints[0].ports[0].1 = 9090;
    node.publisher.publish(example::snapshot_of(&next, "node1"));
    run_on(
        &mut node,
        "the same tuple again",
        vec![step(
            port(CLIENT),
            packets::tcp(from_pod(CLIENT), c, vip, tcp::SYN, b""),
            Expect::Out(UPLINK_PORT, to_node2(c, (ip(WEB_2), 9090))),
        )],
    );
    assert_eq!(node.conntrack.len(), 1);
}

// ---- mid-stream pickup ------------------------------------------------------------

#[test]
fn an_established_flow_the_table_lost_is_picked_up_with_the_same_backend() {
    let snapshot = || example::snapshot("node1");
    let c = (ip(CLIENT), 40_500);
    let vip = (ip(WEB_VIP), 80);
    let mut before = Node::new(snapshot());
    let out = before.send(
        port(CLIENT),
        &packets::tcp(from_pod(CLIENT), c, vip, tcp::SYN, b""),
    );
    let original = decode(&out[0].1);
    // A restarted agent (same hash seed, empty conntrack): the next data
    // segment goes where the SYN went, and the reply is translated back.
    let mut after = Node::new(snapshot());
    let out = after.send(
        port(CLIENT),
        &packets::tcp(from_pod(CLIENT), c, vip, ACK, b"more"),
    );
    assert_eq!(out.len(), 1, "{:?}", after.drop_summary());
    assert_eq!(out[0].0, before_port(&original), "same backend");
    assert_eq!(backend_of(&decode(&out[0].1)), backend_of(&original));
    let entries = after.conntrack.dump_at(0);
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].state, tables::conntrack::CtState::Established);
    assert_eq!(entries[0].reply.src, backend_of(&original));
}

/// The output port a frame of the first run went to, recomputed from where
/// its backend lives.
fn before_port(f: &testkit::Frame) -> tables::route::PortId {
    match &f.vxlan {
        Some(_) => UPLINK_PORT,
        None => port(WEB_1),
    }
}

fn backend_of(f: &testkit::Frame) -> u32 {
    match &f.vxlan {
        Some((_, inner)) => inner.dst,
        None => f.dst,
    }
}

#[test]
fn a_mid_stream_packet_policy_denies_creates_nothing() {
    let mut node = node1();
    let out = node.send(
        port(INTRUDER),
        &packets::tcp(
            from_pod(INTRUDER),
            (ip(INTRUDER), 4000),
            (ip(DB), 5432),
            ACK,
            b"x",
        ),
    );
    assert!(out.is_empty());
    assert_eq!(node.drops(DropReason::PolicyDeniedIngress), 1);
    assert!(node.conntrack.is_empty());
}

// ---- fragments -------------------------------------------------------------------

/// The IPv4 payloads of fragments, reassembled by offset (the test's own
/// reassembly: the switch never reassembles).
fn reassemble(frags: &[testkit::Frame], raw: &[Vec<u8>]) -> Vec<u8> {
    let mut parts: Vec<(usize, Vec<u8>)> = raw
        .iter()
        .zip(frags)
        .map(|(r, f)| {
            let ip = &r[14..];
            let offset = usize::from(u16::from_be_bytes([ip[6], ip[7]]) & 0x1fff) * 8;
            let len = usize::from(u16::from_be_bytes([ip[2], ip[3]])) - 20;
            assert_eq!(f.payload.len(), len);
            (offset, ip[20..20 + len].to_vec())
        })
        .collect();
    parts.sort_by_key(|p| p.0);
    let mut out = Vec::new();
    for (offset, bytes) in parts {
        assert_eq!(offset, out.len(), "fragments overlap or leave a gap");
        out.extend(bytes);
    }
    out
}

/// Whether a UDP datagram's checksum verifies over its pseudo-header.
fn udp_checksum_ok(src: u32, dst: u32, udp: &[u8]) -> bool {
    let mut sum: u32 = 0;
    let mut add = |b: &[u8]| {
        for w in b.chunks(2) {
            sum += u32::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)]));
        }
    };
    add(&src.to_be_bytes());
    add(&dst.to_be_bytes());
    add(&[0, 17]);
    add(&(udp.len() as u16).to_be_bytes());
    add(udp);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum == 0xffff
}

#[test]
fn a_fragmented_datagram_through_a_cluster_ip_follows_its_first_fragment() {
    let mut node = node_with("node1", |s| {
        web_endpoints(s, &[WEB_2]);
        s.services[0].service.ports[0].proto = tables::model::Proto::Udp;
    });
    let c = (ip(CLIENT), 41_000);
    let payload: Vec<u8> = (0..4000u32).map(|i| (i * 7) as u8).collect();
    let whole = packets::udp(from_pod(CLIENT), c, (ip(WEB_VIP), 80), &payload);
    // Pod MTU 1450: 1424 bytes of payload per fragment.
    let frags = packets::fragment(&whole, 0x5151, 1424);
    assert_eq!(frags.len(), 3);
    let mut inner = Vec::new();
    let mut raw = Vec::new();
    for f in &frags {
        let out = node.send(port(CLIENT), f);
        assert_eq!(out.len(), 1, "{:?}", node.drop_summary());
        assert_eq!(out[0].0, UPLINK_PORT);
        let outer = decode(&out[0].1);
        let (_, frame) = outer.vxlan.expect("encapsulated to node2");
        assert_eq!((frame.src, frame.dst, frame.ttl), (c.0, ip(WEB_2), 63));
        raw.push(out[0].1[50..].to_vec());
        inner.push(*frame);
    }
    let datagram = reassemble(&inner, &raw);
    assert_eq!(&datagram[8..], &payload[..]);
    assert_eq!(
        u16::from_be_bytes([datagram[2], datagram[3]]),
        8080,
        "DNAT in the first"
    );
    assert!(
        udp_checksum_ok(c.0, ip(WEB_2), &datagram),
        "L4 checksum after NAT"
    );
    assert_eq!(node.counters.fragments_followed.get(), 2);
    assert_eq!(node.drops(DropReason::FragmentNoFirst), 0);
}

#[test]
fn fragments_arriving_in_one_batch_follow_the_first_of_the_batch() {
    let mut node = node1();
    let c = (ip(CLIENT), 41_050);
    let whole = packets::udp(from_pod(CLIENT), c, (ip(WEB_1), 8080), &[7; 4000]);
    let frags = packets::fragment(&whole, 0x6161, 1424);
    for f in &frags {
        node.inject(port(CLIENT), f);
    }
    node.run();
    let out = node.take_all();
    assert_eq!(out.len(), frags.len(), "{:?}", node.drop_summary());
}

#[test]
fn a_fragmented_ping_between_pods_passes_whole() {
    let mut node = node1();
    let mut ping = packets::ping(from_pod(CLIENT), ip(CLIENT), ip(WEB_1), 9, 1);
    // Grow the echo payload to 3000 bytes, fixing lengths and checksums.
    ping.truncate(42);
    ping.extend((0..3000u32).map(|i| i as u8));
    let len = (ping.len() - 14) as u16;
    ping[16..18].copy_from_slice(&len.to_be_bytes());
    packets::refill_ip_checksum(&mut ping);
    ping[36] = 0;
    ping[37] = 0;
    let mut sum = 0u32;
    for w in ping[34..].chunks(2) {
        sum += u32::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    ping[36..38].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    for f in packets::fragment(&ping, 77, 1424) {
        let out = node.send(port(CLIENT), &f);
        assert_eq!(out.len(), 1, "{:?}", node.drop_summary());
        assert_eq!(out[0].0, port(WEB_1));
        let (sent, got) = (&f[14..], &out[0].1[14..]);
        assert_eq!(got.len(), sent.len());
        assert_eq!(got[8], sent[8] - 1, "TTL");
        assert_eq!(
            (&got[..8], &got[12..]),
            (&sent[..8], &sent[12..]),
            "unchanged but the TTL"
        );
    }
}

#[test]
fn stray_overlapping_and_duplicate_fragments_are_dropped_with_their_reasons() {
    let mut node = node1();
    let c = (ip(CLIENT), 41_100);
    let whole = packets::udp(from_pod(CLIENT), c, (ip(WEB_1), 8080), &[5; 3000]);
    let frags = packets::fragment(&whole, 0x7777, 1424);
    let send = |node: &mut Node, f: &[u8]| node.send(port(CLIENT), f).len();
    assert_eq!(send(&mut node, &frags[1]), 0, "before its first");
    assert_eq!(node.drops(DropReason::FragmentNoFirst), 1);
    assert_eq!(send(&mut node, &frags[0]), 1);
    assert_eq!(send(&mut node, &frags[0]), 0, "a second first");
    assert_eq!(send(&mut node, &frags[1]), 1);
    assert_eq!(send(&mut node, &frags[1]), 0, "a duplicate");
    assert_eq!(node.drops(DropReason::FragmentOverlap), 2);
    assert_eq!(send(&mut node, &frags[2]), 1);
    assert_eq!(
        send(&mut node, &frags[2]),
        0,
        "after the datagram is complete"
    );
    assert_eq!(node.drops(DropReason::FragmentNoFirst), 2);
}

#[test]
fn a_flood_of_first_fragments_fills_a_bounded_table_and_is_counted() {
    let mut node = node1();
    let c = (ip(CLIENT), 41_200);
    let whole = packets::udp(from_pod(CLIENT), c, (ip(WEB_1), 8080), &[1; 2000]);
    let mut sent = 0;
    for id in 0..4000u16 {
        let first = packets::fragment(&whole, id, 1424).remove(0);
        sent += node.send(port(CLIENT), &first).len();
    }
    let full = node.drops(DropReason::FragmentTableFull);
    assert!(full > 0, "the table never filled");
    assert_eq!(sent as u64 + full, 4000);
    assert!(sent <= 1024, "more datagrams tracked than the table holds");
    // After the timeout the table takes new datagrams again.
    node.now_ms += tables::fragments::DEFAULT_TIMEOUT_MS;
    let first = packets::fragment(&whole, 9999, 1424).remove(0);
    assert_eq!(node.send(port(CLIENT), &first).len(), 1);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// Random trains of fragments (split anywhere, reordered, repeated,
    /// some lost) never panic, every one is forwarded or dropped with a
    /// fragment reason, and what is forwarded never overlaps.
    #[test]
    fn random_fragment_trains_are_forwarded_or_counted(
        len in 100usize..6000,
        size in 1usize..200,
        order in proptest::collection::vec(0usize..64, 0..40),
    ) {
        let mut node = node1();
        let c = (ip(CLIENT), 41_300);
        let whole = packets::udp(from_pod(CLIENT), c, (ip(WEB_1), 8080), &vec![3; len]);
        let frags = packets::fragment(&whole, 4242, size * 8);
        // Forwarded byte ranges of the datagram in flight; once it is
        // complete, a first fragment again starts a new one.
        let total = whole.len() - 34;
        let mut seen: Vec<(usize, usize)> = Vec::new();
        let (mut sent, mut forwarded) = (0u64, 0u64);
        let train: Vec<&Vec<u8>> = std::iter::once(&frags[0])
            .chain(order.iter().map(|&i| &frags[i % frags.len()]))
            .collect();
        for f in train {
            sent += 1;
            for (_, out) in node.send(port(CLIENT), f) {
                let ip = &out[14..];
                let start = usize::from(u16::from_be_bytes([ip[6], ip[7]]) & 0x1fff) * 8;
                let end = start + usize::from(u16::from_be_bytes([ip[2], ip[3]])) - 20;
                prop_assert!(seen.iter().all(|&(a, b)| end <= a || b <= start), "overlap");
                seen.push((start, end));
                forwarded += 1;
                if seen.iter().map(|(a, b)| b - a).sum::<usize>() == total {
                    seen.clear();
                }
            }
        }
        let fragment_drops: u64 = [
            DropReason::FragmentNoFirst,
            DropReason::FragmentOverlap,
            DropReason::FragmentGaps,
        ]
        .iter()
        .map(|r| node.drops(*r))
        .sum();
        prop_assert_eq!(node.counters.total_drops(), fragment_drops, "{:?}", node.drop_summary());
        prop_assert_eq!(forwarded + fragment_drops, sent);
    }
}

// ---- rejects ------------------------------------------------------------------------

fn tcp_flags(frame: &[u8]) -> u8 {
    frame[14 + 20 + 13]
}

#[test]
fn a_service_without_endpoints_rejects_tcp_with_a_reset_and_udp_with_port_unreachable() {
    let mut node = node_with("node1", |s| s.services[0].endpoints.clear());
    let c = (ip(CLIENT), 42_000);
    let vip = (ip(WEB_VIP), 80);
    let syn = packets::tcp_seq(from_pod(CLIENT), c, vip, tcp::SYN, 1000, 0, b"");
    let out = node.send(port(CLIENT), &syn);
    assert_eq!(out.len(), 1, "{:?}", node.drop_summary());
    assert_eq!(out[0].0, port(CLIENT), "back to the client");
    let rst = decode(&out[0].1);
    assert_eq!(
        (rst.src, rst.sport, rst.dst, rst.dport),
        (vip.0, vip.1, c.0, c.1)
    );
    assert_eq!(
        (rst.src_mac, rst.dst_mac),
        (example::GATEWAY_MAC, example::pod_mac(ip(CLIENT).into()))
    );
    assert_eq!(tcp_flags(&out[0].1), tcp::RST | tcp::ACK);
    let ack = u32::from_be_bytes(out[0].1[42..46].try_into().unwrap());
    assert_eq!(ack, 1001, "acknowledges the SYN");
    assert_eq!(node.drops(DropReason::NoEndpoints), 1);
    assert_eq!(node.counters.rejects.get(), 1);
    // A RST to it is dropped, never answered.
    let out = node.send(
        port(CLIENT),
        &packets::tcp(from_pod(CLIENT), c, vip, tcp::RST, b""),
    );
    assert!(out.is_empty());
    // UDP: ICMP port unreachable from the service address, quoting the
    // datagram.
    let mut udp_node = node_with("node1", |s| {
        s.services[0].endpoints.clear();
        s.services[0].service.ports[0].proto = tables::model::Proto::Udp;
    });
    let dgram = packets::udp(from_pod(CLIENT), c, vip, b"hello?");
    let out = udp_node.send(port(CLIENT), &dgram);
    assert_eq!(out.len(), 1, "{:?}", udp_node.drop_summary());
    let icmp = decode(&out[0].1);
    assert_eq!((icmp.proto, icmp.src, icmp.dst), (1, vip.0, c.0));
    assert_eq!((out[0].1[34], out[0].1[35]), (3, 3), "port unreachable");
    assert_eq!(&out[0].1[42..], &dgram[14..], "the datagram is quoted");
}

#[test]
fn undeclared_cluster_ip_ports_are_rejected_and_unallocated_service_addresses_dropped() {
    let mut node = node1();
    let c = (ip(CLIENT), 42_100);
    let out = node.send(
        port(CLIENT),
        &packets::tcp(from_pod(CLIENT), c, (ip(WEB_VIP), 81), tcp::SYN, b""),
    );
    assert_eq!(out.len(), 1);
    assert_eq!(tcp_flags(&out[0].1), tcp::RST | tcp::ACK);
    assert_eq!(node.drops(DropReason::NoServicePort), 1);
    let ping = packets::ping(from_pod(CLIENT), ip(CLIENT), ip(WEB_VIP), 1, 1);
    let out = node.send(port(CLIENT), &ping);
    assert_eq!(
        (out[0].1[34], out[0].1[35]),
        (3, 3),
        "a ping to a cluster IP too"
    );
    let out = node.send(
        port(CLIENT),
        &packets::tcp(from_pod(CLIENT), c, (ip("10.96.0.99"), 80), tcp::SYN, b""),
    );
    assert!(out.is_empty());
    assert_eq!(node.drops(DropReason::NoService), 1);
}

#[test]
fn node_ports_without_endpoints_reject_out_of_the_uplink_and_local_policy_drops() {
    let from_router = L2 {
        src: ROUTER_MAC,
        dst: n1().uplink_mac,
    };
    let outside = (ip(OUTSIDE), 5000);
    let np = (n1().node_ip, WEB_NODE_PORT);
    let mut node = node_with("node1", |s| s.services[0].endpoints.clear());
    let out = node.send(
        UPLINK_PORT,
        &packets::tcp(from_router, outside, np, tcp::SYN, b""),
    );
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, UPLINK_PORT);
    let rst = decode(&out[0].1);
    assert_eq!((rst.src_mac, rst.dst_mac), (n1().uplink_mac, ROUTER_MAC));
    assert_eq!((rst.src, rst.sport, rst.dst), (np.0, np.1, outside.0));
    // Endpoints elsewhere but none here with externalTrafficPolicy Local:
    // dropped (an external load balancer's health check sends it away).
    let mut local = node_with("node1", |s| {
        s.services[0].service.external_traffic_policy = TrafficPolicy::Local;
        web_endpoints(s, &[WEB_2]);
    });
    assert!(local
        .send(
            UPLINK_PORT,
            &packets::tcp(from_router, outside, np, tcp::SYN, b"")
        )
        .is_empty());
    assert_eq!(local.drops(DropReason::NoLocalEndpoints), 1);
}
