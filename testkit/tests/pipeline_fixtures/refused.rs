//! Malformed and refused input through the whole pipeline: one case per
//! drop reason, and ICMP errors that quote a flow.

// Test data is generated from counters on purpose: truncation is intended.
#![allow(clippy::cast_possible_truncation)]

use super::*;

#[test]
fn every_class_of_bad_input_is_dropped_with_its_reason() {
    let c = (ip(CLIENT), 1234);
    let w = (ip(WEB_1), 8080);
    let good = || packets::udp(from_pod(CLIENT), c, w, &[1, 2, 3, 4]);
    let edit = |f: fn(&mut Vec<u8>)| {
        let mut g = good();
        f(&mut g);
        g
    };
    let node2_inner = packets::tcp(inner_l2(), (ip(WEB_2), 1), (ip(CLIENT), 2), SYN, b"");
    let from_router = L2 {
        src: ROUTER_MAC,
        dst: n1().uplink_mac,
    };
    let cases: Vec<(&str, PortId, Vec<u8>, DropReason)> = vec![
        (
            "runt frame",
            port(CLIENT),
            good()[..10].to_vec(),
            DropReason::Truncated,
        ),
        (
            "IP header cut short",
            port(CLIENT),
            good()[..24].to_vec(),
            DropReason::BadIpHeader,
        ),
        (
            "IPv6 ethertype",
            port(CLIENT),
            edit(|g| g[12..14].copy_from_slice(&[0x86, 0xdd])),
            DropReason::Ipv6,
        ),
        (
            "unknown ethertype",
            port(CLIENT),
            edit(|g| g[12..14].copy_from_slice(&[0x88, 0xb5])),
            DropReason::UnknownEthertype,
        ),
        (
            "802.1Q tag",
            port(CLIENT),
            {
                let mut g = good();
                g.splice(12..12, [0x81, 0x00, 0x00, 0x05]);
                g
            },
            DropReason::VlanTagged,
        ),
        (
            "bad IP checksum",
            port(CLIENT),
            edit(|g| g[24] ^= 0xff),
            DropReason::BadIpChecksum,
        ),
        (
            "IP total length past the frame",
            port(CLIENT),
            with_ip_checksum(edit(|g| g[16] = 0x05)),
            DropReason::BadIpHeader,
        ),
        (
            "IP version 6 in an IPv4 frame",
            port(CLIENT),
            with_ip_checksum(edit(|g| g[14] = 0x65)),
            DropReason::BadIpHeader,
        ),
        (
            "IP options",
            port(CLIENT),
            with_ip_checksum(edit(|g| {
                g[14] = 0x46;
                g.splice(34..34, [1, 1, 1, 0]);
                let len = u16::from_be_bytes([g[16], g[17]]) + 4;
                g[16..18].copy_from_slice(&len.to_be_bytes());
            })),
            DropReason::IpOptions,
        ),
        (
            "fragment with more to follow and a length not a multiple of 8",
            port(CLIENT),
            with_ip_checksum(edit(|g| g[20] = 0x20)),
            DropReason::FragmentMalformed,
        ),
        (
            "later fragment whose first never came",
            port(CLIENT),
            with_ip_checksum(edit(|g| g[21] = 0x10)),
            DropReason::FragmentNoFirst,
        ),
        (
            "fragment ending past 64 KB",
            port(CLIENT),
            with_ip_checksum(edit(|g| g[20..22].copy_from_slice(&[0x1f, 0xff]))),
            DropReason::FragmentMalformed,
        ),
        (
            "first fragment too short for its TCP header",
            port(CLIENT),
            with_ip_checksum({
                let mut g = packets::tcp(from_pod(CLIENT), c, w, SYN, b"");
                g.truncate(14 + 20 + 8);
                g[16..18].copy_from_slice(&28u16.to_be_bytes());
                g[20] = 0x20;
                g
            }),
            DropReason::FragmentShortFirst,
        ),
        (
            "GRE",
            port(CLIENT),
            with_ip_checksum(edit(|g| g[23] = 47)),
            DropReason::UnsupportedProtocol,
        ),
        (
            "UDP length past the packet",
            port(CLIENT),
            edit(|g| g[38] = 0x40),
            DropReason::BadL4Header,
        ),
        (
            "TCP header cut short",
            port(CLIENT),
            with_ip_checksum(edit(|g| {
                g[23] = 6;
                g[16..18].copy_from_slice(&30u16.to_be_bytes());
            })),
            DropReason::BadL4Header,
        ),
        (
            "ICMP timestamp",
            port(CLIENT),
            with_ip_checksum(edit(|g| {
                g[23] = 1;
                g[34] = 13;
            })),
            DropReason::UnsupportedIcmp,
        ),
        (
            "spoofed source MAC",
            port(CLIENT),
            packets::udp(
                L2 {
                    src: [2, 9, 9, 9, 9, 9],
                    dst: GATEWAY_MAC,
                },
                c,
                w,
                b"",
            ),
            DropReason::SpoofedMac,
        ),
        (
            "spoofed source IP",
            port(CLIENT),
            packets::udp(from_pod(CLIENT), (ip(WEB_1), 1), w, b""),
            DropReason::SpoofedIp,
        ),
        (
            "bad ARP",
            port(CLIENT),
            {
                let mut a =
                    packets::arp_request(mac(CLIENT), ip(CLIENT), tables::route::POD_GATEWAY_IP);
                a[18] = 8;
                a
            },
            DropReason::BadArp,
        ),
        (
            "ARP for another address",
            port(CLIENT),
            packets::arp_request(mac(CLIENT), ip(CLIENT), ip(WEB_1)),
            DropReason::ArpNotForGateway,
        ),
        (
            "ARP from another MAC",
            port(CLIENT),
            packets::arp_request(
                [2, 9, 9, 9, 9, 9],
                ip(CLIENT),
                tables::route::POD_GATEWAY_IP,
            ),
            DropReason::SpoofedMac,
        ),
        (
            "TTL 1",
            port(CLIENT),
            with_ip_checksum(edit(|g| g[22] = 1)),
            DropReason::TtlExceeded,
        ),
        (
            "unknown pod address",
            port(CLIENT),
            packets::udp(from_pod(CLIENT), c, (ip("10.244.1.99"), 1), b""),
            DropReason::NoRoute,
        ),
        (
            "unknown service address",
            port(CLIENT),
            packets::udp(from_pod(CLIENT), c, (ip("10.96.0.99"), 80), b""),
            DropReason::NoService,
        ),
        (
            "service CIDR address no service holds",
            port(CLIENT),
            packets::udp(from_pod(CLIENT), c, (ip("10.96.0.99"), 80), b""),
            DropReason::NoService,
        ),
        (
            "RST cannot start a flow",
            port(CLIENT),
            packets::tcp(from_pod(CLIENT), c, w, tcp::RST, b""),
            DropReason::TcpNoSyn,
        ),
        (
            "uplink frame for nothing we own",
            UPLINK_PORT,
            packets::tcp(from_router, (ip(OUTSIDE), 1), (n1().node_ip, 22), SYN, b""),
            DropReason::NotForSwitch,
        ),
        (
            "ARP on the uplink",
            UPLINK_PORT,
            packets::arp_request(ROUTER_MAC, ip(OUTSIDE), n1().node_ip),
            DropReason::NotForSwitch,
        ),
        (
            "VXLAN from an unknown node",
            UPLINK_PORT,
            packets::vxlan(
                from_router,
                ip("198.18.0.77"),
                n1().node_ip,
                1,
                example::VNI,
                &node2_inner,
            ),
            DropReason::UnknownVtep,
        ),
        (
            "VXLAN with another VNI",
            UPLINK_PORT,
            packets::vxlan(
                L2 {
                    src: n2().uplink_mac,
                    dst: n1().uplink_mac,
                },
                n2().node_ip,
                n1().node_ip,
                1,
                99,
                &node2_inner,
            ),
            DropReason::WrongVni,
        ),
        (
            "VXLAN without the I flag",
            UPLINK_PORT,
            {
                let mut f = from_node2(&node2_inner);
                f[42] = 0;
                f
            },
            DropReason::BadVxlan,
        ),
        (
            "VXLAN with a cut inner frame",
            UPLINK_PORT,
            {
                // Outer lengths consistent with the cut: only the inner
                // frame (10 bytes) is too short.
                let mut f = from_node2(&node2_inner)[..60].to_vec();
                f[16..18].copy_from_slice(&46u16.to_be_bytes());
                f[38..40].copy_from_slice(&26u16.to_be_bytes());
                with_ip_checksum(f)
            },
            DropReason::BadVxlan,
        ),
        (
            "VXLAN to another VTEP MAC",
            UPLINK_PORT,
            from_node2(&packets::tcp(
                L2 {
                    src: n2().vtep_mac,
                    dst: [2, 1, 1, 1, 1, 1],
                },
                (ip(WEB_2), 1),
                (ip(CLIENT), 2),
                SYN,
                b"",
            )),
            DropReason::WrongInnerMac,
        ),
        (
            "VXLAN with another node's pod inside",
            UPLINK_PORT,
            from_node2(&packets::tcp(
                inner_l2(),
                (ip(WEB_1), 1),
                (ip(CLIENT), 2),
                SYN,
                b"",
            )),
            DropReason::SpoofedIp,
        ),
        (
            "ICMP error about no known flow",
            port(CLIENT),
            packets::icmp_unreachable(from_pod(CLIENT), ip(CLIENT), ip(WEB_1), 3, &good()),
            DropReason::IcmpUnrelated,
        ),
    ];
    for (name, p, frame, reason) in cases {
        let mut node = node1();
        let out = node.send(p, &frame);
        assert!(out.is_empty(), "{name}: forwarded {out:?}");
        assert_eq!(
            node.drops(reason),
            1,
            "{name}: expected {reason:?}, counted {:?}",
            node.drop_summary()
        );
        assert_eq!(
            node.counters.total_drops(),
            1,
            "{name}: {:?}",
            node.drop_summary()
        );
    }
}

