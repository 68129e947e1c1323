//! The XDP programs and their loader, on veth pairs in network namespaces
//! these tests create (`psxdp-<pid>-<n>`) and delete, even on panic. Nothing
//! in the root namespace is touched. Needs root: the tests fail (they do not
//! skip) without it.

use std::net::Ipv4Addr;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use afxdp::xdp::{UplinkStats, XdpError, XdpKind, XdpProgram};
use etherparse::PacketBuilder;
use libbpf_rs::libbpf_sys;
use libbpf_rs::{Xdp, XdpFlags};

const XDP_PASS: u32 = 2;

const NODE_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
const OTHER_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 3);
const PEER_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const SERVICE_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);
const NODE_PORT: u16 = 30080;

fn require_root() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "the XDP tests need root (network namespaces, BPF): run `sudo -E cargo test -p dataplane --test xdp`"
    );
}

fn ip(args: &[&str]) -> String {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("running ip (iproute2)");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A network namespace with a veth pair `veth0`/`veth1`, both up, IPv6 off;
/// deleted on drop.
struct Netns {
    name: String,
}

impl Netns {
    fn new() -> Netns {
        require_root();
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "psxdp-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        ip(&["netns", "add", &name]);
        let ns = Netns { name };
        // No IPv6: the veths would otherwise send router solicitations and
        // DAD probes that the programs under test count.
        for conf in ["all", "default"] {
            let knob = format!("/proc/sys/net/ipv6/conf/{conf}/disable_ipv6");
            ns.run(|| std::fs::write(&knob, "1").unwrap_or_else(|e| panic!("{knob}: {e}")));
        }
        ip(&[
            "-n", &ns.name, "link", "add", "veth0", "type", "veth", "peer", "name", "veth1",
        ]);
        for dev in ["veth0", "veth1"] {
            ip(&["-n", &ns.name, "link", "set", dev, "up"]);
        }
        ns
    }

    /// Runs `f` on a thread that has entered the namespace; other threads
    /// (other tests) are unaffected. Panics propagate.
    fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        netlink::netns::on_thread(&netlink::netns::named(&self.name), f)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn attach(&self, dev: &str, kind: XdpKind) -> Result<XdpProgram, XdpError> {
        self.run(|| XdpProgram::attach(ifindex(dev), kind))
    }

    /// The id of the XDP program on `dev`, and whether it runs in generic
    /// (skb) mode, as `ip link` reports them.
    fn xdp(&self, dev: &str) -> Option<(u32, bool)> {
        let out = ip(&["-n", &self.name, "-d", "link", "show", "dev", dev]);
        let id = out
            .split("prog/xdp id ")
            .nth(1)?
            .split_whitespace()
            .next()?
            .parse()
            .ok()?;
        Some((id, out.contains("xdpgeneric")))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Runs on panic too; a failure here must not turn into a double panic.
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.name])
            .status();
    }
}

/// `dev`'s index in the calling thread's namespace.
fn ifindex(dev: &str) -> u32 {
    let name = std::ffi::CString::new(dev).expect("no NUL in name");
    // SAFETY: `name` is a NUL-terminated string that outlives the call.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    assert_ne!(index, 0, "no interface {dev} in this namespace");
    index
}

// Frames -------------------------------------------------------------------

const MAC_A: [u8; 6] = [0x02, 0, 0, 0, 0, 1];
const MAC_B: [u8; 6] = [0x02, 0, 0, 0, 0, 2];

fn udp(dst: Ipv4Addr, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut frame = Vec::new();
    PacketBuilder::ethernet2(MAC_A, MAC_B)
        .ipv4(PEER_IP.octets(), dst.octets(), 64)
        .udp(40000, dport)
        .write(&mut frame, payload)
        .expect("building a UDP frame");
    frame
}

fn tcp(dst: Ipv4Addr, dport: u16) -> Vec<u8> {
    let mut frame = Vec::new();
    PacketBuilder::ethernet2(MAC_A, MAC_B)
        .ipv4(PEER_IP.octets(), dst.octets(), 64)
        .tcp(40000, dport, 1, 65535)
        .syn()
        .write(&mut frame, &[])
        .expect("building a TCP frame");
    frame
}

fn icmp_echo(dst: Ipv4Addr) -> Vec<u8> {
    let mut frame = Vec::new();
    PacketBuilder::ethernet2(MAC_A, MAC_B)
        .ipv4(PEER_IP.octets(), dst.octets(), 64)
        .icmpv4_echo_request(1, 1)
        .write(&mut frame, b"ping")
        .expect("building an ICMP frame");
    frame
}

