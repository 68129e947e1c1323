//! The manifest source: a folder of ordinary Kubernetes YAML manifests read
//! as if it were a cluster, so a lab or a test runs the agent without an API
//! server and gets the same tables the Kubernetes source would give for the
//! same objects.
//!
//! Who writes, who reads: [`ManifestSource`]'s thread reads the folder (at
//! start and after every change, debounced ~100 ms) and sends [`Warning`]s,
//! then a full [`Replace`] of every kind, on the reconciler's channel; the
//! reconciler is the only reader. [`load_dir`] and [`ManifestLoader`] do the
//! same load without a thread, for tests and one-shot tools.
//!
//! What is read: every `*.yaml` / `*.yml` file directly in the folder (not
//! in subfolders; names starting with `.`, such as editors' swap and lock
//! files, are skipped), in name order, each one or more documents separated
//! by `---`. Accepted: `v1` Namespace, Node, Pod and Service,
//! `apps/v1` Deployment, `discovery.k8s.io/v1` EndpointSlice and
//! `networking.k8s.io/v1` NetworkPolicy. Other kinds (a ConfigMap, say) are
//! ignored with a warning naming the file, line and document; empty
//! documents are skipped. When two documents define the same object, the
//! first (in file order) is used and the other is reported.
//!
//! Errors: a file that does not parse (YAML syntax, a field that does not
//! fit its type, an object without a name) is reported as one warning,
//! `path:line:column: field.path: reason`, and the objects it last gave
//! while it was good stay in force; the other files apply normally.
//!
//! What is filled in, as the API server and controllers would:
//! - Namespaced objects without a namespace are in `default`. Namespaces get
//!   the `kubernetes.io/metadata.name` label; a namespace that objects use
//!   but no manifest declares is made up (with that label only).
//! - A Deployment becomes `replicas` (default 1) Pods named
//!   `<deployment>-<10-char hash>-<5-char suffix>`, the hash taken from the
//!   deployment's namespace, name and template, the suffix from the hash and
//!   the replica's index: the same folder gives the same names every time.
//!   They carry the template's labels plus `pod-template-hash`, its
//!   annotations and its spec, in the deployment's namespace.
//! - Pods: container ports default to TCP. A pod without `spec.nodeName`
//!   is scheduled round robin over the folder's Nodes sorted by name, pods
//!   taken in (namespace, name) order. A pod without `status.podIP` gets the
//!   first free address from `.10` upward in its node's `spec.podCIDR`
//!   (never the last address, never one another pod's manifest gives), pods
//!   in (namespace, name) order; a `hostNetwork` pod gets its node's
//!   InternalIP. `podIPs`, `hostIP(s)`, `phase` (`Running` with an address,
//!   else `Pending`) and a `Ready` condition (`True` when Running) are set
//!   unless the manifest sets them. Without nodes, or on a node without a
//!   podCIDR, a pod stays unscheduled or without an address, with a warning.
//! - Services: `type` ClusterIP, `sessionAffinity` None,
//!   `internalTrafficPolicy` Cluster (and `externalTrafficPolicy` Cluster
//!   for NodePort and LoadBalancer), `ipFamilies` IPv4 / SingleStack, port
//!   `protocol` TCP and `targetPort` = `port`. A missing cluster IP (not
//!   `None`, not ExternalName) is allocated from the service CIDR given to
//!   the loader: start at a stable hash of `namespace/name` and probe
//!   upward, never the network or broadcast address, never the first
//!   address (reserved for `default/kubernetes`, which gets it), never an
//!   address a manifest sets.
//!   Missing `nodePort`s of NodePort and LoadBalancer services (and the
//!   `healthCheckNodePort` of a LoadBalancer with the Local policy) come
//!   from 30000-32767 the same way, by a hash of the service and port.
//!   Explicit values are kept (and reported if outside the range or taken
//!   twice).
//! - EndpointSlices: for a Service with a selector that no EndpointSlice in
//!   the folder names (label `kubernetes.io/service-name`), slices are
//!   derived as the EndpointSlice controller would: the pods of the
//!   namespace that match, have an IPv4 address and have not finished
//!   (Succeeded, Failed); ready and serving from the pod's `Ready`
//!   condition (`ready` also false while terminating, unless
//!   `publishNotReadyAddresses`), `terminating` from `deletionTimestamp`;
//!   one slice per distinct set of resolved ports (a named `targetPort` is
//!   looked up in each pod's containers), at most 100 endpoints each,
//!   named `<service>-<stable suffix>` and labelled
//!   `endpointslice.kubernetes.io/managed-by: podswitch-manifests`.
//!
//! Not done: other workload kinds (DaemonSet, StatefulSet, ReplicaSet, Job)
//! are ignored like any unknown kind; YAML merge keys (`<<`) are not
//! applied; node taints and `unschedulable` do not steer scheduling.
//!
//! Allocation is a pure function of the folder's contents: the same files
//! give the same names, addresses and ports on every load and machine.
//! Adding an object can move the answers of objects after it in the order
//! above (round robin, first free address); hashed ones (cluster IPs, node
//! ports) move only on a collision.
//!
//! [`Warning`]: super::SourceEvent::Warning
//! [`Replace`]: super::SourceEvent::Replace

