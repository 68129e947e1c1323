//! Any byte sequence as a frame, on any kind of port: a counted drop or a
//! forward, never a panic, never a leaked frame.

// Test data is generated from counters on purpose: truncation is intended.
#![allow(clippy::cast_possible_truncation)]

use proptest::prelude::*;
use tables::route::PortId;
use testkit::example::{self, addrs::*, GATEWAY_MAC, HOST_PORT, UPLINK_PORT};
use testkit::packets::{self, ip, tcp, L2};
use testkit::Node;

fn client_port() -> PortId {
    let state = example::state();
    example::attachments(&state, "node1")
        .iter()
        .find(|p| p.ip == ip(CLIENT))
        .unwrap()
        .port
}

/// Valid frames of every kind the switch handles, to mutate.
fn seeds() -> Vec<(PortId, Vec<u8>)> {
    let n1 = example::node_config("node1");
    let n2 = example::node_config("node2");
    let pod = L2 {
        src: example::pod_mac(CLIENT.parse().unwrap()),
        dst: GATEWAY_MAC,
    };
    let c = (ip(CLIENT), 1000);
    let inner = packets::tcp(
        L2 {
            src: n2.vtep_mac,
            dst: n1.vtep_mac,
        },
        (ip(WEB_2), 8080),
        c,
        tcp::SYN | tcp::ACK,
        b"x",
    );
    let outer = L2 {
        src: n2.uplink_mac,
        dst: n1.uplink_mac,
    };
    vec![
        (
            client_port(),
            packets::tcp(pod, c, (ip(WEB_VIP), 80), tcp::SYN, b"hello"),
        ),
        (
            client_port(),
            packets::udp(pod, c, (ip(WEB_2), 53), b"query"),
        ),
        (
            client_port(),
            packets::ping(pod, ip(CLIENT), ip(WEB_1), 7, 1),
        ),
        (
            client_port(),
            packets::arp_request(pod.src, ip(CLIENT), tables::route::POD_GATEWAY_IP),
        ),
        (
            client_port(),
            packets::icmp_unreachable(
                pod,
                ip(CLIENT),
                ip(WEB_1),
                3,
                &packets::udp(pod, c, (ip(WEB_1), 9), b""),
            ),
        ),
        (
            UPLINK_PORT,
            packets::vxlan(outer, n2.node_ip, n1.node_ip, 40000, example::VNI, &inner),
        ),
        (
            UPLINK_PORT,
            packets::tcp(
                L2 {
                    src: example::ROUTER_MAC,
                    dst: n1.uplink_mac,
                },
                (ip(OUTSIDE), 9),
                (n1.node_ip, WEB_NODE_PORT),
                tcp::SYN,
                b"",
            ),
        ),
        (
            HOST_PORT,
            packets::tcp(
                L2 {
                    src: example::HOST_MAC,
                    dst: GATEWAY_MAC,
                },
                (n1.node_ip, 5),
                (ip(WEB_1), 8080),
                tcp::SYN,
                b"",
            ),
        ),
    ]
}

fn ports() -> Vec<PortId> {
    vec![client_port(), UPLINK_PORT, HOST_PORT]
}

fn check_accounting(node: &Node, injected: u64) {
    let c = &node.counters;
    let rx: u64 = (0..256)
        .filter_map(|p| c.port(p))
        .map(|p| p.rx_packets.get())
        .sum();
    assert_eq!(rx, injected, "every frame received");
    // A rejected packet is a drop (its reason) and a forwarded answer.
    assert_eq!(
        c.forwarded.get() + c.total_drops() - c.rejects.get(),
        injected,
        "every frame forwarded or counted as dropped: {:?}",
        node.drop_summary()
    );
    let pool = node.worker.pool();
    assert_eq!(pool.free_count(), pool.total(), "no frame leaked");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(frames in proptest::collection::vec((0usize..3, proptest::collection::vec(any::<u8>(), 0..200)), 1..40)) {
        let mut node = Node::example("node1");
        let ports = ports();
        for (p, f) in &frames {
            node.inject(ports[*p], f);
        }
        node.run();
        node.take_all();
        check_accounting(&node, frames.len() as u64);
    }

    #[test]
    fn mutated_valid_frames_never_panic(
        picks in proptest::collection::vec((any::<prop::sample::Index>(), proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6), 0usize..3, any::<bool>()), 1..40)
    ) {
        let mut node = Node::example("node1");
        let seeds = seeds();
        let ports = ports();
        for (seed, edits, port, truncate) in &picks {
            let (home, mut frame) = seeds[seed.index(seeds.len())].clone();
            for (at, byte) in edits {
                let i = at.index(frame.len());
                frame[i] = *byte;
            }
            if *truncate {
                let cut = edits[0].0.index(frame.len() + 1);
                frame.truncate(cut);
            }
            // Mostly on the frame's own kind of port, sometimes on another.
            let p = if *port == 0 { home } else { ports[*port] };
            node.inject(p, &frame);
        }
        node.run();
        node.take_all();
        check_accounting(&node, picks.len() as u64);
    }
}
