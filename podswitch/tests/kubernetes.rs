//! The Kubernetes source against a real kube-apiserver (1.20, with etcd, on
//! 127.0.0.1; `deploy/kube-apiserver.sh` builds and caches it), driven by
//! `kubectl` and kube-rs: initial sync, every event kind, a service scaling
//! its endpoints, a pod relabel changing policy, the API server killed and
//! restarted mid-test, and the manifest source giving the same tables for
//! the same objects. The source and the reconciler run in the test process
//! (the agent's own loop around them is covered by `sources.rs`).

use crossbeam_channel::Receiver;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use agent::reconcile::Reconciler;
use api::views::{PoliciesView, RoutesView, ServicesView};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use sources::kube::KubeSource;
use sources::{manifest, Kind, SourceEvent};
use tables::snapshot::Snapshot;
use testkit::apiserver::ApiServer;

const OBJECTS: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: demo, labels: {team: a}}
---
apiVersion: v1
kind: Node
metadata: {name: node1}
spec: {podCIDR: 10.244.1.0/24}
---
apiVersion: v1
kind: Node
metadata: {name: node2}
spec: {podCIDR: 10.244.2.0/24}
---
apiVersion: v1
kind: Pod
metadata: {namespace: demo, name: db, labels: {app: db}}
spec: {nodeName: node1, containers: [{name: db, image: db, ports: [{name: pg, containerPort: 5432}]}]}
---
apiVersion: v1
kind: Pod
metadata: {namespace: demo, name: client, labels: {app: client}}
spec: {nodeName: node2, containers: [{name: c, image: c}]}
---
apiVersion: v1
kind: Pod
metadata: {namespace: demo, name: other, labels: {app: other}}
spec: {nodeName: node2, containers: [{name: c, image: c}]}
---
apiVersion: v1
kind: Service
metadata: {namespace: demo, name: web}
spec:
  clusterIP: 10.96.0.20
  ports: [{name: http, protocol: TCP, port: 80, targetPort: 8080}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {namespace: demo, name: web-abc, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
endpoints:
- {addresses: [10.244.2.10], nodeName: node2, conditions: {ready: true, serving: true, terminating: false}}
ports: [{name: http, protocol: TCP, port: 8080}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {namespace: demo, name: db}
spec:
  podSelector: {matchLabels: {app: db}}
  ingress:
  - from: [{podSelector: {matchLabels: {app: client}}}]
    ports: [{port: pg}]
"#;

fn slice(ips: &[&str]) -> String {
    let endpoints: String = ips
        .iter()
        .map(|ip| {
            format!(
                "- {{addresses: [{ip}], nodeName: node2, conditions: {{ready: true, serving: true, terminating: false}}}}\n"
            )
        })
        .collect();
    format!(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{namespace: demo, name: web-abc, labels: {{kubernetes.io/service-name: web}}}}\naddressType: IPv4\nendpoints:\n{endpoints}ports: [{{name: http, protocol: TCP, port: 8080}}]\n"
    )
}

/// Statuses the API server only takes through the status subresource:
/// node addresses, pod IPs and readiness (what the kubelet would write).
fn set_statuses(server: &ApiServer) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = server.client().await;
        let nodes: Api<Node> = Api::all(client.clone());
        for (name, ip) in [("node1", "198.18.0.1"), ("node2", "198.18.0.2")] {
            let status = json!({"status": {"addresses": [{"type": "InternalIP", "address": ip}]}});
            nodes
                .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
                .await
                .unwrap();
        }
        let pods: Api<Pod> = Api::namespaced(client, "demo");
        for (name, ip) in [
            ("db", "10.244.1.20"),
            ("client", "10.244.2.30"),
            ("other", "10.244.2.31"),
        ] {
            let status = json!({"status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
                "conditions": [{"type": "Ready", "status": "True"}]}});
            pods.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
                .await
                .unwrap();
        }
    });
}

/// The source's events applied to a reconciler, snapshots built from it.
struct Follower {
    rx: Receiver<SourceEvent>,
    reconciler: Reconciler,
    snapshot: Option<Snapshot>,
    synced_changes: Vec<bool>,
}

impl Follower {
    fn new(rx: Receiver<SourceEvent>) -> Follower {
        Follower {
            rx,
            reconciler: Reconciler::new(fixtures::example::node_config("node1"), Vec::new()),
            snapshot: None,
            synced_changes: Vec::new(),
        }
    }

    /// Applies events until `done` holds for a fresh snapshot (20 s at most).
    fn until(&mut self, what: &str, done: impl Fn(&Reconciler, &Snapshot) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            while let Ok(event) = self.rx.recv_timeout(Duration::from_millis(20)) {
                if let SourceEvent::Synced(s) = event {
                    self.synced_changes.push(s);
                }
                self.reconciler.apply(event);
            }
            if self.snapshot.is_none() || self.reconciler.pending() {
                let next = self.reconciler.build(self.snapshot.as_ref(), &|_| [0; 6]);
                self.snapshot = Some(next);
            }
            if done(&self.reconciler, self.snapshot.as_ref().unwrap()) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "within 20 s: {what}; warnings: {:?}",
                self.reconciler.take_warnings()
            );
        }
    }
}

fn ip(s: &str) -> u32 {
    u32::from(s.parse::<Ipv4Addr>().unwrap())
}

