//! `control-bench`: the control plane at cluster scale. A generated cluster
//! (`perf::cluster`: nodes, namespaces, pods, services, EndpointSlices,
//! NetworkPolicies as `k8s-openapi` objects) goes through the reconciler as
//! the Kubernetes source would hand it over; everything is timed on this
//! thread, objects generated beforehand.
//!
//! - **Initial load**: `apply(Replace { every kind })` + `build(None)`,
//!   `--runs` times (min/median/max), with memory from /proc/self/status:
//!   the input objects' RSS, and per run the peak RSS growth over the
//!   pre-load RSS (VmHWM reset through /proc/self/clear_refs just before
//!   the load) and the RSS still held after it.
//! - **One endpoint change**: with the built snapshot in a `Publisher`,
//!   `--changes` single-endpoint changes (one endpoint added, removed, or
//!   its readiness flipped, in the EndpointSlice of a random service), each
//!   timed from handing `SourceEvent::Apply(EndpointSlice)` to `apply` to
//!   `publish` returning (a worker's next `load` sees it): p50/p99/max, and
//!   the medians of apply, build and publish. The same at other service
//!   counts (pods, policies and nodes fixed) shows how the cost scales, next
//!   to the cost of copying and dropping the whole service table (what
//!   `ServiceTable::update` does for any change).
//! - **Other events** at the main scale, `--repeat` times each: a pod on
//!   this node relabelled (policy recompiled), a remote pod a policy peer
//!   selector sees relabelled (recompiled), a pod no policy sees relabelled
//!   (policy shared), a node added (routes rebuilt).
//!
//! `--quick` runs a tenth of the cluster (1k services) with fewer changes:
//! a smoke run. `--json FILE` writes every figure.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agent::reconcile::Reconciler;
use k8s_openapi::api::core::v1 as k8s;
use perf::cluster::{self, Cluster, Scale};
use perf::measure::{mib, ms, thread_cpu, Memory, Rng, Stats};
use sources::{Kind, Object, SourceEvent};
use tables::maglev::Maglev;
use tables::route::NodeConfig;
use tables::snapshot::{Publisher, Snapshot};

mod events;

use events::{other_events, EventRun};

const NODE: &str = "node1";

/// Command-line options.
struct Options {
    quick: bool,
    runs: usize,
    changes: usize,
    repeat: usize,
    json: Option<String>,
    /// Service counts of the scaling series (the main scale's included).
    scaling: Vec<usize>,
}

fn value(name: &str) -> Option<String> {
    std::env::args().skip_while(|a| a != name).nth(1)
}

fn number(name: &str, default: usize) -> usize {
    value(name).map_or(default, |v| {
        v.parse()
            .unwrap_or_else(|_| panic!("{name} takes a number, not {v:?}"))
    })
}

impl Options {
    fn parse() -> Options {
        if std::env::args().any(|a| a == "--help" || a == "-h") {
            println!(
                "control-bench [--quick] [--runs N] [--changes N] [--repeat N] \
                 [--scaling N,N,...] [--json FILE]"
            );
            std::process::exit(0);
        }
        let quick = std::env::args().any(|a| a == "--quick");
        let default_scaling = if quick {
            "100,1000"
        } else {
            "1000,10000,50000"
        };
        let scaling = value("--scaling")
            .unwrap_or_else(|| default_scaling.to_owned())
            .split(',')
            .map(|s| {
                s.trim()
                    .parse()
                    .unwrap_or_else(|_| panic!("--scaling takes service counts, not {s:?}"))
            })
            .collect();
        Options {
            quick,
            runs: number("--runs", if quick { 1 } else { 3 }).max(1),
            changes: number("--changes", if quick { 200 } else { 1000 }).max(1),
            repeat: number("--repeat", 5).max(1),
            json: value("--json"),
            scaling,
        }
    }
}

fn node_config() -> NodeConfig {
    fixtures::example::node_config(NODE)
}

fn underlay_mac(ip: Ipv4Addr) -> [u8; 6] {
    fixtures::example::uplink_mac(ip)
}

/// The figures of one initial load.
#[derive(Clone, Copy, Debug)]
struct Load {
    apply: Duration,
    build: Duration,
    /// VmHWM after the load minus VmRSS before it, bytes.
    peak_growth: u64,
    /// VmRSS after the load minus before it, bytes.
    retained: u64,
}

impl Load {
    fn total(&self) -> Duration {
        self.apply + self.build
    }
}

