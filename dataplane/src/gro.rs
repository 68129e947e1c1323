//! Coalescing on receive (GRO in software), for an egress that takes
//! super-packets (a TAP pod): consecutive TCP/IPv4 segments of one flow in
//! a transmit burst become one super-packet with a virtio-net header, as
//! Linux's `tcp_gro_receive` would merge them, so the pod's stack takes one
//! 64 KB write instead of forty-odd.
//!
//! A run merges while every segment:
//! - is a small frame (a whole, fully checksummed segment from a veth pod
//!   or the uplink) of Ethernet + IPv4 without options, unfragmented, and
//!   TCP with payload, its checksum verified (once, here);
//! - has the first segment's addresses, ports, TOS, TTL, don't-fragment
//!   bit, acknowledgement number, window and TCP options, and its flags
//!   other than PSH (no SYN, FIN, RST, URG or CWR at all);
//! - starts where the one before ended (sequence numbers contiguous), with
//!   the IPv4 identification counting up unless DF is set;
//! - is no longer than the first (the segment size); a shorter one, or one
//!   with PSH, ends the run, and the run stays within 64 KB.
//!
//! The super-packet keeps the first segment's headers with the IPv4 total
//! length and checksum for the whole, PSH if any segment had it, and a
//! partial TCP checksum (the pseudo-header sum) under NEEDS_CSUM, with
//! `gso_size` the segment size. Anything else passes as it is. Only
//! consecutive frames merge: segments of two flows interleaved in one burst
//! stay apart.

use crate::frame::{Desc, FramePool, HEADROOM, MAX_LARGE_FRAME};
use crate::wire::checksum;
use crate::wire::ipv4;
use crate::wire::tcp::flags;
use crate::wire::vnet::{self, VnetHeader};

const ETH: usize = 14;
const L4: usize = ETH + ipv4::HEADER_LEN;
/// Flags a segment may have and still merge (PSH ends a run).
const MERGEABLE: u8 = flags::ACK | flags::PSH;
/// The most a super-packet may hold after its Ethernet header.
const MAX_IP_LEN: usize = 65_535;

/// What coalescing did to one burst.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Coalesced {
    /// Super-packets made, and the segments they took.
    pub merged: u64,
    pub segments: u64,
}

/// One segment as coalescing sees it.
#[derive(Clone, Copy)]
struct Segment {
    seq: u32,
    /// TCP header length, payload length.
    tcp_len: usize,
    payload: usize,
    ident: u16,
    dont_frag: bool,
    psh: bool,
}

/// Whether the TCP checksum of `frame` (headers checked by
/// [`Segment::parse`] as `s`) verifies.
fn checksum_ok(frame: &[u8], s: &Segment) -> bool {
    let tcp = &frame[L4..L4 + s.tcp_len + s.payload];
    let ip = &frame[ETH..L4];
    let src = u32::from_be_bytes([ip[12], ip[13], ip[14], ip[15]]);
    let dst = u32::from_be_bytes([ip[16], ip[17], ip[18], ip[19]]);
    let Ok(len) = u16::try_from(tcp.len()) else {
        return false;
    };
    let pseudo = checksum::pseudo_header(src, dst, ipv4::protocol::TCP, len);
    checksum::fold(checksum::combine(pseudo, checksum::sum(tcp))) == 0xffff
}

