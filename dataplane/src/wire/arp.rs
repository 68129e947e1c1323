//! ARP packet view ([`ArpPacket`]), Ethernet/IPv4 only.
//!
//! Contract: after [`ArpPacket::new_checked`] succeeds, no accessor panics.
//! It checks for 28 bytes and the fixed fields of ARP over Ethernet for IPv4:
//! hardware type 1, protocol 0x0800, address lengths 6 and 4.
//! [`ArpPacket::new_unchecked`] skips the checks; on a short buffer its
//! getters panic. Trailing bytes (Ethernet padding) are ignored.

use super::{get_mac, get_u16, get_u32, put_u16, put_u32, WireError};

mod field {
    use core::ops::Range;

    pub const HTYPE: Range<usize> = 0..2;
    pub const PTYPE: Range<usize> = 2..4;
    pub const HLEN: usize = 4;
    pub const PLEN: usize = 5;
    pub const OPER: Range<usize> = 6..8;
    pub const SHA: Range<usize> = 8..14;
    pub const SPA: Range<usize> = 14..18;
    pub const THA: Range<usize> = 18..24;
    pub const TPA: Range<usize> = 24..28;
}

/// Length of an Ethernet/IPv4 ARP packet.
pub const PACKET_LEN: usize = 28;

/// Hardware type of Ethernet.
const HTYPE_ETHERNET: u16 = 1;
/// Protocol type of IPv4 (its ethertype).
const PTYPE_IPV4: u16 = 0x0800;

/// ARP operations.
pub mod operation {
    /// A request: who has the target IP?
    pub const REQUEST: u16 = 1;
    /// A reply: the sender IP is at the sender MAC.
    pub const REPLY: u16 = 2;
}

