use std::sync::Arc;

use serde_json::json;
use tables::proto::Proto;

use super::*;
use crate::test_objects::{node_config, obj, pod, service};

fn slice(service: &str, ips: &[&str]) -> Object {
    let endpoints: Vec<_> = ips
        .iter()
        .map(|ip| json!({"addresses": [ip], "nodeName": "node2", "conditions": {"ready": true}}))
        .collect();
    obj(
        Kind::EndpointSlice,
        json!({"metadata": {"namespace": "demo", "name": format!("{service}-abc"),
                            "labels": {"kubernetes.io/service-name": service}},
               "addressType": "IPv4", "endpoints": endpoints,
               "ports": [{"name": "http", "protocol": "TCP", "port": 8080}]}),
    )
}

/// Only pods labelled app=client may reach app=db pods.
fn db_policy() -> Object {
    obj(
        Kind::NetworkPolicy,
        json!({"metadata": {"namespace": "demo", "name": "db"},
               "spec": {"podSelector": {"matchLabels": {"app": "db"}},
                        "ingress": [{"from": [{"podSelector": {"matchExpressions": [
                            {"key": "app", "operator": "In", "values": ["client"]}]}}],
                                     "ports": [{"port": 5432}]}]}}),
    )
}

fn cluster() -> Vec<Object> {
    vec![
        obj(Kind::Namespace, json!({"metadata": {"name": "demo"}})),
        obj(
            Kind::Node,
            json!({"metadata": {"name": "node2"},
                   "spec": {"podCIDR": "10.244.2.0/24"},
                   "status": {"addresses": [{"type": "InternalIP", "address": "198.18.0.2"}]}}),
        ),
        pod("db", "10.244.1.20", "node1", "db"),
        pod("client", "10.244.2.30", "node2", "client"),
        pod("other", "10.244.2.31", "node2", "other"),
        service("a", "10.96.0.1"),
        service("b", "10.96.0.2"),
        slice("a", &["10.244.2.10", "10.244.2.11"]),
        slice("b", &["10.244.2.12"]),
        db_policy(),
    ]
}

fn loaded() -> (Reconciler, Snapshot) {
    let mut r = Reconciler::new(node_config(), Vec::new());
    r.apply(SourceEvent::Replace {
        kinds: Kind::ALL.to_vec(),
        objects: cluster(),
    });
    let snap = r.build(None, &|_| [2, 0, 0, 0, 0, 2]);
    (r, snap)
}

fn vip(s: &str) -> u32 {
    u32::from(s.parse::<Ipv4Addr>().unwrap())
}

fn ip(s: &str) -> u32 {
    vip(s)
}

fn backends(snap: &Snapshot, addr: &str) -> Vec<u32> {
    snap.services
        .lookup(vip(addr), 80, Proto::Tcp.number())
        .map(|f| f.backends.backends().iter().map(|b| b.ip).collect())
        .unwrap_or_default()
}

#[test]
fn initial_sync_builds_every_table() {
    let (mut r, snap) = loaded();
    assert_eq!(backends(&snap, "10.96.0.1").len(), 2);
    assert_eq!(backends(&snap, "10.96.0.2"), vec![ip("10.244.2.12")]);
    assert!(snap.routes.remote_owner(ip("10.244.2.99")).is_some());
    let db = ip("10.244.1.20");
    assert!(snap.policy.allows_ingress(db, ip("10.244.2.30"), 6, 5432));
    assert!(!snap.policy.allows_ingress(db, ip("10.244.2.31"), 6, 5432));
    assert!(r.take_warnings().is_empty());
    // The whole-state compiler gives the same tables for the same objects.
    let (whole, _) = cluster::compile(
        &r.state(),
        &node_config(),
        &[],
        &[],
        &|_| [2, 0, 0, 0, 0, 2],
        None,
    );
    assert_eq!(whole.services.len(), snap.services.len());
    for (key, f) in whole.services.frontends() {
        let g = snap.services.lookup(key.ip, key.port, key.proto).unwrap();
        assert_eq!(f.backends, g.backends);
    }
}

