//! ICMP message view ([`IcmpPacket`]) and the view of the original datagram
//! an ICMP error carries ([`IcmpInvoking`]).
//!
//! Contract: after [`IcmpPacket::new_checked`] (8 bytes) or
//! [`IcmpInvoking::new_checked`] succeeds, no accessor of that view panics.
//! An [`IcmpInvoking`] is checked for version 4, a header length of at least
//! 20 bytes, and that header plus 8 bytes of its payload (ports, or an ICMP
//! echo's id) within the buffer. Its total length is not checked: errors
//! often carry only the start of the original datagram.
//! `new_unchecked` skips the checks; on a short buffer its getters panic.
//!
//! The ICMP view should span exactly the message (as
//! [`super::Ipv4Packet::payload`] gives it): the checksum covers the buffer.

use super::checksum;
use super::ipv4::{self, Ipv4Packet};
use super::{get_u16, put_u16, WireError};

mod field {
    use core::ops::{Range, RangeFrom};

    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: Range<usize> = 2..4;
    pub const ECHO_IDENT: Range<usize> = 4..6;
    pub const ECHO_SEQ_NO: Range<usize> = 6..8;
    pub const DATA: RangeFrom<usize> = 8..;
}

/// Length of the ICMP header (type, code, checksum, 4 type-specific bytes).
pub const HEADER_LEN: usize = 8;
/// Bytes of the original datagram's payload an ICMP error must carry.
pub const INVOKING_L4_LEN: usize = 8;

/// ICMP message types the switch handles.
pub mod msg_type {
    /// Echo reply.
    pub const ECHO_REPLY: u8 = 0;
    /// Destination unreachable (an error).
    pub const DEST_UNREACHABLE: u8 = 3;
    /// Echo request.
    pub const ECHO_REQUEST: u8 = 8;
    /// Time exceeded (an error).
    pub const TIME_EXCEEDED: u8 = 11;
}

