//! Super-packets through the whole switch: pods on offload-aware ports (the
//! in-memory stand-in for TAP ports, whose frames carry a virtio-net header)
//! send 64 KB-class TCP segments with partial checksums. To another such
//! pod they pass whole (NAT keeping the checksum partial); to a veth pod and
//! through the overlay they are segmented, every segment checked by
//! etherparse. Lying headers are dropped with their own reasons, and no
//! frame is ever lost from the pool.

// Test data is generated from counters on purpose: truncation is intended.
#![allow(clippy::cast_possible_truncation)]

use dataplane::counters::DropReason;
use dataplane::gso;
use dataplane::wire::checksum;
use dataplane::wire::vnet::{flags, gso_type, Gso, VnetHeader, VNET_HDR_LEN};
use proptest::prelude::*;
use testkit::example::{self, addrs::*, UPLINK_PORT};
use testkit::fixture::{from_node2, from_pod, inner_l2, n1, n2, port, web_endpoints};
use testkit::packets::{self, ip, tcp, L2};
use testkit::{decode, Frame, Node};

const MSS: u16 = 1398;

/// node1 with CLIENT and WEB_1 on TAP ports, DB on a veth port.
fn node() -> Node {
    let mut state = example::state();
    web_endpoints(&mut state, &[WEB_1]);
    Node::with_taps(
        example::snapshot_of(&state, "node1"),
        &[port(CLIENT), port(WEB_1)],
    )
}

/// What a sender with TSO and checksum offload hands its TAP device: one
/// TCP segment of `len` payload bytes whose checksum field holds the
/// pseudo-header sum, behind a virtio-net header asking for segments of
/// `MSS` bytes.
fn super_packet(l2: L2, src: (u32, u16), dst: (u32, u16), len: usize) -> (Vec<u8>, Vec<u8>) {
    let payload: Vec<u8> = (0..len).map(|i| (i * 13 + 5) as u8).collect();
    let mut frame = packets::tcp_seq(l2, src, dst, tcp::ACK | tcp::PSH, 7_000, 1, &payload);
    let l4_len = u16::try_from(frame.len() - 34).unwrap();
    let pseudo = checksum::fold(checksum::pseudo_header(src.0, dst.0, 6, l4_len));
    frame[50..52].copy_from_slice(&pseudo.to_be_bytes());
    let header = VnetHeader {
        flags: flags::NEEDS_CSUM,
        gso_type: gso_type::TCPV4,
        hdr_len: 54,
        gso_size: MSS,
        csum_start: 34,
        csum_offset: 16,
    };
    (with_header(&header, &frame), payload)
}

fn with_header(header: &VnetHeader, frame: &[u8]) -> Vec<u8> {
    let mut bytes = vec![0; VNET_HDR_LEN];
    header.emit(&mut bytes).unwrap();
    bytes.extend_from_slice(frame);
    bytes
}

/// A frame out of a TAP port: its header checked against it, its partial
/// checksum completed, then decoded (every checksum verified).
fn from_tap(bytes: &[u8]) -> (VnetHeader, Frame) {
    let header = VnetHeader::parse(bytes).unwrap();
    let mut frame = bytes[VNET_HDR_LEN..].to_vec();
    header.check(&frame).unwrap();
    if header.needs_csum() {
        gso::complete_checksum(&mut frame).unwrap();
    }
    (header, decode(&frame))
}

fn assert_no_frame_lost(node: &Node) {
    let pool = node.worker.pool();
    assert_eq!(
        pool.free_count(),
        pool.total(),
        "every frame back in the pool"
    );
}

#[test]
fn a_super_packet_passes_whole_to_a_tap_pod() {
    let mut node = node();
    let (c, w) = ((ip(CLIENT), 40_000), (ip(WEB_1), 8080));
    let (bytes, payload) = super_packet(from_pod(CLIENT), c, w, 60_000);
    let out = node.send(port(CLIENT), &bytes);
    assert_eq!(out.len(), 1, "one frame: {:?}", node.drop_summary());
    assert_eq!(out[0].0, port(WEB_1));
    let (header, frame) = from_tap(&out[0].1);
    assert_eq!(
        header.check(&out[0].1[VNET_HDR_LEN..]),
        Ok(Gso::TcpV4 {
            size: MSS,
            ecn: false
        })
    );
    assert_eq!((header.csum_start, header.csum_offset), (34, 16));
    assert_eq!(
        (frame.src, frame.sport, frame.dst, frame.dport),
        (c.0, c.1, w.0, w.1)
    );
    assert_eq!(frame.ttl, 63);
    assert_eq!(frame.payload, payload);
    assert_eq!(node.counters.gso_split.get(), 0, "nothing segmented");
    assert_no_frame_lost(&node);
}