#[test]
fn icmp_errors_follow_their_flow_through_nat() {
    let (c, vip, backend) = ((ip(CLIENT), 40_010), (ip(WEB_VIP), 80), (ip(WEB_1), 8080));
    let mut node = node_with("node1", |s| web_endpoints(s, &[WEB_1]));
    let syn = packets::tcp(from_pod(CLIENT), c, vip, SYN, b"");
    let out = node.send(port(CLIENT), &syn);
    assert_eq!(out.len(), 1);
    // The backend refuses with a port unreachable quoting what it received.
    let error = packets::icmp_unreachable(from_pod(WEB_1), ip(WEB_1), ip(CLIENT), 3, &out[0].1);
    let out = node.send(port(WEB_1), &error);
    assert_eq!(out.len(), 1, "drops: {:?}", node.drop_summary());
    let f = decode(&out[0].1);
    assert_eq!(
        (f.src, f.dst, f.proto),
        (ip(WEB_VIP), ip(CLIENT), 1),
        "outer header looks like it came from the service"
    );
    // The quoted header now shows the packet the client sent: to the VIP.
    let q = &f.payload;
    assert_eq!(
        u32::from_be_bytes(q[12..16].try_into().unwrap()),
        ip(CLIENT)
    );
    assert_eq!(
        u32::from_be_bytes(q[16..20].try_into().unwrap()),
        ip(WEB_VIP)
    );
    assert_eq!(u16::from_be_bytes(q[22..24].try_into().unwrap()), vip.1);
    let qh = etherparse::Ipv4HeaderSlice::from_slice(&q[..20])
        .unwrap()
        .to_header();
    assert_eq!(
        qh.header_checksum,
        qh.calc_header_checksum(),
        "quoted header checksum"
    );
    let _ = backend;
}

