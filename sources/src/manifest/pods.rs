//! Scheduling and addresses for pods the manifests leave without them, and
//! the status a running pod would report.
//!
//! Uses: the pods in (namespace, name) order and the nodes in name order.
//! Sets: container port protocols (TCP), `spec.nodeName` (round robin over
//! the nodes), `status.podIP(s)` (the first free address from `.10` of the
//! node's podCIDR, or the node's InternalIP for `hostNetwork` pods),
//! `status.hostIP(s)`, `status.phase` and the `Ready` condition, each only
//! where the manifest leaves it unset. Problems become notes; the pod stays
//! as far as it got.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::{HostIP, Node, Pod, PodCondition, PodIP, PodSpec, PodStatus};
use tables::model::Cidr;

use super::resolve::Sourced;

/// The first host offset handed out in a node's podCIDR (`.1` is often
/// the node's own gateway address; the low ones stay free for the lab).
const FIRST_POD_OFFSET: u32 = 10;

/// What placing pods needs to know about one node.
struct NodeInfo {
    /// The IPv4 podCIDR, or why there is none.
    pod_cidr: Result<Cidr, String>,
    internal_ip: Option<String>,
    /// The next address to try: addresses below it are taken.
    next: u32,
}

pub(super) fn place(pods: &mut [Sourced<Pod>], nodes: &[Node], notes: &mut Vec<String>) {
    for pod in pods.iter_mut() {
        default_ports(pod.object.spec.get_or_insert_with(PodSpec::default));
        sync_pod_ips(pod.object.status.get_or_insert_with(PodStatus::default));
    }
    schedule(pods, nodes, notes);

    let mut infos: BTreeMap<&str, NodeInfo> = nodes
        .iter()
        .map(|n| (n.metadata.name.as_deref().unwrap_or_default(), node_info(n)))
        .collect();
    // Addresses a manifest gives are never handed out again.
    let taken: BTreeSet<u32> = pods
        .iter()
        .flat_map(|p| pod_ips(&p.object))
        .filter_map(|ip| ip.parse::<Ipv4Addr>().ok())
        .map(u32::from)
        .collect();
    let mut reported = BTreeSet::new();
    for Sourced {
        origin,
        object: pod,
    } in pods.iter_mut()
    {
        let what = format!(
            "{origin}: Pod {}/{}",
            pod.metadata.namespace.as_deref().unwrap_or_default(),
            pod.metadata.name.as_deref().unwrap_or_default()
        );
        let spec = pod.spec.get_or_insert_with(PodSpec::default);
        let status = pod.status.get_or_insert_with(PodStatus::default);
        let Some(node_name) = spec.node_name.clone() else {
            set_phase(status);
            continue;
        };
        let Some(info) = infos.get_mut(node_name.as_str()) else {
            if status.pod_ip.is_none() && !is_terminal(status) {
                notes.push(format!(
                    "{what}: node {node_name} is not in the folder; the pod gets no address"
                ));
            }
            set_phase(status);
            continue;
        };
        if status.host_ip.is_none() {
            if let Some(ip) = &info.internal_ip {
                status.host_ip = Some(ip.clone());
                status.host_ips = Some(vec![HostIP { ip: ip.clone() }]);
            }
        }
        if status.pod_ip.is_none() && !is_terminal(status) {
            let ip = if spec.host_network == Some(true) {
                info.internal_ip
                    .clone()
                    .ok_or_else(|| format!("node {node_name} has no InternalIP address"))
            } else {
                next_free(info, &taken).map(|ip| Ipv4Addr::from(ip).to_string())
            };
            match ip {
                Ok(ip) => {
                    status.pod_ip = Some(ip.clone());
                    status.pod_ips = Some(vec![PodIP { ip }]);
                }
                Err(reason) => {
                    // One note per node and reason, not one per pod.
                    if reported.insert((node_name.clone(), reason.clone())) {
                        notes.push(format!("{what}: {reason}; the pod gets no address"));
                    }
                }
            }
        }
        set_phase(status);
    }
}

/// Round robin over the nodes (in name order) for the pods without one.
fn schedule(pods: &mut [Sourced<Pod>], nodes: &[Node], notes: &mut Vec<String>) {
    let mut unscheduled = Vec::new();
    let mut turn = 0;
    for pod in pods.iter_mut() {
        let spec = pod.object.spec.get_or_insert_with(PodSpec::default);
        if spec.node_name.as_deref().is_some_and(|n| !n.is_empty()) {
            continue;
        }
        spec.node_name = None;
        match nodes.get(turn % nodes.len().max(1)) {
            Some(node) => {
                spec.node_name = node.metadata.name.clone();
                turn += 1;
            }
            None => unscheduled.push(format!(
                "{}/{} ({})",
                pod.object.metadata.namespace.as_deref().unwrap_or_default(),
                pod.object.metadata.name.as_deref().unwrap_or_default(),
                pod.origin
            )),
        }
    }
    if !unscheduled.is_empty() {
        notes.push(format!(
            "the folder has no Node to schedule pods on; unscheduled, without addresses: {}",
            unscheduled.join(", ")
        ));
    }
}

