//! Compiles the cluster's objects into one node's tables snapshot.
//!
//! This is the whole-state compiler: the static source and `selftest` hand
//! it every object they know, and it returns the snapshot to publish (the
//! live sources go through the incremental `reconcile::Reconciler`, which
//! shares `routes` with it and must give the same tables). The previous
//! snapshot is passed in so service backend tables move as few flows as
//! possible.

use std::net::Ipv4Addr;
use std::sync::Arc;

use crate::model::{Namespace, NetworkPolicy, Pod, RemoteNode};
use crate::policy::PolicyTable;
use crate::route::{LocalPod, NodeConfig, RouteTable, Vtep};
use crate::service::{ServiceEntry, ServiceTable};
use crate::snapshot::Snapshot;

use crate::host_ports::{self, Published};

/// A node's VTEP MAC as every node derives it from the node's underlay
/// address: locally administered, `02:56:` + the four address bytes, so
/// peers (and flannel-style static FDB entries) can compute it.
pub fn vtep_mac(node_ip: Ipv4Addr) -> [u8; 6] {
    let o = node_ip.octets();
    [0x02, 0x56, o[0], o[1], o[2], o[3]]
}

/// Every object that shapes forwarding.
#[derive(Clone, Debug, Default)]
pub struct ClusterState {
    pub namespaces: Vec<Namespace>,
    pub pods: Vec<Pod>,
    pub services: Vec<ServiceEntry>,
    pub policies: Vec<NetworkPolicy>,
    pub nodes: Vec<RemoteNode>,
}

/// The route table of node `node`: its attached pods, and the pod CIDRs of
/// the `remote` nodes through their VTEPs.
pub fn routes(
    remote: &[RemoteNode],
    node: &NodeConfig,
    attached: &[LocalPod],
    underlay_mac: &dyn Fn(Ipv4Addr) -> [u8; 6],
) -> RouteTable {
    let mut routes = RouteTable::new(&[node.node_ip], node.pod_cidr);
    for pod in attached {
        routes.add_pod(*pod);
    }
    for remote in remote {
        let vtep = Vtep {
            node: remote.name.clone(),
            ip: u32::from(remote.ip),
            vtep_mac: remote.vtep_mac,
            underlay_mac: underlay_mac(remote.ip),
        };
        routes.add_node(vtep, &remote.pod_cidrs);
    }
    routes
}

/// Builds the snapshot for the node `node`. `attached` lists the pods wired
/// to this switch (address, MAC, port); `runtime_ports` the host ports
/// their runtime asked for (besides those of the pods' specs);
/// `underlay_mac` resolves a remote node's underlay address to the MAC to
/// send to. Returns the snapshot and the warnings (policies, host ports),
/// each naming its object.
pub fn compile(
    state: &ClusterState,
    node: &NodeConfig,
    attached: &[LocalPod],
    runtime_ports: &[Published],
    underlay_mac: &dyn Fn(Ipv4Addr) -> [u8; 6],
    prev: Option<&Snapshot>,
) -> (Snapshot, Vec<String>) {
    let remote: Vec<RemoteNode> = state
        .nodes
        .iter()
        .filter(|n| n.name != node.name)
        .cloned()
        .collect();
    let routes = routes(&remote, node, attached, underlay_mac);
    let node_ip = Ipv4Addr::from(node.node_ip);
    let published: Vec<Published> = state
        .pods
        .iter()
        .filter_map(|p| Published::of_pod(p, &node.name))
        .chain(runtime_ports.iter().cloned())
        .collect();
    let (host_ports, mut warnings) = host_ports::entries(&published, node);
    let entries: Vec<ServiceEntry> = state
        .services
        .iter()
        .cloned()
        .chain(host_ports.into_values())
        .collect();
    let services =
        ServiceTable::build(&entries, &node.name, &[node_ip], prev.map(|p| &*p.services));
    let local: Vec<&Pod> = state.pods.iter().filter(|p| p.node == node.name).collect();
    let (policy, policy_warnings) =
        PolicyTable::compile(&local, &state.pods, &state.namespaces, &state.policies);
    warnings.extend(policy_warnings.into_iter().map(|w| w.to_string()));
    let snapshot = Snapshot {
        generation: 0,
        policy_epoch: prev.map_or(1, |p| p.policy_epoch.wrapping_add(1)),
        node: node.clone(),
        routes: Arc::new(routes),
        services: Arc::new(services),
        policy: Arc::new(policy),
    };
    (snapshot, warnings)
}
