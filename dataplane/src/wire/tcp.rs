//! TCP segment view ([`TcpPacket`]).
//!
//! Contract: after [`TcpPacket::new_checked`] succeeds, no accessor panics.
//! It checks for 20 bytes and a data offset of at least 5 words that ends
//! within the buffer. The view should span exactly the segment (as
//! [`super::Ipv4Packet::payload`] gives it): the payload and the checksum run
//! to the buffer's end. [`TcpPacket::new_unchecked`] skips the checks; on a
//! buffer under 20 bytes its getters panic.

use super::checksum;
use super::ipv4::protocol;
use super::{get_u16, get_u32, len_u16, put_u16, put_u32, WireError};

mod field {
    use core::ops::Range;

    pub const SRC_PORT: Range<usize> = 0..2;
    pub const DST_PORT: Range<usize> = 2..4;
    pub const SEQ_NUM: Range<usize> = 4..8;
    pub const ACK_NUM: Range<usize> = 8..12;
    pub const DATA_OFF: usize = 12;
    pub const FLAGS: usize = 13;
    pub const WIN_SIZE: Range<usize> = 14..16;
    pub const CHECKSUM: Range<usize> = 16..18;
    pub const URGENT: Range<usize> = 18..20;
}

/// Length of a TCP header without options.
pub const HEADER_LEN: usize = 20;

/// TCP flag bits, as in [`TcpPacket::flags`].
pub use tables::proto::tcp_flags as flags;

