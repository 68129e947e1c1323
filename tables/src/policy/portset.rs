//! Port sets: what a peer address may reach once its address has matched.
//!
//! Built by the policy compiler (control), read by workers through
//! [`super::CompiledSet::allows`]; immutable once published.

use crate::model::Proto;

/// Inclusive port ranges of one protocol, sorted and merged (no two ranges
/// overlap or touch). "All ports" is the single range `0..=65535`; no ranges
/// means no port.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct PortRanges(Vec<(u16, u16)>);

impl PortRanges {
    /// Whether `port` lies in one of the ranges (binary search).
    #[inline]
    pub fn contains(&self, port: u16) -> bool {
        let i = self.0.partition_point(|&(_, last)| last < port);
        self.0.get(i).is_some_and(|&(first, _)| first <= port)
    }

    /// Whether every port is in the set.
    pub fn is_all(&self) -> bool {
        self.0 == [(0, u16::MAX)]
    }

    /// The ranges, sorted and merged.
    pub fn ranges(&self) -> &[(u16, u16)] {
        &self.0
    }

    fn add(&mut self, first: u16, last: u16) {
        self.0.push((first, last));
        self.normalize();
    }

    fn union(&mut self, other: &PortRanges) {
        self.0.extend_from_slice(&other.0);
        self.normalize();
    }

    fn normalize(&mut self) {
        self.0.sort_unstable();
        let mut merged: Vec<(u16, u16)> = Vec::with_capacity(self.0.len());
        for &(first, last) in &self.0 {
            match merged.last_mut() {
                Some(prev) if u32::from(first) <= u32::from(prev.1) + 1 => {
                    prev.1 = prev.1.max(last)
                }
                _ => merged.push((first, last)),
            }
        }
        self.0 = merged;
    }
}

/// The ports a set of rules opens to one peer address: per protocol (TCP,
/// UDP, SCTP) a [`PortRanges`], plus a flag for rules without `ports`, which
/// open every port of every protocol, ICMP included.
///
/// Canonical: with `all_protocols` set the ranges are empty, so equal sets
/// compare (and hash) equal and can be interned.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct PortSet {
    all_protocols: bool,
    tcp: PortRanges,
    udp: PortRanges,
    sctp: PortRanges,
}

impl PortSet {
    /// The set opening every port of every protocol.
    pub fn all_protocols() -> PortSet {
        PortSet {
            all_protocols: true,
            ..PortSet::default()
        }
    }

    /// Whether traffic of IP protocol `proto` to `port` is allowed.
    #[inline]
    pub fn allows(&self, proto: u8, port: u16) -> bool {
        if self.all_protocols {
            return true;
        }
        match Proto::from_u8(proto) {
            Some(Proto::Tcp) => self.tcp.contains(port),
            Some(Proto::Udp) => self.udp.contains(port),
            Some(Proto::Sctp) => self.sctp.contains(port),
            Some(Proto::Icmp) | None => false,
        }
    }

    /// Whether the set allows nothing at all.
    pub fn is_empty(&self) -> bool {
        !self.all_protocols
            && self.tcp.0.is_empty()
            && self.udp.0.is_empty()
            && self.sctp.0.is_empty()
    }

    /// Whether the set opens every protocol (a rule without ports).
    pub fn is_all_protocols(&self) -> bool {
        self.all_protocols
    }

    /// The ranges of one port-carrying protocol; `None` for ICMP.
    pub fn ranges(&self, proto: Proto) -> Option<&PortRanges> {
        match proto {
            Proto::Tcp => Some(&self.tcp),
            Proto::Udp => Some(&self.udp),
            Proto::Sctp => Some(&self.sctp),
            Proto::Icmp => None,
        }
    }

    /// Opens `first..=last` of `proto`. ICMP carries no ports: ignored.
    pub(crate) fn add(&mut self, proto: Proto, first: u16, last: u16) {
        if self.all_protocols || first > last {
            return;
        }
        if let Some(ranges) = self.ranges_mut(proto) {
            ranges.add(first, last);
        }
    }

    /// Adds everything `other` allows.
    pub(crate) fn union(&mut self, other: &PortSet) {
        if self.all_protocols {
            return;
        }
        if other.all_protocols {
            *self = PortSet::all_protocols();
            return;
        }
        self.tcp.union(&other.tcp);
        self.udp.union(&other.udp);
        self.sctp.union(&other.sctp);
    }

    fn ranges_mut(&mut self, proto: Proto) -> Option<&mut PortRanges> {
        match proto {
            Proto::Tcp => Some(&mut self.tcp),
            Proto::Udp => Some(&mut self.udp),
            Proto::Sctp => Some(&mut self.sctp),
            Proto::Icmp => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    use crate::proto::{ICMP, TCP, UDP};

    #[test]
    fn ranges_merge_and_search() {
        let mut set = PortSet::default();
        assert!(set.is_empty());
        set.add(Proto::Tcp, 80, 80);
        set.add(Proto::Tcp, 81, 90);
        set.add(Proto::Tcp, 10, 20);
        set.add(Proto::Tcp, 15, 30);
        set.add(Proto::Tcp, 100, 99);
        assert_eq!(set.tcp.ranges(), [(10, 30), (80, 90)]);
        for (port, want) in [
            (9, false),
            (10, true),
            (30, true),
            (31, false),
            (85, true),
            (91, false),
        ] {
            assert_eq!(set.allows(TCP, port), want, "{port}");
        }
        assert!(!set.allows(UDP, 80));
        assert!(!set.allows(ICMP, 0));
    }

    #[test]
    fn all_protocols_absorbs_everything() {
        let mut set = PortSet::default();
        set.add(Proto::Udp, 53, 53);
        set.union(&PortSet::all_protocols());
        assert_eq!(set, PortSet::all_protocols());
        assert!(set.allows(ICMP, 0));
        assert!(set.allows(47, 0));
        set.add(Proto::Tcp, 1, 2);
        assert_eq!(set, PortSet::all_protocols());
    }

    #[test]
    fn whole_protocol_is_one_range() {
        let mut set = PortSet::default();
        set.add(Proto::Sctp, 0, u16::MAX);
        assert!(set.sctp.is_all());
        assert!(set.allows(132, 0) && set.allows(132, u16::MAX));
        assert!(!set.allows(TCP, 1));
    }

    proptest! {
        #[test]
        fn contains_matches_membership(
            ranges in prop::collection::vec((any::<u16>(), 0u16..300), 0..12),
            probes in prop::collection::vec(any::<u16>(), 0..30),
        ) {
            let mut set = PortSet::default();
            let mut other = PortSet::default();
            for (i, (first, width)) in ranges.iter().enumerate() {
                let last = first.saturating_add(*width);
                if i % 2 == 0 { set.add(Proto::Udp, *first, last) } else { other.add(Proto::Udp, *first, last) }
            }
            set.union(&other);
            let mut all = probes;
            for (first, width) in &ranges {
                all.extend([first.wrapping_sub(1), *first, first.saturating_add(*width), first.saturating_add(*width).wrapping_add(1)]);
            }
            for port in all {
                let want = ranges.iter().any(|(f, w)| (*f..=f.saturating_add(*w)).contains(&port));
                prop_assert_eq!(set.allows(UDP, port), want);
            }
            prop_assert!(set.udp.ranges().windows(2).all(|w| u32::from(w[0].1) + 1 < u32::from(w[1].0)));
        }
    }
}
