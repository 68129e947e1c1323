//! Drop reasons and per-worker counters.
//!
//! Each worker owns one [`Counters`] and is its only writer (plain relaxed
//! load + store, no read-modify-write, no sharing of cache lines between
//! workers); control sums them on read. Every drop has a reason, and every
//! ring condition has its own counter.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::wire::vnet::VnetError;

macro_rules! drop_reasons {
    ($($variant:ident => $name:literal, $help:literal;)*) => {
        /// Why the switch dropped a frame. Each variant's help text is also
        /// its metric description.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[repr(u8)]
        pub enum DropReason {
            $(#[doc = $help] $variant,)*
        }

        impl DropReason {
            /// Every reason, in declaration order.
            pub const ALL: &'static [DropReason] = &[$(DropReason::$variant,)*];

            /// The metric label (snake case).
            pub fn name(self) -> &'static str {
                match self { $(DropReason::$variant => $name,)* }
            }

            /// One sentence saying what happened.
            pub fn help(self) -> &'static str {
                match self { $(DropReason::$variant => $help,)* }
            }
        }
    };
}

drop_reasons! {
    Truncated => "truncated", "Frame shorter than the headers it announces.";
    UnknownEthertype => "unknown_ethertype", "Ethertype is neither IPv4, ARP nor IPv6.";
    Ipv6 => "ipv6", "IPv6 frame (pods send router and neighbour solicitations): the switch forwards IPv4 only.";
    VlanTagged => "vlan_tagged", "802.1Q-tagged frame; the switch's ports carry untagged traffic only.";
    BadIpHeader => "bad_ip_header", "IPv4 header with a bad version, header length or total length.";
    BadIpChecksum => "bad_ip_checksum", "IPv4 header checksum does not verify.";
    IpOptions => "ip_options", "IPv4 packet carries options, which the switch does not forward.";
    FragmentNoFirst => "fragment_no_first", "Later IPv4 fragment whose first fragment was not forwarded (not seen, dropped, or past the fragment timeout).";
    FragmentOverlap => "fragment_overlap", "IPv4 fragment overlapping or repeating bytes already forwarded, or past its datagram's end.";
    FragmentGaps => "fragment_out_of_order", "IPv4 fragment that would leave a second gap in its datagram (the switch tracks one).";
    FragmentMalformed => "fragment_malformed", "IPv4 fragment ending past 64 KB, or one with more to follow whose length is not a multiple of 8.";
    FragmentShortFirst => "fragment_short_first", "First IPv4 fragment too short to hold its L4 header.";
    FragmentTableFull => "fragment_table_full", "No room to track a new fragmented datagram: its first fragment was dropped.";
    FragmentUnsupported => "fragment_unsupported", "Fragmented SCTP packet or ICMP error, which the switch does not forward.";
    UnsupportedProtocol => "unsupported_protocol", "IP protocol other than TCP, UDP, ICMP or SCTP.";
    BadL4Header => "bad_l4_header", "TCP/UDP/SCTP/ICMP header truncated or with a bad length.";
    UnsupportedIcmp => "unsupported_icmp", "ICMP type other than echo, destination unreachable or time exceeded.";
    IcmpUnrelated => "icmp_unrelated", "ICMP error quoting a flow that conntrack does not know.";
    BadArp => "bad_arp", "ARP packet that is malformed or not Ethernet/IPv4.";
    ArpNotForGateway => "arp_not_for_gateway", "ARP request for an address other than the pod gateway.";
    SpoofedMac => "spoofed_mac", "Pod sent from a MAC address that is not its own.";
    SpoofedIp => "spoofed_ip", "Pod sent from an IP address that is not its own.";
    UnknownPort => "unknown_port", "Frame arrived on a port with no pod attached.";
    NotForSwitch => "not_for_switch", "Uplink frame addressed to nothing the switch owns.";
    BadVxlan => "bad_vxlan", "VXLAN packet with bad flags, a short header or a bad inner frame.";
    UnknownVtep => "unknown_vtep", "VXLAN packet from an address that is not a known node.";
    WrongVni => "wrong_vni", "VXLAN packet with a VNI other than the overlay's.";
    WrongInnerMac => "wrong_inner_mac", "Decapsulated frame not addressed to this node's VTEP MAC.";
    TtlExceeded => "ttl_exceeded", "TTL reached zero while forwarding.";
    NoEndpoints => "no_endpoints", "Service port with no usable endpoint: rejected (TCP RST, otherwise ICMP port unreachable).";
    NoLocalEndpoints => "no_local_endpoints", "Traffic policy Local and no endpoint on this node: dropped.";
    NoServicePort => "no_service_port", "Port of a cluster IP that no Service declares: rejected (TCP RST, otherwise ICMP port unreachable).";
    NoService => "no_service", "Service CIDR address that no Service holds: dropped.";
    SnatExhausted => "snat_exhausted", "No free source port to masquerade a new flow.";
    TupleClash => "ct_tuple_clash", "New flow's reply tuple is held by another connection and no free source port was found for it.";
    ConntrackBusy => "ct_insert_race", "Another worker was inserting the same tuple at that instant: the packet was dropped.";
    ConntrackFull => "conntrack_full", "Conntrack table full: new flow refused, existing flows unaffected.";
    ConntrackCollision => "conntrack_collision", "Both conntrack buckets of a new flow were full: new flow refused.";
    TcpNoSyn => "tcp_invalid_start", "TCP packet that cannot start a flow (RST, or a stray packet).";
    PolicyDeniedEgress => "policy_denied_egress", "NetworkPolicy egress of the source pod denies the flow.";
    PolicyDeniedIngress => "policy_denied_ingress", "NetworkPolicy ingress of the destination pod denies the flow.";
    NoRoute => "no_route", "Destination inside a pod CIDR with no such pod.";
    NoHostPort => "no_host_port", "Traffic for the node itself but no host port is configured.";
    NoNextHop => "no_next_hop", "Destination outside the cluster with no known next-hop MAC (no neighbour entry, no default gateway).";
    FrameTooBig => "frame_too_big", "Frame does not fit the buffer after encapsulation.";
    FragmentationNeeded => "fragmentation_needed", "Don't-fragment packet larger than the underlay's MTU after VXLAN encapsulation: answered with ICMP fragmentation needed.";
    VnetUnknownFlags => "vnet_unknown_flags", "virtio-net header with flags other than NEEDS_CSUM and DATA_VALID.";
    VnetUnknownGsoType => "vnet_unknown_gso_type", "virtio-net header with a GSO type other than TCPv4, TCPv6 or UDP (ECN only on TCP).";
    VnetGsoSizeZero => "vnet_gso_size_zero", "virtio-net header asking for segmentation with a segment size of 0.";
    VnetGsoSizeTooLarge => "vnet_gso_size_too_large", "virtio-net header with a segment size larger than its frame.";
    VnetGsoWithoutChecksum => "vnet_gso_without_checksum", "Super-packet whose virtio-net header does not ask for its checksum.";
    VnetHdrLenPastEnd => "vnet_hdr_len_past_end", "virtio-net header length past the end of its frame.";
    VnetChecksumOutsideFrame => "vnet_checksum_outside_frame", "virtio-net checksum start or offset outside its frame.";
    VnetTooLarge => "vnet_frame_too_large", "Frame from a TAP port larger than 64 KB.";
    VnetChecksumNotL4 => "vnet_checksum_not_l4", "Partial checksum whose start or offset is not the TCP or UDP checksum of the frame.";
    GsoWrongProtocol => "gso_wrong_protocol", "GSO type on a packet that cannot have it (TCP segmentation of a non-TCP or fragmented packet).";
    GsoUnsupported => "gso_unsupported", "Super-packet of a kind the switch does not segment (TCPv6, UDP).";
    GsoTooManySegments => "gso_too_many_segments", "Super-packet with more segments than one transmit carries (a segment size under 256 bytes).";
    Hairpin => "hairpin_loop", "Packet would be sent back out of the uplink it came from.";
    TxRingFull => "tx_ring_full", "Output port's TX ring was full.";
    NoFreeFrame => "no_free_frame", "No free frame left in the worker's pool.";
    Unclassified => "unclassified", "The pipeline gave no verdict (a bug: report it).";
}

