use super::*;
use serde_json::json;

fn object(kind: &str, value: serde_json::Value) -> Object {
    match kind {
        "Service" => Object::Service(serde_json::from_value(value).unwrap()),
        "EndpointSlice" => Object::EndpointSlice(serde_json::from_value(value).unwrap()),
        "Pod" => Object::Pod(serde_json::from_value(value).unwrap()),
        other => panic!("no fixture kind {other}"),
    }
}

/// The objects of the tests: a ClusterIP service with a named port, a
/// headless one with two ready endpoints and one not ready, an
/// ExternalName one, and a pod.
pub(crate) fn objects() -> Vec<Object> {
    vec![
        object(
            "Service",
            json!({"metadata": {"name": "web", "namespace": "demo"},
                   "spec": {"clusterIP": "10.96.0.20", "ports": [
                       {"name": "http", "port": 80, "protocol": "TCP"},
                       {"port": 81, "protocol": "TCP"}]}}),
        ),
        object(
            "Service",
            json!({"metadata": {"name": "db", "namespace": "demo"},
                   "spec": {"clusterIP": "None", "ports": [
                       {"name": "pg", "port": 5432, "protocol": "TCP"}]}}),
        ),
        object(
            "EndpointSlice",
            json!({"metadata": {"name": "db-abc", "namespace": "demo",
                                "labels": {"kubernetes.io/service-name": "db"}},
                   "addressType": "IPv4",
                   "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}],
                   "endpoints": [
                       {"addresses": ["10.244.1.20"], "conditions": {"ready": true}},
                       {"addresses": ["10.244.2.21"], "hostname": "db-1"},
                       {"addresses": ["10.244.2.22"], "conditions": {"ready": false}}]}),
        ),
        object(
            "Service",
            json!({"metadata": {"name": "ext", "namespace": "demo"},
                   "spec": {"type": "ExternalName", "externalName": "example.org."}}),
        ),
        object(
            "Pod",
            json!({"metadata": {"name": "web-1", "namespace": "demo"},
                   "spec": {"containers": [{"name": "c"}], "nodeName": "node1"},
                   "status": {"podIP": "10.244.1.10"}}),
        ),
    ]
}

fn zone() -> Zone {
    Zone::build("cluster.local", &objects())
}

fn a(ip: &str) -> Data {
    Data::A(ip.parse().unwrap())
}

fn srv(port: u16, target: &str) -> Data {
    Data::Srv {
        port,
        target: target.into(),
    }
}

#[test]
fn cluster_ip_services_have_their_cluster_ip() {
    assert_eq!(
        zone().lookup("web.demo.svc.cluster.local", RecordType::A),
        Lookup::Answer(vec![a("10.96.0.20")])
    );
}

#[test]
fn names_are_case_insensitive_with_or_without_the_trailing_dot() {
    let z = zone();
    for name in ["WEB.Demo.svc.cluster.LOCAL.", "web.demo.svc.cluster.local."] {
        assert_eq!(
            z.lookup(name, RecordType::A),
            Lookup::Answer(vec![a("10.96.0.20")]),
            "{name}"
        );
    }
}

#[test]
fn headless_services_have_their_ready_endpoints() {
    let z = zone();
    assert_eq!(
        z.lookup("db.demo.svc.cluster.local", RecordType::A),
        Lookup::Answer(vec![a("10.244.1.20"), a("10.244.2.21")])
    );
    assert_eq!(
        z.lookup("db-1.db.demo.svc.cluster.local", RecordType::A),
        Lookup::Answer(vec![a("10.244.2.21")])
    );
    assert_eq!(
        z.lookup("10-244-2-22.db.demo.svc.cluster.local", RecordType::A),
        Lookup::NxDomain,
        "not ready"
    );
}

#[test]
fn named_ports_have_srv_records() {
    let z = zone();
    assert_eq!(
        z.lookup("_http._tcp.web.demo.svc.cluster.local", RecordType::SRV),
        Lookup::Answer(vec![srv(80, "web.demo.svc.cluster.local")])
    );
    assert_eq!(
        z.lookup("_pg._tcp.db.demo.svc.cluster.local", RecordType::SRV),
        Lookup::Answer(vec![
            srv(5432, "10-244-1-20.db.demo.svc.cluster.local"),
            srv(5432, "db-1.db.demo.svc.cluster.local"),
        ])
    );
    assert_eq!(
        z.lookup("_http._udp.web.demo.svc.cluster.local", RecordType::SRV),
        Lookup::NxDomain
    );
    // `_tcp.web...` exists as the parent of a record: no data, not NXDOMAIN.
    assert_eq!(
        z.lookup("_tcp.web.demo.svc.cluster.local", RecordType::SRV),
        Lookup::NoData
    );
}

