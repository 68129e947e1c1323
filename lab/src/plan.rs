//! What a lab's objects come to: the manifest folder its agents read, the
//! pods it runs and the services it shows, decided (and every reason to
//! refuse found) before anything changes.
//!
//! The folder holds the lab's Nodes, the objects as given (Services with
//! the cluster IPs and node ports they were given, so they keep them) and
//! every pod resolved: Deployments expanded, each pod pinned to its node
//! and address. A pod already in the lab keeps both; a new pod goes where
//! its manifest says, or to the node with the fewest pods, and gets the
//! first free address from `.10` of that node's pod CIDR.
//!
//! Three loads, each of a scratch folder through the agents' own loader:
//! the objects as given (files verbatim, so messages name the user's file
//! and line), the objects with the lab's pins (what the plan is read
//! from), and the folder as it will be written (it must load as planned).

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::Path;

use k8s_openapi::api::core::v1::{Pod, Service};
use tables::model::Cidr;
use yaml_serde::Value;

use super::objects::{Input, Key, LabObject};
use super::state::{LabNode, LabPod, LabService, LabServicePort, LabState};
use super::{LabError, SERVICE_CIDR};
use sources::manifest::{load_dir, Loaded};
use sources::Object;

/// The lab's Nodes, in its manifest folder.
pub const NODES_FILE: &str = "00-lab-nodes.yaml";
/// The objects as given, less Pods and Deployments.
pub const OBJECTS_FILE: &str = "10-lab-objects.yaml";
/// Every pod, resolved and pinned.
pub const PODS_FILE: &str = "20-lab-pods.yaml";

/// What a lab's objects come to.
pub struct Plan {
    /// The objects, Services with the addresses they were given.
    pub objects: Vec<LabObject>,
    /// The pods that run (not Succeeded or Failed), in (namespace, name)
    /// order.
    pub pods: Vec<LabPod>,
    pub services: Vec<LabService>,
    /// Every pod as written to the folder, with its `namespace/name`.
    pod_docs: Vec<(String, Value)>,
    nodes_yaml: String,
}

impl Plan {
    /// The manifest folder's files. Pods in `starting` are written not
    /// ready, so services do not send them traffic before they serve;
    /// `leaving` are documents of pods on their way out, kept meanwhile.
    pub fn files(
        &self,
        starting: &BTreeSet<String>,
        leaving: &[Value],
    ) -> Vec<(&'static str, String)> {
        let objects: Vec<&str> = self
            .objects
            .iter()
            .filter(|o| o.kind != "Pod" && o.kind != "Deployment")
            .map(|o| o.yaml.as_str())
            .collect();
        let pods: Vec<String> = self
            .pod_docs
            .iter()
            .map(|(key, doc)| {
                let mut doc = doc.clone();
                if starting.contains(key) {
                    set(
                        &mut doc,
                        &["status", "conditions"],
                        yaml_serde::from_str("[{type: Ready, status: 'False'}]")
                            .unwrap_or_default(),
                    );
                }
                yaml_serde::to_string(&doc).unwrap_or_default()
            })
            .chain(
                leaving
                    .iter()
                    .map(|d| yaml_serde::to_string(d).unwrap_or_default()),
            )
            .collect();
        vec![
            (NODES_FILE, self.nodes_yaml.clone()),
            (OBJECTS_FILE, documents(&objects)),
            (PODS_FILE, documents(&pods)),
        ]
    }
}