#[test]
fn an_endpoint_change_rebuilds_only_its_service() {
    let (mut r, first) = loaded();
    r.apply(SourceEvent::Apply(slice(
        "a",
        &["10.244.2.10", "10.244.2.11", "10.244.2.13"],
    )));
    let next = r.build(Some(&first), &|_| [2, 0, 0, 0, 0, 2]);
    assert_eq!(backends(&next, "10.96.0.1").len(), 3);
    let b = |s: &Snapshot| {
        s.services
            .lookup(vip("10.96.0.2"), 80, Proto::Tcp.number())
            .unwrap()
            .backends
            .clone()
    };
    assert!(Arc::ptr_eq(&b(&first), &b(&next)), "service b is shared");
    assert!(Arc::ptr_eq(&first.policy, &next.policy), "policy untouched");
    assert!(Arc::ptr_eq(&first.routes, &next.routes), "routes untouched");
    assert_eq!(first.policy_epoch, next.policy_epoch);
    // The same object again changes nothing.
    r.apply(SourceEvent::Apply(slice(
        "a",
        &["10.244.2.10", "10.244.2.11", "10.244.2.13"],
    )));
    assert!(!r.pending());
}

#[test]
fn a_relabelled_pod_changes_policy_only_when_a_policy_sees_it() {
    let (mut r, first) = loaded();
    let db = ip("10.244.1.20");
    // "other" becomes a client: now allowed.
    r.apply(SourceEvent::Apply(pod(
        "other",
        "10.244.2.31",
        "node2",
        "client",
    )));
    assert!(r.pending());
    let next = r.build(Some(&first), &|_| [2, 0, 0, 0, 0, 2]);
    assert!(next.policy.allows_ingress(db, ip("10.244.2.31"), 6, 5432));
    assert_ne!(first.policy_epoch, next.policy_epoch);
    // A pod relabelled between labels no policy selects: policy shared.
    r.apply(SourceEvent::Apply(pod("x", "10.244.2.40", "node2", "web")));
    let _ = r.build(Some(&next), &|_| [0; 6]);
    let before = r.build(Some(&next), &|_| [0; 6]);
    r.apply(SourceEvent::Apply(pod("x", "10.244.2.40", "node2", "web2")));
    assert!(
        !r.pending(),
        "no policy sees app=web or app=web2 pods on node2"
    );
    let after = r.build(Some(&before), &|_| [0; 6]);
    assert!(Arc::ptr_eq(&before.policy, &after.policy));
}

#[test]
fn deletes_and_replaces_remove_what_is_gone() {
    let (mut r, first) = loaded();
    r.apply(SourceEvent::Delete(service("b", "10.96.0.2").key()));
    let next = r.build(Some(&first), &|_| [0; 6]);
    assert!(next
        .services
        .lookup(vip("10.96.0.2"), 80, Proto::Tcp.number())
        .is_none());
    // A replace without service a and the policy removes both.
    let objects: Vec<Object> = cluster()
        .into_iter()
        .filter(|o| !matches!(o.kind(), Kind::Service | Kind::NetworkPolicy))
        .collect();
    r.apply(SourceEvent::Replace {
        kinds: Kind::ALL.to_vec(),
        objects,
    });
    let last = r.build(Some(&next), &|_| [0; 6]);
    assert!(last.services.is_empty());
    assert!(last
        .policy
        .allows_ingress(ip("10.244.1.20"), ip("10.244.2.31"), 6, 5432));
    assert_eq!(r.counts()["Service"], 0);
}

#[test]
fn headless_and_external_name_services_do_not_forward() {
    let (mut r, first) = loaded();
    r.apply(SourceEvent::Apply(obj(
        Kind::Service,
        json!({"metadata": {"namespace": "demo", "name": "a"},
               "spec": {"clusterIP": "None", "ports": [{"name": "http", "protocol": "TCP", "port": 80}]}}),
    )));
    r.apply(SourceEvent::Apply(obj(
        Kind::Service,
        json!({"metadata": {"namespace": "demo", "name": "b"},
               "spec": {"type": "ExternalName", "externalName": "example.org"}}),
    )));
    let next = r.build(Some(&first), &|_| [0; 6]);
    assert!(next.services.is_empty());
}