/// A view of an ARP packet in `buffer`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> ArpPacket<T> {
    /// Wraps `buffer` without checking it; getters panic if it is shorter
    /// than 28 bytes.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        ArpPacket { buffer }
    }

    /// Wraps `buffer` after [`ArpPacket::check_len`] passes.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks the length and that this is ARP for IPv4 over Ethernet.
    #[inline]
    pub fn check_len(&self) -> Result<(), WireError> {
        if self.buffer.as_ref().len() < PACKET_LEN {
            return Err(WireError::Truncated);
        }
        if self.hardware_type() != HTYPE_ETHERNET
            || self.protocol_type() != PTYPE_IPV4
            || self.hardware_len() != 6
            || self.protocol_len() != 4
        {
            return Err(WireError::BadArp);
        }
        Ok(())
    }

    /// The wrapped buffer.
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The hardware type (1 for Ethernet).
    #[inline]
    pub fn hardware_type(&self) -> u16 {
        get_u16(&self.buffer.as_ref()[field::HTYPE])
    }

    /// The protocol type (0x0800 for IPv4).
    #[inline]
    pub fn protocol_type(&self) -> u16 {
        get_u16(&self.buffer.as_ref()[field::PTYPE])
    }

    /// The hardware address length (6).
    #[inline]
    pub fn hardware_len(&self) -> u8 {
        self.buffer.as_ref()[field::HLEN]
    }

    /// The protocol address length (4).
    #[inline]
    pub fn protocol_len(&self) -> u8 {
        self.buffer.as_ref()[field::PLEN]
    }

    /// The operation (see [`operation`]).
    #[inline]
    pub fn operation(&self) -> u16 {
        get_u16(&self.buffer.as_ref()[field::OPER])
    }

    /// The sender MAC address.
    #[inline]
    pub fn sender_mac(&self) -> [u8; 6] {
        get_mac(&self.buffer.as_ref()[field::SHA])
    }

    /// The sender IPv4 address, host order.
    #[inline]
    pub fn sender_ip(&self) -> u32 {
        get_u32(&self.buffer.as_ref()[field::SPA])
    }

    /// The target MAC address (zero in a request).
    #[inline]
    pub fn target_mac(&self) -> [u8; 6] {
        get_mac(&self.buffer.as_ref()[field::THA])
    }

    /// The target IPv4 address, host order.
    #[inline]
    pub fn target_ip(&self) -> u32 {
        get_u32(&self.buffer.as_ref()[field::TPA])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> ArpPacket<T> {
    /// Writes the fixed fields of Ethernet/IPv4 ARP: hardware type 1,
    /// protocol 0x0800, address lengths 6 and 4.
    #[inline]
    pub fn fill_ethernet_ipv4(&mut self) {
        let b = self.buffer.as_mut();
        put_u16(&mut b[field::HTYPE], HTYPE_ETHERNET);
        put_u16(&mut b[field::PTYPE], PTYPE_IPV4);
        b[field::HLEN] = 6;
        b[field::PLEN] = 4;
    }

    /// Sets the operation.
    #[inline]
    pub fn set_operation(&mut self, op: u16) {
        put_u16(&mut self.buffer.as_mut()[field::OPER], op);
    }

    /// Sets the sender MAC address.
    #[inline]
    pub fn set_sender_mac(&mut self, mac: [u8; 6]) {
        self.buffer.as_mut()[field::SHA].copy_from_slice(&mac);
    }

    /// Sets the sender IPv4 address (host order).
    #[inline]
    pub fn set_sender_ip(&mut self, ip: u32) {
        put_u32(&mut self.buffer.as_mut()[field::SPA], ip);
    }

    /// Sets the target MAC address.
    #[inline]
    pub fn set_target_mac(&mut self, mac: [u8; 6]) {
        self.buffer.as_mut()[field::THA].copy_from_slice(&mac);
    }

    /// Sets the target IPv4 address (host order).
    #[inline]
    pub fn set_target_ip(&mut self, ip: u32) {
        put_u32(&mut self.buffer.as_mut()[field::TPA], ip);
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::ARP;
    use super::*;
    use proptest::prelude::*;

    const POD_MAC: [u8; 6] = [0x02, 0x42, 0x0a, 0xf4, 0x01, 0x05];
    const POD: u32 = 0x0af4_0105;
    const GATEWAY: u32 = 0xa9fe_0101;

    #[test]
    fn parse_request() {
        let packet = ArpPacket::new_checked(&ARP[14..]).unwrap();
        assert_eq!(packet.hardware_type(), 1);
        assert_eq!(packet.protocol_type(), 0x0800);
        assert_eq!((packet.hardware_len(), packet.protocol_len()), (6, 4));
        assert_eq!(packet.operation(), operation::REQUEST);
        assert_eq!(packet.sender_mac(), POD_MAC);
        assert_eq!(packet.sender_ip(), POD);
        assert_eq!(packet.target_mac(), [0; 6]);
        assert_eq!(packet.target_ip(), GATEWAY);
    }

    #[test]
    fn rejects_other_arp() {
        assert_eq!(
            ArpPacket::new_checked(&ARP[14..41]),
            Err(WireError::Truncated)
        );
        for at in [1, 2, 4, 5] {
            let mut bad = ARP[14..].to_vec();
            bad[at] ^= 0x10;
            assert_eq!(
                ArpPacket::new_checked(&bad[..]),
                Err(WireError::BadArp),
                "byte {at}"
            );
        }
    }

    #[test]
    fn emit_with_setters_matches_fixture() {
        let mut buf = [0xffu8; PACKET_LEN];
        let mut packet = ArpPacket::new_unchecked(&mut buf[..]);
        packet.fill_ethernet_ipv4();
        packet.set_operation(operation::REQUEST);
        packet.set_sender_mac(POD_MAC);
        packet.set_sender_ip(POD);
        packet.set_target_mac([0; 6]);
        packet.set_target_ip(GATEWAY);
        assert_eq!(buf, ARP[14..]);
    }

    #[test]
    fn reply_in_place() {
        let switch_mac = [0xee; 6];
        let mut buf = ARP;
        let mut packet = ArpPacket::new_checked(&mut buf[14..]).unwrap();
        let (mac, ip, target) = (packet.sender_mac(), packet.sender_ip(), packet.target_ip());
        packet.set_operation(operation::REPLY);
        packet.set_target_mac(mac);
        packet.set_target_ip(ip);
        packet.set_sender_mac(switch_mac);
        packet.set_sender_ip(target);
        let packet = ArpPacket::new_checked(&buf[14..]).unwrap();
        assert_eq!(packet.operation(), operation::REPLY);
        assert_eq!(
            (packet.sender_mac(), packet.sender_ip()),
            (switch_mac, GATEWAY)
        );
        assert_eq!((packet.target_mac(), packet.target_ip()), (POD_MAC, POD));
    }

    proptest! {
        #[test]
        fn checked_accessors_never_panic(
            mut bytes in proptest::collection::vec(any::<u8>(), 0..40),
            fix in any::<bool>(),
        ) {
            if fix && bytes.len() >= PACKET_LEN {
                bytes[..6].copy_from_slice(&[0, 1, 8, 0, 6, 4]);
            }
            let Ok(p) = ArpPacket::new_checked(&bytes[..]) else { return Ok(()) };
            let _ = (p.hardware_type(), p.protocol_type(), p.hardware_len(), p.protocol_len());
            let _ = (p.operation(), p.sender_mac(), p.sender_ip(), p.target_mac(), p.target_ip());
            let mut owned = bytes.clone();
            let mut p = ArpPacket::new_unchecked(&mut owned[..]);
            p.fill_ethernet_ipv4();
            p.set_operation(2);
            p.set_sender_mac([1; 6]);
            p.set_sender_ip(2);
            p.set_target_mac([3; 6]);
            p.set_target_ip(4);
            let _ = p.into_inner();
        }
    }
}