/// A view of an ICMP message in `buffer`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IcmpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> IcmpPacket<T> {
    /// Wraps `buffer` without checking it; getters panic if it is shorter
    /// than 8 bytes.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        IcmpPacket { buffer }
    }

    /// Wraps `buffer` after [`IcmpPacket::check_len`] passes.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks that the buffer holds the 8-byte header.
    #[inline]
    pub fn check_len(&self) -> Result<(), WireError> {
        if self.buffer.as_ref().len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        Ok(())
    }

    /// The wrapped buffer.
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The message type (see [`msg_type`]).
    #[inline]
    pub fn msg_type(&self) -> u8 {
        self.buffer.as_ref()[field::TYPE]
    }

    /// The message code.
    #[inline]
    pub fn code(&self) -> u8 {
        self.buffer.as_ref()[field::CODE]
    }

    /// The checksum field.
    #[inline]
    pub fn checksum(&self) -> u16 {
        get_u16(&self.buffer.as_ref()[field::CHECKSUM])
    }

    /// Whether this is an echo request or reply.
    #[inline]
    pub fn is_echo(&self) -> bool {
        matches!(
            self.msg_type(),
            msg_type::ECHO_REQUEST | msg_type::ECHO_REPLY
        )
    }

    /// Whether this is an error that carries an original datagram
    /// (destination unreachable or time exceeded).
    #[inline]
    pub fn is_error(&self) -> bool {
        matches!(
            self.msg_type(),
            msg_type::DEST_UNREACHABLE | msg_type::TIME_EXCEEDED
        )
    }

    /// The echo identifier (meaningful for echo messages only).
    #[inline]
    pub fn echo_ident(&self) -> u16 {
        get_u16(&self.buffer.as_ref()[field::ECHO_IDENT])
    }

    /// The echo sequence number (meaningful for echo messages only).
    #[inline]
    pub fn echo_seq_no(&self) -> u16 {
        get_u16(&self.buffer.as_ref()[field::ECHO_SEQ_NO])
    }

    /// Everything after the 8-byte header: echo data, or an error's original
    /// datagram.
    #[inline]
    pub fn data(&self) -> &[u8] {
        &self.buffer.as_ref()[field::DATA]
    }

    /// The original datagram of an error message, checked.
    #[inline]
    pub fn invoking(&self) -> Result<IcmpInvoking<&[u8]>, WireError> {
        if !self.is_error() {
            return Err(WireError::NotIcmpError);
        }
        IcmpInvoking::new_checked(self.data())
    }

    /// Whether the checksum over the whole buffer verifies.
    #[inline]
    pub fn verify_checksum(&self) -> bool {
        checksum::fold(checksum::sum(self.buffer.as_ref())) == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> IcmpPacket<T> {
    /// Sets the message type.
    #[inline]
    pub fn set_msg_type(&mut self, value: u8) {
        self.buffer.as_mut()[field::TYPE] = value;
    }

    /// Sets the message code.
    #[inline]
    pub fn set_code(&mut self, value: u8) {
        self.buffer.as_mut()[field::CODE] = value;
    }

    /// Sets the checksum field.
    #[inline]
    pub fn set_checksum(&mut self, csum: u16) {
        put_u16(&mut self.buffer.as_mut()[field::CHECKSUM], csum);
    }

    /// Sets the echo identifier. The checksum is not touched.
    #[inline]
    pub fn set_echo_ident(&mut self, ident: u16) {
        put_u16(&mut self.buffer.as_mut()[field::ECHO_IDENT], ident);
    }

    /// Sets the echo sequence number. The checksum is not touched.
    #[inline]
    pub fn set_echo_seq_no(&mut self, seq: u16) {
        put_u16(&mut self.buffer.as_mut()[field::ECHO_SEQ_NO], seq);
    }

    /// Everything after the 8-byte header, mutable.
    #[inline]
    pub fn data_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::DATA]
    }

    /// The original datagram of an error message, checked and mutable (for
    /// NAT of the embedded addresses and ports).
    #[inline]
    pub fn invoking_mut(&mut self) -> Result<IcmpInvoking<&mut [u8]>, WireError> {
        if !self.is_error() {
            return Err(WireError::NotIcmpError);
        }
        IcmpInvoking::new_checked(self.data_mut())
    }

    /// Computes the checksum over the whole buffer and writes it.
    #[inline]
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let csum = checksum::finish(checksum::sum(self.buffer.as_ref()));
        self.set_checksum(csum);
    }
}

