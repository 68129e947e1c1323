//! One end-to-end conversation through the pipeline: two smoltcp TCP
//! endpoints, a client pod on node1 and a server pod on node2 behind a
//! ClusterIP, exchange 1 MB through two switches joined by their uplinks
//! (ClusterIP DNAT on node1, VXLAN to node2, policy, reverse NAT on the way
//! back). Handshake, data and FIN; the bytes must arrive intact and the
//! conntrack entries must close.

// Test data is generated from counters on purpose: truncation is intended.
#![allow(clippy::cast_possible_truncation)]

use std::net::Ipv4Addr;

use smoltcp::iface::{Config, Interface, SocketSet};
use smoltcp::phy::{Device, DeviceCapabilities, Medium, RxToken, TxToken};
use smoltcp::socket::tcp;
use smoltcp::time::Instant;
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpAddress, IpCidr, Ipv4Address};
use tables::conntrack::CtState;
use testkit::example::{self, addrs::*, UPLINK_PORT};
use testkit::Node;

use dataplane::port::MemPortHandle;

/// A pod's NIC: what the switch sent to the pod's port is received, what
/// the pod transmits is injected into the switch.
struct PodNic(MemPortHandle);

struct Rx(Vec<u8>);
struct Tx<'a>(&'a MemPortHandle);

impl RxToken for Rx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl TxToken for Tx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut buf = vec![0u8; len];
        let r = f(&mut buf);
        self.0.inject(&buf);
        r
    }
}

impl Device for PodNic {
    type RxToken<'a> = Rx;
    type TxToken<'a> = Tx<'a>;

    fn receive(&mut self, _: Instant) -> Option<(Rx, Tx<'_>)> {
        let frame = self.0.pop_sent()?;
        Some((Rx(frame), Tx(&self.0)))
    }

    fn transmit(&mut self, _: Instant) -> Option<Tx<'_>> {
        Some(Tx(&self.0))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = 1450 + 14; // pod MTU: uplink 1500 - 50
        caps
    }
}

/// A pod: its NIC and an interface configured as the CNI plugin does (the README's "Addresses and pod wiring")
/// (the pod IP as /32, default route via 169.254.1.1; smoltcp also needs a
/// link-local address to accept the gateway's ARP reply).
fn pod(handle: MemPortHandle, ip: Ipv4Addr) -> (PodNic, Interface) {
    let mut nic = PodNic(handle);
    let mac = example::pod_mac(ip);
    let mut config = Config::new(HardwareAddress::Ethernet(EthernetAddress(mac)));
    config.random_seed = u64::from(u32::from(ip));
    let mut iface = Interface::new(config, &mut nic, Instant::from_millis(0));
    let o = ip.octets();
    iface.update_ip_addrs(|addrs| {
        addrs.push(IpCidr::new(IpAddress::Ipv4(ip), 32)).unwrap();
        addrs
            .push(IpCidr::new(IpAddress::v4(169, 254, o[2], o[3]), 16))
            .unwrap();
    });
    iface
        .routes_mut()
        .add_default_ipv4_route(Ipv4Address::new(169, 254, 1, 1))
        .unwrap();
    (nic, iface)
}

fn pod_port(node: &str, ip: Ipv4Addr) -> tables::route::PortId {
    let state = example::state();
    example::attachments(&state, node)
        .iter()
        .find(|p| p.ip == u32::from(ip))
        .unwrap()
        .port
}

