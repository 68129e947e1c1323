//! VXLAN header view ([`VxlanPacket`], RFC 7348) and the owned [`VxlanRepr`]
//! used to build encapsulations, wire-compatible with Linux's vxlan device
//! (flannel's overlay).
//!
//! Contract: after [`VxlanPacket::new_checked`] succeeds, no accessor panics.
//! It checks for 8 bytes and the "I" flag (0x08) that marks a valid VNI.
//! Reserved bits are ignored on receipt, as RFC 7348 says.
//! [`VxlanPacket::new_unchecked`] skips the checks; on a buffer under 8 bytes
//! its getters panic.
//!
//! An encapsulated frame is outer Ethernet, IPv4, UDP to [`VXLAN_PORT`], this
//! header, then the inner Ethernet frame: [`ENCAP_OVERHEAD`] bytes more than
//! the inner frame.

use super::{ethernet, ipv4, udp, WireError};

mod field {
    use core::ops::{Range, RangeFrom};

    pub const FLAGS: usize = 0;
    pub const RESERVED1: Range<usize> = 1..4;
    pub const VNI: Range<usize> = 4..7;
    pub const RESERVED2: usize = 7;
    pub const PAYLOAD: RangeFrom<usize> = 8..;
}

/// The IANA UDP destination port of VXLAN.
pub const VXLAN_PORT: u16 = 4789;
/// Length of the VXLAN header.
pub const VXLAN_HEADER_LEN: usize = 8;
/// Bytes an encapsulation adds in front of the inner frame: outer Ethernet
/// (14), IPv4 without options (20), UDP (8) and VXLAN (8).
pub const ENCAP_OVERHEAD: usize =
    ethernet::HEADER_LEN + ipv4::HEADER_LEN + udp::HEADER_LEN + VXLAN_HEADER_LEN;
/// The "I" flag: the VNI is valid. The only flag Linux sets by default.
pub const FLAG_VNI: u8 = 0x08;
/// The largest VNI (24 bits).
pub const MAX_VNI: u32 = 0x00ff_ffff;

/// A view of a VXLAN header and the inner frame in `buffer`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxlanPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> VxlanPacket<T> {
    /// Wraps `buffer` without checking it; getters panic if it is shorter
    /// than 8 bytes.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        VxlanPacket { buffer }
    }

    /// Wraps `buffer` after [`VxlanPacket::check_len`] passes.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks the length and the "I" flag.
    #[inline]
    pub fn check_len(&self) -> Result<(), WireError> {
        if self.buffer.as_ref().len() < VXLAN_HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if self.flags() & FLAG_VNI == 0 {
            return Err(WireError::BadVxlan);
        }
        Ok(())
    }

    /// The wrapped buffer.
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The flags byte.
    #[inline]
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }

    /// The 24-bit VXLAN network identifier.
    #[inline]
    pub fn vni(&self) -> u32 {
        let b = &self.buffer.as_ref()[field::VNI];
        u32::from_be_bytes([0, b[0], b[1], b[2]])
    }

    /// The inner Ethernet frame.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::PAYLOAD]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> VxlanPacket<T> {
    /// Sets the flags byte.
    #[inline]
    pub fn set_flags(&mut self, flags: u8) {
        self.buffer.as_mut()[field::FLAGS] = flags;
    }

    /// Sets the VNI; only its low 24 bits are kept (see [`MAX_VNI`]).
    #[inline]
    pub fn set_vni(&mut self, vni: u32) {
        let [_, a, b, c] = vni.to_be_bytes();
        self.buffer.as_mut()[field::VNI].copy_from_slice(&[a, b, c]);
    }

    /// The inner Ethernet frame, mutable.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::PAYLOAD]
    }
}

/// A VXLAN header, as the switch builds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VxlanRepr {
    /// The VXLAN network identifier (24 bits; higher bits are dropped on
    /// emit).
    pub vni: u32,
}

impl VxlanRepr {
    /// Reads the VNI from a checked view.
    #[inline]
    pub fn parse<T: AsRef<[u8]>>(packet: &VxlanPacket<T>) -> VxlanRepr {
        VxlanRepr { vni: packet.vni() }
    }

