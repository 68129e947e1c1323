//! Where each pod of a lab plan runs and which address it has: a pod the
//! lab has keeps its node and address (only labels and annotations of a
//! running pod can change); a new pod goes to the node its manifest names,
//! or the one with the fewest pods, and gets the address its manifest
//! gives (free, in that node's pod CIDR) or the first free one from `.10`.
//! Addresses of pods on their way out are not handed out again at once.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::Pod;
use tables::model::Cidr;
use yaml_serde::Value;

use super::objects::LabObject;
use super::plan::{pod_key, set, text_at};
use super::state::{LabNode, LabPod, LabState};
use super::LabError;

/// The first address handed out in a node's pod CIDR (as the manifest
/// source does).
const FIRST_POD_OFFSET: u32 = 10;

/// The running pods and every pod's document with its `namespace/name`.
type Placed = (Vec<LabPod>, Vec<(String, Value)>);

/// Node and address for every pod: kept for pods the lab has, chosen for
/// new ones.
pub(super) fn place(
    lab: &LabState,
    objects: &[LabObject],
    mut resolved: Vec<Pod>,
) -> Result<Placed, LabError> {
    resolved.sort_by_key(pod_key);
    let mut problems = Vec::new();
    // Addresses of pods on their way out are not handed out again at once:
    // they serve until their replacements do.
    let mut taken: BTreeSet<Ipv4Addr> = lab.pods.iter().filter_map(|p| p.ip).collect();
    let mut load: BTreeMap<&str, usize> = lab.nodes.iter().map(|n| (n.name.as_str(), 0)).collect();
    let mut planned: Vec<Option<LabPod>> = Vec::new();
    // Pods the lab has first: they keep their node and address.
    for pod in &resolved {
        let owner = owner(objects, pod);
        let origin = owner.map_or("(unknown file)", |o| o.origin.as_str());
        let mut lp = match lab_pod(&lab.name, pod) {
            Ok(Some(lp)) => lp,
            Ok(None) => {
                planned.push(None);
                continue;
            }
            Err(reason) => {
                problems.push(format!("{origin}: {reason}"));
                planned.push(None);
                continue;
            }
        };
        if let Some(old) = lab.pods.iter().find(|p| p.key() == lp.key()) {
            let given_node = owner.and_then(given_node);
            let given_ip = owner.and_then(given_ip);
            let what = format!("{origin}: Pod {}", lp.key());
            if lp.ports != old.ports {
                problems.push(format!(
                    "{what}: only the labels and annotations of a pod in the lab can change (its ports differ); delete it first"
                ));
            } else if given_node.is_some_and(|n| n != old.node) {
                problems.push(format!(
                    "{what}: spec.nodeName cannot change (it is {})",
                    old.node
                ));
            } else if given_ip.is_some_and(|ip| Some(ip) != old.ip) {
                problems.push(format!(
                    "{what}: status.podIP cannot change (it is {:?})",
                    old.ip
                ));
            }
            lp.node = old.node.clone();
            lp.ip = old.ip;
            lp.server_pid = old.server_pid;
            if let Some(n) = load.get_mut(old.node.as_str()) {
                *n += 1;
            }
        }
        planned.push(Some(lp));
    }
    // New pods: where their manifest says, or the least loaded node.
    for (pod, lp) in resolved.iter().zip(planned.iter_mut()) {
        let Some(lp) = lp.as_mut() else { continue };
        if lab.pods.iter().any(|p| p.key() == lp.key()) {
            continue;
        }
        let owner = owner(objects, pod);
        let origin = owner.map_or("(unknown file)", |o| o.origin.as_str());
        let node = owner.and_then(given_node).or_else(|| {
            load.iter()
                .min_by_key(|(name, n)| (**n, *name))
                .map(|(name, _)| name.to_string())
        });
        let Some(node) = node.and_then(|n| lab.nodes.iter().find(|x| x.name == n)) else {
            problems.push(format!("{origin}: Pod {}: no node to run it on", lp.key()));
            continue;
        };
        match address(node, owner.and_then(given_ip), &taken) {
            Ok(ip) => {
                taken.insert(ip);
                lp.ip = Some(ip);
                lp.node = node.name.clone();
                if let Some(n) = load.get_mut(node.name.as_str()) {
                    *n += 1;
                }
            }
            Err(reason) => problems.push(format!("{origin}: Pod {}: {reason}", lp.key())),
        }
    }
    if !problems.is_empty() {
        return Err(LabError::Refused(problems));
    }
    let mut docs = Vec::new();
    for (pod, lp) in resolved.iter().zip(&planned) {
        let mut doc = yaml_serde::to_value(pod).unwrap_or_default();
        if let Some(lp) = lp {
            let ip = lp.ip.map(|ip| ip.to_string()).unwrap_or_default();
            set(
                &mut doc,
                &["spec", "nodeName"],
                Value::from(lp.node.clone()),
            );
            set(&mut doc, &["status", "podIP"], Value::from(ip.clone()));
            let ips = yaml_serde::from_str(&format!("[{{ip: '{ip}'}}]")).unwrap_or_default();
            set(&mut doc, &["status", "podIPs"], ips);
            // The node's address, filled in again by the loader.
            if let Some(status) = doc.get_mut("status").and_then(Value::as_mapping_mut) {
                status.remove("hostIP");
                status.remove("hostIPs");
            }
        }
        docs.push((pod_key(pod), doc));
    }
    Ok((planned.into_iter().flatten().collect(), docs))
}

