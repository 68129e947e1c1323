//! UDP datagram view ([`UdpPacket`]) and the owned [`UdpRepr`] used to build
//! VXLAN outer headers.
//!
//! Contract: after [`UdpPacket::new_checked`] succeeds, no accessor panics.
//! It checks for 8 bytes and a length field between 8 and the buffer length;
//! [`UdpPacket::payload`] ends at the length field. [`UdpPacket::new_unchecked`]
//! skips the checks; on a buffer under 8 bytes its getters panic.
//!
//! A checksum of 0 means "none" over IPv4: [`UdpPacket::verify_checksum`]
//! accepts it, [`UdpPacket::fill_checksum`] never writes it (a computed 0 is
//! sent as `0xffff`), and rewrites patch it with
//! [`checksum::update_udp16`]/[`checksum::update_udp32`], which keep 0.

use super::checksum;
use super::ipv4::protocol;
use super::{get_u16, put_u16, WireError};

mod field {
    use core::ops::Range;

    pub const SRC_PORT: Range<usize> = 0..2;
    pub const DST_PORT: Range<usize> = 2..4;
    pub const LENGTH: Range<usize> = 4..6;
    pub const CHECKSUM: Range<usize> = 6..8;
}

/// Length of a UDP header.
pub const HEADER_LEN: usize = 8;

/// A view of a UDP datagram in `buffer`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> UdpPacket<T> {
    /// Wraps `buffer` without checking it; getters panic if it is shorter
    /// than 8 bytes.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        UdpPacket { buffer }
    }

    /// Wraps `buffer` after [`UdpPacket::check_len`] passes.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Wraps the first fragment of a datagram: `buffer` must hold the
    /// header, and the length field must cover at least the `seen` bytes
    /// (the rest of the datagram is in later fragments).
    #[inline]
    pub fn new_checked_header(buffer: T, seen: usize) -> Result<Self, WireError> {
        let packet = Self::new_unchecked(buffer);
        if packet.buffer.as_ref().len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if usize::from(packet.len()) < seen.max(HEADER_LEN) {
            return Err(WireError::BadUdpLen);
        }
        Ok(packet)
    }

    /// Checks the header length and the length field against the buffer.
    #[inline]
    pub fn check_len(&self) -> Result<(), WireError> {
        let buf_len = self.buffer.as_ref().len();
        if buf_len < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        let len = usize::from(self.len());
        if len < HEADER_LEN || len > buf_len {
            return Err(WireError::BadUdpLen);
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

    /// The length field: header plus payload, in bytes.
    #[inline]
    pub fn len(&self) -> u16 {
        get_u16(&self.buffer.as_ref()[field::LENGTH])
    }

    /// Whether the payload is empty (the length field is at most 8).
    #[inline]
    pub fn is_empty(&self) -> bool {
        usize::from(self.len()) <= HEADER_LEN
    }

    /// The checksum field (0: none).
    #[inline]
    pub fn checksum(&self) -> u16 {
        get_u16(&self.buffer.as_ref()[field::CHECKSUM])
    }

    /// The payload, up to the length field.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        let len = usize::from(self.len());
        self.buffer.as_ref().get(HEADER_LEN..len).unwrap_or(&[])
    }

    /// Whether the checksum verifies against the IPv4 pseudo-header of
    /// `src` and `dst` (host order). A checksum of 0 (none) verifies.
    #[inline]
    pub fn verify_checksum(&self, src: u32, dst: u32) -> bool {
        if self.checksum() == 0 {
            return true;
        }
        let len = self.len();
        match self.buffer.as_ref().get(..usize::from(len)) {
            Some(datagram) => {
                let pseudo = checksum::pseudo_header(src, dst, protocol::UDP, len);
                checksum::fold(checksum::combine(pseudo, checksum::sum(datagram))) == 0xffff
            }
            None => false,
        }
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> UdpPacket<T> {
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

    /// Sets the length field. Changes where the payload ends.
    #[inline]
    pub fn set_len(&mut self, len: u16) {
        put_u16(&mut self.buffer.as_mut()[field::LENGTH], len);
    }

    /// Sets the checksum field.
    #[inline]
    pub fn set_checksum(&mut self, csum: u16) {
        put_u16(&mut self.buffer.as_mut()[field::CHECKSUM], csum);
    }

    /// The payload up to the length field, mutable.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let len = usize::from(self.len());
        self.buffer
            .as_mut()
            .get_mut(HEADER_LEN..len)
            .unwrap_or(&mut [])
    }

    /// Computes the checksum over the pseudo-header of `src` and `dst` (host
    /// order), the header and the payload up to the length field, and writes
    /// it; a computed 0 is written as `0xffff`.
    #[inline]
    pub fn fill_checksum(&mut self, src: u32, dst: u32) {
        self.set_checksum(0);
        let len = self.len();
        let data = match self.buffer.as_ref().get(..usize::from(len)) {
            Some(datagram) => checksum::sum(datagram),
            None => 0,
        };
        let pseudo = checksum::pseudo_header(src, dst, protocol::UDP, len);
        self.set_checksum(checksum::nonzero(checksum::finish(checksum::combine(
            pseudo, data,
        ))));
    }
}

/// A UDP header, as the switch builds it for VXLAN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpRepr {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// Payload length in bytes.
    pub payload_len: usize,
}

