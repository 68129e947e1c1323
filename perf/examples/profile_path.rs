//! Runs one established-flow path in a loop, for profilers (perf,
//! callgrind): `cargo run --release -p perf --example profile_path -- decap`.

// Test data is generated from counters on purpose: truncation is intended.
#![allow(clippy::cast_possible_truncation)]

use std::sync::Arc;

use dataplane::counters::Counters;
use dataplane::frame::{Desc, FramePool, BATCH};
use dataplane::pipeline::{Pipeline, Shared};
use dataplane::port::PortKind;
use fixtures::example::{self, addrs::*, GATEWAY_MAC, UPLINK_PORT};
use fixtures::packets::{self, ip, tcp, L2};
use tables::snapshot::Publisher;

fn main() {
    let path = std::env::args().nth(1).unwrap_or_else(|| "encap".into());
    let rounds: u32 = std::env::args()
        .nth(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000);
    let state = perf::scaled(1, 10);
    let publisher = Publisher::new(example::snapshot_of(&state, "node1"));
    let counters = Arc::new(Counters::new(64));
    let mut pipeline = Pipeline::new(&Shared::new(1 << 16, 1024, 1024), counters.clone(), 7);
    let mut pool = FramePool::new(256);
    let client_port = example::attachments(&state, "node1")
        .iter()
        .find(|p| p.ip == ip(CLIENT))
        .map_or(2, |p| p.port);
    let pod = L2 {
        src: example::pod_mac(CLIENT.parse().unwrap()),
        dst: GATEWAY_MAC,
    };
    let (n1, n2) = (example::node_config("node1"), example::node_config("node2"));
    let to_vip = |flags| -> Vec<Vec<u8>> {
        (0..BATCH as u16)
            .map(|i| {
                packets::tcp(
                    pod,
                    (ip(CLIENT), 10_000 + i),
                    (ip(WEB_VIP), 80),
                    flags,
                    &[0; 6],
                )
            })
            .collect()
    };
    let replies: Vec<Vec<u8>> = (0..BATCH as u16)
        .map(|i| {
            let inner = packets::tcp(
                L2 {
                    src: n2.vtep_mac,
                    dst: n1.vtep_mac,
                },
                (ip(WEB_2), 8080),
                (ip(CLIENT), 10_000 + i),
                tcp::ACK,
                &[0; 6],
            );
            packets::vxlan(
                L2 {
                    src: n2.uplink_mac,
                    dst: n1.uplink_mac,
                },
                n2.node_ip,
                n1.node_ip,
                40_000 + i,
                example::VNI,
                &inner,
            )
        })
        .collect();
    let mut run = |frames: &[Vec<u8>], port, kind| {
        let mut descs = [Desc::default(); BATCH];
        for (d, f) in descs.iter_mut().zip(frames) {
            *d = pool.alloc_with(f).expect("room");
        }
        let guard = publisher.pin();
        let n = pipeline.process(publisher.load(&guard), &mut pool, port, kind, &descs, 5);
        for m in &pipeline.metas()[..n] {
            pool.free(m.desc.addr);
        }
    };
    run(&to_vip(tcp::SYN), client_port, PortKind::Pod);
    let (frames, port, kind) = match path.as_str() {
        "decap" => (replies, UPLINK_PORT, PortKind::Uplink),
        _ => (to_vip(tcp::ACK), client_port, PortKind::Pod),
    };
    let start = std::time::Instant::now();
    for _ in 0..rounds {
        run(&frames, port, kind);
    }
    let ns = start.elapsed().as_nanos() as f64 / f64::from(rounds) / BATCH as f64;
    println!(
        "{path}: {ns:.1} ns/packet, {} forwarded, {} dropped",
        counters.forwarded.get(),
        counters.total_drops()
    );
}
