//! IPv4 header view ([`Ipv4Packet`]) and the owned [`Ipv4Repr`] used to build
//! VXLAN outer headers.
//!
//! Contract: after [`Ipv4Packet::new_checked`] succeeds, no accessor panics.
//! It checks version 4, a header length of at least 20 bytes within the
//! buffer, and a total length between the header length and the buffer
//! length. Lengths are checked against the IP total length, not the buffer:
//! a frame may carry Ethernet padding after the datagram, and
//! [`Ipv4Packet::payload`] ends at the total length. [`Ipv4Packet::new_unchecked`]
//! skips the checks; on a buffer shorter than 20 bytes its getters panic.

use super::checksum;
use super::{get_u16, get_u32, put_u16, put_u32, WireError};

mod field {
    use core::ops::Range;

    pub const VER_IHL: usize = 0;
    pub const DSCP_ECN: usize = 1;
    pub const LENGTH: Range<usize> = 2..4;
    pub const IDENT: Range<usize> = 4..6;
    pub const FLG_OFF: Range<usize> = 6..8;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: Range<usize> = 10..12;
    pub const SRC_ADDR: Range<usize> = 12..16;
    pub const DST_ADDR: Range<usize> = 16..20;
}

/// Length of an IPv4 header without options.
pub const HEADER_LEN: usize = 20;

/// The "don't fragment" flag in the flags/fragment-offset word.
const FLAG_DF: u16 = 0x4000;
/// The "more fragments" flag in the flags/fragment-offset word.
const FLAG_MF: u16 = 0x2000;
/// The fragment offset (in 8-byte units) in the flags/fragment-offset word.
const FRAG_OFFSET_MASK: u16 = 0x1fff;

/// IP protocol numbers the switch handles.
pub mod protocol {
    pub use tables::proto::{ICMP, SCTP, TCP, UDP};
}

