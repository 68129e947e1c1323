//! A NetworkPolicy v1 conformance suite against the lab, in the manner of
//! Kubernetes' own network-policy e2e tests: namespaces x, y, z with pods
//! a, b, c each (spread over two nodes), every pod serving TCP 80 and 81
//! and UDP 80 (named ports `serve-80-tcp`, `serve-81-tcp`, `serve-80-udp`).
//! Each case applies its policies (in force when `lab apply` returns),
//! checks the whole connectivity matrix against the truth table the
//! NetworkPolicy spec gives, and deletes them again: default deny, pod
//! selectors, namespace selectors, both in one peer, several peers,
//! ipBlock (with except), numbered, named and ranged (`endPort`) ports and
//! protocols, each for ingress and for egress; both in one policy; and
//! policies following label changes of pods and namespaces made live with
//! `lab apply` (the pods keep their addresses). Needs root.

mod common;

use std::collections::BTreeMap;

use common::{lab_pods, podswitch, serial, text};
use testkit::netns::require_root;

const PODS: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: x, labels: {ns: x}}
---
apiVersion: v1
kind: Namespace
metadata: {name: y, labels: {ns: y}}
---
apiVersion: v1
kind: Namespace
metadata: {name: z, labels: {ns: z}}
"#;

fn pod(ns: &str, name: &str) -> String {
    labeled_pod(ns, name, &format!("pod: {name}"))
}

/// Pod `ns/name` with `labels` (a YAML flow mapping's inside).
fn labeled_pod(ns: &str, name: &str, labels: &str) -> String {
    format!(
        r#"---
apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: {ns}, labels: {{{labels}}}}}
spec:
  containers:
    - name: serve
      ports:
        - {{name: serve-80-tcp, containerPort: 80, protocol: TCP}}
        - {{name: serve-81-tcp, containerPort: 81, protocol: TCP}}
        - {{name: serve-80-udp, containerPort: 80, protocol: UDP}}
"#
    )
}

struct Lab(String);

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = podswitch(&["lab", "down", "--name", &self.0]);
    }
}

/// One case: its policies, the port and protocol probed, and whether
/// `from` may reach `to` (pods as `ns/name`; self-connections are not
/// checked: they never leave the pod).
struct Case {
    name: &'static str,
    policies: String,
    port: u16,
    protocol: &'static str,
    allowed: Box<Allowed>,
}

/// Whether `from` may reach `to`.
type Allowed = dyn Fn(&str, &str) -> bool;

fn ns(pod: &str) -> &str {
    pod.split('/').next().unwrap_or_default()
}

fn name(pod: &str) -> &str {
    pod.split('/').nth(1).unwrap_or_default()
}

fn policy(ns: &str, name: &str, spec: &str) -> String {
    format!(
        "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n{spec}\n"
    )
}

/// Cases whose policies select by a label that a pod or namespace only
/// gets afterwards, through `lab apply` of the relabeled object (the
/// second of each pair): the policy must follow the label change.
fn relabel_cases() -> Vec<(Case, String)> {
    vec![
        (
            Case {
                name: "ingress: a policy follows a pod's new label (x/a gets role=locked)",
                policies: policy(
                    "x",
                    "locked",
                    "  podSelector: {matchLabels: {role: locked}}\n  policyTypes: [Ingress]",
                ),
                port: 80,
                protocol: "tcp",
                allowed: Box::new(|_, to| to != "x/a"),
            },
            labeled_pod("x", "a", "pod: a, role: locked"),
        ),
        (
            Case {
                name: "ingress: a peer follows a pod's new label (z/c gets trusted=yes)",
                policies: policy(
                    "y",
                    "from-trusted",
                    "  podSelector: {}\n  ingress:\n    - from:\n        - namespaceSelector: {}\n          podSelector: {matchLabels: {trusted: 'yes'}}",
                ),
                port: 80,
                protocol: "tcp",
                allowed: Box::new(|from, to| ns(to) != "y" || from == "z/c"),
            },
            labeled_pod("z", "c", "pod: c, trusted: 'yes'"),
        ),
        (
            Case {
                name: "egress: a peer follows a namespace's new label (y gets open=yes)",
                policies: policy(
                    "x",
                    "to-open",
                    "  podSelector: {}\n  policyTypes: [Egress]\n  egress:\n    - to:\n        - namespaceSelector: {matchLabels: {open: 'yes'}}",
                ),
                port: 80,
                protocol: "tcp",
                allowed: Box::new(|from, to| ns(from) != "x" || ns(to) == "y"),
            },
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: y, labels: {ns: y, open: 'yes'}}\n"
                .to_string(),
        ),
    ]
}

