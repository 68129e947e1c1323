//! Stage `admit`: decides whether a frame may enter the switch from the port
//! it arrived on, and answers ARP for the pod gateway.
//!
//! Uses: the port's kind, the route table (pods by port, VTEPs), the node
//! config. Sets: `from_pod`, `overlay`; ARP replies get `Tx(in_port)`;
//! decapsulated frames get a new descriptor and re-parsed metadata.
//! Next: `track`.
//!
//! - Pod ports: the frame must come from the pod's own MAC and IP.
//! - Host port: the node's own stack; trusted.
//! - Uplink: VXLAN to this node from a known VTEP with our VNI and our VTEP
//!   MAC inside is decapsulated (the inner source must be a pod of the
//!   sending node); anything else goes on to `track`/`balance`, which accept
//!   only conntrack replies and service frontends.

use tables::route::POD_GATEWAY_IP;

use super::{parse, pending, Class, Ctx, Meta, Verdict};
use crate::counters::DropReason;
use crate::frame::{Desc, FramePool};
use crate::port::PortKind;
use crate::wire::arp::{self, ArpPacket};
use crate::wire::ethernet::EthernetFrame;
use crate::wire::ipv4::{self, Ipv4Packet};
use crate::wire::{UdpPacket, VxlanPacket, VXLAN_HEADER_LEN, VXLAN_PORT};

pub(super) fn run(ctx: &Ctx<'_>, pool: &mut FramePool, metas: &mut [Meta]) {
    for m in pending(metas) {
        let verdict = match ctx.kind {
            PortKind::Pod => admit_pod(ctx, pool, m),
            PortKind::Host => admit_host(ctx, pool, m),
            PortKind::Uplink => admit_uplink(ctx, pool, m),
        };
        if let Err(reason) = verdict {
            m.verdict = Verdict::Drop(reason);
        }
    }
}

fn admit_pod(ctx: &Ctx<'_>, pool: &mut FramePool, m: &mut Meta) -> Result<(), DropReason> {
    let pod = ctx
        .snap
        .routes
        .pod_on_port(ctx.in_port)
        .ok_or(DropReason::UnknownPort)?;
    let frame = pool.data_mut(m.desc).ok_or(DropReason::Truncated)?;
    if EthernetFrame::new_unchecked(&*frame).src_addr() != pod.mac {
        return Err(DropReason::SpoofedMac);
    }
    if m.class == Class::Arp {
        return answer_arp(ctx, frame, m);
    }
    if m.key.src != pod.ip {
        return Err(DropReason::SpoofedIp);
    }
    m.from_pod = true;
    Ok(())
}

fn admit_host(ctx: &Ctx<'_>, pool: &mut FramePool, m: &mut Meta) -> Result<(), DropReason> {
    if m.class == Class::Arp {
        let frame = pool.data_mut(m.desc).ok_or(DropReason::Truncated)?;
        return answer_arp(ctx, frame, m);
    }
    Ok(())
}

/// Turns an ARP request for the pod gateway into the reply, in place. The
/// sender address is not checked: the switch learns nothing from ARP, and
/// the reply only goes back out of the asker's own port (a pod may ask from
/// a link-local address, as some stacks do).
fn answer_arp(ctx: &Ctx<'_>, frame: &mut [u8], m: &mut Meta) -> Result<(), DropReason> {
    let l3 = usize::from(m.l3);
    let (eth, rest) = frame.split_at_mut(l3.min(frame.len()));
    let mut packet = ArpPacket::new_checked(rest).map_err(|_| DropReason::BadArp)?;
    if packet.operation() != arp::operation::REQUEST || packet.target_ip() != POD_GATEWAY_IP {
        return Err(DropReason::ArpNotForGateway);
    }
    let gateway = ctx.snap.node.gateway_mac;
    let (asker_mac, asker_ip) = (packet.sender_mac(), packet.sender_ip());
    packet.set_operation(arp::operation::REPLY);
    packet.set_target_mac(asker_mac);
    packet.set_target_ip(asker_ip);
    packet.set_sender_mac(gateway);
    packet.set_sender_ip(POD_GATEWAY_IP);
    let mut eth = EthernetFrame::new_unchecked(eth);
    eth.set_dst_addr(asker_mac);
    eth.set_src_addr(gateway);
    m.verdict = Verdict::Tx(ctx.in_port);
    ctx.counters.arp_replies.add(1);
    Ok(())
}

fn admit_uplink(ctx: &Ctx<'_>, pool: &mut FramePool, m: &mut Meta) -> Result<(), DropReason> {
    let node = &ctx.snap.node;
    if m.class == Class::Arp {
        return Err(DropReason::NotForSwitch);
    }
    let vxlan = m.key.proto == ipv4::protocol::UDP
        && m.key.dport == VXLAN_PORT
        && m.key.dst == node.node_ip;
    if !vxlan {
        return Ok(());
    }
    let frame = pool.data(m.desc).ok_or(DropReason::Truncated)?;
    let vtep = ctx
        .snap
        .routes
        .vtep(m.key.src)
        .ok_or(DropReason::UnknownVtep)?;
    let l4 = usize::from(m.l4);
    let udp = UdpPacket::new_checked(frame.get(l4..).unwrap_or_default())
        .map_err(|_| DropReason::BadVxlan)?;
    let vx = VxlanPacket::new_checked(udp.payload()).map_err(|_| DropReason::BadVxlan)?;
    if vx.vni() != node.vni {
        return Err(DropReason::WrongVni);
    }
    // The outer IP total length bounds the inner frame (not the buffer).
    let outer_ip = Ipv4Packet::new_unchecked(frame.get(usize::from(m.l3)..).unwrap_or_default());
    let inner_start = l4 + crate::wire::udp::HEADER_LEN + VXLAN_HEADER_LEN;
    let inner_end = usize::from(m.l3) + usize::from(outer_ip.total_len());
    let inner = frame
        .get(inner_start..inner_end)
        .ok_or(DropReason::BadVxlan)?;
    if EthernetFrame::new_checked(inner)
        .map_err(|_| DropReason::BadVxlan)?
        .dst_addr()
        != node.vtep_mac
    {
        return Err(DropReason::WrongInnerMac);
    }
    let parsed = parse::parse_frame(inner)?;
    if parsed.class == Class::Arp {
        return Err(DropReason::NotForSwitch);
    }
    // A node may only send from its own pods or its own address.
    if ctx
        .snap
        .routes
        .remote_owner(parsed.key.src)
        .is_none_or(|v| v.ip != vtep.ip)
    {
        return Err(DropReason::SpoofedIp);
    }
    let start = u64::try_from(inner_start).map_err(|_| DropReason::BadVxlan)?;
    let len = u32::try_from(inner.len()).map_err(|_| DropReason::BadVxlan)?;
    m.desc = Desc {
        addr: m.desc.addr + start,
        len,
    };
    parse::apply(m, &parsed, 0);
    m.overlay = true;
    ctx.counters.decapsulated.add(1);
    Ok(())
}
