//! TAP pod ports on a real kernel: two pods of the example node, each in a
//! namespace this test creates with a TAP device as its `eth0` (wired as the
//! CNI plugin wires a pod: its address /32, a link route to the gateway and
//! a default route through it), the switch's worker between them. A TCP
//! transfer between the pods must arrive intact, and the pods' stacks must
//! hand the switch super-packets (TSO towards the TAP), which it forwards
//! whole. Root is required; namespaces (and the TAPs in them) are deleted
//! when the test ends, also when it fails. Traffic is bounded in bytes and
//! seconds; the worker polls adaptively.

use std::io::{Read, Write};
use std::net::{SocketAddrV4, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use afxdp::runner::{PollMode, Runner};
use afxdp::tap::{TapDevice, TapReadiness, GSO_MAX_SIZE};
use dataplane::counters::Counters;
use dataplane::pipeline::{Pipeline, Shared};
use dataplane::port::PortKind;
use dataplane::worker::Worker;
use tables::snapshot::Publisher;
use testkit::example::{self, addrs::*};
use testkit::fixture::{addr, mac, port};
use testkit::netns::{require_root, Netns};

const BYTES: usize = 64 << 20;
const DEADLINE: Duration = Duration::from_secs(30);

/// A namespace with TAP device `eth0` wired as pod `pod`'s interface; the
/// device's queue is returned for the switch.
fn pod_namespace(tag: &str, pod: &str) -> (Netns, TapDevice) {
    let ns = Netns::new(tag);
    let tap = ns.enter(|| TapDevice::create("eth0", 1).unwrap());
    let m = mac(pod);
    let mac = format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        m[0], m[1], m[2], m[3], m[4], m[5]
    );
    let gso = GSO_MAX_SIZE.to_string();
    ns.ip(&["link", "set", "eth0", "address", &mac, "gso_max_size", &gso]);
    testkit::topology::wire_pod_end(&ns, addr(pod));
    (ns, tap)
}

#[test]
fn tcp_between_tap_pods_moves_super_packets_whole() {
    require_root();
    let (client_ns, client_tap) = pod_namespace("tapc", CLIENT);
    let (web_ns, web_tap) = pod_namespace("tapw", WEB_1);

    let snapshot = example::snapshot("node1");
    let publisher = Arc::new(Publisher::new(snapshot));
    let counters = Arc::new(Counters::new(256));
    let pipeline = Pipeline::new(&Shared::new(1 << 12, 64, 64), counters.clone(), 7);
    let mut worker = Worker::new(1024, 256, publisher, pipeline);
    let readiness = TapReadiness::new().unwrap();
    let registrar = readiness.registrar();
    worker.set_readiness(Box::new(readiness));
    for (pod, tap) in [(CLIENT, client_tap), (WEB_1, web_tap)] {
        let fd = tap.queues.into_iter().next().unwrap();
        let queue = registrar.queue(&format!("tap-{pod}"), fd).unwrap();
        assert!(worker
            .add_port(port(pod), PortKind::Pod, Box::new(queue))
            .is_ok());
    }
    let runner = Runner::start(vec![worker], &[None], PollMode::Adaptive);

    let web = addr(WEB_1);
    let server = {
        let name = web_ns.name.clone();
        std::thread::spawn(move || {
            testkit::netns::enter(&name, move || {
                let listener = TcpListener::bind(SocketAddrV4::new(web, 8080)).unwrap();
                let (mut conn, _) = listener.accept().unwrap();
                conn.set_read_timeout(Some(DEADLINE)).unwrap();
                let mut buf = vec![0u8; 1 << 16];
                let mut got = 0usize;
                let mut sum = 0u64;
                loop {
                    let n = conn.read(&mut buf).unwrap();
                    if n == 0 {
                        break;
                    }
                    sum = buf[..n]
                        .iter()
                        .fold(sum, |s, &b| s.wrapping_add(u64::from(b)));
                    got += n;
                }
                (got, sum)
            })
        })
    };
    let started = Instant::now();
    let sent_sum = client_ns.enter(move || {
        let to = SocketAddrV4::new(web, 8080);
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut conn = loop {
            match TcpStream::connect_timeout(&to.into(), Duration::from_secs(1)) {
                Ok(c) => break c,
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => panic!("connect to {to}: {e}"),
            }
        };
        conn.set_write_timeout(Some(DEADLINE)).unwrap();
        let chunk: Vec<u8> = (0..1 << 16).map(|i: u32| (i % 251) as u8).collect();
        let mut sum = 0u64;
        let mut left = BYTES;
        while left > 0 {
            let n = left.min(chunk.len());
            conn.write_all(&chunk[..n]).unwrap();
            sum = chunk[..n]
                .iter()
                .fold(sum, |s, &b| s.wrapping_add(u64::from(b)));
            left -= n;
        }
        sum
    });
    let (got, got_sum) = server.join().unwrap();
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "{} MB between TAP pods in {secs:.2} s ({:.2} Gbit/s, adaptive polling)",
        got >> 20,
        got as f64 * 8.0 / secs / 1e9
    );
    assert_eq!(got, BYTES, "every byte arrives");
    assert_eq!(got_sum, sent_sum, "and intact");

    let c = &runner.counters()[0];
    let client = c.port(usize::from(port(CLIENT))).unwrap();
    let average = client.rx_bytes.get() / client.rx_packets.get().max(1);
    assert!(
        average > 8_000,
        "the client's stack sent super-packets: {} bytes in {} frames",
        client.rx_bytes.get(),
        client.rx_packets.get()
    );
    assert_eq!(c.gso_split.get(), 0, "TAP to TAP: nothing segmented");
    let mut workers = runner.stop();
    for pod in [CLIENT, WEB_1] {
        assert!(workers[0].remove_port(port(pod)).is_some());
    }
    let pool = workers[0].pool();
    assert_eq!(
        pool.free_count(),
        pool.total(),
        "every frame back in the pool"
    );
}