fn cases(ips: &BTreeMap<String, String>) -> Vec<Case> {
    let ya = ips["y/a"].clone();
    let za = ips["z/a"].clone();
    vec![
        Case {
            name: "ingress: default deny in x",
            policies: policy("x", "deny", "  podSelector: {}\n  policyTypes: [Ingress]"),
            port: 80,
            protocol: "tcp",
            allowed: Box::new(|_, to| ns(to) != "x"),
        },
        Case {
            name: "ingress: x/a from pods b of its namespace",
            policies: policy(
                "x",
                "a-from-b",
                "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n    - from:\n        - podSelector: {matchLabels: {pod: b}}",
            ),
            port: 80,
            protocol: "tcp",
            allowed: Box::new(|from, to| to != "x/a" || from == "x/b"),
        },
        Case {
            name: "ingress: x/a from namespace y",
            policies: policy(
                "x",
                "a-from-y",
                "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n    - from:\n        - namespaceSelector: {matchLabels: {ns: y}}",
            ),
            port: 80,
            protocol: "tcp",
            allowed: Box::new(|from, to| to != "x/a" || ns(from) == "y"),
        },
        Case {
            name: "ingress: x/a from pods a of namespace y (one peer: both selectors)",
            policies: policy(
                "x",
                "a-from-ya",
                "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n    - from:\n        - namespaceSelector: {matchLabels: {ns: y}}\n          podSelector: {matchLabels: {pod: a}}",
            ),
            port: 80,
            protocol: "tcp",
            allowed: Box::new(|from, to| to != "x/a" || from == "y/a"),
        },
        Case {
            name: "ingress: x/a from two peers (namespace y, or pods c anywhere in x)",
            policies: policy(
                "x",
                "a-from-y-or-c",
                "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n    - from:\n        - namespaceSelector: {matchLabels: {ns: y}}\n        - podSelector: {matchLabels: {pod: c}}",
            ),
            port: 80,
            protocol: "tcp",
            allowed: Box::new(|from, to| to != "x/a" || ns(from) == "y" || from == "x/c"),
        },
        Case {
            name: "ingress: x/a from the pod CIDR except y/a",
            policies: policy(
                "x",
                "a-from-block",
                &format!("  podSelector: {{matchLabels: {{pod: a}}}}\n  ingress:\n    - from:\n        - ipBlock: {{cidr: 10.244.0.0/16, except: [{ya}/32]}}"),
            ),
            port: 80,
            protocol: "tcp",
            allowed: Box::new(|from, to| to != "x/a" || from != "y/a"),
        },
        Case {
            name: "ingress: x/* only on port 81 (port 80 denied)",
            policies: policy(
                "x",
                "only-81",
                "  podSelector: {}\n  ingress:\n    - ports:\n        - {port: 81, protocol: TCP}",
            ),
            port: 80,
            protocol: "tcp",
            allowed: Box::new(|_, to| ns(to) != "x"),
        },
        Case {
            name: "ingress: x/* on the named port serve-81-tcp (81 allowed)",
            policies: policy(
                "x",
                "named-81",
                "  podSelector: {}\n  ingress:\n    - ports:\n        - {port: serve-81-tcp}",
            ),
            port: 81,
            protocol: "tcp",
            allowed: Box::new(|_, _| true),
        },
        Case {
            name: "ingress: x/* on ports 79-80 (endPort; 81 denied)",
            policies: policy(
                "x",
                "range",
                "  podSelector: {}\n  ingress:\n    - ports:\n        - {port: 79, endPort: 80, protocol: TCP}",
            ),
            port: 81,
            protocol: "tcp",
            allowed: Box::new(|_, to| ns(to) != "x"),
        },
        Case {
            name: "ingress: x/* UDP 80 only (UDP allowed)",
            policies: policy(
                "x",
                "udp",
                "  podSelector: {}\n  ingress:\n    - ports:\n        - {port: 80, protocol: UDP}",
            ),
            port: 80,
            protocol: "udp",
            allowed: Box::new(|_, _| true),
        },
        Case {
            name: "ingress: x/* UDP 80 only (TCP denied)",
            policies: policy(
                "x",
                "udp",
                "  podSelector: {}\n  ingress:\n    - ports:\n        - {port: 80, protocol: UDP}",
            ),
            port: 80,
            protocol: "tcp",
            allowed: Box::new(|_, to| ns(to) != "x"),
        },
        Case {
            name: "egress: default deny in x",
            policies: policy("x", "deny-out", "  podSelector: {}\n  policyTypes: [Egress]"),
            port: 80,
            protocol: "tcp",
            allowed: Box::new(|from, _| ns(from) != "x"),
        },
        Case {
            name: "egress: x/a to namespace y only",
            policies: policy(
                "x",
                "a-to-y",
                "  podSelector: {matchLabels: {pod: a}}\n  policyTypes: [Egress]\n  egress:\n    - to:\n        - namespaceSelector: {matchLabels: {ns: y}}",
            ),
            port: 80,
            protocol: "tcp",
            allowed: Box::new(|from, to| from != "x/a" || ns(to) == "y"),
        },
        Case {
            name: "egress: x/a to pods b in any namespace",
            policies: policy(
                "x",
                "a-to-b",
                "  podSelector: {matchLabels: {pod: a}}\n  policyTypes: [Egress]\n  egress:\n    - to:\n        - namespaceSelector: {}\n          podSelector: {matchLabels: {pod: b}}",
            ),
            port: 80,
            protocol: "tcp",
            allowed: Box::new(|from, to| from != "x/a" || name(to) == "b"),
        },
        Case {
            name: "egress: x/a to z/a's address only",
            policies: policy(
                "x",
                "a-to-za",
                &format!("  podSelector: {{matchLabels: {{pod: a}}}}\n  policyTypes: [Egress]\n  egress:\n    - to:\n        - ipBlock: {{cidr: {za}/32}}"),
            ),
            port: 80,
            protocol: "tcp",
            allowed: Box::new(|from, to| from != "x/a" || to == "z/a"),
        },
        Case {
            name: "egress: x/* on port 81 only (80 denied)",
            policies: policy(
                "x",
                "out-81",
                "  podSelector: {}\n  policyTypes: [Egress]\n  egress:\n    - ports:\n        - {port: 81, protocol: TCP}",
            ),
            port: 80,
            protocol: "tcp",
            allowed: Box::new(|from, _| ns(from) != "x"),
        },
        Case {
            name: "egress: x/a to pods a of namespace y (one peer: both selectors)",
            policies: policy(
                "x",
                "a-to-ya",
                "  podSelector: {matchLabels: {pod: a}}\n  policyTypes: [Egress]\n  egress:\n    - to:\n        - namespaceSelector: {matchLabels: {ns: y}}\n          podSelector: {matchLabels: {pod: a}}",
            ),
            port: 80,
            protocol: "tcp",
            allowed: Box::new(|from, to| from != "x/a" || to == "y/a"),
        },
        Case {
            name: "egress: x/a to two peers (namespace z, or pods b of its namespace)",
            policies: policy(
                "x",
                "a-to-z-or-b",
                "  podSelector: {matchLabels: {pod: a}}\n  policyTypes: [Egress]\n  egress:\n    - to:\n        - namespaceSelector: {matchLabels: {ns: z}}\n        - podSelector: {matchLabels: {pod: b}}",
            ),
            port: 80,
            protocol: "tcp",
            allowed: Box::new(|from, to| from != "x/a" || ns(to) == "z" || to == "x/b"),
        },
        Case {
            name: "egress: x/a to the pod CIDR except z/a",
            policies: policy(
                "x",
                "a-to-block",
                &format!("  podSelector: {{matchLabels: {{pod: a}}}}\n  policyTypes: [Egress]\n  egress:\n    - to:\n        - ipBlock: {{cidr: 10.244.0.0/16, except: [{za}/32]}}"),
            ),
            port: 80,
            protocol: "tcp",
            allowed: Box::new(|from, to| from != "x/a" || to != "z/a"),
        },
        Case {
            name: "egress: x/* to the named port serve-81-tcp (81 allowed)",
            policies: policy(
                "x",
                "out-named-81",
                "  podSelector: {}\n  policyTypes: [Egress]\n  egress:\n    - ports:\n        - {port: serve-81-tcp}",
            ),
            port: 81,
            protocol: "tcp",
            allowed: Box::new(|_, _| true),
        },
        Case {
            name: "egress: x/* to ports 80-81 (endPort; 81 allowed)",
            policies: policy(
                "x",
                "out-range",
                "  podSelector: {}\n  policyTypes: [Egress]\n  egress:\n    - ports:\n        - {port: 80, endPort: 81, protocol: TCP}",
            ),
            port: 81,
            protocol: "tcp",
            allowed: Box::new(|_, _| true),
        },
        Case {
            name: "egress: x/* to UDP 80 only (UDP allowed)",
            policies: policy(
                "x",
                "out-udp",
                "  podSelector: {}\n  policyTypes: [Egress]\n  egress:\n    - ports:\n        - {port: 80, protocol: UDP}",
            ),
            port: 80,
            protocol: "udp",
            allowed: Box::new(|_, _| true),
        },
        Case {
            name: "egress: x/* to UDP 80 only (TCP denied)",
            policies: policy(
                "x",
                "out-udp",
                "  podSelector: {}\n  policyTypes: [Egress]\n  egress:\n    - ports:\n        - {port: 80, protocol: UDP}",
            ),
            port: 80,
            protocol: "tcp",
            allowed: Box::new(|from, _| ns(from) != "x"),
        },
        Case {
            name: "ingress and egress: y/b talks only to x (out) and only hears z (in)",
            policies: policy(
                "y",
                "b-both",
                "  podSelector: {matchLabels: {pod: b}}\n  policyTypes: [Ingress, Egress]\n  ingress:\n    - from:\n        - namespaceSelector: {matchLabels: {ns: z}}\n  egress:\n    - to:\n        - namespaceSelector: {matchLabels: {ns: x}}",
            ),
            port: 80,
            protocol: "tcp",
            allowed: Box::new(|from, to| {
                (from != "y/b" || ns(to) == "x") && (to != "y/b" || ns(from) == "z")
            }),
        },
    ]
}