#[test]
fn bad_objects_are_skipped_with_a_warning_naming_them() {
    let mut r = Reconciler::new(node_config(), Vec::new());
    let mut objects = cluster();
    objects.push(obj(
        Kind::Service,
        json!({"metadata": {"namespace": "demo", "name": "noproto"},
               "spec": {"clusterIP": "10.96.0.9", "ports": [{"name": "x", "port": 80}]}}),
    ));
    objects.push(obj(
        Kind::NetworkPolicy,
        json!({"metadata": {"namespace": "demo", "name": "badop"},
               "spec": {"podSelector": {"matchExpressions": [{"key": "a", "operator": "Near"}]}}}),
    ));
    objects.push(obj(
        Kind::Node,
        json!({"metadata": {"name": "node3"}, "spec": {"podCIDR": "10.244.300.0/24"},
               "status": {"addresses": [{"type": "InternalIP", "address": "198.18.0.3"}]}}),
    ));
    r.apply(SourceEvent::Replace {
        kinds: Kind::ALL.to_vec(),
        objects,
    });
    let snap = r.build(None, &|_| [0; 6]);
    let warnings = r.take_warnings().join("\n");
    assert!(
        warnings.contains("Service demo/noproto: spec.ports[0]: missing protocol"),
        "{warnings}"
    );
    assert!(
        warnings.contains("NetworkPolicy demo/badop: spec.podSelector.matchExpressions[0]: unknown operator \"Near\""),
        "{warnings}"
    );
    assert!(warnings.contains("Node node3: spec.podCIDRs"), "{warnings}");
    // Everything else applied.
    assert_eq!(backends(&snap, "10.96.0.1").len(), 2);
    assert!(snap
        .services
        .lookup(vip("10.96.0.9"), 80, Proto::Tcp.number())
        .is_none());
}

#[test]
fn publish_not_ready_addresses_and_affinity_are_honoured() {
    let (mut r, first) = loaded();
    r.apply(SourceEvent::Apply(obj(
        Kind::Service,
        json!({"metadata": {"namespace": "demo", "name": "a"},
               "spec": {"clusterIP": "10.96.0.1", "publishNotReadyAddresses": true,
                        "sessionAffinity": "ClientIP",
                        "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 60}},
                        "ports": [{"name": "http", "protocol": "TCP", "port": 80}]}}),
    )));
    r.apply(SourceEvent::Apply(obj(
        Kind::EndpointSlice,
        json!({"metadata": {"namespace": "demo", "name": "a-abc",
                            "labels": {"kubernetes.io/service-name": "a"}},
               "addressType": "IPv4",
               "endpoints": [{"addresses": ["10.244.2.10"], "conditions": {"ready": false}}],
               "ports": [{"name": "http", "protocol": "TCP", "port": 8080}]}),
    )));
    let next = r.build(Some(&first), &|_| [0; 6]);
    let f = next
        .services
        .lookup(vip("10.96.0.1"), 80, Proto::Tcp.number())
        .unwrap();
    assert_eq!(f.backends.backends().len(), 1, "not ready, but published");
    assert_eq!(f.affinity_ms, 60_000);
}

/// Fields kube-apiserver 1.20 drops (endPort, internalTrafficPolicy) are
/// tested through the manifest source.
#[test]
fn newer_fields_through_manifests_end_port_and_internal_traffic_policy() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("objects.yaml"),
        r#"
apiVersion: v1
kind: Node
metadata: {name: node1}
spec: {podCIDR: 10.244.1.0/24}
status: {addresses: [{type: InternalIP, address: 198.18.0.1}]}
---
apiVersion: v1
kind: Node
metadata: {name: node2}
spec: {podCIDR: 10.244.2.0/24}
status: {addresses: [{type: InternalIP, address: 198.18.0.2}]}
---
apiVersion: v1
kind: Pod
metadata: {namespace: demo, name: local, labels: {app: web}}
spec: {nodeName: node1, containers: [{name: c, image: c}]}
status: {podIP: 10.244.1.10}
---
apiVersion: v1
kind: Pod
metadata: {namespace: demo, name: remote, labels: {app: web}}
spec: {nodeName: node2, containers: [{name: c, image: c}]}
status: {podIP: 10.244.2.10}
---
apiVersion: v1
kind: Service
metadata: {namespace: demo, name: web}
spec:
  clusterIP: 10.96.0.20
  internalTrafficPolicy: Local
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {namespace: demo, name: range}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress: [{ports: [{protocol: TCP, port: 8000, endPort: 8100}]}]
"#,
    )
    .unwrap();
    let loaded = sources::manifest::load_dir(dir.path(), "10.96.0.0/12".parse().unwrap());
    let mut r = Reconciler::new(node_config(), Vec::new());
    r.apply(SourceEvent::Replace {
        kinds: Kind::ALL.to_vec(),
        objects: loaded.objects,
    });
    let snap = r.build(None, &|_| [0; 6]);
    assert_eq!(
        backends(&snap, "10.96.0.20"),
        vec![ip("10.244.1.10")],
        "internalTrafficPolicy Local: only this node's endpoint"
    );
    let web = ip("10.244.1.10");
    let peer = ip("10.244.2.10");
    assert!(snap.policy.allows_ingress(web, peer, 6, 8000));
    assert!(snap.policy.allows_ingress(web, peer, 6, 8100));
    assert!(!snap.policy.allows_ingress(web, peer, 6, 8101));
    assert!(!snap.policy.allows_ingress(web, peer, 6, 7999));
}

