//! Segmentation of TCP/IPv4 super-packets (GSO in software), for an egress
//! that cannot take them whole: a veth/AF_XDP pod or the uplink.
//!
//! A super-packet is one Ethernet + IPv4 + TCP frame whose payload is
//! larger than a segment, bare or inside the switch's VXLAN encapsulation
//! (outer Ethernet, IPv4, UDP to port 4789, VXLAN); the virtio-net header
//! that came with it gives the segment size. Each segment gets the headers
//! of the super-packet with the fields Linux's `tcp_gso_segment`,
//! `inet_gso_segment` and `skb_udp_tunnel_segment` set per segment:
//! - the outer IPv4 total length and identification (counting up) and the
//!   outer UDP length, the outer UDP checksum staying 0 as the switch's
//!   encapsulation sends it;
//! - the IPv4 total length, and the identification counting up from the
//!   super-packet's;
//! - the TCP sequence number advanced by the payload before it;
//! - FIN and PSH only on the last segment; CWR only on the first (unless
//!   the sender negotiated accurate ECN, which keeps it on every one);
//! - both checksums complete (the super-packet's TCP checksum is partial or
//!   stale: it is computed per segment from the bytes).
//!
//! Nothing allocates: [`TcpSegmenter::write`] puts segment `i` into a buffer
//! the caller takes from its pool, so the segments of one super-packet can
//! go out in one TX batch.

use core::fmt;

use crate::counters::DropReason;
use crate::frame::{Desc, FramePool, MAX_FRAME};
use crate::wire::checksum;
use crate::wire::ethernet::{self, ethertype};
use crate::wire::ipv4::{self, protocol};
use crate::wire::tcp::flags;
use crate::wire::vnet::{self, VnetHeader};
use crate::wire::{EthernetFrame, Ipv4Packet, TcpPacket, UdpPacket, WireError};
use crate::wire::{ENCAP_OVERHEAD, VXLAN_PORT};

/// Why a frame cannot be segmented.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GsoError {
    /// A TCPv4 GSO type on a frame that is not unfragmented TCP over IPv4.
    WrongProtocol,
    /// A header of the frame is malformed.
    Malformed(WireError),
}

impl fmt::Display for GsoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GsoError::WrongProtocol => {
                f.write_str("a TCPv4 super-packet that is not unfragmented TCP over IPv4")
            }
            GsoError::Malformed(e) => write!(f, "a malformed super-packet: {e}"),
        }
    }
}

impl std::error::Error for GsoError {}

impl From<WireError> for GsoError {
    fn from(e: WireError) -> GsoError {
        GsoError::Malformed(e)
    }
}

/// Where the packet a frame's offloads apply to sits in it: after the
/// frame's Ethernet header, or after the switch's VXLAN encapsulation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// The frame is VXLAN-encapsulated; the inner frame starts at
    /// [`ENCAP_OVERHEAD`].
    pub encapsulated: bool,
    /// The (inner) IPv4 header, the L4 header, and the end of the IPv4
    /// total length.
    pub l3: usize,
    pub l4: usize,
    pub end: usize,
    pub proto: u8,
}

impl Layout {
    /// Finds the (inner) IPv4 packet of `frame`. Fragments are not packets
    /// an offload applies to.
    pub fn of(frame: &[u8]) -> Result<Layout, GsoError> {
        let (encapsulated, base) = if is_vxlan(frame) {
            (true, ENCAP_OVERHEAD)
        } else {
            (false, 0)
        };
        let inner = frame.get(base..).ok_or(WireError::Truncated)?;
        let eth = EthernetFrame::new_checked(inner)?;
        if eth.ethertype() != ethertype::IPV4 {
            return Err(GsoError::WrongProtocol);
        }
        let l3 = base + eth.header_len();
        let ip = Ipv4Packet::new_checked(&frame[l3..])?;
        if ip.is_fragment() {
            return Err(GsoError::WrongProtocol);
        }
        Ok(Layout {
            encapsulated,
            l3,
            l4: l3 + ip.header_len(),
            end: l3 + usize::from(ip.total_len()),
            proto: ip.protocol(),
        })
    }
}

