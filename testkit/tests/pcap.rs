//! The pcap-recording port writes files tcpdump reads. Needs `tcpdump`
//! (installed by deploy/setup.sh); fails, never skips, without it.

use std::process::Command;

use dataplane::frame::{Desc, FramePool};
use dataplane::port::{MemPort, PcapPort, PcapWriter, Port};
use testkit::example::{self, addrs::*, GATEWAY_MAC};
use testkit::packets::{self, ip, tcp, L2};

#[test]
fn tcpdump_reads_what_the_pcap_port_records() {
    let tcpdump = Command::new("tcpdump").arg("--version").output();
    assert!(tcpdump.is_ok(), "tcpdump is needed: run deploy/setup.sh");
    let path =
        std::env::temp_dir().join(format!("podswitch-pcap-test-{}.pcap", std::process::id()));
    let file = std::fs::File::create(&path).unwrap();
    let (mem, handle) = MemPort::new("pod0");
    let mut port = PcapPort::new(mem, PcapWriter::new(std::io::BufWriter::new(file)).unwrap());
    let l2 = L2 {
        src: example::pod_mac(CLIENT.parse().unwrap()),
        dst: GATEWAY_MAC,
    };
    handle.inject(&packets::tcp(
        l2,
        (ip(CLIENT), 1234),
        (ip(WEB_1), 8080),
        tcp::SYN,
        b"",
    ));
    handle.inject(&packets::udp(
        l2,
        (ip(CLIENT), 5353),
        (ip(WEB_2), 53),
        b"query",
    ));
    let mut pool = FramePool::new(8);
    let mut descs = [Desc::default(); 4];
    let n = port.recv(&mut pool, &mut descs);
    assert_eq!(n, 2);
    assert_eq!(port.send(&mut pool, &descs[..n]), 2);
    drop(port.into_parts().unwrap());
    let out = Command::new("tcpdump")
        .args(["-n", "-r"])
        .arg(&path)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&path);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "tcpdump failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "two frames in, two out:\n{text}");
    assert!(
        lines[0].contains("10.244.1.11.1234 > 10.244.1.10.8080: Flags [S]"),
        "{text}"
    );
    assert!(
        lines[1].contains("10.244.1.11.5353 > 10.244.2.10.53"),
        "{text}"
    );
}
