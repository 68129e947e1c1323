//! Stage `forward`: routes each packet and rewrites it for its next hop.
//!
//! Uses: the route table, node config, `nat`. Sets: the verdict `Tx(port)`,
//! and the descriptor (VXLAN encapsulation prepends 50 bytes in the frame's
//! headroom). Rewrites in place: NAT (incremental checksums; a later
//! fragment's addresses only), TTL, MACs. Records each first fragment it
//! sends in the fragment table, for its datagram's later fragments.
//! Next: the worker transmits.
//!
//! Destinations: a local pod (its port, its MAC), the node itself (host
//! port), a remote pod or node (VXLAN to its VTEP), or outside the cluster
//! (the uplink, to the node's gateway).

use tables::flow::flow_hash;
use tables::route::{NodeConfig, Route, Vtep};

use super::{fragment, nat, pending, reject, Class, Ctx, Meta, Verdict};
use crate::counters::DropReason;
use crate::frame::{Desc, FramePool};
use crate::port::PortKind;
use crate::wire::checksum::update16;
use crate::wire::ethernet::{self, EthernetFrame, EthernetRepr};
use crate::wire::ipv4::{self, Ipv4Packet, Ipv4Repr};
use crate::wire::{UdpRepr, VxlanRepr, ENCAP_OVERHEAD, VXLAN_PORT};

/// VXLAN source ports come from Linux's default range for tunnels
/// (`ip_local_port_range`), picked by the inner flow's hash.
const VXLAN_SPORTS: (u16, u16) = (32768, 60999);

pub(super) fn run(ctx: &Ctx<'_>, pool: &mut FramePool, metas: &mut [Meta]) {
    for m in pending(metas) {
        let done = fragment::follow(ctx, m)
            .and_then(|()| forward(ctx, pool, m))
            .and_then(|()| fragment::record_first(ctx, m));
        if let Err(reason) = done {
            m.verdict = Verdict::Drop(reason);
        }
    }
}

fn forward(ctx: &Ctx<'_>, pool: &mut FramePool, m: &mut Meta) -> Result<(), DropReason> {
    if m.class == Class::Arp {
        return Err(DropReason::BadArp);
    }
    let node = &ctx.snap.node;
    let dst = m.nat.map_or(m.key.dst, |t| t.dst);
    let route = ctx.snap.routes.route(dst);
    // Only a TAP port's frames come in large chunks, and only they can be
    // super-packets (segmented to fit, never too big).
    let super_packet = m.desc.is_large() && pool.vnet(m.desc).gso_size != 0;
    let frame = pool.data_mut(m.desc).ok_or(DropReason::Truncated)?;
    let (l3, l4) = (usize::from(m.l3), usize::from(m.l4));
    if matches!(route, Route::Remote(_)) && !super_packet && too_big_for_the_overlay(ctx, frame, m)
    {
        return fragmentation_needed(ctx, pool, m);
    }
    decrement_ttl(frame, l3)?;
    if let Some(to) = m.nat {
        match m.class {
            Class::IcmpError => {
                nat::rewrite_icmp_error(frame, l3, l4, usize::from(m.inner_l3), &m.inner, &to)
            }
            Class::Fragment => nat::rewrite_addresses(frame, l3, &m.key, &to),
            _ if m.partial_csum => nat::rewrite_partial(frame, l3, l4, &m.key, &to),
            _ => nat::rewrite(frame, l3, l4, &m.key, &to),
        }
    }
    let (port, dst_mac, src_mac) = match route {
        Route::LocalPod(pod) => (pod.port, pod.mac, node.gateway_mac),
        Route::Host => (
            node.host_port.ok_or(DropReason::NoHostPort)?,
            node.host_mac,
            node.gateway_mac,
        ),
        Route::Remote(vtep) => {
            let hash = flow_hash(&m.nat.unwrap_or(m.key), ctx.seed);
            m.desc = encapsulate(pool, m.desc, node, vtep, hash)?;
            ctx.counters.encapsulated.add(1);
            m.verdict = Verdict::Tx(node.uplink_port);
            return Ok(());
        }
        Route::Uplink => {
            if ctx.kind == PortKind::Uplink && !m.overlay {
                return Err(DropReason::Hairpin);
            }
            let routes = &ctx.snap.routes;
            let next_hop = routes
                .neighbour(dst)
                .or_else(|| routes.vtep(dst).map(|v| v.underlay_mac))
                .unwrap_or(node.uplink_gateway_mac);
            if next_hop == [0; 6] {
                return Err(DropReason::NoNextHop);
            }
            (node.uplink_port, next_hop, node.uplink_mac)
        }
        Route::Unreachable => return Err(DropReason::NoRoute),
    };
    let mut eth = EthernetFrame::new_unchecked(frame);
    eth.set_dst_addr(dst_mac);
    eth.set_src_addr(src_mac);
    m.verdict = Verdict::Tx(port);
    Ok(())
}