    /// Writes the 8-byte header at the start of `buf`: flags 0x08, reserved
    /// bits zero, the VNI.
    #[inline]
    pub fn emit(&self, buf: &mut [u8]) -> Result<(), WireError> {
        let header = buf
            .get_mut(..VXLAN_HEADER_LEN)
            .ok_or(WireError::Truncated)?;
        header[field::RESERVED1].fill(0);
        header[field::RESERVED2] = 0;
        let mut packet = VxlanPacket::new_unchecked(header);
        packet.set_flags(FLAG_VNI);
        packet.set_vni(self.vni);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::ethernet::{ethertype, EthernetFrame, EthernetRepr};
    use super::super::fixtures::{PING, VXLAN};
    use super::super::ipv4::{protocol, Ipv4Packet, Ipv4Repr};
    use super::super::udp::{UdpPacket, UdpRepr};
    use super::*;
    use proptest::prelude::*;

    const INNER: core::ops::RangeFrom<usize> = ENCAP_OVERHEAD..;

    #[test]
    fn overhead_is_fifty() {
        assert_eq!(ENCAP_OVERHEAD, 50);
    }

    #[test]
    fn parse_linux_encapsulation() {
        let outer = EthernetFrame::new_checked(&VXLAN[..]).unwrap();
        assert_eq!(outer.ethertype(), ethertype::IPV4);
        let ip = Ipv4Packet::new_checked(outer.payload()).unwrap();
        assert!(ip.verify_checksum());
        assert_eq!(ip.protocol(), protocol::UDP);
        assert_eq!((ip.src_addr(), ip.dst_addr()), (0xc612_0001, 0xc612_0002));
        let udp = UdpPacket::new_checked(ip.payload()).unwrap();
        assert_eq!(udp.dst_port(), VXLAN_PORT);
        assert_eq!(udp.checksum(), 0);
        assert!(udp.verify_checksum(ip.src_addr(), ip.dst_addr()));
        let vxlan = VxlanPacket::new_checked(udp.payload()).unwrap();
        assert_eq!(vxlan.flags(), FLAG_VNI);
        assert_eq!(vxlan.vni(), 1);
        assert_eq!(VxlanRepr::parse(&vxlan), VxlanRepr { vni: 1 });
        let inner = EthernetFrame::new_checked(vxlan.payload()).unwrap();
        assert_eq!(inner.payload(), &PING[14..]);
    }

    #[test]
    fn rejects_bad_headers() {
        let header = &VXLAN[42..];
        assert_eq!(
            VxlanPacket::new_checked(&header[..7]),
            Err(WireError::Truncated)
        );
        let mut bad = header.to_vec();
        bad[0] = 0x00;
        assert_eq!(VxlanPacket::new_checked(&bad[..]), Err(WireError::BadVxlan));
        // Reserved bits are ignored on receipt (RFC 7348).
        bad[0] = 0x88;
        bad[7] = 0x01;
        assert!(VxlanPacket::new_checked(&bad[..]).is_ok());
    }

    #[test]
    fn emit_encapsulation_matches_linux() {
        let mut frame = [0u8; VXLAN.len()];
        frame[INNER].copy_from_slice(&VXLAN[INNER]);
        let inner_len = VXLAN.len() - ENCAP_OVERHEAD;
        let eth = EthernetRepr {
            src_addr: [0x52, 0x54, 0x00, 0x12, 0x34, 0x01],
            dst_addr: [0x52, 0x54, 0x00, 0x12, 0x34, 0x02],
            ethertype: ethertype::IPV4,
        };
        let udp = UdpRepr {
            src_port: 49825,
            dst_port: VXLAN_PORT,
            payload_len: VXLAN_HEADER_LEN + inner_len,
        };
        let ip = Ipv4Repr {
            src_addr: 0xc612_0001,
            dst_addr: 0xc612_0002,
            protocol: protocol::UDP,
            ttl: 64,
            dscp_ecn: 0,
            ident: 0x5d3e,
            dont_frag: false,
            payload_len: udp::HEADER_LEN + udp.payload_len,
        };
        eth.emit(&mut frame[..]).unwrap();
        ip.emit(&mut frame[14..]).unwrap();
        udp.emit(&mut frame[34..]).unwrap();
        VxlanRepr { vni: 1 }.emit(&mut frame[42..]).unwrap();
        assert_eq!(frame, VXLAN);
        assert_eq!(
            VxlanRepr { vni: 1 }.emit(&mut frame[..7]),
            Err(WireError::Truncated)
        );
    }

    #[test]
    fn set_vni_keeps_24_bits() {
        let mut buf = [0u8; 8];
        VxlanRepr { vni: 0x0102_0304 }.emit(&mut buf).unwrap();
        assert_eq!(buf, [0x08, 0, 0, 0, 0x02, 0x03, 0x04, 0]);
        let mut packet = VxlanPacket::new_checked(&mut buf[..]).unwrap();
        packet.set_vni(MAX_VNI);
        assert_eq!(packet.vni(), MAX_VNI);
        assert_eq!(packet.flags(), FLAG_VNI);
    }

    proptest! {
        #[test]
        fn checked_accessors_never_panic(
            mut bytes in proptest::collection::vec(any::<u8>(), 0..24),
            fix in any::<bool>(),
        ) {
            if fix && !bytes.is_empty() {
                bytes[0] |= FLAG_VNI;
            }
            let Ok(p) = VxlanPacket::new_checked(&bytes[..]) else { return Ok(()) };
            let _ = (p.flags(), p.vni(), p.payload().len(), VxlanRepr::parse(&p));
            let mut owned = bytes.clone();
            let mut p = VxlanPacket::new_unchecked(&mut owned[..]);
            p.set_flags(0);
            p.set_vni(u32::MAX);
            let _ = p.payload_mut().len();
            let _ = p.into_inner();
        }

        #[test]
        fn repr_round_trip(vni in 0..=MAX_VNI) {
            let mut buf = [0u8; VXLAN_HEADER_LEN];
            VxlanRepr { vni }.emit(&mut buf).unwrap();
            let packet = VxlanPacket::new_checked(&buf[..]).unwrap();
            prop_assert_eq!(VxlanRepr::parse(&packet), VxlanRepr { vni });
        }
    }
}
