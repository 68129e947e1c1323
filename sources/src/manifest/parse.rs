//! One manifest file to objects.
//!
//! Three passes over the text with yaml_serde's multi-document
//! `Deserializer`, each document parsed anew by each (one can be
//! deserialized only once): first to a `yaml_serde::Value`, to read
//! `apiVersion` and `kind`; then straight into the chosen `k8s-openapi`
//! type, so an error carries the field path and its line and column in the
//! file (yaml_serde's marks count from the start of the whole input, not of
//! the document); last, a probe that fails on each document's first node,
//! to learn the line every document starts on, for messages that name a
//! document rather than a field. The first error rejects the whole file;
//! iteration stops there (after a syntax error yaml_serde would return the
//! same error again and again).

use std::fmt;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use serde::Deserialize;
use yaml_serde::{Deserializer, Value};

use crate::Object;

/// Where an object came from: the file as shown to the operator, the
/// 1-based line and column of its document's first node, and the
/// document's 1-based index in the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Origin {
    pub file: Arc<str>,
    pub line: usize,
    pub column: usize,
    pub doc: usize,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

/// What one document holds.
#[derive(Clone, Debug)]
pub(super) enum Doc {
    Object(Object),
    /// Expanded into pods when the folder is resolved.
    Deployment(Deployment),
}

/// One document's object and where it came from.
#[derive(Clone, Debug)]
pub(super) struct Item {
    pub origin: Origin,
    pub doc: Doc,
}

/// What a file that parsed gave: its objects, and notes about documents
/// it ignored (replayed on every load while the file is unchanged).
#[derive(Clone, Debug, Default)]
pub(super) struct Parsed {
    pub items: Vec<Item>,
    pub notes: Vec<String>,
}

/// The type a document is read as, chosen by its `apiVersion` and `kind`.
#[derive(Clone, Copy, Debug)]
enum Target {
    Namespace,
    Node,
    Pod,
    Service,
    EndpointSlice,
    NetworkPolicy,
    Deployment,
}

impl Target {
    const ALL: [(Target, &'static str, &'static str); 7] = [
        (Target::Namespace, "v1", "Namespace"),
        (Target::Node, "v1", "Node"),
        (Target::Pod, "v1", "Pod"),
        (Target::Service, "v1", "Service"),
        (
            Target::EndpointSlice,
            "discovery.k8s.io/v1",
            "EndpointSlice",
        ),
        (
            Target::NetworkPolicy,
            "networking.k8s.io/v1",
            "NetworkPolicy",
        ),
        (Target::Deployment, "apps/v1", "Deployment"),
    ];

    /// The target for `api_version` and `kind`; when there is none, the
    /// API version the kind is read in, if it is read at all.
    fn of(api_version: &str, kind: &str) -> Result<Target, Option<&'static str>> {
        let mut known = None;
        for (target, version, name) in Target::ALL {
            if name == kind {
                if version == api_version {
                    return Ok(target);
                }
                known = Some(version);
            }
        }
        Err(known)
    }

    /// Reads one document as this target.
    fn read(self, de: Deserializer<'_>) -> Result<Doc, yaml_serde::Error> {
        let object = |o| Ok(Doc::Object(o));
        match self {
            Target::Namespace => object(Object::Namespace(Namespace::deserialize(de)?)),
            Target::Node => object(Object::Node(Node::deserialize(de)?)),
            Target::Pod => object(Object::Pod(Pod::deserialize(de)?)),
            Target::Service => object(Object::Service(Service::deserialize(de)?)),
            Target::EndpointSlice => object(Object::EndpointSlice(EndpointSlice::deserialize(de)?)),
            Target::NetworkPolicy => object(Object::NetworkPolicy(NetworkPolicy::deserialize(de)?)),
            Target::Deployment => Ok(Doc::Deployment(Deployment::deserialize(de)?)),
        }
    }
}

/// The two fields every Kubernetes object starts with.
#[derive(Deserialize)]
struct TypeMeta {
    #[serde(rename = "apiVersion")]
    api_version: String,
    kind: String,
}

/// What the first pass decided for one document.
enum Plan {
    /// Null: an empty document or one of comments only.
    Skip,
    Read(Target),
    /// Not a kind we read: the note, without its location yet.
    Ignore(String),
    /// No usable `apiVersion`/`kind`: read again as [`TypeMeta`] for the
    /// error's location.
    BadTypeMeta(yaml_serde::Error),
}

/// Parses one file. `file` is the path as shown in messages. An error is
/// the message for the operator: path, line, column and reason.
pub(super) fn parse_file(file: &str, text: &str) -> Result<Parsed, String> {
    let plans = plan(file, text)?;
    let mut docs = Vec::with_capacity(plans.len());
    for (plan, de) in plans.iter().zip(Deserializer::from_str(text)) {
        docs.push(match plan {
            Plan::Skip | Plan::Ignore(_) => None,
            Plan::Read(target) => Some(target.read(de).map_err(|e| describe(file, &e))?),
            Plan::BadTypeMeta(e) => {
                let located = TypeMeta::deserialize(de).err();
                return Err(describe(file, located.as_ref().unwrap_or(e)));
            }
        });
    }
    let starts = starts(text, plans.len());
    let file: Arc<str> = Arc::from(file);
    let mut parsed = Parsed::default();
    for (index, ((plan, doc), start)) in plans.into_iter().zip(docs).zip(starts).enumerate() {
        let (line, column) = start.unwrap_or((1, 1));
        let origin = Origin {
            file: file.clone(),
            line,
            column,
            doc: index + 1,
        };
        if let Plan::Ignore(note) = plan {
            parsed
                .notes
                .push(format!("{origin}:{column}: document {}: {note}", index + 1));
        }
        let Some(doc) = doc else { continue };
        if name_of(&doc).is_empty() {
            return Err(format!(
                "{origin}:{column}: document {}: {}: metadata.name is missing",
                index + 1,
                kind_of(&doc)
            ));
        }
        parsed.items.push(Item { origin, doc });
    }
    Ok(parsed)
}