/// The address for a new pod on `node`: the one its manifest gives (which
/// must be free and in the node's pod CIDR), else the first free one.
fn address(
    node: &LabNode,
    given: Option<Ipv4Addr>,
    taken: &BTreeSet<Ipv4Addr>,
) -> Result<Ipv4Addr, String> {
    let cidr: Cidr = node.pod_cidr.parse()?;
    let (_, last) = cidr.range();
    if let Some(ip) = given {
        return if !cidr.contains(u32::from(ip)) || u32::from(ip) >= last {
            Err(format!(
                "status.podIP {ip} is not an address of {}'s pod CIDR {cidr}",
                node.name
            ))
        } else if taken.contains(&ip) {
            Err(format!("status.podIP {ip} is another pod's"))
        } else {
            Ok(ip)
        };
    }
    (cidr.addr() + FIRST_POD_OFFSET..last)
        .map(Ipv4Addr::from)
        .find(|ip| !taken.contains(ip))
        .ok_or(format!(
            "{}'s pod CIDR {cidr} has no free address left",
            node.name
        ))
}

/// The object a resolved pod comes from: its own Pod, or the Deployment
/// whose name and template hash its name carries.
fn owner<'a>(objects: &'a [LabObject], pod: &Pod) -> Option<&'a LabObject> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    let find = |kind: &str, n: &str| {
        objects
            .iter()
            .find(|o| o.kind == kind && o.namespace == ns && o.name == n)
    };
    find("Pod", name).or_else(|| {
        let hash = pod.metadata.labels.as_ref()?.get("pod-template-hash")?;
        let (rest, _suffix) = name.rsplit_once('-')?;
        find("Deployment", rest.strip_suffix(&format!("-{hash}"))?)
    })
}

/// The node a Pod's (or a Deployment's template's) manifest names.
fn given_node(owner: &LabObject) -> Option<String> {
    let doc = owner.value();
    match owner.kind.as_str() {
        "Pod" => text_at(&doc, &["spec", "nodeName"]),
        _ => text_at(&doc, &["spec", "template", "spec", "nodeName"]),
    }
    .filter(|n| !n.is_empty())
}

/// The address a Pod's manifest gives it.
fn given_ip(owner: &LabObject) -> Option<Ipv4Addr> {
    (owner.kind == "Pod")
        .then(|| text_at(&owner.value(), &["status", "podIP"]))
        .flatten()
        .and_then(|ip| ip.parse().ok())
}

/// The lab's view of a resolved Pod (`None`: it does not run, being
/// Succeeded or Failed); an error names what the lab cannot honour.
pub fn lab_pod(lab: &str, pod: &Pod) -> Result<Option<LabPod>, String> {
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let what = format!("Pod {namespace}/{name}");
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    if matches!(phase, Some("Succeeded" | "Failed")) {
        return Ok(None);
    }
    let spec = pod.spec.as_ref().ok_or(format!("{what}: no spec"))?;
    if spec.host_network.unwrap_or(false) {
        return Err(format!(
            "{what}: hostNetwork pods are not supported by the lab"
        ));
    }
    if spec.containers.is_empty() {
        return Err(format!("{what}: no containers"));
    }
    let mut ports = Vec::new();
    let mut host_ports = Vec::new();
    for c in &spec.containers {
        for p in c.ports.as_deref().unwrap_or_default() {
            let port = u16::try_from(p.container_port)
                .ok()
                .filter(|p| *p > 0)
                .ok_or(format!(
                    "{what}: container {} port {} is out of range (1-65535)",
                    c.name, p.container_port
                ))?;
            let protocol = p.protocol.clone().unwrap_or_else(|| "TCP".into());
            if protocol != "TCP" && protocol != "UDP" {
                return Err(format!(
                    "{what}: container {} port {port}: protocol {protocol} is not served by the lab (TCP and UDP are)",
                    c.name
                ));
            }
            if let Some(hp) = p.host_port {
                let host = u16::try_from(hp).ok().filter(|p| *p > 0).ok_or(format!(
                    "{what}: container {} port {port}: hostPort {hp} is out of range (1-65535)",
                    c.name
                ))?;
                host_ports.push((protocol.clone(), host, port));
            }
            ports.push((protocol, port));
        }
    }
    let netns = format!("{lab}-{namespace}-{name}");
    Ok(Some(LabPod {
        container_id: format!("lab-{lab}-{namespace}-{name}"),
        namespace,
        name,
        node: String::new(),
        netns,
        ip: None,
        ports,
        host_ports,
        server_pid: None,
    }))
}