/// Whether `frame` is IPv4/UDP to the VXLAN port with room for the whole
/// encapsulation (what the switch's `encapsulate` writes).
fn is_vxlan(frame: &[u8]) -> bool {
    const PROTO: usize = ethernet::HEADER_LEN + 9;
    const DPORT: usize = ethernet::HEADER_LEN + ipv4::HEADER_LEN + 2;
    frame.len() > ENCAP_OVERHEAD
        && frame[12..14] == ethertype::IPV4.to_be_bytes()
        && frame[ethernet::HEADER_LEN] == 0x45
        && frame[PROTO] == protocol::UDP
        && frame[DPORT..DPORT + 2] == VXLAN_PORT.to_be_bytes()
}

/// Completes the partial TCP or UDP checksum of `frame` (its field holds
/// the pseudo-header sum; see the virtio-net NEEDS_CSUM flag): what a NIC
/// does with CHECKSUM_PARTIAL, for an egress without checksum offload.
pub fn complete_checksum(frame: &mut [u8]) -> Result<(), GsoError> {
    let at = Layout::of(frame)?;
    let field = match at.proto {
        protocol::TCP => at.l4 + 16,
        protocol::UDP => at.l4 + 6,
        _ => return Err(GsoError::WrongProtocol),
    };
    let l4 = frame.get(at.l4..at.end).ok_or(WireError::Truncated)?;
    if field + 2 > at.end {
        return Err(GsoError::Malformed(WireError::Truncated));
    }
    let mut csum = checksum::finish(checksum::sum(l4));
    if at.proto == protocol::UDP && csum == 0 {
        csum = 0xffff;
    }
    frame[field..field + 2].copy_from_slice(&csum.to_be_bytes());
    Ok(())
}

/// The virtio-net header to write with `frame` to an offload-aware port
/// (a TAP): `kept` is the header it came with (its GSO type and size, and
/// whether its checksum is partial); offsets are those of the frame as it
/// is now (NAT keeps them, but they are checked, not trusted). A frame
/// without offloads gets an empty header: its checksums are complete.
pub fn egress_header(frame: &[u8], kept: &VnetHeader) -> Result<VnetHeader, GsoError> {
    if !kept.needs_csum() {
        return Ok(VnetHeader::default());
    }
    let at = Layout::of(frame)?;
    let (offset, header) = match at.proto {
        protocol::TCP => {
            let tcp = TcpPacket::new_checked(frame.get(at.l4..at.end).unwrap_or_default())?;
            (16, tcp.header_len())
        }
        protocol::UDP => (6, crate::wire::udp::HEADER_LEN),
        _ => return Err(GsoError::WrongProtocol),
    };
    let narrow = |n: usize| u16::try_from(n).map_err(|_| GsoError::Malformed(WireError::Truncated));
    Ok(VnetHeader {
        flags: vnet::flags::NEEDS_CSUM,
        gso_type: kept.gso_type,
        hdr_len: narrow(at.l4 + header)?,
        gso_size: if kept.gso_type == vnet::gso_type::NONE {
            0
        } else {
            kept.gso_size
        },
        csum_start: narrow(at.l4)?,
        csum_offset: offset,
    })
}

/// Why a large frame was not made into small ones by [`expand`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExpandError {
    /// It has more segments than `out` has room for; nothing was taken.
    NoRoom,
    /// It cannot be sent to a port without offloads: drop it for this.
    Drop(DropReason),
}

/// Makes the large frame `d` of `pool` into small frames for a port that
/// takes no offloads (an AF_XDP port): the segments of a super-packet
/// (GSO), or one copy of a frame with its partial checksum completed.
/// Writes their descriptors to the front of `out` and returns how many;
/// `d` itself stays the caller's to free.
pub fn expand(pool: &mut FramePool, d: Desc, out: &mut [Desc]) -> Result<usize, ExpandError> {
    let vnet = pool.vnet(d);
    let (frame, mut small) = pool
        .split_large(d)
        .ok_or(ExpandError::Drop(DropReason::Truncated))?;
    let too_big_or_none = |len: usize| {
        ExpandError::Drop(if len > MAX_FRAME as usize {
            DropReason::FrameTooBig
        } else {
            DropReason::NoFreeFrame
        })
    };
    if vnet.gso_type & !vnet::gso_type::ECN == vnet::gso_type::NONE {
        let slot = out.first_mut().ok_or(ExpandError::NoRoom)?;
        let (desc, buf) = small
            .alloc(frame.len())
            .ok_or_else(|| too_big_or_none(frame.len()))?;
        buf.copy_from_slice(frame);
        if vnet.needs_csum() && complete_checksum(buf).is_err() {
            small.give_back(desc);
            return Err(ExpandError::Drop(DropReason::VnetChecksumNotL4));
        }
        *slot = desc;
        return Ok(1);
    }
    // The ECN bit says the super-packet has CWR set, which goes on the
    // first segment only: virtio-net cannot say "accurate ECN".
    let segments = TcpSegmenter::new(frame, vnet.gso_size, false)
        .map_err(|_| ExpandError::Drop(DropReason::GsoWrongProtocol))?;
    let count = segments.count();
    let out = out.get_mut(..count).ok_or(ExpandError::NoRoom)?;
    for i in 0..count {
        let len = segments.len_of(i);
        let Some((desc, buf)) = small.alloc(len) else {
            for taken in &out[..i] {
                small.give_back(*taken);
            }
            return Err(too_big_or_none(len));
        };
        // `buf` is exactly `len_of(i)` bytes: the write cannot fall short.
        let _ = segments.write(i, buf);
        out[i] = desc;
    }
    Ok(count)
}