#[test]
fn external_names_are_cnames_for_every_type() {
    let z = zone();
    for t in [RecordType::A, RecordType::AAAA, RecordType::SRV] {
        assert_eq!(
            z.lookup("ext.demo.svc.cluster.local", t),
            Lookup::Answer(vec![Data::Cname("example.org".into())])
        );
    }
}

#[test]
fn pods_have_dashed_names() {
    assert_eq!(
        zone().lookup("10-244-1-10.demo.pod.cluster.local", RecordType::A),
        Lookup::Answer(vec![a("10.244.1.10")])
    );
}

#[test]
fn unknown_names_are_nxdomain_and_other_types_nodata() {
    let z = zone();
    assert_eq!(
        z.lookup("nosuch.demo.svc.cluster.local", RecordType::A),
        Lookup::NxDomain
    );
    assert_eq!(
        z.lookup("nosuch.cluster.local", RecordType::A),
        Lookup::NxDomain
    );
    assert_eq!(
        z.lookup("web.demo.svc.cluster.local", RecordType::AAAA),
        Lookup::NoData
    );
    assert_eq!(
        z.lookup("web.demo.svc.cluster.local", RecordType::MX),
        Lookup::NoData
    );
    for interior in [
        "demo.svc.cluster.local",
        "svc.cluster.local",
        "cluster.local",
    ] {
        assert_eq!(
            z.lookup(interior, RecordType::A),
            Lookup::NoData,
            "{interior}"
        );
    }
}

#[test]
fn names_outside_the_domain_are_out_of_zone() {
    let z = zone();
    assert_eq!(z.lookup("example.org", RecordType::A), Lookup::OutOfZone);
    assert_eq!(z.lookup("xcluster.local", RecordType::A), Lookup::OutOfZone);
    assert_eq!(z.lookup(".", RecordType::A), Lookup::OutOfZone);
}

#[test]
fn the_shared_zone_swaps() {
    let shared = SharedZone::new(Zone::empty("cluster.local"));
    let old = shared.current();
    shared.replace(zone());
    assert_eq!(
        old.lookup("web.demo.svc.cluster.local", RecordType::A),
        Lookup::NxDomain
    );
    assert!(matches!(
        shared
            .current()
            .lookup("web.demo.svc.cluster.local", RecordType::A),
        Lookup::Answer(_)
    ));
}

fn ptr(name: &str) -> Data {
    Data::Ptr(name.into())
}

#[test]
fn addresses_have_reverse_names() {
    let z = zone();
    let reverse = |name: &str| z.lookup(name, RecordType::PTR);
    assert_eq!(
        reverse("20.0.96.10.in-addr.arpa."),
        Lookup::Answer(vec![ptr("web.demo.svc.cluster.local")])
    );
    assert_eq!(
        reverse("21.2.244.10.in-addr.arpa"),
        Lookup::Answer(vec![ptr("db-1.db.demo.svc.cluster.local")])
    );
    assert_eq!(
        reverse("20.1.244.10.in-addr.arpa"),
        Lookup::Answer(vec![ptr("10-244-1-20.db.demo.svc.cluster.local")])
    );
    assert_eq!(
        reverse("10.1.244.10.in-addr.arpa"),
        Lookup::Answer(vec![ptr("10-244-1-10.demo.pod.cluster.local")])
    );
    // Unknown addresses are not the zone's: upstream, or refused.
    assert_eq!(reverse("99.1.244.10.in-addr.arpa"), Lookup::OutOfZone);
    assert_eq!(reverse("in-addr.arpa"), Lookup::OutOfZone);
    assert_eq!(
        z.lookup("20.0.96.10.in-addr.arpa", RecordType::A),
        Lookup::NoData
    );
}

#[test]
fn an_endpoints_reverse_name_wins_over_its_pods() {
    let mut objects = objects();
    objects.push(object(
        "Pod",
        json!({"metadata": {"name": "db-1", "namespace": "demo"},
               "spec": {"containers": [{"name": "c"}], "nodeName": "node2"},
               "status": {"podIP": "10.244.2.21"}}),
    ));
    for objects in [objects.clone(), objects.into_iter().rev().collect()] {
        let z = Zone::build("cluster.local", &objects);
        assert_eq!(
            z.lookup("21.2.244.10.in-addr.arpa", RecordType::PTR),
            Lookup::Answer(vec![ptr("db-1.db.demo.svc.cluster.local")])
        );
    }
}

#[test]
fn the_apex_has_a_soa() {
    let z = zone();
    assert_eq!(
        z.lookup("cluster.local.", RecordType::SOA),
        Lookup::Answer(vec![Data::Soa])
    );
    assert_eq!(z.lookup("cluster.local", RecordType::A), Lookup::NoData);
    assert_eq!(
        z.lookup("svc.cluster.local", RecordType::SOA),
        Lookup::NoData
    );
}