fn node_info(node: &Node) -> NodeInfo {
    let spec = node.spec.as_ref();
    let given: Vec<&String> = spec
        .and_then(|s| s.pod_cidr.as_ref())
        .into_iter()
        .chain(
            spec.and_then(|s| s.pod_cidrs.as_ref())
                .into_iter()
                .flatten(),
        )
        .collect();
    let pod_cidr = match given.iter().find_map(|c| c.parse::<Cidr>().ok()) {
        Some(cidr) => Ok(cidr),
        None if given.is_empty() => Err(format!(
            "node {} has no spec.podCIDR",
            node.metadata.name.as_deref().unwrap_or_default()
        )),
        None => Err(format!(
            "node {}: no IPv4 podCIDR in {given:?}",
            node.metadata.name.as_deref().unwrap_or_default()
        )),
    };
    let internal_ip = node
        .status
        .as_ref()
        .and_then(|s| s.addresses.as_ref())
        .and_then(|a| a.iter().find(|a| a.type_ == "InternalIP"))
        .map(|a| a.address.clone());
    let next = pod_cidr
        .as_ref()
        .map(|c| c.addr().saturating_add(FIRST_POD_OFFSET))
        .unwrap_or_default();
    NodeInfo {
        pod_cidr,
        internal_ip,
        next,
    }
}

/// The first address at or above the node's cursor that no pod has, below
/// the podCIDR's last (broadcast) address.
fn next_free(info: &mut NodeInfo, taken: &BTreeSet<u32>) -> Result<u32, String> {
    let cidr = info.pod_cidr.clone()?;
    let (_, last) = cidr.range();
    while info.next < last && cidr.contains(info.next) {
        let ip = info.next;
        info.next += 1;
        if !taken.contains(&ip) {
            return Ok(ip);
        }
    }
    Err(format!("podCIDR {cidr} has no free address left"))
}

/// Container ports default to TCP, as the API server defaults them.
fn default_ports(spec: &mut PodSpec) {
    let containers = spec.containers.iter_mut();
    let init = spec.init_containers.iter_mut().flatten();
    for container in containers.chain(init) {
        for port in container.ports.iter_mut().flatten() {
            port.protocol.get_or_insert_with(|| "TCP".to_owned());
        }
    }
}

/// `podIP` and `podIPs` agree, whichever of them the manifest gave.
fn sync_pod_ips(status: &mut PodStatus) {
    match (&status.pod_ip, &status.pod_ips) {
        (Some(ip), None) => status.pod_ips = Some(vec![PodIP { ip: ip.clone() }]),
        (None, Some(ips)) => status.pod_ip = ips.first().map(|p| p.ip.clone()),
        _ => {}
    }
}

/// Every address the pod's status names.
fn pod_ips(pod: &Pod) -> Vec<String> {
    let Some(status) = &pod.status else {
        return Vec::new();
    };
    let listed = status.pod_ips.iter().flatten().map(|p| p.ip.clone());
    status.pod_ip.iter().cloned().chain(listed).collect()
}

fn is_terminal(status: &PodStatus) -> bool {
    matches!(status.phase.as_deref(), Some("Succeeded" | "Failed"))
}