/// The segments of one TCP/IPv4 super-packet.
#[derive(Debug)]
pub struct TcpSegmenter<'a> {
    frame: &'a [u8],
    /// VXLAN-encapsulated: outer IPv4 and UDP lengths to set too.
    encapsulated: bool,
    outer_ident: u16,
    /// Where the IPv4 header, the TCP header and the payload start.
    l3: usize,
    l4: usize,
    payload: usize,
    /// Where the payload ends (the IPv4 total length's end).
    end: usize,
    size: usize,
    ident: u16,
    seq: u32,
    flags: u8,
    src: u32,
    dst: u32,
    /// Accurate ECN: CWR stays on every segment.
    keep_cwr: bool,
}

impl<'a> TcpSegmenter<'a> {
    /// The segments of `frame` with `size` payload bytes each (the last
    /// may be shorter). `keep_cwr`: the sender uses accurate ECN.
    pub fn new(frame: &'a [u8], size: u16, keep_cwr: bool) -> Result<Self, GsoError> {
        let size = usize::from(size);
        if size == 0 {
            return Err(GsoError::Malformed(WireError::Truncated));
        }
        let Layout {
            encapsulated,
            l3,
            l4,
            end,
            proto,
        } = Layout::of(frame)?;
        if proto != protocol::TCP {
            return Err(GsoError::WrongProtocol);
        }
        let ip = Ipv4Packet::new_unchecked(&frame[l3..]);
        let tcp = TcpPacket::new_checked(frame.get(l4..end).ok_or(WireError::Truncated)?)?;
        let outer_ident = Ipv4Packet::new_unchecked(&frame[ethernet::HEADER_LEN..]).ident();
        Ok(TcpSegmenter {
            frame,
            encapsulated,
            outer_ident,
            l3,
            l4,
            payload: l4 + tcp.header_len(),
            end,
            size,
            ident: ip.ident(),
            seq: tcp.seq_number(),
            flags: tcp.flags(),
            src: ip.src_addr(),
            dst: ip.dst_addr(),
            keep_cwr,
        })
    }

    /// How many segments there are (one, for a frame without payload).
    pub fn count(&self) -> usize {
        (self.end - self.payload).div_ceil(self.size).max(1)
    }

    /// The length of segment `i`'s frame.
    pub fn len_of(&self, i: usize) -> usize {
        let start = (self.payload + i * self.size).min(self.end);
        self.payload + (self.end - start).min(self.size)
    }

