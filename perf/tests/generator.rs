//! The benchmark generator against a real kernel: frames transmitted by
//! BPF_PROG_RUN in live-frames mode out of one veth end all reach the
//! counting sink on the other end. Needs root; fails (never skips) without.

use std::time::Instant;

use perf::gen::{Generator, Sink, FRAME};
use testkit::netns::{require_root, Netns};

fn ifindex_in(ns: &Netns, dev: &str) -> u32 {
    let text = ns.ip(&["-o", "link", "show", "dev", dev]);
    text.split(':')
        .next()
        .and_then(|n| n.trim().parse().ok())
        .expect("an ifindex")
}

#[test]
fn every_generated_frame_reaches_the_sink() {
    require_root();
    let ns = Netns::new("gen");
    ns.ip(&["link", "add", "g0", "type", "veth", "peer", "name", "s0"]);
    ns.ip(&["link", "set", "g0", "up"]);
    ns.ip(&["link", "set", "s0", "up"]);
    let (g0, s0) = (ifindex_in(&ns, "g0"), ifindex_in(&ns, "s0"));
    let mut frame = testkit::packets::udp(
        testkit::packets::L2 {
            src: [2, 0, 0, 0, 0, 1],
            dst: [2, 0, 0, 0, 0, 2],
        },
        (testkit::packets::ip("198.18.0.10"), 1024),
        (testkit::packets::ip("198.18.0.20"), 9),
        &[0u8; 22],
    );
    frame.resize(FRAME, 0);
    let (sent, received, seconds) = ns.enter(move || {
        let sink = Sink::attach(s0).expect("sink");
        let gen = Generator::new(g0, &frame, 64).expect("generator");
        let start = Instant::now();
        for _ in 0..4 {
            gen.send(250_000).expect("send");
        }
        let seconds = start.elapsed().as_secs_f64();
        (gen.sent(), sink.received(), seconds)
    });
    eprintln!(
        "generator: {sent} frames in {seconds:.2} s ({:.2} Mpps), sink counted {received}",
        sent as f64 / seconds / 1e6
    );
    assert_eq!(sent, 1_000_000, "the program ran once per frame");
    assert!(
        received >= sent * 99 / 100,
        "sent {sent}, received {received}"
    );
}
