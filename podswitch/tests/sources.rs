//! `podswitch agent` fed by its live sources (a folder of manifests here),
//! in a node namespace: the tables follow the folder as files are added,
//! edited, broken and removed, read back through the local API the CLI
//! uses. Needs root.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{serial, Agent};
use testkit::netns::require_root;
use testkit::topology::Topology;

/// Polls `f` until it returns `Some` (10 s at most).
fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "within 10 s: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

const CLUSTER: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: demo, labels: {team: a}}
---
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
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {namespace: demo, name: web-from-team-a}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress:
  - from: [{namespaceSelector: {matchLabels: {team: a}}}]
    ports: [{port: http}]
"#;

fn web(replicas: u32) -> String {
    format!(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{namespace: demo, name: web}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      containers:
      - name: web
        image: web
        ports: [{{name: http, containerPort: 8080}}]
---
apiVersion: v1
kind: Service
metadata: {{namespace: demo, name: web}}
spec:
  type: NodePort
  selector: {{app: web}}
  ports: [{{name: http, port: 80, targetPort: http}}]
"#
    )
}

/// Backends of demo/web's ClusterIP frontend, if the service is there.
fn web_backends(socket: &Path) -> Option<Vec<String>> {
    let services = api::services(socket).ok()?;
    let svc = services
        .services
        .iter()
        .find(|s| s.namespace == "demo" && s.name == "web")?;
    let f = svc
        .frontends
        .iter()
        .find(|f| f.kind == api::views::FrontendType::ClusterIp)?;
    let mut b: Vec<String> = f
        .backends
        .iter()
        .map(|b| format!("{}:{}", b.ip, b.port))
        .collect();
    b.sort();
    Some(b)
}

#[test]
fn the_agent_follows_a_folder_of_manifests() {
    require_root();
    let _serial = serial();
    let mut t = Topology::new();
    let node = t.add_node();
    let dir = std::env::temp_dir().join(format!("podswitch-manifests-{}", std::process::id()));
    let manifests = dir.join("manifests");
    std::fs::create_dir_all(&manifests).unwrap();
    std::fs::write(manifests.join("cluster.yaml"), CLUSTER).unwrap();
    std::fs::write(manifests.join("web.yaml"), web(2)).unwrap();
    let folder = manifests.display().to_string();
    let mut agent = Agent::start_with(
        1,
        &t.nodes[node].ns.name,
        &["--manifests", &folder],
        dir.join("agent.sock"),
    );
    let socket = agent.socket.clone();

    // Initial load: the Deployment's two pods (one per node, addresses from
    // each node's pod CIDR) behind the service, resolved named port.
    let backends = eventually("demo/web with two backends", || {
        web_backends(&socket).filter(|b| b.len() == 2)
    });
    assert_eq!(backends, ["10.244.1.10:8080", "10.244.2.10:8080"]);
    let status = api::status(&socket).unwrap();
    assert_eq!(status.source, api::SourceKind::Manifests);
    assert!(status.synced && status.ready, "{status:?}");
    assert_eq!(status.objects.get("Pod"), Some(&2), "{status:?}");
    assert!(api::ready(&socket).unwrap());
    // The policy isolates the local web pod; node2's pods route over VXLAN.
    let policies = api::policies(&socket).unwrap();
    let local = policies
        .pods
        .iter()
        .find(|p| p.ip.to_string() == "10.244.1.10")
        .expect("the local web pod's policy");
    assert!(local.ingress.isolated, "{local:?}");
    assert_eq!(local.policies, ["demo/web-from-team-a"]);
    let routes = api::routes(&socket).unwrap();
    assert!(
        routes
            .remote
            .iter()
            .any(|r| r.cidr == "10.244.2.0/24" && r.node == "node2"),
        "{routes:?}"
    );

    // Scale up: a third pod joins the backends.
    std::fs::write(manifests.join("web.yaml"), web(3)).unwrap();
    let backends = eventually("three backends after scaling", || {
        web_backends(&socket).filter(|b| b.len() == 3)
    });
    assert!(
        backends.contains(&"10.244.1.11:8080".to_owned()),
        "{backends:?}"
    );

    // A broken edit: reported with the file and line; the last good
    // objects stay in force.
    std::fs::write(
        manifests.join("web.yaml"),
        web(3).replace("port: 80,", "port: \"eighty\","),
    )
    .unwrap();
    let warning = eventually("a warning naming web.yaml", || {
        api::status(&socket)
            .ok()?
            .warnings
            .into_iter()
            .find(|w| w.contains("web.yaml:"))
    });
    assert!(warning.contains("port"), "{warning}");
    assert_eq!(web_backends(&socket).map(|b| b.len()), Some(3));

    // The file goes: so do the service and its pods.
    std::fs::remove_file(manifests.join("web.yaml")).unwrap();
    eventually("demo/web gone", || {
        web_backends(&socket).is_none().then_some(())
    });
    assert!(agent.stop(), "the agent exits cleanly on SIGTERM");
    let _ = std::fs::remove_dir_all(&dir);
}