#[test]
fn a_super_packet_through_a_cluster_ip_keeps_its_partial_checksum() {
    let mut node = node();
    let (c, vip, backend) = ((ip(CLIENT), 40_001), (ip(WEB_VIP), 80), (ip(WEB_1), 8080));
    let (bytes, payload) = super_packet(from_pod(CLIENT), c, vip, 30_000);
    let out = node.send(port(CLIENT), &bytes);
    assert_eq!(out.len(), 1, "one frame: {:?}", node.drop_summary());
    assert_eq!(out[0].0, port(WEB_1));
    let (header, frame) = from_tap(&out[0].1);
    assert!(
        header.needs_csum(),
        "still partial for the receiver's stack"
    );
    assert_eq!((frame.dst, frame.dport), backend, "DNAT to the backend");
    assert_eq!(frame.payload, payload);
    // The backend's answer, a super-packet too, is translated back.
    let (reply, reply_payload) = super_packet(from_pod(WEB_1), backend, c, 20_000);
    let out = node.send(port(WEB_1), &reply);
    assert_eq!(out.len(), 1, "one frame: {:?}", node.drop_summary());
    let (_, frame) = from_tap(&out[0].1);
    assert_eq!((frame.src, frame.sport), vip, "reverse NAT");
    assert_eq!(frame.payload, reply_payload);
    assert_no_frame_lost(&node);
}

#[test]
fn a_super_packet_to_a_veth_pod_is_segmented() {
    let mut node = node();
    let (c, d) = ((ip(WEB_1), 40_002), (ip(DB), 5432));
    let (bytes, payload) = super_packet(from_pod(WEB_1), c, d, 20_000);
    let out = node.send(port(WEB_1), &bytes);
    let expected = 20_000usize.div_ceil(usize::from(MSS));
    assert_eq!(out.len(), expected, "segments: {:?}", node.drop_summary());
    let mut whole = Vec::new();
    for (to, seg) in &out {
        assert_eq!(*to, port(DB));
        assert!(seg.len() <= 14 + 20 + 20 + usize::from(MSS));
        let frame = decode(seg);
        assert_eq!((frame.dst, frame.dport), d);
        whole.extend(frame.payload);
    }
    assert_eq!(whole, payload, "segments carry the payload in order");
    assert_eq!(node.counters.gso_split.get(), 1);
    assert_eq!(node.counters.gso_segments.get(), expected as u64);
    assert_no_frame_lost(&node);
}

#[test]
fn a_super_packet_to_another_node_is_segmented_inside_vxlan() {
    let mut node = node();
    let (c, w) = ((ip(CLIENT), 40_003), (ip(WEB_2), 8080));
    let (bytes, payload) = super_packet(from_pod(CLIENT), c, w, 10_000);
    let out = node.send(port(CLIENT), &bytes);
    assert_eq!(out.len(), 10_000usize.div_ceil(usize::from(MSS)));
    let mut whole = Vec::new();
    for (to, seg) in &out {
        assert_eq!(*to, UPLINK_PORT);
        let outer = decode(seg);
        assert_eq!(
            (outer.src, outer.dst, outer.dport),
            (n1().node_ip, n2().node_ip, 4789)
        );
        let (vni, inner) = outer.vxlan.expect("VXLAN");
        assert_eq!(vni, example::VNI);
        assert_eq!((inner.dst, inner.dport), w);
        whole.extend(inner.payload);
    }
    assert_eq!(whole, payload);
    let sports: std::collections::HashSet<u16> =
        out.iter().map(|(_, seg)| decode(seg).sport).collect();
    assert_eq!(sports.len(), 1, "one VXLAN source port per flow");
    assert_no_frame_lost(&node);
}

#[test]
fn a_small_frame_with_a_partial_checksum_is_completed_for_a_veth_pod() {
    let mut node = node();
    let (c, d) = ((ip(WEB_1), 40_004), (ip(DB), 5432));
    let (bytes, payload) = super_packet(from_pod(WEB_1), c, d, 100);
    let mut header = VnetHeader::parse(&bytes).unwrap();
    header.gso_type = gso_type::NONE;
    header.gso_size = 0;
    let bytes = with_header(&header, &bytes[VNET_HDR_LEN..]);
    let out = node.send(port(WEB_1), &bytes);
    assert_eq!(out.len(), 1, "{:?}", node.drop_summary());
    assert_eq!(
        decode(&out[0].1).payload,
        payload,
        "checksum verified by decode"
    );
    assert_eq!(node.counters.csum_completed.get(), 1);
    // A TAP frame whose checksum is complete is copied, not completed.
    let whole = packets::tcp(from_pod(WEB_1), c, d, tcp::ACK, b"done");
    let out = node.send(port(WEB_1), &with_header(&VnetHeader::default(), &whole));
    assert_eq!(out.len(), 1, "{:?}", node.drop_summary());
    assert_eq!(decode(&out[0].1).payload, b"done");
    assert_eq!(node.counters.csum_completed.get(), 1, "nothing to complete");
    // And a veth pod's frame reaches a TAP pod with an empty header.
    let from_db = packets::tcp(from_pod(DB), d, c, tcp::ACK, b"ok");
    let out = node.send(port(DB), &from_db);
    assert_eq!(out.len(), 1, "{:?}", node.drop_summary());
    let (header, frame) = from_tap(&out[0].1);
    assert_eq!(header, VnetHeader::default());
    assert_eq!(frame.payload, b"ok");
    assert_no_frame_lost(&node);
}