mod deployment;
mod endpoints;
mod names;
mod parse;
mod pods;
mod resolve;
mod services;
mod watch;

#[cfg(test)]
mod testutil;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use tables::model::Cidr;

use super::Object;

pub use watch::{ManifestSource, WatchMode, POLL_INTERVAL};

/// The result of reading the folder once.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Loaded {
    /// Every object, defaults and allocations applied, sorted by key.
    pub objects: Vec<Object>,
    /// Problems for the operator, each naming the file (and line) or the
    /// object at fault.
    pub warnings: Vec<String>,
}

/// Why the manifest folder cannot be used at all.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest folder {path} does not exist or is not a folder")]
    NotAFolder { path: PathBuf },
    #[error("cannot read manifest folder {path}: {source}")]
    ReadFolder {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot start the manifest source thread: {0}")]
    Spawn(std::io::Error),
}

/// Reads a folder again and again, keeping for each file the objects of its
/// last good version, so a file saved half-edited does not take its objects
/// away.
#[derive(Debug)]
pub struct ManifestLoader {
    dir: PathBuf,
    service_cidr: Cidr,
    files: BTreeMap<OsString, CachedFile>,
}

/// A file's last good text and what it gave.
#[derive(Debug)]
struct CachedFile {
    text: String,
    parsed: parse::Parsed,
}

impl ManifestLoader {
    /// A loader for `dir`; nothing is read until [`reload`](Self::reload).
    pub fn new(dir: PathBuf, service_cidr: Cidr) -> ManifestLoader {
        ManifestLoader {
            dir,
            service_cidr,
            files: BTreeMap::new(),
        }
    }

    /// The folder read.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Reads every manifest file again and computes the objects. A file
    /// that cannot be read or parsed gives a warning and its last good
    /// objects. Fails only when the folder itself cannot be listed; the
    /// last good objects of every file are kept for the next reload.
    pub fn reload(&mut self) -> Result<Loaded, ManifestError> {
        let names = list_manifests(&self.dir)?;
        let mut warnings = Vec::new();
        self.files.retain(|name, _| names.contains(name));
        for name in &names {
            let path = self.dir.join(name);
            let shown = path.display().to_string();
            let text = match std::fs::read_to_string(&path) {
                Ok(text) => text,
                Err(e) => {
                    warnings.push(format!("{shown}: cannot read: {e}{}", self.kept(name)));
                    continue;
                }
            };
            if self.files.get(name).is_some_and(|c| c.text == text) {
                continue;
            }
            match parse::parse_file(&shown, &text) {
                Ok(parsed) => {
                    self.files.insert(name.clone(), CachedFile { text, parsed });
                }
                Err(e) => warnings.push(format!("{e}{}", self.kept(name))),
            }
        }
        let mut items = Vec::new();
        for cached in self.files.values() {
            warnings.extend(cached.parsed.notes.iter().cloned());
            items.extend(cached.parsed.items.iter().cloned());
        }
        let (objects, notes) = resolve::resolve(items, self.service_cidr);
        warnings.extend(notes);
        Ok(Loaded { objects, warnings })
    }