impl UdpRepr {
    /// Reads a header from a checked view. The checksum is not verified:
    /// that needs the IP addresses ([`UdpPacket::verify_checksum`]).
    #[inline]
    pub fn parse<T: AsRef<[u8]>>(packet: &UdpPacket<T>) -> UdpRepr {
        UdpRepr {
            src_port: packet.src_port(),
            dst_port: packet.dst_port(),
            payload_len: usize::from(packet.len()).saturating_sub(HEADER_LEN),
        }
    }

    /// Writes the 8-byte header at the start of `buf` with checksum 0
    /// ("none"), as Linux's vxlan device sends by default (RFC 7348 says the
    /// checksum SHOULD be 0 over IPv4). For a checksum, call
    /// [`UdpPacket::fill_checksum`] once the payload is in place.
    #[inline]
    pub fn emit(&self, buf: &mut [u8]) -> Result<(), WireError> {
        let len = HEADER_LEN
            .checked_add(self.payload_len)
            .and_then(|len| u16::try_from(len).ok())
            .ok_or(WireError::BadUdpLen)?;
        let header = buf.get_mut(..HEADER_LEN).ok_or(WireError::Truncated)?;
        let mut packet = UdpPacket::new_unchecked(header);
        packet.set_src_port(self.src_port);
        packet.set_dst_port(self.dst_port);
        packet.set_len(len);
        packet.set_checksum(0);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::DNS;
    use super::*;
    use proptest::prelude::*;

    const POD: u32 = 0x0af4_0105;
    const DNS_SERVICE: u32 = 0x0a60_000a;

    #[test]
    fn parse_dns() {
        let datagram = UdpPacket::new_checked(&DNS[34..]).unwrap();
        assert_eq!(datagram.src_port(), 51234);
        assert_eq!(datagram.dst_port(), 53);
        assert_eq!(datagram.len(), 37);
        assert!(!datagram.is_empty());
        assert_eq!(datagram.checksum(), 0x3f48);
        assert_eq!(datagram.payload(), &DNS[42..]);
        assert!(datagram.verify_checksum(POD, DNS_SERVICE));
        assert!(!datagram.verify_checksum(POD, DNS_SERVICE + 1));
        assert_eq!(
            UdpRepr::parse(&datagram),
            UdpRepr {
                src_port: 51234,
                dst_port: 53,
                payload_len: 29
            }
        );
    }

    #[test]
    fn rejects_bad_lengths() {
        let udp = &DNS[34..];
        assert_eq!(UdpPacket::new_checked(&udp[..7]), Err(WireError::Truncated));
        assert_eq!(
            UdpPacket::new_checked(&udp[..36]),
            Err(WireError::BadUdpLen)
        );
        let mut bad = udp.to_vec();
        bad[4..6].copy_from_slice(&7u16.to_be_bytes());
        assert_eq!(UdpPacket::new_checked(&bad[..]), Err(WireError::BadUdpLen));
    }

    #[test]
    fn payload_stops_at_length_field() {
        let mut bytes = DNS[34..].to_vec();
        bytes.extend_from_slice(&[0; 9]);
        let datagram = UdpPacket::new_checked(&bytes[..]).unwrap();
        assert_eq!(datagram.payload(), &DNS[42..]);
        assert!(datagram.verify_checksum(POD, DNS_SERVICE));
    }

    #[test]
    fn emit_then_fill_matches_fixture() {
        let mut bytes = DNS[34..].to_vec();
        bytes[..8].fill(0xff);
        UdpRepr {
            src_port: 51234,
            dst_port: 53,
            payload_len: 29,
        }
        .emit(&mut bytes)
        .unwrap();
        let mut datagram = UdpPacket::new_checked(&mut bytes[..]).unwrap();
        assert_eq!(datagram.checksum(), 0);
        assert!(datagram.verify_checksum(POD, DNS_SERVICE));
        datagram.fill_checksum(POD, DNS_SERVICE);
        assert_eq!(bytes, DNS[34..]);
        let repr = UdpRepr {
            src_port: 1,
            dst_port: 2,
            payload_len: 65_528,
        };
        assert_eq!(repr.emit(&mut bytes), Err(WireError::BadUdpLen));
        assert_eq!(
            UdpRepr {
                payload_len: 0,
                ..repr
            }
            .emit(&mut bytes[..7]),
            Err(WireError::Truncated)
        );
    }

    #[test]
    fn computed_zero_is_sent_as_ffff() {
        // Choose the source port so the sum over everything else folds to
        // 0xffff: the computed checksum is then 0 and must go out as 0xffff.
        let mut bytes = DNS[34..].to_vec();
        let mut datagram = UdpPacket::new_checked(&mut bytes[..]).unwrap();
        datagram.set_checksum(0);
        datagram.set_src_port(0);
        let pseudo = checksum::pseudo_header(POD, DNS_SERVICE, protocol::UDP, datagram.len());
        let rest = checksum::fold(checksum::combine(pseudo, checksum::sum(&bytes)));
        let mut datagram = UdpPacket::new_checked(&mut bytes[..]).unwrap();
        datagram.set_src_port(!rest);
        datagram.fill_checksum(POD, DNS_SERVICE);
        assert_eq!(datagram.checksum(), 0xffff);
        assert!(datagram.verify_checksum(POD, DNS_SERVICE));
    }

    /// Calls every accessor; none may panic on a checked datagram.
    fn touch_all(bytes: &[u8]) {
        let Ok(d) = UdpPacket::new_checked(bytes) else {
            return;
        };
        let _ = (
            d.src_port(),
            d.dst_port(),
            d.len(),
            d.is_empty(),
            d.checksum(),
        );
        let _ = (
            d.payload().len(),
            d.verify_checksum(1, 2),
            UdpRepr::parse(&d),
        );
        let mut owned = bytes.to_vec();
        let mut d = UdpPacket::new_unchecked(&mut owned[..]);
        d.set_src_port(1);
        d.set_dst_port(2);
        d.set_checksum(3);
        d.fill_checksum(4, 5);
        let _ = d.payload_mut().len();
        d.set_len(u16::MAX);
        let _ = (d.payload().len(), d.verify_checksum(1, 2));
        d.fill_checksum(4, 5);
        let _ = d.into_inner();
    }

    proptest! {
        #[test]
        fn checked_accessors_never_panic(
            mut bytes in proptest::collection::vec(any::<u8>(), 0..40),
            len in 0u16..48,
            fix in any::<bool>(),
        ) {
            if fix && bytes.len() >= HEADER_LEN {
                bytes[4..6].copy_from_slice(&len.to_be_bytes());
            }
            touch_all(&bytes);
        }

        #[test]
        fn repr_round_trip(src_port in any::<u16>(), dst_port in any::<u16>(), payload_len in 0usize..=65_527) {
            let repr = UdpRepr { src_port, dst_port, payload_len };
            let mut buf = vec![0u8; HEADER_LEN + payload_len];
            repr.emit(&mut buf).unwrap();
            let datagram = UdpPacket::new_checked(&buf[..]).unwrap();
            prop_assert_eq!(UdpRepr::parse(&datagram), repr);
        }

        #[test]
        fn agrees_with_etherparse(
            (src, dst, sport, dport) in any::<([u8; 4], [u8; 4], u16, u16)>(),
            payload in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let header = etherparse::UdpHeader::without_ipv4_checksum(sport, dport, payload.len()).unwrap();
            let checksum = header.calc_checksum_ipv4_raw(src, dst, &payload).unwrap();
            let header = etherparse::UdpHeader { checksum, ..header };
            let mut bytes = header.to_bytes().to_vec();
            bytes.extend_from_slice(&payload);

            let datagram = UdpPacket::new_checked(&bytes[..]).unwrap();
            let (src, dst) = (u32::from_be_bytes(src), u32::from_be_bytes(dst));
            prop_assert_eq!(datagram.src_port(), sport);
            prop_assert_eq!(datagram.dst_port(), dport);
            prop_assert_eq!(datagram.len(), header.length);
            prop_assert_eq!(datagram.checksum(), checksum);
            prop_assert!(datagram.verify_checksum(src, dst));
            prop_assert_eq!(datagram.payload(), &payload[..]);
            let mut refilled = bytes.clone();
            UdpPacket::new_unchecked(&mut refilled[..]).fill_checksum(src, dst);
            prop_assert_eq!(refilled, bytes);
        }
    }
}