/// A view of an IPv4 header and its payload in `buffer`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ipv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    /// Wraps `buffer` without checking it; getters panic if it is shorter
    /// than 20 bytes.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        Ipv4Packet { buffer }
    }

    /// Wraps `buffer` after [`Ipv4Packet::check_len`] passes.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks version, header length and total length against the buffer.
    #[inline]
    pub fn check_len(&self) -> Result<(), WireError> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if self.version() != 4 {
            return Err(WireError::BadVersion);
        }
        let header_len = self.header_len();
        if header_len < HEADER_LEN || header_len > len {
            return Err(WireError::BadHeaderLen);
        }
        let total_len = usize::from(self.total_len());
        if total_len < header_len || total_len > len {
            return Err(WireError::BadTotalLen);
        }
        Ok(())
    }

    /// The wrapped buffer.
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The version field (4 after `new_checked`).
    #[inline]
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_IHL] >> 4
    }

    /// The header length in bytes (IHL times 4), options included.
    #[inline]
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::VER_IHL] & 0x0f) * 4
    }

    /// Whether the header carries options (IHL above 5).
    #[inline]
    pub fn has_options(&self) -> bool {
        self.buffer.as_ref()[field::VER_IHL] & 0x0f > 5
    }

    /// The DSCP and ECN byte (the old type-of-service byte).
    #[inline]
    pub fn dscp_ecn(&self) -> u8 {
        self.buffer.as_ref()[field::DSCP_ECN]
    }

    /// The total length field: header plus payload, in bytes.
    #[inline]
    pub fn total_len(&self) -> u16 {
        get_u16(&self.buffer.as_ref()[field::LENGTH])
    }

    /// The identification field.
    #[inline]
    pub fn ident(&self) -> u16 {
        get_u16(&self.buffer.as_ref()[field::IDENT])
    }

    #[inline]
    fn flags_and_offset(&self) -> u16 {
        get_u16(&self.buffer.as_ref()[field::FLG_OFF])
    }

    /// Whether the "don't fragment" flag is set.
    #[inline]
    pub fn dont_frag(&self) -> bool {
        self.flags_and_offset() & FLAG_DF != 0
    }

    /// Whether the "more fragments" flag is set.
    #[inline]
    pub fn more_frags(&self) -> bool {
        self.flags_and_offset() & FLAG_MF != 0
    }

    /// The fragment offset in bytes.
    #[inline]
    pub fn frag_offset(&self) -> u16 {
        (self.flags_and_offset() & FRAG_OFFSET_MASK) << 3
    }

    /// Whether this datagram is a fragment: "more fragments" set or a
    /// nonzero fragment offset.
    #[inline]
    pub fn is_fragment(&self) -> bool {
        self.flags_and_offset() & (FLAG_MF | FRAG_OFFSET_MASK) != 0
    }

    /// The time-to-live field.
    #[inline]
    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[field::TTL]
    }

    /// The protocol field (see [`protocol`]).
    #[inline]
    pub fn protocol(&self) -> u8 {
        self.buffer.as_ref()[field::PROTOCOL]
    }

    /// The header checksum field.
    #[inline]
    pub fn checksum(&self) -> u16 {
        get_u16(&self.buffer.as_ref()[field::CHECKSUM])
    }

    /// The source address, host order.
    #[inline]
    pub fn src_addr(&self) -> u32 {
        get_u32(&self.buffer.as_ref()[field::SRC_ADDR])
    }

    /// The destination address, host order.
    #[inline]
    pub fn dst_addr(&self) -> u32 {
        get_u32(&self.buffer.as_ref()[field::DST_ADDR])
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

    /// The payload: from the header's end to the total length, so Ethernet
    /// padding after the datagram is left out.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        let range = self.header_len()..usize::from(self.total_len());
        self.buffer.as_ref().get(range).unwrap_or(&[])
    }

    /// Whether the header checksum verifies.
    #[inline]
    pub fn verify_checksum(&self) -> bool {
        match self.buffer.as_ref().get(..self.header_len()) {
            Some(header) => checksum::fold(checksum::sum(header)) == 0xffff,
            None => false,
        }
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    /// Sets the version field (low four bits of `version`).
    #[inline]
    pub fn set_version(&mut self, version: u8) {
        let b = &mut self.buffer.as_mut()[field::VER_IHL];
        *b = (*b & 0x0f) | (version << 4);
    }

    /// Sets the header length in bytes (a multiple of 4, at most 60).
    /// Changes which bytes the payload and options accessors return.
    #[inline]
    pub fn set_header_len(&mut self, len: u8) {
        let b = &mut self.buffer.as_mut()[field::VER_IHL];
        *b = (*b & 0xf0) | ((len / 4) & 0x0f);
    }

    /// Sets the DSCP and ECN byte.
    #[inline]
    pub fn set_dscp_ecn(&mut self, value: u8) {
        self.buffer.as_mut()[field::DSCP_ECN] = value;
    }

    /// Sets the total length field. Changes where the payload ends.
    #[inline]
    pub fn set_total_len(&mut self, len: u16) {
        put_u16(&mut self.buffer.as_mut()[field::LENGTH], len);
    }

    /// Sets the identification field.
    #[inline]
    pub fn set_ident(&mut self, ident: u16) {
        put_u16(&mut self.buffer.as_mut()[field::IDENT], ident);
    }

    #[inline]
    fn set_flags_and_offset(&mut self, value: u16) {
        put_u16(&mut self.buffer.as_mut()[field::FLG_OFF], value);
    }

    /// Sets or clears the "don't fragment" flag.
    #[inline]
    pub fn set_dont_frag(&mut self, value: bool) {
        let word = self.flags_and_offset() & !FLAG_DF;
        self.set_flags_and_offset(if value { word | FLAG_DF } else { word });
    }

    /// Sets or clears the "more fragments" flag.
    #[inline]
    pub fn set_more_frags(&mut self, value: bool) {
        let word = self.flags_and_offset() & !FLAG_MF;
        self.set_flags_and_offset(if value { word | FLAG_MF } else { word });
    }

    /// Sets the fragment offset in bytes (a multiple of 8).
    #[inline]
    pub fn set_frag_offset(&mut self, offset: u16) {
        let word = self.flags_and_offset() & !FRAG_OFFSET_MASK;
        self.set_flags_and_offset(word | (offset >> 3));
    }

    /// Sets the time-to-live field.
    #[inline]
    pub fn set_ttl(&mut self, ttl: u8) {
        self.buffer.as_mut()[field::TTL] = ttl;
    }

    /// Sets the protocol field.
    #[inline]
    pub fn set_protocol(&mut self, protocol: u8) {
        self.buffer.as_mut()[field::PROTOCOL] = protocol;
    }

    /// Sets the header checksum field.
    #[inline]
    pub fn set_checksum(&mut self, csum: u16) {
        put_u16(&mut self.buffer.as_mut()[field::CHECKSUM], csum);
    }

    /// Sets the source address (host order). The checksum is not touched.
    #[inline]
    pub fn set_src_addr(&mut self, addr: u32) {
        put_u32(&mut self.buffer.as_mut()[field::SRC_ADDR], addr);
    }

    /// Sets the destination address (host order). The checksum is not
    /// touched.
    #[inline]
    pub fn set_dst_addr(&mut self, addr: u32) {
        put_u32(&mut self.buffer.as_mut()[field::DST_ADDR], addr);
    }

    /// The payload, mutable; bounded as [`Ipv4Packet::payload`].
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let range = self.header_len()..usize::from(self.total_len());
        self.buffer.as_mut().get_mut(range).unwrap_or(&mut [])
    }

    /// Computes the header checksum and writes it.
    #[inline]
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let header_len = self.header_len();
        let csum = match self.buffer.as_ref().get(..header_len) {
            Some(header) => checksum::finish(checksum::sum(header)),
            None => 0,
        };
        self.set_checksum(csum);
    }
}

