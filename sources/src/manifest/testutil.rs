//! Helpers for the manifest source's tests: a temporary folder and lookups
//! in a [`Loaded`].

use std::path::Path;

use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use tables::model::Cidr;

use super::Loaded;
use crate::Object;

/// A temporary folder, removed when dropped.
pub(super) struct TempDir(tempfile::TempDir);

impl TempDir {
    pub fn new() -> TempDir {
        TempDir(tempfile::tempdir().expect("temporary folder"))
    }

    pub fn path(&self) -> &Path {
        self.0.path()
    }

    /// Writes a file in one step (a temporary file renamed over it), as
    /// editors do, so a reader never sees it half written.
    pub fn write(&self, name: &str, text: &str) {
        let tmp = self.path().join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text).expect("write");
        std::fs::rename(&tmp, self.path().join(name)).expect("rename");
    }

    pub fn remove(&self, name: &str) {
        std::fs::remove_file(self.path().join(name)).expect("remove");
    }
}

pub(super) fn cidr(s: &str) -> Cidr {
    s.parse().expect("CIDR")
}

/// The folder loaded with service CIDR 10.96.0.0/12.
pub(super) fn load(dir: &TempDir) -> Loaded {
    super::load_dir(dir.path(), cidr("10.96.0.0/12"))
}

/// Node manifests, one document per `(name, podCIDR)`.
pub(super) fn nodes(list: &[(&str, &str)]) -> String {
    list.iter()
        .map(|(name, cidr)| {
            format!(
                "apiVersion: v1\nkind: Node\nmetadata:\n  name: {name}\nspec:\n  podCIDR: {cidr}\n\
                 status:\n  addresses:\n  - {{type: InternalIP, address: 198.18.0.{}}}\n",
                name.trim_start_matches(|c: char| !c.is_ascii_digit())
            )
        })
        .collect::<Vec<_>>()
        .join("---\n")
}

pub(super) fn namespace<'a>(loaded: &'a Loaded, name: &str) -> &'a Namespace {
    loaded
        .objects
        .iter()
        .find_map(|o| match o {
            Object::Namespace(n) if n.metadata.name.as_deref() == Some(name) => Some(n),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no namespace {name}"))
}

pub(super) fn pod_opt<'a>(loaded: &'a Loaded, ns: &str, name: &str) -> Option<&'a Pod> {
    loaded.objects.iter().find_map(|o| match o {
        Object::Pod(p)
            if p.metadata.namespace.as_deref() == Some(ns)
                && p.metadata.name.as_deref() == Some(name) =>
        {
            Some(p)
        }
        _ => None,
    })
}

pub(super) fn pod<'a>(loaded: &'a Loaded, ns: &str, name: &str) -> &'a Pod {
    pod_opt(loaded, ns, name).unwrap_or_else(|| panic!("no pod {ns}/{name}"))
}

/// The pods of namespace `ns`, in key order.
pub(super) fn pods_of<'a>(loaded: &'a Loaded, ns: &str) -> Vec<&'a Pod> {
    loaded
        .objects
        .iter()
        .filter_map(|o| match o {
            Object::Pod(p) if p.metadata.namespace.as_deref() == Some(ns) => Some(p),
            _ => None,
        })
        .collect()
}

pub(super) fn service_opt<'a>(loaded: &'a Loaded, ns: &str, name: &str) -> Option<&'a Service> {
    loaded.objects.iter().find_map(|o| match o {
        Object::Service(s)
            if s.metadata.namespace.as_deref() == Some(ns)
                && s.metadata.name.as_deref() == Some(name) =>
        {
            Some(s)
        }
        _ => None,
    })
}

pub(super) fn service<'a>(loaded: &'a Loaded, ns: &str, name: &str) -> &'a Service {
    service_opt(loaded, ns, name).unwrap_or_else(|| panic!("no service {ns}/{name}"))
}

/// The endpoint slices naming service `ns/name`, in key order.
pub(super) fn slices_of<'a>(loaded: &'a Loaded, ns: &str, name: &str) -> Vec<&'a EndpointSlice> {
    loaded
        .objects
        .iter()
        .filter_map(|o| match o {
            Object::EndpointSlice(s)
                if s.metadata.namespace.as_deref() == Some(ns)
                    && s.metadata
                        .labels
                        .as_ref()
                        .and_then(|l| l.get("kubernetes.io/service-name"))
                        .map(String::as_str)
                        == Some(name) =>
            {
                Some(s)
            }
            _ => None,
        })
        .collect()
}
