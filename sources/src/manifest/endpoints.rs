//! EndpointSlices for the services the folder gives none for, made as the
//! EndpointSlice controller makes them (its `podToEndpoint` and
//! `getEndpointPorts`).
//!
//! Uses: the placed pods and defaulted services (both in key order), the
//! nodes (for zones) and the slices the folder gives. Sets nothing; returns
//! the new slices. A service gets slices when it has a selector, is not
//! ExternalName and no given slice carries its `kubernetes.io/service-name`.
//! Endpoints are the namespace's pods the selector matches that have an
//! IPv4 address and are not Succeeded or Failed; they are grouped by the
//! ports they resolve to (a named `targetPort` is looked up per pod, and a
//! port a pod lacks is left out of its set), at most 100 to a slice. A
//! service with no endpoints gets one empty slice, as the controller's
//! placeholder.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::{Node, ObjectReference, Pod, Service, ServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::names::{encode, stable_hash};

pub(super) const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
pub(super) const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
/// Who made a derived slice, as the value of [`MANAGED_BY_LABEL`].
pub(super) const MANAGED_BY: &str = "podswitch-manifests";
const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";
const ZONE_LABEL: &str = "topology.kubernetes.io/zone";
/// The controller's default `--max-endpoints-per-slice`.
const MAX_ENDPOINTS_PER_SLICE: usize = 100;

/// One resolved port, in a form that orders: name, number, protocol,
/// appProtocol.
type PortKey = (String, i32, String, String);

/// Endpoints that resolve the same ports, and those ports.
type Group = (Vec<EndpointPort>, Vec<Endpoint>);

/// The slices to add. `taken` holds the (namespace, name) of every slice
/// already in the folder; made-up names avoid them.
pub(super) fn derive(
    services: &[Service],
    pods: &[Pod],
    nodes: &[Node],
    given: &[EndpointSlice],
    taken: &BTreeSet<(String, String)>,
) -> Vec<EndpointSlice> {
    let named: BTreeSet<(String, &str)> = given
        .iter()
        .filter_map(|s| {
            let service = s.metadata.labels.as_ref()?.get(SERVICE_NAME_LABEL)?;
            Some((
                s.metadata.namespace.clone().unwrap_or_default(),
                service.as_str(),
            ))
        })
        .collect();
    let zones: BTreeMap<&str, &String> = nodes
        .iter()
        .filter_map(|n| {
            let zone = n.metadata.labels.as_ref()?.get(ZONE_LABEL)?;
            Some((n.metadata.name.as_deref()?, zone))
        })
        .collect();
    let mut taken = taken.clone();
    let mut slices = Vec::new();
    for service in services {
        let namespace = service.metadata.namespace.clone().unwrap_or_default();
        let name = service.metadata.name.as_deref().unwrap_or_default();
        let Some(spec) = &service.spec else { continue };
        let Some(selector) = spec.selector.as_ref().filter(|s| !s.is_empty()) else {
            continue;
        };
        if spec.type_.as_deref() == Some("ExternalName")
            || named.contains(&(namespace.clone(), name))
        {
            continue;
        }
        let selected = pods.iter().filter(|pod| {
            pod.metadata.namespace.as_deref() == Some(namespace.as_str())
                && selects(selector, pod)
                && !is_terminal(pod)
        });
        for (key, (ports, endpoints)) in group(service, spec, selected, &zones) {
            let chunks: Vec<&[Endpoint]> = if endpoints.is_empty() {
                vec![&[]]
            } else {
                endpoints.chunks(MAX_ENDPOINTS_PER_SLICE).collect()
            };
            for (index, chunk) in chunks.into_iter().enumerate() {
                // Stable, and new in the namespace: the next salt on a clash.
                let seed = format!("{key:?}/{index}");
                let slice_name = (0u32..)
                    .map(|salt| {
                        let h = stable_hash(&[&namespace, name, &seed, &salt.to_string()]);
                        format!("{name}-{}", encode(h, 5))
                    })
                    .find(|n| taken.insert((namespace.clone(), n.clone())))
                    .unwrap_or_default();
                slices.push(EndpointSlice {
                    metadata: ObjectMeta {
                        name: Some(slice_name),
                        namespace: Some(namespace.clone()),
                        labels: Some(slice_labels(service, spec)),
                        ..ObjectMeta::default()
                    },
                    address_type: "IPv4".to_owned(),
                    endpoints: (!chunk.is_empty()).then(|| chunk.to_vec()),
                    ports: (!ports.is_empty()).then(|| ports.clone()),
                });
            }
        }
    }
    slices
}

