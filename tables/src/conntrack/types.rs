//! What the connection tracking table tells and is told: directions,
//! states and their timeouts, hits, insert refusals, dumps and counters.

use crate::flow::FlowKey;

/// Direction of a packet relative to its connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dir {
    Orig,
    Reply,
}

/// State of a tracked connection (timeouts depend on it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum CtState {
    SynSent = 1,
    SynRecv,
    Established,
    FinWait,
    CloseWait,
    LastAck,
    TimeWait,
    Close,
    UdpUnreplied,
    UdpReplied,
    IcmpUnreplied,
    IcmpReplied,
}

impl CtState {
    pub(super) fn from_u8(v: u8) -> Option<CtState> {
        use CtState::*;
        Some(match v {
            1 => SynSent,
            2 => SynRecv,
            3 => Established,
            4 => FinWait,
            5 => CloseWait,
            6 => LastAck,
            7 => TimeWait,
            8 => Close,
            9 => UdpUnreplied,
            10 => UdpReplied,
            11 => IcmpUnreplied,
            12 => IcmpReplied,
            _ => return None,
        })
    }

    /// Lower-case name, as `conntrack -L` prints it.
    pub fn name(self) -> &'static str {
        use CtState::*;
        match self {
            SynSent => "SYN_SENT",
            SynRecv => "SYN_RECV",
            Established => "ESTABLISHED",
            FinWait => "FIN_WAIT",
            CloseWait => "CLOSE_WAIT",
            LastAck => "LAST_ACK",
            TimeWait => "TIME_WAIT",
            Close => "CLOSE",
            UdpUnreplied | IcmpUnreplied => "UNREPLIED",
            UdpReplied | IcmpReplied => "REPLIED",
        }
    }
}

/// Timeouts per state, in milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    pub syn_sent: u64,
    pub syn_recv: u64,
    pub established: u64,
    pub fin_wait: u64,
    pub close_wait: u64,
    pub last_ack: u64,
    pub time_wait: u64,
    pub close: u64,
    pub udp_unreplied: u64,
    pub udp_replied: u64,
    pub icmp: u64,
}

impl Default for Timeouts {
    /// Linux's `nf_conntrack` defaults.
    fn default() -> Timeouts {
        const S: u64 = 1000;
        Timeouts {
            syn_sent: 120 * S,
            syn_recv: 60 * S,
            established: 432_000 * S,
            fin_wait: 120 * S,
            close_wait: 60 * S,
            last_ack: 30 * S,
            time_wait: 120 * S,
            close: 10 * S,
            udp_unreplied: 30 * S,
            udp_replied: 120 * S,
            icmp: 30 * S,
        }
    }
}

impl Timeouts {
    /// The timeout of `state`.
    pub fn of(&self, state: CtState) -> u64 {
        use CtState::*;
        match state {
            SynSent => self.syn_sent,
            SynRecv => self.syn_recv,
            Established => self.established,
            FinWait => self.fin_wait,
            CloseWait => self.close_wait,
            LastAck => self.last_ack,
            TimeWait => self.time_wait,
            Close => self.close,
            UdpUnreplied => self.udp_unreplied,
            UdpReplied => self.udp_replied,
            IcmpUnreplied | IcmpReplied => self.icmp,
        }
    }
}

/// A lookup result: a consistent copy of the entry as of the lookup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hit {
    pub index: u32,
    pub version: u32,
    /// Direction of the looked-up tuple.
    pub dir: Dir,
    pub orig: FlowKey,
    pub reply: FlowKey,
    pub state: CtState,
    /// Opaque bits the pipeline stored at insert.
    pub flags: u8,
    /// Policy epoch the flow was last allowed under.
    pub epoch: u32,
}

impl Hit {
    /// The tuple a packet travelling in `self.dir` must be rewritten to, if
    /// it differs from the packet's own (i.e. if the flow is translated).
    #[inline]
    pub fn rewrite(&self) -> Option<FlowKey> {
        let (own, target) = match self.dir {
            Dir::Orig => (self.orig, self.reply.reversed()),
            Dir::Reply => (self.reply, self.orig.reversed()),
        };
        (own != target).then_some(target)
    }
}

/// Why an insert did not happen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InsertError {
    /// Every entry is in use.
    Full,
    /// Both candidate buckets of a tuple are full.
    BucketsFull,
    /// A TCP RST never starts a connection.
    Invalid,
    /// The original tuple is already tracked (in either direction): the
    /// packet belongs to that connection.
    Exists(Hit),
    /// The reply tuple is held by another connection (`hit`): inserting
    /// would make one tuple mean two flows.
    Clash(Hit),
    /// Another insert of one of the tuples was under way: retry.
    Busy,
}

/// A live entry, for dumps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryInfo {
    pub orig: FlowKey,
    pub reply: FlowKey,
    pub state: CtState,
    pub flags: u8,
    pub epoch: u32,
    pub last_seen_ms: u64,
    pub expires_in_ms: u64,
}

/// Counters of table operations (never touched by lookups).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CtStats {
    pub inserts: u64,
    pub refused_full: u64,
    pub refused_buckets: u64,
    pub removals: u64,
    pub reaped: u64,
}