/// A view of a TCP segment in `buffer`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> TcpPacket<T> {
    /// Wraps `buffer` without checking it; getters panic if it is shorter
    /// than 20 bytes.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        TcpPacket { buffer }
    }

    /// Wraps `buffer` after [`TcpPacket::check_len`] passes.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks the header length and the data offset against the buffer.
    #[inline]
    pub fn check_len(&self) -> Result<(), WireError> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        let header_len = self.header_len();
        if header_len < HEADER_LEN || header_len > len {
            return Err(WireError::BadDataOffset);
        }
        Ok(())
    }

    /// The wrapped buffer.
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The source port.
    #[inline]
    pub fn src_port(&self) -> u16 {
        get_u16(&self.buffer.as_ref()[field::SRC_PORT])
    }

    /// The destination port.
    #[inline]
    pub fn dst_port(&self) -> u16 {
        get_u16(&self.buffer.as_ref()[field::DST_PORT])
    }

    /// The sequence number.
    #[inline]
    pub fn seq_number(&self) -> u32 {
        get_u32(&self.buffer.as_ref()[field::SEQ_NUM])
    }

    /// The acknowledgment number.
    #[inline]
    pub fn ack_number(&self) -> u32 {
        get_u32(&self.buffer.as_ref()[field::ACK_NUM])
    }

    /// The header length in bytes (data offset times 4), options included.
    #[inline]
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::DATA_OFF] >> 4) * 4
    }

    /// The flag bits (see [`flags`]); the NS bit is not included.
    #[inline]
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }

    /// The window size field (unscaled).
    #[inline]
    pub fn window_len(&self) -> u16 {
        get_u16(&self.buffer.as_ref()[field::WIN_SIZE])
    }

    /// The checksum field.
    #[inline]
    pub fn checksum(&self) -> u16 {
        get_u16(&self.buffer.as_ref()[field::CHECKSUM])
    }

    /// The urgent pointer.
    #[inline]
    pub fn urgent_at(&self) -> u16 {
        get_u16(&self.buffer.as_ref()[field::URGENT])
    }

    /// The options bytes (empty without options).
    #[inline]
    pub fn options(&self) -> &[u8] {
        let header_len = self.header_len();
        self.buffer
            .as_ref()
            .get(HEADER_LEN..header_len)
            .unwrap_or(&[])
    }

    /// The payload: from the header's end to the buffer's end.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        let header_len = self.header_len();
        self.buffer.as_ref().get(header_len..).unwrap_or(&[])
    }

    /// Whether the checksum over the first `l4_len` bytes (the segment length
    /// from the IP header) verifies against the IPv4 pseudo-header of `src`
    /// and `dst` (host order). False if the buffer is shorter than `l4_len`.
    #[inline]
    pub fn verify_checksum(&self, src: u32, dst: u32, l4_len: u16) -> bool {
        match self.buffer.as_ref().get(..usize::from(l4_len)) {
            Some(segment) => {
                let pseudo = checksum::pseudo_header(src, dst, protocol::TCP, l4_len);
                checksum::fold(checksum::combine(pseudo, checksum::sum(segment))) == 0xffff
            }
            None => false,
        }
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> TcpPacket<T> {
    /// Sets the source port. The checksum is not touched.
    #[inline]
    pub fn set_src_port(&mut self, port: u16) {
        put_u16(&mut self.buffer.as_mut()[field::SRC_PORT], port);
    }

    /// Sets the destination port. The checksum is not touched.
    #[inline]
    pub fn set_dst_port(&mut self, port: u16) {
        put_u16(&mut self.buffer.as_mut()[field::DST_PORT], port);
    }

    /// Sets the sequence number.
    #[inline]
    pub fn set_seq_number(&mut self, seq: u32) {
        put_u32(&mut self.buffer.as_mut()[field::SEQ_NUM], seq);
    }

    /// Sets the acknowledgment number.
    #[inline]
    pub fn set_ack_number(&mut self, ack: u32) {
        put_u32(&mut self.buffer.as_mut()[field::ACK_NUM], ack);
    }

    /// Sets the header length in bytes (a multiple of 4, at most 60),
    /// keeping the reserved and NS bits. Changes where the payload starts.
    #[inline]
    pub fn set_header_len(&mut self, len: u8) {
        let b = &mut self.buffer.as_mut()[field::DATA_OFF];
        *b = (*b & 0x0f) | (((len / 4) & 0x0f) << 4);
    }

    /// Sets the flag bits (see [`flags`]).
    #[inline]
    pub fn set_flags(&mut self, value: u8) {
        self.buffer.as_mut()[field::FLAGS] = value;
    }

    /// Sets the window size field.
    #[inline]
    pub fn set_window_len(&mut self, value: u16) {
        put_u16(&mut self.buffer.as_mut()[field::WIN_SIZE], value);
    }

    /// Sets the checksum field.
    #[inline]
    pub fn set_checksum(&mut self, csum: u16) {
        put_u16(&mut self.buffer.as_mut()[field::CHECKSUM], csum);
    }

    /// Sets the urgent pointer.
    #[inline]
    pub fn set_urgent_at(&mut self, value: u16) {
        put_u16(&mut self.buffer.as_mut()[field::URGENT], value);
    }

    /// The payload, mutable.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let header_len = self.header_len();
        self.buffer
            .as_mut()
            .get_mut(header_len..)
            .unwrap_or(&mut [])
    }

    /// Computes the checksum over the pseudo-header of `src` and `dst` (host
    /// order) and the whole buffer, and writes it.
    #[inline]
    pub fn fill_checksum(&mut self, src: u32, dst: u32) {
        self.set_checksum(0);
        let segment = self.buffer.as_ref();
        let pseudo = checksum::pseudo_header(src, dst, protocol::TCP, len_u16(segment.len()));
        let csum = checksum::finish(checksum::combine(pseudo, checksum::sum(segment)));
        self.set_checksum(csum);
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::SYN;
    use super::*;
    use proptest::prelude::*;

    const POD: u32 = 0x0af4_0105;
    const SERVICE: u32 = 0x0a60_0001;

    #[test]
    fn parse_syn() {
        let segment = TcpPacket::new_checked(&SYN[34..]).unwrap();
        assert_eq!(segment.src_port(), 43512);
        assert_eq!(segment.dst_port(), 443);
        assert_eq!(segment.seq_number(), 0x6b8b_4567);
        assert_eq!(segment.ack_number(), 0);
        assert_eq!(segment.header_len(), 40);
        assert_eq!(segment.flags(), flags::SYN);
        assert_eq!(segment.window_len(), 64240);
        assert_eq!(segment.checksum(), 0x20cc);
        assert_eq!(segment.urgent_at(), 0);
        assert_eq!(&segment.options()[..4], &[0x02, 0x04, 0x05, 0xb4]);
        assert_eq!(segment.options().len(), 20);
        assert!(segment.payload().is_empty());
        assert!(segment.verify_checksum(POD, SERVICE, 40));
        assert!(!segment.verify_checksum(POD, SERVICE + 1, 40));
        assert!(!segment.verify_checksum(POD, SERVICE, 41));
    }

    #[test]
    fn rejects_bad_lengths() {
        let tcp = &SYN[34..];
        assert_eq!(
            TcpPacket::new_checked(&tcp[..19]),
            Err(WireError::Truncated)
        );
        assert_eq!(
            TcpPacket::new_checked(&tcp[..39]),
            Err(WireError::BadDataOffset)
        );
        let mut bad = tcp.to_vec();
        bad[12] = 0x40;
        assert_eq!(
            TcpPacket::new_checked(&bad[..]),
            Err(WireError::BadDataOffset)
        );
    }

    #[test]
    fn emit_with_setters_matches_fixture() {
        let mut buf = [0u8; 40];
        buf[20..].copy_from_slice(&SYN[54..]);
        let mut segment = TcpPacket::new_unchecked(&mut buf[..]);
        segment.set_src_port(43512);
        segment.set_dst_port(443);
        segment.set_seq_number(0x6b8b_4567);
        segment.set_ack_number(0);
        segment.set_header_len(40);
        segment.set_flags(flags::SYN);
        segment.set_window_len(64240);
        segment.set_urgent_at(0);
        segment.fill_checksum(POD, SERVICE);
        assert_eq!(buf, SYN[34..]);
    }

    #[test]
    fn payload_mut_and_checksum_cover_the_data() {
        let mut bytes = SYN[34..].to_vec();
        bytes.extend_from_slice(b"hello");
        let mut segment = TcpPacket::new_checked(&mut bytes[..]).unwrap();
        segment.set_flags(flags::PSH | flags::ACK);
        segment.set_ack_number(1);
        segment.payload_mut()[0] = b'j';
        segment.fill_checksum(POD, SERVICE);
        assert_eq!(segment.payload(), b"jello");
        assert!(segment.verify_checksum(POD, SERVICE, 45));
    }

    /// Calls every accessor; none may panic on a checked segment.
    fn touch_all(bytes: &[u8]) {
        let Ok(s) = TcpPacket::new_checked(bytes) else {
            return;
        };
        let _ = (
            s.src_port(),
            s.dst_port(),
            s.seq_number(),
            s.ack_number(),
            s.header_len(),
        );
        let _ = (s.flags(), s.window_len(), s.checksum(), s.urgent_at());
        let _ = (
            s.options().len(),
            s.payload().len(),
            s.verify_checksum(1, 2, u16::MAX),
        );
        let _ = s.verify_checksum(1, 2, 20);
        let mut owned = bytes.to_vec();
        let mut s = TcpPacket::new_unchecked(&mut owned[..]);
        s.set_src_port(1);
        s.set_dst_port(2);
        s.set_seq_number(3);
        s.set_ack_number(4);
        s.set_flags(5);
        s.set_window_len(6);
        s.set_checksum(7);
        s.set_urgent_at(8);
        s.fill_checksum(9, 10);
        let _ = s.payload_mut().len();
        s.set_header_len(60);
        let _ = (s.payload().len(), s.options().len());
        let _ = s.into_inner();
    }

    proptest! {
        #[test]
        fn checked_accessors_never_panic(
            mut bytes in proptest::collection::vec(any::<u8>(), 0..80),
            offset in 0u8..16,
            fix in any::<bool>(),
        ) {
            if fix && bytes.len() >= HEADER_LEN {
                bytes[12] = offset << 4;
            }
            touch_all(&bytes);
        }

        #[test]
        fn agrees_with_etherparse(
            (src, dst) in any::<([u8; 4], [u8; 4])>(),
            (sport, dport, seq, ack, window) in any::<(u16, u16, u32, u32, u16)>(),
            (syn, fin, rst, psh, ece) in any::<(bool, bool, bool, bool, bool)>(),
            options_words in 0usize..=10,
            payload in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let mut header = etherparse::TcpHeader::new(sport, dport, seq, window);
            header.acknowledgment_number = ack;
            header.ack = true;
            (header.syn, header.fin, header.rst, header.psh, header.ece) = (syn, fin, rst, psh, ece);
            header.set_options_raw(&vec![1u8; options_words * 4]).unwrap();
            header.checksum = header.calc_checksum_ipv4_raw(src, dst, &payload).unwrap();
            let mut bytes = header.to_bytes().to_vec();
            bytes.extend_from_slice(&payload);

            let segment = TcpPacket::new_checked(&bytes[..]).unwrap();
            let (src, dst) = (u32::from_be_bytes(src), u32::from_be_bytes(dst));
            prop_assert_eq!(segment.src_port(), sport);
            prop_assert_eq!(segment.dst_port(), dport);
            prop_assert_eq!(segment.seq_number(), seq);
            prop_assert_eq!(segment.ack_number(), ack);
            prop_assert_eq!(segment.window_len(), window);
            prop_assert_eq!(segment.header_len(), header.header_len());
            prop_assert_eq!(segment.options(), header.options.as_slice());
            let expected = flags::ACK
                | if syn { flags::SYN } else { 0 }
                | if fin { flags::FIN } else { 0 }
                | if rst { flags::RST } else { 0 }
                | if psh { flags::PSH } else { 0 }
                | if ece { flags::ECE } else { 0 };
            prop_assert_eq!(segment.flags(), expected);
            prop_assert_eq!(segment.checksum(), header.checksum);
            prop_assert!(segment.verify_checksum(src, dst, u16::try_from(bytes.len()).unwrap()));
            prop_assert_eq!(segment.payload(), &payload[..]);
            let mut refilled = bytes.clone();
            TcpPacket::new_unchecked(&mut refilled[..]).fill_checksum(src, dst);
            prop_assert_eq!(refilled, bytes);
        }
    }
}