    /// Writes segment `i` (of [`TcpSegmenter::count`]) into `out`; its
    /// length, or `None` if `i` is past the last or `out` is too short
    /// for it ([`TcpSegmenter::len_of`]).
    pub fn write(&self, i: usize, out: &mut [u8]) -> Option<usize> {
        if i >= self.count() {
            return None;
        }
        let start = self.payload + i * self.size;
        let chunk = self.frame.get(start..self.end.min(start + self.size))?;
        let len = self.payload + chunk.len();
        let out = out.get_mut(..len)?;
        out[..self.payload].copy_from_slice(&self.frame[..self.payload]);
        out[self.payload..].copy_from_slice(chunk);
        let last = i + 1 == self.count();
        // Segments are at most 64 KB and their count under 2^16: both fit.
        let index = u16::try_from(i).unwrap_or(u16::MAX);
        let mut ip = Ipv4Packet::new_unchecked(&mut out[self.l3..]);
        ip.set_total_len(u16::try_from(len - self.l3).unwrap_or(u16::MAX));
        ip.set_ident(self.ident.wrapping_add(index));
        ip.fill_checksum();
        let mut tcp_flags = self.flags;
        if !last {
            tcp_flags &= !(flags::FIN | flags::PSH);
        }
        if i > 0 && !self.keep_cwr {
            tcp_flags &= !flags::CWR;
        }
        let offset = u32::try_from(i * self.size).unwrap_or(u32::MAX);
        let mut tcp = TcpPacket::new_unchecked(&mut out[self.l4..]);
        tcp.set_seq_number(self.seq.wrapping_add(offset));
        tcp.set_flags(tcp_flags);
        tcp.fill_checksum(self.src, self.dst);
        if self.encapsulated {
            let udp_at = ethernet::HEADER_LEN + ipv4::HEADER_LEN;
            let mut outer = Ipv4Packet::new_unchecked(&mut out[ethernet::HEADER_LEN..]);
            outer.set_total_len(u16::try_from(len - ethernet::HEADER_LEN).unwrap_or(u16::MAX));
            outer.set_ident(self.outer_ident.wrapping_add(index));
            outer.fill_checksum();
            let mut udp = UdpPacket::new_unchecked(&mut out[udp_at..]);
            udp.set_len(u16::try_from(len - udp_at).unwrap_or(u16::MAX));
            udp.set_checksum(0);
        }
        Some(len)
    }
}

#[cfg(test)]
// Test data is generated from counters on purpose: truncation is intended.
#[allow(clippy::cast_possible_truncation)]
mod tests {
    use super::*;
    use etherparse::{NetSlice, PacketBuilder, SlicedPacket, TransportSlice};
    use proptest::prelude::*;

    /// A super-packet of `payload` with FIN, PSH and CWR set and a
    /// timestamp option, as a sender's stack hands it over (the TCP
    /// checksum is left wrong: segmentation must not trust it).
    fn super_packet(payload: &[u8], seq: u32, ident: u16) -> Vec<u8> {
        let mut out = Vec::new();
        PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4([10, 244, 1, 10], [10, 244, 2, 20], 64)
            .tcp(40000, 8080, seq, 512)
            .options(&[etherparse::TcpOptionElement::Timestamp(1, 2)])
            .unwrap()
            .ack(77)
            .psh()
            .fin()
            .cwr()
            .write(&mut out, payload)
            .unwrap();
        // The IPv4 identification (etherparse writes 0).
        out[18..20].copy_from_slice(&ident.to_be_bytes());
        let ip_sum = 24;
        out[ip_sum..ip_sum + 2].copy_from_slice(&[0, 0]);
        let mut ip = Ipv4Packet::new_unchecked(&mut out[14..]);
        ip.fill_checksum();
        let tcp_sum = 14 + 20 + 16;
        out[tcp_sum] ^= 0x5a;
        out
    }

    /// What a segment says, checked by etherparse.
    struct Seen {
        ident: u16,
        seq: u32,
        fin: bool,
        psh: bool,
        cwr: bool,
        payload: Vec<u8>,
    }

    fn decode(frame: &[u8]) -> Seen {
        let sliced = SlicedPacket::from_ethernet(frame).unwrap();
        let Some(NetSlice::Ipv4(ipv4)) = sliced.net else {
            panic!("not IPv4")
        };
        let header = ipv4.header().to_header();
        assert_eq!(header.header_checksum, header.calc_header_checksum());
        assert_eq!(usize::from(header.total_len), frame.len() - 14);
        let Some(TransportSlice::Tcp(tcp)) = sliced.transport else {
            panic!("not TCP")
        };
        let expected = tcp
            .to_header()
            .calc_checksum_ipv4(&header, tcp.payload())
            .unwrap();
        assert_eq!(tcp.checksum(), expected, "TCP checksum");
        assert_eq!(
            tcp.options()[..10],
            [8, 10, 0, 0, 0, 1, 0, 0, 0, 2],
            "options kept"
        );
        assert_eq!(tcp.acknowledgment_number(), 77);
        Seen {
            ident: header.identification,
            seq: tcp.sequence_number(),
            fin: tcp.fin(),
            psh: tcp.psh(),
            cwr: tcp.cwr(),
            payload: tcp.payload().to_vec(),
        }
    }

    fn segments(frame: &[u8], size: u16, keep_cwr: bool) -> Vec<Vec<u8>> {
        let s = TcpSegmenter::new(frame, size, keep_cwr).unwrap();
        let mut buf = vec![0u8; 70_000];
        (0..s.count())
            .map(|i| {
                let len = s.write(i, &mut buf).unwrap();
                assert_eq!(len, s.len_of(i));
                buf[..len].to_vec()
            })
            .collect()
    }

