//! Ethernet II frame view ([`EthernetFrame`]), with at most one 802.1Q tag,
//! and the owned [`EthernetRepr`] used to build VXLAN outer headers.
//!
//! Contract: after [`EthernetFrame::new_checked`] succeeds, no accessor
//! panics. It checks for 14 bytes, or 18 when the ethertype is 802.1Q.
//! [`EthernetFrame::ethertype`] is the one after the tag, and the payload
//! starts after it. Tag-dependent accessors stay panic-free even if a setter
//! writes 0x8100 into a frame too short for a tag. A second tag (QinQ) is not parsed: such a frame reports
//! ethertype [`ethertype::VLAN`], which no stage accepts.
//! [`EthernetFrame::new_unchecked`] skips the checks; on a short buffer its
//! getters panic.

use super::{get_mac, get_u16, put_u16, WireError};

mod field {
    use core::ops::{Range, RangeFrom};

    pub const DST: Range<usize> = 0..6;
    pub const SRC: Range<usize> = 6..12;
    pub const ETHERTYPE: Range<usize> = 12..14;
    pub const VLAN_TCI: Range<usize> = 14..16;
    pub const VLAN_ETHERTYPE: Range<usize> = 16..18;
    pub const PAYLOAD: RangeFrom<usize> = 14..;
    pub const VLAN_PAYLOAD: RangeFrom<usize> = 18..;
}

/// Length of an untagged Ethernet II header.
pub const HEADER_LEN: usize = 14;
/// Length of an Ethernet II header with one 802.1Q tag.
pub const VLAN_HEADER_LEN: usize = 18;

/// Ethertypes the switch handles.
pub mod ethertype {
    /// IPv4.
    pub const IPV4: u16 = 0x0800;
    /// ARP.
    pub const ARP: u16 = 0x0806;
    /// IPv6 (counted and dropped: the switch is IPv4 only).
    pub const IPV6: u16 = 0x86dd;
    /// An 802.1Q VLAN tag follows.
    pub const VLAN: u16 = 0x8100;
}

/// The VLAN identifier bits of an 802.1Q tag control word.
const VLAN_ID_MASK: u16 = 0x0fff;

/// A view of an Ethernet II frame in `buffer`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EthernetFrame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> EthernetFrame<T> {
    /// Wraps `buffer` without checking it; getters panic if it is shorter
    /// than the header.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        EthernetFrame { buffer }
    }

    /// Wraps `buffer` after [`EthernetFrame::check_len`] passes.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let frame = Self::new_unchecked(buffer);
        frame.check_len()?;
        Ok(frame)
    }

    /// Checks that the buffer holds the header, tag included.
    #[inline]
    pub fn check_len(&self) -> Result<(), WireError> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN || (self.is_vlan_tagged() && len < VLAN_HEADER_LEN) {
            return Err(WireError::Truncated);
        }
        Ok(())
    }

    /// The wrapped buffer.
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The destination MAC address.
    #[inline]
    pub fn dst_addr(&self) -> [u8; 6] {
        get_mac(&self.buffer.as_ref()[field::DST])
    }

    /// The source MAC address.
    #[inline]
    pub fn src_addr(&self) -> [u8; 6] {
        get_mac(&self.buffer.as_ref()[field::SRC])
    }

    /// Whether an 802.1Q tag follows the MAC addresses.
    #[inline]
    pub fn is_vlan_tagged(&self) -> bool {
        get_u16(&self.buffer.as_ref()[field::ETHERTYPE]) == ethertype::VLAN
    }

    /// The ethertype of the payload: after the 802.1Q tag if there is one.
    #[inline]
    pub fn ethertype(&self) -> u16 {
        let b = self.buffer.as_ref();
        let outer = get_u16(&b[field::ETHERTYPE]);
        if outer == ethertype::VLAN {
            b.get(field::VLAN_ETHERTYPE).map_or(outer, get_u16)
        } else {
            outer
        }
    }

    /// The VLAN identifier of the 802.1Q tag, if the frame is tagged.
    #[inline]
    pub fn vlan_id(&self) -> Option<u16> {
        if self.is_vlan_tagged() {
            let tci = self.buffer.as_ref().get(field::VLAN_TCI).map_or(0, get_u16);
            Some(tci & VLAN_ID_MASK)
        } else {
            None
        }
    }

    /// The header length: 14, or 18 with an 802.1Q tag.
    #[inline]
    pub fn header_len(&self) -> usize {
        if self.is_vlan_tagged() {
            VLAN_HEADER_LEN
        } else {
            HEADER_LEN
        }
    }

    /// Everything after the header (and tag).
    #[inline]
    pub fn payload(&self) -> &[u8] {
        let range = if self.is_vlan_tagged() {
            field::VLAN_PAYLOAD
        } else {
            field::PAYLOAD
        };
        self.buffer.as_ref().get(range).unwrap_or(&[])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> EthernetFrame<T> {
    /// Sets the destination MAC address.
    #[inline]
    pub fn set_dst_addr(&mut self, addr: [u8; 6]) {
        self.buffer.as_mut()[field::DST].copy_from_slice(&addr);
    }

    /// Sets the source MAC address.
    #[inline]
    pub fn set_src_addr(&mut self, addr: [u8; 6]) {
        self.buffer.as_mut()[field::SRC].copy_from_slice(&addr);
    }

    /// Sets the ethertype of the payload: the one after the 802.1Q tag if
    /// there is one, so tagging never changes.
    #[inline]
    pub fn set_ethertype(&mut self, value: u16) {
        let range = if self.is_vlan_tagged() {
            field::VLAN_ETHERTYPE
        } else {
            field::ETHERTYPE
        };
        if let Some(field) = self.buffer.as_mut().get_mut(range) {
            put_u16(field, value);
        }
    }

    /// Everything after the header (and tag), mutable.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let range = if self.is_vlan_tagged() {
            field::VLAN_PAYLOAD
        } else {
            field::PAYLOAD
        };
        self.buffer.as_mut().get_mut(range).unwrap_or(&mut [])
    }
}

