use super::*;
use crate::dns::zone::tests::objects;
use hickory_proto::rr::RecordType;

fn zone() -> Zone {
    Zone::build("cluster.local", &objects())
}

fn query(name: &str, qtype: RecordType, edns: Option<u16>) -> Vec<u8> {
    let mut m = Message::query();
    m.metadata.id = 0x1234;
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    if let Some(size) = edns {
        let mut e = Edns::new();
        e.set_max_payload(size);
        m.set_edns(e);
    }
    m.to_vec().unwrap()
}

fn ask(zone: &Zone, bytes: &[u8], transport: Transport, forward: bool) -> (Message, Counters) {
    let counters = Counters::default();
    let reply = match handle(zone, bytes, transport, forward, &counters) {
        Outcome::Reply(r) => Message::from_vec(&r).unwrap(),
        other => panic!("expected a reply, got {other:?}"),
    };
    (reply, counters)
}

fn udp(name: &str, qtype: RecordType) -> (Message, Counters) {
    ask(&zone(), &query(name, qtype, None), Transport::Udp, false)
}

#[test]
fn a_queries_are_answered_with_the_question_name() {
    let (reply, counters) = udp("Web.demo.svc.cluster.local.", RecordType::A);
    assert_eq!(reply.metadata.id, 0x1234);
    assert_eq!(reply.metadata.message_type, MessageType::Response);
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
    assert!(reply.metadata.authoritative && reply.metadata.recursion_desired);
    assert_eq!(reply.queries.len(), 1);
    assert_eq!(reply.answers.len(), 1);
    let answer = &reply.answers[0];
    assert_eq!(answer.name.to_ascii(), "Web.demo.svc.cluster.local.");
    assert_eq!(answer.ttl, TTL);
    assert_eq!(answer.data, RData::A(A("10.96.0.20".parse().unwrap())));
    let stats = counters.stats();
    assert_eq!((stats.queries, stats.noerror), (1, 1));
}

#[test]
fn srv_answers_carry_the_targets_addresses() {
    let (reply, _) = udp("_pg._tcp.db.demo.svc.cluster.local.", RecordType::SRV);
    assert_eq!(reply.answers.len(), 2);
    let RData::SRV(srv) = &reply.answers[1].data else {
        panic!("{:?}", reply.answers[1]);
    };
    assert_eq!(srv.port, 5432);
    assert_eq!(srv.target.to_ascii(), "db-1.db.demo.svc.cluster.local.");
    assert_eq!(reply.additionals.len(), 2);
}

#[test]
fn external_names_answer_a_cname() {
    let (reply, _) = udp("ext.demo.svc.cluster.local.", RecordType::A);
    assert_eq!(
        reply.answers[0].data,
        RData::CNAME(CNAME(Name::from_ascii("example.org.").unwrap()))
    );
}

#[test]
fn nxdomain_nodata_and_refused() {
    let (reply, counters) = udp("nosuch.demo.svc.cluster.local.", RecordType::A);
    assert_eq!(reply.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(counters.stats().nxdomain, 1);
    let (reply, counters) = udp("web.demo.svc.cluster.local.", RecordType::AAAA);
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
    assert!(reply.answers.is_empty());
    assert_eq!(counters.stats().nodata, 1);
    let (reply, counters) = udp("example.org.", RecordType::A);
    assert_eq!(reply.metadata.response_code, ResponseCode::Refused);
    assert_eq!(counters.stats().refused, 1);
}

#[test]
fn outside_names_are_forwarded_when_an_upstream_is_set() {
    let counters = Counters::default();
    let q = query("example.org.", RecordType::A, None);
    assert_eq!(
        handle(&zone(), &q, Transport::Udp, true, &counters),
        Outcome::Forward
    );
    assert_eq!(counters.stats().forwarded, 1);
}

#[test]
fn garbage_is_formerr_or_dropped_and_counted() {
    let z = zone();
    let counters = Counters::default();
    // Shorter than a header: nobody to answer.
    for bytes in [&[][..], &[0x12][..], &[0; 11][..]] {
        assert_eq!(
            handle(&z, bytes, Transport::Udp, false, &counters),
            Outcome::Drop
        );
    }
    assert_eq!(counters.stats().dropped, 3);
    // A header announcing a question that is not there: FORMERR.
    let full = query("web.demo.svc.cluster.local.", RecordType::A, None);
    for cut in 12..full.len() {
        let (reply, c) = ask(&z, &full[..cut], Transport::Udp, false);
        assert_eq!(reply.metadata.response_code, ResponseCode::FormErr, "{cut}");
        assert_eq!(reply.metadata.id, 0x1234);
        assert_eq!(c.stats().formerr, 1);
    }
    // Random bytes never panic.
    let mut x: u32 = 7;
    for len in 0..300 {
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                x.to_be_bytes()[1]
            })
            .collect();
        let _ = handle(&z, &bytes, Transport::Udp, false, &counters);
    }
}

