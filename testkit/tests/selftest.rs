//! `podswitch selftest` itself: a short run on every core must show every
//! expected outcome (forwarding, ARP, encap, decap, policy denials, each
//! malformed class) and no frame without a verdict.

use dataplane::counters::DropReason;
use fixtures::selftest::{run, Options};

#[test]
fn selftest_shows_every_expected_outcome() {
    let report = run(&Options {
        packets_per_core: 30_000,
        cores: 0,
        flows: 32,
    });
    assert!(
        report.problems().is_empty(),
        "{:?}\n{}",
        report.problems(),
        report.render()
    );
    let sent: u64 = report.cores.iter().map(|c| c.packets).sum();
    let forwarded: u64 = report.counters.iter().map(|c| c.forwarded.get()).sum();
    let dropped: u64 = report.counters.iter().map(|c| c.total_drops()).sum();
    assert_eq!(forwarded + dropped, sent, "every frame accounted for");
    assert!(report.drops(DropReason::PolicyDeniedIngress) > 0);
    assert!(report.render().contains("policy_denied_ingress"));
}