/// An untagged Ethernet II header, as the switch builds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EthernetRepr {
    /// Source MAC address.
    pub src_addr: [u8; 6],
    /// Destination MAC address.
    pub dst_addr: [u8; 6],
    /// Ethertype of the payload.
    pub ethertype: u16,
}

impl EthernetRepr {
    /// Reads the addresses and the payload's ethertype; an 802.1Q tag is
    /// dropped.
    #[inline]
    pub fn parse<T: AsRef<[u8]>>(frame: &EthernetFrame<T>) -> EthernetRepr {
        EthernetRepr {
            src_addr: frame.src_addr(),
            dst_addr: frame.dst_addr(),
            ethertype: frame.ethertype(),
        }
    }

    /// Writes the 14-byte header at the start of `buf`.
    #[inline]
    pub fn emit(&self, buf: &mut [u8]) -> Result<(), WireError> {
        let header = buf.get_mut(..HEADER_LEN).ok_or(WireError::Truncated)?;
        header[field::DST].copy_from_slice(&self.dst_addr);
        header[field::SRC].copy_from_slice(&self.src_addr);
        put_u16(&mut header[field::ETHERTYPE], self.ethertype);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{ARP, ARP_VLAN, SYN};
    use super::*;
    use proptest::prelude::*;

    const POD_MAC: [u8; 6] = [0x02, 0x42, 0x0a, 0xf4, 0x01, 0x05];
    const SWITCH_MAC: [u8; 6] = [0xee; 6];

    #[test]
    fn parse_untagged() {
        let frame = EthernetFrame::new_checked(&SYN[..]).unwrap();
        assert_eq!(frame.dst_addr(), SWITCH_MAC);
        assert_eq!(frame.src_addr(), POD_MAC);
        assert_eq!(frame.ethertype(), ethertype::IPV4);
        assert_eq!(frame.vlan_id(), None);
        assert_eq!(frame.header_len(), HEADER_LEN);
        assert_eq!(frame.payload(), &SYN[14..]);
    }

    #[test]
    fn parse_tagged() {
        let frame = EthernetFrame::new_checked(&ARP_VLAN[..]).unwrap();
        assert!(frame.is_vlan_tagged());
        assert_eq!(frame.vlan_id(), Some(100));
        assert_eq!(frame.ethertype(), ethertype::ARP);
        assert_eq!(frame.header_len(), VLAN_HEADER_LEN);
        assert_eq!(frame.payload(), &ARP[14..]);
    }

    #[test]
    fn truncated() {
        assert_eq!(
            EthernetFrame::new_checked(&SYN[..13]),
            Err(WireError::Truncated)
        );
        assert_eq!(
            EthernetFrame::new_checked(&ARP_VLAN[..17]),
            Err(WireError::Truncated)
        );
        assert!(EthernetFrame::new_checked(&ARP_VLAN[..18]).is_ok());
    }

    #[test]
    fn emit_matches_fixture() {
        let repr = EthernetRepr::parse(&EthernetFrame::new_checked(&SYN[..]).unwrap());
        assert_eq!(
            repr,
            EthernetRepr {
                src_addr: POD_MAC,
                dst_addr: SWITCH_MAC,
                ethertype: ethertype::IPV4
            }
        );
        let mut buf = [0u8; HEADER_LEN];
        repr.emit(&mut buf).unwrap();
        assert_eq!(buf, SYN[..HEADER_LEN]);
        assert_eq!(repr.emit(&mut buf[..13]), Err(WireError::Truncated));
    }

    #[test]
    fn setters_rewrite_in_place() {
        let mut buf = ARP_VLAN;
        let mut frame = EthernetFrame::new_checked(&mut buf[..]).unwrap();
        frame.set_src_addr(SWITCH_MAC);
        frame.set_dst_addr(POD_MAC);
        frame.set_ethertype(ethertype::IPV4);
        frame.payload_mut()[0] = 0xaa;
        assert_eq!(frame.vlan_id(), Some(100));
        assert_eq!(frame.ethertype(), ethertype::IPV4);
        assert_eq!(&buf[..6], &POD_MAC);
        assert_eq!(&buf[6..12], &SWITCH_MAC);
        assert_eq!(&buf[12..18], &[0x81, 0x00, 0x00, 0x64, 0x08, 0x00]);
        assert_eq!(buf[18], 0xaa);
    }

    /// Calls every accessor; none may panic on a checked frame.
    fn touch_all(bytes: &[u8]) {
        let Ok(frame) = EthernetFrame::new_checked(bytes) else {
            return;
        };
        let _ = (
            frame.dst_addr(),
            frame.src_addr(),
            frame.ethertype(),
            frame.vlan_id(),
        );
        let _ = (
            frame.header_len(),
            frame.payload().len(),
            frame.is_vlan_tagged(),
        );
        let mut owned = bytes.to_vec();
        let mut frame = EthernetFrame::new_unchecked(&mut owned[..]);
        frame.set_dst_addr([1; 6]);
        frame.set_src_addr([2; 6]);
        frame.set_ethertype(0x1234);
        let _ = frame.payload_mut().len();
        // Tagging an untagged frame in place must not make accessors panic.
        frame.set_ethertype(ethertype::VLAN);
        let _ = (frame.ethertype(), frame.vlan_id(), frame.payload().len());
        frame.set_ethertype(0x1234);
        let _ = frame.payload_mut().len();
        let _ = frame.into_inner();
    }

    proptest! {
        #[test]
        fn checked_accessors_never_panic(
            mut bytes in proptest::collection::vec(any::<u8>(), 0..40),
            tag in any::<bool>(),
        ) {
            if tag && bytes.len() >= 14 {
                bytes[12..14].copy_from_slice(&ethertype::VLAN.to_be_bytes());
            }
            touch_all(&bytes);
        }

        #[test]
        fn repr_round_trip(src in any::<[u8; 6]>(), dst in any::<[u8; 6]>(), ty in any::<u16>()) {
            prop_assume!(ty != ethertype::VLAN);
            let repr = EthernetRepr { src_addr: src, dst_addr: dst, ethertype: ty };
            let mut buf = [0u8; HEADER_LEN];
            repr.emit(&mut buf).unwrap();
            let frame = EthernetFrame::new_checked(&buf[..]).unwrap();
            prop_assert_eq!(EthernetRepr::parse(&frame), repr);
        }

        #[test]
        fn agrees_with_etherparse(
            src in any::<[u8; 6]>(),
            dst in any::<[u8; 6]>(),
            vlan in proptest::option::of(0u16..4096),
            payload in proptest::collection::vec(any::<u8>(), 0..32),
        ) {
            let builder = etherparse::PacketBuilder::ethernet2(src, dst);
            let mut bytes = Vec::new();
            match vlan {
                Some(id) => builder
                    .single_vlan(etherparse::VlanId::try_new(id).unwrap())
                    .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
                    .udp(1, 2)
                    .write(&mut bytes, &payload)
                    .unwrap(),
                None => builder
                    .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
                    .udp(1, 2)
                    .write(&mut bytes, &payload)
                    .unwrap(),
            }
            let frame = EthernetFrame::new_checked(&bytes[..]).unwrap();
            let (link, _) = etherparse::Ethernet2Header::from_slice(&bytes).unwrap();
            prop_assert_eq!(frame.src_addr(), link.source);
            prop_assert_eq!(frame.dst_addr(), link.destination);
            prop_assert_eq!(frame.vlan_id(), vlan);
            prop_assert_eq!(frame.ethertype(), ethertype::IPV4);
            prop_assert_eq!(frame.header_len(), if vlan.is_some() { 18 } else { 14 });
            prop_assert_eq!(frame.payload().len(), 20 + 8 + payload.len());
        }
    }
}