/// Each pod's address, as `lab status` shows it.
fn pod_ips(lab: &str) -> BTreeMap<String, String> {
    lab_pods(lab)
        .into_iter()
        .map(|(pod, (ip, _))| (pod, ip))
        .collect()
}

#[test]
fn network_policy_v1_conformance() {
    require_root();
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let mut manifests = PODS.to_string();
    for ns in ["x", "y", "z"] {
        for name in ["a", "b", "c"] {
            manifests.push_str(&pod(ns, name));
        }
    }
    let file = dir.path().join("pods.yaml");
    std::fs::write(&file, manifests).unwrap();
    let lab = Lab(format!("np{}", std::process::id() % 100_000));
    let out = podswitch(&[
        "lab",
        "up",
        "--name",
        &lab.0,
        "-f",
        &file.display().to_string(),
    ]);
    assert!(out.status.success(), "lab up: {}", text(&out));
    let ips = pod_ips(&lab.0);
    assert_eq!(ips.len(), 9);

    let apply = |case: &str, file: &std::path::Path, yaml: &str| {
        std::fs::write(file, yaml).unwrap();
        let path = file.display().to_string();
        let out = podswitch(&["lab", "apply", "--name", &lab.0, "-f", &path]);
        assert!(out.status.success(), "{case}: apply: {}", text(&out));
    };
    let all = cases(&ips)
        .into_iter()
        .map(|c| (c, None))
        .chain(relabel_cases().into_iter().map(|(c, r)| (c, Some(r))));
    let mut failures = Vec::new();
    for (case, relabel) in all {
        let policy_file = dir.path().join("policy.yaml");
        let path = policy_file.display().to_string();
        apply(case.name, &policy_file, &case.policies);
        if let Some(relabel) = &relabel {
            apply(case.name, &dir.path().join("relabel.yaml"), relabel);
        }
        let port = case.port.to_string();
        let out = podswitch(&[
            "lab",
            "matrix",
            "--name",
            &lab.0,
            "--port",
            &port,
            "--protocol",
            case.protocol,
            "--timeout-ms",
            "400",
            "-o",
            "json",
        ]);
        let matrix: BTreeMap<String, BTreeMap<String, bool>> = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{}: {e}: {}", case.name, text(&out)));
        for (from, row) in &matrix {
            for (to, &got) in row {
                if from == to {
                    continue;
                }
                let want = (case.allowed)(from, to);
                if got != want {
                    failures.push(format!(
                        "{}: {from} -> {to} on {}/{}: {} (the spec says {})",
                        case.name,
                        case.protocol,
                        case.port,
                        if got { "connected" } else { "blocked" },
                        if want { "allowed" } else { "denied" }
                    ));
                }
            }
        }
        let out = podswitch(&["lab", "delete", "--name", &lab.0, "-f", &path]);
        assert!(
            out.status.success(),
            "{}: delete: {}",
            case.name,
            text(&out)
        );
        if relabel.is_some() {
            // The labels as they were; every pod kept its address.
            let out = podswitch(&[
                "lab",
                "apply",
                "--name",
                &lab.0,
                "-f",
                &file.display().to_string(),
            ]);
            assert!(
                out.status.success(),
                "{}: restoring labels: {}",
                case.name,
                text(&out)
            );
            assert_eq!(pod_ips(&lab.0), ips, "{}: addresses changed", case.name);
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