/// A header edited by `edit` on an otherwise good super-packet, and the
/// reason it must be dropped for.
fn lying(edit: impl FnOnce(&mut VnetHeader), reason: DropReason) {
    let mut node = node();
    let (c, d) = ((ip(WEB_1), 40_005), (ip(DB), 5432));
    let (bytes, _) = super_packet(from_pod(WEB_1), c, d, 3_000);
    let mut header = VnetHeader::parse(&bytes).unwrap();
    edit(&mut header);
    let out = node.send(port(WEB_1), &with_header(&header, &bytes[VNET_HDR_LEN..]));
    assert!(out.is_empty(), "{reason:?}: nothing forwarded, got {out:?}");
    assert_eq!(
        node.drops(reason),
        1,
        "{reason:?}: {:?}",
        node.drop_summary()
    );
    assert_no_frame_lost(&node);
}

#[test]
fn headers_that_lie_are_dropped_with_their_reasons() {
    lying(|h| h.gso_size = 0, DropReason::VnetGsoSizeZero);
    lying(|h| h.gso_size = 4_000, DropReason::VnetGsoSizeTooLarge);
    lying(|h| h.hdr_len = 9_000, DropReason::VnetHdrLenPastEnd);
    lying(|h| h.gso_type = 9, DropReason::VnetUnknownGsoType);
    lying(|h| h.flags |= 0x10, DropReason::VnetUnknownFlags);
    lying(
        |h| h.csum_start = 8_000,
        DropReason::VnetChecksumOutsideFrame,
    );
    lying(|h| h.csum_offset = 6, DropReason::VnetChecksumNotL4);
    lying(|h| h.flags = 0, DropReason::VnetGsoWithoutChecksum);
    lying(
        |h| h.gso_type = gso_type::UDP_L4,
        DropReason::GsoUnsupported,
    );
    lying(|h| h.gso_size = 10, DropReason::GsoTooManySegments);
}

#[test]
fn gso_on_a_protocol_that_cannot_have_it_is_dropped() {
    let mut node = node();
    let (c, d) = ((ip(WEB_1), 40_006), (ip(DB), 5432));
    let udp = packets::udp(from_pod(WEB_1), c, d, &[1; 3000]);
    let header = VnetHeader {
        gso_type: gso_type::TCPV4,
        gso_size: 1000,
        flags: flags::NEEDS_CSUM,
        csum_start: 34,
        csum_offset: 6,
        hdr_len: 42,
    };
    let out = node.send(port(WEB_1), &with_header(&header, &udp));
    assert!(out.is_empty());
    assert_eq!(node.drops(DropReason::GsoWrongProtocol), 1);
    let mut huge = packets::tcp(from_pod(WEB_1), c, d, tcp::ACK, &[2; 65_400]);
    huge.resize(70_000, 0);
    let too_large = with_header(&VnetHeader::default(), &huge);
    assert!(node.send(port(WEB_1), &too_large).is_empty());
    assert_eq!(node.drops(DropReason::VnetTooLarge), 1);
    assert!(
        node.send(port(WEB_1), &[0; 4]).is_empty(),
        "shorter than a header"
    );
    assert_eq!(node.drops(DropReason::Truncated), 1);
    assert_no_frame_lost(&node);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Random headers over good and damaged super-packets, to TAP, veth and
    /// remote destinations: never a panic, every frame back in the pool,
    /// and whatever leaves decodes with valid checksums.
    #[test]
    fn random_headers_and_frames_through_the_tap_path(
        header in (any::<u8>(), any::<u8>(), any::<u16>(), 0u16..3000, 0u16..200, 0u16..40),
        dst in 0usize..3,
        len in 0usize..5000,
        edits in prop::collection::vec((0usize..80, any::<u8>()), 0..4),
        cut in 0usize..6000,
    ) {
        let mut node = node();
        let (from, to): (&str, (u32, u16)) =
            [(CLIENT, (ip(WEB_1), 8080)), (WEB_1, (ip(DB), 5432)), (CLIENT, (ip(WEB_2), 8080))][dst];
        let (bytes, _) = super_packet(from_pod(from), (ip(from), 40_100), to, len);
        let mut frame = bytes[VNET_HDR_LEN..].to_vec();
        for (at, byte) in edits {
            if let Some(b) = frame.get_mut(at) {
                *b = byte;
            }
        }
        frame.truncate(cut);
        let (flags, gso_type, hdr_len, gso_size, csum_start, csum_offset) = header;
        let header = VnetHeader { flags, gso_type, hdr_len, gso_size, csum_start, csum_offset };
        let out = node.send(port(from), &with_header(&header, &frame));
        // A frame without NEEDS_CSUM is forwarded with the checksum it came
        // with (the switch checks none): only completed ones must verify.
        if header.needs_csum() {
            for (to, bytes) in &out {
                if *to == port(WEB_1) {
                    from_tap(bytes);
                } else {
                    decode(bytes);
                }
            }
        }
        let pool = node.worker.pool();
        prop_assert_eq!(pool.free_count(), pool.total());
    }
}

