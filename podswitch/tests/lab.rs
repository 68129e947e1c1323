//! `podswitch lab` under test, through the binary as a user runs it: `up`
//! of the built-in example, `status`, `probe` (pod, service, closed port),
//! `matrix`, `apply`/`delete` of policies put in force before the verb
//! returns; `apply` of pods (a label change, scaling, a rolling template
//! change answered throughout, `--replace`, `delete`); `up` twice, refused
//! manifests changing nothing, and `down` removing everything, also after
//! `up` was killed with SIGKILL. Needs root.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use common::{lab_pods, podswitch, serial, text};
use serde_json::Value;
use testkit::netns::require_root;

/// The lab's namespaces still present.
fn namespaces_of(name: &str) -> Vec<String> {
    std::fs::read_dir("/run/netns")
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(&format!("{name}-")))
                .collect()
        })
        .unwrap_or_default()
}

/// A lab, taken down when dropped (also when the test fails).
struct Lab {
    name: String,
}

impl Lab {
    fn up(name: &str, extra: &[&str]) -> (Lab, Output) {
        let mut args = vec!["lab", "up", "--name", name];
        args.extend_from_slice(extra);
        let out = podswitch(&args);
        (
            Lab {
                name: name.to_string(),
            },
            out,
        )
    }

    fn run(&self, verb: &[&str]) -> Output {
        let mut args = vec!["lab", verb[0], "--name", &self.name];
        args.extend_from_slice(&verb[1..]);
        podswitch(&args)
    }

    fn probe(&self, from: &str, to: &str, port: &str) -> bool {
        let out = self.run(&[
            "probe",
            "--from",
            from,
            "--to",
            to,
            "--port",
            port,
            "--timeout-ms",
            "500",
        ]);
        match out.status.code() {
            Some(0) => true,
            Some(1) => false,
            _ => panic!("probe {from} -> {to}: {}", text(&out)),
        }
    }

    /// Nothing of the lab is left: no namespace, no state folder.
    fn assert_gone(&self) {
        let left = namespaces_of(&self.name);
        assert!(left.is_empty(), "namespaces left: {left:?}");
        assert!(!Path::new("/run/podswitch/lab").join(&self.name).exists());
    }

    fn apply(&self, yaml: &str, file: &Path) {
        std::fs::write(file, yaml).unwrap();
        let out = self.run(&["apply", "-f", &file.display().to_string()]);
        assert!(out.status.success(), "apply: {}", text(&out));
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = podswitch(&["lab", "down", "--name", &self.name]);
    }
}

fn name(tag: &str) -> String {
    format!("{tag}{}", std::process::id() % 100_000)
}

const DENY_INTRUDER: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-from-demo, namespace: demo}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress:
    - from:
        - namespaceSelector: {matchLabels: {team: demo}}
"#;

