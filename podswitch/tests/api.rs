//! The local API and the inspection verbs, end to end without root: the
//! example cluster's node1 tables and a conntrack table with a few
//! connections behind `api::Server` on a temporary socket; every route's
//! JSON checked through the typed client, then every verb of the built
//! `podswitch` binary run against the same socket.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

use agent::server::{monotonic_ms, Server, State};
use api::views::{BackendSetName, ConntrackQuery, FrontendType};
use api::{self, AgentStatus, ApiError, SourceKind};
use dataplane::counters::Counters;
use fixtures::example::{self, addrs};
use tables::conntrack::Conntrack;
use tables::flow::FlowKey;
use tables::snapshot::Publisher;

use tables::proto::tcp_flags::{ACK, SYN};

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn key(src: &str, sport: u16, dst: &str, dport: u16, proto: u8) -> FlowKey {
    FlowKey {
        src: u32::from(ip(src)),
        dst: u32::from(ip(dst)),
        sport,
        dport,
        proto,
    }
}

/// A temporary directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("podswitch-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Four connections: client to the web service (translated to web-2),
/// web-1 to the database, a DNS query to a translated UDP service, a ping.
fn conntrack() -> Arc<Conntrack> {
    let ct = Arc::new(Conntrack::new(256));
    let now = monotonic_ms();
    let to_web = key(addrs::CLIENT, 40000, addrs::WEB_VIP, 80, 6);
    let from_web2 = key(addrs::WEB_2, 8080, addrs::CLIENT, 40000, 6);
    ct.insert(to_web, from_web2, ACK, 0, 1, now).unwrap();
    let to_db = key(addrs::WEB_1, 41000, addrs::DB, 5432, 6);
    ct.insert(to_db, to_db.reversed(), SYN, 0, 1, now).unwrap();
    let dns = key(addrs::CLIENT, 5353, "10.96.0.10", 53, 17);
    let from_dns = key(addrs::WEB_3, 53, addrs::CLIENT, 5353, 17);
    ct.insert(dns, from_dns, 0, 0, 1, now).unwrap();
    let ping = key(addrs::CLIENT, 7, addrs::WEB_2, 0, 1);
    ct.insert(ping, ping.reversed(), 0, 0, 1, now).unwrap();
    ct
}

fn state() -> State {
    let ports = [
        "eth0",
        "psw-host",
        "veth-web-1",
        "veth-client",
        "veth-db",
        "veth-intruder",
    ];
    State {
        counters: vec![Arc::new(Counters::new(ports.len()))],
        ports: (0u16..).zip(ports.iter().map(|p| p.to_string())).collect(),
        status: Arc::new(Mutex::new(AgentStatus {
            node: "node1".into(),
            source: SourceKind::Static,
            objects: [("Pod".to_string(), 6), ("Service".to_string(), 2)].into(),
            ..AgentStatus::default()
        })),
        publisher: Some(Arc::new(Publisher::new(example::snapshot("node1")))),
        conntrack: Some(conntrack()),
        ..State::default()
    }
}

fn podswitch(socket: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_podswitch"))
        .args(&args[..1])
        .arg("--socket")
        .arg(socket)
        .args(&args[1..])
        .output()
        .expect("run podswitch")
}

/// Runs a verb that must succeed; its stdout.
fn verb(socket: &Path, args: &[&str]) -> String {
    let out = podswitch(socket, args);
    assert!(
        out.status.success(),
        "podswitch {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The data rows of a table whose first cell is `first`.
fn rows<'a>(table: &'a str, first: &str) -> Vec<Vec<&'a str>> {
    table
        .lines()
        .skip(1)
        .map(|l| {
            l.split("   ")
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .collect::<Vec<_>>()
        })
        .filter(|cells| cells.first() == Some(&first))
        .collect()
}