/// Whether `m` (not a super-packet) in `frame` has don't-fragment set and
/// would not fit the underlay's MTU once encapsulated. An ICMP error is
/// never answered with another.
fn too_big_for_the_overlay(ctx: &Ctx<'_>, frame: &[u8], m: &Meta) -> bool {
    let mtu = usize::from(ctx.snap.node.uplink_mtu);
    // The frame's length bounds the packet's: most packets fit by it alone.
    let at_most = (m.desc.len as usize).saturating_sub(usize::from(m.l3)) + ENCAP_OVERHEAD;
    if mtu == 0 || at_most <= mtu || m.class != Class::Flow {
        return false;
    }
    let Some(ip) = frame.get(usize::from(m.l3)..) else {
        return false;
    };
    let ip = Ipv4Packet::new_unchecked(ip);
    // Outer IPv4 + UDP + VXLAN + inner Ethernet in front of the packet (as
    // many bytes as the encapsulation with its outer Ethernet header).
    ip.dont_frag() && usize::from(ip.total_len()) + ENCAP_OVERHEAD > mtu
}

/// Answers `m` with ICMP "fragmentation needed" from the node, giving the
/// MTU the overlay leaves (RFC 1191), out of the port it came in on.
fn fragmentation_needed(
    ctx: &Ctx<'_>,
    pool: &mut FramePool,
    m: &mut Meta,
) -> Result<(), DropReason> {
    let node = &ctx.snap.node;
    let overhead = u16::try_from(ENCAP_OVERHEAD).unwrap_or(u16::MAX);
    let kind = reject::Unreachable::FragmentationNeeded {
        from: node.node_ip,
        mtu: node.uplink_mtu.saturating_sub(overhead),
    };
    reject::unreachable(pool, m, kind).ok_or(DropReason::FragmentationNeeded)?;
    ctx.counters.count_drop(DropReason::FragmentationNeeded);
    ctx.counters.rejects.add(1);
    m.nat = None;
    m.verdict = Verdict::Tx(ctx.in_port);
    Ok(())
}

/// Decrements the TTL (updating the header checksum); a packet that would
/// leave with TTL 0 is dropped.
fn decrement_ttl(frame: &mut [u8], l3: usize) -> Result<(), DropReason> {
    let mut ip = Ipv4Packet::new_unchecked(frame.get_mut(l3..).ok_or(DropReason::Truncated)?);
    let ttl = ip.ttl();
    if ttl <= 1 {
        return Err(DropReason::TtlExceeded);
    }
    // TTL shares its 16-bit checksum word with the protocol byte.
    let proto = u16::from(ip.protocol());
    let old = (u16::from(ttl) << 8) | proto;
    let new = (u16::from(ttl - 1) << 8) | proto;
    let csum = update16(ip.checksum(), old, new);
    ip.set_ttl(ttl - 1);
    ip.set_checksum(csum);
    Ok(())
}

/// Prepends outer Ethernet, IPv4, UDP and VXLAN headers in the headroom, the
/// way Linux's `vxlan` device does: UDP destination 4789, source port from
/// the inner flow hash, outer UDP checksum 0, TTL 64, inner MACs from VTEP
/// to VTEP.
pub fn encapsulate(
    pool: &mut FramePool,
    desc: Desc,
    node: &NodeConfig,
    vtep: &Vtep,
    hash: u64,
) -> Result<Desc, DropReason> {
    let overhead = u32::try_from(ENCAP_OVERHEAD).unwrap_or(u32::MAX);
    if desc.headroom() < overhead {
        return Err(DropReason::FrameTooBig);
    }
    let outer = Desc {
        addr: desc.addr - u64::from(overhead),
        len: desc.len + overhead,
    };
    let inner_len = usize::try_from(desc.len).map_err(|_| DropReason::FrameTooBig)?;
    let buf = pool.data_mut(outer).ok_or(DropReason::FrameTooBig)?;
    {
        let mut inner = EthernetFrame::new_unchecked(&mut buf[ENCAP_OVERHEAD..]);
        inner.set_dst_addr(vtep.vtep_mac);
        inner.set_src_addr(node.vtep_mac);
    }
    let span = u64::from(VXLAN_SPORTS.1 - VXLAN_SPORTS.0) + 1;
    let sport = VXLAN_SPORTS.0 + u16::try_from(hash % span).unwrap_or(0);
    let udp_len = inner_len + crate::wire::udp::HEADER_LEN + crate::wire::VXLAN_HEADER_LEN;
    let eth = EthernetRepr {
        dst_addr: vtep.underlay_mac,
        src_addr: node.uplink_mac,
        ethertype: ethernet::ethertype::IPV4,
    };
    let ip = Ipv4Repr {
        src_addr: node.node_ip,
        dst_addr: vtep.ip,
        protocol: ipv4::protocol::UDP,
        ttl: 64,
        dscp_ecn: 0,
        ident: 0,
        dont_frag: false,
        payload_len: udp_len,
    };
    let udp = UdpRepr {
        src_port: sport,
        dst_port: VXLAN_PORT,
        payload_len: udp_len - crate::wire::udp::HEADER_LEN,
    };
    let emitted = eth
        .emit(&mut buf[..])
        .and_then(|()| ip.emit(&mut buf[ethernet::HEADER_LEN..]))
        .and_then(|()| udp.emit(&mut buf[ethernet::HEADER_LEN + ipv4::HEADER_LEN..]))
        .and_then(|()| {
            VxlanRepr { vni: node.vni }
                .emit(&mut buf[ENCAP_OVERHEAD - crate::wire::VXLAN_HEADER_LEN..])
        });
    emitted.map_err(|_| DropReason::FrameTooBig)?;
    Ok(outer)
}