impl Segment {
    /// `frame` as a mergeable segment, if its headers make it one.
    fn parse(frame: &[u8]) -> Option<Segment> {
        let ip = frame.get(ETH..L4)?;
        if frame[12..14] != [0x08, 0x00] || ip[0] != 0x45 || ip[9] != ipv4::protocol::TCP {
            return None;
        }
        let frag = u16::from_be_bytes([ip[6], ip[7]]);
        if frag & 0x3fff != 0 {
            return None; // a fragment, or "more fragments"
        }
        let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
        let end = ETH + total;
        let tcp = frame.get(L4..end)?;
        let tcp_len = usize::from(tcp.get(12)? >> 4) * 4;
        let tcp_flags = *tcp.get(13)?;
        if tcp_len < 20 || tcp.len() <= tcp_len || tcp_flags & !MERGEABLE != 0 {
            return None;
        }
        Some(Segment {
            seq: u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]),
            tcp_len,
            payload: tcp.len() - tcp_len,
            ident: u16::from_be_bytes([ip[4], ip[5]]),
            dont_frag: frag & 0x4000 != 0,
            psh: tcp_flags & flags::PSH != 0,
        })
    }
}

/// Whether `next` (parsed as `n`) continues the run that `first` (parsed
/// as `f`) began and whose last segment is `last`.
fn follows(first: &[u8], f: &Segment, last: &Segment, next: &[u8], n: &Segment) -> bool {
    let headers = L4 + f.tcp_len;
    n.tcp_len == f.tcp_len
        && u32::try_from(last.payload).is_ok_and(|len| n.seq == last.seq.wrapping_add(len))
        && n.payload <= f.payload
        && n.dont_frag == f.dont_frag
        && (f.dont_frag || n.ident == last.ident.wrapping_add(1))
        // Ethernet; TOS; TTL, protocol; addresses.
        && first[..ETH] == next[..ETH]
        && first[ETH + 1] == next[ETH + 1]
        && first[ETH + 8..ETH + 10] == next[ETH + 8..ETH + 10]
        && first[ETH + 12..L4] == next[ETH + 12..L4]
        // Ports; acknowledgement; flags but PSH, window; options.
        && first[L4..L4 + 4] == next[L4..L4 + 4]
        && first[L4 + 8..L4 + 12] == next[L4 + 8..L4 + 12]
        && first[L4 + 13] & !flags::PSH == next[L4 + 13] & !flags::PSH
        && first[L4 + 14..L4 + 16] == next[L4 + 14..L4 + 16]
        && first[L4 + 20..headers] == next[L4 + 20..headers]
}

/// Coalesces the runs of `descs` (a burst for one offload-aware port) into
/// super-packets in large frames of `pool`, writing the burst as it is to
/// go out to the front of `out` (at least as long as `descs`); returns its
/// length and what was merged. Merged segments go back to the pool. Without
/// a free large frame, segments pass as they are.
pub fn coalesce(pool: &mut FramePool, descs: &[Desc], out: &mut [Desc]) -> (usize, Coalesced) {
    let mut done = Coalesced::default();
    let mut n = 0;
    let mut i = 0;
    while i < descs.len() {
        let end = run_end(pool, descs, i);
        let merged = if end - i >= 2 {
            merge(pool, &descs[i..end])
        } else {
            None
        };
        match merged {
            Some(desc) => {
                for d in &descs[i..end] {
                    pool.free(d.addr);
                }
                done.merged += 1;
                done.segments += (end - i) as u64;
                out[n] = desc;
                n += 1;
            }
            None => {
                for d in &descs[i..end] {
                    out[n] = *d;
                    n += 1;
                }
            }
        }
        i = end;
    }
    (n, done)
}

/// Where the run starting at `descs[start]` ends (exclusive; `start + 1`
/// for a frame that merges with nothing).
fn run_end(pool: &FramePool, descs: &[Desc], start: usize) -> usize {
    let Some(first) = frame_of(pool, descs[start]) else {
        return start + 1;
    };
    let Some(f) = Segment::parse(first) else {
        return start + 1;
    };
    if f.psh {
        return start + 1;
    }
    let mut last = f;
    let mut total = ipv4::HEADER_LEN + f.tcp_len + f.payload;
    let mut end = start + 1;
    while let Some(&d) = descs.get(end) {
        let Some(next) = frame_of(pool, d) else { break };
        let Some(s) = Segment::parse(next) else { break };
        if !follows(first, &f, &last, next, &s) || total + s.payload > MAX_IP_LEN {
            break;
        }
        total += s.payload;
        end += 1;
        last = s;
        if s.psh || s.payload < f.payload {
            break;
        }
    }
    // Checksums are verified only for what would merge, each once; a bad
    // one ends the run before it (and passes as it is, the pod's stack's
    // to drop).
    if end - start < 2 {
        return end;
    }
    let bad = descs[start..end].iter().position(|d| {
        !frame_of(pool, *d)
            .and_then(|frame| Some(checksum_ok(frame, &Segment::parse(frame)?)))
            .unwrap_or(false)
    });
    bad.map_or(end, |k| start + k.max(1))
}

