//! The test kit: an example node's switch on in-memory ports that a test
//! feeds and drains, and a decoder that checks every frame the switch sends
//! (checksums included) with `etherparse`, independently of the switch's own
//! packet views.
//!
//! Besides: network namespaces (`netns`), topologies of veths (`topology`),
//! the CNI plugin executed as a runtime does (`cni`) and a real
//! kube-apiserver (`apiserver`) for the end-to-end tests. It depends on the
//! pure crates (`tables`, `dataplane`, `api`, `netlink`, `fixtures`), never on
//! the agent or the lab, which test with it.

use std::collections::HashMap;
use std::sync::Arc;

use dataplane::counters::{Counters, DropReason};
use dataplane::pipeline::{Pipeline, Shared};
use dataplane::port::{MemPort, MemPortHandle, PortKind};
use dataplane::worker::Worker;
use etherparse::{NetSlice, SlicedPacket, TransportSlice};
use tables::conntrack::Conntrack;
use tables::route::PortId;
use tables::snapshot::{Publisher, Snapshot};

pub use fixtures::example;
pub use fixtures::packets;

pub mod apiserver;
pub mod cni;
pub mod fixture;
pub mod netns;
pub mod topology;

/// One node's switch on in-memory ports: the uplink, the host port and one
/// port per attached pod.
pub struct Node {
    pub worker: Worker,
    pub ports: HashMap<PortId, MemPortHandle>,
    pub publisher: Arc<Publisher>,
    pub conntrack: Arc<Conntrack>,
    pub counters: Arc<Counters>,
    /// The clock the next poll passes to the pipeline, in milliseconds.
    pub now_ms: u64,
}

impl Node {
    /// A switch for `snapshot` with a conntrack table of `ct_capacity`.
    pub fn with_capacity(snapshot: Snapshot, ct_capacity: u32) -> Node {
        Node::with_ports(snapshot, ct_capacity, &[])
    }

    /// A switch for `snapshot` whose ports `taps` stand in for TAP ports
    /// ([`MemPort::offloading`]: frames in and out carry a virtio-net
    /// header, super-packets pass whole).
    pub fn with_taps(snapshot: Snapshot, taps: &[PortId]) -> Node {
        Node::with_ports(snapshot, 1 << 16, taps)
    }

    fn with_ports(snapshot: Snapshot, ct_capacity: u32, taps: &[PortId]) -> Node {
        let mut ids = vec![(snapshot.node.uplink_port, PortKind::Uplink)];
        if let Some(host) = snapshot.node.host_port {
            ids.push((host, PortKind::Host));
        }
        ids.extend(snapshot.routes.pods().map(|p| (p.port, PortKind::Pod)));
        let publisher = Arc::new(Publisher::new(snapshot));
        let shared = Shared::new(ct_capacity, 1024, 1024);
        let conntrack = shared.conntrack.clone();
        let counters = Arc::new(Counters::new(256));
        let pipeline = Pipeline::new(&shared, counters.clone(), 42);
        let mut worker = Worker::new(1024, 256, publisher.clone(), pipeline);
        let mut ports = HashMap::new();
        for (id, kind) in ids {
            let name = format!("port{id}");
            let (port, handle) = if taps.contains(&id) {
                MemPort::offloading(&name)
            } else {
                MemPort::new(&name)
            };
            assert!(
                worker.add_port(id, kind, Box::new(port)).is_ok(),
                "port id {id} out of range"
            );
            ports.insert(id, handle);
        }
        Node {
            worker,
            ports,
            publisher,
            conntrack,
            counters,
            now_ms: 1_000,
        }
    }

    /// A switch for `snapshot` with room for 64k flows.
    pub fn new(snapshot: Snapshot) -> Node {
        Node::with_capacity(snapshot, 1 << 16)
    }

    /// The example cluster's node `name`.
    pub fn example(name: &str) -> Node {
        Node::new(example::snapshot(name))
    }

    /// Queues `frame` for receipt on `port`.
    pub fn inject(&self, port: PortId, frame: &[u8]) {
        self.ports
            .get(&port)
            .unwrap_or_else(|| panic!("no port {port}"))
            .inject(frame);
    }

    /// Polls until every injected frame has been processed.
    pub fn run(&mut self) {
        while self.worker.poll(self.now_ms) > 0 {}
    }