impl From<VnetError> for DropReason {
    fn from(e: VnetError) -> DropReason {
        match e {
            // A TAP read shorter than its header arrives empty.
            VnetError::Truncated => DropReason::Truncated,
            VnetError::UnknownFlags => DropReason::VnetUnknownFlags,
            VnetError::UnknownGsoType => DropReason::VnetUnknownGsoType,
            VnetError::GsoSizeZero => DropReason::VnetGsoSizeZero,
            VnetError::GsoSizeTooLarge => DropReason::VnetGsoSizeTooLarge,
            VnetError::GsoWithoutChecksum => DropReason::VnetGsoWithoutChecksum,
            VnetError::HdrLenPastEnd => DropReason::VnetHdrLenPastEnd,
            VnetError::ChecksumOutsideFrame => DropReason::VnetChecksumOutsideFrame,
            VnetError::TooLarge => DropReason::VnetTooLarge,
        }
    }
}

/// Number of drop reasons.
pub const DROP_REASONS: usize = DropReason::ALL.len();

/// A counter written by one thread and read by others.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds `n`. Single writer: a relaxed load and store, no locked instruction.
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.store(
            self.0.load(Ordering::Relaxed).wrapping_add(n),
            Ordering::Relaxed,
        );
    }

    /// Sets the value (gauges).
    #[inline]
    pub fn set(&self, value: u64) {
        self.0.store(value, Ordering::Relaxed);
    }

    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Per-port counters of one worker.