/// Loads the whole cluster into a new reconciler: `apply(Replace)` of every
/// object, then `build(None)`.
fn load(cluster: &Cluster) -> (Reconciler, Snapshot, Load) {
    let objects = cluster.objects();
    let attached = cluster.attachments(NODE, fixtures::example::FIRST_POD_PORT);
    let before = Memory::settle();
    let t0 = Instant::now();
    let mut reconciler = Reconciler::new(node_config(), attached);
    reconciler.apply(SourceEvent::Replace {
        kinds: Kind::ALL.to_vec(),
        objects,
    });
    let t1 = Instant::now();
    let snapshot = reconciler.build(None, &underlay_mac);
    let t2 = Instant::now();
    let after = Memory::now();
    let warnings = reconciler.take_warnings();
    assert!(
        warnings.is_empty(),
        "the generated cluster gave warnings: {warnings:?}"
    );
    let figures = Load {
        apply: t1 - t0,
        build: t2 - t1,
        peak_growth: after.hwm.saturating_sub(before.rss),
        retained: after.rss.saturating_sub(before.rss),
    };
    (reconciler, snapshot, figures)
}

/// One event's times.
#[derive(Clone, Copy, Debug)]
struct Timing {
    apply: Duration,
    build: Duration,
    publish: Duration,
    /// This thread's CPU time over the three.
    cpu: Duration,
}

/// Times one event from handing it to `apply` to `publish` returning: the
/// next `load` of any worker sees the new snapshot.
fn timed(r: &mut Reconciler, publisher: &Publisher, event: SourceEvent) -> Timing {
    let cpu0 = thread_cpu();
    let t0 = Instant::now();
    r.apply(event);
    let t1 = Instant::now();
    let next = publisher.read(|prev| r.build(Some(prev), &underlay_mac));
    let t2 = Instant::now();
    publisher.publish(next);
    let t3 = Instant::now();
    let cpu = thread_cpu().saturating_sub(cpu0);
    Timing {
        apply: t1 - t0,
        build: t2 - t1,
        publish: t3 - t2,
        cpu,
    }
}

/// Per-event timings, total (wall and CPU) and by step.
#[derive(Default)]
struct Series {
    total: Vec<Duration>,
    cpu: Vec<Duration>,
    apply: Vec<Duration>,
    build: Vec<Duration>,
    publish: Vec<Duration>,
}

impl Series {
    fn push(&mut self, t: Timing) {
        self.total.push(t.apply + t.build + t.publish);
        self.cpu.push(t.cpu);
        self.apply.push(t.apply);
        self.build.push(t.build);
        self.publish.push(t.publish);
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "samples": self.total.len(),
            "wall": Stats::of(&self.total).json(),
            "thread_cpu": Stats::of(&self.cpu).json(),
            "apply_p50_ms": ms(Stats::of(&self.apply).p50),
            "build_p50_ms": ms(Stats::of(&self.build).p50),
            "publish_p50_ms": ms(Stats::of(&self.publish).p50),
        })
    }
}

/// The endpoint changes at one scale.
struct Changes {
    /// Every change.
    all: Series,
    /// The changes to the services with 8 endpoints (one slice).
    small: Series,
    /// The changes to the big services (208 endpoints in 3 slices, 2-3
    /// ports: each change rebuilds Maglev tables of ~42k slots).
    big: Series,
    /// Median time to copy the whole service table (`update` with no
    /// changes) and to drop such a copy.
    table_copy: Duration,
    table_drop: Duration,
}

/// What one scale measured.
struct EndpointRun {
    services: usize,
    endpoints: usize,
    frontends: usize,
    /// The fastest initial load.
    initial: Duration,
    changes: Changes,
}

impl EndpointRun {
    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "services": self.services,
            "endpoints": self.endpoints,
            "frontends": self.frontends,
            "initial_load_ms": ms(self.initial),
            "change": self.changes.all.json(),
            "change_to_8_endpoint_services": self.changes.small.json(),
            "change_to_208_endpoint_services": self.changes.big.json(),
            "service_table_copy_ms": ms(self.changes.table_copy),
            "service_table_drop_ms": ms(self.changes.table_drop),
        })
    }
}