/// A VXLAN frame (outer UDP to 4789) carrying a small inner Ethernet frame.
fn vxlan(dst: Ipv4Addr) -> Vec<u8> {
    let mut payload = vec![0x08, 0, 0, 0, 0, 0, 1, 0]; // flags I, VNI 1
    payload.extend(udp(Ipv4Addr::new(10, 244, 1, 2), 53, b"inner"));
    udp(dst, 4789, &payload)
}

fn arp_request(target: Ipv4Addr) -> Vec<u8> {
    let mut frame = Vec::new();
    frame.extend([0xff; 6]);
    frame.extend(MAC_A);
    frame.extend([0x08, 0x06]);
    frame.extend([0, 1, 0x08, 0, 6, 4, 0, 1]);
    frame.extend(MAC_A);
    frame.extend(PEER_IP.octets());
    frame.extend([0; 6]);
    frame.extend(target.octets());
    frame
}

fn vlan_tagged(mut frame: Vec<u8>) -> Vec<u8> {
    frame.splice(12..12, [0x81, 0x00, 0x00, 0x0a]);
    frame
}

// Decisions ---------------------------------------------------------------

#[derive(Debug, PartialEq, Eq)]
enum Decision {
    Passed,
    Redirected,
}

/// Runs the uplink program on `frame` and reads its decision from the
/// counters. With no socket bound, a redirect falls back to XDP_PASS, so the
/// action is XDP_PASS either way; the counters tell them apart.
fn decide(program: &XdpProgram, frame: &[u8]) -> Decision {
    let before = program.stats().expect("reading stats");
    let action = program.test_run(frame).expect("test run");
    assert_eq!(
        action, XDP_PASS,
        "no socket is bound, so every frame is passed"
    );
    let after = program.stats().expect("reading stats");
    let delta = UplinkStats {
        passed: after.passed - before.passed,
        redirected: after.redirected - before.redirected,
        unbound: after.unbound - before.unbound,
    };
    match delta {
        UplinkStats {
            passed: 1,
            redirected: 0,
            unbound: 0,
        } => Decision::Passed,
        UplinkStats {
            passed: 0,
            redirected: 1,
            unbound: 1,
        } => Decision::Redirected,
        other => panic!("one frame moved the counters by {other:?}"),
    }
}

fn configured_uplink(ns: &Netns) -> XdpProgram {
    let mut uplink = ns.attach("veth0", XdpKind::Uplink).expect("attach uplink");
    uplink.add_node_ip(NODE_IP).unwrap();
    uplink.add_node_port(6, NODE_PORT).unwrap();
    uplink.add_node_port(17, NODE_PORT).unwrap();
    uplink.add_service_ip(SERVICE_IP).unwrap();
    uplink
}

// Tests -------------------------------------------------------------------

#[test]
fn port_program_attaches_natively_and_detaches_on_drop() {
    let ns = Netns::new();
    let port = ns.attach("veth0", XdpKind::Port).expect("attach xdp_port");
    let (id, generic) = ns.xdp("veth0").expect("an XDP program on veth0");
    assert!(id > 0);
    assert!(!generic, "veth runs XDP in driver mode");
    assert_eq!(ns.xdp("veth1"), None, "the peer is untouched");
    assert_eq!(
        port.interface().and_then(|i| i.name.as_deref()),
        Some("veth0")
    );
    drop(port);
    assert_eq!(ns.xdp("veth0"), None, "dropping the program detaches it");
}

#[test]
fn uplink_program_attaches_natively_and_detaches_on_drop() {
    let ns = Netns::new();
    let uplink = ns
        .attach("veth1", XdpKind::Uplink)
        .expect("attach xdp_uplink");
    let (_, generic) = ns.xdp("veth1").expect("an XDP program on veth1");
    assert!(!generic);
    assert_eq!(uplink.stats().unwrap(), UplinkStats::default());
    drop(uplink);
    assert_eq!(ns.xdp("veth1"), None);
}