#[test]
fn every_route_and_verb_against_a_served_snapshot() {
    let dir = TempDir::new("api-test");
    let socket = dir.0.join("run").join("agent.sock");
    let state = state();
    let status = state.status.clone();
    let _server = Server::start(&socket, Arc::new(Mutex::new(state))).unwrap();

    // Readiness follows the source's sync.
    assert!(!api::ready(&socket).unwrap());
    let out = verb(&socket, &["status"]);
    assert_eq!(rows(&out, "node1")[0][..4], ["node1", "static", "no", "no"]);
    status.lock().unwrap().mark_synced();
    assert!(api::ready(&socket).unwrap());

    // /status
    let s = api::status(&socket).unwrap();
    assert_eq!((s.node.as_str(), s.source), ("node1", SourceKind::Static));
    assert!(s.synced && s.ready);
    assert_eq!((s.generation, s.workers), (1, 1));
    assert_eq!(s.ports[4], "veth-db");
    assert_eq!(s.objects["Pod"], 6);
    assert!(s.last_sync_unix_ms.is_some());

    // /services
    let v = api::services(&socket).unwrap();
    let web = v.services.iter().find(|s| s.name == "web").unwrap();
    let cip = web
        .frontends
        .iter()
        .find(|f| f.kind == FrontendType::ClusterIp)
        .unwrap();
    assert_eq!(
        (cip.ip, cip.port, cip.proto.as_str()),
        (ip(addrs::WEB_VIP), 80, "TCP")
    );
    assert_eq!(cip.backend_set, BackendSetName::All);
    let mut backends: Vec<(Ipv4Addr, Option<&str>, bool)> = cip
        .backends
        .iter()
        .map(|b| (b.ip, b.node.as_deref(), b.local))
        .collect();
    backends.sort();
    assert_eq!(
        backends,
        [
            (ip(addrs::WEB_1), Some("node1"), true),
            (ip(addrs::WEB_2), Some("node2"), false),
            (ip(addrs::WEB_3), Some("node2"), false)
        ]
    );
    assert!(web
        .frontends
        .iter()
        .any(|f| f.kind == FrontendType::NodePort && f.port == addrs::WEB_NODE_PORT && f.snat));
    let db = v.services.iter().find(|s| s.name == "db").unwrap();
    assert_eq!(db.frontends[0].affinity_timeout_s, Some(10800));

    // /policies: the database is isolated by one policy and open to the
    // web pods on 5432 only.
    let p = api::policies(&socket).unwrap();
    let db = p.pods.iter().find(|p| p.ip == ip(addrs::DB)).unwrap();
    assert_eq!(db.pod.as_deref(), Some("demo/db"));
    assert_eq!(db.policies, ["demo/db-from-web"]);
    assert_eq!(db.port.as_ref().unwrap().name.as_deref(), Some("veth-db"));
    assert!(db.ingress.isolated && !db.egress.isolated);
    assert_eq!(db.ingress.allowed.len(), 1);
    let allowed = &db.ingress.allowed[0];
    assert_eq!(allowed.ports.tcp, ["5432"]);
    assert!(!allowed.ports.all_protocols && allowed.ports.udp.is_empty());
    assert_eq!(allowed.peers, ["10.244.1.10/32", "10.244.2.10/31"]);
    let intruder = p.pods.iter().find(|p| p.ip == ip(addrs::INTRUDER)).unwrap();
    assert!(!intruder.ingress.isolated && intruder.policies.is_empty());

    // /routes
    let r = api::routes(&socket).unwrap();
    assert_eq!(r.node_ips, [ip("198.18.0.1")]);
    let pods: Vec<(Ipv4Addr, u16)> = r.local_pods.iter().map(|p| (p.ip, p.port.id)).collect();
    assert_eq!(
        pods,
        [
            (ip(addrs::WEB_1), 2),
            (ip(addrs::CLIENT), 3),
            (ip(addrs::DB), 4),
            (ip(addrs::INTRUDER), 5)
        ]
    );
    assert_eq!(r.local_pods[2].port.name.as_deref(), Some("veth-db"));
    assert_eq!(r.local_pods[2].mac, "02:00:0a:f4:01:0c");
    assert_eq!(r.remote.len(), 1);
    assert_eq!(
        (
            r.remote[0].cidr.as_str(),
            r.remote[0].node.as_str(),
            r.remote[0].vtep_ip
        ),
        ("10.244.2.0/24", "node2", ip("198.18.0.2"))
    );
    assert_eq!(
        r.host_port.as_ref().unwrap().name.as_deref(),
        Some("psw-host")
    );

    // /conntrack and its filters
    let all = api::conntrack(&socket, &ConntrackQuery::default()).unwrap();
    assert_eq!((all.total, all.matched, all.entries.len()), (4, 4, 4));
    assert!(all.entries.iter().all(|e| e.expires_in_ms > 0));
    let query = |q: ConntrackQuery| api::conntrack(&socket, &q).unwrap();
    let to_web2 = query(ConntrackQuery {
        dst: Some(ip(addrs::WEB_2)),
        proto: Some(6),
        ..ConntrackQuery::default()
    });
    assert_eq!(to_web2.matched, 1, "the backend matches after DNAT");
    assert_eq!(to_web2.entries[0].orig.dst, ip(addrs::WEB_VIP));
    assert_eq!(to_web2.entries[0].dnat.as_deref(), Some("10.244.2.10:8080"));
    assert_eq!(to_web2.entries[0].state, "ESTABLISHED");
    let from_client = query(ConntrackQuery {
        src: Some(ip(addrs::CLIENT)),
        limit: 1,
        ..ConntrackQuery::default()
    });
    assert_eq!((from_client.matched, from_client.entries.len()), (3, 1));
    assert_eq!(
        from_client.entries[0].proto, "ICMP",
        "sorted by protocol first"
    );
    let dns = query(ConntrackQuery {
        proto: Some(17),
        port: Some(53),
        ..ConntrackQuery::default()
    });
    assert_eq!(dns.matched, 1);
    assert_eq!(dns.entries[0].state, "UNREPLIED");

    // Bad requests name what was wrong.
    match api::get::<serde_json::Value>(&socket, "/conntrack?proto=gre") {
        Err(ApiError::Refused {
            status: 400,
            message,
            ..
        }) => assert!(message.contains("proto=\"gre\""), "{message}"),
        other => panic!("{other:?}"),
    }
    match api::get::<serde_json::Value>(&socket, "/pods") {
        Err(e @ ApiError::Refused { status: 404, .. }) => {
            assert!(e.to_string().contains("no such endpoint: /pods"), "{e}")
        }
        other => panic!("{other:?}"),
    }

    // The CLI, table output: one row per item.
    let out = verb(&socket, &["status"]);
    assert!(out.starts_with("NODE "), "{out}");
    assert_eq!(
        rows(&out, "node1")[0][..4],
        ["node1", "static", "yes", "yes"]
    );
    assert_eq!(rows(&out, "Pod")[0], ["Pod", "6"]);

    let out = verb(&socket, &["services"]);
    assert!(out.starts_with("NAMESPACE "), "{out}");
    let web = rows(&out, "demo");
    assert_eq!(web.len(), 4, "{out}");
    let vip = web.iter().find(|r| r[3] == addrs::WEB_VIP).unwrap();
    assert_eq!(
        vip[..6],
        [
            "demo",
            "web",
            "ClusterIP",
            addrs::WEB_VIP,
            "80/TCP",
            "Cluster"
        ]
    );
    assert!(vip[7].contains("10.244.1.10:8080*"), "{vip:?}");

    let out = verb(&socket, &["policies"]);
    assert!(out.starts_with("POD "), "{out}");
    let db = &rows(&out, "demo/db")[0];
    assert_eq!(
        db[..4],
        ["demo/db", addrs::DB, "4 (veth-db)", "demo/db-from-web"]
    );
    assert_eq!(db[4], "from 10.244.1.10/32,10.244.2.10/31 on TCP 5432");
    assert_eq!(db[5], "open");
    assert_eq!(rows(&out, "other/intruder")[0][3..], ["-", "open", "open"]);

    let out = verb(&socket, &["routes"]);
    assert!(out.starts_with("DESTINATION "), "{out}");
    let db = &rows(&out, "10.244.1.12/32")[0];
    assert_eq!(
        db[..5],
        ["10.244.1.12/32", "pod", "node1", "demo/db", "4 (veth-db)"]
    );
    let remote = &rows(&out, "10.244.2.0/24")[0];
    assert_eq!(
        remote[..5],
        [
            "10.244.2.0/24",
            "remote",
            "node2",
            "vtep 198.18.0.2",
            "0 (eth0)"
        ]
    );
    assert_eq!(rows(&out, "198.18.0.1/32")[0][1], "node");

    let out = verb(&socket, &["conntrack"]);
    assert!(out.starts_with("PROTO "), "{out}");
    assert_eq!(out.lines().count(), 5, "{out}");
    let out = verb(
        &socket,
        &["conntrack", "--dst", addrs::WEB_2, "--proto", "tcp"],
    );
    let tcp = rows(&out, "TCP");
    assert_eq!(tcp.len(), 1, "{out}");
    assert_eq!(
        tcp[0][..5],
        [
            "TCP",
            "10.244.1.11:40000",
            "10.96.0.20:80",
            "ESTABLISHED",
            "dnat 10.244.2.10:8080"
        ]
    );
    let limited = podswitch(
        &socket,
        &["conntrack", "--src", addrs::CLIENT, "--limit", "1"],
    );
    assert!(limited.status.success());
    assert_eq!(String::from_utf8_lossy(&limited.stdout).lines().count(), 2);
    assert!(String::from_utf8_lossy(&limited.stderr).contains("showing 1 of 3"));

    // JSON output decodes into the API's types.
    let json = verb(&socket, &["services", "-o", "json"]);
    let decoded: api::views::ServicesView = serde_json::from_str(&json).unwrap();
    assert_eq!(decoded, v);
    let json = verb(&socket, &["conntrack", "-o", "json", "--port", "8080"]);
    let decoded: api::views::ConntrackView = serde_json::from_str(&json).unwrap();
    assert_eq!(decoded.matched, 1);
    for verb_name in ["status", "policies", "routes", "stats"] {
        let json = verb(&socket, &[verb_name, "-o", "json"]);
        assert!(
            serde_json::from_str::<serde_json::Value>(&json).is_ok(),
            "{verb_name}"
        );
    }

    // A bad flag value is refused before anything is asked.
    let bad = podswitch(&socket, &["conntrack", "--proto", "gre"]);
    assert!(!bad.status.success());
}

#[test]
fn verbs_name_the_socket_when_no_agent_answers() {
    let dir = TempDir::new("api-none");
    let socket = dir.0.join("agent.sock");
    for verb_name in [
        "status",
        "services",
        "policies",
        "routes",
        "conntrack",
        "stats",
    ] {
        let out = podswitch(&socket, &[verb_name]);
        assert!(!out.status.success(), "{verb_name}");
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.starts_with(&format!(
                "podswitch {verb_name}: no agent is listening on {}",
                socket.display()
            )),
            "{err}"
        );
        assert!(err.contains("is `podswitch agent` running?"), "{err}");
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn a_state_without_tables_answers_503_on_table_routes() {
    let dir = TempDir::new("api-bare");
    let socket = dir.0.join("agent.sock");
    let _server = Server::start(&socket, Arc::new(Mutex::new(State::default()))).unwrap();
    assert!(api::stats(&socket).is_ok());
    assert!(!api::ready(&socket).unwrap());
    let out = podswitch(&socket, &["routes"]);
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("(HTTP 503): /routes: this agent serves no tables"),
        "{err}"
    );
}
