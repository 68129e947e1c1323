//! AF_XDP port tests on veth pairs inside namespaces this test creates.
//!
//! Root is required (namespaces, AF_XDP): without it the tests fail with a
//! message saying so. Each test makes its own namespace `psxsk-<pid>-<n>`,
//! runs the socket work on a thread that has `setns`'d into it, and deletes
//! the namespace on drop, also when a test panics. Nothing in the root
//! namespace is touched. Traffic is bounded in frames and seconds.
//!
//! RX needs an XDP program redirecting into an XSKMAP (`afxdp::xdp`),
//! so RX integration tests come with it; here: TX, shared UMEM, rebinding,
//! bad parameters.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use afxdp::xsk::ifindex;
use afxdp::{Umem, XskConfig, XskError, XskPort};
use dataplane::frame::{Desc, FramePool};
use dataplane::port::Port;

const MARKER: &[u8] = b"psxsk-marker";
const DEADLINE: Duration = Duration::from_secs(10);

fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "the AF_XDP tests need root (network namespaces, AF_XDP sockets): run `cargo test -p dataplane` as root"
    );
}

/// A network namespace deleted on drop.
struct Netns {
    name: String,
}

impl Netns {
    fn new() -> Netns {
        require_root();
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "psxsk-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        run(&["ip", "netns", "add", &name]);
        Netns { name }
    }

    /// `ip -n NS ARGS`.
    fn ip(&self, args: &str) {
        let mut argv = vec!["ip", "-n", &self.name];
        argv.extend(args.split_whitespace());
        run(&argv);
    }

    /// A veth pair `a`/`b` with MACs 02:..:0`id`:01/02 and 198.18.`id`.1/.2,
    /// both up; `queues` RX/TX queues each.
    fn veth(&self, a: &str, b: &str, id: u8, queues: u32) {
        self.ip(&format!(
            "link add {a} numtxqueues {queues} numrxqueues {queues} address 02:00:00:00:{id:02x}:01 \
             type veth peer name {b} numtxqueues {queues} numrxqueues {queues} address 02:00:00:00:{id:02x}:02"
        ));
        self.ip(&format!("addr add 198.18.{id}.1/24 dev {a}"));
        self.ip(&format!("addr add 198.18.{id}.2/24 dev {b}"));
        self.ip(&format!("link set {a} up"));
        self.ip(&format!("link set {b} up"));
    }

    /// Runs `f` on a thread inside the namespace; a panic in `f` is
    /// re-raised here (so `self` still drops).
    fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        netlink::netns::on_thread(&netlink::netns::named(&self.name), f)
            .unwrap_or_else(|e| panic!("{e}"))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

fn run(argv: &[&str]) {
    let out = Command::new(argv[0])
        .args(&argv[1..])
        .output()
        .expect("run command");
    assert!(
        out.status.success(),
        "{argv:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An AF_PACKET socket counting marker frames received on one interface.
struct Sniffer {
    fd: OwnedFd,
}

impl Sniffer {
    fn open(dev: &str) -> Sniffer {
        let proto = u16::try_from(libc::ETH_P_ALL).unwrap().to_be();
        // SAFETY: plain socket call.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                i32::from(proto),
            )
        };
        assert!(
            raw >= 0,
            "AF_PACKET socket: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: `raw` is a new descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: all-zero is a valid sockaddr_ll.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = u16::try_from(libc::AF_PACKET).unwrap();
        sll.sll_protocol = proto;
        sll.sll_ifindex = i32::try_from(ifindex(dev).unwrap()).unwrap();
        // SAFETY: `sll` is a valid sockaddr_ll of the given size.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                std::ptr::from_ref(&sll).cast(),
                libc::socklen_t::try_from(std::mem::size_of::<libc::sockaddr_ll>()).unwrap(),
            )
        };
        assert_eq!(rc, 0, "bind AF_PACKET: {}", std::io::Error::last_os_error());
        Sniffer { fd }
    }