/// A view of the original datagram an ICMP error carries: its IPv4 header
/// and at least the first 8 bytes of its payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IcmpInvoking<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> IcmpInvoking<T> {
    /// Wraps `buffer` without checking it; getters panic if it is shorter
    /// than 20 bytes.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        IcmpInvoking { buffer }
    }

    /// Wraps `buffer` after [`IcmpInvoking::check_len`] passes.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks version 4, the header length, and 8 bytes after the header.
    #[inline]
    pub fn check_len(&self) -> Result<(), WireError> {
        let len = self.buffer.as_ref().len();
        if len < ipv4::HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if self.ip().version() != 4 {
            return Err(WireError::BadVersion);
        }
        let header_len = self.header_len();
        if header_len < ipv4::HEADER_LEN {
            return Err(WireError::BadHeaderLen);
        }
        if header_len + INVOKING_L4_LEN > len {
            return Err(WireError::Truncated);
        }
        Ok(())
    }

    /// The wrapped buffer.
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The fixed IPv4 header fields, read through an IPv4 view. Only its
    /// fixed-field accessors are meaningful: its total length is the
    /// original datagram's, not this buffer's.
    #[inline]
    fn ip(&self) -> Ipv4Packet<&[u8]> {
        Ipv4Packet::new_unchecked(self.buffer.as_ref())
    }

    /// The original header length in bytes.
    #[inline]
    pub fn header_len(&self) -> usize {
        self.ip().header_len()
    }

    /// The original protocol.
    #[inline]
    pub fn protocol(&self) -> u8 {
        self.ip().protocol()
    }

    /// The original source address, host order.
    #[inline]
    pub fn src_addr(&self) -> u32 {
        self.ip().src_addr()
    }

    /// The original destination address, host order.
    #[inline]
    pub fn dst_addr(&self) -> u32 {
        self.ip().dst_addr()
    }

    /// The original header checksum.
    #[inline]
    pub fn ip_checksum(&self) -> u16 {
        self.ip().checksum()
    }

    /// Whether the original header checksum verifies.
    #[inline]
    pub fn verify_ip_checksum(&self) -> bool {
        self.ip().verify_checksum()
    }

    /// The original IPv4 header, options included.
    #[inline]
    pub fn ip_header(&self) -> &[u8] {
        let header_len = self.header_len();
        self.buffer.as_ref().get(..header_len).unwrap_or(&[])
    }

    /// The first 8 bytes of the original payload (the UDP header, the start
    /// of the TCP header, or the ICMP header).
    #[inline]
    pub fn l4_header(&self) -> &[u8] {
        let start = self.header_len();
        let range = start..start + INVOKING_L4_LEN;
        self.buffer.as_ref().get(range).unwrap_or(&[])
    }

    /// The original source port (TCP, UDP): the first two payload bytes. For
    /// an ICMP original, wrap [`IcmpInvoking::l4_header`] in an
    /// [`IcmpPacket`] instead.
    #[inline]
    pub fn src_port(&self) -> u16 {
        match self.l4_header() {
            [a, b, ..] => u16::from_be_bytes([*a, *b]),
            _ => 0,
        }
    }

    /// The original destination port (TCP, UDP): payload bytes 2 and 3.
    #[inline]
    pub fn dst_port(&self) -> u16 {
        match self.l4_header() {
            [_, _, a, b, ..] => u16::from_be_bytes([*a, *b]),
            _ => 0,
        }
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> IcmpInvoking<T> {
    /// An IPv4 view for the fixed-field setters, as [`IcmpInvoking::ip`].
    #[inline]
    fn ip_mut(&mut self) -> Ipv4Packet<&mut [u8]> {
        Ipv4Packet::new_unchecked(self.buffer.as_mut())
    }

    /// Sets the original source address. No checksum is touched.
    #[inline]
    pub fn set_src_addr(&mut self, addr: u32) {
        self.ip_mut().set_src_addr(addr);
    }

    /// Sets the original destination address. No checksum is touched.
    #[inline]
    pub fn set_dst_addr(&mut self, addr: u32) {
        self.ip_mut().set_dst_addr(addr);
    }

    /// Sets the original header checksum.
    #[inline]
    pub fn set_ip_checksum(&mut self, csum: u16) {
        self.ip_mut().set_checksum(csum);
    }

    /// Recomputes the original header checksum.
    #[inline]
    pub fn fill_ip_checksum(&mut self) {
        self.ip_mut().fill_checksum();
    }

    /// The first 8 bytes of the original payload, mutable.
    #[inline]
    pub fn l4_header_mut(&mut self) -> &mut [u8] {
        let start = self.header_len();
        let range = start..start + INVOKING_L4_LEN;
        self.buffer.as_mut().get_mut(range).unwrap_or(&mut [])
    }

    /// Sets the original source port. No checksum is touched.
    #[inline]
    pub fn set_src_port(&mut self, port: u16) {
        if let [a, b, ..] = self.l4_header_mut() {
            [*a, *b] = port.to_be_bytes();
        }
    }

    /// Sets the original destination port. No checksum is touched.
    #[inline]
    pub fn set_dst_port(&mut self, port: u16) {
        if let [_, _, a, b, ..] = self.l4_header_mut() {
            [*a, *b] = port.to_be_bytes();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{DNS, PING, UNREACH};
    use super::super::ipv4::protocol;
    use super::*;
    use proptest::prelude::*;

    const POD: u32 = 0x0af4_0105;
    const DNS_SERVICE: u32 = 0x0a60_000a;

    #[test]
    fn parse_echo_request() {
        let ip = Ipv4Packet::new_checked(&PING[14..]).unwrap();
        assert_eq!(ip.protocol(), protocol::ICMP);
        let icmp = IcmpPacket::new_checked(ip.payload()).unwrap();
        assert_eq!((icmp.msg_type(), icmp.code()), (msg_type::ECHO_REQUEST, 0));
        assert!(icmp.is_echo());
        assert!(!icmp.is_error());
        assert_eq!(icmp.echo_ident(), 0x0b1a);
        assert_eq!(icmp.echo_seq_no(), 1);
        assert_eq!(icmp.data().len(), 56);
        assert_eq!(icmp.data()[16], 0x10);
        assert!(icmp.verify_checksum());
        assert_eq!(icmp.invoking(), Err(WireError::NotIcmpError));
    }

    #[test]
    fn parse_port_unreachable() {
        let ip = Ipv4Packet::new_checked(&UNREACH[14..]).unwrap();
        let icmp = IcmpPacket::new_checked(ip.payload()).unwrap();
        assert_eq!(
            (icmp.msg_type(), icmp.code()),
            (msg_type::DEST_UNREACHABLE, 3)
        );
        assert!(icmp.is_error());
        assert!(icmp.verify_checksum());
        let original = icmp.invoking().unwrap();
        assert_eq!(original.header_len(), 20);
        assert_eq!(original.protocol(), protocol::UDP);
        assert_eq!(
            (original.src_addr(), original.dst_addr()),
            (POD, DNS_SERVICE)
        );
        assert_eq!((original.src_port(), original.dst_port()), (51234, 53));
        assert!(original.verify_ip_checksum());
        assert_eq!(original.ip_checksum(), 0xda22);
        assert_eq!(original.ip_header(), &DNS[14..34]);
        assert_eq!(original.l4_header(), &DNS[34..42]);
    }

    #[test]
    fn invoking_needs_header_and_eight_bytes() {
        let icmp = &UNREACH[34..];
        // 8 bytes of ICMP header, 20 of IP header, 8 of UDP header.
        let short = IcmpPacket::new_checked(&icmp[..35]).unwrap();
        assert_eq!(short.invoking(), Err(WireError::Truncated));
        let enough = IcmpPacket::new_checked(&icmp[..36]).unwrap();
        assert_eq!(enough.invoking().unwrap().dst_port(), 53);
        let mut bad = icmp.to_vec();
        bad[8] = 0x65;
        assert_eq!(
            IcmpPacket::new_checked(&bad[..]).unwrap().invoking(),
            Err(WireError::BadVersion)
        );
        bad[8] = 0x44;
        let packet = IcmpPacket::new_checked(&bad[..]).unwrap();
        assert_eq!(packet.invoking(), Err(WireError::BadHeaderLen));
        assert_eq!(
            IcmpPacket::new_checked(&icmp[..7]),
            Err(WireError::Truncated)
        );
    }

    #[test]
    fn emit_echo_with_setters_matches_fixture() {
        let mut buf = PING[34..].to_vec();
        buf[..8].fill(0);
        let mut icmp = IcmpPacket::new_checked(&mut buf[..]).unwrap();
        icmp.set_msg_type(msg_type::ECHO_REQUEST);
        icmp.set_code(0);
        icmp.set_echo_ident(0x0b1a);
        icmp.set_echo_seq_no(1);
        icmp.fill_checksum();
        assert_eq!(buf, PING[34..]);
    }

    #[test]
    fn nat_of_the_invoking_datagram() {
        // Reverse DNAT on an error about a DNS query: the original datagram's
        // destination goes from the backend back to the service address.
        let backend = 0x0af4_0207;
        let mut buf = UNREACH[34..].to_vec();
        let mut icmp = IcmpPacket::new_checked(&mut buf[..]).unwrap();
        let mut original = icmp.invoking_mut().unwrap();
        original.set_dst_addr(backend);
        original.set_src_port(1000);
        original.set_dst_port(5353);
        original.fill_ip_checksum();
        original.l4_header_mut()[6..8].fill(0);
        icmp.fill_checksum();
        let icmp = IcmpPacket::new_checked(&buf[..]).unwrap();
        assert!(icmp.verify_checksum());
        let original = icmp.invoking().unwrap();
        assert_eq!(original.dst_addr(), backend);
        assert_eq!((original.src_port(), original.dst_port()), (1000, 5353));
        assert!(original.verify_ip_checksum());
        assert_eq!(&original.l4_header()[6..8], &[0, 0]);
        let mut echo = PING[34..].to_vec();
        let mut echo = IcmpPacket::new_checked(&mut echo[..]).unwrap();
        assert_eq!(echo.invoking_mut().err(), Some(WireError::NotIcmpError));
        echo.set_checksum(0);
        assert!(!echo.verify_checksum());
    }

    /// Calls every accessor of both views; none may panic once checked.
    fn touch_all(bytes: &[u8]) {
        let Ok(p) = IcmpPacket::new_checked(bytes) else {
            return;
        };
        let _ = (
            p.msg_type(),
            p.code(),
            p.checksum(),
            p.is_echo(),
            p.is_error(),
        );
        let _ = (
            p.echo_ident(),
            p.echo_seq_no(),
            p.data().len(),
            p.verify_checksum(),
        );
        if let Ok(o) = p.invoking() {
            let _ = (
                o.header_len(),
                o.protocol(),
                o.src_addr(),
                o.dst_addr(),
                o.ip_checksum(),
            );
            let _ = (
                o.verify_ip_checksum(),
                o.ip_header().len(),
                o.l4_header().len(),
            );
            let _ = (o.src_port(), o.dst_port());
        }
        let mut owned = bytes.to_vec();
        let mut p = IcmpPacket::new_unchecked(&mut owned[..]);
        if let Ok(mut o) = p.invoking_mut() {
            o.set_src_addr(1);
            o.set_dst_addr(2);
            o.set_src_port(3);
            o.set_dst_port(4);
            o.set_ip_checksum(5);
            o.fill_ip_checksum();
            let _ = o.l4_header_mut().len();
            let _ = o.into_inner();
        }
        p.set_code(1);
        p.set_echo_ident(2);
        p.set_echo_seq_no(3);
        p.set_checksum(4);
        let _ = p.data_mut().len();
        p.fill_checksum();
        p.set_msg_type(0);
        let _ = p.into_inner();
    }

    proptest! {
        #[test]
        fn checked_accessors_never_panic(
            mut bytes in proptest::collection::vec(any::<u8>(), 0..64),
            error_type in prop_oneof![Just(msg_type::DEST_UNREACHABLE), Just(msg_type::TIME_EXCEEDED)],
            ihl in 0u8..16,
            fix in any::<bool>(),
        ) {
            if fix && bytes.len() > HEADER_LEN {
                bytes[0] = error_type;
                bytes[HEADER_LEN] = 0x40 | ihl;
            }
            touch_all(&bytes);
        }

        #[test]
        fn agrees_with_etherparse(
            (id, seq, request) in any::<(u16, u16, bool)>(),
            payload in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let echo = etherparse::IcmpEchoHeader { id, seq };
            let icmp_type = if request {
                etherparse::Icmpv4Type::EchoRequest(echo)
            } else {
                etherparse::Icmpv4Type::EchoReply(echo)
            };
            let header = etherparse::Icmpv4Header::with_checksum(icmp_type, &payload);
            let mut bytes = header.to_bytes().to_vec();
            bytes.extend_from_slice(&payload);

            let icmp = IcmpPacket::new_checked(&bytes[..]).unwrap();
            let expected_type = if request { msg_type::ECHO_REQUEST } else { msg_type::ECHO_REPLY };
            prop_assert_eq!(icmp.msg_type(), expected_type);
            prop_assert_eq!(icmp.code(), 0);
            prop_assert_eq!(icmp.echo_ident(), id);
            prop_assert_eq!(icmp.echo_seq_no(), seq);
            prop_assert_eq!(icmp.checksum(), header.checksum);
            prop_assert!(icmp.verify_checksum());
            prop_assert_eq!(icmp.data(), &payload[..]);
        }
    }
}