#[test]
fn responses_and_two_questions_are_not_answered_as_queries() {
    let z = zone();
    let mut m = Message::response(7, OpCode::Query);
    m.add_query(Query::query(Name::from_ascii("a.").unwrap(), RecordType::A));
    let counters = Counters::default();
    assert_eq!(
        handle(&z, &m.to_vec().unwrap(), Transport::Udp, false, &counters),
        Outcome::Drop
    );
    let mut m = Message::query();
    m.add_query(Query::query(Name::from_ascii("a.").unwrap(), RecordType::A));
    m.add_query(Query::query(Name::from_ascii("b.").unwrap(), RecordType::A));
    let (reply, _) = ask(&z, &m.to_vec().unwrap(), Transport::Udp, false);
    assert_eq!(reply.metadata.response_code, ResponseCode::FormErr);
}

/// A headless service with enough endpoints that its A answer passes 512
/// bytes.
fn big_zone() -> Zone {
    let endpoints: Vec<serde_json::Value> = (1..=60)
        .map(|i| serde_json::json!({"addresses": [format!("10.244.1.{i}")]}))
        .collect();
    let objects = vec![
        sources::Object::Service(
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "big", "namespace": "demo"},
                "spec": {"clusterIP": "None"}}))
            .unwrap(),
        ),
        sources::Object::EndpointSlice(
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "big-1", "namespace": "demo",
                             "labels": {"kubernetes.io/service-name": "big"}},
                "addressType": "IPv4", "endpoints": endpoints}))
            .unwrap(),
        ),
    ];
    Zone::build("cluster.local", &objects)
}

#[test]
fn udp_answers_over_512_bytes_without_edns_are_truncated() {
    let z = big_zone();
    let name = "big.demo.svc.cluster.local.";
    let (reply, counters) = ask(&z, &query(name, RecordType::A, None), Transport::Udp, false);
    assert!(reply.metadata.truncation);
    assert!(reply.answers.is_empty());
    assert_eq!(counters.stats().truncated, 1);
    let (reply, _) = ask(
        &z,
        &query(name, RecordType::A, Some(1232)),
        Transport::Udp,
        false,
    );
    assert!(!reply.metadata.truncation);
    assert_eq!(reply.answers.len(), 60);
    assert!(reply.edns.is_some());
    let (reply, _) = ask(&z, &query(name, RecordType::A, None), Transport::Tcp, false);
    assert!(!reply.metadata.truncation);
    assert_eq!(reply.answers.len(), 60);
}

