//! The agent's side of pod attachment (`/ports`), on real veths: pod
//! interfaces handed over at run time are served at once, survive an agent
//! restart, are refused with a reason when wrong, and are let go when
//! detached or when their interface disappears. The CNI plugin that calls
//! this API is tested in `cni.rs`. Needs root.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use api::ports::{attach, attachments, detach, Attachment};
use api::ApiError;
use common::{serial, Agent};
use testkit::netns::{require_root, Netns};
use testkit::topology::Topology;

fn mac(m: [u8; 6]) -> String {
    tables::mac::MacAddr(m).to_string()
}

fn attachment(t: &Topology, pod: usize, container: &str) -> Attachment {
    let p = &t.pods[pod];
    Attachment {
        container_id: container.into(),
        ifname: "eth0".into(),
        namespace: "demo".into(),
        name: format!("pod-{pod}"),
        ip: p.ip,
        mac: mac(p.mac),
        host_ifname: p.host_if.clone(),
        kind: api::ports::PodPortKind::Veth,
        netns: format!("/run/netns/{}", p.ns.name),
        port_mappings: Vec::new(),
    }
}

/// One ping from `ns` to `dst`, answered or not.
fn ping_once(ns: &Netns, dst: &str) -> bool {
    ns.exec(&["ping", "-c", "1", "-W", "2", dst], Duration::from_secs(5))
        .status
        .success()
}

fn start(node: &Netns, manifests: &Path, socket: &Path) -> Agent {
    let dir = manifests.display().to_string();
    Agent::start_with(1, &node.name, &["--manifests", &dir], socket.to_path_buf())
}

fn refused_status(e: ApiError) -> (u16, String) {
    match e {
        ApiError::Refused {
            status, message, ..
        } => (status, message),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn pod_ports_are_served_at_once_survive_restarts_and_go_when_detached() {
    require_root();
    let _serial = serial();
    let mut t = Topology::new();
    let node = t.add_node();
    let a = t.add_pod(node, "10.244.1.10".parse().unwrap());
    let b = t.add_pod(node, "10.244.1.11".parse().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let manifests = dir.path().join("manifests");
    std::fs::create_dir(&manifests).unwrap();
    let socket = dir.path().join("agent.sock");
    let mut agent = start(&t.nodes[node].ns, &manifests, &socket);

    // Attached: reachable as soon as the answer arrives (the first ping).
    let pa = attach(&socket, &attachment(&t, a, "ctr-a")).unwrap();
    let pb = attach(&socket, &attachment(&t, b, "ctr-b")).unwrap();
    assert_ne!(pa.port, pb.port);
    assert!(
        ping_once(&t.pods[a].ns, "10.244.1.11"),
        "the first ping a -> b after attaching"
    );
    let listed = attachments(&socket).unwrap();
    assert_eq!(listed.ports.len(), 2);
    assert!(
        listed.render().contains("demo/pod-1"),
        "{}",
        listed.render()
    );

    // Wrong attachments are refused with a reason and change nothing.
    let mut wrong = attachment(&t, a, "ctr-x");
    wrong.ip = "10.244.9.9".parse().unwrap();
    let (status, message) = refused_status(attach(&socket, &wrong).unwrap_err());
    assert_eq!(status, 400);
    assert!(
        message.contains("outside this node's pod CIDR 10.244.1.0/24"),
        "{message}"
    );
    let mut wrong = attachment(&t, a, "ctr-x");
    wrong.host_ifname = "nosuchif".into();
    let (status, message) = refused_status(attach(&socket, &wrong).unwrap_err());
    assert_eq!(status, 400);
    assert!(message.contains("\"nosuchif\" does not exist"), "{message}");
    let (status, message) =
        refused_status(attach(&socket, &attachment(&t, a, "ctr-x")).unwrap_err());
    assert_eq!(status, 409);
    assert!(
        message.contains("already attached for container ctr-a"),
        "{message}"
    );
    let mut wrong = attachment(&t, a, "ctr-x");
    wrong.mac = "nope".into();
    assert_eq!(refused_status(attach(&socket, &wrong).unwrap_err()).0, 400);
    assert_eq!(attachments(&socket).unwrap().ports.len(), 2);
    // A refused replacement leaves the attachment it would replace alone.
    let mut wrong = attachment(&t, a, "ctr-a");
    wrong.ip = t.pods[b].ip;
    assert_eq!(refused_status(attach(&socket, &wrong).unwrap_err()).0, 409);
    assert_eq!(attachments(&socket).unwrap().ports.len(), 2);
    assert!(ping_once(&t.pods[a].ns, "10.244.1.11"), "a is still served");

    // A restarted agent serves the same pods again.
    assert!(agent.stop(), "the agent stops cleanly");
    let agent2 = start(&t.nodes[node].ns, &manifests, &socket);
    let listed = attachments(&socket).unwrap();
    let mut ips: Vec<String> = listed
        .ports
        .iter()
        .map(|p| p.attachment.ip.to_string())
        .collect();
    ips.sort();
    assert_eq!(ips, ["10.244.1.10", "10.244.1.11"]);
    assert!(
        ping_once(&t.pods[a].ns, "10.244.1.11"),
        "a -> b after the restart"
    );

    // Detached: no longer served; detaching again is not an error.
    assert!(detach(&socket, "ctr-a", "eth0").unwrap());
    assert!(!detach(&socket, "ctr-a", "eth0").unwrap());
    assert!(!ping_once(&t.pods[a].ns, "10.244.1.11"), "a is detached");

    // An interface that disappears without a detach is let go.
    t.nodes[node].ns.ip(&["link", "del", &t.pods[b].host_if]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !attachments(&socket).unwrap().ports.is_empty() {
        assert!(
            Instant::now() < deadline,
            "the agent still lists b's port 10 s after its interface went"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = api::status(&socket).unwrap();
    assert!(
        status
            .warnings
            .iter()
            .any(|w| w.contains("its interface is gone")),
        "{:?}",
        status.warnings
    );
    drop(agent2);
}
