//! Per-packet cost of the pipeline (ns/packet) on batches of 64 frames:
//! established flows (the full path: conntrack hit, NAT, policy epoch check,
//! routing, VXLAN encap; and the overlay reply: decap, conntrack hit,
//! reverse NAT, delivery), new flows (service balancing, policy, conntrack
//! insert), at 1, 1k and 100k services and 10 and 10k policy rules.
//! Each iteration copies the batch into frames first, as a port's receive
//! does; `copy_only` measures that part alone.

// Test data is generated from counters on purpose: truncation is intended.
#![allow(clippy::cast_possible_truncation)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tables::proto::Proto;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use dataplane::counters::Counters;
use dataplane::frame::{Desc, FramePool, BATCH};
use dataplane::pipeline::{parse_frame, Pipeline, Shared, Verdict};
use dataplane::port::PortKind;
use fixtures::example::{self, addrs::*, GATEWAY_MAC, UPLINK_PORT};
use fixtures::packets::{self, ip, tcp, L2};
use tables::cluster::ClusterState;
use tables::route::PortId;
use tables::snapshot::Publisher;

struct Bench {
    publisher: Publisher,
    pipeline: Pipeline,
    pool: FramePool,
    descs: [Desc; BATCH],
}

impl Bench {
    fn new(state: &ClusterState, node: &str, ct_capacity: u32) -> Bench {
        let shared = Shared::new(ct_capacity, 1 << 16, 4096);
        let pipeline = Pipeline::new(&shared, Arc::new(Counters::new(64)), 7);
        Bench {
            publisher: Publisher::new(example::snapshot_of(state, node)),
            pipeline,
            pool: FramePool::new(256),
            descs: [Desc::default(); BATCH],
        }
    }

    /// Copies `frames` into the pool, runs them, frees them; returns how
    /// many were forwarded.
    fn run(&mut self, port: PortId, kind: PortKind, frames: &[Vec<u8>], now_ms: u64) -> usize {
        for (d, f) in self.descs.iter_mut().zip(frames) {
            *d = self.pool.alloc_with(f).expect("pool sized for a batch");
        }
        let n = frames.len().min(BATCH);
        let guard = self.publisher.pin();
        let snap = self.publisher.load(&guard);
        let done =
            self.pipeline
                .process(snap, &mut self.pool, port, kind, &self.descs[..n], now_ms);
        let mut forwarded = 0;
        for m in &self.pipeline.metas()[..done] {
            forwarded += usize::from(matches!(m.verdict, Verdict::Tx(_)));
            self.pool.free(m.desc.addr);
        }
        forwarded
    }
}

fn client_port() -> PortId {
    let state = example::state();
    example::attachments(&state, "node1")
        .iter()
        .find(|p| p.ip == ip(CLIENT))
        .map(|p| p.port)
        .unwrap_or(2)
}

fn pod_l2() -> L2 {
    L2 {
        src: example::pod_mac(CLIENT.parse().unwrap()),
        dst: GATEWAY_MAC,
    }
}

/// 64 established flows client -> web ClusterIP (backend web-2 on node2).
fn to_service(flags: u8, base: u16) -> Vec<Vec<u8>> {
    (0..BATCH as u16)
        .map(|i| {
            packets::tcp(
                pod_l2(),
                (ip(CLIENT), base + i),
                (ip(WEB_VIP), 80),
                flags,
                &[0u8; 6],
            )
        })
        .collect()
}

/// Their replies from web-2, arriving through the overlay.
fn replies_from_node2(base: u16) -> Vec<Vec<u8>> {
    let (n1, n2) = (example::node_config("node1"), example::node_config("node2"));
    (0..BATCH as u16)
        .map(|i| {
            let inner = packets::tcp(
                L2 {
                    src: n2.vtep_mac,
                    dst: n1.vtep_mac,
                },
                (ip(WEB_2), 8080),
                (ip(CLIENT), base + i),
                tcp::ACK,
                &[0u8; 6],
            );
            packets::vxlan(
                L2 {
                    src: n2.uplink_mac,
                    dst: n1.uplink_mac,
                },
                n2.node_ip,
                n1.node_ip,
                40000 + i,
                example::VNI,
                &inner,
            )
        })
        .collect()
}

fn quick(c: &mut Criterion) -> criterion::BenchmarkGroup<'_, criterion::measurement::WallTime> {
    let mut g = c.benchmark_group("pipeline");
    g.sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    g.throughput(Throughput::Elements(BATCH as u64));
    g
}