/// `frame` with the IPv4 don't-fragment bit set to `df` (checksum redone).
fn with_df(mut frame: Vec<u8>, df: bool) -> Vec<u8> {
    if df {
        frame[20] |= 0x40;
    } else {
        frame[20] &= !0x40;
    }
    frame[24..26].fill(0);
    let sum = dataplane::wire::checksum::finish(dataplane::wire::checksum::sum(&frame[14..34]));
    frame[24..26].copy_from_slice(&sum.to_be_bytes());
    frame
}

#[test]
fn a_df_packet_too_big_for_the_overlay_gets_fragmentation_needed() {
    let mut node = node1();
    let (c, w) = ((ip(CLIENT), 40_100), (ip(WEB_2), 8080));
    // 1460 bytes of IPv4: 1510 once encapsulated, over the 1500 underlay.
    let big = with_df(
        packets::tcp(from_pod(CLIENT), c, w, tcp::ACK, &[7; 1420]),
        true,
    );
    let out = node.send(port(CLIENT), &big);
    assert_eq!(out.len(), 1, "{:?}", node.drop_summary());
    assert_eq!(out[0].0, port(CLIENT), "answered to the sender");
    let f = decode(&out[0].1);
    assert_eq!((f.src, f.dst, f.proto), (n1().node_ip, c.0, 1));
    assert_eq!(f.dst_mac, mac(CLIENT));
    let icmp = &out[0].1[34..];
    assert_eq!(
        (icmp[0], icmp[1]),
        (3, 4),
        "destination unreachable, fragmentation needed"
    );
    assert_eq!(
        u16::from_be_bytes([icmp[6], icmp[7]]),
        1450,
        "the MTU the overlay leaves"
    );
    assert_eq!(
        &icmp[8..28],
        &big[14..34],
        "the packet's own IPv4 header, quoted"
    );
    assert_eq!(node.drops(DropReason::FragmentationNeeded), 1);
    // One that fits, or that may be fragmented, goes through.
    let fits = with_df(
        packets::tcp(from_pod(CLIENT), c, w, tcp::ACK, &[7; 1410]),
        true,
    );
    let out = node.send(port(CLIENT), &fits);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, UPLINK_PORT);
    let may_fragment = with_df(big.clone(), false);
    let out = node.send(port(CLIENT), &may_fragment);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, UPLINK_PORT);
    // Same node: no encapsulation, no limit.
    let local = with_df(
        packets::tcp(from_pod(CLIENT), c, (ip(WEB_1), 8080), tcp::ACK, &[7; 1420]),
        true,
    );
    let out = node.send(port(CLIENT), &local);
    assert_eq!(out[0].0, port(WEB_1));
}