/// First pass: each document to a `Value`, and what to read it as.
fn plan(file: &str, text: &str) -> Result<Vec<Plan>, String> {
    let mut plans = Vec::new();
    for de in Deserializer::from_str(text) {
        let value = Value::deserialize(de).map_err(|e| describe(file, &e))?;
        if value.is_null() {
            plans.push(Plan::Skip);
            continue;
        }
        let meta = match TypeMeta::deserialize(&value) {
            Ok(meta) => meta,
            Err(e) => {
                plans.push(Plan::BadTypeMeta(e));
                break;
            }
        };
        plans.push(match Target::of(&meta.api_version, &meta.kind) {
            Ok(target) => Plan::Read(target),
            Err(known) => {
                let name = value
                    .get("metadata")
                    .and_then(|m| m.get("name"))
                    .and_then(Value::as_str)
                    .unwrap_or("(no name)");
                let what = format!("{} {} {name}", meta.api_version, meta.kind);
                Plan::Ignore(match known {
                    Some(version) => {
                        format!("{what}: {} is read only as {version}; ignored", meta.kind)
                    }
                    None => format!("{what}: not a kind the manifest source reads; ignored"),
                })
            }
        });
    }
    Ok(plans)
}

/// Last pass: the line and column of the first node of each of the first
/// `count` documents, from the error a unit probe gives on it.
fn starts(text: &str, count: usize) -> Vec<Option<(usize, usize)>> {
    Deserializer::from_str(text)
        .take(count)
        .map(|de| {
            let loc = <()>::deserialize(de).err()?.location()?;
            Some((loc.line(), loc.column()))
        })
        .collect()
}

/// `path:line:column: reason`, the reason without yaml_serde's own
/// "at line L column C" (it is in front already).
fn describe(file: &str, e: &yaml_serde::Error) -> String {
    let message = e.to_string();
    match e.location().map(|l| (l.line(), l.column())) {
        Some((line, column)) => {
            let at = format!(" at line {line} column {column}");
            let message = message.replacen(&at, "", 1);
            format!("{file}:{line}:{column}: {message}")
        }
        None => format!("{file}: {message}"),
    }
}

fn name_of(doc: &Doc) -> String {
    match doc {
        Doc::Object(o) => o.key().name,
        Doc::Deployment(d) => d.metadata.name.clone().unwrap_or_default(),
    }
}

fn kind_of(doc: &Doc) -> &'static str {
    match doc {
        Doc::Object(o) => o.kind().name(),
        Doc::Deployment(_) => "Deployment",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: demo\n\
                        ---\n\
                        apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  namespace: demo\n\
                        spec:\n  selector:\n    app: web\n  ports:\n  - name: http\n    port: 80\n\
                        \x20   targetPort: http\n";

    #[test]
    fn documents_and_their_lines() {
        let parsed = parse_file("m/a.yaml", &format!("# header\n---\n{GOOD}")).unwrap();
        assert_eq!(parsed.items.len(), 2);
        assert_eq!(parsed.items[0].origin.to_string(), "m/a.yaml:3");
        assert_eq!(parsed.items[1].origin.to_string(), "m/a.yaml:8");
        assert_eq!(parsed.items[1].origin.doc, 2);
        assert!(parsed.notes.is_empty());
    }

    #[test]
    fn wrong_api_version_is_ignored_with_a_note() {
        let text = "apiVersion: extensions/v1beta1\nkind: Deployment\nmetadata:\n  name: old\n";
        let parsed = parse_file("a.yaml", text).unwrap();
        assert!(parsed.items.is_empty());
        assert_eq!(
            parsed.notes,
            vec![
                "a.yaml:1:1: document 1: extensions/v1beta1 Deployment old: Deployment is read \
                 only as apps/v1; ignored"
                    .to_owned()
            ]
        );
    }

    #[test]
    fn errors_carry_line_column_and_field() {
        let text = GOOD.replace("port: 80", "port: 80x");
        let e = parse_file("a.yaml", &text).unwrap_err();
        assert_eq!(
            e,
            "a.yaml:16:11: spec.ports[0].port: invalid type: string \"80x\", expected i32"
        );
        let e = parse_file("a.yaml", "apiVersion: v1\nmetadata: {}\n").unwrap_err();
        assert!(e.starts_with("a.yaml:1:1: missing field `kind`"), "{e}");
        let e = parse_file("a.yaml", "just a string\n").unwrap_err();
        assert!(e.starts_with("a.yaml:1:1: invalid type: string"), "{e}");
        let e = parse_file("a.yaml", "a: [1\n").unwrap_err();
        assert!(e.starts_with("a.yaml:2:1: "), "{e}");
        let e = parse_file(
            "a.yaml",
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: 7\nspec: 3\n",
        )
        .unwrap_err();
        assert!(
            e.starts_with("a.yaml:5:7: spec: invalid type: integer `3`"),
            "{e}"
        );
    }

    #[test]
    fn kubectl_style_scalars_are_accepted() {
        // Quantities as numbers, a target port by name, a number as a name.
        let text = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: 7\nspec:\n  containers:\n\
                    \x20 - name: c\n    resources:\n      limits:\n        cpu: 1\n        memory: 1.5\n";
        let parsed = parse_file("a.yaml", text).unwrap();
        let Doc::Object(Object::Pod(pod)) = &parsed.items[0].doc else {
            panic!("not a pod")
        };
        assert_eq!(pod.metadata.name.as_deref(), Some("7"));
    }
}
