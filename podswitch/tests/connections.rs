//! Connections as Kubernetes and the kernel handle them, on real kernels: a
//! `podswitch lab` (agents, veths, AF_XDP) with the pods' own TCP/UDP stacks
//! as clients. A client reusing a source port towards two ClusterIPs with
//! one backend (TCP and UDP), UDP datagrams and pings larger than the pod
//! MTU (fragmented by the sender's kernel), rejects like kube-proxy's,
//! `healthCheckNodePort` answered on each node, and `hostPort`s reached
//! from the underlay, another node and the pod itself. Needs root.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream, UdpSocket};
use std::path::Path;
use std::time::Duration;

use common::{podswitch, serial, text};
use serde_json::Value;
use socket2::{Domain, Protocol, Socket, Type};
use testkit::netns::{enter, require_root, Netns};

const MANIFEST: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: ct}
---
apiVersion: v1
kind: Pod
metadata: {name: backend, namespace: ct, labels: {app: backend}}
spec:
  nodeName: node2
  containers:
    - name: echo
      image: podswitch/echo
      ports:
        - {name: tcp, containerPort: 8080}
        - {name: udp, containerPort: 8081, protocol: UDP}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: ct, labels: {app: client}}
spec:
  nodeName: node1
  containers:
    - {name: client, image: podswitch/echo}
---
apiVersion: v1
kind: Pod
metadata: {name: published, namespace: ct, labels: {app: published}}
spec:
  nodeName: node2
  containers:
    - name: echo
      image: podswitch/echo
      ports:
        - {containerPort: 8080, hostPort: 8088}
        - {containerPort: 8081, hostPort: 8089, protocol: UDP}
---
apiVersion: v1
kind: Service
metadata: {name: one, namespace: ct}
spec:
  selector: {app: backend}
  ports:
    - {name: tcp, port: 80, targetPort: tcp}
    - {name: udp, port: 53, targetPort: udp, protocol: UDP}
---
apiVersion: v1
kind: Service
metadata: {name: two, namespace: ct}
spec:
  selector: {app: backend}
  ports:
    - {name: tcp, port: 80, targetPort: tcp}
    - {name: udp, port: 53, targetPort: udp, protocol: UDP}
---
apiVersion: v1
kind: Service
metadata: {name: empty, namespace: ct}
spec:
  selector: {app: nobody}
  ports:
    - {name: tcp, port: 80, targetPort: 8080}
    - {name: udp, port: 53, targetPort: 8081, protocol: UDP}
---
apiVersion: v1
kind: Service
metadata: {name: local, namespace: ct}
spec:
  type: LoadBalancer
  externalTrafficPolicy: Local
  healthCheckNodePort: 32100
  selector: {app: backend}
  ports:
    - {name: tcp, port: 80, targetPort: tcp, nodePort: 31080}
"#;

/// A lab of this test's manifest, taken down when dropped.
struct Lab {
    name: String,
    status: Value,
}

impl Lab {
    fn up(tag: &str, dir: &Path) -> Lab {
        let name = format!("{tag}{}", std::process::id() % 100_000);
        let file = dir.join("connections.yaml");
        std::fs::write(&file, MANIFEST).unwrap();
        let out = podswitch(&[
            "lab",
            "up",
            "--name",
            &name,
            "-f",
            &file.display().to_string(),
        ]);
        let mut lab = Lab {
            name,
            status: Value::Null,
        };
        assert!(out.status.success(), "lab up: {}", text(&out));
        let out = podswitch(&["lab", "status", "--name", &lab.name, "-o", "json"]);
        lab.status = serde_json::from_slice(&out.stdout).unwrap();
        lab
    }

    /// The address in `field` of the item of `list` (in `lab status`)
    /// named `name`.
    fn address(&self, list: &str, name: &str, field: &str) -> Ipv4Addr {
        self.status[list]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .and_then(|p| p[field].as_str())
            .unwrap_or_else(|| panic!("no {list} {name}: {}", self.status))
            .parse()
            .unwrap()
    }

    fn pod_ip(&self, name: &str) -> Ipv4Addr {
        self.address("pods", name, "ip")
    }

    fn vip(&self, service: &str) -> Ipv4Addr {
        self.address("services", service, "cluster_ip")
    }

    /// The network namespace of pod `ct/name`.
    fn netns(&self, pod: &str) -> String {
        format!("{}-ct-{pod}", self.name)
    }

    /// A client namespace on the underlay (198.18.0.150), outside the
    /// cluster; deleted with the returned value.
    fn outside(&self) -> Netns {
        let ns = Netns::new("ctx");
        let ul = format!("{}-ul", self.name);
        let port = format!("ctx{}", std::process::id() % 100_000);
        testkit::netns::run(&[
            "ip", "-n", &ul, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns",
            &ns.name,
        ]);
        testkit::netns::run(&["ip", "-n", &ul, "link", "set", &port, "master", "br0", "up"]);
        ns.ip(&["addr", "add", "198.18.0.150/24", "dev", "eth0"]);
        ns.ip(&["link", "set", "eth0", "up"]);
        // Complete checksums, as on a wire.
        ns.exec(
            &["ethtool", "-K", "eth0", "tx", "off"],
            Duration::from_secs(5),
        );
        ns
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = podswitch(&["lab", "down", "--name", &self.name]);
    }
}