#[test]
fn lab_up_probe_matrix_apply_and_down() {
    require_root();
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let (lab, out) = Lab::up(&name("la"), &[]);
    assert!(out.status.success(), "lab up: {}", text(&out));
    assert!(text(&out).contains("2 nodes, 7 pods"), "{}", text(&out));

    // Status: pods with IPs and nodes, services with ClusterIPs.
    let status: Value = serde_json::from_slice(&lab.run(&["status", "-o", "json"]).stdout).unwrap();
    let pods = status["pods"].as_array().unwrap();
    assert_eq!(pods.len(), 7);
    let webs: Vec<&Value> = pods
        .iter()
        .filter(|p| p["name"].as_str().unwrap().starts_with("web-"))
        .collect();
    assert_eq!(webs.len(), 3, "the Deployment expands to 3 replicas");
    let nodes: std::collections::BTreeSet<&str> =
        pods.iter().map(|p| p["node"].as_str().unwrap()).collect();
    assert_eq!(nodes.len(), 2, "pods are spread over both nodes");
    let web = webs[0]["namespace"].as_str().unwrap().to_string()
        + "/"
        + webs[0]["name"].as_str().unwrap();

    // Probes: a pod, a service, a closed port.
    assert!(lab.probe("demo/client", &web, "8080"));
    assert!(lab.probe("demo/client", "svc/demo/web", "80"));
    assert!(lab.probe("other/intruder", "demo/db", "5432"));
    assert!(!lab.probe("demo/client", "demo/db", "5433"));
    let out = lab.run(&[
        "exec",
        "demo/client",
        "--",
        "ping",
        "-c",
        "1",
        "-W",
        "2",
        "10.244.2.10",
    ]);
    assert!(out.status.success(), "exec ping: {}", text(&out));
    // A short service name through the pod's resolver and the cluster DNS.
    let out = lab.run(&[
        "exec",
        "demo/client",
        "--",
        "curl",
        "-sS",
        "-m",
        "5",
        "http://web.demo:80/",
    ]);
    assert!(out.status.success(), "curl: {}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("demo/web-"),
        "{}",
        text(&out)
    );

    // A policy is in force when apply returns.
    let file = dir.path().join("deny.yaml");
    lab.apply(DENY_INTRUDER, &file);
    assert!(
        !lab.probe("other/intruder", &web, "8080"),
        "intruder denied"
    );
    assert!(lab.probe("demo/client", &web, "8080"), "client allowed");
    let matrix: Value =
        serde_json::from_slice(&lab.run(&["matrix", "--port", "8080", "-o", "json"]).stdout)
            .unwrap();
    assert_eq!(matrix["other/intruder"][&web], false);
    assert_eq!(matrix["demo/client"][&web], true);
    assert_eq!(matrix["demo/client"]["demo/db"], false, "db has no 8080");
    let grid = text(&lab.run(&["matrix", "--port", "8080"]));
    assert!(grid.lines().count() >= 7, "{grid}");
    let out = lab.run(&["delete", "-f", &file.display().to_string()]);
    assert!(out.status.success(), "delete: {}", text(&out));
    assert!(lab.probe("other/intruder", &web, "8080"), "policy gone");

    // Bad input to apply changes nothing.
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "apiVersion: v1\nkind: Widget\nmetadata: {name: w}\n").unwrap();
    let out = lab.run(&["apply", "-f", &bad.display().to_string()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains("bad.yaml:1:1") && text(&out).contains("Widget"),
        "{}",
        text(&out)
    );

    // Up twice: says so, changes nothing.
    let out = podswitch(&["lab", "up", "--name", &lab.name]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("already up"), "{}", text(&out));
    assert!(lab.probe("demo/client", "svc/demo/web", "80"), "still up");

    let out = lab.run(&["down"]);
    assert!(out.status.success(), "down: {}", text(&out));
    lab.assert_gone();
    assert!(!Path::new("/etc/netns")
        .join(format!("{}-demo-client", lab.name))
        .exists());
}

#[test]
fn down_cleans_up_after_up_is_killed() {
    require_root();
    let _serial = serial();
    let lab = Lab { name: name("lk") };
    let mut up = Command::new(env!("CARGO_BIN_EXE_podswitch"))
        .args(["lab", "up", "--name", &lab.name, "--nodes", "3"])
        .spawn()
        .unwrap();
    // Kill it midway: once its first namespaces exist.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while namespaces_of(&lab.name).len() < 2 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    let _ = up.kill();
    let _ = up.wait();
    assert!(!namespaces_of(&lab.name).is_empty(), "up got far enough");
    let out = lab.run(&["down"]);
    assert!(out.status.success(), "down: {}", text(&out));
    lab.assert_gone();
}

#[test]
fn manifests_the_lab_cannot_honour_are_refused_before_anything_changes() {
    require_root();
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    for (file, yaml, want) in [
        (
            "unknown.yaml",
            "apiVersion: v1\nkind: Widget\nmetadata: {name: w}\n",
            "Widget",
        ),
        (
            "empty.yaml",
            "apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: default}\nspec: {containers: []}\n",
            "Pod default/p: no containers",
        ),
        (
            "port.yaml",
            "apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: default}\nspec:\n  containers:\n    - name: c\n      ports: [{containerPort: 70000}]\n",
            "out of range",
        ),
    ] {
        let path = dir.path().join(file);
        std::fs::write(&path, yaml).unwrap();
        let (lab, out) = Lab::up(&name("lr"), &["-f", &path.display().to_string()]);
        assert_eq!(out.status.code(), Some(1), "{file}: {}", text(&out));
        assert!(text(&out).contains(want), "{file}: {}", text(&out));
        assert!(text(&out).contains(&path.display().to_string()), "names the file: {}", text(&out));
        assert!(text(&out).contains("nothing was changed"), "{file}: {}", text(&out));
        lab.assert_gone();
    }
}

#[test]
fn the_demo_tours_the_built_in_example() {
    demo_on("veth");
}

#[test]
fn the_demo_tours_the_built_in_example_on_tap_ports() {
    demo_on("tap");
}