/// The endpoints of the selected pods that have an IPv4 address, grouped
/// by the ports they resolve to; one empty group when there are none.
fn group<'a>(
    service: &Service,
    spec: &ServiceSpec,
    selected: impl Iterator<Item = &'a Pod>,
    zones: &BTreeMap<&str, &String>,
) -> BTreeMap<Vec<PortKey>, Group> {
    let mut groups: BTreeMap<Vec<PortKey>, Group> = BTreeMap::new();
    for pod in selected {
        let addresses = ipv4_addresses(pod);
        if addresses.is_empty() {
            continue;
        }
        let ports = endpoint_ports(spec, pod);
        let key = ports.iter().map(port_key).collect();
        let endpoint = to_endpoint(pod, addresses, service, zones);
        let (_, endpoints) = groups.entry(key).or_insert_with(|| (ports, Vec::new()));
        endpoints.push(endpoint);
    }
    if groups.is_empty() {
        groups.insert(Vec::new(), (Vec::new(), Vec::new()));
    }
    groups
}

fn selects(selector: &BTreeMap<String, String>, pod: &Pod) -> bool {
    let labels = pod.metadata.labels.as_ref();
    selector
        .iter()
        .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
}

fn is_terminal(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    matches!(phase, Some("Succeeded" | "Failed"))
}

fn is_ready(pod: &Pod) -> bool {
    let conditions = pod.status.as_ref().and_then(|s| s.conditions.as_ref());
    conditions
        .into_iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True")
}

/// The pod's IPv4 addresses, from `podIPs` (or `podIP` alone).
fn ipv4_addresses(pod: &Pod) -> Vec<String> {
    let Some(status) = &pod.status else {
        return Vec::new();
    };
    let listed: Vec<&String> = match &status.pod_ips {
        Some(ips) => ips.iter().map(|p| &p.ip).collect(),
        None => status.pod_ip.iter().collect(),
    };
    listed
        .into_iter()
        .filter(|ip| ip.parse::<Ipv4Addr>().is_ok())
        .cloned()
        .collect()
}

/// The service's ports as this pod serves them; a port whose named target
/// the pod does not have is left out.
fn endpoint_ports(spec: &ServiceSpec, pod: &Pod) -> Vec<EndpointPort> {
    spec.ports
        .iter()
        .flatten()
        .filter_map(|port| {
            Some(EndpointPort {
                name: Some(port.name.clone().unwrap_or_default()),
                port: Some(find_port(pod, port)?),
                protocol: port.protocol.clone(),
                app_protocol: port.app_protocol.clone(),
            })
        })
        .collect()
}

/// The container port a service port reaches in `pod`: its number, or the
/// named port of the same protocol in a container (or a sidecar: an init
/// container that restarts `Always`).
fn find_port(pod: &Pod, port: &ServicePort) -> Option<i32> {
    let name = match &port.target_port {
        Some(IntOrString::Int(n)) => return Some(*n),
        None => return Some(port.port),
        Some(IntOrString::String(name)) => name,
    };
    let protocol = port.protocol.as_deref().unwrap_or("TCP");
    let spec = pod.spec.as_ref()?;
    let sidecars = spec
        .init_containers
        .iter()
        .flatten()
        .filter(|c| c.restart_policy.as_deref() == Some("Always"));
    spec.containers
        .iter()
        .chain(sidecars)
        .flat_map(|c| c.ports.iter().flatten())
        .find(|p| {
            p.name.as_deref() == Some(name) && p.protocol.as_deref().unwrap_or("TCP") == protocol
        })
        .map(|p| p.container_port)
}

fn port_key(p: &EndpointPort) -> PortKey {
    (
        p.name.clone().unwrap_or_default(),
        p.port.unwrap_or_default(),
        p.protocol.clone().unwrap_or_default(),
        p.app_protocol.clone().unwrap_or_default(),
    )
}

fn to_endpoint(
    pod: &Pod,
    addresses: Vec<String>,
    service: &Service,
    zones: &BTreeMap<&str, &String>,
) -> Endpoint {
    let spec = service.spec.as_ref();
    let publish = spec.and_then(|s| s.publish_not_ready_addresses) == Some(true);
    let serving = is_ready(pod);
    let terminating = pod.metadata.deletion_timestamp.is_some();
    let pod_spec = pod.spec.as_ref();
    let node_name = pod_spec.and_then(|s| s.node_name.clone());
    let hostname = pod_spec
        .filter(|s| s.subdomain.is_some() && s.subdomain == service.metadata.name)
        .and_then(|s| s.hostname.clone())
        .filter(|h| !h.is_empty());
    Endpoint {
        addresses,
        conditions: Some(EndpointConditions {
            ready: Some(publish || (serving && !terminating)),
            serving: Some(serving),
            terminating: Some(terminating),
        }),
        hostname,
        zone: node_name
            .as_deref()
            .and_then(|n| zones.get(n))
            .map(|z| (*z).clone()),
        node_name,
        target_ref: Some(ObjectReference {
            kind: Some("Pod".to_owned()),
            namespace: pod.metadata.namespace.clone(),
            name: pod.metadata.name.clone(),
            uid: pod.metadata.uid.clone(),
            ..ObjectReference::default()
        }),
        ..Endpoint::default()
    }
}

