//! A Deployment to the Pods its ReplicaSet would run: `replicas` pods
//! (default one) named `<deployment>-<pod-template-hash>-<suffix>`, both
//! parts made from stable hashes so every load gives the same names. The
//! API server's checks that matter here are made (a selector that selects
//! the template's labels); a deployment that fails them gives no pods and a
//! note, as the API server would refuse it.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};

use super::names::{encode, stable_hash};
use super::parse::Origin;

/// The label the ReplicaSet controller adds to a deployment's pods.
pub(super) const POD_TEMPLATE_HASH: &str = "pod-template-hash";

/// More replicas than this are a typo, not a lab: the deployment is capped.
const MAX_REPLICAS: i32 = 10_000;

/// The pods `d` runs; `d`'s namespace is already set.
pub(super) fn expand(d: &Deployment, origin: &Origin, notes: &mut Vec<String>) -> Vec<Pod> {
    let namespace = d.metadata.namespace.clone().unwrap_or_default();
    let name = d.metadata.name.clone().unwrap_or_default();
    let what = format!("{origin}: Deployment {namespace}/{name}");
    let spec = &d.spec;
    let labels = spec
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    match selector_matches(&spec.selector, &labels) {
        Ok(true) if !is_empty(&spec.selector) => {}
        Ok(true) => {
            notes.push(format!("{what}: spec.selector is empty; no pods"));
            return Vec::new();
        }
        Ok(false) => {
            notes.push(format!(
                "{what}: spec.selector does not select the template's labels; no pods"
            ));
            return Vec::new();
        }
        Err(e) => {
            notes.push(format!("{what}: spec.selector: {e}; no pods"));
            return Vec::new();
        }
    }
    let mut replicas = spec.replicas.unwrap_or(1);
    if replicas < 0 {
        notes.push(format!("{what}: replicas {replicas} is negative; no pods"));
        replicas = 0;
    }
    if replicas > MAX_REPLICAS {
        notes.push(format!(
            "{what}: replicas {replicas} is above {MAX_REPLICAS}; {MAX_REPLICAS} pods made"
        ));
        replicas = MAX_REPLICAS;
    }

    let template = serde_json::to_string(&spec.template).unwrap_or_default();
    let hash = encode(stable_hash(&[&namespace, &name, &template]), 10);
    let mut pod_labels = labels;
    pod_labels.insert(POD_TEMPLATE_HASH.to_owned(), hash.clone());
    let annotations = spec
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.annotations.clone());
    let mut suffixes = std::collections::BTreeSet::new();
    (0..replicas)
        .map(|index| {
            // A second suffix with the same five characters would make two
            // pods one: try the next salt until the name is new.
            let index = index.to_string();
            let suffix = (0u32..)
                .map(|salt| encode(stable_hash(&[&hash, &index, &salt.to_string()]), 5))
                .find(|s| suffixes.insert(s.clone()))
                .unwrap_or_default();
            Pod {
                metadata: ObjectMeta {
                    name: Some(format!("{name}-{hash}-{suffix}")),
                    namespace: Some(namespace.clone()),
                    labels: Some(pod_labels.clone()),
                    annotations: annotations.clone(),
                    ..ObjectMeta::default()
                },
                spec: Some(spec.template.spec.clone().unwrap_or_default()),
                status: None,
            }
        })
        .collect()
}

fn is_empty(selector: &LabelSelector) -> bool {
    selector.match_labels.as_ref().is_none_or(|m| m.is_empty())
        && selector
            .match_expressions
            .as_ref()
            .is_none_or(|e| e.is_empty())
}

