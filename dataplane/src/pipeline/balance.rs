//! Stage `balance`: decides the address translation of a new flow.
//!
//! Uses: the service table, session affinity, the route table, conntrack
//! (to find a free masquerade port). Sets: `nat` and `reply` (the reply
//! tuple the conntrack entry will hold). Only packets without a conntrack
//! entry reach it. Next: `police`.
//!
//! - A service frontend: DNAT to a backend chosen by Maglev (or remembered by
//!   affinity); SNAT to the node IP for external traffic with
//!   `externalTrafficPolicy: Cluster` and for hairpin (a pod reaching itself).
//! - No frontend, from a pod, leaving the cluster: SNAT (masquerade).
//! - Anything else passes untranslated; from the uplink nothing but service
//!   frontends may start a flow, and the service CIDR has no other targets.

use tables::affinity::Affinity;
use tables::flow::{flow_hash, FlowKey};
use tables::route::Route;
use tables::service::Frontend;

use super::{pending, Class, Ctx, Meta, Verdict};
use crate::counters::DropReason;
use crate::port::PortKind;
use crate::wire::ipv4;

/// Masquerade source ports are taken from this range (Linux's default
/// ephemeral range), after trying to keep the client's own port.
const SNAT_PORTS: (u16, u16) = (32768, 60999);
const SNAT_TRIES: u64 = 16;

pub(super) fn run(ctx: &Ctx<'_>, metas: &mut [Meta]) {
    for m in pending(metas) {
        if m.class != Class::Flow || m.tracked {
            continue;
        }
        match decide(ctx, m) {
            Ok(reply) => {
                m.reply = reply;
                let target = reply.reversed();
                m.nat = (target != m.key).then_some(target);
            }
            Err(reason) => m.verdict = Verdict::Drop(reason),
        }
    }
}

/// The reply tuple of a new flow.
fn decide(ctx: &Ctx<'_>, m: &Meta) -> Result<FlowKey, DropReason> {
    let key = m.key;
    let snap = ctx.snap;
    if let Some(frontend) = snap.services.lookup(key.dst, key.dport, key.proto) {
        let (ip, port) = pick_backend(ctx, frontend, &key)?;
        let hairpin = ip == key.src;
        let mut reply = FlowKey {
            src: ip,
            dst: key.src,
            sport: port,
            dport: key.sport,
            proto: key.proto,
        };
        if frontend.snat || hairpin {
            reply = masquerade(ctx, reply)?;
        }
        return Ok(reply);
    }
    if ctx.kind == PortKind::Uplink && !m.overlay {
        return Err(DropReason::NotForSwitch);
    }
    if snap.node.service_cidr.contains(key.dst) {
        return Err(DropReason::NoService);
    }
    let reply = key.reversed();
    if m.from_pod
        && matches!(snap.routes.route(key.dst), Route::Uplink)
        && !snap.node.cluster_cidr.contains(key.dst)
    {
        return masquerade(ctx, reply);
    }
    Ok(reply)
}

/// The backend for a new flow to `frontend`: the client's remembered one if
/// affinity is on and it is still a backend, else Maglev's choice.
fn pick_backend(
    ctx: &Ctx<'_>,
    frontend: &Frontend,
    key: &FlowKey,
) -> Result<(u32, u16), DropReason> {
    let identity = (u64::from(key.dst) << 32) | (u64::from(key.dport) << 8) | u64::from(key.proto);
    if frontend.affinity_ms > 0 {
        if let Some(a) = ctx.affinity.get(key.src, identity, ctx.now_ms) {
            if frontend.backends.contains(a.backend_ip, a.backend_port) {
                ctx.affinity
                    .put(key.src, identity, a, ctx.now_ms, frontend.affinity_ms);
                return Ok((a.backend_ip, a.backend_port));
            }
        }
    }
    let backend = frontend
        .backends
        .pick(flow_hash(key, ctx.seed))
        .ok_or(DropReason::NoEndpoints)?;
    if frontend.affinity_ms > 0 {
        let a = Affinity {
            backend_ip: backend.ip,
            backend_port: backend.port,
        };
        ctx.affinity
            .put(key.src, identity, a, ctx.now_ms, frontend.affinity_ms);
    }
    Ok((backend.ip, backend.port))
}

/// Rewrites a reply tuple so replies come back to this node's IP, on a
/// source port no other flow to the same peer uses (the client's own port
/// first, as Linux does).
fn masquerade(ctx: &Ctx<'_>, reply: FlowKey) -> Result<FlowKey, DropReason> {
    let node_ip = ctx.snap.node.node_ip;
    let span = u64::from(SNAT_PORTS.1 - SNAT_PORTS.0) + 1;
    let base = flow_hash(&reply, ctx.seed);
    for attempt in 0..=SNAT_TRIES {
        let port = if attempt == 0 {
            reply.dport
        } else {
            let offset = u16::try_from(base.wrapping_add(attempt.wrapping_mul(0x9e37_79b9)) % span)
                .unwrap_or(0);
            SNAT_PORTS.0 + offset
        };
        let candidate = if reply.proto == ipv4::protocol::ICMP {
            // The echo identifier is both "ports" of an ICMP flow.
            FlowKey {
                dst: node_ip,
                dport: port,
                sport: port,
                ..reply
            }
        } else {
            FlowKey {
                dst: node_ip,
                dport: port,
                ..reply
            }
        };
        if ctx.conntrack.lookup(&candidate).is_none() {
            return Ok(candidate);
        }
    }
    Err(DropReason::SnatExhausted)
}
