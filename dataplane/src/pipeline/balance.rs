//! Stage `balance`: decides the address translation of a new flow.
//!
//! Uses: the service table, session affinity, the route table. Sets:
//! `reply` (the reply tuple the conntrack entry should hold: `police` may
//! still move its destination port to make it unique), `masquerade`, or
//! `reject`. Only packets without a conntrack entry reach it, and a
//! mid-stream packet (a TCP flow picked up after a restart or an eviction)
//! is decided exactly as its SYN was: Maglev maps the same tuple to the
//! same backend while the backend set is unchanged. Next: `police`.
//!
//! - A service frontend: DNAT to a backend chosen by Maglev (or remembered by
//!   affinity); SNAT to the node IP for external traffic with
//!   `externalTrafficPolicy: Cluster` and for hairpin (a pod reaching itself).
//!   With no backend: rejected when the service port has no endpoint
//!   anywhere, dropped when a traffic policy `Local` leaves none here
//!   (kube-proxy's "has no endpoints" / "has no local endpoints").
//! - A cluster IP on a port no service declares: rejected; any other
//!   service CIDR address: dropped (kube-proxy's nftables mode).
//! - No frontend, from a pod, leaving the cluster: SNAT (masquerade).
//! - Anything else passes untranslated; from the uplink nothing but service
//!   frontends may start a flow.

use tables::affinity::Affinity;
use tables::flow::{flow_hash, FlowKey};
use tables::route::Route;
use tables::service::Frontend;

use super::{pending, Class, Ctx, Meta, Verdict};
use crate::counters::DropReason;
use crate::port::PortKind;

/// Why a new flow does not go ahead.
enum Refusal {
    Drop(DropReason),
    /// Answered with a TCP RST or an ICMP port unreachable.
    Reject(DropReason),
}

impl From<DropReason> for Refusal {
    fn from(r: DropReason) -> Refusal {
        Refusal::Drop(r)
    }
}

pub(super) fn run(ctx: &Ctx<'_>, metas: &mut [Meta]) {
    for m in pending(metas) {
        if m.class != Class::Flow || m.tracked {
            continue;
        }
        match decide(ctx, m) {
            Ok((reply, masquerade)) => {
                m.reply = reply;
                m.masquerade = masquerade;
            }
            Err(Refusal::Drop(reason)) => m.verdict = Verdict::Drop(reason),
            Err(Refusal::Reject(reason)) => m.reject = Some(reason),
        }
    }
}

/// The reply tuple of a new flow, and whether it is masqueraded.
fn decide(ctx: &Ctx<'_>, m: &Meta) -> Result<(FlowKey, bool), Refusal> {
    let key = m.key;
    let snap = ctx.snap;
    if let Some(frontend) = snap.services.lookup(key.dst, key.dport, key.proto) {
        let (ip, port) = pick_backend(ctx, frontend, &key)?;
        let hairpin = ip == key.src;
        let reply = FlowKey {
            src: ip,
            dst: key.src,
            sport: port,
            dport: key.sport,
            proto: key.proto,
        };
        if frontend.snat || hairpin {
            return Ok((masquerade(ctx, reply), true));
        }
        return Ok((reply, false));
    }
    if ctx.kind == PortKind::Uplink && !m.overlay {
        return Err(DropReason::NotForSwitch.into());
    }
    if snap.services.is_cluster_ip(key.dst) {
        return Err(Refusal::Reject(DropReason::NoServicePort));
    }
    if snap.node.service_cidr.contains(key.dst) {
        return Err(DropReason::NoService.into());
    }
    let reply = key.reversed();
    if m.from_pod
        && matches!(snap.routes.route(key.dst), Route::Uplink)
        && !snap.node.cluster_cidr.contains(key.dst)
    {
        return Ok((masquerade(ctx, reply), true));
    }
    Ok((reply, false))
}

/// The backend for a new flow to `frontend`: the client's remembered one if
/// affinity is on and it is still a backend, else Maglev's choice.
fn pick_backend(ctx: &Ctx<'_>, frontend: &Frontend, key: &FlowKey) -> Result<(u32, u16), Refusal> {
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
    let Some(backend) = frontend.backends.pick(flow_hash(key, ctx.seed)) else {
        return Err(if frontend.has_endpoints {
            Refusal::Drop(DropReason::NoLocalEndpoints)
        } else {
            Refusal::Reject(DropReason::NoEndpoints)
        });
    };
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

/// The reply tuple with replies addressed to this node's IP, on the
/// client's own port (as Linux tries first); `police` moves the port if
/// another flow holds that tuple.
fn masquerade(ctx: &Ctx<'_>, reply: FlowKey) -> FlowKey {
    FlowKey {
        dst: ctx.snap.node.node_ip,
        ..reply
    }
}