#[test]
fn one_megabyte_through_a_cluster_ip_across_nodes() {
    const TOTAL: usize = 1 << 20;
    let mut state = example::state();
    // The service's only backend is web-2 on node2.
    state.services[0]
        .endpoints
        .retain(|e| e.ip.to_string() == WEB_2);
    let mut node1 = Node::new(example::snapshot_of(&state, "node1"));
    let mut node2 = Node::new(example::snapshot_of(&state, "node2"));
    let client_ip: Ipv4Addr = CLIENT.parse().unwrap();
    let server_ip: Ipv4Addr = WEB_2.parse().unwrap();
    let (mut client_nic, mut client) = pod(
        node1.ports[&pod_port("node1", client_ip)].clone(),
        client_ip,
    );
    let (mut server_nic, mut server) = pod(
        node2.ports[&pod_port("node2", server_ip)].clone(),
        server_ip,
    );

    // Each pod has its own sockets: an interface polls every socket in its set.
    let mut client_sockets = SocketSet::new(vec![]);
    let mut server_sockets = SocketSet::new(vec![]);
    let buf = || tcp::SocketBuffer::new(vec![0u8; 256 * 1024]);
    let client_socket = client_sockets.add(tcp::Socket::new(buf(), buf()));
    let server_socket = server_sockets.add(tcp::Socket::new(buf(), buf()));
    server_sockets
        .get_mut::<tcp::Socket>(server_socket)
        .listen(8080)
        .unwrap();
    let vip = IpAddress::v4(10, 96, 0, 20);
    client_sockets
        .get_mut::<tcp::Socket>(client_socket)
        .connect(
            client.context(),
            (vip, 80),
            (IpAddress::Ipv4(client_ip), 49_152),
        )
        .unwrap();

    let payload: Vec<u8> = (0..TOTAL).map(|i| (i * 7 + i / 251) as u8).collect();
    let (mut sent, mut received) = (0usize, Vec::with_capacity(TOTAL));
    let (mut client_closed, mut now) = (false, 0i64);
    for _ in 0..200_000 {
        now += 1;
        let t = Instant::from_millis(now);
        client.poll(t, &mut client_nic, &mut client_sockets);
        server.poll(t, &mut server_nic, &mut server_sockets);
        {
            let s = client_sockets.get_mut::<tcp::Socket>(client_socket);
            if s.can_send() && sent < TOTAL {
                sent += s.send_slice(&payload[sent..]).unwrap();
            }
            if sent == TOTAL && !client_closed {
                s.close();
                client_closed = true;
            }
        }
        {
            let s = server_sockets.get_mut::<tcp::Socket>(server_socket);
            if s.can_recv() {
                s.recv(|data| {
                    received.extend_from_slice(data);
                    (data.len(), ())
                })
                .unwrap();
            }
            if !s.may_recv() && received.len() == TOTAL && s.state() == tcp::State::CloseWait {
                s.close();
            }
        }
        // The switches, and the underlay between their uplinks.
        node1.now_ms = 1_000 + now as u64;
        node2.now_ms = 1_000 + now as u64;
        node1.run();
        node2.run();
        for frame in node1.ports[&UPLINK_PORT].take_sent() {
            node2.inject(UPLINK_PORT, &frame);
        }
        for frame in node2.ports[&UPLINK_PORT].take_sent() {
            node1.inject(UPLINK_PORT, &frame);
        }
        let client_state = client_sockets.get::<tcp::Socket>(client_socket).state();
        let server_state = server_sockets.get::<tcp::Socket>(server_socket).state();
        if client_state == tcp::State::TimeWait && server_state == tcp::State::Closed {
            break;
        }
    }
    eprintln!("the conversation took {now} simulated milliseconds");
    assert_eq!(
        received.len(),
        TOTAL,
        "bytes received; node1 drops {:?}, node2 drops {:?}",
        node1.drop_summary(),
        node2.drop_summary()
    );
    assert!(received == payload, "the bytes arrived changed");
    assert_eq!(
        client_sockets.get::<tcp::Socket>(client_socket).state(),
        tcp::State::TimeWait
    );
    assert_eq!(
        node1.counters.total_drops(),
        0,
        "node1 drops {:?}",
        node1.drop_summary()
    );
    assert_eq!(
        node2.counters.total_drops(),
        0,
        "node2 drops {:?}",
        node2.drop_summary()
    );
    // One flow on each node, closed after the FIN exchange.
    for node in [&node1, &node2] {
        let entries = node.conntrack.dump();
        assert_eq!(entries.len(), 1, "{entries:?}");
        assert!(
            matches!(entries[0].state, CtState::TimeWait | CtState::Close),
            "{:?}",
            entries[0]
        );
    }
    let on_node1 = &node1.conntrack.dump()[0];
    assert_eq!(
        on_node1.orig.dst,
        u32::from(Ipv4Addr::new(10, 96, 0, 20)),
        "node1 saw the ClusterIP"
    );
    assert_eq!(
        on_node1.reply.src,
        u32::from(server_ip),
        "and translated it to the backend"
    );
}