/// `Running` once the pod has an address, else `Pending`; a `Ready`
/// condition that follows the phase, unless the manifest gives one.
fn set_phase(status: &mut PodStatus) {
    let phase = status
        .phase
        .get_or_insert_with(|| {
            if status.pod_ip.is_some() {
                "Running".to_owned()
            } else {
                "Pending".to_owned()
            }
        })
        .clone();
    let conditions = status.conditions.get_or_insert_with(Vec::new);
    if !conditions.iter().any(|c| c.type_ == "Ready") {
        conditions.push(PodCondition {
            type_: "Ready".to_owned(),
            status: if phase == "Running" { "True" } else { "False" }.to_owned(),
            ..PodCondition::default()
        });
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;

    fn pod_yaml(name: &str, extra: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: demo\n\
             spec:\n  containers: [{{name: c}}]\n{extra}---\n"
        )
    }

    fn placed(loaded: &super::super::Loaded, name: &str) -> (String, String) {
        let p = pod(loaded, "demo", name);
        (
            p.spec
                .as_ref()
                .unwrap()
                .node_name
                .clone()
                .unwrap_or_default(),
            p.status
                .as_ref()
                .unwrap()
                .pod_ip
                .clone()
                .unwrap_or_default(),
        )
    }

    #[test]
    fn explicit_values_are_kept_and_skipped() {
        let dir = TempDir::new();
        dir.write(
            "nodes.yaml",
            &nodes(&[("node1", "10.244.1.0/24"), ("node2", "10.244.2.0/24")]),
        );
        let pods = [
            pod_yaml("a", ""),
            // Pinned to node1 with .10 given: a gets .11.
            pod_yaml("b", "  nodeName: node1\nstatus:\n  podIP: 10.244.1.10\n"),
            pod_yaml("c", "  nodeName: node1\n"),
            pod_yaml("d", "  hostNetwork: true\n"),
            pod_yaml("e", "status:\n  phase: Succeeded\n"),
            pod_yaml(
                "f",
                "status:\n  conditions: [{type: Ready, status: \"False\"}]\n",
            ),
        ]
        .concat();
        dir.write("pods.yaml", &pods);
        let loaded = load(&dir);
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
        let got: Vec<(String, String)> = ["a", "b", "c", "d", "e", "f"]
            .iter()
            .map(|n| placed(&loaded, n))
            .collect();
        let want = [
            ("node1", "10.244.1.11"),
            ("node1", "10.244.1.10"),
            ("node1", "10.244.1.12"),
            ("node2", "198.18.0.2"),
            ("node1", ""),
            ("node2", "10.244.2.10"),
        ];
        let want: Vec<(String, String)> = want
            .iter()
            .map(|(n, ip)| (n.to_string(), ip.to_string()))
            .collect();
        assert_eq!(got, want);

        let a = pod(&loaded, "demo", "a").status.as_ref().unwrap();
        assert_eq!(a.phase.as_deref(), Some("Running"));
        assert_eq!(a.pod_ips.as_ref().unwrap()[0].ip, "10.244.1.11");
        assert_eq!(a.host_ip.as_deref(), Some("198.18.0.1"));
        let ready = |name| {
            let status = pod(&loaded, "demo", name).status.as_ref().unwrap();
            let cond = status.conditions.as_ref().unwrap();
            cond.iter()
                .find(|c| c.type_ == "Ready")
                .unwrap()
                .status
                .clone()
        };
        assert_eq!(ready("a"), "True");
        assert_eq!(ready("e"), "False");
        assert_eq!(ready("f"), "False");
        assert_eq!(
            pod(&loaded, "demo", "b")
                .status
                .as_ref()
                .unwrap()
                .pod_ips
                .as_ref()
                .unwrap()[0]
                .ip,
            "10.244.1.10"
        );
        // Same folder, same answers.
        assert_eq!(load(&dir), loaded);
    }

    #[test]
    fn no_nodes_or_no_pod_cidr_leave_pods_without_addresses() {
        let dir = TempDir::new();
        dir.write(
            "pods.yaml",
            &[pod_yaml("a", ""), pod_yaml("b", "")].concat(),
        );
        let loaded = load(&dir);
        assert_eq!(placed(&loaded, "a"), (String::new(), String::new()));
        let status = pod(&loaded, "demo", "a").status.as_ref().unwrap();
        assert_eq!(status.phase.as_deref(), Some("Pending"));
        assert_eq!(loaded.warnings.len(), 1, "{:?}", loaded.warnings);
        assert!(loaded.warnings[0].contains("demo/a") && loaded.warnings[0].contains("demo/b"));

        dir.write(
            "nodes.yaml",
            "apiVersion: v1\nkind: Node\nmetadata:\n  name: bare\n",
        );
        let loaded = load(&dir);
        assert_eq!(placed(&loaded, "a"), ("bare".to_owned(), String::new()));
        assert_eq!(loaded.warnings.len(), 1, "{:?}", loaded.warnings);
        assert!(
            loaded.warnings[0].contains("no spec.podCIDR"),
            "{:?}",
            loaded.warnings
        );
    }

    #[test]
    fn a_full_pod_cidr_is_reported() {
        let dir = TempDir::new();
        // A /28 has .10 to .14 to give.
        dir.write("nodes.yaml", &nodes(&[("node1", "10.244.1.0/28")]));
        let pods: String = (0..6).map(|i| pod_yaml(&format!("p{i}"), "")).collect();
        dir.write("pods.yaml", &pods);
        let loaded = load(&dir);
        assert_eq!(placed(&loaded, "p4").1, "10.244.1.14");
        assert_eq!(placed(&loaded, "p5").1, "");
        assert_eq!(loaded.warnings.len(), 1, "{:?}", loaded.warnings);
        assert!(
            loaded.warnings[0].contains("no free address"),
            "{:?}",
            loaded.warnings
        );
    }
}