/// A small frame's bytes (large ones are super-packets already).
fn frame_of(pool: &FramePool, d: Desc) -> Option<&[u8]> {
    if d.is_large() {
        return None;
    }
    pool.data(d)
}

/// Writes the super-packet of `run` (checked by [`run_end`]) into a large
/// frame; its descriptor, or `None` without a free one.
fn merge(pool: &mut FramePool, run: &[Desc]) -> Option<Desc> {
    let chunk = pool.alloc_large()?;
    let merged = fill(pool, chunk + u64::from(HEADROOM), run);
    if merged.is_none() {
        pool.free(chunk);
    }
    merged
}

/// [`merge`]'s work, in the large frame at `base`.
fn fill(pool: &mut FramePool, base: u64, run: &[Desc]) -> Option<Desc> {
    let first = Segment::parse(pool.data(run[0])?)?;
    let headers = L4 + first.tcp_len;
    let mut len = headers;
    let mut psh = false;
    let whole = Desc {
        addr: base,
        len: MAX_LARGE_FRAME,
    };
    for (k, d) in run.iter().enumerate() {
        let (frame, large) = pool.small_into_large(*d, whole)?;
        let s = Segment::parse(frame)?;
        if k == 0 {
            large.get_mut(..headers)?.copy_from_slice(&frame[..headers]);
        }
        let payload = frame.get(headers..headers + s.payload)?;
        large
            .get_mut(len..len + s.payload)?
            .copy_from_slice(payload);
        len += s.payload;
        psh |= s.psh;
    }
    let desc = Desc {
        addr: base,
        len: u32::try_from(len).ok()?,
    };
    let buf = pool.data_mut(desc)?;
    let ip_len = u16::try_from(len - ETH).ok()?;
    buf[ETH + 2..ETH + 4].copy_from_slice(&ip_len.to_be_bytes());
    buf[ETH + 10..ETH + 12].fill(0);
    let ip_sum = checksum::finish(checksum::sum(&buf[ETH..L4]));
    buf[ETH + 10..ETH + 12].copy_from_slice(&ip_sum.to_be_bytes());
    if psh {
        buf[L4 + 13] |= flags::PSH;
    }
    let src = u32::from_be_bytes([buf[ETH + 12], buf[ETH + 13], buf[ETH + 14], buf[ETH + 15]]);
    let dst = u32::from_be_bytes([buf[ETH + 16], buf[ETH + 17], buf[ETH + 18], buf[ETH + 19]]);
    let tcp_len = u16::try_from(len - L4).ok()?;
    let pseudo = checksum::fold(checksum::pseudo_header(
        src,
        dst,
        ipv4::protocol::TCP,
        tcp_len,
    ));
    buf[L4 + 16..L4 + 18].copy_from_slice(&pseudo.to_be_bytes());
    let header = VnetHeader {
        flags: vnet::flags::NEEDS_CSUM,
        gso_type: vnet::gso_type::TCPV4,
        hdr_len: u16::try_from(headers).ok()?,
        gso_size: u16::try_from(first.payload).ok()?,
        csum_start: u16::try_from(L4).ok()?,
        csum_offset: 16,
    };
    pool.set_vnet(desc, header);
    Some(desc)
}

