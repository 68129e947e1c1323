//! Stage `police`: NetworkPolicy for new flows, then the conntrack commit.
//!
//! Uses: the compiled policy, the route table, conntrack. Sets: `tracked`
//! and `nat` for allowed flows. Egress is checked at the source pod's node,
//! ingress at the destination pod's node, against the translated
//! destination (the backend) and the original client; traffic from the node
//! itself is always allowed in (kubelet probes). Replies and related ICMP
//! errors of allowed flows never get here: they hit conntrack. Next:
//! `reject`, then `forward`.
//!
//! The commit makes the reply tuple unique, as the kernel's NAT does
//! (`nf_nat_core`'s `get_unique_tuple`): when another connection holds it
//! (a client reusing a source port towards another service whose backend an
//! earlier flow from that port reached), a closed holder is replaced by a
//! SYN (TIME_WAIT or CLOSE), otherwise the new flow gets another source
//! port (SNAT to the same address), tried in a pseudo-random order over
//! the kernel's port range for it; only when none is free is the packet
//! dropped. A packet is never forwarded with another flow's rewrite.

use tables::conntrack::{tcp_reopens, Dir, InsertError};
use tables::flow::{flow_hash, FlowKey};

use super::{pending, Class, Ctx, Meta, Verdict};
use crate::counters::DropReason;
use crate::wire::{ipv4, tcp};

/// Other source ports tried when the reply tuple is taken.
const PORT_TRIES: u64 = 64;
/// Inserts retried while another worker inserts the same tuple.
const BUSY_RETRIES: u32 = 2;

pub(super) fn run(ctx: &Ctx<'_>, metas: &mut [Meta]) {
    for m in pending(metas) {
        if m.class != Class::Flow || m.tracked || m.reject.is_some() {
            continue;
        }
        if let Err(reason) = admit_new_flow(ctx, m) {
            m.verdict = Verdict::Drop(reason);
        }
    }
}

fn admit_new_flow(ctx: &Ctx<'_>, m: &mut Meta) -> Result<(), DropReason> {
    if m.key.proto == ipv4::protocol::TCP && m.tcp_flags & tcp::flags::RST != 0 {
        return Err(DropReason::TcpNoSyn);
    }
    check(ctx, &m.key, &m.reply)?;
    commit(ctx, m)
}

/// Inserts the flow with its reply tuple made unique (see the module doc).
fn commit(ctx: &Ctx<'_>, m: &mut Meta) -> Result<(), DropReason> {
    let epoch = ctx.snap.policy_epoch;
    let wanted = m.reply;
    let (mut reply, mut attempt, mut busy, mut replaced) = (wanted, 0, 0, false);
    loop {
        match ctx
            .conntrack
            .insert(m.key, reply, m.tcp_flags, 0, epoch, ctx.now_ms)
        {
            Ok(_) => {
                ctx.counters.ct_new.add(1);
                m.reply = reply;
                let target = reply.reversed();
                m.nat = (target != m.key).then_some(target);
                m.tracked = true;
                return Ok(());
            }
            // Another worker committed the same flow first, or the packet
            // is a reply of a connection committed meanwhile: follow it.
            Err(InsertError::Exists(hit)) => {
                m.nat = hit.rewrite();
                m.tracked = true;
                return Ok(());
            }
            Err(InsertError::Clash(hit)) => {
                let closed = m.key.proto == ipv4::protocol::TCP
                    && tcp_reopens(hit.state, Dir::Orig, m.tcp_flags);
                if closed && !replaced {
                    ctx.conntrack.remove(&hit);
                    replaced = true;
                    continue;
                }
                attempt += 1;
                if attempt > PORT_TRIES {
                    return Err(if m.masquerade {
                        DropReason::SnatExhausted
                    } else {
                        DropReason::TupleClash
                    });
                }
                // Rare: the flow's hash orders the ports tried.
                let base = flow_hash(&m.key, ctx.seed);
                reply = with_port(&wanted, unique_port(wanted.dport, base, attempt));
            }
            Err(InsertError::Busy) => {
                busy += 1;
                if busy > BUSY_RETRIES {
                    return Err(DropReason::ConntrackBusy);
                }
            }
            Err(InsertError::Full) => return Err(DropReason::ConntrackFull),
            Err(InsertError::BucketsFull) => return Err(DropReason::ConntrackCollision),
            Err(InsertError::Invalid) => return Err(DropReason::TcpNoSyn),
        }
    }
}

/// `reply` with the new flow's source port (the reply's destination port)
/// moved to `port`; for ICMP echo the identifier, both "ports".
fn with_port(reply: &FlowKey, port: u16) -> FlowKey {
    if reply.proto == ipv4::protocol::ICMP {
        FlowKey {
            sport: port,
            dport: port,
            ..*reply
        }
    } else {
        FlowKey {
            dport: port,
            ..*reply
        }
    }
}

/// The `attempt`th candidate source port for a flow whose own port is
/// `original`, from the range Linux's NAT draws from for it (1-511 for
/// ports below 512, 600-1023 below 1024, else 1024-65535), in an order
/// given by the flow's hash.
fn unique_port(original: u16, base: u64, attempt: u64) -> u16 {
    let (min, span) = match original {
        0..=511 => (1u64, 511u64),
        512..=1023 => (600, 424),
        _ => (1024, 64_512),
    };
    let offset = base.wrapping_add(attempt.wrapping_mul(0x9e37_79b9)) % span;
    u16::try_from(min + offset).unwrap_or(u16::MAX)
}

/// Whether the policy in force allows the flow whose original tuple is
/// `orig` and whose reply tuple is `reply` (so `reply.src:reply.sport` is
/// the real destination after DNAT).
pub(super) fn check(ctx: &Ctx<'_>, orig: &FlowKey, reply: &FlowKey) -> Result<(), DropReason> {
    let routes = &ctx.snap.routes;
    let policy = &ctx.snap.policy;
    let dport = if orig.proto == ipv4::protocol::ICMP {
        0
    } else {
        reply.sport
    };
    let dst = reply.src;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidate_ports_stay_in_the_kernels_range_for_the_original() {
        for (original, lo, hi) in [(80, 1, 511), (700, 600, 1023), (40_000, 1024, 65_535)] {
            for attempt in 1..200 {
                let p = unique_port(original, 0x1234_5678, attempt);
                assert!((lo..=hi).contains(&p), "{p} for {original}");
            }
        }
        let distinct: std::collections::BTreeSet<u16> = (1..=PORT_TRIES)
            .map(|a| unique_port(40_000, 99, a))
            .collect();
        assert!(
            distinct.len() as u64 > PORT_TRIES * 9 / 10,
            "tries repeat ports"
        );
    }
}
