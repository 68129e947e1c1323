//! Segmentation of TCP/IPv4 super-packets (GSO in software), for an egress
//! that cannot take them whole: a veth/AF_XDP pod or the uplink.
//!
//! A super-packet is one Ethernet + IPv4 + TCP frame whose payload is
//! larger than a segment; the virtio-net header that came with it gives the
//! segment size. Each segment gets the headers of the super-packet with the
//! fields Linux's `tcp_gso_segment` and `inet_gso_segment` set per segment:
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

use crate::wire::ethernet::ethertype;
use crate::wire::ipv4::protocol;
use crate::wire::tcp::flags;
use crate::wire::{EthernetFrame, Ipv4Packet, TcpPacket, WireError};

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

/// The segments of one TCP/IPv4 super-packet.
#[derive(Debug)]
pub struct TcpSegmenter<'a> {
    frame: &'a [u8],
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
        let eth = EthernetFrame::new_checked(frame)?;
        if eth.ethertype() != ethertype::IPV4 {
            return Err(GsoError::WrongProtocol);
        }
        let l3 = eth.header_len();
        let ip = Ipv4Packet::new_checked(&frame[l3..])?;
        if ip.protocol() != protocol::TCP || ip.is_fragment() {
            return Err(GsoError::WrongProtocol);
        }
        let l4 = l3 + ip.header_len();
        let end = l3 + usize::from(ip.total_len());
        let tcp = TcpPacket::new_checked(&frame[l4..end])?;
        Ok(TcpSegmenter {
            frame,
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