/// A server of the test zone on an ephemeral loopback port: UDP port 0
/// bound first, then TCP on the same number (another if it is taken).
fn on_loopback(clients: Clients) -> (DnsServer, SocketAddrV4) {
    let shared = Arc::new(SharedZone::new(zone()));
    (0..20)
        .find_map(|_| {
            let probe = UdpSocket::bind("127.0.0.1:0").ok()?;
            let Ok(SocketAddr::V4(addr)) = probe.local_addr() else {
                return None;
            };
            drop(probe);
            DnsServer::start(addr, shared.clone(), None, clients.clone())
                .ok()
                .map(|s| (s, addr))
        })
        .expect("a free port on 127.0.0.1")
}

#[test]
fn the_server_answers_on_udp_and_tcp() {
    let (server, addr) = on_loopback(Clients::new(vec!["127.0.0.0/8".parse().unwrap()]));
    let q = query("web.demo.svc.cluster.local.", RecordType::A, None);
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    client.send_to(&q, addr).unwrap();
    let mut buf = [0u8; 512];
    let n = client.recv(&mut buf).unwrap();
    let reply = Message::from_vec(&buf[..n]).unwrap();
    assert_eq!(reply.answers.len(), 1);

    let mut tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let len = u16::try_from(q.len()).unwrap().to_be_bytes();
    tcp.write_all(&[&len[..], &q].concat()).unwrap();
    let mut len = [0u8; 2];
    tcp.read_exact(&mut len).unwrap();
    let mut body = vec![0u8; usize::from(u16::from_be_bytes(len))];
    tcp.read_exact(&mut body).unwrap();
    assert_eq!(Message::from_vec(&body).unwrap().answers.len(), 1);
    assert_eq!(server.stats().queries, 2);
}

#[test]
fn negative_answers_carry_the_zones_soa() {
    for (name, qtype, code) in [
        (
            "nosuch.demo.svc.cluster.local.",
            RecordType::A,
            ResponseCode::NXDomain,
        ),
        (
            "web.demo.svc.cluster.local.",
            RecordType::AAAA,
            ResponseCode::NoError,
        ),
    ] {
        let (reply, _) = udp(name, qtype);
        assert_eq!(reply.metadata.response_code, code, "{name}");
        assert!(reply.answers.is_empty(), "{name}");
        assert_eq!(reply.authorities.len(), 1, "{name}");
        let authority = &reply.authorities[0];
        assert_eq!(authority.name.to_ascii(), "cluster.local.");
        let RData::SOA(soa) = &authority.data else {
            panic!("{authority:?}");
        };
        assert_eq!(soa.mname.to_ascii(), "ns.dns.cluster.local.");
        assert_eq!(soa.minimum, TTL);
    }
    let (reply, _) = udp("cluster.local.", RecordType::SOA);
    assert!(matches!(reply.answers[0].data, RData::SOA(_)), "{reply:?}");
}

#[test]
fn reverse_lookups_are_answered_for_known_addresses() {
    let (reply, _) = udp("20.0.96.10.in-addr.arpa.", RecordType::PTR);
    assert_eq!(
        reply.answers[0].data,
        RData::PTR(PTR(Name::from_ascii("web.demo.svc.cluster.local.").unwrap()))
    );
    let (reply, counters) = udp("99.0.96.10.in-addr.arpa.", RecordType::PTR);
    assert_eq!(reply.metadata.response_code, ResponseCode::Refused);
    assert_eq!(counters.stats().refused, 1);
}

#[test]
fn addresses_that_are_not_clients_get_no_answer() {
    let (server, addr) = on_loopback(Clients::new(vec!["10.244.0.0/16".parse().unwrap()]));
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let q = query("web.demo.svc.cluster.local.", RecordType::A, None);
    client.send_to(&q, addr).unwrap();
    let mut buf = [0u8; 512];
    assert!(client.recv(&mut buf).is_err(), "answered a non-client");
    let mut tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    // The connection is closed without an answer.
    let mut byte = [0u8; 1];
    assert_eq!(tcp.read(&mut byte).unwrap_or(0), 0);
    let stats = server.stats();
    assert_eq!((stats.outside, stats.queries), (2, 0), "{stats:?}");
}