    /// Injects one frame, runs, and returns every frame sent (port, bytes).
    pub fn send(&mut self, port: PortId, frame: &[u8]) -> Vec<(PortId, Vec<u8>)> {
        self.inject(port, frame);
        self.run();
        self.take_all()
    }

    /// Every frame sent since the last call, by port (sorted by port id).
    pub fn take_all(&self) -> Vec<(PortId, Vec<u8>)> {
        let mut ids: Vec<PortId> = self.ports.keys().copied().collect();
        ids.sort_unstable();
        ids.into_iter()
            .flat_map(|id| {
                self.ports[&id]
                    .take_sent()
                    .into_iter()
                    .map(move |f| (id, f))
            })
            .collect()
    }

    /// Drops counted for `reason`.
    pub fn drops(&self, reason: DropReason) -> u64 {
        self.counters.drops_of(reason)
    }

    /// Every non-zero drop counter, for assertion messages.
    pub fn drop_summary(&self) -> Vec<(&'static str, u64)> {
        DropReason::ALL
            .iter()
            .map(|r| (r.name(), self.drops(*r)))
            .filter(|(_, n)| *n > 0)
            .collect()
    }
}

/// What a frame says, decoded and checked by `etherparse`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub src: u32,
    pub dst: u32,
    pub ttl: u8,
    pub proto: u8,
    pub sport: u16,
    pub dport: u16,
    pub payload: Vec<u8>,
    /// For VXLAN: the VNI and the decoded inner frame.
    pub vxlan: Option<(u32, Box<Frame>)>,
}

/// Decodes an Ethernet/IPv4 frame, verifying the IPv4 header checksum and
/// the TCP/UDP/ICMP checksum (UDP checksum 0 allowed); VXLAN is decoded
/// recursively. Panics with the reason on anything malformed: in tests, a
/// malformed output frame is a failure.
pub fn decode(bytes: &[u8]) -> Frame {
    let sliced =
        SlicedPacket::from_ethernet(bytes).unwrap_or_else(|e| panic!("undecodable frame: {e:?}"));
    let Some(etherparse::LinkSlice::Ethernet2(eth)) = sliced.link else {
        panic!("not Ethernet II")
    };
    let Some(NetSlice::Ipv4(ipv4)) = sliced.net else {
        panic!("not IPv4")
    };
    let header = ipv4.header().to_header();
    let computed = header.calc_header_checksum();
    assert_eq!(header.header_checksum, computed, "IPv4 header checksum");
    let (src, dst) = (
        u32::from_be_bytes(header.source),
        u32::from_be_bytes(header.destination),
    );
    let (sport, dport, payload) = match sliced.transport {
        Some(TransportSlice::Tcp(tcp)) => {
            let expected = tcp
                .to_header()
                .calc_checksum_ipv4(&header, tcp.payload())
                .unwrap();
            assert_eq!(tcp.checksum(), expected, "TCP checksum");
            (
                tcp.source_port(),
                tcp.destination_port(),
                tcp.payload().to_vec(),
            )
        }
        Some(TransportSlice::Udp(udp)) => {
            if udp.checksum() != 0 {
                let expected = udp
                    .to_header()
                    .calc_checksum_ipv4(&header, udp.payload())
                    .unwrap();
                assert_eq!(udp.checksum(), expected, "UDP checksum");
            }
            (
                udp.source_port(),
                udp.destination_port(),
                udp.payload().to_vec(),
            )
        }
        Some(TransportSlice::Icmpv4(icmp)) => {
            let expected = icmp.header().icmp_type.calc_checksum(icmp.payload());
            assert_eq!(icmp.checksum(), expected, "ICMP checksum");
            let b = icmp.slice();
            let ident = u16::from_be_bytes([b[4], b[5]]);
            (ident, ident, icmp.payload().to_vec())
        }
        _ => (0, 0, ipv4.payload().payload.to_vec()),
    };
    let vxlan = (header.protocol == etherparse::IpNumber::UDP && dport == 4789).then(|| {
        assert!(payload.len() >= 8 && payload[0] == 0x08, "VXLAN header");
        let vni = u32::from_be_bytes([0, payload[4], payload[5], payload[6]]);
        (vni, Box::new(decode(&payload[8..])))
    });
    Frame {
        src_mac: eth.source(),
        dst_mac: eth.destination(),
        src,
        dst,
        ttl: header.time_to_live,
        proto: header.protocol.0,
        sport,
        dport,
        payload,
        vxlan,
    }
}