/// `count` single-endpoint changes, each checked through the publisher as
/// a worker would see it, then the cost of copying the service table.
fn endpoint_changes(
    scale: &Scale,
    cluster: &mut Cluster,
    r: &mut Reconciler,
    publisher: &Publisher,
    count: usize,
) -> Changes {
    let by_service = cluster.slices_by_service(scale.services);
    let (policy, routes) = publisher.read(|s| (s.policy.clone(), s.routes.clone()));
    let mut rng = Rng(0x5eed);
    let mut fresh = 0;
    let (mut all, mut small, mut big) = (Series::default(), Series::default(), Series::default());
    for _ in 0..count {
        let s = rng.below(scale.services);
        let slices = &by_service[s];
        let slice = &mut cluster.slices[slices[rng.below(slices.len())]];
        let added = cluster::change_one_endpoint(slice, &mut rng, &mut fresh);
        let event = SourceEvent::Apply(Object::EndpointSlice(slice.clone()));
        let generation = publisher.generation();
        let timing = timed(r, publisher, event);
        all.push(timing);
        if slices.len() > 1 {
            big.push(timing);
        } else {
            small.push(timing);
        }
        assert_eq!(publisher.generation(), generation + 1);
        // A worker's next load sees the new endpoint (not checked for the
        // services with internalTrafficPolicy Local: it is on node2).
        if let Some(ip) = added.filter(|_| s % 50 != 1) {
            let seen = publisher.read(|snap| {
                snap.services
                    .lookup(u32::from(cluster::cluster_ip(s)), 80, 6)
                    .is_some_and(|f| f.backends.contains(u32::from(ip), 8080))
            });
            assert!(seen, "service {s}: endpoint {ip} not visible after publish");
        }
    }
    publisher.read(|s| {
        assert!(
            Arc::ptr_eq(&s.policy, &policy),
            "endpoint changes left policy alone"
        );
        assert!(
            Arc::ptr_eq(&s.routes, &routes),
            "endpoint changes left routes alone"
        );
    });
    let node_ip = Ipv4Addr::from(node_config().node_ip);
    let (mut copy, mut drop) = (Vec::new(), Vec::new());
    for _ in 0..21 {
        let t0 = Instant::now();
        let table = publisher.read(|s| s.services.update(&[], NODE, &[node_ip]));
        let t1 = Instant::now();
        std::mem::drop(table);
        copy.push(t1 - t0);
        drop.push(t1.elapsed());
    }
    Changes {
        all,
        small,
        big,
        table_copy: Stats::of(&copy).p50,
        table_drop: Stats::of(&drop).p50,
    }
}

/// What one Maglev table costs to build and to rebuild with one more
/// backend, at a backend count.
struct MaglevCost {
    backends: usize,
    slots: usize,
    build: Duration,
    rebuild: Duration,
}

/// Maglev costs at the backend counts of the generated services, median of
/// 11 runs each.
fn maglev_costs() -> Vec<MaglevCost> {
    [8_usize, 208, 1000]
        .into_iter()
        .map(|n| {
            // Backend keys as `Backend::key` packs them: IP << 16 | port.
            let keys: Vec<u64> = (0..=n as u64)
                .map(|k| ((0x0af4_0000 + k) << 16) | 8080)
                .collect();
            let (mut build, mut rebuild) = (Vec::new(), Vec::new());
            let mut slots = 0;
            for _ in 0..11 {
                let t0 = Instant::now();
                let table = Maglev::build(&keys[..n]).expect("backends");
                build.push(t0.elapsed());
                let t1 = Instant::now();
                let next = Maglev::rebuild(&table, &keys[..n], &keys);
                rebuild.push(t1.elapsed());
                slots = next.map_or(0, |m| m.memory_bytes() / 2);
            }
            MaglevCost {
                backends: n,
                slots,
                build: Stats::of(&build).p50,
                rebuild: Stats::of(&rebuild).p50,
            }
        })
        .collect()
}

/// What only the main scale measures.
struct MainRun {
    objects: usize,
    generate: Duration,
    /// RSS of one copy of the objects (what `Replace` hands over and the
    /// reconciler keeps), bytes.
    objects_rss: u64,
    loads: Vec<Load>,
    events: Vec<EventRun>,
}

fn describe(scale: &Scale) -> String {
    format!(
        "{} services, {} endpoints, {} pods ({} on {NODE}), {} policies, {} nodes, {} namespaces",
        scale.services,
        scale.endpoints(),
        scale.pods,
        scale.pods.div_ceil(scale.nodes),
        scale.policies,
        scale.nodes,
        scale.namespaces
    )
}