    #[test]
    fn segments_carry_linux_s_per_segment_fields() {
        let payload: Vec<u8> = (0..4000u32).map(|i| i as u8).collect();
        let frame = super_packet(&payload, 0xffff_f000, 0xfffe);
        let out = segments(&frame, 1448, false);
        assert_eq!(out.len(), 3);
        let seen: Vec<Seen> = out.iter().map(|f| decode(f)).collect();
        let lens: Vec<usize> = seen.iter().map(|s| s.payload.len()).collect();
        assert_eq!(lens, [1448, 1448, 1104]);
        let idents: Vec<u16> = seen.iter().map(|s| s.ident).collect();
        assert_eq!(
            idents,
            [0xfffe, 0xffff, 0],
            "the identification counts up, wrapping"
        );
        let seqs: Vec<u32> = seen.iter().map(|s| s.seq).collect();
        assert_eq!(seqs, [0xffff_f000, 0xffff_f5a8, 0xffff_fb50]);
        let flags: Vec<(bool, bool, bool)> = seen.iter().map(|s| (s.fin, s.psh, s.cwr)).collect();
        assert_eq!(
            flags,
            [
                (false, false, true),
                (false, false, false),
                (true, true, false)
            ],
            "FIN and PSH on the last, CWR on the first"
        );
        let whole: Vec<u8> = seen.into_iter().flat_map(|s| s.payload).collect();
        assert_eq!(whole, payload);
        let accurate = segments(&frame, 1448, true);
        assert!(
            accurate.iter().all(|f| decode(f).cwr),
            "accurate ECN keeps CWR"
        );
    }

    #[test]
    fn what_cannot_be_segmented_says_why() {
        let frame = super_packet(&[1; 100], 1, 1);
        let mut udp = frame.clone();
        udp[23] = protocol::UDP;
        assert_eq!(
            TcpSegmenter::new(&udp, 10, false).unwrap_err(),
            GsoError::WrongProtocol
        );
        let mut fragment = frame.clone();
        fragment[20] |= 0x20;
        assert_eq!(
            TcpSegmenter::new(&fragment, 10, false).unwrap_err(),
            GsoError::WrongProtocol
        );
        let mut arp = frame.clone();
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        assert_eq!(
            TcpSegmenter::new(&arp, 10, false).unwrap_err(),
            GsoError::WrongProtocol
        );
        assert!(matches!(
            TcpSegmenter::new(&frame[..40], 10, false),
            Err(GsoError::Malformed(_))
        ));
        let s = TcpSegmenter::new(&frame, 10, false).unwrap();
        assert_eq!(s.count(), 10);
        assert_eq!(s.write(10, &mut [0u8; 2000]), None, "past the last");
        assert_eq!(s.write(0, &mut [0u8; 60]), None, "a buffer too short");
    }

    /// `frame` inside the switch's VXLAN encapsulation, as `encapsulate`
    /// writes it (outer lengths for the whole super-packet, UDP checksum 0).
    fn encapsulated(frame: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        PacketBuilder::ethernet2([2, 0, 0, 0, 1, 1], [2, 0, 0, 0, 1, 2])
            .ipv4([192, 168, 0, 1], [192, 168, 0, 2], 64)
            .udp(40001, VXLAN_PORT)
            .write(&mut out, &[0x08, 0, 0, 0, 0, 0, 1, 0])
            .unwrap();
        out.extend_from_slice(frame);
        let total = u16::try_from(out.len() - 14).unwrap();
        out[16..18].copy_from_slice(&total.to_be_bytes());
        out[24..26].fill(0);
        Ipv4Packet::new_unchecked(&mut out[14..]).fill_checksum();
        let udp_len = u16::try_from(out.len() - 34).unwrap();
        out[38..40].copy_from_slice(&udp_len.to_be_bytes());
        out[40..42].fill(0);
        out
    }