/// Whether `selector` selects `labels` (an empty selector selects all).
/// An error names an operator that does not exist.
pub(super) fn selector_matches(
    selector: &LabelSelector,
    labels: &BTreeMap<String, String>,
) -> Result<bool, String> {
    let by_labels = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let mut by_expressions = true;
    for req in selector.match_expressions.iter().flatten() {
        let value = labels.get(&req.key);
        let values = req.values.as_deref().unwrap_or_default();
        let matched = match req.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            other => return Err(format!("unknown operator {other:?}")),
        };
        by_expressions &= matched;
    }
    Ok(by_labels && by_expressions)
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;

    const DEPLOYMENT: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n\
        \x20 namespace: demo\nspec:\n  replicas: 3\n  selector:\n    matchLabels: {app: web}\n\
        \x20 template:\n    metadata:\n      labels: {app: web, tier: front}\n\
        \x20     annotations: {note: x}\n    spec:\n      containers:\n      - name: web\n\
        \x20       ports:\n        - {name: http, containerPort: 8080}\n";

    #[test]
    fn expands_to_stable_pods_on_the_nodes() {
        let dir = TempDir::new();
        dir.write("web.yaml", DEPLOYMENT);
        dir.write(
            "nodes.yaml",
            &nodes(&[("node1", "10.244.1.0/24"), ("node2", "10.244.2.0/24")]),
        );
        let first = load(&dir);
        assert!(first.warnings.is_empty(), "{:?}", first.warnings);
        let pods = pods_of(&first, "demo");
        assert_eq!(pods.len(), 3);
        let hash = &pods[0].metadata.labels.as_ref().unwrap()[POD_TEMPLATE_HASH];
        assert_eq!(hash.len(), 10);
        for pod in &pods {
            let name = pod.metadata.name.as_deref().unwrap();
            let rest = name.strip_prefix(&format!("web-{hash}-")).unwrap();
            assert_eq!(rest.len(), 5, "{name}");
            let labels = pod.metadata.labels.as_ref().unwrap();
            assert_eq!(labels["app"], "web");
            assert_eq!(labels["tier"], "front");
            assert_eq!(pod.metadata.annotations.as_ref().unwrap()["note"], "x");
            let c = &pod.spec.as_ref().unwrap().containers[0];
            assert_eq!(
                c.ports.as_ref().unwrap()[0].protocol.as_deref(),
                Some("TCP")
            );
        }
        // Round robin over node1, node2; addresses from each node's podCIDR.
        let placed: Vec<(&str, &str)> = pods
            .iter()
            .map(|p| {
                (
                    p.spec.as_ref().unwrap().node_name.as_deref().unwrap(),
                    p.status.as_ref().unwrap().pod_ip.as_deref().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            placed,
            [
                ("node1", "10.244.1.10"),
                ("node2", "10.244.2.10"),
                ("node1", "10.244.1.11")
            ]
        );

        // The same folder read again: the same objects.
        assert_eq!(load(&dir), first);
        // A changed template: new hash and names; replicas 0: none.
        dir.write("web.yaml", &DEPLOYMENT.replace("front", "back"));
        let changed = load(&dir);
        let new_hash = &pods_of(&changed, "demo")[0]
            .metadata
            .labels
            .as_ref()
            .unwrap()[POD_TEMPLATE_HASH];
        assert_ne!(new_hash, hash);
        dir.write(
            "web.yaml",
            &DEPLOYMENT.replace("replicas: 3", "replicas: 0"),
        );
        assert!(pods_of(&load(&dir), "demo").is_empty());
        dir.write("web.yaml", &DEPLOYMENT.replace("  replicas: 3\n", ""));
        assert_eq!(pods_of(&load(&dir), "demo").len(), 1);
    }

    #[test]
    fn a_selector_that_misses_the_template_gives_no_pods() {
        let dir = TempDir::new();
        dir.write(
            "web.yaml",
            &DEPLOYMENT.replace("matchLabels: {app: web}", "matchLabels: {app: api}"),
        );
        let loaded = load(&dir);
        assert!(pods_of(&loaded, "demo").is_empty());
        assert!(
            loaded
                .warnings
                .iter()
                .any(|w| w.contains("does not select")),
            "{:?}",
            loaded.warnings
        );
    }

    #[test]
    fn selector_operators() {
        let labels: BTreeMap<String, String> =
            [("app".to_owned(), "web".to_owned())].into_iter().collect();
        let sel = |yaml: &str| yaml_serde::from_str::<LabelSelector>(yaml).unwrap();
        let m = |yaml: &str| selector_matches(&sel(yaml), &labels);
        assert_eq!(m("{}"), Ok(true));
        assert_eq!(
            m("matchExpressions: [{key: app, operator: In, values: [web, api]}]"),
            Ok(true)
        );
        assert_eq!(
            m("matchExpressions: [{key: app, operator: NotIn, values: [web]}]"),
            Ok(false)
        );
        assert_eq!(
            m("matchExpressions: [{key: x, operator: DoesNotExist}]"),
            Ok(true)
        );
        assert_eq!(
            m("matchExpressions: [{key: x, operator: Exists}]"),
            Ok(false)
        );
        assert!(m("matchExpressions: [{key: x, operator: Near}]").is_err());
    }
}