    /// Marker frames waiting now (non-blocking).
    fn drain(&self) -> usize {
        let mut buf = [0u8; 2048];
        let mut n = 0;
        loop {
            // SAFETY: `buf` is writable for its length.
            let r =
                unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            let Ok(len) = usize::try_from(r) else {
                return n;
            };
            if buf[..len].windows(MARKER.len()).any(|w| w == MARKER) {
                n += 1;
            }
        }
    }
}

/// An Ethernet/IPv4/UDP frame from `a` to `b` of pair `id`, carrying the
/// marker and `seq`.
fn frame(id: u8, seq: u32) -> Vec<u8> {
    let b = etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, id, 1], [2, 0, 0, 0, id, 2])
        .ipv4([198, 18, id, 1], [198, 18, id, 2], 64)
        .udp(40000, 9);
    let mut payload = MARKER.to_vec();
    payload.extend_from_slice(&seq.to_be_bytes());
    let mut out = Vec::with_capacity(b.size(payload.len()));
    b.write(&mut out, &payload).unwrap();
    out
}

/// Sends `n` frames on `port` (retrying while the TX ring is full), then
/// services it until every TX frame has completed and `sniffer` has seen
/// `n` frames. Returns the frames seen.
fn send_and_count(
    pool: &mut FramePool,
    port: &mut XskPort,
    sniffer: &Sniffer,
    id: u8,
    n: u32,
    fill: u32,
) -> usize {
    let descs: Vec<Desc> = (0..n)
        .map(|i| pool.alloc_with(&frame(id, i)).expect("pool has room"))
        .collect();
    let start = Instant::now();
    let mut sent = 0;
    let mut seen = 0;
    while start.elapsed() < DEADLINE {
        if sent < descs.len() {
            sent += port.send(pool, &descs[sent..]);
        }
        port.service(pool);
        seen += sniffer.drain();
        if sent == descs.len() && seen >= n as usize && port.in_flight() == fill {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(sent, descs.len(), "TX ring accepted every frame in time");
    seen
}

fn addr(port: &XskPort) -> String {
    format!("{} q{}", port.name(), port.queue())
}

#[test]
fn tx_frames_reach_the_peer_and_return_to_the_pool() {
    let ns = Netns::new();
    ns.veth("va", "vb", 1, 1);
    ns.run(|| {
        let mut pool = FramePool::new(512);
        // SAFETY: `port` is dropped at the end of this closure, before `pool`.
        let mut umem = unsafe { Umem::new(&mut pool) }.expect("register UMEM");
        let cfg = XskConfig {
            fill_target: 64,
            ..XskConfig::default()
        };
        let sniffer = Sniffer::open("vb");
        let mut port = XskPort::bind(&mut umem, "va", ifindex("va").unwrap(), 0, &cfg)
            .expect("bind va queue 0");
        let seen = send_and_count(&mut pool, &mut port, &sniffer, 1, 100, 64);
        assert_eq!(seen, 100, "frames seen on vb from {}", addr(&port));
        // Every TX frame came back; the kernel holds only the fill ring.
        assert_eq!(port.in_flight(), 64);
        assert_eq!(pool.free_count() + port.in_flight(), pool.total());
        assert!(port.counters().wakeups.get() > 0, "copy-mode TX is kicked");
        drop(port);
    });
}

#[test]
fn sockets_on_other_devices_and_queues_share_one_umem() {
    let ns = Netns::new();
    ns.veth("va", "vb", 1, 2);
    ns.veth("vc", "vd", 2, 1);
    ns.run(|| {
        let mut pool = FramePool::new(1024);
        // SAFETY: the ports are dropped at the end of this closure, before
        // `pool`.
        let mut umem = unsafe { Umem::new(&mut pool) }.expect("register UMEM");
        let cfg = XskConfig {
            fill_target: 32,
            ..XskConfig::default()
        };
        let (vb, vd) = (Sniffer::open("vb"), Sniffer::open("vd"));
        let va = ifindex("va").unwrap();
        let mut a0 = XskPort::bind(&mut umem, "va", va, 0, &cfg).expect("bind va q0 (owner)");
        let mut a1 = XskPort::bind(&mut umem, "va", va, 1, &cfg).expect("bind va q1 (shared)");
        let mut c0 = XskPort::bind(&mut umem, "vc", ifindex("vc").unwrap(), 0, &cfg)
            .expect("bind vc q0 (shared)");
        assert_eq!(umem.live_sockets(), 3);
        assert_eq!(send_and_count(&mut pool, &mut a0, &vb, 1, 50, 32), 50);
        assert_eq!(send_and_count(&mut pool, &mut a1, &vb, 1, 50, 32), 50);
        assert_eq!(send_and_count(&mut pool, &mut c0, &vd, 2, 50, 32), 50);
        for p in [&mut a0, &mut a1, &mut c0] {
            p.service(&mut pool);
        }
        let kernel = a0.in_flight() + a1.in_flight() + c0.in_flight();
        assert_eq!(kernel, 3 * 32, "each socket holds its own fill ring");
        assert_eq!(pool.free_count() + kernel, pool.total());
        // The owner may go first: later sockets share from a live one.
        drop(a0);
        let mut a0 = XskPort::bind(&mut umem, "va", va, 0, &cfg).expect("rebind va q0 shared");
        assert_eq!(send_and_count(&mut pool, &mut a0, &vb, 1, 20, 32), 20);
        drop((a0, a1, c0));
        assert_eq!(umem.live_sockets(), 0);
    });
}

#[test]
fn rebinding_right_after_drop_succeeds() {
    let ns = Netns::new();
    ns.veth("va", "vb", 1, 1);
    ns.run(|| {
        let mut pool = FramePool::new(256);
        // SAFETY: every port is dropped inside the loop, before `pool`.
        let mut umem = unsafe { Umem::new(&mut pool) }.expect("register UMEM");
        // No fill stock: after the completions the pool is whole again.
        let cfg = XskConfig {
            fill_target: 0,
            ..XskConfig::default()
        };
        let sniffer = Sniffer::open("vb");
        let va = ifindex("va").unwrap();
        let mut retries = 0;
        for round in 0..5 {
            let mut port = XskPort::bind(&mut umem, "va", va, 0, &cfg)
                .unwrap_or_else(|e| panic!("round {round}: {e}"));
            assert_eq!(send_and_count(&mut pool, &mut port, &sniffer, 1, 10, 0), 10);
            assert_eq!(pool.free_count(), pool.total(), "round {round}");
            retries += port.counters().ebusy_retries.get();
        }
        eprintln!("EBUSY retries over 5 rebinds: {retries}");
    });
}

#[test]
fn bad_parameters_give_typed_errors() {
    let ns = Netns::new();
    ns.veth("va", "vb", 1, 1);
    ns.run(|| {
        let mut pool = FramePool::new(64);
        // SAFETY: the port is dropped at the end of this closure, before
        // `pool`.
        let mut umem = unsafe { Umem::new(&mut pool) }.expect("register UMEM");
        let cfg = XskConfig::default();

        let err = XskPort::bind(&mut umem, "ghost0", 999_999, 0, &cfg)
            .err()
            .expect("bind on a nonexistent ifindex fails");
        assert_eq!(err.step(), Some("bind"), "{err}");
        assert_eq!(err.errno(), Some(libc::ENODEV), "{err}");
        let msg = err.to_string();
        assert!(
            msg.contains("ghost0") && msg.contains("999999") && msg.contains("queue 0"),
            "{msg}"
        );

        let err = XskPort::bind(&mut umem, "va", ifindex("va").unwrap(), 7, &cfg)
            .err()
            .expect("bind on a queue the device lacks fails");
        assert_eq!(err.step(), Some("bind"), "{err}");
        assert_eq!(err.errno(), Some(libc::EINVAL), "{err}");

        let odd = XskConfig {
            rx_size: 1000,
            ..cfg
        };
        assert!(matches!(
            XskPort::bind(&mut umem, "va", 1, 0, &odd),
            Err(XskError::Config { .. })
        ));
        assert!(matches!(
            ifindex("ghost0"),
            Err(XskError::NoInterface { .. })
        ));

        // The failed binds did not spoil the UMEM.
        let port = XskPort::bind(&mut umem, "va", ifindex("va").unwrap(), 0, &cfg)
            .expect("bind after failures");
        drop(port);
    });
}