/// Plans lab `lab` holding `desired`. `verbatim` are the files the
/// objects of this change came from (checked as written, so messages name
/// their lines); `scratch` is a folder the checks may use.
pub fn plan(
    lab: &LabState,
    desired: Vec<LabObject>,
    verbatim: &[Input],
    scratch: &Path,
) -> Result<Plan, LabError> {
    let nodes_yaml = nodes_yaml(&lab.nodes);
    check_as_given(&nodes_yaml, &desired, verbatim, scratch)?;

    // The objects with what the lab pinned: services keep their addresses.
    let mut problems = Vec::new();
    let pinned: Vec<LabObject> = desired
        .iter()
        .map(|o| pin_service(o, lab, &mut problems))
        .collect();
    if !problems.is_empty() {
        return Err(LabError::Refused(problems));
    }
    let objects_yaml = documents(&pinned.iter().map(|o| o.yaml.as_str()).collect::<Vec<_>>());
    let loaded = load(
        scratch,
        &[
            (NODES_FILE, nodes_yaml.clone()),
            ("objects.yaml", objects_yaml),
        ],
    )?;
    if !loaded.warnings.is_empty() {
        return Err(LabError::Refused(loaded.warnings));
    }

    let mut services = Vec::new();
    let mut resolved_pods = Vec::new();
    let mut objects = pinned;
    for object in &loaded.objects {
        match object {
            Object::Service(svc) => {
                services.push(lab_service(svc));
                let key = key_of("Service", svc.metadata.namespace.as_deref(), svc);
                if let Some(o) = objects.iter_mut().find(|o| o.key() == key) {
                    record_addresses(o, svc);
                }
            }
            Object::Pod(pod) => resolved_pods.push(pod.clone()),
            _ => {}
        }
    }
    let (pods, pod_docs) = super::place::place(lab, &objects, resolved_pods)?;
    let plan = Plan {
        objects,
        pods,
        services,
        pod_docs,
        nodes_yaml,
    };
    check_as_written(&plan, scratch)?;
    Ok(plan)
}

/// Loads `desired` as given: the lab's earlier objects grouped by the file
/// they came from, `verbatim` as written. Refuses with the loader's
/// messages, naming the user's files.
fn check_as_given(
    nodes_yaml: &str,
    desired: &[LabObject],
    verbatim: &[Input],
    scratch: &Path,
) -> Result<(), LabError> {
    let given: BTreeSet<Key> = verbatim
        .iter()
        .flat_map(|i| super::objects::parse(i).unwrap_or_default())
        .map(|o| o.key())
        .collect();
    let mut earlier: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for o in desired.iter().filter(|o| !given.contains(&o.key())) {
        earlier.entry(&o.origin).or_default().push(&o.yaml);
    }
    let mut files = vec![(NODES_FILE.to_string(), nodes_yaml.to_string())];
    let mut shown = vec![(NODES_FILE.to_string(), "(the lab's nodes)".to_string())];
    for (i, (origin, docs)) in earlier.iter().enumerate() {
        let name = format!("lab-{i:02}.yaml");
        shown.push((name.clone(), format!("{origin} (given earlier)")));
        files.push((name, documents(docs)));
    }
    for (i, input) in verbatim.iter().enumerate() {
        let name = format!("user-{i:02}-{}.yaml", input.file_name);
        shown.push((name.clone(), input.shown.clone()));
        files.push((name, input.text.clone()));
    }
    let files: Vec<(&str, String)> = files.iter().map(|(n, t)| (n.as_str(), t.clone())).collect();
    let loaded = load(scratch, &files)?;
    if loaded.warnings.is_empty() {
        return Ok(());
    }
    Err(LabError::Refused(
        loaded
            .warnings
            .iter()
            .map(|w| {
                shown.iter().fold(w.clone(), |w, (name, user)| {
                    w.replace(&scratch.join(name).display().to_string(), user)
                })
            })
            .collect(),
    ))
}