/// The demo on a lab whose pods have `pod_port` ports: the same policy,
/// load balancing, NodePort and DNS answers, and bulk TCP across nodes.
fn demo_on(pod_port: &str) {
    require_root();
    let _serial = serial();
    let lab = Lab {
        name: name(if pod_port == "tap" { "lt" } else { "ld" }),
    };
    let out = lab.run(&["demo", "-o", "json", "--pod-port", pod_port]);
    assert!(out.status.success(), "demo: {}", text(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["pod_port"], pod_port);
    let client_to_web = |m: &Value| {
        m["demo/client"]
            .as_object()
            .unwrap()
            .iter()
            .filter(|(to, ok)| to.starts_with("demo/web-") && ok.as_bool() == Some(true))
            .count()
    };
    assert_eq!(client_to_web(&report["matrix_before"]), 3);
    assert_eq!(
        client_to_web(&report["matrix_after"]),
        3,
        "web allows the client"
    );
    let intruder_after = report["matrix_after"]["other/intruder"]
        .as_object()
        .unwrap();
    assert!(intruder_after.values().all(|v| v == false), "default deny");
    let spread = report["spread"].as_object().unwrap();
    assert_eq!(spread.len(), 3, "three backends answered: {spread:?}");
    assert_eq!(
        spread.values().map(|v| v.as_u64().unwrap()).sum::<u64>(),
        30
    );
    for (to, who) in report["node_port"].as_object().unwrap() {
        assert!(
            who.as_str().unwrap().starts_with("demo/web-"),
            "{to}: {who}"
        );
    }
    assert_eq!(
        report["dns"]["web"],
        report["dns"]["web.demo.svc.cluster.local"]
    );
    assert!(!report["dns"]["web"].as_str().unwrap().is_empty());
    assert_eq!(report["dns"]["nosuch.demo.svc.cluster.local"], "");
    assert!(report["iperf3_pod_to_pod_gbps"].as_f64().unwrap() > 0.05);
    assert!(report["iperf3_cluster_ip_gbps"].as_f64().unwrap() > 0.05);
}

const APP: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: app}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: app}
spec:
  replicas: REPLICAS
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
        - name: web
          image: IMAGE
          ports: [{name: http, containerPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: app}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: http}]
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: app, labels: {app: client}}
spec:
  containers: [{name: c}]
---
apiVersion: v1
kind: Pod
metadata: {name: target, namespace: app, labels: {role: ROLE}}
spec:
  containers: [{name: c, ports: [{containerPort: 9000}]}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: closed, namespace: app}
spec:
  podSelector: {matchLabels: {role: closed}}
  policyTypes: [Ingress]
"#;

fn app(replicas: u32, image: &str, role: &str) -> String {
    APP.replace("REPLICAS", &replicas.to_string())
        .replace("IMAGE", image)
        .replace("ROLE", role)
}

fn web_pods(pods: &std::collections::BTreeMap<String, (String, String)>) -> Vec<String> {
    pods.keys()
        .filter(|k| k.starts_with("app/web-"))
        .cloned()
        .collect()
}