#[test]
fn uplink_filter_claims_only_what_the_switch_owns() {
    let ns = Netns::new();
    let uplink = configured_uplink(&ns);
    let mut truncated_udp = udp(NODE_IP, 4789, b"");
    truncated_udp.truncate(14 + 20 + 3); // IPv4 header, 3 bytes of UDP
    let mut truncated_ip = tcp(NODE_IP, NODE_PORT);
    truncated_ip.truncate(14 + 19);
    let mut options = tcp(NODE_IP, NODE_PORT);
    options[14] = 0x46; // IHL 6: a 4-byte option the frame does not have room for
    options.truncate(14 + 24 + 3);
    let mut later_fragment = udp(NODE_IP, NODE_PORT, b"data");
    later_fragment[14 + 7] = 0x10; // fragment offset 16 * 8 bytes
    let mut bad_version = udp(NODE_IP, NODE_PORT, b"data");
    bad_version[14] = 0x65;
    let mut eth_only = tcp(NODE_IP, NODE_PORT);
    eth_only.truncate(14);

    let cases: [(&str, Vec<u8>, Decision); 17] = [
        ("VXLAN to a node IP", vxlan(NODE_IP), Decision::Redirected),
        ("VXLAN to another IP", vxlan(OTHER_IP), Decision::Passed),
        (
            "NodePort TCP to a node IP",
            tcp(NODE_IP, NODE_PORT),
            Decision::Redirected,
        ),
        (
            "NodePort UDP to a node IP",
            udp(NODE_IP, NODE_PORT, b"q"),
            Decision::Redirected,
        ),
        (
            "NodePort TCP to another IP",
            tcp(OTHER_IP, NODE_PORT),
            Decision::Passed,
        ),
        ("ssh to a node IP", tcp(NODE_IP, 22), Decision::Passed),
        (
            "kubelet to a node IP",
            tcp(NODE_IP, 10250),
            Decision::Passed,
        ),
        ("TCP to UDP-only 4789", tcp(NODE_IP, 4789), Decision::Passed),
        ("ICMP to a node IP", icmp_echo(NODE_IP), Decision::Passed),
        ("ARP for a node IP", arp_request(NODE_IP), Decision::Passed),
        (
            "TCP to a service IP",
            tcp(SERVICE_IP, 443),
            Decision::Redirected,
        ),
        (
            "ICMP to a service IP",
            icmp_echo(SERVICE_IP),
            Decision::Redirected,
        ),
        (
            "VLAN-tagged VXLAN",
            vlan_tagged(vxlan(NODE_IP)),
            Decision::Passed,
        ),
        ("truncated UDP header", truncated_udp, Decision::Passed),
        ("truncated IPv4 header", truncated_ip, Decision::Passed),
        ("IPv4 options cut short", options, Decision::Passed),
        ("Ethernet header only", eth_only, Decision::Passed),
    ];
    for (description, frame, expected) in cases {
        assert_eq!(decide(&uplink, &frame), expected, "{description}");
    }
    for (description, frame) in [
        ("later fragment to a NodePort", later_fragment),
        ("IP version 6 in an IPv4 ethertype", bad_version),
    ] {
        assert_eq!(decide(&uplink, &frame), Decision::Passed, "{description}");
    }
}

#[test]
fn uplink_filter_follows_map_removals() {
    let ns = Netns::new();
    let mut uplink = configured_uplink(&ns);
    uplink.remove_node_port(6, NODE_PORT).unwrap();
    assert_eq!(decide(&uplink, &tcp(NODE_IP, NODE_PORT)), Decision::Passed);
    assert_eq!(
        decide(&uplink, &udp(NODE_IP, NODE_PORT, b"q")),
        Decision::Redirected,
        "the UDP NodePort stays"
    );
    uplink.remove_service_ip(SERVICE_IP).unwrap();
    assert_eq!(decide(&uplink, &tcp(SERVICE_IP, 443)), Decision::Passed);
    uplink.remove_node_ip(NODE_IP).unwrap();
    assert_eq!(decide(&uplink, &vxlan(NODE_IP)), Decision::Passed);
    // Removing what is not there is not an error.
    uplink.remove_node_ip(NODE_IP).unwrap();
    uplink.remove_node_port(17, 1).unwrap();
}

#[test]
fn port_program_passes_frames_when_no_socket_is_bound() {
    let ns = Netns::new();
    let port = ns.attach("veth0", XdpKind::Port).expect("attach xdp_port");
    assert_eq!(port.test_run(&tcp(OTHER_IP, 80)).unwrap(), XDP_PASS);
    assert_eq!(port.test_run(&arp_request(OTHER_IP)).unwrap(), XDP_PASS);
}

#[test]
fn uplink_operations_are_refused_on_a_port_program() {
    let ns = Netns::new();
    let mut port = ns.attach("veth0", XdpKind::Port).expect("attach xdp_port");
    let err = port.add_node_ip(NODE_IP).unwrap_err();
    assert!(matches!(err, XdpError::NotUplink("add_node_ip")), "{err}");
    assert!(matches!(port.stats(), Err(XdpError::NotUplink(_))));
}