/// The folder as it will be written loads without a warning, each pod at
/// its planned address.
fn check_as_written(plan: &Plan, scratch: &Path) -> Result<(), LabError> {
    let loaded = load(scratch, &plan.files(&BTreeSet::new(), &[]))?;
    let mut problems = loaded.warnings;
    let addresses: BTreeMap<String, Option<String>> = loaded
        .objects
        .iter()
        .filter_map(|o| match o {
            Object::Pod(p) => Some((pod_key(p), p.status.as_ref().and_then(|s| s.pod_ip.clone()))),
            _ => None,
        })
        .collect();
    for pod in &plan.pods {
        let planned = pod.ip.map(|ip| ip.to_string());
        if addresses.get(&pod.key()) != Some(&planned) {
            problems.push(format!("pod {} did not load at {planned:?}", pod.key()));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(LabError::step(
            "the lab's manifest folder did not load as planned (a bug)",
            problems.join("; "),
        ))
    }
}

/// Writes `files` to a fresh `scratch` folder, loads it as an agent would
/// and removes it.
fn load(scratch: &Path, files: &[(&str, String)]) -> Result<Loaded, LabError> {
    let io = |e: std::io::Error| LabError::Io(format!("{}: {e}", scratch.display()));
    let _ = std::fs::remove_dir_all(scratch);
    std::fs::create_dir_all(scratch).map_err(io)?;
    for (name, text) in files {
        std::fs::write(scratch.join(name), text).map_err(io)?;
    }
    let cidr: Cidr = SERVICE_CIDR.parse().map_err(LabError::Io)?;
    let loaded = load_dir(scratch, cidr);
    let _ = std::fs::remove_dir_all(scratch);
    Ok(loaded)
}

/// `o` with the cluster IP and node ports its Service had in the lab, where
/// it leaves them out (Kubernetes keeps them too); a different cluster IP
/// is refused, as the API server refuses it.
fn pin_service(o: &LabObject, lab: &LabState, problems: &mut Vec<String>) -> LabObject {
    let mut o = o.clone();
    let Some(old) = lab
        .services
        .iter()
        .find(|s| o.kind == "Service" && s.namespace == o.namespace && s.name == o.name)
    else {
        return o;
    };
    let mut doc = o.value();
    let kind = text_at(&doc, &["spec", "type"]).unwrap_or_else(|| "ClusterIP".into());
    if kind == "ExternalName" {
        return o;
    }
    let given = text_at(&doc, &["spec", "clusterIP"]).filter(|ip| !ip.is_empty());
    match (given, old.cluster_ip) {
        (None, Some(ip)) => set(
            &mut doc,
            &["spec", "clusterIP"],
            Value::from(ip.to_string()),
        ),
        (Some(given), Some(ip)) if given != ip.to_string() => problems.push(format!(
            "{}: {}: spec.clusterIP is immutable (it is {ip}); delete the service first",
            o.origin,
            o.what()
        )),
        _ => {}
    }
    if kind == "NodePort" || kind == "LoadBalancer" {
        if let Some(ports) = doc
            .get_mut("spec")
            .and_then(|s| s.get_mut("ports"))
            .and_then(Value::as_sequence_mut)
        {
            for port in ports.iter_mut().filter(|p| p.get("nodePort").is_none()) {
                let protocol = text_at(port, &["protocol"]).unwrap_or_else(|| "TCP".into());
                let number = port.get("port").and_then(Value::as_u64);
                let kept = old
                    .ports
                    .iter()
                    .find(|p| p.protocol == protocol && Some(u64::from(p.port)) == number);
                if let Some(node_port) = kept.and_then(|p| p.node_port) {
                    set(port, &["nodePort"], Value::from(node_port));
                }
            }
        }
    }
    o.yaml = yaml_serde::to_string(&doc).unwrap_or(o.yaml);
    o
}

/// Writes the addresses the source gave `svc` into its document, so the
/// next change keeps them.
fn record_addresses(o: &mut LabObject, svc: &Service) {
    let Some(spec) = &svc.spec else { return };
    let mut doc = o.value();
    if text_at(&doc, &["spec", "clusterIP"]).is_none_or(|ip| ip.is_empty()) {
        if let Some(ip) = &spec.cluster_ip {
            set(&mut doc, &["spec", "clusterIP"], Value::from(ip.clone()));
        }
    }
    let resolved = spec.ports.as_deref().unwrap_or_default();
    if let Some(ports) = doc
        .get_mut("spec")
        .and_then(|s| s.get_mut("ports"))
        .and_then(Value::as_sequence_mut)
    {
        for (port, r) in ports.iter_mut().zip(resolved) {
            if port.get("nodePort").is_none() {
                if let Some(n) = r.node_port {
                    set(port, &["nodePort"], Value::from(n));
                }
            }
        }
    }
    o.yaml = yaml_serde::to_string(&doc).unwrap_or_default();
}

fn lab_service(svc: &Service) -> LabService {
    let spec = svc.spec.clone().unwrap_or_default();
    LabService {
        namespace: svc.metadata.namespace.clone().unwrap_or_default(),
        name: svc.metadata.name.clone().unwrap_or_default(),
        kind: spec.type_.clone().unwrap_or_else(|| "ClusterIP".into()),
        cluster_ip: spec.cluster_ip.as_deref().and_then(|ip| ip.parse().ok()),
        ports: spec
            .ports
            .unwrap_or_default()
            .into_iter()
            .map(|p| LabServicePort {
                name: p.name.unwrap_or_default(),
                protocol: p.protocol.unwrap_or_else(|| "TCP".into()),
                port: u16::try_from(p.port).unwrap_or(0),
                node_port: p.node_port.and_then(|n| u16::try_from(n).ok()),
            })
            .collect(),
    }
}

/// The lab's Nodes as manifests.
pub fn nodes_yaml(nodes: &[LabNode]) -> String {
    let docs: Vec<String> = nodes
        .iter()
        .map(|n| {
            format!(
                "apiVersion: v1\nkind: Node\nmetadata:\n  name: {}\nspec:\n  podCIDR: {}\nstatus:\n  addresses:\n    - type: InternalIP\n      address: {}\n",
                n.name,
                n.pod_cidr,
                n.ip.unwrap_or(Ipv4Addr::UNSPECIFIED)
            )
        })
        .collect();
    documents(&docs)
}

fn documents<S: AsRef<str>>(docs: &[S]) -> String {
    docs.iter()
        .map(|d| d.as_ref().trim_end().to_string() + "\n")
        .collect::<Vec<_>>()
        .join("---\n")
}

pub(super) fn pod_key(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.name.as_deref().unwrap_or_default()
    )
}

