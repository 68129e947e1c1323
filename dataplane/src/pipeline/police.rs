//! Stage `police`: NetworkPolicy for new flows, then the conntrack commit.
//!
//! Uses: the compiled policy, the route table, conntrack. Sets: `ct` for
//! allowed flows. Egress is checked at the source pod's node, ingress at the
//! destination pod's node, against the translated destination (the backend)
//! and the original client; traffic from the node itself is always allowed
//! in (kubelet probes). Replies and related ICMP errors of allowed flows
//! never get here: they hit conntrack. Next: `forward`.

use tables::conntrack::InsertError;
use tables::flow::FlowKey;

use super::{pending, Class, Ctx, Meta, Verdict};
use crate::counters::DropReason;
use crate::wire::tcp;

pub(super) fn run(ctx: &Ctx<'_>, metas: &mut [Meta]) {
    for m in pending(metas) {
        if m.class != Class::Flow || m.tracked {
            continue;
        }
        if let Err(reason) = admit_new_flow(ctx, m) {
            m.verdict = Verdict::Drop(reason);
        }
    }
}

fn admit_new_flow(ctx: &Ctx<'_>, m: &mut Meta) -> Result<(), DropReason> {
    if m.key.proto == crate::wire::ipv4::protocol::TCP && m.tcp_flags & tcp::flags::RST != 0 {
        return Err(DropReason::TcpNoSyn);
    }
    check(ctx, &m.key, &m.reply)?;
    let epoch = ctx.snap.policy_epoch;
    match ctx
        .conntrack
        .insert(m.key, m.reply, m.tcp_flags, 0, epoch, ctx.now_ms)
    {
        Ok(_) => {
            ctx.counters.ct_new.add(1);
            m.tracked = true;
        }
        // Another worker committed the same flow first: follow its entry.
        Err(InsertError::Exists(hit)) => {
            m.nat = hit.rewrite();
            m.tracked = true;
        }
        Err(InsertError::Full) => return Err(DropReason::ConntrackFull),
        Err(InsertError::BucketsFull) => return Err(DropReason::ConntrackCollision),
        Err(InsertError::Invalid) => return Err(DropReason::TcpNoSyn),
    }
    Ok(())
}

/// Whether the policy in force allows the flow whose original tuple is
/// `orig` and whose reply tuple is `reply` (so `reply.src:reply.sport` is
/// the real destination after DNAT).
pub(super) fn check(ctx: &Ctx<'_>, orig: &FlowKey, reply: &FlowKey) -> Result<(), DropReason> {
    let routes = &ctx.snap.routes;
    let policy = &ctx.snap.policy;
    let (dst, dport) = (reply.src, if orig.proto == 1 { 0 } else { reply.sport });
    if routes.local_pod(orig.src).is_some()
        && !policy.allows_egress(orig.src, dst, orig.proto, dport)
    {
        return Err(DropReason::PolicyDeniedEgress);
    }
    if routes.local_pod(dst).is_some()
        && !routes.is_node_ip(orig.src)
        && !policy.allows_ingress(dst, orig.src, orig.proto, dport)
    {
        return Err(DropReason::PolicyDeniedIngress);
    }
    Ok(())
}
