//! The virtio-net header ([`VnetHeader`]) a TAP device with `IFF_VNET_HDR`
//! puts before every frame it reads and expects before every frame written
//! to it: whether the frame is a super-packet to be segmented (GSO type and
//! segment size) and whether its L4 checksum is still partial (only the
//! pseudo-header sum, to be completed from `csum_start` with the result at
//! `csum_start + csum_offset`).
//!
//! The layout is `struct virtio_net_hdr` (10 bytes, little-endian as the
//! agent sets the device with `TUNSETVNETLE`): flags, gso_type, hdr_len,
//! gso_size, csum_start, csum_offset.
//!
//! A pod writes these headers, so each is checked against its frame
//! ([`VnetHeader::check`]) before anything trusts it: every way it can lie
//! is a [`VnetError`] of its own, for its own drop reason.

use core::fmt;

/// Length of `struct virtio_net_hdr`.
pub const VNET_HDR_LEN: usize = 10;

/// The largest frame a super-packet may be: an IPv4 datagram's 64 KB and a
/// VLAN-tagged Ethernet header.
pub const MAX_SUPER_FRAME: usize = 65_535 + 18;

/// `flags` bits.
pub mod flags {
    /// The L4 checksum is partial: complete it from `csum_start`.
    pub const NEEDS_CSUM: u8 = 1;
    /// The checksum was verified (by whoever delivers the frame).
    pub const DATA_VALID: u8 = 2;
    /// Every bit this switch knows.
    pub const KNOWN: u8 = NEEDS_CSUM | DATA_VALID;
}

/// `gso_type` values.
pub mod gso_type {
    pub const NONE: u8 = 0;
    pub const TCPV4: u8 = 1;
    /// UFO: IPv4 fragmentation of a large UDP datagram (gone from Linux).
    pub const UDP: u8 = 3;
    pub const TCPV6: u8 = 4;
    /// USO: UDP segments of `gso_size`.
    pub const UDP_L4: u8 = 5;
    /// With a TCP type: the sender uses ECN (CWR only on the first segment).
    pub const ECN: u8 = 0x80;
}

/// How a frame is to be segmented, from a checked header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gso {
    /// One frame as it is.
    None,
    /// TCP over IPv4 in segments of `size` payload bytes.
    TcpV4 { size: u16, ecn: bool },
    /// TCP over IPv6 in segments of `size` payload bytes.
    TcpV6 { size: u16, ecn: bool },
    /// UDP in datagrams of `size` payload bytes.
    UdpL4 { size: u16 },
}

/// Why a virtio-net header cannot be trusted for its frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VnetError {
    /// Fewer than [`VNET_HDR_LEN`] bytes.
    Truncated,
    /// A `flags` bit this switch does not know.
    UnknownFlags,
    /// A `gso_type` that is not NONE, TCPV4, TCPV6 or UDP_L4 (with ECN only
    /// on TCP).
    UnknownGsoType,
    /// A GSO type with `gso_size` 0.
    GsoSizeZero,
    /// A `gso_size` larger than the frame.
    GsoSizeTooLarge,
    /// A GSO frame whose checksum is not partial (segments need it
    /// completed per segment).
    GsoWithoutChecksum,
    /// `hdr_len` past the frame's end.
    HdrLenPastEnd,
    /// `csum_start` or the checksum field at `csum_offset` outside the frame.
    ChecksumOutsideFrame,
    /// A frame over [`MAX_SUPER_FRAME`].
    TooLarge,
}

impl VnetError {
    /// The name of the drop it causes.
    pub fn name(self) -> &'static str {
        match self {
            VnetError::Truncated => "truncated",
            VnetError::UnknownFlags => "vnet_unknown_flags",
            VnetError::UnknownGsoType => "vnet_unknown_gso_type",
            VnetError::GsoSizeZero => "vnet_gso_size_zero",
            VnetError::GsoSizeTooLarge => "vnet_gso_size_too_large",
            VnetError::GsoWithoutChecksum => "vnet_gso_without_checksum",
            VnetError::HdrLenPastEnd => "vnet_hdr_len_past_end",
            VnetError::ChecksumOutsideFrame => "vnet_checksum_outside_frame",
            VnetError::TooLarge => "vnet_frame_too_large",
        }
    }
}

