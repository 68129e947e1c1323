//! Fragments in `forward`: later IPv4 fragments follow their datagram's
//! first, and `forward` records each first fragment it sends.
//!
//! Uses: the fragment table. Sets, for [`Class::Fragment`] packets: `nat`
//! (the tuple the first fragment was rewritten to: only its addresses
//! apply, the ports are in the first fragment) and `tracked` (no conntrack,
//! balance or policy: the first fragment's decision covers the datagram);
//! `forward` then routes it as it routed the first. It runs per packet at
//! the head of `forward`, in batch order, so a first fragment earlier in
//! the same batch is recorded before its later fragments look it up (the
//! sender's kernel sends them back to back). A fragment with no recorded
//! first, or one that overlaps what was sent or leaves a second gap, is
//! dropped with its reason; nothing is held back or reassembled.

use tables::fragments::{FragError, FragKey};

use super::{Class, Ctx, Frag, Meta};
use crate::counters::DropReason;

/// Looks up a later fragment's datagram and sets its rewrite.
pub(super) fn follow(ctx: &Ctx<'_>, m: &mut Meta) -> Result<(), DropReason> {
    let Frag::Later {
        id,
        offset,
        len,
        last,
    } = m.frag
    else {
        return Ok(());
    };
    let key = frag_key(m, id);
    let target = ctx
        .fragments
        .follow(&key, u32::from(offset), u32::from(len), last, ctx.now_ms)
        .map_err(reason)?;
    m.nat = Some(target);
    m.tracked = true;
    ctx.counters.fragments_followed.add(1);
    Ok(())
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
