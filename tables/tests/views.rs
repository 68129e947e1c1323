//! The read-only views the local API builds on: prefixes of an LPM, remote
//! routes, which backend set a frontend uses, and the names a compiled pod
//! policy carries.

use std::net::Ipv4Addr;

use tables::lpm::Lpm;
use tables::model::{
    Cidr, Endpoint, LabelSelector, NetworkPolicy, Pod, PolicyPort, PolicyRule, PortRef, Proto,
    Service, ServicePort, ServiceType, TrafficPolicy,
};
use tables::policy::PolicyTable;
use tables::route::{RouteTable, Vtep};
use tables::service::{ServiceEntry, ServiceTable};

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn cidr(s: &str) -> Cidr {
    s.parse().unwrap()
}

#[test]
fn lpm_prefixes_in_address_order() {
    let mut lpm = Lpm::new();
    lpm.insert(cidr("10.1.0.0/16"), 2u16);
    lpm.insert(cidr("10.0.0.0/8"), 1);
    lpm.insert(cidr("10.1.2.0/24"), 3);
    lpm.insert(cidr("9.0.0.0/8"), 0);
    assert_eq!(
        lpm.prefixes(),
        vec![
            (cidr("9.0.0.0/8"), 0),
            (cidr("10.0.0.0/8"), 1),
            (cidr("10.1.0.0/16"), 2),
            (cidr("10.1.2.0/24"), 3)
        ]
    );
    lpm.remove(cidr("10.1.0.0/16"));
    assert_eq!(lpm.prefixes().len(), 3);
}

#[test]
fn remote_routes_name_their_vtep() {
    let mut t = RouteTable::new(&[u32::from(ip("198.18.0.1"))], cidr("10.244.1.0/24"));
    for (n, node) in ["node3", "node2"].iter().enumerate() {
        let vtep = Vtep {
            node: node.to_string(),
            ip: u32::from(ip(&format!("198.18.0.{}", 3 - n))),
            vtep_mac: [2; 6],
            underlay_mac: [3; 6],
        };
        let pod_cidr = cidr(&format!("10.244.{}.0/24", 3 - n));
        assert!(t.add_node(vtep, &[pod_cidr]));
    }
    t.set_neighbour(u32::from(ip("198.18.0.100")), [4; 6]);
    let routes: Vec<(String, &str)> = t
        .remote_routes()
        .into_iter()
        .map(|(c, v)| (c.to_string(), v.node.as_str()))
        .collect();
    assert_eq!(
        routes,
        [
            ("10.244.2.0/24".to_string(), "node2"),
            ("10.244.3.0/24".to_string(), "node3")
        ]
    );
    assert_eq!(t.node_ips(), [u32::from(ip("198.18.0.1"))]);
    assert_eq!(t.neighbours(), [(u32::from(ip("198.18.0.100")), [4; 6])]);
}

fn web(internal: TrafficPolicy, external: TrafficPolicy) -> ServiceEntry {
    let ep = |addr: &str, node: &str| Endpoint {
        ip: ip(addr),
        node: node.into(),
        ready: true,
        serving: true,
        terminating: false,
        ports: vec![("http".into(), 8080)],
    };
    ServiceEntry {
        service: Service {
            namespace: "demo".into(),
            name: "web".into(),
            kind: ServiceType::NodePort,
            cluster_ips: vec![ip("10.96.0.20")],
            ports: vec![ServicePort {
                name: "http".into(),
                proto: Proto::Tcp,
                port: 80,
                node_port: Some(30080),
            }],
            external_ips: vec![],
            load_balancer_ips: vec![],
            affinity_timeout_s: None,
            external_traffic_policy: external,
            internal_traffic_policy: internal,
            health_check_node_port: None,
        },
        endpoints: vec![ep("10.244.1.5", "node1"), ep("10.244.2.5", "node2")],
    }
}

#[test]
fn frontends_say_which_backend_set_they_use() {
    let node_ip = ip("198.18.0.1");
    for (internal, external) in [
        (TrafficPolicy::Cluster, TrafficPolicy::Local),
        (TrafficPolicy::Local, TrafficPolicy::Cluster),
    ] {
        let t = ServiceTable::build(&[web(internal, external)], "node1", &[node_ip], None);
        let cip = t.lookup(u32::from(ip("10.96.0.20")), 80, 6).unwrap();
        let np = t.lookup(u32::from(node_ip), 30080, 6).unwrap();
        assert_eq!(t.uses_local_backends(cip), internal == TrafficPolicy::Local);
        assert_eq!(t.uses_local_backends(np), external == TrafficPolicy::Local);
        let (all, local) = t.backend_sets(cip.service, cip.port_index).unwrap();
        assert_eq!((all.backends().len(), local.backends().len()), (2, 1));
    }
    let t = ServiceTable::build(&[], "node1", &[node_ip], None);
    assert!(t.backend_sets(0, 0).is_none());
}

#[test]
fn pod_policies_carry_pod_and_policy_names() {
    let pod = |name: &str, addr: &str, app: &str| Pod {
        namespace: "demo".into(),
        name: name.into(),
        ip: ip(addr),
        labels: [("app".to_string(), app.to_string())].into(),
        ports: vec![],
        node: "node1".into(),
        host_ports: Vec::new(),
    };
    let pods = vec![pod("db", "10.0.0.2", "db"), pod("web", "10.0.0.1", "web")];
    let policy = |name: &str| NetworkPolicy {
        namespace: "demo".into(),
        name: name.into(),
        pod_selector: LabelSelector {
            match_labels: [("app".to_string(), "db".to_string())].into(),
            ..LabelSelector::default()
        },
        ingress_isolation: true,
        egress_isolation: false,
        ingress: vec![PolicyRule {
            peers: vec![],
            ports: vec![PolicyPort {
                proto: Proto::Tcp,
                port: Some(PortRef::Number(5432)),
                end_port: None,
            }],
        }],
        egress: vec![],
    };
    let policies = vec![policy("a"), policy("b")];
    let local: Vec<&Pod> = pods.iter().collect();
    let (table, warnings) = PolicyTable::compile(&local, &pods, &[], &policies);
    assert!(warnings.is_empty());
    let db = table.pod(u32::from(ip("10.0.0.2"))).unwrap();
    assert_eq!(db.pod, "demo/db");
    assert_eq!(db.policies, ["demo/a", "demo/b"]);
    let set = db.ingress.as_deref().unwrap();
    let peers = set.peers();
    assert_eq!(peers.len(), 1);
    assert_eq!(peers[0].0, cidr("0.0.0.0/0"));
    assert_eq!(
        peers[0].1.ranges(Proto::Tcp).unwrap().ranges(),
        [(5432, 5432)]
    );
    let web = table.pod(u32::from(ip("10.0.0.1"))).unwrap();
    assert_eq!((web.pod.as_str(), web.policies.len()), ("demo/web", 0));
    assert_eq!(table.pods().count(), 2);
}
