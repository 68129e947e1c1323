//! `podswitch selftest`: the example cluster's node1 switch, fed a generated
//! traffic mix on every core through in-memory ports, then a report of
//! packets per second per core and of every verdict and drop reason.
//!
//! The mix: pod to pod on the node, pod to a pod on node2 (VXLAN encap),
//! pod to a ClusterIP, an outside client to a NodePort, node2's pods back
//! through the overlay (decap), an intruder the database's policy denies,
//! ARP for the gateway, and malformed frames of every class.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Instant;

use dataplane::counters::{Counters, DropReason};
use dataplane::pipeline::{Pipeline, Shared};
use dataplane::port::{MemPort, PortKind};
use dataplane::worker::Worker;
use tables::flow::random_seed;
use tables::route::{PortId, POD_GATEWAY_IP};
use tables::snapshot::Publisher;

use crate::example::{self, addrs, GATEWAY_MAC};
use crate::packets::{self, ip, tcp, L2};

/// Options of a self-test run.
#[derive(Clone, Debug)]
pub struct Options {
    /// Frames each core pushes through its switch.
    pub packets_per_core: u64,
    /// Cores to run on (0 = all).
    pub cores: usize,
    /// Distinct client ports per traffic class (conntrack entries).
    pub flows: u16,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            packets_per_core: 2_000_000,
            cores: 0,
            flows: 256,
        }
    }
}

/// One core's result.
#[derive(Clone, Debug)]
pub struct CoreResult {
    pub core: usize,
    pub packets: u64,
    pub seconds: f64,
}

/// The outcome of a run.
pub struct Report {
    pub cores: Vec<CoreResult>,
    pub counters: Vec<Arc<Counters>>,
    pub conntrack_entries: u32,
}

/// A class of generated traffic: which port it enters and its frames.
struct Class {
    port: PortId,
    frames: Vec<Vec<u8>>,
}

fn pod_l2(pod: &str) -> L2 {
    L2 {
        src: example::pod_mac(pod.parse().unwrap_or(Ipv4Addr::UNSPECIFIED)),
        dst: GATEWAY_MAC,
    }
}

fn port_of(pod: &str) -> PortId {
    let state = example::state();
    example::attachments(&state, "node1")
        .iter()
        .find(|p| p.ip == ip(pod))
        .map_or(example::UPLINK, |p| p.port)
}

/// The generated traffic mix, per input port.
fn traffic(flows: u16) -> Vec<Class> {
    use addrs::*;
    let node1 = example::node_config("node1");
    let node2 = example::node_config("node2");
    let mut client = Vec::new();
    let mut uplink = Vec::new();
    let mut intruder = Vec::new();
    let l2 = pod_l2(CLIENT);
    for i in 0..flows {
        let sport = 10_000 + i;
        let ack = tcp::ACK | tcp::PSH;
        client.push(packets::tcp(
            l2,
            (ip(CLIENT), sport),
            (ip(WEB_1), 8080),
            ack,
            &[0; 18],
        ));
        client.push(packets::tcp(
            l2,
            (ip(CLIENT), sport),
            (ip(WEB_2), 8080),
            ack,
            &[0; 18],
        ));
        client.push(packets::tcp(
            l2,
            (ip(CLIENT), sport),
            (ip(WEB_VIP), 80),
            ack,
            &[0; 18],
        ));
        let outside = L2 {
            src: example::ROUTER_MAC,
            dst: node1.uplink_mac,
        };
        uplink.push(packets::tcp(
            outside,
            (ip(OUTSIDE), sport),
            (node1.node_ip, WEB_NODE_PORT),
            ack,
            &[0; 18],
        ));
        let inner_l2 = L2 {
            src: node2.vtep_mac,
            dst: node1.vtep_mac,
        };
        let inner = packets::tcp(
            inner_l2,
            (ip(WEB_2), 8080),
            (ip(CLIENT), 20_000 + i),
            ack,
            &[0; 18],
        );
        let outer = L2 {
            src: node2.uplink_mac,
            dst: node1.uplink_mac,
        };
        uplink.push(packets::vxlan(
            outer,
            node2.node_ip,
            node1.node_ip,
            40_000 + i,
            example::VNI,
            &inner,
        ));
        intruder.push(packets::tcp(
            pod_l2(INTRUDER),
            (ip(INTRUDER), sport),
            (ip(DB), 5432),
            tcp::SYN,
            &[],
        ));
    }
    client.push(packets::arp_request(l2.src, ip(CLIENT), POD_GATEWAY_IP));
    client.extend(malformed(l2));
    vec![
        Class {
            port: port_of(CLIENT),
            frames: client,
        },
        Class {
            port: example::UPLINK,
            frames: uplink,
        },
        Class {
            port: port_of(INTRUDER),
            frames: intruder,
        },
    ]
}