fn key_of(kind: &str, namespace: Option<&str>, svc: &Service) -> Key {
    (
        kind.to_string(),
        namespace.unwrap_or("default").to_string(),
        svc.metadata.name.clone().unwrap_or_default(),
    )
}

/// The documents of `text` (a pods file) naming pods in `keys`.
pub fn pod_documents(text: &str, keys: &BTreeSet<String>) -> Vec<Value> {
    use serde::Deserialize;
    yaml_serde::Deserializer::from_str(text)
        .filter_map(|d| Value::deserialize(d).ok())
        .filter(|d| {
            let ns = text_at(d, &["metadata", "namespace"]).unwrap_or_default();
            let name = text_at(d, &["metadata", "name"]).unwrap_or_default();
            keys.contains(&format!("{ns}/{name}"))
        })
        .collect()
}

/// The string at `path` in `doc`.
pub(super) fn text_at(doc: &Value, path: &[&str]) -> Option<String> {
    let mut v = doc;
    for p in path {
        v = v.get(p)?;
    }
    v.as_str().map(str::to_owned)
}

/// Sets `path` in `doc` to `value`, making mappings on the way.
pub(super) fn set(doc: &mut Value, path: &[&str], value: Value) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut v = doc;
    for p in parents {
        if !v.get(p).is_some_and(Value::is_mapping) {
            if let Some(m) = v.as_mapping_mut() {
                m.insert(Value::from(*p), Value::Mapping(Default::default()));
            }
        }
        match v.get_mut(p) {
            Some(next) => v = next,
            None => return,
        }
    }
    if let Some(m) = v.as_mapping_mut() {
        m.insert(Value::from(*last), value);
    }
}