    /// What the objects of the last [`reload`](Self::reload) were read
    /// from: a hash of the names and texts of the files in use. Equal to
    /// [`folder_revision`] of the folder when every file could be used.
    pub fn revision(&self) -> String {
        revision_of(
            self.files
                .iter()
                .map(|(name, cached)| (name.to_string_lossy(), cached.text.as_str())),
        )
    }

    /// What a warning about an unusable file adds: whether its last good
    /// objects stay.
    fn kept(&self, name: &OsString) -> &'static str {
        if self.files.contains_key(name) {
            " (its last good objects stay in force)"
        } else {
            ""
        }
    }
}

/// Reads `dir` once: the objects and the warnings. A folder that cannot be
/// listed gives no objects and one warning.
pub fn load_dir(dir: &Path, service_cidr: Cidr) -> Loaded {
    let mut loader = ManifestLoader::new(dir.to_path_buf(), service_cidr);
    loader.reload().unwrap_or_else(|e| Loaded {
        objects: Vec::new(),
        warnings: vec![e.to_string()],
    })
}

/// The revision a loader of `dir` reports once it has read every file as
/// it is now (see [`ManifestLoader::revision`]): lets whoever writes the
/// folder wait until an agent has its files in force.
pub fn folder_revision(dir: &Path) -> Result<String, ManifestError> {
    let mut files = Vec::new();
    for name in list_manifests(dir)? {
        let path = dir.join(&name);
        let text = std::fs::read_to_string(&path).map_err(|source| ManifestError::ReadFolder {
            path: path.clone(),
            source,
        })?;
        files.push((name, text));
    }
    Ok(revision_of(files.iter().map(|(name, text)| {
        (name.to_string_lossy(), text.as_str())
    })))
}

/// A stable hash of (file name, text) pairs taken in name order.
fn revision_of<'a>(files: impl Iterator<Item = (std::borrow::Cow<'a, str>, &'a str)>) -> String {
    let mut parts = Vec::new();
    for (name, text) in files {
        parts.push(name);
        parts.push(std::borrow::Cow::Borrowed(text));
    }
    let parts: Vec<&str> = parts.iter().map(|p| p.as_ref()).collect();
    format!("{:016x}", names::stable_hash(&parts))
}

/// Whether a directory entry's name is one of a manifest file.
fn is_manifest_name(name: &std::ffi::OsStr) -> bool {
    let Some(name) = name.to_str() else {
        return false;
    };
    let lower = name.to_ascii_lowercase();
    !name.starts_with('.') && (lower.ends_with(".yaml") || lower.ends_with(".yml"))
}