#[test]
fn socket_map_rejects_what_is_not_an_xdp_socket() {
    let ns = Netns::new();
    let mut port = ns.attach("veth0", XdpKind::Port).expect("attach xdp_port");
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("a UDP socket");
    let err = port.set_socket(0, udp.as_raw_fd()).unwrap_err();
    assert!(
        err.to_string().contains("AF_XDP socket"),
        "the message says what was expected: {err}"
    );
    let err = port.set_socket(64, udp.as_raw_fd()).unwrap_err();
    assert!(
        matches!(err, XdpError::QueueOutOfRange { queue: 64 }),
        "{err}"
    );
    port.clear_socket(0)
        .expect("clearing an empty queue is fine");
}

#[test]
fn second_loader_on_an_interface_fails_cleanly() {
    let ns = Netns::new();
    let first = ns.attach("veth0", XdpKind::Port).expect("first attach");
    let (id, _) = ns.xdp("veth0").unwrap();
    let err = ns.attach("veth0", XdpKind::Uplink).unwrap_err();
    assert!(matches!(err, XdpError::HeldByLink { .. }), "{err}");
    assert!(
        err.to_string().contains("veth0"),
        "names the interface: {err}"
    );
    assert_eq!(
        ns.xdp("veth0").map(|x| x.0),
        Some(id),
        "the first one keeps running"
    );
    drop(first);
    let _second = ns
        .attach("veth0", XdpKind::Uplink)
        .expect("attach once the first is gone");
    assert_ne!(ns.xdp("veth0").map(|x| x.0), Some(id));
}

/// A podswitch program attached by netlink (as `ip link set xdp` does) by a
/// process that then died stays on the interface; attach replaces it.
#[test]
fn stale_netlink_attachment_of_ours_is_replaced() {
    for (mode, generic) in [(XdpFlags::DRV_MODE, false), (XdpFlags::SKB_MODE, true)] {
        let ns = Netns::new();
        ns.run(|| {
            let stale = XdpProgram::load(XdpKind::Uplink).expect("load");
            Xdp::new(stale.as_fd())
                .attach(i32::try_from(ifindex("veth0")).unwrap(), mode)
                .expect("netlink attach");
            // `stale` is dropped here, as if its process died.
        });
        let (old, old_generic) = ns.xdp("veth0").expect("the stale program");
        assert_eq!(old_generic, generic);
        let _fresh = ns
            .attach("veth0", XdpKind::Port)
            .unwrap_or_else(|e| panic!("replacing a stale program (generic mode: {generic}): {e}"));
        let (new, new_generic) = ns.xdp("veth0").expect("the fresh program");
        assert_ne!(new, old);
        assert!(!new_generic);
    }
}

/// `mov r0, XDP_PASS; exit`, named "foreign".
fn load_foreign_program() -> OwnedFd {
    let mut mov = libbpf_sys::bpf_insn {
        code: 0xb7, // BPF_ALU64 | BPF_MOV | BPF_K, dst r0
        imm: 2,
        ..Default::default()
    };
    mov.set_dst_reg(0);
    let exit = libbpf_sys::bpf_insn {
        code: 0x95, // BPF_JMP | BPF_EXIT
        ..Default::default()
    };
    let insns = [mov, exit];
    // SAFETY: names are NUL-terminated literals, `insns` holds 2 instructions
    // and outlives the call; NULL opts means defaults.
    let fd = unsafe {
        libbpf_sys::bpf_prog_load(
            libbpf_sys::BPF_PROG_TYPE_XDP,
            c"foreign".as_ptr(),
            c"GPL".as_ptr(),
            insns.as_ptr(),
            insns.len() as libbpf_sys::size_t,
            std::ptr::null_mut(),
        )
    };
    assert!(fd >= 0, "loading a foreign program: errno {}", -fd);
    // SAFETY: a new descriptor nothing else owns.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

#[test]
fn foreign_program_is_left_alone() {
    let ns = Netns::new();
    ns.run(|| {
        let foreign = load_foreign_program();
        Xdp::new(foreign.as_fd())
            .attach(i32::try_from(ifindex("veth0")).unwrap(), XdpFlags::DRV_MODE)
            .expect("netlink attach");
    });
    let (id, _) = ns.xdp("veth0").unwrap();
    let err = ns.attach("veth0", XdpKind::Port).unwrap_err();
    match &err {
        XdpError::ForeignProgram { name, .. } => assert_eq!(name, "foreign"),
        other => panic!("expected ForeignProgram, got {other}"),
    }
    assert!(err.to_string().contains("veth0"), "{err}");
    assert_eq!(ns.xdp("veth0").map(|x| x.0), Some(id), "still attached");
}
