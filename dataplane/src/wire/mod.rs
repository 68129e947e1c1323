//! Zero-copy views of the headers the fast path reads and rewrites.
//!
//! Each header has a view, `XxxPacket<T: AsRef<[u8]>> { buffer: T }`, in the
//! style of smoltcp's `src/wire`:
//!
//! - `new_unchecked(buffer)` wraps without looking; accessors on a buffer too
//!   short for their field panic.
//! - `new_checked(buffer)` validates every length once and returns a
//!   [`WireError`] for bad input. After it succeeds, no getter or setter of
//!   that view panics, whatever the bytes. Accessors whose range depends on a
//!   length field (payloads, options) return an empty slice instead of
//!   panicking if that field is later made inconsistent through a length
//!   setter.
//! - getters work for any `T`, setters only where `T: AsMut<[u8]>`, so a view
//!   over `&[u8]` is read-only and one over `&mut [u8]` rewrites in place.
//!
//! Owned `Repr` types exist only for headers the switch builds (the VXLAN
//! encapsulation): [`EthernetRepr`], [`Ipv4Repr`], [`UdpRepr`],
//! [`VxlanRepr`]. They emit into a caller's `&mut [u8]` and never allocate.
//!
//! Addresses are `u32` in host byte order (`10.0.0.1` is `0x0a00_0001`), as in
//! `tables::flow::FlowKey`; MAC addresses are `[u8; 6]`.

use core::fmt;

pub mod arp;
pub mod checksum;
pub mod ethernet;
pub mod icmp;
pub mod ipv4;
pub mod tcp;
pub mod udp;
pub mod vnet;
pub mod vxlan;

#[cfg(test)]
mod fixtures;

pub use arp::ArpPacket;
pub use ethernet::{EthernetFrame, EthernetRepr};
pub use icmp::{IcmpInvoking, IcmpPacket};
pub use ipv4::{Ipv4Packet, Ipv4Repr};
pub use tcp::TcpPacket;
pub use udp::{UdpPacket, UdpRepr};
pub use vxlan::{VxlanPacket, VxlanRepr, ENCAP_OVERHEAD, VXLAN_HEADER_LEN, VXLAN_PORT};

/// Why a buffer is not a valid header of the kind asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireError {
    /// The buffer is shorter than the header (or the emitted header) needs.
    Truncated,
    /// The IP version field is not 4.
    BadVersion,
    /// The IPv4 header length is under 20 bytes or past the buffer's end.
    BadHeaderLen,
    /// The IPv4 total length is under the header length or past the buffer's
    /// end (or too large to emit).
    BadTotalLen,
    /// The TCP data offset is under 5 words or past the buffer's end.
    BadDataOffset,
    /// The UDP length field is under 8 or past the buffer's end.
    BadUdpLen,
    /// The ARP packet is not Ethernet/IPv4 (hardware type 1, protocol 0x0800,
    /// address lengths 6 and 4).
    BadArp,
    /// The VXLAN header lacks the "I" flag (0x08) that marks a valid VNI.
    BadVxlan,
    /// The ICMP message is not an error, so it carries no original datagram.
    NotIcmpError,
    /// A checksum does not verify.
    BadChecksum,
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let msg = match self {
            WireError::Truncated => "the buffer is too short for the header",
            WireError::BadVersion => "the IP version is not 4",
            WireError::BadHeaderLen => {
                "the IPv4 header length is under 20 bytes or longer than the buffer"
            }
            WireError::BadTotalLen => {
                "the IPv4 total length is shorter than its header or longer than the buffer"
            }
            WireError::BadDataOffset => {
                "the TCP data offset is under 5 words or longer than the buffer"
            }
            WireError::BadUdpLen => "the UDP length is under 8 bytes or longer than the buffer",
            WireError::BadArp => "the ARP packet is not Ethernet/IPv4",
            WireError::BadVxlan => "the VXLAN header does not have the I flag (0x08) set",
            WireError::NotIcmpError => {
                "the ICMP message is not an error message, so it carries no original datagram"
            }
            WireError::BadChecksum => "the checksum does not verify",
        };
        f.write_str(msg)
    }
}

impl std::error::Error for WireError {}

/// A big-endian `u16` from the first two bytes of `b`.
#[inline]
fn get_u16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

/// A big-endian `u32` from the first four bytes of `b`.
#[inline]
fn get_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// A MAC address from the first six bytes of `b`.
#[inline]
fn get_mac(b: &[u8]) -> [u8; 6] {
    [b[0], b[1], b[2], b[3], b[4], b[5]]
}

/// Writes `v` big-endian into the first two bytes of `b`.
#[inline]
fn put_u16(b: &mut [u8], v: u16) {
    b[..2].copy_from_slice(&v.to_be_bytes());
}

/// Writes `v` big-endian into the first four bytes of `b`.
#[inline]
fn put_u32(b: &mut [u8], v: u32) {
    b[..4].copy_from_slice(&v.to_be_bytes());
}

/// A buffer length as the `u16` a length field or pseudo-header carries,
/// saturating: no IPv4 datagram is longer than 65535 bytes, so a longer
/// buffer cannot carry a valid checksum anyway.
#[inline]
fn len_u16(len: usize) -> u16 {
    u16::try_from(len).unwrap_or(u16::MAX)
}
