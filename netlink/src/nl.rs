//! The rtnetlink numbers this crate uses, in the types its messages carry:
//! libc's constants (several are `c_int` there) and the few libc lacks,
//! each with the kernel header that defines it.

// libc's flag and type values are small: their casts to the 16-bit header
// fields are exact.
#![allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]

pub use libc::{
    IFA_ADDRESS, IFA_LOCAL, IFLA_ADDRESS, IFLA_GSO_MAX_SIZE, IFLA_IFNAME, IFLA_INFO_DATA,
    IFLA_INFO_KIND, IFLA_LINKINFO, IFLA_MASTER, IFLA_MTU, IFLA_NET_NS_FD, IFLA_NUM_RX_QUEUES,
    IFLA_NUM_TX_QUEUES, NDA_DST, NDA_LLADDR, RTA_DST, RTA_GATEWAY, RTA_OIF, RTA_PREFSRC, RTA_TABLE,
    RTM_DELLINK, RTM_GETADDR, RTM_GETLINK, RTM_GETNEIGH, RTM_GETROUTE, RTM_NEWADDR, RTM_NEWLINK,
    RTM_NEWNEIGH, RTM_NEWROUTE,
};

/// `struct nlmsghdr`, which every message starts with.
pub const NLMSG_HDR: usize = std::mem::size_of::<libc::nlmsghdr>();
pub const NLMSG_ERROR: u16 = libc::NLMSG_ERROR as u16;
pub const NLMSG_DONE: u16 = libc::NLMSG_DONE as u16;
pub const NLM_F_REQUEST: u16 = libc::NLM_F_REQUEST as u16;
pub const NLM_F_ACK: u16 = libc::NLM_F_ACK as u16;
pub const NLM_F_DUMP: u16 = libc::NLM_F_DUMP as u16;
pub const NLM_F_REPLACE: u16 = libc::NLM_F_REPLACE as u16;
pub const NLM_F_EXCL: u16 = libc::NLM_F_EXCL as u16;
pub const NLM_F_CREATE: u16 = libc::NLM_F_CREATE as u16;
pub const NLA_F_NESTED: u16 = libc::NLA_F_NESTED as u16;
/// The main routing table, as `RTA_TABLE` carries it.
pub const RT_TABLE_MAIN: u32 = libc::RT_TABLE_MAIN as u32;
/// Neighbour states with a usable MAC.
pub const NUD_VALID: u16 = libc::NUD_REACHABLE
    | libc::NUD_STALE
    | libc::NUD_DELAY
    | libc::NUD_PROBE
    | libc::NUD_PERMANENT
    | libc::NUD_NOARP;
/// The peer of a veth in its `IFLA_INFO_DATA` (`linux/veth.h`; not in libc).
pub const VETH_INFO_PEER: u16 = 1;
