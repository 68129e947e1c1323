//! Cluster DNS answered by the agent, end to end: a pod's resolver asks
//! 10.96.0.10, the switch sends the query to the node's own address
//! through the host port, the agent's DNS server answers from the
//! manifests, and the answer comes back from 10.96.0.10. Needs root.

mod common;

use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use api::ports::{attach, Attachment};
use common::{serial, Agent};
use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use testkit::netns::{require_root, Netns};
use testkit::topology::Topology;

const MANIFESTS: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: demo}
---
apiVersion: v1
kind: Node
metadata: {name: node1}
spec: {podCIDR: 10.244.1.0/24}
status: {addresses: [{type: InternalIP, address: 198.18.0.1}]}
---
apiVersion: v1
kind: Pod
metadata: {namespace: demo, name: web-1, labels: {app: web}}
spec:
  nodeName: node1
  containers: [{name: web, image: web, ports: [{name: http, containerPort: 80}]}]
status: {podIP: 10.244.1.10}
---
apiVersion: v1
kind: Service
metadata: {namespace: demo, name: web}
spec:
  clusterIP: 10.96.0.20
  selector: {app: web}
  ports: [{name: http, port: 80}]
---
apiVersion: v1
kind: Service
metadata: {namespace: demo, name: web-headless}
spec:
  clusterIP: None
  selector: {app: web}
  ports: [{name: http, port: 80}]
---
apiVersion: v1
kind: Service
metadata: {namespace: demo, name: ext}
spec: {type: ExternalName, externalName: example.org}
"#;

const CLUSTER_DNS: &str = "10.96.0.10:53";

/// `/etc/netns/<ns>/resolv.conf` (which `ip netns exec` bind-mounts over
/// `/etc/resolv.conf`), removed on drop, also when the test fails.
struct ResolvConf {
    dir: PathBuf,
    created_parent: bool,
}

impl ResolvConf {
    fn write(ns: &Netns) -> ResolvConf {
        let parent = Path::new("/etc/netns");
        let created_parent = !parent.exists();
        let dir = parent.join(&ns.name);
        std::fs::create_dir_all(&dir).unwrap();
        let guard = ResolvConf {
            dir,
            created_parent,
        };
        std::fs::write(
            guard.dir.join("resolv.conf"),
            "nameserver 10.96.0.10\n\
             search demo.svc.cluster.local svc.cluster.local cluster.local\n\
             options ndots:5 timeout:2 attempts:2\n",
        )
        .unwrap();
        guard
    }
}

impl Drop for ResolvConf {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.dir.join("resolv.conf"));
        let _ = std::fs::remove_dir(&self.dir);
        if self.created_parent {
            // Only if empty: another test may use it by now.
            let _ = std::fs::remove_dir("/etc/netns");
        }
    }
}

fn query(name: &str, qtype: RecordType) -> Vec<u8> {
    let mut m = Message::query();
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    m.to_vec().unwrap()
}

/// One query over UDP from inside `ns`; `None` without an answer in 1 s.
fn ask_udp(ns: &Netns, name: &str, qtype: RecordType) -> Option<Message> {
    let q = query(name, qtype);
    ns.enter(move || {
        let socket = UdpSocket::bind("0.0.0.0:0").ok()?;
        socket.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
        socket.send_to(&q, CLUSTER_DNS).ok()?;
        let mut buf = [0u8; 1500];
        let (n, from) = socket.recv_from(&mut buf).ok()?;
        assert_eq!(from.to_string(), CLUSTER_DNS, "the answer's source");
        Message::from_vec(&buf[..n]).ok()
    })
}

/// One query over TCP from inside `ns`.
fn ask_tcp(ns: &Netns, name: &str, qtype: RecordType) -> Message {
    let q = query(name, qtype);
    ns.enter(move || {
        let addr = CLUSTER_DNS.parse().unwrap();
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let len = u16::try_from(q.len()).unwrap().to_be_bytes();
        s.write_all(&[&len[..], &q].concat()).unwrap();
        let mut len = [0u8; 2];
        s.read_exact(&mut len).unwrap();
        let mut body = vec![0u8; usize::from(u16::from_be_bytes(len))];
        s.read_exact(&mut body).unwrap();
        Message::from_vec(&body).unwrap()
    })
}

