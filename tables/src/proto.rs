//! The one spelling of the protocol vocabulary every crate shares: IP
//! protocol numbers (the raw byte as [`ICMP`], [`TCP`], [`UDP`], [`SCTP`];
//! the known ones as [`Proto`]) and TCP flag bits ([`tcp_flags`]).

use std::fmt;

/// The IP header's protocol byte for ICMP.
pub const ICMP: u8 = 1;
/// The protocol byte for TCP.
pub const TCP: u8 = 6;
/// The protocol byte for UDP.
pub const UDP: u8 = 17;
/// The protocol byte for SCTP.
pub const SCTP: u8 = 132;

/// TCP flag bits (the header's 14th byte).
pub mod tcp_flags {
    /// No more data from the sender.
    pub const FIN: u8 = 0x01;
    /// Synchronise sequence numbers.
    pub const SYN: u8 = 0x02;
    /// Reset the connection.
    pub const RST: u8 = 0x04;
    /// Push.
    pub const PSH: u8 = 0x08;
    /// The acknowledgment number is valid.
    pub const ACK: u8 = 0x10;
    /// The urgent pointer is valid.
    pub const URG: u8 = 0x20;
    /// ECN echo.
    pub const ECE: u8 = 0x40;
    /// Congestion window reduced.
    pub const CWR: u8 = 0x80;
}

/// IP protocol numbers the switch tracks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Proto {
    Icmp = ICMP,
    Tcp = TCP,
    Udp = UDP,
    Sctp = SCTP,
}

impl Proto {
    /// The protocol byte.
    pub const fn number(self) -> u8 {
        self as u8
    }

    /// The protocol for an IP header's protocol byte, if the switch knows it.
    pub fn from_u8(value: u8) -> Option<Proto> {
        match value {
            ICMP => Some(Proto::Icmp),
            TCP => Some(Proto::Tcp),
            UDP => Some(Proto::Udp),
            SCTP => Some(Proto::Sctp),
            _ => None,
        }
    }

    /// Parses the Kubernetes spelling (`TCP`, `UDP`, `SCTP`).
    pub fn from_k8s(name: &str) -> Option<Proto> {
        match name {
            "TCP" => Some(Proto::Tcp),
            "UDP" => Some(Proto::Udp),
            "SCTP" => Some(Proto::Sctp),
            _ => None,
        }
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Proto::Icmp => "ICMP",
            Proto::Tcp => "TCP",
            Proto::Udp => "UDP",
            Proto::Sctp => "SCTP",
        })
    }
}