impl fmt::Display for VnetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let msg = match self {
            VnetError::Truncated => "the virtio-net header is shorter than 10 bytes",
            VnetError::UnknownFlags => "the virtio-net header has unknown flags",
            VnetError::UnknownGsoType => "the virtio-net header has an unknown GSO type",
            VnetError::GsoSizeZero => "the GSO segment size is 0",
            VnetError::GsoSizeTooLarge => "the GSO segment size is larger than the frame",
            VnetError::GsoWithoutChecksum => "a GSO frame does not ask for its checksum",
            VnetError::HdrLenPastEnd => "the header length runs past the frame",
            VnetError::ChecksumOutsideFrame => "the checksum start or offset is outside the frame",
            VnetError::TooLarge => "the frame is larger than 64 KB",
        };
        f.write_str(msg)
    }
}

impl std::error::Error for VnetError {}

/// A virtio-net header, as read or to be written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VnetHeader {
    pub flags: u8,
    pub gso_type: u8,
    pub hdr_len: u16,
    pub gso_size: u16,
    pub csum_start: u16,
    pub csum_offset: u16,
}

impl VnetHeader {
    /// Reads the header at the start of `buf` (nothing is checked but its
    /// length: see [`VnetHeader::check`]).
    pub fn parse(buf: &[u8]) -> Result<VnetHeader, VnetError> {
        let b = buf.get(..VNET_HDR_LEN).ok_or(VnetError::Truncated)?;
        let le = |at: usize| u16::from_le_bytes([b[at], b[at + 1]]);
        Ok(VnetHeader {
            flags: b[0],
            gso_type: b[1],
            hdr_len: le(2),
            gso_size: le(4),
            csum_start: le(6),
            csum_offset: le(8),
        })
    }

    /// Writes the header into the first [`VNET_HDR_LEN`] bytes of `buf`.
    pub fn emit(&self, buf: &mut [u8]) -> Result<(), VnetError> {
        let b = buf.get_mut(..VNET_HDR_LEN).ok_or(VnetError::Truncated)?;
        b[0] = self.flags;
        b[1] = self.gso_type;
        let fields = [
            self.hdr_len,
            self.gso_size,
            self.csum_start,
            self.csum_offset,
        ];
        for (i, v) in fields.into_iter().enumerate() {
            let at = 2 + 2 * i;
            b[at..at + 2].copy_from_slice(&v.to_le_bytes());
        }
        Ok(())
    }

    /// Whether the L4 checksum is partial.
    pub fn needs_csum(&self) -> bool {
        self.flags & flags::NEEDS_CSUM != 0
    }