/// A TCP connection from local port `port` (SO_REUSEADDR, as a client that
/// binds its port) to `to`, with one echo exchanged.
fn tcp_from(port: u16, to: SocketAddrV4) -> std::io::Result<TcpStream> {
    let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    s.bind(&SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)).into())?;
    s.connect_timeout(&SocketAddr::V4(to).into(), Duration::from_secs(3))?;
    let mut stream: TcpStream = s.into();
    stream.set_read_timeout(Some(Duration::from_secs(3)))?;
    stream.write_all(b"hello\n")?;
    let mut buf = [0u8; 6];
    stream.read_exact(&mut buf)?;
    assert_eq!(&buf, b"hello\n");
    Ok(stream)
}

/// A UDP socket bound to `port` (SO_REUSEADDR) and connected to `to`.
fn udp_from(port: u16, to: SocketAddrV4) -> UdpSocket {
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).unwrap();
    s.set_reuse_address(true).unwrap();
    s.bind(&SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)).into())
        .unwrap();
    let u: UdpSocket = s.into();
    u.connect(to).unwrap();
    u.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    u
}

#[test]
fn a_client_reusing_its_port_towards_two_services_reaches_both() {
    require_root();
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let lab = Lab::up("ctc", dir.path());
    let (one, two) = (lab.vip("one"), lab.vip("two"));
    let results = enter(&lab.netns("client"), move || {
        // A closed connection holds the reply tuple in TIME_WAIT: the SYN
        // to the second service replaces it.
        let first = tcp_from(40_500, SocketAddrV4::new(one, 80)).map(drop);
        let after_close = tcp_from(40_500, SocketAddrV4::new(two, 80)).map(drop);
        // A live connection holds it: the second gets another source port.
        let live = tcp_from(40_600, SocketAddrV4::new(one, 80));
        let beside_live = tcp_from(40_600, SocketAddrV4::new(two, 80)).map(drop);
        let still = live.and_then(|mut s| {
            s.write_all(b"again\n")?;
            let mut buf = [0u8; 6];
            s.read_exact(&mut buf).map(|()| buf == *b"again\n")
        });
        // UDP from one port to both: each answer from its own service.
        let (u1, u2) = (
            udp_from(40_700, SocketAddrV4::new(one, 53)),
            udp_from(40_700, SocketAddrV4::new(two, 53)),
        );
        u1.send(b"one").unwrap();
        u2.send(b"two").unwrap();
        let mut buf = [0u8; 16];
        let a1 = u1.recv(&mut buf).map(|n| buf[..n].to_vec());
        let a2 = u2.recv(&mut buf).map(|n| buf[..n].to_vec());
        (first, after_close, beside_live, still, a1, a2)
    });
    let (first, after_close, beside_live, still, a1, a2) = results;
    assert!(first.is_ok(), "first connection: {first:?}");
    assert!(
        after_close.is_ok(),
        "same port to the other service after close: {after_close:?}"
    );
    assert!(
        beside_live.is_ok(),
        "same port to the other service beside a live one: {beside_live:?}"
    );
    assert_eq!(still.ok(), Some(true), "the first connection still works");
    assert_eq!(a1.ok(), Some(b"one".to_vec()));
    assert_eq!(
        a2.ok(),
        Some(b"two".to_vec()),
        "the second service's answer"
    );
}

#[test]
fn datagrams_and_pings_larger_than_the_pod_mtu_pass_through_services_and_across_nodes() {
    require_root();
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let lab = Lab::up("ctf", dir.path());
    let (one, backend) = (lab.vip("one"), lab.pod_ip("backend"));
    let echoed = enter(&lab.netns("client"), move || {
        let payload: Vec<u8> = (0..4000u32).map(|i| (i % 251) as u8).collect();
        let mut answers = Vec::new();
        for to in [SocketAddrV4::new(one, 53), SocketAddrV4::new(backend, 8081)] {
            let u = UdpSocket::bind("0.0.0.0:0").unwrap();
            u.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
            u.connect(to).unwrap();
            u.send(&payload).unwrap();
            let mut buf = vec![0u8; 8192];
            answers.push(u.recv(&mut buf).map(|n| buf[..n] == payload[..]));
        }
        answers
    });
    assert_eq!(echoed.len(), 2);
    assert!(
        matches!(echoed[0], Ok(true)),
        "through the ClusterIP: {:?}",
        echoed[0]
    );
    assert!(
        matches!(echoed[1], Ok(true)),
        "pod to pod across nodes: {:?}",
        echoed[1]
    );
    let ping = std::process::Command::new("timeout")
        .args([
            "10",
            "ip",
            "netns",
            "exec",
            &lab.netns("client"),
            "ping",
            "-c",
            "2",
            "-W",
            "3",
            "-s",
            "3000",
        ])
        .arg(backend.to_string())
        .output()
        .unwrap();
    assert!(ping.status.success(), "ping -s 3000: {}", text(&ping));
}