/// `count` segments of `MSS` bytes of one flow from a pod of node2 to
/// WEB_1, as the overlay carries them (the last with PSH), and their
/// payload.
fn overlay_segments(count: usize, sport: u16) -> (Vec<Vec<u8>>, Vec<u8>) {
    let (src, dst) = ((ip(WEB_2), sport), (ip(WEB_1), 8080));
    let mut frames = Vec::new();
    let mut whole = Vec::new();
    for i in 0..count {
        let payload: Vec<u8> = (0..usize::from(MSS)).map(|b| (b * 7 + i) as u8).collect();
        let push = if i + 1 == count { tcp::PSH } else { 0 };
        let seq = 1_000 + (i * usize::from(MSS)) as u32;
        let inner = packets::tcp_seq(inner_l2(), src, dst, tcp::ACK | push, seq, 9, &payload);
        frames.push(from_node2(&inner));
        whole.extend(payload);
    }
    (frames, whole)
}

#[test]
fn segments_from_the_overlay_reach_a_tap_pod_as_one_super_packet() {
    let mut node = node();
    let (frames, payload) = overlay_segments(20, 45_000);
    for f in &frames {
        node.inject(UPLINK_PORT, f);
    }
    node.run();
    let out = node.take_all();
    assert_eq!(out.len(), 1, "one super-packet: {:?}", node.drop_summary());
    assert_eq!(out[0].0, port(WEB_1));
    let (header, frame) = from_tap(&out[0].1);
    assert_eq!(
        header.check(&out[0].1[VNET_HDR_LEN..]),
        Ok(Gso::TcpV4 {
            size: MSS,
            ecn: false
        })
    );
    assert_eq!(frame.payload, payload, "payload in order");
    assert_eq!((frame.src, frame.sport), (ip(WEB_2), 45_000));
    assert_eq!(node.counters.gro_merged.get(), 1);
    assert_eq!(node.counters.gro_segments.get(), 20);
    assert_no_frame_lost(&node);
}

#[test]
fn what_linux_would_not_merge_passes_as_it_is() {
    let mut node = node();
    let (mut a, _) = overlay_segments(6, 45_001);
    let (b, _) = overlay_segments(2, 45_002);
    // A bad TCP checksum on segment 3 (inner checksum field).
    let at = a[2].len() - usize::from(MSS) - 20 + 16;
    a[2][at] ^= 0xff;
    // Another flow's segments between segments 4 and 5.
    let burst = [&a[0], &a[1], &a[2], &a[3], &b[0], &b[1], &a[4], &a[5]];
    for f in burst {
        node.inject(UPLINK_PORT, f);
    }
    node.run();
    let out = node.take_all();
    // [a0 a1] [a2: bad] [a3] [b0 b1] [a4 a5]
    assert_eq!(out.len(), 5, "{:?}", node.drop_summary());
    assert_eq!(node.counters.gro_merged.get(), 3);
    assert_eq!(node.counters.gro_segments.get(), 6);
    let sizes: Vec<usize> = out.iter().map(|(_, f)| f.len() - VNET_HDR_LEN).collect();
    let one = 14 + 20 + 20 + usize::from(MSS);
    assert_eq!(
        sizes,
        [
            one + usize::from(MSS),
            one,
            one,
            one + usize::from(MSS),
            one + usize::from(MSS)
        ]
    );
    let bad = VnetHeader::parse(&out[1].1).unwrap();
    assert_eq!(
        bad,
        VnetHeader::default(),
        "the bad segment passes untouched"
    );
    assert_no_frame_lost(&node);
}