#[cfg(test)]
// Test data is generated from counters on purpose: truncation is intended.
#[allow(clippy::cast_possible_truncation)]
mod tests {
    use super::*;
    use crate::gso::complete_checksum;
    use etherparse::{PacketBuilder, SlicedPacket, TransportSlice};
    use proptest::prelude::*;

    /// A segment of flow `sport` at `seq` with `len` payload bytes.
    fn segment(sport: u16, seq: u32, len: usize, psh: bool, syn: bool) -> Vec<u8> {
        let payload: Vec<u8> = (0..len).map(|i| (seq as usize + i) as u8).collect();
        let mut b = PacketBuilder::ethernet2([2; 6], [4; 6])
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .tcp(sport, 80, seq, 1000)
            .ack(5);
        if psh {
            b = b.psh();
        }
        if syn {
            b = b.syn();
        }
        let mut out = Vec::new();
        b.write(&mut out, &payload).unwrap();
        out
    }

    /// The TCP payloads of `frame` (a super-packet's checksum completed
    /// and verified first).
    fn payload(frame: &[u8], vnet: &VnetHeader) -> Vec<u8> {
        let mut frame = frame.to_vec();
        if vnet.needs_csum() {
            complete_checksum(&mut frame).unwrap();
        }
        let sliced = SlicedPacket::from_ethernet(&frame).unwrap();
        let Some(etherparse::NetSlice::Ipv4(ip)) = &sliced.net else {
            panic!("not IPv4")
        };
        let header = ip.header().to_header();
        assert_eq!(header.header_checksum, header.calc_header_checksum());
        let Some(TransportSlice::Tcp(tcp)) = sliced.transport else {
            panic!("not TCP")
        };
        let sum = tcp
            .to_header()
            .calc_checksum_ipv4(&header, tcp.payload())
            .unwrap();
        assert_eq!(tcp.checksum(), sum);
        tcp.payload().to_vec()
    }

    proptest! {
        /// Any burst of segments (two flows, gaps, short ones, PSH, SYN):
        /// what comes out carries every payload byte in the order it came
        /// in, with valid checksums, merged runs within 64 KB, and every
        /// frame accounted for.
        #[test]
        fn coalescing_keeps_every_byte_in_order(
            steps in prop::collection::vec((any::<bool>(), 1usize..1500, any::<u8>()), 1..60),
        ) {
            let mut pool = FramePool::with_large(128, 8);
            let mut seq = [1u32, 1u32];
            let mut descs = Vec::new();
            let mut expected = Vec::new();
            for (flow, len, extra) in steps {
                let f = usize::from(flow);
                let (psh, syn, gap) = (extra & 1 != 0, extra & 0x1e == 0x1e, extra & 0x20 != 0);
                if gap {
                    seq[f] = seq[f].wrapping_add(100);
                }
                let frame = segment(40_000 + f as u16, seq[f], len, psh, syn);
                seq[f] = seq[f].wrapping_add(len as u32);
                expected.push((f, frame.clone()));
                descs.push(pool.alloc_with(&frame).unwrap());
            }
            let mut out = [Desc::default(); 64];
            let (n, done) = coalesce(&mut pool, &descs, &mut out);
            prop_assert_eq!(n as u64 + done.segments - done.merged, descs.len() as u64);
            let mut got = Vec::new();
            for d in &out[..n] {
                let frame = pool.data(*d).unwrap();
                prop_assert!(frame.len() - 14 <= 65_535);
                got.extend(payload(frame, &pool.vnet(*d)));
            }
            let want: Vec<u8> = expected.iter().flat_map(|(_, f)| payload(f, &VnetHeader::default())).collect();
            prop_assert_eq!(got, want);
            for d in &out[..n] {
                pool.free(d.addr);
            }
            prop_assert_eq!(pool.free_count(), pool.total());
        }
    }
}
