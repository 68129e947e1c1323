//! The objects a lab was given (by `up`, `apply`, `delete`), kept as
//! documents keyed like Kubernetes keys them: kind, namespace, name.
//! `apply` adds or replaces objects by key, `apply --replace` makes the
//! given objects the whole set, `delete` removes by key (a Namespace takes
//! its objects with it).

use std::collections::BTreeSet;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::LabError;

/// Kinds without a namespace.
const CLUSTER_SCOPED: &[&str] = &["Namespace", "Node"];

/// One object given to the lab, as the lab keeps it (its Services with
/// the addresses they were given, so they keep them).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabObject {
    /// The file it came from, as the user named it.
    pub origin: String,
    pub kind: String,
    /// Empty for cluster-scoped kinds.
    pub namespace: String,
    pub name: String,
    /// The document, as YAML.
    pub yaml: String,
}

/// kind, namespace, name.
pub type Key = (String, String, String);

impl LabObject {
    pub fn key(&self) -> Key {
        (self.kind.clone(), self.namespace.clone(), self.name.clone())
    }

    /// `Kind namespace/name` (or `Kind name`), for messages.
    pub fn what(&self) -> String {
        if self.namespace.is_empty() {
            format!("{} {}", self.kind, self.name)
        } else {
            format!("{} {}/{}", self.kind, self.namespace, self.name)
        }
    }

    /// The document.
    pub fn value(&self) -> yaml_serde::Value {
        yaml_serde::from_str(&self.yaml).unwrap_or_default()
    }
}

/// A manifest file given to a verb.
#[derive(Clone, Debug)]
pub struct Input {
    /// The path as the user gave it (what messages name).
    pub shown: String,
    /// Its file name.
    pub file_name: String,
    pub text: String,
}

/// The manifest files `path` names: the file, or a folder's `.yaml` and
/// `.yml` files in name order.
pub fn read_inputs(path: &Path) -> Result<Vec<Input>, LabError> {
    let read = |p: &Path| {
        std::fs::read_to_string(p)
            .map(|text| Input {
                shown: p.display().to_string(),
                file_name: p
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                text,
            })
            .map_err(|e| LabError::Io(format!("{}: cannot read: {e}", p.display())))
    };
    if !path.is_dir() {
        return Ok(vec![read(path)?]);
    }
    let entries = std::fs::read_dir(path)
        .map_err(|e| LabError::Io(format!("{}: cannot read: {e}", path.display())))?;
    let mut files: Vec<_> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let lower = p.to_string_lossy().to_ascii_lowercase();
            p.is_file() && (lower.ends_with(".yaml") || lower.ends_with(".yml"))
        })
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(LabError::Io(format!(
            "{}: no .yaml or .yml files in this folder",
            path.display()
        )));
    }
    files.iter().map(|p| read(p)).collect()
}