/// `curl` of the web service from the client: the answering pod, or None.
fn whoami(lab: &Lab) -> Option<String> {
    let out = lab.run(&[
        "exec",
        "app/client",
        "--",
        "curl",
        "-s",
        "-m",
        "10",
        "http://web.app/",
    ]);
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

#[test]
fn apply_adds_relabels_rolls_and_removes_pods() {
    require_root();
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("app.yaml");
    std::fs::write(&file, app(2, "v1", "open")).unwrap();
    let (lab, out) = Lab::up(&name("la"), &["-f", &file.display().to_string()]);
    assert!(out.status.success(), "up: {}", text(&out));
    let before = lab_pods(&lab.name);
    assert_eq!(web_pods(&before).len(), 2);
    assert!(lab.probe("app/client", "app/target", "9000"));

    // A label change: the policy now selects the target, which keeps its
    // namespace and address.
    lab.apply(&app(2, "v1", "closed"), &file);
    assert!(
        !lab.probe("app/client", "app/target", "9000"),
        "closed by label"
    );
    assert_eq!(
        lab_pods(&lab.name),
        before,
        "no pod moved or changed address"
    );

    // Scaling up: one new pod, serving when apply returns; the others keep
    // their names and addresses.
    lab.apply(&app(3, "v1", "open"), &file);
    let scaled = lab_pods(&lab.name);
    let new: Vec<&String> = scaled.keys().filter(|k| !before.contains_key(*k)).collect();
    assert_eq!(new.len(), 1, "{scaled:?}");
    for (pod, place) in &before {
        assert_eq!(scaled.get(pod), Some(place), "{pod} kept its place");
    }
    assert!(
        lab.probe("app/client", new[0], "8080"),
        "the new pod serves"
    );
    assert!(lab.probe("app/client", "app/target", "9000"), "open again");
    let nodes: std::collections::BTreeSet<&String> = scaled.values().map(|(_, n)| n).collect();
    assert_eq!(nodes.len(), 2, "pods spread over both nodes: {scaled:?}");

    // A new template rolls the Deployment: every request during the roll
    // is answered.
    let rolling = std::thread::scope(|s| {
        let requests = s.spawn(|| (0..40).map(|_| whoami(&lab)).collect::<Vec<_>>());
        lab.apply(&app(3, "v2", "open"), &file);
        requests.join().unwrap()
    });
    assert!(rolling.iter().all(Option::is_some), "{rolling:?}");
    let rolled = lab_pods(&lab.name);
    let web_after = web_pods(&rolled);
    assert_eq!(web_after.len(), 3);
    assert!(
        web_after.iter().all(|p| !scaled.contains_key(p)),
        "all replaced"
    );
    assert!(web_after.contains(&whoami(&lab).unwrap()));
    for old in web_pods(&scaled) {
        let netns = format!("{}-{}", lab.name, old.replace('/', "-"));
        assert!(!namespaces_of(&lab.name).contains(&netns), "{old} removed");
    }

    // Refused: a pod's ports cannot change; nothing changes.
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: v1\nkind: Pod\nmetadata: {name: target, namespace: app}\nspec: {containers: [{name: c, ports: [{containerPort: 9001}]}]}\n",
    )
    .unwrap();
    let out = lab.run(&["apply", "-f", &bad.display().to_string()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("Pod app/target") && text(&out).contains("ports"),
        "{}",
        text(&out)
    );
    assert_eq!(lab_pods(&lab.name), rolled);

    // Two applies at once: one waits for the other, neither is lost.
    let solo = |name: &str| {
        let path = dir.path().join(format!("{name}.yaml"));
        std::fs::write(
            &path,
            format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: app}}\nspec:\n  containers: [{{name: c}}]\n"),
        )
        .unwrap();
        path
    };
    let (one, two) = (solo("one"), solo("two"));
    let outs = std::thread::scope(|s| {
        let a = s.spawn(|| lab.run(&["apply", "-f", &one.display().to_string()]));
        let b = s.spawn(|| lab.run(&["apply", "-f", &two.display().to_string()]));
        [a.join().unwrap(), b.join().unwrap()]
    });
    for out in &outs {
        assert!(out.status.success(), "{}", text(out));
    }
    let both = lab_pods(&lab.name);
    assert!(
        both.contains_key("app/one") && both.contains_key("app/two"),
        "{both:?}"
    );

    // --replace: only the client stays.
    let only = dir.path().join("only.yaml");
    std::fs::write(
        &only,
        "apiVersion: v1\nkind: Pod\nmetadata: {name: client, namespace: app, labels: {app: client}}\nspec:\n  containers: [{name: c}]\n",
    )
    .unwrap();
    let out = lab.run(&["apply", "--replace", "-f", &only.display().to_string()]);
    assert!(out.status.success(), "replace: {}", text(&out));
    let left = lab_pods(&lab.name);
    assert_eq!(left.keys().collect::<Vec<_>>(), ["app/client"]);
    assert_eq!(left["app/client"], before["app/client"]);
    let status: Value = serde_json::from_slice(&lab.run(&["status", "-o", "json"]).stdout).unwrap();
    assert_eq!(
        status["services"].as_array().unwrap().len(),
        0,
        "service gone"
    );
    let mut pod_namespaces = namespaces_of(&lab.name);
    pod_namespaces.retain(|n| n.starts_with(&format!("{}-app-", lab.name)));
    assert_eq!(pod_namespaces, [format!("{}-app-client", lab.name)]);

    // delete -f: the client goes, with its namespace and its switch port.
    let out = lab.run(&["delete", "-f", &only.display().to_string()]);
    assert!(out.status.success(), "delete: {}", text(&out));
    assert!(lab_pods(&lab.name).is_empty());
    assert!(!namespaces_of(&lab.name).contains(&format!("{}-app-client", lab.name)));
    let socket = format!(
        "/run/podswitch/lab/{}/{}.sock",
        lab.name, left["app/client"].1
    );
    let ports = podswitch(&["ports", "--socket", &socket, "-o", "json"]);
    assert!(ports.status.success(), "{}", text(&ports));
    let ports: Value = serde_json::from_slice(&ports.stdout).unwrap();
    assert_eq!(ports["ports"].as_array().map(Vec::len), Some(0), "{ports}");
}
