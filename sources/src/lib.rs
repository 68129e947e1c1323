//! Where the agent's objects come from: the Kubernetes API (`kube`) or a
//! folder of manifests (`manifest`). Both hand the reconciler the same
//! Kubernetes objects (the `k8s-openapi` types) as [`SourceEvent`]s, so the
//! same objects give the same tables whichever source they came from.
//!
//! Who writes, who reads: a source's thread (or task) sends events on a
//! channel; the reconciler's thread is the only reader and owns the store.
//!
//! It owns watching and parsing; it depends on `tables` (for CIDRs),
//! kube-rs, k8s-openapi and serde, and must never depend on the agent, the
//! dataplane or the local API: the lab plans its manifest folder with the
//! same parser the agent reads it with.

pub mod kube;
pub mod manifest;

use std::fmt;

use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::NetworkPolicy;

/// The kinds of object that shape forwarding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Namespace,
    Node,
    Pod,
    Service,
    EndpointSlice,
    NetworkPolicy,
}

impl Kind {
    /// Every kind, in the order a full load applies them.
    pub const ALL: [Kind; 6] = [
        Kind::Namespace,
        Kind::Node,
        Kind::Pod,
        Kind::Service,
        Kind::EndpointSlice,
        Kind::NetworkPolicy,
    ];

    /// The Kubernetes `kind` name.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Namespace => "Namespace",
            Kind::Node => "Node",
            Kind::Pod => "Pod",
            Kind::Service => "Service",
            Kind::EndpointSlice => "EndpointSlice",
            Kind::NetworkPolicy => "NetworkPolicy",
        }
    }
}

/// Identifies one object: kind, namespace (empty for cluster-scoped kinds)
/// and name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{} {}", self.kind.name(), self.name)
        } else {
            write!(f, "{} {}/{}", self.kind.name(), self.namespace, self.name)
        }
    }
}

/// One Kubernetes object of a kind the tables use. (Variants differ in
/// size; objects live in the store and move a few times per change, on the
/// control path, so they are not boxed.)
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum Object {
    Namespace(Namespace),
    Node(Node),
    Pod(Pod),
    Service(Service),
    EndpointSlice(EndpointSlice),
    NetworkPolicy(NetworkPolicy),
}

impl Object {
    /// The object's kind.
    pub fn kind(&self) -> Kind {
        match self {
            Object::Namespace(_) => Kind::Namespace,
            Object::Node(_) => Kind::Node,
            Object::Pod(_) => Kind::Pod,
            Object::Service(_) => Kind::Service,
            Object::EndpointSlice(_) => Kind::EndpointSlice,
            Object::NetworkPolicy(_) => Kind::NetworkPolicy,
        }
    }

    fn meta(&self) -> &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
        match self {
            Object::Namespace(o) => &o.metadata,
            Object::Node(o) => &o.metadata,
            Object::Pod(o) => &o.metadata,
            Object::Service(o) => &o.metadata,
            Object::EndpointSlice(o) => &o.metadata,
            Object::NetworkPolicy(o) => &o.metadata,
        }
    }

    /// The object's key. Cluster-scoped kinds have an empty namespace; a
    /// namespaced object without one is in `default`, as `kubectl apply`
    /// would put it.
    pub fn key(&self) -> ObjectKey {
        let meta = self.meta();
        let namespace = match self.kind() {
            Kind::Namespace | Kind::Node => String::new(),
            _ => meta
                .namespace
                .clone()
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| "default".to_owned()),
        };
        ObjectKey {
            kind: self.kind(),
            namespace,
            name: meta.name.clone().unwrap_or_default(),
        }
    }
}

/// What a source tells the reconciler.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub enum SourceEvent {
    /// The complete current set of objects of `kinds`: objects of those
    /// kinds that are not in `objects` are gone. A source sends this after
    /// its initial list (and after a relist), the manifest source after
    /// every change of its folder.
    Replace {
        kinds: Vec<Kind>,
        objects: Vec<Object>,
    },
    /// An object was added or changed.
    Apply(Object),
    /// An object was deleted.
    Delete(ObjectKey),
    /// Whether the source is in sync with its origin (the API server
    /// reachable and every watch listed; the folder read). Readiness
    /// follows it; the tables in force stay either way.
    Synced(bool),
    /// A problem with the source's input, for the operator: names the
    /// object or the file (path, line) and says what is wrong.
    Warning(String),
    /// What the objects sent so far were read from (the manifest source:
    /// a hash of its files, see `manifest::folder_revision`). Sent after
    /// the `Replace` it belongs to, and alone when only text the objects
    /// do not depend on changed.
    Revision(String),
}
