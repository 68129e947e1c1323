//! Table-level costs: conntrack insert rate and lookups at 1M entries and
//! its memory per entry; service lookup and Maglev pick at 100k services;
//! policy lookup at 10 and 10k rules; route lookup.

// Test data is generated from counters on purpose: truncation is intended.
#![allow(clippy::cast_possible_truncation)]

use std::hint::black_box;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};
use tables::proto::Proto;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use fixtures::example;
use tables::conntrack::Conntrack;
use tables::flow::{fmix64, FlowKey};

const MILLION: u32 = 1 << 20;

fn key(i: u32) -> FlowKey {
    let h = fmix64(u64::from(i));
    FlowKey {
        src: 0x0af4_0000 | (i >> 12),
        dst: 0x0a60_0000 | (i & 0xfff),
        sport: (h >> 16) as u16,
        dport: 80,
        proto: Proto::Tcp.number(),
    }
}

fn conntrack(c: &mut Criterion) {
    let mut g = c.benchmark_group("conntrack");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    // Insert a million flows into a table sized for them (with 25% slack).
    g.throughput(Throughput::Elements(u64::from(MILLION)));
    g.bench_function("insert_1M", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let ct = Conntrack::new(MILLION + MILLION / 4);
                let start = Instant::now();
                for i in 0..MILLION {
                    let k = key(i);
                    black_box(ct.insert(k, k.reversed(), 0x02, 0, 0, 1).is_ok());
                }
                total += start.elapsed();
            }
            total
        })
    });
    let ct = Conntrack::new(MILLION + MILLION / 4);
    let mut failed = 0;
    for i in 0..MILLION {
        let k = key(i);
        failed += u32::from(ct.insert(k, k.reversed(), 0x02, 0, 0, 1).is_err());
    }
    eprintln!(
        "conntrack: {} entries ({} refused), {} bytes in all, {:.1} bytes per entry of capacity",
        ct.len(),
        failed,
        ct.memory_bytes(),
        ct.memory_bytes() as f64 / f64::from(ct.capacity())
    );
    g.throughput(Throughput::Elements(1024));
    g.bench_function("lookup_hit_at_1M", |b| {
        b.iter(|| {
            for i in (0..MILLION).step_by(1024) {
                black_box(ct.lookup(&key(i)).is_some());
            }
        })
    });
    g.finish();
}

fn services_and_policy(c: &mut Criterion) {
    let mut g = c.benchmark_group("lookup");
    g.sample_size(20)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2));
    g.throughput(Throughput::Elements(1024));
    for services in [1usize, 100_000] {
        let snap = example::snapshot_of(&perf::scaled(services, 0), "node1");
        let vips: Vec<u32> = (0..1024u32)
            .map(|i| u32::from(Ipv4Addr::new(10, 100, 0, 0)) + (i * 97) % services.max(1) as u32)
            .collect();
        g.bench_with_input(
            BenchmarkId::new("service_and_maglev", services),
            &vips,
            |b, vips| {
                b.iter(|| {
                    for (i, &vip) in vips.iter().enumerate() {
                        let f = snap.services.lookup(vip, 80, Proto::Tcp.number());
                        black_box(f.and_then(|f| f.backends.pick(fmix64(i as u64))));
                    }
                })
            },
        );
    }
    for rules in [10usize, 10_000] {
        let snap = example::snapshot_of(&perf::scaled(1, rules), "node1");
        let (client, web1) = (
            u32::from(Ipv4Addr::new(10, 244, 1, 11)),
            u32::from(Ipv4Addr::new(10, 244, 1, 10)),
        );
        g.bench_function(BenchmarkId::new("policy_ingress_and_egress", rules), |b| {
            b.iter(|| {
                for p in 0..1024u16 {
                    black_box(snap.policy.allows_ingress(web1, client, 6, 8080 + (p & 1)));
                    black_box(snap.policy.allows_egress(client, web1, 6, 8080));
                }
            })
        });
    }
    let snap = example::snapshot("node1");
    g.bench_function("route", |b| {
        b.iter(|| {
            for i in 0..1024u32 {
                black_box(snap.routes.route(0x0af4_0000 | (i & 0x3ff)));
            }
        })
    });
    g.finish();
}

criterion_group!(benches, conntrack, services_and_policy);
criterion_main!(benches);
