//! Cluster DNS costs at the scale (`Scale::FULL`: 10k services,
//! 100k endpoints, 10k pods): building the zone, which the agent's control
//! thread does after each Service, EndpointSlice or Pod change (never on
//! the packet path), and answering one query from it (an A record, an
//! NXDOMAIN with its SOA, a PTR).

use std::hint::black_box;
use std::time::Duration;

use agent::dns::server::{handle, Counters, Outcome, Transport};
use agent::dns::Zone;
use criterion::{criterion_group, criterion_main, Criterion};
use perf::cluster::{Cluster, Scale};

/// A standard query for `name` of type `qtype` (RFC 1035 4.1), RD set.
fn query(name: &str, qtype: u16) -> Vec<u8> {
    let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.trim_end_matches('.').split('.') {
        q.push(u8::try_from(label.len()).expect("a label under 64 bytes"));
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&1u16.to_be_bytes());
    q
}

const A: u16 = 1;
const PTR: u16 = 12;

fn dns(c: &mut Criterion) {
    let cluster = Cluster::generate(Scale::FULL);
    let objects = cluster.objects();
    let mut g = c.benchmark_group("dns_zone");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(10));
    g.bench_function("build_10k_services_100k_endpoints_10k_pods", |b| {
        b.iter(|| black_box(Zone::build("cluster.local", &objects)));
    });
    g.finish();

    let zone = Zone::build("cluster.local", &objects);
    let svc = &cluster.services[cluster.services.len() / 2];
    let name = format!(
        "{}.{}.svc.cluster.local",
        svc.metadata.name.as_deref().unwrap_or_default(),
        svc.metadata.namespace.as_deref().unwrap_or_default()
    );
    let ip: std::net::Ipv4Addr = svc
        .spec
        .as_ref()
        .and_then(|s| s.cluster_ip.as_deref())
        .and_then(|ip| ip.parse().ok())
        .expect("a generated service has a cluster IP");
    let [a, b, c2, d] = ip.octets();
    let queries = [
        ("a_service", query(&name, A)),
        ("nxdomain", query("nosuch.default.svc.cluster.local", A)),
        (
            "ptr_service",
            query(&format!("{d}.{c2}.{b}.{a}.in-addr.arpa"), PTR),
        ),
    ];
    let counters = Counters::default();
    let mut g = c.benchmark_group("dns_query");
    g.measurement_time(Duration::from_secs(3));
    for (what, bytes) in &queries {
        // Each must be answered from the zone, not dropped or refused.
        let Outcome::Reply(reply) = handle(&zone, bytes, Transport::Udp, false, &counters) else {
            panic!("{what}: no reply");
        };
        assert_eq!(
            reply[3] & 0x0f,
            if *what == "nxdomain" { 3 } else { 0 },
            "{what}"
        );
        g.bench_function(*what, |b| {
            b.iter(|| {
                black_box(handle(
                    &zone,
                    black_box(bytes),
                    Transport::Udp,
                    false,
                    &counters,
                ))
            });
        });
    }
    g.finish();
}

criterion_group!(benches, dns);
criterion_main!(benches);