/// An IPv4 header without options, as the switch builds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Repr {
    /// Source address, host order.
    pub src_addr: u32,
    /// Destination address, host order.
    pub dst_addr: u32,
    /// Protocol number (see [`protocol`]).
    pub protocol: u8,
    /// Time to live.
    pub ttl: u8,
    /// DSCP and ECN byte.
    pub dscp_ecn: u8,
    /// Identification field.
    pub ident: u16,
    /// The "don't fragment" flag.
    pub dont_frag: bool,
    /// Payload length in bytes (total length minus header).
    pub payload_len: usize,
}

impl Ipv4Repr {
    /// Reads a header from a checked view; fails on a bad checksum. Options
    /// are skipped and fragment fields other than DF are ignored.
    pub fn parse<T: AsRef<[u8]>>(packet: &Ipv4Packet<T>) -> Result<Ipv4Repr, WireError> {
        if !packet.verify_checksum() {
            return Err(WireError::BadChecksum);
        }
        Ok(Ipv4Repr {
            src_addr: packet.src_addr(),
            dst_addr: packet.dst_addr(),
            protocol: packet.protocol(),
            ttl: packet.ttl(),
            dscp_ecn: packet.dscp_ecn(),
            ident: packet.ident(),
            dont_frag: packet.dont_frag(),
            payload_len: usize::from(packet.total_len()).saturating_sub(packet.header_len()),
        })
    }

    /// Header plus payload length in bytes.
    #[inline]
    pub const fn total_len(&self) -> usize {
        HEADER_LEN + self.payload_len
    }