/// One frame of each malformed class, from a pod.
fn malformed(l2: L2) -> Vec<Vec<u8>> {
    let good = packets::udp(
        l2,
        (ip(addrs::CLIENT), 5000),
        (ip(addrs::WEB_1), 53),
        &[1, 2, 3, 4],
    );
    let mut bad_csum = good.clone();
    bad_csum[14 + 10] ^= 0xff;
    let mut fragment = good.clone();
    // A later fragment (offset 1480) whose first never came.
    fragment[14 + 6] = 0x00;
    fragment[14 + 7] = 0xb9;
    packets::refill_ip_checksum(&mut fragment);
    let mut bad_len = good.clone();
    bad_len[14 + 2] = 0xff; // total length past the frame
    packets::refill_ip_checksum(&mut bad_len);
    // IPv6, as every pod sends (router and neighbour solicitations).
    let mut ethertype = good.clone();
    ethertype[12..14].copy_from_slice(&[0x86, 0xdd]);
    vec![good[..10].to_vec(), bad_csum, fragment, bad_len, ethertype]
}

/// Runs the self-test.
pub fn run(opts: &Options) -> Report {
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    let count = if opts.cores == 0 {
        cores.len().max(1)
    } else {
        opts.cores
    };
    let publisher = Arc::new(Publisher::new(example::snapshot("node1")));
    let shared = Shared::new(1 << 18, 1 << 14, 4096);
    let seed = random_seed();
    let state = example::state();
    let sinks: Vec<PortId> = example::attachments(&state, "node1")
        .iter()
        .map(|p| p.port)
        .chain([example::HOST])
        .collect();
    let classes = traffic(opts.flows);
    let handles: Vec<_> = (0..count)
        .map(|i| {
            let core = cores.get(i % cores.len().max(1)).copied();
            let (publisher, shared) = (publisher.clone(), shared.clone());
            let counters = Arc::new(Counters::new(64));
            let per_class = opts.packets_per_core / classes.len() as u64;
            let mut worker = Worker::new(
                4096,
                64,
                publisher,
                Pipeline::new(&shared, counters.clone(), seed),
            );
            for &port in &sinks {
                let _ = worker.add_port(
                    port,
                    PortKind::Pod,
                    Box::new(MemPort::replay("sink", vec![], 0)),
                );
            }
            for class in &classes {
                let kind = if class.port == example::UPLINK {
                    PortKind::Uplink
                } else {
                    PortKind::Pod
                };
                let port = MemPort::replay("gen", class.frames.clone(), per_class);
                let _ = worker.add_port(class.port, kind, Box::new(port));
            }
            std::thread::spawn(move || {
                if let Some(core) = core {
                    core_affinity::set_for_current(core);
                }
                let start = Instant::now();
                let mut packets = 0u64;
                let clock = Instant::now();
                loop {
                    let now_ms = u64::try_from(clock.elapsed().as_millis()).unwrap_or(u64::MAX);
                    let n = worker.poll(now_ms);
                    if n == 0 {
                        break;
                    }
                    packets += n as u64;
                }
                let seconds = start.elapsed().as_secs_f64();
                (
                    CoreResult {
                        core: core.map_or(i, |c| c.id),
                        packets,
                        seconds,
                    },
                    counters,
                )
            })
        })
        .collect();
    let mut report = Report {
        cores: Vec::new(),
        counters: Vec::new(),
        conntrack_entries: 0,
    };
    for h in handles {
        if let Ok((result, counters)) = h.join() {
            report.cores.push(result);
            report.counters.push(counters);
        }
    }
    report.conntrack_entries = shared.conntrack.len();
    report
}