/// The objects of `input`, one per document. A document without a kind or
/// name is kept under an empty key: the manifest check names it.
pub fn parse(input: &Input) -> Result<Vec<LabObject>, String> {
    let mut out = Vec::new();
    for doc in yaml_serde::Deserializer::from_str(&input.text) {
        let value =
            yaml_serde::Value::deserialize(doc).map_err(|e| format!("{}: {e}", input.shown))?;
        if value.is_null() {
            continue;
        }
        let text = |v: Option<&yaml_serde::Value>| {
            v.and_then(yaml_serde::Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        let kind = text(value.get("kind"));
        let meta = value.get("metadata");
        let namespace = match text(meta.and_then(|m| m.get("namespace"))) {
            _ if CLUSTER_SCOPED.contains(&kind.as_str()) => String::new(),
            ns if ns.is_empty() => "default".to_string(),
            ns => ns,
        };
        out.push(LabObject {
            origin: input.shown.clone(),
            name: text(meta.and_then(|m| m.get("name"))),
            kind,
            namespace,
            yaml: yaml_serde::to_string(&value).map_err(|e| format!("{}: {e}", input.shown))?,
        });
    }
    Ok(out)
}

/// The objects of every input, or every file's problem.
pub fn parse_all(inputs: &[Input]) -> Result<Vec<LabObject>, LabError> {
    let mut objects = Vec::new();
    let mut problems = Vec::new();
    for input in inputs {
        match parse(input) {
            Ok(o) => objects.extend(o),
            Err(e) => problems.push(e),
        }
    }
    if problems.is_empty() {
        Ok(objects)
    } else {
        Err(LabError::Refused(problems))
    }
}

/// How given objects combine with the lab's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Add, or replace by key.
    Apply,
    /// The given objects become the lab's objects.
    Replace,
    /// Remove by key.
    Delete,
}

/// The lab's objects after `given` is applied to `current` in `mode`, or
/// every reason it cannot be.
pub fn merge(
    current: &[LabObject],
    given: &[LabObject],
    mode: Mode,
) -> Result<Vec<LabObject>, Vec<String>> {
    let mut problems: Vec<String> = given
        .iter()
        .filter(|o| o.kind == "Node")
        .map(|o| {
            format!(
                "{}: {}: the lab makes its own Nodes (use --nodes)",
                o.origin,
                o.what()
            )
        })
        .collect();
    let mut seen = BTreeSet::new();
    for o in given {
        if !o.name.is_empty() && !seen.insert(o.key()) {
            problems.push(format!("{}: {} is given twice", o.origin, o.what()));
        }
    }
    let merged = match mode {
        Mode::Replace => given.to_vec(),
        Mode::Apply => {
            let mut merged = current.to_vec();
            for o in given {
                match merged.iter_mut().find(|m| m.key() == o.key()) {
                    Some(m) => *m = o.clone(),
                    None => merged.push(o.clone()),
                }
            }
            merged
        }
        Mode::Delete => {
            for o in given {
                if !current.iter().any(|c| c.key() == o.key()) {
                    problems.push(format!("{}: {} is not in the lab", o.origin, o.what()));
                }
            }
            let gone_namespaces: BTreeSet<&str> = given
                .iter()
                .filter(|o| o.kind == "Namespace")
                .map(|o| o.name.as_str())
                .collect();
            current
                .iter()
                .filter(|c| !seen.contains(&c.key()))
                .filter(|c| !gone_namespaces.contains(c.namespace.as_str()))
                .cloned()
                .collect()
        }
    };
    if problems.is_empty() {
        Ok(merged)
    } else {
        Err(problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(text: &str) -> Input {
        Input {
            shown: "in.yaml".into(),
            file_name: "in.yaml".into(),
            text: text.into(),
        }
    }

    fn objects(text: &str) -> Vec<LabObject> {
        parse(&input(text)).unwrap()
    }

    fn keys(objects: &[LabObject]) -> Vec<String> {
        objects.iter().map(LabObject::what).collect()
    }

    const TWO: &str = "apiVersion: v1\nkind: Namespace\nmetadata: {name: team}\n---\n\
        # only a comment\n---\n\
        apiVersion: v1\nkind: Pod\nmetadata: {name: a, namespace: team}\nspec: {containers: [{name: c}]}\n---\n\
        apiVersion: v1\nkind: Service\nmetadata: {name: s}\n";

    #[test]
    fn documents_are_keyed_by_kind_namespace_and_name() {
        assert_eq!(
            keys(&objects(TWO)),
            ["Namespace team", "Pod team/a", "Service default/s"]
        );
        let e = parse(&input("kind: [unclosed\n")).unwrap_err();
        assert!(e.starts_with("in.yaml: "), "{e}");
        assert!(e.contains("line"), "{e}");
    }

    #[test]
    fn apply_replaces_by_key_and_adds() {
        let current = objects(TWO);
        let given = objects(
            "apiVersion: v1\nkind: Pod\nmetadata: {name: a, namespace: team, labels: {x: y}}\nspec: {containers: [{name: c}]}\n---\n\
             apiVersion: v1\nkind: Pod\nmetadata: {name: b, namespace: team}\nspec: {containers: [{name: c}]}\n",
        );
        let merged = merge(&current, &given, Mode::Apply).unwrap();
        assert_eq!(
            keys(&merged),
            [
                "Namespace team",
                "Pod team/a",
                "Service default/s",
                "Pod team/b"
            ]
        );
        assert!(merged[1].yaml.contains("x: y"));
        assert_eq!(
            keys(&merge(&current, &given, Mode::Replace).unwrap()),
            ["Pod team/a", "Pod team/b"]
        );
    }

    #[test]
    fn delete_removes_by_key_and_namespaces_take_their_objects() {
        let current = objects(TWO);
        let ns = objects("apiVersion: v1\nkind: Namespace\nmetadata: {name: team}\n");
        assert_eq!(
            keys(&merge(&current, &ns, Mode::Delete).unwrap()),
            ["Service default/s"]
        );
        let missing = objects("apiVersion: v1\nkind: Service\nmetadata: {name: t}\n");
        let problems = merge(&current, &missing, Mode::Delete).unwrap_err();
        assert_eq!(problems, ["in.yaml: Service default/t is not in the lab"]);
    }

    #[test]
    fn nodes_and_duplicates_are_refused() {
        let given = objects(
            "apiVersion: v1\nkind: Node\nmetadata: {name: node1}\n---\n\
             apiVersion: v1\nkind: Service\nmetadata: {name: s}\n---\n\
             apiVersion: v1\nkind: Service\nmetadata: {name: s, namespace: default}\n",
        );
        let problems = merge(&[], &given, Mode::Apply).unwrap_err();
        assert_eq!(
            problems,
            [
                "in.yaml: Node node1: the lab makes its own Nodes (use --nodes)",
                "in.yaml: Service default/s is given twice"
            ]
        );
    }
}