/// Generates `scale`, loads it (`--runs` times at the main scale, once
/// otherwise) and runs the endpoint changes, and at the main scale the
/// other events, on the last load.
fn measure_scale(scale: Scale, opts: &Options, main: bool) -> (EndpointRun, Option<MainRun>) {
    let t0 = Instant::now();
    let mut cluster = Cluster::generate(scale);
    let generate = t0.elapsed();
    let with_cluster = Memory::settle();
    let copy = cluster.objects();
    let objects_rss = Memory::settle().rss.saturating_sub(with_cluster.rss);
    std::mem::drop(copy);

    let mut loads = Vec::new();
    let mut last = None;
    for _ in 0..if main { opts.runs } else { 1 } {
        // The previous load's reconciler and snapshot go first.
        std::mem::drop(last.take());
        let (r, snapshot, figures) = load(&cluster);
        loads.push(figures);
        last = Some((r, snapshot));
    }
    let (mut r, snapshot) = last.expect("one load at least");
    let frontends = snapshot.services.len();
    let publisher = Publisher::new(snapshot);
    let changes = endpoint_changes(&scale, &mut cluster, &mut r, &publisher, opts.changes);
    let endpoint = EndpointRun {
        services: scale.services,
        endpoints: scale.endpoints(),
        frontends,
        initial: loads.iter().map(Load::total).min().unwrap_or_default(),
        changes,
    };
    let total = Stats::of(&endpoint.changes.all.total);
    println!(
        "  {:>6} services: initial load {:.0} ms; one endpoint change p50 {:.3} ms, p99 {:.3} ms",
        scale.services,
        ms(endpoint.initial),
        ms(total.p50),
        ms(total.p99),
    );
    if !main {
        return (endpoint, None);
    }
    let events = other_events(&scale, &cluster, &mut r, &publisher, opts.repeat);
    let main = MainRun {
        objects: cluster.len(),
        generate,
        objects_rss,
        loads,
        events,
    };
    (endpoint, Some(main))
}

fn spread(samples: impl Iterator<Item = Duration>) -> String {
    let mut v: Vec<Duration> = samples.collect();
    v.sort_unstable();
    let at = |i: usize| ms(v.get(i).copied().unwrap_or_default());
    format!(
        "{:.0} / {:.0} / {:.0} ms",
        at(0),
        at(v.len() / 2),
        at(v.len().saturating_sub(1))
    )
}

fn print_main(scale: &Scale, m: &MainRun, endpoint: &EndpointRun) {
    println!();
    println!("Initial load, {} runs (min / median / max):", m.loads.len());
    println!("| what | figure |");
    println!("|---|---|");
    println!(
        "| objects generated (not timed below) | {} in {:.0} ms; one copy {:.0} MiB RSS |",
        m.objects,
        ms(m.generate),
        mib(m.objects_rss)
    );
    println!(
        "| apply(Replace) + build(None) | {} |",
        spread(m.loads.iter().map(Load::total))
    );
    println!(
        "| of which apply | {} |",
        spread(m.loads.iter().map(|l| l.apply))
    );
    println!(
        "| of which build | {} |",
        spread(m.loads.iter().map(|l| l.build))
    );
    let peak = m.loads.iter().map(|l| l.peak_growth).max().unwrap_or(0);
    let retained = m.loads.iter().map(|l| l.retained).max().unwrap_or(0);
    println!(
        "| peak RSS growth during the load (max of runs) | {:.0} MiB |",
        mib(peak)
    );
    println!(
        "| RSS retained after it (reconciler + snapshot) | {:.0} MiB |",
        mib(retained)
    );
    println!(
        "| frontends in the service table | {} |",
        endpoint.frontends
    );
    println!();
    println!(
        "Other events at {} services, {} each, apply -> publish returned:",
        scale.services,
        m.events.first().map_or(0, |e| e.series.total.len())
    );
    println!("| event | rebuilt | min | median | max | CPU median |");
    println!("|---|---|---|---|---|---|");
    for e in &m.events {
        let s = Stats::of(&e.series.total);
        println!(
            "| {} | {} | {:.3} ms | {:.3} ms | {:.3} ms | {:.3} ms |",
            e.what,
            e.rebuilt,
            ms(s.min),
            ms(s.p50),
            ms(s.max),
            ms(Stats::of(&e.series.cpu).p50),
        );
    }
}

