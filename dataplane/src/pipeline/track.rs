//! Stage `track`: finds the conntrack entry of each packet's flow.
//!
//! Uses: the conntrack table, the snapshot's policy epoch. Sets: `tracked`, `nat`
//! (the rewrite the entry implies for this direction), advances the TCP
//! state. An established flow whose policy epoch is stale is checked again
//! against the current policy. ICMP errors are matched to the flow they
//! quote and follow it (or are dropped if they quote no known flow). A TCP
//! SYN on a closed connection of the same tuple (TIME_WAIT, CLOSE) starts a
//! new one: the old entry is removed and the SYN goes on as a miss, so
//! service selection, affinity and policy decide it afresh (the kernel's
//! "reopen a closed connection").
//! Next: `balance` (misses) or `forward` (hits).

use tables::conntrack::tcp_reopens;

use super::{pending, police, Class, Ctx, Meta, Verdict};
use crate::counters::DropReason;
use crate::wire::ipv4;

pub(super) fn run(ctx: &Ctx<'_>, metas: &mut [Meta]) {
    for m in pending(metas) {
        match m.class {
            Class::Arp | Class::Fragment => {}
            Class::IcmpError => match ctx.conntrack.lookup(&m.inner.reversed()) {
                Some(hit) => {
                    m.nat = hit.rewrite();
                    m.tracked = true;
                }
                None => m.verdict = Verdict::Drop(DropReason::IcmpUnrelated),
            },
            Class::Flow => {
                let Some(hit) = ctx.conntrack.lookup(&m.key) else {
                    continue;
                };
                if m.key.proto == ipv4::protocol::TCP
                    && tcp_reopens(hit.state, hit.dir, m.tcp_flags)
                {
                    ctx.conntrack.remove(&hit);
                    continue;
                }
                if hit.epoch != ctx.snap.policy_epoch {
                    if let Err(reason) = police::check(ctx, &hit.orig, &hit.reply) {
                        ctx.conntrack.remove(&hit);
                        m.verdict = Verdict::Drop(reason);
                        continue;
                    }
                    ctx.conntrack.set_epoch(&hit, ctx.snap.policy_epoch);
                }
                ctx.conntrack.update(&hit, m.tcp_flags, ctx.now_ms);
                ctx.counters.ct_hits.add(1);
                m.nat = hit.rewrite();
                m.tracked = true;
            }
        }
    }
}