#[derive(Debug, Default)]
pub struct PortCounters {
    pub rx_packets: Counter,
    pub rx_bytes: Counter,
    pub tx_packets: Counter,
    pub tx_bytes: Counter,
    /// Frames the port could not take (TX ring full).
    pub tx_full: Counter,
    /// RX found the fill ring empty (no frames to receive into).
    pub fill_empty: Counter,
    /// Wake-ups (`sendto`/`poll`) the port needed.
    pub wakeups: Counter,
    /// Binds retried after EBUSY.
    pub ebusy_retries: Counter,
}

/// Everything one worker counts.
#[derive(Debug)]
pub struct Counters {
    pub drops: [Counter; DROP_REASONS],
    pub forwarded: Counter,
    pub arp_replies: Counter,
    pub encapsulated: Counter,
    pub decapsulated: Counter,
    pub ct_new: Counter,
    pub ct_hits: Counter,
    /// Rejected packets answered (TCP RST or ICMP port unreachable): each is
    /// also counted under its drop reason, and its answer as `forwarded`.
    pub rejects: Counter,
    /// First fragments recorded, and later fragments that followed them.
    pub fragments_first: Counter,
    pub fragments_followed: Counter,
    /// Super-packets split into segments for an egress that takes none
    /// (GSO), and the segments made.
    pub gso_split: Counter,
    pub gso_segments: Counter,
    /// Frames whose partial checksum the switch completed for such an
    /// egress.
    pub csum_completed: Counter,
    /// Super-packets coalesced from segments for a port that takes them
    /// (GRO), and the segments they took.
    pub gro_merged: Counter,
    pub gro_segments: Counter,
    pub batches: Counter,
    /// Frame accounting gauges, refreshed about every millisecond by the
    /// worker thread: `free + in_flight == total` whenever the worker is
    /// between two polls.
    pub frames_total: Counter,
    pub frames_free: Counter,
    pub frames_in_flight: Counter,
    ports: Vec<PortCounters>,
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            drops: std::array::from_fn(|_| Counter::default()),
            forwarded: Counter::default(),
            arp_replies: Counter::default(),
            encapsulated: Counter::default(),
            decapsulated: Counter::default(),
            ct_new: Counter::default(),
            ct_hits: Counter::default(),
            rejects: Counter::default(),
            fragments_first: Counter::default(),
            fragments_followed: Counter::default(),
            gso_split: Counter::default(),
            gso_segments: Counter::default(),
            csum_completed: Counter::default(),
            gro_merged: Counter::default(),
            gro_segments: Counter::default(),
            batches: Counter::default(),
            frames_total: Counter::default(),
            frames_free: Counter::default(),
            frames_in_flight: Counter::default(),
            ports: Vec::new(),
        }
    }
}

impl Counters {
    /// Counters for port ids below `ports` (the most a worker can have).
    pub fn new(ports: usize) -> Counters {
        let mut c = Counters::default();
        c.ports.resize_with(ports, PortCounters::default);
        c
    }

    /// Counts one drop.
    #[inline]
    pub fn count_drop(&self, reason: DropReason) {
        if let Some(c) = self.drops.get(reason as usize) {
            c.add(1);
        }
    }

    /// The drops counted for `reason`.
    pub fn drops_of(&self, reason: DropReason) -> u64 {
        self.drops.get(reason as usize).map_or(0, Counter::get)
    }

    /// Every drop.
    pub fn total_drops(&self) -> u64 {
        self.drops.iter().map(Counter::get).sum()
    }

    /// Counters of port `port`, if it exists.
    #[inline]
    pub fn port(&self, port: usize) -> Option<&PortCounters> {
        self.ports.get(port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_has_a_unique_name_and_help() {
        let mut names: Vec<_> = DropReason::ALL.iter().map(|r| r.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), DROP_REASONS);
        assert!(DropReason::ALL.iter().all(|r| r.help().ends_with('.')));
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i);
        }
    }

    #[test]
    fn every_vnet_error_drops_under_its_own_name() {
        use crate::wire::vnet::VnetError as E;
        let all = [
            E::Truncated,
            E::UnknownFlags,
            E::UnknownGsoType,
            E::GsoSizeZero,
            E::GsoSizeTooLarge,
            E::GsoWithoutChecksum,
            E::HdrLenPastEnd,
            E::ChecksumOutsideFrame,
            E::TooLarge,
        ];
        for e in all {
            assert_eq!(DropReason::from(e).name(), e.name());
        }
    }

    #[test]
    fn counts_per_reason() {
        let c = Counters::new(2);
        c.count_drop(DropReason::FragmentNoFirst);
        c.count_drop(DropReason::FragmentNoFirst);
        c.count_drop(DropReason::Truncated);
        assert_eq!(c.drops_of(DropReason::FragmentNoFirst), 2);
        assert_eq!(c.total_drops(), 3);
        c.port(1).unwrap().rx_packets.add(5);
        assert_eq!(c.port(1).unwrap().rx_packets.get(), 5);
        assert!(c.port(2).is_none());
    }
}
