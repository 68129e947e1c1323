//! The folder's documents to the objects a cluster would hold: namespaces
//! filled in, duplicates dropped, deployments expanded, then pods placed,
//! services allocated and endpoint slices derived, in that order (each step
//! reads what the one before it settled). Pure: same documents, same
//! objects and notes.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use tables::model::Cidr;

use super::parse::{Doc, Item, Origin};
use super::{deployment, endpoints, pods, services};
use crate::{Kind, Object, ObjectKey};

/// The label the API server puts on every namespace.
pub(super) const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// An object and the document it came from (a deployment's, for its pods).
#[derive(Clone, Debug)]
pub(super) struct Sourced<T> {
    pub origin: Origin,
    pub object: T,
}

/// The objects by kind, each list in key order once collected.
#[derive(Default)]
struct Cluster {
    seen: BTreeMap<ObjectKey, Origin>,
    namespaces: Vec<Namespace>,
    nodes: Vec<Node>,
    pods: Vec<Sourced<Pod>>,
    services: Vec<Sourced<Service>>,
    slices: Vec<EndpointSlice>,
    policies: Vec<NetworkPolicy>,
}

impl Cluster {
    /// Adds `object` unless an object with its key came first.
    fn add(&mut self, origin: Origin, object: Object, notes: &mut Vec<String>) {
        let key = object.key();
        if let Some(first) = self.seen.get(&key) {
            notes.push(format!(
                "{origin}: {key} is also defined at {first}; the first definition is used"
            ));
            return;
        }
        self.seen.insert(key, origin.clone());
        match object {
            Object::Namespace(o) => self.namespaces.push(o),
            Object::Node(o) => self.nodes.push(o),
            Object::Pod(object) => self.pods.push(Sourced { origin, object }),
            Object::Service(object) => self.services.push(Sourced { origin, object }),
            Object::EndpointSlice(o) => self.slices.push(o),
            Object::NetworkPolicy(o) => self.policies.push(o),
        }
    }
}

/// Every object of the folder, sorted by key, and the notes for the
/// operator.
pub(super) fn resolve(items: Vec<Item>, service_cidr: Cidr) -> (Vec<Object>, Vec<String>) {
    let mut notes = Vec::new();
    let mut cluster = Cluster::default();
    let mut deployments: Vec<Sourced<Deployment>> = Vec::new();
    let mut deployment_keys = BTreeMap::new();
    for Item { origin, doc } in items {
        match doc {
            Doc::Object(mut object) => {
                set_namespace(&mut object);
                cluster.add(origin, object, &mut notes);
            }
            Doc::Deployment(mut d) => {
                let namespace = namespace_or_default(&d.metadata);
                d.metadata.namespace = Some(namespace.clone());
                let key = format!(
                    "{namespace}/{}",
                    d.metadata.name.clone().unwrap_or_default()
                );
                if let Some(first) = deployment_keys.get(&key) {
                    notes.push(format!(
                        "{origin}: Deployment {key} is also defined at {first}; the first \
                         definition is used"
                    ));
                    continue;
                }
                deployment_keys.insert(key, origin.clone());
                deployments.push(Sourced { origin, object: d });
            }
        }
    }
    for d in &deployments {
        for pod in deployment::expand(&d.object, &d.origin, &mut notes) {
            cluster.add(d.origin.clone(), Object::Pod(pod), &mut notes);
        }
    }

    let Cluster {
        seen,
        mut namespaces,
        mut nodes,
        mut pods,
        mut services,
        mut slices,
        policies,
    } = cluster;
    nodes.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    pods.sort_by(|a, b| ns_name(&a.object.metadata).cmp(&ns_name(&b.object.metadata)));
    services.sort_by(|a, b| ns_name(&a.object.metadata).cmp(&ns_name(&b.object.metadata)));

    pods::place(&mut pods, &nodes, &mut notes);
    services::allocate(&mut services, service_cidr, &mut notes);
    let pods: Vec<Pod> = pods.into_iter().map(|p| p.object).collect();
    let services: Vec<Service> = services.into_iter().map(|s| s.object).collect();
    let taken: BTreeSet<(String, String)> = seen
        .keys()
        .filter(|k| k.kind == Kind::EndpointSlice)
        .map(|k| (k.namespace.clone(), k.name.clone()))
        .collect();
    slices.extend(endpoints::derive(&services, &pods, &nodes, &slices, &taken));

    let mut used: BTreeSet<String> = seen.keys().map(|k| k.namespace.clone()).collect();
    used.extend(slices.iter().filter_map(|s| s.metadata.namespace.clone()));
    used.remove("");
    for ns in &namespaces {
        used.remove(ns.metadata.name.as_deref().unwrap_or_default());
    }
    namespaces.extend(used.into_iter().map(|name| Namespace {
        metadata: ObjectMeta {
            name: Some(name),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    }));
    for ns in &mut namespaces {
        let name = ns.metadata.name.clone().unwrap_or_default();
        ns.metadata
            .labels
            .get_or_insert_with(BTreeMap::new)
            .insert(NAMESPACE_NAME_LABEL.to_owned(), name);
    }

    let mut objects: Vec<Object> = namespaces.into_iter().map(Object::Namespace).collect();
    objects.extend(nodes.into_iter().map(Object::Node));
    objects.extend(pods.into_iter().map(Object::Pod));
    objects.extend(services.into_iter().map(Object::Service));
    objects.extend(slices.into_iter().map(Object::EndpointSlice));
    objects.extend(policies.into_iter().map(Object::NetworkPolicy));
    objects.sort_by_cached_key(Object::key);
    (objects, notes)
}

/// A namespaced object's namespace, `default` when unset.
pub(super) fn namespace_or_default(meta: &ObjectMeta) -> String {
    meta.namespace
        .clone()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "default".to_owned())
}

