//! Stage `fragment`: later IPv4 fragments follow their datagram's first.
//!
//! Uses: the fragment table (written by `forward` for each first fragment it
//! sends). Sets, for [`Class::Fragment`] packets: `nat` (the tuple the first
//! fragment was rewritten to: only its addresses apply, the ports are in the
//! first fragment) and `tracked` (no conntrack, balance or policy: the first
//! fragment's decision covers the datagram). Next: `forward`, which routes
//! it as it routed the first. A fragment with no recorded first, or one that
//! overlaps what was sent or leaves a second gap, is dropped with its
//! reason; nothing is held back or reassembled.

use tables::fragments::{FragError, FragKey};

use super::{pending, Class, Ctx, Frag, Meta, Verdict};
use crate::counters::DropReason;

pub(super) fn run(ctx: &Ctx<'_>, metas: &mut [Meta]) {
    for m in pending(metas) {
        let Frag::Later {
            id,
            offset,
            len,
            last,
        } = m.frag
        else {
            continue;
        };
        let key = frag_key(m, id);
        match ctx
            .fragments
            .follow(&key, u32::from(offset), u32::from(len), last, ctx.now_ms)
        {
            Ok(target) => {
                m.nat = Some(target);
                m.tracked = true;
                ctx.counters.fragments_followed.add(1);
            }
            Err(e) => m.verdict = Verdict::Drop(reason(e)),
        }
    }
}

/// The fragment-table key of a packet's datagram (its addresses as they
/// arrived, before NAT).
pub(super) fn frag_key(m: &Meta, id: u16) -> FragKey {
    FragKey {
        src: m.key.src,
        dst: m.key.dst,
        id,
        proto: m.key.proto,
    }
}

/// Records a first fragment that `forward` is sending, rewritten to
/// `target`; a full table drops it (its datagram could not be completed).
pub(super) fn record_first(ctx: &Ctx<'_>, m: &Meta) -> Result<(), DropReason> {
    let Frag::First { id, len } = m.frag else {
        return Ok(());
    };
    debug_assert!(m.class != Class::Fragment);
    let target = m.nat.unwrap_or(m.key);
    ctx.fragments
        .first(&frag_key(m, id), &target, u32::from(len), ctx.now_ms)
        .map_err(reason)?;
    ctx.counters.fragments_first.add(1);
    Ok(())
}

fn reason(e: FragError) -> DropReason {
    match e {
        FragError::NoFirst => DropReason::FragmentNoFirst,
        FragError::Overlap => DropReason::FragmentOverlap,
        FragError::Gaps => DropReason::FragmentGaps,
        FragError::Full => DropReason::FragmentTableFull,
    }
}