impl Report {
    fn sum(&self, f: impl Fn(&Counters) -> u64) -> u64 {
        self.counters.iter().map(|c| f(c)).sum()
    }

    /// Drops counted for `reason` over all cores.
    pub fn drops(&self, reason: DropReason) -> u64 {
        self.sum(|c| c.drops_of(reason))
    }

    /// What the run shows that it should not: expected outcomes missing, or
    /// frames without a verdict. Empty when the switch behaved.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let expect = [
            ("forwarded frames", self.sum(|c| c.forwarded.get())),
            ("ARP replies", self.sum(|c| c.arp_replies.get())),
            ("VXLAN encapsulations", self.sum(|c| c.encapsulated.get())),
            ("VXLAN decapsulations", self.sum(|c| c.decapsulated.get())),
            (
                "policy denials",
                self.drops(DropReason::PolicyDeniedIngress),
            ),
            ("truncated-frame drops", self.drops(DropReason::Truncated)),
            ("bad-checksum drops", self.drops(DropReason::BadIpChecksum)),
            (
                "stray-fragment drops",
                self.drops(DropReason::FragmentNoFirst),
            ),
            ("bad-length drops", self.drops(DropReason::BadIpHeader)),
            ("IPv6 drops", self.drops(DropReason::Ipv6)),
        ];
        for (what, n) in expect {
            if n == 0 {
                problems.push(format!("expected {what}, saw none"));
            }
        }
        let unclassified = self.drops(DropReason::Unclassified);
        if unclassified > 0 {
            problems.push(format!(
                "{unclassified} frames left the pipeline without a verdict"
            ));
        }
        problems
    }

    /// The report as a text table.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str("core  packets      seconds   Mpps\n");
        let mut total = 0.0;
        for c in &self.cores {
            let mpps = c.packets as f64 / c.seconds.max(1e-9) / 1e6;
            total += mpps;
            out.push_str(&format!(
                "{:<5} {:<12} {:<9.3} {:.2}\n",
                c.core, c.packets, c.seconds, mpps
            ));
        }
        out.push_str(&format!(
            "all   {:<12} {:<9} {:.2}\n\n",
            self.cores.iter().map(|c| c.packets).sum::<u64>(),
            "",
            total
        ));
        out.push_str("verdict                      packets\n");
        let rows = [
            ("forwarded", self.sum(|c| c.forwarded.get())),
            ("arp_replied", self.sum(|c| c.arp_replies.get())),
            ("vxlan_encapsulated", self.sum(|c| c.encapsulated.get())),
            ("vxlan_decapsulated", self.sum(|c| c.decapsulated.get())),
            ("conntrack_new", self.sum(|c| c.ct_new.get())),
            ("conntrack_hit", self.sum(|c| c.ct_hits.get())),
            ("dropped", self.sum(Counters::total_drops)),
        ];
        for (name, n) in rows {
            out.push_str(&format!("{name:<28} {n}\n"));
        }
        out.push_str("\ndrop reason                  packets  meaning\n");
        for &reason in DropReason::ALL {
            let n = self.drops(reason);
            if n > 0 {
                out.push_str(&format!(
                    "{:<28} {:<8} {}\n",
                    reason.name(),
                    n,
                    reason.help()
                ));
            }
        }
        out.push_str(&format!(
            "\nconntrack entries: {}\n",
            self.conntrack_entries
        ));
        out
    }
}
