//! The receive path on a real kernel: frames the kernel transmits into a
//! veth whose other end runs `xdp_port` arrive on the AF_XDP socket bound to
//! that queue, intact, and every frame returns to the pool afterwards.

use std::time::{Duration, Instant};

use afxdp::xdp::{XdpKind, XdpProgram};
use afxdp::xsk::ifindex;
use afxdp::{Umem, XskConfig, XskPort};
use dataplane::frame::{Desc, FramePool};
use dataplane::port::Port;
use testkit::netns::{require_root, Netns};

#[test]
fn frames_sent_into_a_veth_arrive_on_the_socket() {
    require_root();
    let ns = Netns::new("xskrx");
    // Single-queue veths: every frame lands on queue 0.
    ns.ip(&[
        "link",
        "add",
        "va",
        "numrxqueues",
        "1",
        "numtxqueues",
        "1",
        "type",
        "veth",
        "peer",
        "name",
        "vb",
        "numrxqueues",
        "1",
        "numtxqueues",
        "1",
    ]);
    ns.ip(&["link", "set", "va", "up"]);
    ns.ip(&["link", "set", "vb", "up"]);
    ns.ip(&["addr", "add", "198.18.0.1/24", "dev", "vb"]);
    // A static neighbour so the kernel sends IPv4 straight away (no ARP).
    ns.ip(&[
        "neigh",
        "add",
        "198.18.0.2",
        "lladdr",
        "02:00:00:00:00:02",
        "dev",
        "vb",
        "nud",
        "permanent",
    ]);
    let name = ns.name.clone();
    let (received, accounting) = ns.enter(move || {
        let index = ifindex("va").unwrap();
        let mut xdp = XdpProgram::attach(index, XdpKind::Port).unwrap();
        let mut pool = FramePool::new(4096);
        // SAFETY: the port is dropped before the pool at the end of this
        // closure, and only ever used with this pool.
        let mut umem = unsafe { Umem::new(&mut pool) }.unwrap();
        let mut port = XskPort::bind(&mut umem, "va", index, 0, &XskConfig::default()).unwrap();
        xdp.set_socket(0, port.raw_fd()).unwrap();
        port.service(&mut pool); // stock the fill ring
                                 // The kernel sends 20 UDP datagrams out of vb: they enter va.
        let socket = std::net::UdpSocket::bind("198.18.0.1:0").unwrap();
        for i in 0..20u8 {
            socket
                .send_to(&[0xab, i, 0, 0, 0, 0, 0, 0], "198.18.0.2:7777")
                .unwrap();
        }
        let mut got = Vec::new();
        let mut descs = [Desc::default(); 64];
        let deadline = Instant::now() + Duration::from_secs(5);
        while got.len() < 20 && Instant::now() < deadline {
            let n = port.recv(&mut pool, &mut descs);
            for d in &descs[..n] {
                let data = pool.data(*d).unwrap().to_vec();
                // IPv4/UDP to 7777 with our marker: 14 + 20 + 8 bytes of headers.
                if data.len() >= 44
                    && data[12..14] == [8, 0]
                    && data[36..38] == 7777u16.to_be_bytes()
                    && data[42] == 0xab
                {
                    got.push(data[43]);
                }
                pool.free(d.addr);
            }
            port.service(&mut pool);
            std::thread::sleep(Duration::from_millis(5));
        }
        let accounting = (pool.free_count() + port.in_flight(), pool.total());
        xdp.clear_socket(0).unwrap();
        // Out of the map, the port gives every frame back.
        port.close(&mut pool);
        assert_eq!(
            pool.free_count(),
            pool.total(),
            "frames held by a closed port"
        );
        drop(port);
        drop(umem);
        (got, accounting)
    });
    let _ = name;
    let mut sorted = received.clone();
    sorted.sort_unstable();
    assert_eq!(
        sorted,
        (0..20).collect::<Vec<u8>>(),
        "every datagram arrived once"
    );
    assert_eq!(
        accounting.0, accounting.1,
        "frames free + in flight == total"
    );
}