    /// Writes the 20-byte header, checksum included, at the start of `buf`.
    /// The payload need not be in `buf` yet.
    #[inline]
    pub fn emit(&self, buf: &mut [u8]) -> Result<(), WireError> {
        let total_len = HEADER_LEN
            .checked_add(self.payload_len)
            .and_then(|len| u16::try_from(len).ok())
            .ok_or(WireError::BadTotalLen)?;
        let header = buf.get_mut(..HEADER_LEN).ok_or(WireError::Truncated)?;
        let mut packet = Ipv4Packet::new_unchecked(header);
        packet.buffer[field::VER_IHL] = 0x45;
        packet.set_dscp_ecn(self.dscp_ecn);
        packet.set_total_len(total_len);
        packet.set_ident(self.ident);
        packet.set_flags_and_offset(if self.dont_frag { FLAG_DF } else { 0 });
        packet.set_ttl(self.ttl);
        packet.set_protocol(self.protocol);
        packet.set_src_addr(self.src_addr);
        packet.set_dst_addr(self.dst_addr);
        packet.fill_checksum();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{DNS, SYN};
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parse_syn() {
        let packet = Ipv4Packet::new_checked(&SYN[14..]).unwrap();
        assert_eq!(packet.version(), 4);
        assert_eq!(packet.header_len(), 20);
        assert!(!packet.has_options());
        assert_eq!(packet.options(), &[] as &[u8]);
        assert_eq!(packet.dscp_ecn(), 0);
        assert_eq!(packet.total_len(), 60);
        assert_eq!(packet.ident(), 0x1c46);
        assert!(packet.dont_frag());
        assert!(!packet.more_frags());
        assert_eq!(packet.frag_offset(), 0);
        assert!(!packet.is_fragment());
        assert_eq!(packet.ttl(), 64);
        assert_eq!(packet.protocol(), protocol::TCP);
        assert_eq!(packet.checksum(), 0x081d);
        assert_eq!(packet.src_addr(), 0x0af4_0105);
        assert_eq!(packet.dst_addr(), 0x0a60_0001);
        assert!(packet.verify_checksum());
        assert_eq!(packet.payload(), &SYN[34..]);
    }

    #[test]
    fn payload_stops_at_total_len_before_ethernet_padding() {
        let mut frame = DNS.to_vec();
        frame.resize(DNS.len() + 20, 0);
        let packet = Ipv4Packet::new_checked(&frame[14..]).unwrap();
        assert_eq!(packet.payload(), &DNS[34..]);
    }

    #[test]
    fn rejects_bad_lengths() {
        let ip = &SYN[14..];
        assert_eq!(
            Ipv4Packet::new_checked(&ip[..19]),
            Err(WireError::Truncated)
        );
        // Total length 60 against a 59-byte buffer.
        assert_eq!(
            Ipv4Packet::new_checked(&ip[..59]),
            Err(WireError::BadTotalLen)
        );
        let mut bad = ip.to_vec();
        bad[0] = 0x65;
        assert_eq!(
            Ipv4Packet::new_checked(&bad[..]),
            Err(WireError::BadVersion)
        );
        bad[0] = 0x44;
        assert_eq!(
            Ipv4Packet::new_checked(&bad[..]),
            Err(WireError::BadHeaderLen)
        );
        bad[0] = 0x4f;
        assert_eq!(
            Ipv4Packet::new_checked(&bad[..40]),
            Err(WireError::BadHeaderLen)
        );
        bad[0] = 0x46;
        bad[2..4].copy_from_slice(&20u16.to_be_bytes());
        assert_eq!(
            Ipv4Packet::new_checked(&bad[..]),
            Err(WireError::BadTotalLen)
        );
    }

    #[test]
    fn emit_matches_fixture() {
        let repr = Ipv4Repr {
            src_addr: 0x0af4_0105,
            dst_addr: 0x0a60_000a,
            protocol: protocol::UDP,
            ttl: 64,
            dscp_ecn: 0,
            ident: 0x8a2f,
            dont_frag: false,
            payload_len: 37,
        };
        let mut buf = [0xffu8; HEADER_LEN];
        repr.emit(&mut buf).unwrap();
        assert_eq!(buf, DNS[14..34]);
        let packet = Ipv4Packet::new_checked(&DNS[14..]).unwrap();
        assert_eq!(Ipv4Repr::parse(&packet), Ok(repr));
        assert_eq!(repr.emit(&mut buf[..19]), Err(WireError::Truncated));
        let huge = Ipv4Repr {
            payload_len: 65_516,
            ..repr
        };
        assert_eq!(huge.emit(&mut buf), Err(WireError::BadTotalLen));
    }

    #[test]
    fn parse_repr_rejects_bad_checksum() {
        let mut bytes = SYN[14..].to_vec();
        bytes[10] ^= 1;
        let packet = Ipv4Packet::new_checked(&bytes[..]).unwrap();
        assert!(!packet.verify_checksum());
        assert_eq!(Ipv4Repr::parse(&packet), Err(WireError::BadChecksum));
    }

    #[test]
    fn setters_then_fill_checksum() {
        let mut bytes = SYN[14..].to_vec();
        let mut packet = Ipv4Packet::new_checked(&mut bytes[..]).unwrap();
        packet.set_ttl(63);
        packet.set_src_addr(0xc612_0001);
        packet.set_more_frags(true);
        packet.set_frag_offset(1480);
        packet.set_dont_frag(false);
        assert!(!packet.verify_checksum());
        packet.fill_checksum();
        assert!(packet.verify_checksum());
        assert!(packet.is_fragment());
        assert!(packet.more_frags());
        assert!(!packet.dont_frag());
        assert_eq!(packet.frag_offset(), 1480);
        assert_eq!(packet.src_addr(), 0xc612_0001);
        packet.payload_mut()[0] = 0;
        assert_eq!(bytes[20], 0);
    }

    #[test]
    fn length_setters_never_make_payload_panic() {
        let mut bytes = SYN[14..].to_vec();
        let mut packet = Ipv4Packet::new_checked(&mut bytes[..]).unwrap();
        packet.set_total_len(u16::MAX);
        assert_eq!(packet.payload(), &[] as &[u8]);
        packet.set_header_len(60);
        packet.set_total_len(10);
        assert_eq!(packet.payload_mut(), &mut [] as &mut [u8]);
        assert_eq!(packet.options().len(), 40);
    }

    /// Calls every accessor; none may panic on a checked packet.
    fn touch_all(bytes: &[u8]) {
        let Ok(p) = Ipv4Packet::new_checked(bytes) else {
            return;
        };
        let _ = (
            p.version(),
            p.header_len(),
            p.has_options(),
            p.dscp_ecn(),
            p.total_len(),
        );
        let _ = (
            p.ident(),
            p.dont_frag(),
            p.more_frags(),
            p.frag_offset(),
            p.is_fragment(),
        );
        let _ = (
            p.ttl(),
            p.protocol(),
            p.checksum(),
            p.src_addr(),
            p.dst_addr(),
        );
        let _ = (p.options().len(), p.payload().len(), p.verify_checksum());
        let _ = Ipv4Repr::parse(&p);
        let mut owned = bytes.to_vec();
        let mut p = Ipv4Packet::new_unchecked(&mut owned[..]);
        p.set_dscp_ecn(1);
        p.set_ident(2);
        p.set_dont_frag(true);
        p.set_more_frags(true);
        p.set_frag_offset(8);
        p.set_ttl(3);
        p.set_protocol(4);
        p.set_src_addr(5);
        p.set_dst_addr(6);
        p.set_checksum(7);
        p.fill_checksum();
        let _ = p.payload_mut().len();
        p.set_version(4);
        p.set_header_len(60);
        p.set_total_len(u16::MAX);
        let _ = (p.payload().len(), p.options().len(), p.verify_checksum());
        p.fill_checksum();
        let _ = p.into_inner();
    }

    fn arb_repr() -> impl Strategy<Value = Ipv4Repr> {
        (any::<(u32, u32, u8, u8, u8, u16, bool)>(), 0usize..=65_515).prop_map(
            |((src_addr, dst_addr, protocol, ttl, dscp_ecn, ident, dont_frag), payload_len)| {
                Ipv4Repr {
                    src_addr,
                    dst_addr,
                    protocol,
                    ttl,
                    dscp_ecn,
                    ident,
                    dont_frag,
                    payload_len,
                }
            },
        )
    }

    proptest! {
        #[test]
        fn checked_accessors_never_panic(
            mut bytes in proptest::collection::vec(any::<u8>(), 0..80),
            ihl in 0u8..16,
            total_len in 0u16..90,
            fix in any::<bool>(),
        ) {
            if fix && bytes.len() >= HEADER_LEN {
                bytes[0] = 0x40 | ihl;
                bytes[2..4].copy_from_slice(&total_len.to_be_bytes());
            }
            touch_all(&bytes);
        }

        #[test]
        fn repr_round_trip(repr in arb_repr()) {
            let mut buf = vec![0u8; repr.total_len()];
            repr.emit(&mut buf).unwrap();
            let packet = Ipv4Packet::new_checked(&buf[..]).unwrap();
            prop_assert_eq!(Ipv4Repr::parse(&packet), Ok(repr));
        }

        #[test]
        fn agrees_with_etherparse(
            (src, dst, ttl, proto, ident) in any::<([u8; 4], [u8; 4], u8, u8, u16)>(),
            (df, mf, frag) in (any::<bool>(), any::<bool>(), 0u16..8192),
            dscp in 0u8..64,
            options_words in 0usize..=10,
            payload in proptest::collection::vec(any::<u8>(), 0..64),
            padding in 0usize..16,
        ) {
            let payload_len = u16::try_from(payload.len()).unwrap();
            let mut header = etherparse::Ipv4Header::new(
                payload_len, ttl, etherparse::IpNumber(proto), src, dst,
            ).unwrap();
            header.identification = ident;
            header.dont_fragment = df;
            header.more_fragments = mf;
            header.fragment_offset = etherparse::IpFragOffset::try_new(frag).unwrap();
            header.dscp = etherparse::Ipv4Dscp::try_new(dscp).unwrap();
            header.options =
                etherparse::Ipv4Options::try_from(&vec![1u8; options_words * 4][..]).unwrap();
            header.set_payload_len(payload.len()).unwrap();
            header.header_checksum = header.calc_header_checksum();
            let mut bytes = header.to_bytes().to_vec();
            bytes.extend_from_slice(&payload);
            bytes.resize(bytes.len() + padding, 0);

            let packet = Ipv4Packet::new_checked(&bytes[..]).unwrap();
            prop_assert_eq!(packet.header_len(), header.header_len());
            prop_assert_eq!(packet.has_options(), options_words > 0);
            prop_assert_eq!(packet.options(), header.options.as_slice());
            prop_assert_eq!(usize::from(packet.total_len()), header.header_len() + payload.len());
            prop_assert_eq!(packet.ident(), ident);
            prop_assert_eq!(packet.dont_frag(), df);
            prop_assert_eq!(packet.more_frags(), mf);
            prop_assert_eq!(packet.frag_offset(), frag * 8);
            prop_assert_eq!(packet.is_fragment(), mf || frag != 0);
            prop_assert_eq!(packet.dscp_ecn() >> 2, dscp);
            prop_assert_eq!(packet.ttl(), ttl);
            prop_assert_eq!(packet.protocol(), proto);
            prop_assert_eq!(packet.src_addr(), u32::from_be_bytes(src));
            prop_assert_eq!(packet.dst_addr(), u32::from_be_bytes(dst));
            prop_assert!(packet.verify_checksum());
            prop_assert_eq!(packet.payload(), &payload[..]);
        }
    }
}