/// The manifest files of `dir` (regular files, or links to them), by name.
fn list_manifests(dir: &Path) -> Result<Vec<OsString>, ManifestError> {
    let entries = std::fs::read_dir(dir).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            ManifestError::NotAFolder {
                path: dir.to_path_buf(),
            }
        } else {
            ManifestError::ReadFolder {
                path: dir.to_path_buf(),
                source,
            }
        }
    })?;
    let mut names: Vec<OsString> = entries
        .filter_map(Result::ok)
        .filter(|e| is_manifest_name(&e.file_name()))
        .filter(|e| std::fs::metadata(e.path()).is_ok_and(|m| m.is_file()))
        .map(|e| e.file_name())
        .collect();
    names.sort();
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::testutil::*;
    use super::*;

    #[test]
    fn reads_every_kind_from_multi_document_files() {
        let dir = TempDir::new();
        dir.write(
            "a.yaml",
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: demo\n  labels:\n    team: a\n\
             ---\n\
             apiVersion: v1\nkind: Node\nmetadata:\n  name: node1\nspec:\n  podCIDR: 10.244.1.0/24\n\
             ---\n\
             apiVersion: v1\nkind: Pod\nmetadata:\n  name: web-1\n  namespace: demo\n\
             spec:\n  containers:\n  - name: web\n    image: nginx\n",
        );
        dir.write(
            "b.yml",
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  namespace: demo\n\
             spec:\n  ports:\n  - port: 80\n\
             ---\n\
             apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: web-x\n\
             \x20 namespace: demo\n  labels:\n    kubernetes.io/service-name: web\n\
             addressType: IPv4\nendpoints: []\n\
             ---\n\
             apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: deny\n\
             \x20 namespace: demo\nspec:\n  podSelector: {}\n\
             ---\n\
             apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: api\n  namespace: demo\n\
             spec:\n  selector:\n    matchLabels:\n      app: api\n  template:\n    metadata:\n\
             \x20     labels:\n        app: api\n    spec:\n      containers:\n      - name: api\n",
        );
        dir.write("notes.txt", "not a manifest");
        dir.write(".a.yaml.swp", "not a manifest");
        let loaded = load_dir(dir.path(), cidr("10.96.0.0/12"));
        assert_eq!(loaded.warnings, Vec::<String>::new());
        let keys: Vec<String> = loaded.objects.iter().map(|o| o.key().to_string()).collect();
        assert_eq!(keys.len(), 7, "{keys:?}");
        assert_eq!(keys[0], "Namespace demo");
        assert_eq!(keys[1], "Node node1");
        assert!(keys[2].starts_with("Pod demo/api-"), "{keys:?}");
        assert_eq!(keys[3], "Pod demo/web-1");
        assert_eq!(keys[4], "Service demo/web");
        assert_eq!(keys[5], "EndpointSlice demo/web-x");
        assert_eq!(keys[6], "NetworkPolicy demo/deny");
        let ns = namespace(&loaded, "demo");
        let labels = ns.metadata.labels.as_ref().unwrap();
        assert_eq!(labels["team"], "a");
        assert_eq!(labels["kubernetes.io/metadata.name"], "demo");
    }

    #[test]
    fn unknown_kinds_and_empty_documents() {
        let dir = TempDir::new();
        dir.write(
            "mixed.yaml",
            "---\n# only a comment\n---\n\
             apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  a: b\n\
             ---\n---\n\
             apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n",
        );
        dir.write("empty.yaml", "");
        let loaded = load_dir(dir.path(), cidr("10.96.0.0/12"));
        let file = dir.path().join("mixed.yaml").display().to_string();
        assert!(
            loaded
                .warnings
                .iter()
                .any(|w| w.starts_with(&format!("{file}:4:"))
                    && w.contains("document 2")
                    && w.contains("ConfigMap settings")),
            "{:?}",
            loaded.warnings
        );
        assert!(pod_opt(&loaded, "default", "p").is_some());
        // No nodes: the pod is reported unscheduled.
        assert!(
            loaded.warnings.iter().any(|w| w.contains("no Node")),
            "{:?}",
            loaded.warnings
        );
    }

    #[test]
    fn missing_folder_is_reported() {
        let dir = TempDir::new();
        let missing = dir.path().join("nope");
        let loaded = load_dir(&missing, cidr("10.96.0.0/12"));
        assert!(loaded.objects.is_empty());
        assert_eq!(loaded.warnings.len(), 1);
        assert!(loaded.warnings[0].contains(&missing.display().to_string()));
    }

    #[test]
    fn bad_document_in_the_middle_names_path_line_and_field() {
        let dir = TempDir::new();
        let good = "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  ports:\n  - port: 80\n";
        dir.write("web.yaml", good);
        let mut loader = ManifestLoader::new(dir.path().to_path_buf(), cidr("10.96.0.0/12"));
        let first = loader.reload().unwrap();
        assert!(first.warnings.is_empty(), "{:?}", first.warnings);
        assert!(service_opt(&first, "default", "web").is_some());

        // Document 2 of 3; its bad field is on line 12, column 11.
        let bad = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: demo\n\
                   ---\n\
                   apiVersion: v1\nkind: Service\nmetadata:\n  name: web2\nspec:\n  ports:\n  - port: \"abc\"\n\
                   ---\n\
                   apiVersion: v1\nkind: Namespace\nmetadata:\n  name: other\n";
        dir.write("web.yaml", bad);
        let second = loader.reload().unwrap();
        let file = dir.path().join("web.yaml").display().to_string();
        assert_eq!(second.warnings.len(), 1, "{:?}", second.warnings);
        assert_eq!(
            second.warnings[0],
            format!(
                "{file}:12:11: spec.ports[0].port: invalid type: string \"abc\", expected i32 \
                 (its last good objects stay in force)"
            )
        );
        // The last good version stays: web, not demo, web2 or other.
        assert!(service_opt(&second, "default", "web").is_some());
        assert!(service_opt(&second, "default", "web2").is_none());
        assert!(second.objects.iter().all(|o| o.key().name != "other"));
        assert_eq!(first.objects, second.objects);

        // Other files apply normally meanwhile.
        dir.write(
            "ns.yaml",
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: lab\n",
        );
        let third = loader.reload().unwrap();
        assert!(third
            .objects
            .iter()
            .any(|o| o.key().to_string() == "Namespace lab"));
        assert!(service_opt(&third, "default", "web").is_some());

        // Fixed: the new version applies.
        dir.write("web.yaml", &bad.replace("\"abc\"", "81"));
        let fourth = loader.reload().unwrap();
        assert!(fourth.warnings.is_empty(), "{:?}", fourth.warnings);
        assert!(service_opt(&fourth, "default", "web").is_none());
        assert!(service_opt(&fourth, "default", "web2").is_some());

        // Removed: its objects go.
        dir.remove("web.yaml");
        let fifth = loader.reload().unwrap();
        assert!(service_opt(&fifth, "default", "web2").is_none());
    }

    #[test]
    fn syntax_error_names_path_and_line() {
        let dir = TempDir::new();
        dir.write(
            "bad.yaml",
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: a\n---\napiVersion: v1\n\
             kind: Namespace\nmetadata:\n  name: [b\n",
        );
        let loaded = load_dir(dir.path(), cidr("10.96.0.0/12"));
        let file = dir.path().join("bad.yaml").display().to_string();
        assert_eq!(loaded.warnings.len(), 1, "{:?}", loaded.warnings);
        assert!(
            loaded.warnings[0].starts_with(&format!("{file}:10:")),
            "{:?}",
            loaded.warnings
        );
        assert!(loaded.objects.is_empty());
    }

    #[test]
    fn duplicate_objects_keep_the_first() {
        let dir = TempDir::new();
        let ns =
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: demo\n  labels:\n    v: \"1\"\n";
        dir.write("a.yaml", ns);
        dir.write("b.yaml", &ns.replace("\"1\"", "\"2\""));
        let loaded = load_dir(dir.path(), cidr("10.96.0.0/12"));
        assert_eq!(
            namespace(&loaded, "demo").metadata.labels.as_ref().unwrap()["v"],
            "1"
        );
        assert_eq!(loaded.warnings.len(), 1, "{:?}", loaded.warnings);
        assert!(
            loaded.warnings[0].contains("b.yaml:1"),
            "{:?}",
            loaded.warnings
        );
        assert!(
            loaded.warnings[0].contains("a.yaml:1"),
            "{:?}",
            loaded.warnings
        );
    }

    #[test]
    fn missing_name_rejects_the_file() {
        let dir = TempDir::new();
        dir.write(
            "a.yaml",
            "apiVersion: v1\nkind: Pod\nmetadata:\n  labels: {}\n",
        );
        let loaded = load_dir(dir.path(), cidr("10.96.0.0/12"));
        assert_eq!(loaded.warnings.len(), 1, "{:?}", loaded.warnings);
        assert!(
            loaded.warnings[0].contains("a.yaml:1:1"),
            "{:?}",
            loaded.warnings
        );
        assert!(
            loaded.warnings[0].contains("metadata.name"),
            "{:?}",
            loaded.warnings
        );
    }

    /// Random damage to a valid folder never panics: each damaged file
    /// parses to objects that resolve, or to an error.
    #[test]
    fn random_damage_never_panics() {
        use proptest::prelude::*;
        use proptest::test_runner::{Config, TestRunner};
        let text = format!(
            "{}---\n\
             apiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  type: NodePort\n\
             \x20 selector: {{app: web}}\n  ports:\n  - {{name: http, port: 80, targetPort: http}}\n\
             ---\n\
             apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 2\n\
             \x20 selector:\n    matchLabels: {{app: web}}\n  template:\n    metadata:\n\
             \x20     labels: {{app: web}}\n    spec:\n      containers:\n      - name: web\n\
             \x20       ports:\n        - {{name: http, containerPort: 8080}}\n\
             ---\n\
             apiVersion: v1\nkind: Pod\nmetadata:\n  name: db\n  labels: {{app: web}}\n\
             spec:\n  nodeName: node2\n  containers: [{{name: db}}]\nstatus: {{podIP: 10.244.2.10}}\n\
             ---\n\
             apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: p\n\
             spec:\n  podSelector: {{matchLabels: {{app: web}}}}\n",
            nodes(&[("node1", "10.244.1.0/24"), ("node2", "10.244.2.0/24")])
        );
        let base = parse::parse_file("m.yaml", &text).expect("the undamaged file parses");
        let (objects, notes) = resolve::resolve(base.items, cidr("10.96.0.0/12"));
        assert_eq!((objects.len(), notes), (10, Vec::<String>::new()));
        let bytes = text.into_bytes();
        let parsed_ok = std::cell::Cell::new(0u32);
        let special = [
            b'-', b':', b'\n', b' ', b'[', b'{', b'&', b'*', b'"', b'0', b'/',
        ];
        let edits =
            proptest::collection::vec((any::<prop::sample::Index>(), 0u8..5, any::<u8>()), 1..5);
        let mut runner = TestRunner::new(Config {
            cases: 1500,
            failure_persistence: None,
            ..Config::default()
        });
        runner
            .run(&edits, |edits| {
                let mut b = bytes.clone();
                for (at, op, byte) in edits {
                    let i = at.index(b.len() + 1);
                    let c = special[usize::from(byte) % special.len()];
                    match op {
                        0 if i < b.len() => {
                            b.remove(i);
                        }
                        1 => b.insert(i, c),
                        2 => b.insert(i, byte),
                        3 if i < b.len() => b[i] = c,
                        _ => b.truncate(i),
                    }
                }
                let text = String::from_utf8_lossy(&b);
                if let Ok(parsed) = parse::parse_file("m.yaml", &text) {
                    parsed_ok.set(parsed_ok.get() + 1);
                    for service_cidr in ["10.96.0.0/12", "10.96.0.0/31", "0.0.0.0/0"] {
                        let _ = resolve::resolve(parsed.items.clone(), cidr(service_cidr));
                    }
                }
                Ok(())
            })
            .unwrap();
        // Enough damaged files still parse for resolve to be exercised.
        assert!(parsed_ok.get() > 200, "only {} parsed", parsed_ok.get());
    }
}