fn backends(s: &Snapshot) -> usize {
    s.services
        .lookup(ip("10.96.0.20"), 80, 6)
        .map_or(0, |f| f.backends.backends().len())
}

fn client_may_reach_db(s: &Snapshot, client: &str) -> bool {
    s.policy
        .allows_ingress(ip("10.244.1.20"), ip(client), 6, 5432)
}

#[test]
fn the_kubernetes_source_follows_the_api_server_through_an_outage() {
    let mut server = ApiServer::start();
    server.apply(OBJECTS);
    set_statuses(&server);
    let (tx, rx) = crossbeam_channel::unbounded();
    let source = KubeSource::start(Some(server.kubeconfig().to_path_buf()), tx).unwrap();
    let mut f = Follower::new(rx);

    // Initial sync: every kind listed, tables built.
    f.until("initial sync", |r, s| {
        r.synced() && backends(s) == 1 && s.routes.remote_owner(ip("10.244.2.99")).is_some()
    });
    let s = f.snapshot.as_ref().unwrap();
    assert!(client_may_reach_db(s, "10.244.2.30"));
    assert!(!client_may_reach_db(s, "10.244.2.31"));
    assert_eq!(f.reconciler.counts()["Pod"], 3);

    // The service scales: an endpoint added, then one removed.
    server.apply(&slice(&["10.244.2.10", "10.244.2.11", "10.244.2.12"]));
    f.until("three backends", |_, s| backends(s) == 3);
    server.apply(&slice(&["10.244.2.10", "10.244.2.12"]));
    f.until("two backends", |_, s| backends(s) == 2);

    // A relabelled pod: "other" becomes a client.
    server.kubectl_ok(&[
        "-n",
        "demo",
        "label",
        "pod",
        "other",
        "app=client",
        "--overwrite",
    ]);
    f.until("the relabelled pod is allowed", |_, s| {
        client_may_reach_db(s, "10.244.2.31")
    });

    // Deletes: the policy goes (db open to all), so does the service.
    server.kubectl_ok(&["-n", "demo", "delete", "networkpolicy", "db"]);
    server.kubectl_ok(&["-n", "demo", "delete", "service", "web"]);
    f.until("policy and service gone", |_, s| {
        backends(s) == 0 && client_may_reach_db(s, "10.244.2.99")
    });

    // Outage: the API server goes; the tables in force stay as they are.
    let before = {
        let s = f.snapshot.as_ref().unwrap();
        (s.services.clone(), s.policy.clone(), s.routes.clone())
    };
    server.stop_apiserver();
    f.until("the source reports it lost the API server", |r, _| {
        !r.synced()
    });
    std::thread::sleep(Duration::from_secs(1));
    f.until("no change during the outage", |_, _| true);
    let during = f.snapshot.as_ref().unwrap();
    assert!(std::sync::Arc::ptr_eq(&before.0, &during.services));
    assert!(std::sync::Arc::ptr_eq(&before.1, &during.policy));
    assert!(std::sync::Arc::ptr_eq(&before.2, &during.routes));

    // Back: the watches list again and the tables converge on changes.
    server.start_apiserver();
    f.until("in sync again", |r, _| r.synced());
    server.apply(OBJECTS);
    f.until("converged after the outage", |_, s| {
        backends(s) == 1 && !client_may_reach_db(s, "10.244.2.99")
    });
    assert!(
        f.synced_changes.windows(2).any(|w| w == [false, true]),
        "{:?}",
        f.synced_changes
    );

    // The manifest source gives the same tables for the same objects: the
    // API server's objects, written out as manifests.
    let dir = server.dir().join("manifests");
    std::fs::create_dir_all(&dir).unwrap();
    for kind in [
        "namespaces",
        "nodes",
        "pods",
        "services",
        "endpointslices.v1.discovery.k8s.io",
        "networkpolicies",
    ] {
        let yaml = server.kubectl_ok(&["get", kind, "--all-namespaces", "-o", "yaml"]);
        // `kubectl get -o yaml` wraps objects in a List: unwrap it.
        let list: yaml_serde::Value = yaml_serde::from_str(&yaml).unwrap();
        let mut docs = String::new();
        for item in list["items"].as_sequence().cloned().unwrap_or_default() {
            docs.push_str("---\n");
            docs.push_str(&yaml_serde::to_string(&item).unwrap());
        }
        std::fs::write(
            dir.join(format!("{}.yaml", kind.split('.').next().unwrap())),
            docs,
        )
        .unwrap();
    }
    let loaded = manifest::load_dir(&dir, "10.96.0.0/12".parse().unwrap());
    let mut from_files = Reconciler::new(fixtures::example::node_config("node1"), Vec::new());
    from_files.apply(SourceEvent::Replace {
        kinds: Kind::ALL.to_vec(),
        objects: loaded.objects,
    });
    let files = from_files.build(None, &|_| [0; 6]);
    let api = f.reconciler.build(None, &|_| [0; 6]);
    assert_eq!(ServicesView::build(&files), ServicesView::build(&api));
    assert_eq!(
        PoliciesView::build(&files, &[]),
        PoliciesView::build(&api, &[])
    );
    assert_eq!(RoutesView::build(&files, &[]), RoutesView::build(&api, &[]));
    assert!(backends(&files) == 1 && !client_may_reach_db(&files, "10.244.2.99"));
    drop(source);
}