fn getent(ns: &Netns, name: &str) -> (bool, String) {
    let out = ns.exec(&["getent", "hosts", name], Duration::from_secs(20));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn pods_resolve_cluster_names_through_the_agent() {
    require_root();
    let _serial = serial();
    let mut t = Topology::new();
    let node = t.add_node();
    let pod = t.add_pod(node, "10.244.1.10".parse().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let manifests = dir.path().join("manifests");
    std::fs::create_dir(&manifests).unwrap();
    std::fs::write(manifests.join("cluster.yaml"), MANIFESTS).unwrap();
    let socket = dir.path().join("agent.sock");
    let folder = manifests.display().to_string();
    let _agent = Agent::start_with(
        1,
        &t.nodes[node].ns.name,
        &["--manifests", &folder],
        socket.clone(),
    );
    let p = &t.pods[pod];
    let mac = tables::mac::MacAddr(p.mac).to_string();
    attach(
        &socket,
        &Attachment {
            container_id: "ctr-web-1".into(),
            ifname: "eth0".into(),
            namespace: "demo".into(),
            name: "web-1".into(),
            ip: p.ip,
            mac,
            host_ifname: p.host_if.clone(),
            kind: api::ports::PodPortKind::Veth,
            netns: format!("/run/netns/{}", p.ns.name),
            port_mappings: Vec::new(),
        },
    )
    .unwrap();

    // The manifests are loaded and the zone built: web answers.
    let deadline = Instant::now() + Duration::from_secs(15);
    let web = loop {
        if let Some(m) = ask_udp(&p.ns, "web.demo.svc.cluster.local.", RecordType::A) {
            if !m.answers.is_empty() {
                break m;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no answer for web.demo.svc.cluster.local from 10.96.0.10 in 15 s: {:?}",
            api::status(&socket).map(|s| (s.dns, s.warnings))
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(
        web.answers[0].data,
        RData::A(hickory_proto::rr::rdata::A("10.96.0.20".parse().unwrap()))
    );

    // Raw queries: NXDOMAIN, SRV, the headless service, the ExternalName.
    let nx = ask_udp(&p.ns, "nosuch.demo.svc.cluster.local.", RecordType::A).unwrap();
    assert_eq!(nx.metadata.response_code, ResponseCode::NXDomain);
    assert!(
        matches!(nx.authorities.first().map(|r| &r.data), Some(RData::SOA(_))),
        "a negative answer carries the SOA: {nx:?}"
    );
    let srv = ask_udp(
        &p.ns,
        "_http._tcp.web.demo.svc.cluster.local.",
        RecordType::SRV,
    )
    .unwrap();
    let Some(RData::SRV(record)) = srv.answers.first().map(|r| &r.data) else {
        panic!("no SRV answer: {srv:?}");
    };
    assert_eq!(
        (record.port, record.target.to_ascii().as_str()),
        (80, "web.demo.svc.cluster.local.")
    );
    let headless = ask_tcp(&p.ns, "web-headless.demo.svc.cluster.local.", RecordType::A);
    assert_eq!(
        headless.answers.first().map(|r| r.data.clone()),
        Some(RData::A(hickory_proto::rr::rdata::A(
            "10.244.1.10".parse().unwrap()
        ))),
        "over TCP: {headless:?}"
    );
    let ext = ask_udp(&p.ns, "ext.demo.svc.cluster.local.", RecordType::A).unwrap();
    assert!(
        matches!(ext.answers.first().map(|r| &r.data), Some(RData::CNAME(_))),
        "{ext:?}"
    );

    // The pod's own resolver, through resolv.conf and the search list.
    let _resolv = ResolvConf::write(&p.ns);
    let (ok, out) = getent(&p.ns, "web.demo.svc.cluster.local");
    assert!(ok && out.contains("10.96.0.20"), "{out}");
    let (ok, out) = getent(&p.ns, "web");
    assert!(ok && out.contains("10.96.0.20"), "short name: {out}");
    let (ok, out) = getent(&p.ns, "nosuch");
    assert!(!ok, "an unknown name resolved: {out}");
    // A reverse lookup (PTR) of the service's address.
    let (ok, out) = getent(&p.ns, "10.96.0.20");
    assert!(
        ok && out.contains("web.demo.svc.cluster.local"),
        "reverse: {out}"
    );

    // The status copies the counters once per control-loop round.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let stats = api::status(&socket).unwrap().dns.unwrap();
        if stats.nxdomain >= 1 && stats.noerror >= 4 {
            break;
        }
        assert!(Instant::now() < deadline, "{stats:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
