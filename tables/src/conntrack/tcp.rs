//! The TCP state machine of a tracked connection, after Linux's
//! `tcp_conntracks` table (simplified to the states and transitions that
//! decide timeouts).
//!
//! | state        | event                                   | next        |
//! |--------------|-----------------------------------------|-------------|
//! | any          | RST                                     | Close       |
//! | SynSent      | SYN+ACK from the reply side             | SynRecv     |
//! | SynRecv      | ACK from the original side              | Established |
//! | Established  | FIN from either side                    | FinWait     |
//! | FinWait      | FIN from the other side                 | LastAck     |
//! | FinWait      | ACK from the other side                 | CloseWait   |
//! | CloseWait    | FIN from the other side                 | LastAck     |
//! | LastAck      | ACK (without FIN)                       | TimeWait    |
//!
//! Anything else keeps the state. A SYN on a closed connection does not
//! move its entry: it starts a new connection ([`reopens`]), and the caller
//! removes the old entry and classifies the SYN afresh, as the kernel does
//! (`nf_conntrack_proto_tcp`'s "reopen a closed connection": kill, then
//! look up again).

use super::{CtState, Dir};

/// Flag bits of a TCP header.
pub use crate::proto::tcp_flags as flags;

/// Which sides have sent a FIN (bit 0: original, bit 1: reply).
pub type FinBits = u8;

fn bit(dir: Dir) -> FinBits {
    match dir {
        Dir::Orig => 1,
        Dir::Reply => 2,
    }
}

/// The state after a segment with `tcp_flags` travelling in `dir`, and the
/// updated FIN bits.
pub fn next_state(state: CtState, fins: FinBits, dir: Dir, tcp_flags: u8) -> (CtState, FinBits) {
    use CtState::*;
    let (syn, ack, fin) = (
        tcp_flags & flags::SYN != 0,
        tcp_flags & flags::ACK != 0,
        tcp_flags & flags::FIN != 0,
    );
    if tcp_flags & flags::RST != 0 {
        return (Close, fins);
    }
    let other_fin = fins & !bit(dir) != 0;
    match state {
        SynSent if dir == Dir::Reply && syn && ack => (SynRecv, fins),
        SynRecv if dir == Dir::Orig && ack && !syn => (Established, fins),
        SynRecv | Established if fin => (FinWait, fins | bit(dir)),
        FinWait if fin && fins & bit(dir) == 0 => (LastAck, fins | bit(dir)),
        FinWait if ack && other_fin => (CloseWait, fins),
        CloseWait if fin && fins & bit(dir) == 0 => (LastAck, fins | bit(dir)),
        LastAck if ack && !fin => (TimeWait, fins),
        s => (s, fins),
    }
}

/// Whether a segment with `tcp_flags` travelling in `dir` starts a new
/// connection over an entry in `state`: a SYN (without ACK) on TIME_WAIT from
/// either side, or on CLOSE from the original side (the kernel's transition
/// table: a reply-side SYN on CLOSE is invalid).
pub fn reopens(state: CtState, dir: Dir, tcp_flags: u8) -> bool {
    let syn = tcp_flags & (flags::SYN | flags::ACK | flags::RST) == flags::SYN;
    syn && match state {
        CtState::TimeWait => true,
        CtState::Close => dir == Dir::Orig,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::flags::*;
    use super::*;
    use proptest::prelude::*;

    fn run(steps: &[(Dir, u8)]) -> CtState {
        let (mut s, mut f) = (CtState::SynSent, 0);
        for &(d, fl) in steps {
            (s, f) = next_state(s, f, d, fl);
        }
        s
    }

    #[test]
    fn handshake_data_and_close() {
        use Dir::*;
        let open = [(Reply, SYN | ACK), (Orig, ACK)];
        assert_eq!(run(&open), CtState::Established);
        let mut all = open.to_vec();
        all.extend([
            (Orig, ACK),
            (Reply, ACK),
            (Orig, FIN | ACK),
            (Reply, ACK),
            (Reply, FIN | ACK),
            (Orig, ACK),
        ]);
        assert_eq!(run(&all), CtState::TimeWait);
        let mut both = open.to_vec();
        both.extend([(Orig, FIN | ACK), (Reply, FIN | ACK), (Orig, ACK)]);
        assert_eq!(run(&both), CtState::TimeWait);
    }

    #[test]
    fn rst_closes_from_any_state() {
        for s in [
            CtState::SynSent,
            CtState::Established,
            CtState::FinWait,
            CtState::LastAck,
        ] {
            assert_eq!(next_state(s, 0, Dir::Reply, RST | ACK).0, CtState::Close);
        }
    }

    #[test]
    fn a_syn_reopens_only_closed_connections() {
        use CtState::*;
        assert!(reopens(TimeWait, Dir::Orig, SYN));
        assert!(reopens(TimeWait, Dir::Reply, SYN));
        assert!(reopens(Close, Dir::Orig, SYN));
        assert!(
            !reopens(Close, Dir::Reply, SYN),
            "invalid in the kernel's table"
        );
        assert!(!reopens(TimeWait, Dir::Orig, SYN | ACK));
        for s in [SynSent, SynRecv, Established, FinWait, CloseWait, LastAck] {
            assert!(!reopens(s, Dir::Orig, SYN), "{s:?}");
        }
        assert_eq!(
            next_state(TimeWait, 3, Dir::Orig, SYN).0,
            TimeWait,
            "the state machine leaves reopening to the caller"
        );
    }

    #[test]
    fn retransmitted_syn_keeps_syn_sent() {
        assert_eq!(
            next_state(CtState::SynSent, 0, Dir::Orig, SYN).0,
            CtState::SynSent
        );
    }

    proptest! {
        /// Any number of data segments in either direction between the
        /// handshake and the teardown leaves a connection established, and
        /// the teardown always reaches TIME_WAIT, whichever side closes first.
        #[test]
        fn valid_conversations_end_in_time_wait(data in proptest::collection::vec(any::<bool>(), 0..20), client_closes: bool) {
            use Dir::*;
            let mut steps = vec![(Reply, SYN | ACK), (Orig, ACK)];
            steps.extend(data.iter().map(|&o| (if o { Orig } else { Reply }, ACK)));
            prop_assert_eq!(run(&steps), CtState::Established);
            let (first, second) = if client_closes { (Orig, Reply) } else { (Reply, Orig) };
            steps.extend([(first, FIN | ACK), (second, ACK), (second, FIN | ACK), (first, ACK)]);
            prop_assert_eq!(run(&steps), CtState::TimeWait);
        }
    }
}
