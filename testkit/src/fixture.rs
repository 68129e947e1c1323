//! Fixture tables for the whole pipeline (the test kit's half): each case
//! is a fresh example node, a sequence of `{input port, input frame}` steps
//! and, per step, the frame expected out of which port (decoded and
//! checksum-verified by etherparse) or the drop reason. Stateful cases
//! (replies through conntrack) are sequences. `tests/pipeline_fixtures/`
//! and `tests/connections.rs` hold the cases; the benchmarks replay the same
//! frames.

use dataplane::counters::DropReason;
use tables::cluster::ClusterState;
use tables::route::PortId;

use crate::{decode, Frame, Node};
use fixtures::example::{self, GATEWAY_MAC};
use fixtures::packets::{self, ip, tcp, L2};

/// What one step must produce.
pub enum Expect {
    /// One frame out of `port` whose decoded form satisfies the fields given.
    Out(PortId, Want),
    /// Nothing out; one drop counted for the reason.
    Drop(DropReason),
}

/// Expected fields of a decoded frame; `None` = not checked.
#[derive(Default, Clone)]
pub struct Want {
    pub src_mac: Option<[u8; 6]>,
    pub dst_mac: Option<[u8; 6]>,
    pub src: Option<(u32, u16)>,
    pub dst: Option<(u32, u16)>,
    pub ttl: Option<u8>,
    /// VXLAN outer (src, dst) node IPs, VNI and the inner frame's wants.
    pub vxlan: Option<(u32, u32, Box<Want>)>,
}

pub struct Step {
    pub port: PortId,
    pub frame: Vec<u8>,
    pub expect: Expect,
}

pub struct Case {
    pub name: &'static str,
    pub node: Node,
    pub steps: Vec<Step>,
}

pub fn check(case: &str, step: usize, want: &Want, got: &Frame) {
    let ctx = format!("{case}, step {step}: {got:?}");
    if let Some(m) = want.src_mac {
        assert_eq!(got.src_mac, m, "src MAC in {ctx}");
    }
    if let Some(m) = want.dst_mac {
        assert_eq!(got.dst_mac, m, "dst MAC in {ctx}");
    }
    if let Some((a, p)) = want.src {
        assert_eq!((got.src, got.sport), (a, p), "source in {ctx}");
    }
    if let Some((a, p)) = want.dst {
        assert_eq!((got.dst, got.dport), (a, p), "destination in {ctx}");
    }
    if let Some(t) = want.ttl {
        assert_eq!(got.ttl, t, "TTL in {ctx}");
    }
    if let Some((src, dst, inner)) = &want.vxlan {
        assert_eq!(
            (got.src, got.dst, got.dport),
            (*src, *dst, 4789),
            "outer header in {ctx}"
        );
        let (vni, frame) = got
            .vxlan
            .as_ref()
            .unwrap_or_else(|| panic!("not VXLAN: {ctx}"));
        assert_eq!(*vni, example::VNI, "VNI in {ctx}");
        check(case, step, inner, frame);
    }
}

pub fn run(case: Case) {
    run_keep(case);
}

/// Runs a case's steps and returns its node, for cases that go on.
pub fn run_keep(mut case: Case) -> Node {
    for (i, step) in case.steps.into_iter().enumerate() {
        let before: Vec<u64> = DropReason::ALL
            .iter()
            .map(|r| case.node.drops(*r))
            .collect();
        let out = case.node.send(step.port, &step.frame);
        match step.expect {
            Expect::Out(port, want) => {
                assert_eq!(
                    out.len(),
                    1,
                    "{}, step {i}: expected one frame, got {out:?}; drops {:?}",
                    case.name,
                    case.node.drop_summary()
                );
                assert_eq!(out[0].0, port, "{}, step {i}: output port", case.name);
                check(case.name, i, &want, &decode(&out[0].1));
            }
            Expect::Drop(reason) => {
                assert!(
                    out.is_empty(),
                    "{}, step {i}: expected a drop, got {out:?}",
                    case.name
                );
                let after = case.node.drops(reason);
                assert_eq!(
                    after,
                    before[reason as usize] + 1,
                    "{}, step {i}: drop reason; drops {:?}",
                    case.name,
                    case.node.drop_summary()
                );
            }
        }
    }
    case.node
}

// ---- helpers -------------------------------------------------------------

pub fn addr(s: &str) -> std::net::Ipv4Addr {
    s.parse().unwrap()
}

/// Node `name` of the example cluster after `edit`.
pub fn node_with(name: &str, edit: impl FnOnce(&mut ClusterState)) -> Node {
    let mut state = example::state();
    edit(&mut state);
    Node::new(example::snapshot_of(&state, name))
}

pub fn node1() -> Node {
    node_with("node1", |_| {})
}

/// The port a pod of node1 is attached to.
pub fn port(pod: &str) -> PortId {
    let state = example::state();
    let on = |n| example::attachments(&state, n);
    on("node1")
        .into_iter()
        .chain(on("node2"))
        .find(|p| p.ip == ip(pod))
        .map(|p| p.port)
        .unwrap()
}

pub fn mac(pod: &str) -> [u8; 6] {
    example::pod_mac(addr(pod))
}

/// Link addresses of a frame a pod sends to its gateway.
pub fn from_pod(pod: &str) -> L2 {
    L2 {
        src: mac(pod),
        dst: GATEWAY_MAC,
    }
}

pub fn n1() -> tables::route::NodeConfig {
    example::node_config("node1")
}

pub fn n2() -> tables::route::NodeConfig {
    example::node_config("node2")
}

/// A frame node2 sends node1 through the overlay.
pub fn from_node2(inner: &[u8]) -> Vec<u8> {
    let outer = L2 {
        src: n2().uplink_mac,
        dst: n1().uplink_mac,
    };
    packets::vxlan(
        outer,
        n2().node_ip,
        n1().node_ip,
        45_000,
        example::VNI,
        inner,
    )
}

pub fn inner_l2() -> L2 {
    L2 {
        src: n2().vtep_mac,
        dst: n1().vtep_mac,
    }
}

/// Restricts the web service's endpoints to the pods named.
pub fn web_endpoints(state: &mut ClusterState, keep: &[&str]) {
    state.services[0]
        .endpoints
        .retain(|e| keep.iter().any(|k| e.ip == addr(k)));
}

/// Delivered to a local pod: gateway MAC to the pod's MAC, TTL 63.
pub fn to_pod(pod: &str, src: (u32, u16), dst: (u32, u16)) -> Want {
    Want {
        src_mac: Some(GATEWAY_MAC),
        dst_mac: Some(mac(pod)),
        src: Some(src),
        dst: Some(dst),
        ttl: Some(63),
        vxlan: None,
    }
}

/// Encapsulated from node1 to node2 (inner from VTEP to VTEP, TTL 63).
pub fn to_node2(src: (u32, u16), dst: (u32, u16)) -> Want {
    let inner = Want {
        src_mac: Some(n1().vtep_mac),
        dst_mac: Some(n2().vtep_mac),
        src: Some(src),
        dst: Some(dst),
        ttl: Some(63),
        vxlan: None,
    };
    Want {
        src_mac: Some(n1().uplink_mac),
        dst_mac: Some(n2().uplink_mac),
        ttl: Some(64),
        vxlan: Some((n1().node_ip, n2().node_ip, Box::new(inner))),
        ..Want::default()
    }
}

pub const SYN: u8 = tcp::SYN;
pub const SYNACK: u8 = tcp::SYN | tcp::ACK;

pub fn step(port: PortId, frame: Vec<u8>, expect: Expect) -> Step {
    Step {
        port,
        frame,
        expect,
    }
}