#[test]
fn services_without_endpoints_and_undeclared_ports_refuse_at_once() {
    require_root();
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let lab = Lab::up("ctr", dir.path());
    let (empty, one) = (lab.vip("empty"), lab.vip("one"));
    let taken: Vec<Ipv4Addr> = ["one", "two", "empty", "local"]
        .iter()
        .map(|s| lab.vip(s))
        .collect();
    let unallocated = Ipv4Addr::new(10, 111, 222, 33);
    assert!(!taken.contains(&unallocated));
    let (no_endpoints, udp, undeclared, nothing) = enter(&lab.netns("client"), move || {
        let connect = |to: SocketAddrV4| {
            TcpStream::connect_timeout(&to.into(), Duration::from_secs(2)).map(drop)
        };
        let u = UdpSocket::bind("0.0.0.0:0").unwrap();
        u.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        u.connect(SocketAddrV4::new(empty, 53)).unwrap();
        u.send(b"anyone?").unwrap();
        let mut buf = [0u8; 16];
        (
            connect(SocketAddrV4::new(empty, 80)),
            u.recv(&mut buf).map(drop),
            connect(SocketAddrV4::new(one, 81)),
            connect(SocketAddrV4::new(unallocated, 80)),
        )
    });
    let kind = |r: &std::io::Result<()>| r.as_ref().err().map(std::io::Error::kind);
    assert_eq!(
        kind(&no_endpoints),
        Some(ErrorKind::ConnectionRefused),
        "{no_endpoints:?}"
    );
    assert_eq!(
        kind(&udp),
        Some(ErrorKind::ConnectionRefused),
        "UDP gets port unreachable: {udp:?}"
    );
    assert_eq!(
        kind(&undeclared),
        Some(ErrorKind::ConnectionRefused),
        "{undeclared:?}"
    );
    assert_eq!(
        kind(&nothing),
        Some(ErrorKind::TimedOut),
        "dropped, not refused: {nothing:?}"
    );
}

/// `GET /` on `to` from the current namespace: status code and JSON body.
fn health(to: SocketAddrV4) -> (u16, Value) {
    let mut s = TcpStream::connect_timeout(&to.into(), Duration::from_secs(3))
        .unwrap_or_else(|e| panic!("{to}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: lb\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    let code = answer
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
    (code, serde_json::from_str(body).unwrap_or(Value::Null))
}

/// The `NS/POD` that answers a `whoami` on `to` (TCP).
fn whoami(to: SocketAddrV4) -> String {
    let mut s = TcpStream::connect_timeout(&to.into(), Duration::from_secs(3))
        .unwrap_or_else(|e| panic!("{to}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    s.write_all(b"whoami\n").unwrap();
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).unwrap_or(0);
    String::from_utf8_lossy(&buf[..n]).trim().to_string()
}

#[test]
fn health_check_node_ports_and_host_ports_answer_on_the_node_addresses() {
    require_root();
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let lab = Lab::up("cth", dir.path());
    let outside = lab.outside();
    let (node1, node2) = (Ipv4Addr::new(198, 18, 0, 1), Ipv4Addr::new(198, 18, 0, 2));
    let (h1, h2, published, udp) = outside.enter(move || {
        let u = UdpSocket::bind("0.0.0.0:0").unwrap();
        u.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        u.connect(SocketAddrV4::new(node2, 8089)).unwrap();
        // The first datagram may be lost while the node learns this
        // client's MAC (UDP does not retransmit: the test does).
        let mut buf = [0u8; 16];
        let mut udp = Err(std::io::Error::from(ErrorKind::TimedOut));
        for _ in 0..3 {
            u.send(b"datagram").unwrap();
            udp = u.recv(&mut buf).map(|n| buf[..n].to_vec());
            if udp.is_ok() {
                break;
            }
        }
        (
            health(SocketAddrV4::new(node1, 32100)),
            health(SocketAddrV4::new(node2, 32100)),
            whoami(SocketAddrV4::new(node2, 8088)),
            udp,
        )
    });
    assert_eq!(h1.0, 503, "node1 has no local endpoint: {h1:?}");
    assert_eq!(h1.1["localEndpoints"], 0);
    assert_eq!(h2.0, 200, "node2 runs the backend: {h2:?}");
    assert_eq!(
        h2.1,
        serde_json::json!({
            "service": {"namespace": "ct", "name": "local"},
            "localEndpoints": 1,
            "serviceProxyHealthy": true
        })
    );
    assert_eq!(published, "ct/published", "hostPort from the underlay");
    assert_eq!(udp.ok(), Some(b"datagram".to_vec()), "UDP hostPort");
    let from_node1 = enter(&lab.netns("client"), move || {
        whoami(SocketAddrV4::new(node2, 8088))
    });
    assert_eq!(
        from_node1, "ct/published",
        "hostPort from a pod on another node"
    );
    let hairpin = enter(&lab.netns("published"), move || {
        whoami(SocketAddrV4::new(node2, 8088))
    });
    assert_eq!(hairpin, "ct/published", "the pod through its own host port");
}