fn print_scaling(runs: &[EndpointRun], changes: usize, maglev: &[MaglevCost]) {
    println!();
    println!(
        "One endpoint change, apply -> publish returned, wall time ({changes} changes per row):"
    );
    println!(
        "| services | endpoints | frontends | p50 | p99 | max | apply p50 | build p50 | publish p50 | service table copy | copy dropped |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for r in runs {
        let c = &r.changes;
        let s = Stats::of(&c.all.total);
        println!(
            "| {} | {} | {} | {:.3} ms | {:.3} ms | {:.3} ms | {:.3} ms | {:.3} ms | {:.3} ms | {:.3} ms | {:.3} ms |",
            r.services,
            r.endpoints,
            r.frontends,
            ms(s.p50),
            ms(s.p99),
            ms(s.max),
            ms(Stats::of(&c.all.apply).p50),
            ms(Stats::of(&c.all.build).p50),
            ms(Stats::of(&c.all.publish).p50),
            ms(c.table_copy),
            ms(c.table_drop),
        );
    }
    println!();
    println!("The same changes: this thread's CPU time; wall time by service size:");
    println!(
        "| services | CPU p50 | CPU p99 | 8-endpoint services: changes, p50, p99 | 208-endpoint services: changes, p50, p99 |"
    );
    println!("|---|---|---|---|---|");
    for r in runs {
        let cpu = Stats::of(&r.changes.all.cpu);
        let by_size = |s: &Series| {
            let t = Stats::of(&s.total);
            format!(
                "{}, {:.3} ms, {:.3} ms",
                s.total.len(),
                ms(t.p50),
                ms(t.p99)
            )
        };
        println!(
            "| {} | {:.3} ms | {:.3} ms | {} | {} |",
            r.services,
            ms(cpu.p50),
            ms(cpu.p99),
            by_size(&r.changes.small),
            by_size(&r.changes.big),
        );
    }
    println!();
    println!("One Maglev table (per service port and set), median of 11:");
    println!("| backends | slots | build | rebuild with one more backend |");
    println!("|---|---|---|---|");
    for m in maglev {
        println!(
            "| {} | {} | {:.3} ms | {:.3} ms |",
            m.backends,
            m.slots,
            ms(m.build),
            ms(m.rebuild)
        );
    }
}

fn json(
    scale: &Scale,
    opts: &Options,
    m: &MainRun,
    runs: &[EndpointRun],
    maglev: &[MaglevCost],
) -> serde_json::Value {
    let loads: Vec<serde_json::Value> = m
        .loads
        .iter()
        .map(|l| {
            serde_json::json!({
                "total_ms": ms(l.total()), "apply_ms": ms(l.apply), "build_ms": ms(l.build),
                "peak_rss_growth_bytes": l.peak_growth, "rss_retained_bytes": l.retained,
            })
        })
        .collect();
    let events: Vec<serde_json::Value> = m
        .events
        .iter()
        .map(|e| serde_json::json!({"event": e.what, "rebuilt": e.rebuilt, "timing": e.series.json()}))
        .collect();
    serde_json::json!({
        "scale": {
            "nodes": scale.nodes, "namespaces": scale.namespaces, "pods": scale.pods,
            "services": scale.services, "endpoints": scale.endpoints(),
            "policies": scale.policies,
        },
        "quick": opts.quick,
        "unix_time_s": std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        "objects": m.objects,
        "generate_ms": ms(m.generate),
        "objects_rss_bytes": m.objects_rss,
        "initial_load": loads,
        "other_events": events,
        "endpoint_change": runs.iter().map(EndpointRun::json).collect::<Vec<_>>(),
        "maglev": maglev.iter().map(|m| serde_json::json!({
            "backends": m.backends, "slots": m.slots,
            "build_ms": ms(m.build), "rebuild_one_more_ms": ms(m.rebuild),
        })).collect::<Vec<_>>(),
    })
}

fn main() {
    let opts = Options::parse();
    let scale = if opts.quick {
        Scale::QUICK
    } else {
        Scale::FULL
    };
    println!("control-bench: {}", describe(&scale));
    // The main scale first, on a fresh heap; then the scaling series.
    let (endpoint, m) = measure_scale(scale, &opts, true);
    let m = m.expect("the main scale measures everything");
    let mut runs = vec![endpoint];
    for &services in opts.scaling.iter().filter(|&&n| n != scale.services) {
        runs.push(measure_scale(scale.with_services(services), &opts, false).0);
    }
    runs.sort_by_key(|r| r.services);
    let main_endpoint = runs
        .iter()
        .find(|r| r.services == scale.services)
        .expect("the main scale's row");
    print_main(&scale, &m, main_endpoint);
    let maglev = maglev_costs();
    print_scaling(&runs, opts.changes, &maglev);
    if let Some(path) = &opts.json {
        let text =
            serde_json::to_string_pretty(&json(&scale, &opts, &m, &runs, &maglev)).expect("json");
        std::fs::write(path, text + "\n").unwrap_or_else(|e| panic!("writing {path}: {e}"));
        println!("\nwrote {path}");
    }
}