/// Namespace and name, the order objects of one kind are taken in.
pub(super) fn ns_name(meta: &ObjectMeta) -> (&str, &str) {
    (
        meta.namespace.as_deref().unwrap_or_default(),
        meta.name.as_deref().unwrap_or_default(),
    )
}

/// Writes the namespace the object's key implies: `default` when a
/// namespaced object has none, none for a cluster-scoped one.
fn set_namespace(object: &mut Object) {
    let key = object.key();
    let meta = match object {
        Object::Namespace(o) => &mut o.metadata,
        Object::Node(o) => &mut o.metadata,
        Object::Pod(o) => &mut o.metadata,
        Object::Service(o) => &mut o.metadata,
        Object::EndpointSlice(o) => &mut o.metadata,
        Object::NetworkPolicy(o) => &mut o.metadata,
    };
    meta.namespace = (!key.namespace.is_empty()).then_some(key.namespace);
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;

    #[test]
    fn namespaces_are_defaulted_and_made_up() {
        let dir = TempDir::new();
        dir.write(
            "a.yaml",
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  ports: [{port: 80}]\n\
             ---\n\
             apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: p\n\
             \x20 namespace: team\nspec:\n  podSelector: {}\n\
             ---\n\
             apiVersion: v1\nkind: Node\nmetadata:\n  name: n\n  namespace: bogus\n",
        );
        let loaded = super::super::load_dir(dir.path(), cidr("10.96.0.0/12"));
        let svc = service(&loaded, "default", "web");
        assert_eq!(svc.metadata.namespace.as_deref(), Some("default"));
        for name in ["default", "team"] {
            let ns = namespace(&loaded, name);
            assert_eq!(
                ns.metadata.labels.as_ref().unwrap()[NAMESPACE_NAME_LABEL],
                name
            );
        }
        assert!(loaded
            .objects
            .iter()
            .all(|o| o.key().to_string() != "Namespace bogus"));
        let Some(Object::Node(node)) = loaded.objects.iter().find(|o| o.kind() == Kind::Node)
        else {
            panic!("no node")
        };
        assert_eq!(node.metadata.namespace, None);
    }
}