    /// Checks the header against `frame` (what follows it, from the
    /// Ethernet header on) and says how the frame is to be segmented.
    /// Whether the GSO type fits the frame's protocols is for the parser of
    /// the frame to check.
    pub fn check(&self, frame: &[u8]) -> Result<Gso, VnetError> {
        let len = frame.len();
        if len > MAX_SUPER_FRAME {
            return Err(VnetError::TooLarge);
        }
        if self.flags & !flags::KNOWN != 0 {
            return Err(VnetError::UnknownFlags);
        }
        if usize::from(self.hdr_len) > len {
            return Err(VnetError::HdrLenPastEnd);
        }
        if self.needs_csum() {
            let start = usize::from(self.csum_start);
            let field = start + usize::from(self.csum_offset);
            if start >= len || field + 2 > len {
                return Err(VnetError::ChecksumOutsideFrame);
            }
        }
        let ecn = self.gso_type & gso_type::ECN != 0;
        let size = self.gso_size;
        let gso = match self.gso_type & !gso_type::ECN {
            gso_type::NONE if !ecn => return Ok(Gso::None),
            gso_type::TCPV4 => Gso::TcpV4 { size, ecn },
            gso_type::TCPV6 => Gso::TcpV6 { size, ecn },
            gso_type::UDP_L4 if !ecn => Gso::UdpL4 { size },
            _ => return Err(VnetError::UnknownGsoType),
        };
        if size == 0 {
            return Err(VnetError::GsoSizeZero);
        }
        if usize::from(size) > len {
            return Err(VnetError::GsoSizeTooLarge);
        }
        if !self.needs_csum() {
            return Err(VnetError::GsoWithoutChecksum);
        }
        Ok(gso)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A TCPv4 super-packet's header as Linux writes it for a 54-byte
    /// header (Ethernet 14, IPv4 20, TCP 20) and 1448-byte segments.
    fn tso() -> VnetHeader {
        VnetHeader {
            flags: flags::NEEDS_CSUM,
            gso_type: gso_type::TCPV4,
            hdr_len: 54,
            gso_size: 1448,
            csum_start: 34,
            csum_offset: 16,
        }
    }

    #[test]
    fn round_trips_little_endian() {
        let mut buf = [0u8; VNET_HDR_LEN];
        tso().emit(&mut buf).unwrap();
        assert_eq!(buf, [1, 1, 54, 0, 0xa8, 0x05, 34, 0, 16, 0]);
        assert_eq!(VnetHeader::parse(&buf), Ok(tso()));
        assert_eq!(VnetHeader::parse(&buf[..9]), Err(VnetError::Truncated));
    }

    #[test]
    fn a_checked_header_says_how_to_segment() {
        let frame = vec![0u8; 60_000];
        assert_eq!(
            tso().check(&frame),
            Ok(Gso::TcpV4 {
                size: 1448,
                ecn: false
            })
        );
        let plain = VnetHeader::default();
        assert_eq!(plain.check(&frame[..60]), Ok(Gso::None));
        let ecn = VnetHeader {
            gso_type: gso_type::TCPV6 | gso_type::ECN,
            ..tso()
        };
        assert_eq!(
            ecn.check(&frame),
            Ok(Gso::TcpV6 {
                size: 1448,
                ecn: true
            })
        );
    }

    #[test]
    fn every_lie_has_its_error() {
        let frame = vec![0u8; 3000];
        let lies = [
            (
                VnetHeader {
                    gso_size: 0,
                    ..tso()
                },
                VnetError::GsoSizeZero,
            ),
            (
                VnetHeader {
                    gso_size: 3001,
                    ..tso()
                },
                VnetError::GsoSizeTooLarge,
            ),
            (
                VnetHeader {
                    hdr_len: 3001,
                    ..tso()
                },
                VnetError::HdrLenPastEnd,
            ),
            (
                VnetHeader {
                    gso_type: 2,
                    ..tso()
                },
                VnetError::UnknownGsoType,
            ),
            (
                VnetHeader {
                    gso_type: gso_type::UDP,
                    ..tso()
                },
                VnetError::UnknownGsoType,
            ),
            (
                VnetHeader {
                    gso_type: gso_type::UDP_L4 | gso_type::ECN,
                    ..tso()
                },
                VnetError::UnknownGsoType,
            ),
            (
                VnetHeader {
                    csum_start: 3000,
                    ..tso()
                },
                VnetError::ChecksumOutsideFrame,
            ),
            (
                VnetHeader {
                    csum_offset: 2965,
                    ..tso()
                },
                VnetError::ChecksumOutsideFrame,
            ),
            (
                VnetHeader {
                    flags: 0x10,
                    ..tso()
                },
                VnetError::UnknownFlags,
            ),
            (
                VnetHeader { flags: 0, ..tso() },
                VnetError::GsoWithoutChecksum,
            ),
        ];
        for (header, error) in lies {
            assert_eq!(header.check(&frame), Err(error), "{header:?}");
        }
        let huge = vec![0u8; MAX_SUPER_FRAME + 1];
        assert_eq!(tso().check(&huge), Err(VnetError::TooLarge));
        let names: std::collections::BTreeSet<_> = [
            VnetError::Truncated,
            VnetError::UnknownFlags,
            VnetError::UnknownGsoType,
            VnetError::GsoSizeZero,
            VnetError::GsoSizeTooLarge,
            VnetError::GsoWithoutChecksum,
            VnetError::HdrLenPastEnd,
            VnetError::ChecksumOutsideFrame,
            VnetError::TooLarge,
        ]
        .iter()
        .map(|e| e.name())
        .collect();
        assert_eq!(names.len(), 9, "one drop name each");
    }

    proptest! {
        /// Whatever the bytes, checking never panics, and what passes
        /// keeps every offset it names inside the frame.
        #[test]
        fn any_header_is_checked_without_panicking(
            bytes in prop::array::uniform10(any::<u8>()),
            len in 0usize..4000,
        ) {
            let header = VnetHeader::parse(&bytes).unwrap();
            let frame = vec![0u8; len];
            if let Ok(gso) = header.check(&frame) {
                prop_assert!(usize::from(header.hdr_len) <= len);
                if header.needs_csum() {
                    let field = usize::from(header.csum_start) + usize::from(header.csum_offset);
                    prop_assert!(field + 2 <= len);
                }
                if gso != Gso::None {
                    prop_assert!(header.gso_size > 0 && usize::from(header.gso_size) <= len);
                }
            }
        }
    }
}