fn established(c: &mut Criterion) {
    let mut g = quick(c);
    let port = client_port();
    for (services, rules) in [(1, 10), (1_000, 10), (100_000, 10), (1, 10_000)] {
        let state = perf::scaled(services, rules);
        let label = format!("{services}svc_{rules}rules");
        let mut b = Bench::new(&state, "node1", 1 << 16);
        let (syn, ack) = (to_service(tcp::SYN, 10_000), to_service(tcp::ACK, 10_000));
        assert_eq!(b.run(port, PortKind::Pod, &syn, 1), BATCH, "flows set up");
        b.run(
            UPLINK_PORT,
            PortKind::Uplink,
            &replies_from_node2(10_000),
            2,
        );
        g.bench_with_input(
            BenchmarkId::new("established_encap", &label),
            &ack,
            |bn, frames| bn.iter(|| black_box(b.run(port, PortKind::Pod, frames, 3))),
        );
        let replies = replies_from_node2(10_000);
        g.bench_with_input(
            BenchmarkId::new("established_decap", &label),
            &replies,
            |bn, frames| bn.iter(|| black_box(b.run(UPLINK_PORT, PortKind::Uplink, frames, 3))),
        );
    }
    g.finish();
}

fn new_flows(c: &mut Criterion) {
    let mut g = quick(c);
    let port = client_port();
    for (services, rules) in [(1, 10), (1_000, 10), (100_000, 10), (1, 10_000)] {
        let state = perf::scaled(services, rules);
        let label = format!("{services}svc_{rules}rules");
        // 900 batches of distinct flows (one client, distinct ports). Between
        // runs over them the clock jumps past the SYN_SENT timeout and the
        // table is reaped (not timed), so every timed packet starts a flow.
        let batches: Vec<Vec<Vec<u8>>> = (0..900u32)
            .map(|k| {
                (0..BATCH as u32)
                    .map(|i| {
                        let sport = 1024 + (k * BATCH as u32 + i) as u16;
                        packets::tcp(
                            pod_l2(),
                            (ip(CLIENT), sport),
                            (ip(WEB_VIP), 80),
                            tcp::SYN,
                            &[],
                        )
                    })
                    .collect()
            })
            .collect();
        let mut b = Bench::new(&state, "node1", 1 << 17);
        let mut clock = 1u64;
        g.bench_function(BenchmarkId::new("new_flow", &label), |bn| {
            bn.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                let mut done = 0u64;
                while done < iters {
                    clock += 1_000_000;
                    b.pipeline
                        .conntrack
                        .reap(clock, b.pipeline.conntrack.capacity());
                    let chunk = (iters - done).min(batches.len() as u64) as usize;
                    let start = Instant::now();
                    for batch in &batches[..chunk] {
                        black_box(b.run(port, PortKind::Pod, batch, clock));
                    }
                    total += start.elapsed();
                    done += chunk as u64;
                }
                total
            })
        });
        assert_eq!(
            b.pipeline.counters.total_drops(),
            0,
            "new flows were dropped"
        );
    }
    g.finish();
}

fn parts(c: &mut Criterion) {
    let mut g = quick(c);
    let frames = to_service(tcp::ACK, 10_000);
    let mut pool = FramePool::new(256);
    let mut descs = [Desc::default(); BATCH];
    g.bench_function("copy_only", |bn| {
        bn.iter(|| {
            for (d, f) in descs.iter_mut().zip(&frames) {
                *d = pool.alloc_with(f).expect("room");
            }
            for d in &descs {
                pool.free(black_box(d.addr));
            }
        })
    });
    // NAT alone: DNAT of a TCP segment (IP and TCP checksums updated).
    let from = tables::flow::FlowKey {
        src: ip(CLIENT),
        dst: ip(WEB_VIP),
        sport: 10_000,
        dport: 80,
        proto: Proto::Tcp.number(),
    };
    let to = tables::flow::FlowKey {
        dst: ip(WEB_2),
        dport: 8080,
        ..from
    };
    let mut nat_frames = frames.clone();
    g.bench_function("nat_rewrite", |bn| {
        bn.iter(|| {
            for f in nat_frames.iter_mut() {
                dataplane::pipeline::nat::rewrite(black_box(f), 14, 34, &from, &to);
                dataplane::pipeline::nat::rewrite(black_box(f), 14, 34, &to, &from);
            }
        })
    });
    // Encapsulation alone (headers emitted in the headroom).
    let snap = example::snapshot("node1");
    let vtep = snap.routes.vteps()[0].clone();
    g.bench_function("vxlan_encap", |bn| {
        bn.iter(|| {
            for (d, f) in descs.iter_mut().zip(&frames) {
                *d = pool.alloc_with(f).expect("room");
            }
            for d in &descs {
                let outer =
                    dataplane::pipeline::encapsulate(&mut pool, *d, &snap.node, &vtep, 12345);
                pool.free(black_box(outer.map_or(d.addr, |o| o.addr)));
            }
        })
    });
    g.bench_function("parse", |bn| {
        bn.iter(|| {
            for f in &frames {
                black_box(parse_frame(black_box(f)).is_ok());
            }
        })
    });
    g.finish();
}

criterion_group!(benches, parts, established, new_flows);
criterion_main!(benches);