    #[test]
    fn encapsulated_super_packets_get_outer_headers_per_segment() {
        let payload: Vec<u8> = (0..3000u32).map(|i| (i * 3) as u8).collect();
        let inner = super_packet(&payload, 5, 9);
        let frame = encapsulated(&inner);
        let s = TcpSegmenter::new(&frame, 1398, false).unwrap();
        assert_eq!(s.count(), 3);
        let mut buf = vec![0u8; 4000];
        let mut whole = Vec::new();
        for i in 0..s.count() {
            let len = s.write(i, &mut buf).unwrap();
            let seg = &buf[..len];
            let sliced = SlicedPacket::from_ethernet(seg).unwrap();
            let Some(NetSlice::Ipv4(outer)) = sliced.net else {
                panic!("outer not IPv4")
            };
            let header = outer.header().to_header();
            assert_eq!(header.header_checksum, header.calc_header_checksum());
            assert_eq!(usize::from(header.total_len), len - 14);
            assert_eq!(header.identification, i as u16, "outer id counts up");
            let Some(TransportSlice::Udp(udp)) = sliced.transport else {
                panic!("outer not UDP")
            };
            assert_eq!(usize::from(udp.length()), len - 34);
            assert_eq!(udp.checksum(), 0);
            let seen = decode(&seg[ENCAP_OVERHEAD..]);
            assert_eq!(seen.seq, 5 + 1398 * i as u32);
            whole.extend(seen.payload);
        }
        assert_eq!(whole, payload);
    }

    #[test]
    fn partial_checksums_are_completed_and_described() {
        let mut frame = super_packet(&[7; 900], 1, 1);
        let ip = Ipv4Packet::new_unchecked(&frame[14..]);
        let (src, dst) = (ip.src_addr(), ip.dst_addr());
        let l4_len = u16::try_from(frame.len() - 34).unwrap();
        // What a sender with checksum offload leaves: the folded
        // pseudo-header sum, not complemented.
        let pseudo = checksum::fold(checksum::pseudo_header(src, dst, protocol::TCP, l4_len));
        frame[50..52].copy_from_slice(&pseudo.to_be_bytes());
        let kept = VnetHeader {
            flags: vnet::flags::NEEDS_CSUM,
            gso_type: vnet::gso_type::TCPV4,
            gso_size: 500,
            ..VnetHeader::default()
        };
        let header = egress_header(&frame, &kept).unwrap();
        assert_eq!(
            (header.csum_start, header.csum_offset, header.hdr_len),
            (34, 16, 34 + 32)
        );
        assert_eq!(header.gso_size, 500);
        assert_eq!(
            header.check(&frame),
            Ok(vnet::Gso::TcpV4 {
                size: 500,
                ecn: false
            })
        );
        complete_checksum(&mut frame).unwrap();
        decode(&frame);
        assert_eq!(
            egress_header(&frame, &VnetHeader::default()),
            Ok(VnetHeader::default()),
            "a complete frame needs no header"
        );
        let mut udp = frame.clone();
        udp[23] = protocol::ICMP;
        assert_eq!(complete_checksum(&mut udp), Err(GsoError::WrongProtocol));
    }

    proptest! {
        #[test]
        fn segments_reassemble_to_the_super_packet(
            len in 0usize..20_000,
            size in 1u16..2000,
            seq in any::<u32>(),
            ident in any::<u16>(),
        ) {
            let payload: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            let frame = super_packet(&payload, seq, ident);
            let out = segments(&frame, size, false);
            prop_assert_eq!(out.len(), len.div_ceil(usize::from(size)).max(1));
            let mut whole = Vec::new();
            let mut next = seq;
            for (i, f) in out.iter().enumerate() {
                let s = decode(f);
                prop_assert_eq!(s.seq, next);
                prop_assert_eq!(s.ident, ident.wrapping_add(i as u16));
                prop_assert!(s.payload.len() <= usize::from(size));
                next = next.wrapping_add(s.payload.len() as u32);
                whole.extend(s.payload);
            }
            prop_assert_eq!(whole, payload);
        }

        /// A super-packet with bytes overwritten anywhere (lengths, header
        /// lengths, the protocol) and cut anywhere: segmenting never panics,
        /// and every segment it writes has the length it announced.
        #[test]
        fn any_damaged_frame_is_segmented_without_panicking(
            edits in prop::collection::vec((0usize..200, any::<u8>()), 0..6),
            cut in 0usize..200,
            size in 1u16..100,
        ) {
            let mut frame = super_packet(&[9; 120], 1, 1);
            for (at, byte) in edits {
                if let Some(b) = frame.get_mut(at) {
                    *b = byte;
                }
            }
            frame.truncate(cut);
            if let Ok(s) = TcpSegmenter::new(&frame, size, false) {
                let mut buf = [0u8; 400];
                for i in 0..s.count() {
                    prop_assert_eq!(s.write(i, &mut buf), Some(s.len_of(i)));
                }
            }
        }
    }
}