/// The service's own labels, without the ones the controller reserves, and
/// the controller's: service name, manager and, for a headless service,
/// the headless mark.
fn slice_labels(service: &Service, spec: &ServiceSpec) -> BTreeMap<String, String> {
    let reserved = [SERVICE_NAME_LABEL, MANAGED_BY_LABEL, HEADLESS_LABEL];
    let mut labels: BTreeMap<String, String> = service
        .metadata
        .labels
        .iter()
        .flatten()
        .filter(|(k, _)| !reserved.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if matches!(spec.cluster_ip.as_deref(), None | Some("None") | Some("")) {
        labels.insert(HEADLESS_LABEL.to_owned(), String::new());
    }
    labels.insert(
        SERVICE_NAME_LABEL.to_owned(),
        service.metadata.name.clone().unwrap_or_default(),
    );
    labels.insert(MANAGED_BY_LABEL.to_owned(), MANAGED_BY.to_owned());
    labels
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;

    const SERVICE: &str = "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  namespace: demo\n\
        \x20 labels: {team: a}\nspec:\n  selector: {app: web}\n  ports:\n\
        \x20 - {name: http, port: 80, targetPort: http}\n  - {name: admin, port: 81, targetPort: 9000}\n---\n";

    /// A pod of app `app` whose container names `http` as `http_port`.
    fn pod_yaml(name: &str, app: &str, http_port: Option<i32>, status: &str) -> String {
        let ports = match http_port {
            Some(p) => format!("\n    ports: [{{name: http, containerPort: {p}}}]"),
            None => String::new(),
        };
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: demo\n\
             \x20 labels: {{app: {app}}}\nspec:\n  nodeName: node1\n  containers:\n  - name: c{ports}\n\
             {status}---\n"
        )
    }

    fn addresses(slice: &EndpointSlice) -> Vec<String> {
        slice
            .endpoints
            .iter()
            .flatten()
            .flat_map(|e| e.addresses.clone())
            .collect()
    }

    fn ports(slice: &EndpointSlice) -> Vec<(String, i32)> {
        slice
            .ports
            .iter()
            .flatten()
            .map(|p| (p.name.clone().unwrap(), p.port.unwrap()))
            .collect()
    }

    fn folder(extra: &str) -> TempDir {
        let dir = TempDir::new();
        dir.write("nodes.yaml", &nodes(&[("node1", "10.244.1.0/24")]));
        let pods = [
            pod_yaml("a", "web", Some(8080), ""),
            pod_yaml("b", "web", Some(8081), ""),
            pod_yaml("c", "web", Some(8080), ""),
            pod_yaml("d", "web", None, ""),
            pod_yaml("other", "api", Some(8080), ""),
            pod_yaml("done", "web", Some(8080), "status: {phase: Succeeded}\n"),
            pod_yaml(
                "late",
                "web",
                Some(8080),
                "status:\n  conditions: [{type: Ready, status: \"False\"}]\n",
            ),
            pod_yaml("going", "web", Some(8080), "status: {podIP: 10.244.1.99}\n").replace(
                "  namespace: demo\n",
                "  namespace: demo\n  deletionTimestamp: \"2024-01-01T00:00:00Z\"\n",
            ),
        ]
        .concat();
        dir.write("pods.yaml", &format!("{SERVICE}{pods}{extra}"));
        dir
    }

    #[test]
    fn slices_group_endpoints_by_resolved_ports() {
        let dir = folder("");
        let loaded = load(&dir);
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
        let slices = slices_of(&loaded, "demo", "web");
        let ip = |name| {
            pod(&loaded, "demo", name)
                .status
                .as_ref()
                .unwrap()
                .pod_ip
                .clone()
                .unwrap()
        };
        let mut by_ports: Vec<_> = slices.iter().map(|s| (ports(s), addresses(s))).collect();
        by_ports.sort();
        assert_eq!(
            by_ports,
            vec![
                (vec![("admin".to_owned(), 9000)], vec![ip("d")]),
                (
                    vec![("http".to_owned(), 8080), ("admin".to_owned(), 9000)],
                    vec![ip("a"), ip("c"), "10.244.1.99".to_owned(), ip("late")]
                ),
                (
                    vec![("http".to_owned(), 8081), ("admin".to_owned(), 9000)],
                    vec![ip("b")]
                ),
            ]
        );
        for s in &slices {
            let labels = s.metadata.labels.as_ref().unwrap();
            assert_eq!(labels[MANAGED_BY_LABEL], MANAGED_BY);
            assert_eq!(labels[SERVICE_NAME_LABEL], "web");
            assert_eq!(labels["team"], "a");
            assert!(!labels.contains_key(HEADLESS_LABEL));
            assert_eq!(s.address_type, "IPv4");
            assert!(s.metadata.name.as_deref().unwrap().starts_with("web-"));
        }
        let endpoint = |name: &str| {
            slices
                .iter()
                .flat_map(|s| s.endpoints.iter().flatten())
                .find(|e| e.target_ref.as_ref().unwrap().name.as_deref() == Some(name))
                .cloned()
                .unwrap()
        };
        let c = |name| endpoint(name).conditions.unwrap();
        assert_eq!(
            (c("a").ready, c("a").serving, c("a").terminating),
            (Some(true), Some(true), Some(false))
        );
        assert_eq!(
            (c("late").ready, c("late").serving),
            (Some(false), Some(false))
        );
        assert_eq!(
            (c("going").ready, c("going").serving, c("going").terminating),
            (Some(false), Some(true), Some(true))
        );
        assert_eq!(endpoint("a").node_name.as_deref(), Some("node1"));
        // Names are stable.
        assert_eq!(load(&dir), loaded);
    }

    #[test]
    fn publish_not_ready_addresses_makes_every_endpoint_ready() {
        let dir = folder("");
        let text = std::fs::read_to_string(dir.path().join("pods.yaml")).unwrap();
        dir.write(
            "pods.yaml",
            &text.replace(
                "  selector: {app: web}\n",
                "  selector: {app: web}\n  publishNotReadyAddresses: true\n",
            ),
        );
        let loaded = load(&dir);
        let endpoints: Vec<Endpoint> = slices_of(&loaded, "demo", "web")
            .iter()
            .flat_map(|s| s.endpoints.clone().unwrap_or_default())
            .collect();
        assert_eq!(endpoints.len(), 6);
        assert!(endpoints
            .iter()
            .all(|e| e.conditions.as_ref().unwrap().ready == Some(true)));
    }

    #[test]
    fn a_given_slice_suppresses_derivation() {
        let given =
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: web-own\n\
            \x20 namespace: demo\n  labels: {kubernetes.io/service-name: web}\naddressType: IPv4\n\
            endpoints: [{addresses: [10.1.1.1]}]\n";
        let loaded = load(&folder(given));
        let slices = slices_of(&loaded, "demo", "web");
        assert_eq!(slices.len(), 1);
        assert_eq!(slices[0].metadata.name.as_deref(), Some("web-own"));
    }

    #[test]
    fn no_endpoints_gives_one_empty_slice_and_headless_is_marked() {
        let dir = TempDir::new();
        dir.write(
            "s.yaml",
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: db\nspec:\n  clusterIP: None\n\
             \x20 selector: {app: db}\n",
        );
        let loaded = load(&dir);
        let slices = slices_of(&loaded, "default", "db");
        assert_eq!(slices.len(), 1);
        assert_eq!(slices[0].endpoints, None);
        assert_eq!(slices[0].ports, None);
        assert!(slices[0]
            .metadata
            .labels
            .as_ref()
            .unwrap()
            .contains_key(HEADLESS_LABEL));
    }

    #[test]
    fn slices_hold_at_most_100_endpoints() {
        let dir = TempDir::new();
        dir.write("nodes.yaml", &nodes(&[("node1", "10.244.0.0/16")]));
        let pods: String = (0..150)
            .map(|i| pod_yaml(&format!("p{i:03}"), "web", Some(8080), ""))
            .collect();
        dir.write("pods.yaml", &format!("{SERVICE}{pods}"));
        let loaded = load(&dir);
        let mut sizes: Vec<usize> = slices_of(&loaded, "demo", "web")
            .iter()
            .map(|s| s.endpoints.as_ref().map_or(0, Vec::len))
            .collect();
        sizes.sort();
        assert_eq!(sizes, vec![50, 100]);
    }
}