#[test]
fn a_pod_change_recompiles_only_the_local_pods_it_can_affect() {
    let mut r = Reconciler::new(node_config(), Vec::new());
    let mut objects = cluster();
    objects.push(pod("cache", "10.244.1.30", "node1", "cache"));
    objects.push(obj(
        Kind::NetworkPolicy,
        json!({"metadata": {"namespace": "demo", "name": "cache"},
               "spec": {"podSelector": {"matchLabels": {"app": "cache"}},
                        "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "web"}}}]}]}}),
    ));
    r.apply(SourceEvent::Replace {
        kinds: Kind::ALL.to_vec(),
        objects,
    });
    let first = r.build(None, &|_| [0; 6]);
    let (db, cache) = (ip("10.244.1.20"), ip("10.244.1.30"));
    let ingress = |s: &Snapshot, pod: u32| s.policy.pod(pod).unwrap().ingress.clone().unwrap();
    // "other" becomes a client: db's policy sees it, cache's does not.
    r.apply(SourceEvent::Apply(pod(
        "other",
        "10.244.2.31",
        "node2",
        "client",
    )));
    let next = r.build(Some(&first), &|_| [0; 6]);
    assert!(next.policy.allows_ingress(db, ip("10.244.2.31"), 6, 5432));
    assert!(
        Arc::ptr_eq(&ingress(&first, cache), &ingress(&next, cache)),
        "cache's compiled set is kept, not recompiled"
    );
    assert!(!Arc::ptr_eq(&ingress(&first, db), &ingress(&next, db)));
    assert_ne!(first.policy_epoch, next.policy_epoch);
    // The same result as compiling everything afresh.
    let whole = r.build(None, &|_| [0; 6]);
    for peer in ["10.244.2.30", "10.244.2.31", "10.244.2.99"] {
        for pod in [db, cache] {
            assert_eq!(
                whole.policy.allows_ingress(pod, ip(peer), 6, 5432),
                next.policy.allows_ingress(pod, ip(peer), 6, 5432),
                "{peer}"
            );
        }
    }
    // A local pod that leaves loses its entry; one that moves address too.
    r.apply(SourceEvent::Apply(pod(
        "cache",
        "10.244.1.31",
        "node1",
        "cache",
    )));
    let moved = r.build(Some(&next), &|_| [0; 6]);
    assert!(moved.policy.pod(cache).is_none());
    assert!(moved.policy.pod(ip("10.244.1.31")).is_some());
    r.apply(SourceEvent::Delete(pod("db", "", "", "").key()));
    let gone = r.build(Some(&moved), &|_| [0; 6]);
    assert!(gone.policy.pod(db).is_none());
}

#[test]
fn the_synthetic_dns_service_survives_replaces_and_forwards_to_the_node() {
    let (mut r, first) = loaded();
    let dns = crate::dns::service_entry(
        "10.96.0.10".parse().unwrap(),
        "198.18.0.1".parse().unwrap(),
        "node1",
    );
    r.set_synthetic(dns);
    let next = r.build(Some(&first), &|_| [0; 6]);
    let node = vec![ip("198.18.0.1")];
    let to_node = |snap: &Snapshot, proto| {
        snap.services.lookup(vip("10.96.0.10"), 53, proto).map(|f| {
            f.backends
                .backends()
                .iter()
                .map(|b| b.ip)
                .collect::<Vec<_>>()
        })
    };
    assert_eq!(to_node(&next, 17), Some(node.clone()));
    assert_eq!(to_node(&next, 6), Some(node.clone()));
    // A replace of every kind without it keeps it (no watched object).
    let objects: Vec<Object> = cluster()
        .into_iter()
        .filter(|o| o.kind() != Kind::Service)
        .collect();
    r.apply(SourceEvent::Replace {
        kinds: Kind::ALL.to_vec(),
        objects,
    });
    let last = r.build(Some(&next), &|_| [0; 6]);
    assert_eq!(to_node(&last, 17), Some(node.clone()));
    assert!(last
        .services
        .lookup(vip("10.96.0.1"), 80, Proto::Tcp.number())
        .is_none());
    // A whole build has it too.
    assert_eq!(to_node(&r.build(None, &|_| [0; 6]), 17), Some(node));
}

fn kube_dns() -> Object {
    obj(
        Kind::Service,
        json!({"metadata": {"namespace": "kube-system", "name": "kube-dns"},
               "spec": {"clusterIP": "10.96.0.10", "selector": {"k8s-app": "kube-dns"}, "ports": [
                   {"name": "dns", "port": 53, "protocol": "UDP"},
                   {"name": "dns-tcp", "port": 53, "protocol": "TCP"},
                   {"name": "metrics", "port": 9153, "protocol": "TCP"}]}}),
    )
}

fn agent_dns() -> ServiceEntry {
    crate::dns::service_entry(
        "10.96.0.10".parse().unwrap(),
        "198.18.0.1".parse().unwrap(),
        "node1",
    )
}

/// Port 53 at 10.96.0.10 goes to the agent, 9153 to the watched service.
fn dns_is_the_agents(snap: &Snapshot) {
    for proto in [17, 6] {
        let f = snap.services.lookup(vip("10.96.0.10"), 53, proto).unwrap();
        let backends: Vec<u32> = f.backends.backends().iter().map(|b| b.ip).collect();
        assert_eq!(backends, [ip("198.18.0.1")], "proto {proto}: the agent's");
    }
    assert!(
        snap.services
            .lookup(vip("10.96.0.10"), 9153, Proto::Tcp.number())
            .is_some(),
        "the service's other ports stay"
    );
}

#[test]
fn a_watched_service_at_the_cluster_dns_address_leaves_dns_to_the_agent() {
    let (mut r, first) = loaded();
    r.set_synthetic(agent_dns());
    let _ = r.take_warnings();
    r.apply(SourceEvent::Apply(kube_dns()));
    let warnings = r.take_warnings();
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("kube-dns") && w.contains("53/Udp")),
        "{warnings:?}"
    );
    let next = r.build(Some(&first), &|_| [0; 6]);
    dns_is_the_agents(&next);
    // Removing the watched service leaves the agent's frontends in place.
    r.apply(SourceEvent::Delete(kube_dns().key()));
    let last = r.build(Some(&next), &|_| [0; 6]);
    assert!(last
        .services
        .lookup(vip("10.96.0.10"), 53, Proto::Udp.number())
        .is_some());
    assert!(last
        .services
        .lookup(vip("10.96.0.10"), 9153, Proto::Tcp.number())
        .is_none());
}

#[test]
fn the_agents_dns_wins_also_when_it_comes_after_the_watched_service() {
    let (mut r, first) = loaded();
    r.apply(SourceEvent::Apply(kube_dns()));
    let with_kube_dns = r.build(Some(&first), &|_| [0; 6]);
    r.set_synthetic(agent_dns());
    let next = r.build(Some(&with_kube_dns), &|_| [0; 6]);
    dns_is_the_agents(&next);
    // The watched service changing (rebuilt on its own) keeps it so.
    let mut changed = kube_dns();
    if let Object::Service(s) = &mut changed {
        s.metadata.labels = Some([("changed".to_string(), "yes".to_string())].into());
    }
    r.apply(SourceEvent::Apply(changed));
    dns_is_the_agents(&r.build(Some(&next), &|_| [0; 6]));
}

#[test]
fn headless_services_reach_dns_but_not_the_forwarding_tables() {
    let (mut r, first) = loaded();
    assert!(r.take_dns_change(), "the first load");
    assert!(!r.take_dns_change());
    r.apply(SourceEvent::Apply(obj(
        Kind::Service,
        json!({"metadata": {"namespace": "demo", "name": "db"},
               "spec": {"clusterIP": "None", "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}]}}),
    )));
    r.apply(SourceEvent::Apply(slice("db", &["10.244.1.20"])));
    assert!(r.take_dns_change());
    let next = r.build(Some(&first), &|_| [0; 6]);
    assert_eq!(next.services.len(), first.services.len());
    let zone = crate::dns::Zone::build("cluster.local", r.objects());
    assert_eq!(
        zone.lookup(
            "db.demo.svc.cluster.local",
            hickory_proto::rr::RecordType::A
        ),
        crate::dns::zone::Lookup::Answer(vec![crate::dns::zone::Data::A(
            "10.244.1.20".parse().unwrap()
        )])
    );
    // A policy change does not touch DNS.
    r.apply(SourceEvent::Delete(db_policy().key()));
    assert!(!r.take_dns_change());
}

fn published_pod(name: &str, ip: &str, node: &str) -> Object {
    obj(
        Kind::Pod,
        json!({"metadata": {"namespace": "demo", "name": name},
               "spec": {"nodeName": node, "containers": [{"name": "c", "ports": [
                   {"containerPort": 8080, "hostPort": 8088},
                   {"containerPort": 53, "hostPort": 5353, "protocol": "UDP", "hostIP": "0.0.0.0"}]}]},
               "status": {"podIP": ip, "phase": "Running"}}),
    )
}

#[test]
fn host_ports_of_local_pods_and_of_the_runtime_become_node_frontends() {
    use tables::service::FrontendKind;
    let (mut r, snap) = loaded();
    let node_ip = node_config().node_ip;
    r.apply(SourceEvent::Apply(published_pod(
        "hp",
        "10.244.1.40",
        "node1",
    )));
    r.apply(SourceEvent::Apply(published_pod(
        "away",
        "10.244.2.40",
        "node2",
    )));
    let snap = r.build(Some(&snap), &|_| [2, 0, 0, 0, 0, 2]);
    let tcp = snap
        .services
        .lookup(node_ip, 8088, Proto::Tcp.number())
        .expect("hostPort 8088/TCP");
    assert_eq!(tcp.kind, FrontendKind::HostPort);
    assert!(
        !tcp.snat,
        "the client address is kept (only hairpin is masqueraded)"
    );
    let b = tcp.backends.pick(1).unwrap();
    assert_eq!((b.ip, b.port), (vip("10.244.1.40"), 8080));
    assert!(snap
        .services
        .lookup(node_ip, 5353, Proto::Udp.number())
        .is_some());
    assert_eq!(
        snap.services
            .frontends()
            .filter(|(_, f)| f.kind == FrontendKind::HostPort)
            .count(),
        2,
        "another node's pod publishes nothing here"
    );
    // The runtime's mapping for an attached pod the source does not know.
    r.set_runtime_ports(&[tables::host_ports::Published {
        namespace: "demo".into(),
        name: "cni-only".into(),
        ip: "10.244.1.41".parse().unwrap(),
        ports: vec![tables::model::HostPort {
            host_port: 9000,
            container_port: 80,
            proto: tables::model::Proto::Tcp,
            host_ip: None,
        }],
    }]);
    assert!(r.pending());
    let snap = r.build(Some(&snap), &|_| [2, 0, 0, 0, 0, 2]);
    assert!(snap
        .services
        .lookup(node_ip, 9000, Proto::Tcp.number())
        .is_some());
    // The pod leaves: its host ports go.
    r.apply(SourceEvent::Delete(ObjectKey {
        kind: Kind::Pod,
        namespace: "demo".into(),
        name: "hp".into(),
    }));
    let snap = r.build(Some(&snap), &|_| [2, 0, 0, 0, 0, 2]);
    assert!(snap
        .services
        .lookup(node_ip, 8088, Proto::Tcp.number())
        .is_none());
    assert!(snap
        .services
        .lookup(node_ip, 9000, Proto::Tcp.number())
        .is_some());
}

#[test]
fn health_check_node_ports_are_kept_for_local_load_balancers() {
    let mut r = Reconciler::new(node_config(), Vec::new());
    let lb = |policy: &str| {
        obj(
            Kind::Service,
            json!({"metadata": {"namespace": "demo", "name": format!("lb-{policy}")},
                   "spec": {"type": "LoadBalancer", "clusterIP": "10.96.0.9", "externalTrafficPolicy": policy,
                            "healthCheckNodePort": 32000, "selector": {"app": "x"},
                            "ports": [{"name": "http", "protocol": "TCP", "port": 80, "nodePort": 31000}]}}),
        )
    };
    r.apply(SourceEvent::Apply(lb("Local")));
    let snap = r.build(None, &|_| [0; 6]);
    let checks = snap.services.health_checks();
    assert_eq!(checks.len(), 1);
    assert_eq!(
        (checks[0].0, checks[0].1.name.as_str(), checks[0].2),
        (32000, "lb-Local", 0)
    );
    let mut r = Reconciler::new(node_config(), Vec::new());
    r.apply(SourceEvent::Apply(lb("Cluster")));
    let snap = r.build(None, &|_| [0; 6]);
    assert!(
        snap.services.health_checks().is_empty(),
        "only for externalTrafficPolicy Local"
    );
}

/// What a manifest folder gives, the conversion takes without a
/// complaint: every default it needs is filled in.
#[test]
fn objects_convert_to_tables() {
    use super::convert;
    use sources::Object;
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
    write(
        "nodes.yaml",
        "apiVersion: v1\nkind: Node\nmetadata:\n  name: node1\nspec:\n  podCIDR: 10.244.1.0/24\n\
         status:\n  addresses:\n  - {type: InternalIP, address: 198.18.0.1}\n---\n\
         apiVersion: v1\nkind: Node\nmetadata:\n  name: node2\nspec:\n  podCIDR: 10.244.2.0/24\n\
         status:\n  addresses:\n  - {type: InternalIP, address: 198.18.0.2}\n",
    );
    write(
        "web.yaml",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  namespace: demo\n\
         spec:\n  replicas: 3\n  selector:\n    matchLabels: {app: web}\n  template:\n\
         \x20   metadata:\n      labels: {app: web}\n    spec:\n      containers:\n\
         \x20     - name: web\n        ports: [{name: http, containerPort: 8080}]\n\
         ---\n\
         apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  namespace: demo\n\
         spec:\n  type: NodePort\n  selector: {app: web}\n  ports: [{name: http, port: 80, targetPort: http}]\n\
         ---\n\
         apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: web\n\
         \x20 namespace: demo\nspec:\n  podSelector: {matchLabels: {app: web}}\n  ingress:\n\
         \x20 - from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: demo}}}]\n\
         \x20   ports: [{port: http}]\n",
    );
    let loaded = sources::manifest::load_dir(dir.path(), "10.96.0.0/12".parse().unwrap());
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let mut endpoints = 0;
    for object in &loaded.objects {
        let key = object.key();
        match object {
            Object::Namespace(o) => {
                let ns = convert::namespace(o);
                assert_eq!(ns.labels["kubernetes.io/metadata.name"], ns.name);
            }
            Object::Node(o) => {
                convert::node(o).unwrap_or_else(|e| panic!("{key}: {e}"));
            }
            Object::Pod(o) => {
                let pod = convert::pod(o).unwrap_or_else(|e| panic!("{key}: {e}"));
                assert!(pod.is_some(), "{key} has no address");
            }
            Object::Service(o) => {
                let svc = convert::service(o).unwrap_or_else(|e| panic!("{key}: {e}"));
                let svc = svc.expect("a service with entries");
                assert_eq!(svc.cluster_ips.len(), 1);
                assert!(svc.ports[0].node_port.is_some());
            }
            Object::EndpointSlice(o) => {
                let (service, eps) =
                    convert::endpoint_slice(o).unwrap_or_else(|e| panic!("{key}: {e}"));
                assert_eq!(service, "web");
                for ep in &eps {
                    assert!(ep.ready);
                    assert_eq!(ep.ports, vec![("http".to_owned(), 8080)]);
                }
                endpoints += eps.len();
            }
            Object::NetworkPolicy(o) => {
                convert::network_policy(o).unwrap_or_else(|e| panic!("{key}: {e}"));
            }
        }
    }
    assert_eq!(endpoints, 3);
}
