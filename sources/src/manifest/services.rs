//! Service defaults and allocations, as the API server makes them.
//!
//! Uses: the services in (namespace, name) order and the service CIDR.
//! Sets, where the manifest leaves them unset: `type` (ClusterIP),
//! `sessionAffinity` (None), `internalTrafficPolicy` and, for NodePort and
//! LoadBalancer, `externalTrafficPolicy` (Cluster), `ipFamilies` (IPv4) and
//! `ipFamilyPolicy` (SingleStack), port `protocol` (TCP) and `targetPort`
//! (the port), `clusterIP(s)`, `nodePort`s and `healthCheckNodePort`.
//!
//! Allocation takes the explicit values of every service first, then gives
//! each service that needs one, in order, the first free value at or after
//! a stable hash of its name (wrapping around the range): cluster IPs from
//! the CIDR without its network, first and last addresses (the first goes
//! to `default/kubernetes` only), node ports from 30000-32767.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::ops::RangeInclusive;

use k8s_openapi::api::core::v1::{Service, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tables::model::Cidr;

use super::names::stable_hash;
use super::parse::Origin;
use super::resolve::Sourced;

/// The API server's default node port range.
pub(super) const NODE_PORTS: RangeInclusive<u32> = 30000..=32767;

pub(super) fn allocate(services: &mut [Sourced<Service>], cidr: Cidr, notes: &mut Vec<String>) {
    for s in services.iter_mut() {
        set_defaults(s.object.spec.get_or_insert_with(ServiceSpec::default));
    }
    let mut ips = Claims::new("cluster IP");
    let mut ports = Claims::new("node port");
    for Sourced { origin, object } in services.iter() {
        let what = describe(origin, object);
        if let Some(spec) = &object.spec {
            claim_given(spec, cidr, &what, &mut ips, &mut ports, notes);
        }
    }
    for Sourced { origin, object } in services.iter_mut() {
        let what = describe(origin, object);
        let namespace = object.metadata.namespace.clone().unwrap_or_default();
        let name = object.metadata.name.clone().unwrap_or_default();
        if let Some(spec) = object.spec.as_mut() {
            let mut notes = |note: &str| notes.push(format!("{what}: {note}"));
            give_cluster_ip(spec, cidr, [&namespace, &name], &mut ips, &mut notes);
            give_node_ports(spec, [&namespace, &name], &mut ports, &mut notes);
        }
    }
}

/// Claims the cluster IPs and node ports the manifest gives.
fn claim_given(
    spec: &ServiceSpec,
    cidr: Cidr,
    what: &str,
    ips: &mut Claims,
    ports: &mut Claims,
    notes: &mut Vec<String>,
) {
    let given_ips = spec.cluster_ips.iter().flatten();
    for ip in given_ips.filter(|ip| *ip != "None" && !ip.is_empty()) {
        match ip.parse::<Ipv4Addr>() {
            Ok(addr) if cidr.contains(u32::from(addr)) => ips.claim(u32::from(addr), what, notes),
            Ok(_) => notes.push(format!(
                "{what}: cluster IP {ip} is outside the service CIDR {cidr}"
            )),
            Err(_) => notes.push(format!("{what}: cluster IP {ip:?} is not an IPv4 address")),
        }
    }
    let node_ports = spec.ports.iter().flatten().filter_map(|p| p.node_port);
    for port in node_ports.chain(spec.health_check_node_port) {
        match u32::try_from(port) {
            Ok(p) if NODE_PORTS.contains(&p) => ports.claim(p, what, notes),
            _ => notes.push(format!(
                "{what}: node port {port} is outside {NODE_PORTS:?}"
            )),
        }
    }
}

/// A cluster IP for a service that needs one: the first address for
/// `default/kubernetes`, else the first free one from a hash of its name;
/// never the network, first or broadcast address.
fn give_cluster_ip(
    spec: &mut ServiceSpec,
    cidr: Cidr,
    [namespace, name]: [&str; 2],
    ips: &mut Claims,
    note: &mut impl FnMut(&str),
) {
    if spec.type_.as_deref() == Some("ExternalName") || spec.cluster_ip.is_some() {
        return;
    }
    let (first, last) = cidr.range();
    let kubernetes_ip = first.saturating_add(1);
    let is_kubernetes = namespace == "default" && name == "kubernetes";
    let ip = if is_kubernetes && cidr.len() < 31 && ips.taken.insert(kubernetes_ip) {
        Some(kubernetes_ip)
    } else {
        let range = first.saturating_add(2)..=last.saturating_sub(1);
        ips.next(&range, stable_hash(&[namespace, name]))
    };
    match ip {
        Some(ip) => {
            let ip = Ipv4Addr::from(ip).to_string();
            spec.cluster_ip = Some(ip.clone());
            spec.cluster_ips = Some(vec![ip]);
        }
        None => note(&format!(
            "no free cluster IP left in {cidr}; the service gets none"
        )),
    }
}

/// Node ports for the ports of a NodePort or LoadBalancer service that
/// have none, and a health check port for a LoadBalancer with the Local
/// policy, each the first free one from a hash of the service and port.
fn give_node_ports(
    spec: &mut ServiceSpec,
    [namespace, name]: [&str; 2],
    ports: &mut Claims,
    note: &mut impl FnMut(&str),
) {
    let load_balancer = spec.type_.as_deref() == Some("LoadBalancer");
    let wanted = match spec.type_.as_deref() {
        Some("NodePort") => true,
        Some("LoadBalancer") => spec.allocate_load_balancer_node_ports != Some(false),
        _ => false,
    };
    if wanted {
        for (index, port) in spec.ports.iter_mut().flatten().enumerate() {
            if port.node_port.is_some() {
                continue;
            }
            let protocol = port.protocol.clone().unwrap_or_default();
            let seed = stable_hash(&[namespace, name, &index.to_string(), &protocol]);
            match ports.next(&NODE_PORTS, seed) {
                Some(p) => port.node_port = i32::try_from(p).ok(),
                None => note("no free node port left"),
            }
        }
    }
    let local = spec.external_traffic_policy.as_deref() == Some("Local");
    if load_balancer && local && spec.health_check_node_port.is_none() {
        match ports.next(&NODE_PORTS, stable_hash(&[namespace, name, "health"])) {
            Some(p) => spec.health_check_node_port = i32::try_from(p).ok(),
            None => note("no free node port left for health checks"),
        }
    }
}

/// Values taken so far from one range.
struct Claims {
    what: &'static str,
    taken: BTreeSet<u32>,
    /// Who claimed each explicit value, to name both on a clash.
    owners: std::collections::BTreeMap<u32, String>,
}

impl Claims {
    fn new(what: &'static str) -> Claims {
        Claims {
            what,
            taken: BTreeSet::new(),
            owners: std::collections::BTreeMap::new(),
        }
    }

    /// Takes a value a manifest gives; a clash is reported, and both keep it.
    fn claim(&mut self, value: u32, who: &str, notes: &mut Vec<String>) {
        if let Some(first) = self.owners.get(&value) {
            if first != who {
                notes.push(format!(
                    "{who}: {} {} is also given to {first}",
                    self.what,
                    shown(self.what, value)
                ));
            }
            return;
        }
        self.owners.insert(value, who.to_owned());
        self.taken.insert(value);
    }

    /// The first free value of `range` at or after `seed` (mod its size),
    /// wrapping around; taken.
    fn next(&mut self, range: &RangeInclusive<u32>, seed: u64) -> Option<u32> {
        let (lo, hi) = (u64::from(*range.start()), u64::from(*range.end()));
        if hi < lo {
            return None;
        }
        let size = hi - lo + 1;
        let start = seed % size;
        // Only the taken values can be skipped: at most that many probes.
        let probes = size.min(
            u64::try_from(self.taken.len())
                .unwrap_or(u64::MAX)
                .saturating_add(1),
        );
        for i in 0..probes {
            let candidate = u32::try_from(lo + (start + i) % size).ok()?;
            if self.taken.insert(candidate) {
                return Some(candidate);
            }
        }
        None
    }
}

fn shown(what: &str, value: u32) -> String {
    if what == "cluster IP" {
        Ipv4Addr::from(value).to_string()
    } else {
        value.to_string()
    }
}

fn describe(origin: &Origin, service: &Service) -> String {
    format!(
        "{origin}: Service {}/{}",
        service.metadata.namespace.as_deref().unwrap_or_default(),
        service.metadata.name.as_deref().unwrap_or_default()
    )
}

/// The API server's defaults, and `clusterIP` and `clusterIPs` made to agree.
fn set_defaults(spec: &mut ServiceSpec) {
    let type_ = spec
        .type_
        .get_or_insert_with(|| "ClusterIP".to_owned())
        .clone();
    let external_name = type_ == "ExternalName";
    spec.session_affinity
        .get_or_insert_with(|| "None".to_owned());
    if spec.cluster_ip.as_deref() == Some("") {
        spec.cluster_ip = None;
    }
    match (&spec.cluster_ip, &spec.cluster_ips) {
        (Some(ip), None) => spec.cluster_ips = Some(vec![ip.clone()]),
        (None, Some(ips)) => spec.cluster_ip = ips.first().cloned().filter(|ip| !ip.is_empty()),
        _ => {}
    }
    if !external_name {
        spec.internal_traffic_policy
            .get_or_insert_with(|| "Cluster".to_owned());
        spec.ip_families
            .get_or_insert_with(|| vec!["IPv4".to_owned()]);
        spec.ip_family_policy
            .get_or_insert_with(|| "SingleStack".to_owned());
    }
    if type_ == "NodePort" || type_ == "LoadBalancer" {
        spec.external_traffic_policy
            .get_or_insert_with(|| "Cluster".to_owned());
    }
    for port in spec.ports.iter_mut().flatten() {
        port.protocol.get_or_insert_with(|| "TCP".to_owned());
        port.target_port.get_or_insert(IntOrString::Int(port.port));
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;

    fn svc(name: &str, spec: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: demo\n\
             spec:\n{spec}---\n"
        )
    }

    fn ip(loaded: &super::super::Loaded, name: &str) -> Option<String> {
        service(loaded, "demo", name)
            .spec
            .as_ref()
            .unwrap()
            .cluster_ip
            .clone()
    }

    #[test]
    fn defaults_like_the_api_server() {
        let dir = TempDir::new();
        dir.write("s.yaml", &svc("web", "  ports:\n  - port: 80\n"));
        let loaded = load(&dir);
        let spec = service(&loaded, "demo", "web").spec.clone().unwrap();
        assert_eq!(spec.type_.as_deref(), Some("ClusterIP"));
        assert_eq!(spec.session_affinity.as_deref(), Some("None"));
        assert_eq!(spec.internal_traffic_policy.as_deref(), Some("Cluster"));
        assert_eq!(spec.external_traffic_policy, None);
        assert_eq!(spec.ip_families, Some(vec!["IPv4".to_owned()]));
        let port = &spec.ports.as_ref().unwrap()[0];
        assert_eq!(port.protocol.as_deref(), Some("TCP"));
        assert_eq!(port.target_port, Some(IntOrString::Int(80)));
        assert_eq!(port.node_port, None);
        let ip: Ipv4Addr = spec.cluster_ip.as_deref().unwrap().parse().unwrap();
        assert!(cidr("10.96.0.0/12").contains(u32::from(ip)));
        assert_eq!(spec.cluster_ips, Some(vec![ip.to_string()]));
    }

    #[test]
    fn allocation_is_stable_keeps_explicit_values_and_never_collides() {
        // A /28 has 13 addresses to give (.2 to .14); fixed takes .7 and
        // 11 + lb take the other 12, so allocation must probe around.
        let services: String = (0..11)
            .map(|i| svc(&format!("s{i}"), "  type: NodePort\n  ports: [{port: 80}, {port: 81, protocol: UDP}]\n"))
            .chain([
                svc("fixed", "  clusterIP: 10.96.0.7\n  type: NodePort\n  ports: [{port: 80, nodePort: 30080}]\n"),
                svc("headless", "  clusterIP: None\n  ports: [{port: 80}]\n"),
                svc("ext", "  type: ExternalName\n  externalName: example.com\n"),
                svc("lb", "  type: LoadBalancer\n  externalTrafficPolicy: Local\n  ports: [{port: 443}]\n"),
            ])
            .collect();
        let dir = TempDir::new();
        dir.write("s.yaml", &services);
        let load28 = || super::super::load_dir(dir.path(), cidr("10.96.0.0/28"));
        let loaded = load28();
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
        assert_eq!(load28(), loaded);

        assert_eq!(ip(&loaded, "fixed").as_deref(), Some("10.96.0.7"));
        assert_eq!(ip(&loaded, "headless").as_deref(), Some("None"));
        assert_eq!(ip(&loaded, "ext"), None);
        let mut ips = BTreeSet::new();
        let mut node_ports = BTreeSet::new();
        for o in &loaded.objects {
            let crate::Object::Service(s) = o else {
                continue;
            };
            let spec = s.spec.as_ref().unwrap();
            if let Some(ip) = spec.cluster_ip.as_deref().filter(|ip| *ip != "None") {
                let last = ip.rsplit('.').next().unwrap().parse::<u32>().unwrap();
                assert!((2..=14).contains(&last), "{ip}");
                assert!(ips.insert(ip.to_owned()), "{ip} twice");
            }
            for p in spec.ports.iter().flatten() {
                if let Some(np) = p.node_port {
                    assert!(NODE_PORTS.contains(&u32::try_from(np).unwrap()));
                    assert!(node_ports.insert(np), "{np} twice");
                }
            }
            if let Some(h) = spec.health_check_node_port {
                assert!(node_ports.insert(h), "{h} twice");
            }
        }
        assert_eq!(ips.len(), 13);
        assert_eq!(node_ports.len(), 11 * 2 + 1 + 2);
        assert!(node_ports.contains(&30080));

        // Every address is given now: one more service (last in order)
        // gets none, and the others keep theirs.
        let more = format!("{services}{}", svc("zz-extra", "  ports: [{port: 80}]\n"));
        dir.write("s.yaml", &more);
        let full = load28();
        assert_eq!(ip(&full, "zz-extra"), None);
        assert_eq!(ip(&full, "s3"), ip(&loaded, "s3"));
        assert!(
            full.warnings
                .iter()
                .any(|w| w.contains("no free cluster IP")),
            "{:?}",
            full.warnings
        );
    }

    #[test]
    fn kubernetes_gets_the_first_address_and_clashes_are_reported() {
        let dir = TempDir::new();
        let text = [
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: kubernetes\nspec:\n  ports: [{port: 443}]\n---\n".to_owned(),
            svc("a", "  clusterIP: 10.96.0.20\n  ports: [{port: 80}]\n"),
            svc("b", "  clusterIP: 10.96.0.20\n  ports: [{port: 80}]\n"),
            svc("c", "  clusterIP: 192.168.0.1\n  ports: [{port: 80}]\n"),
        ]
        .concat();
        dir.write("s.yaml", &text);
        let loaded = load(&dir);
        let k = service(&loaded, "default", "kubernetes")
            .spec
            .as_ref()
            .unwrap();
        assert_eq!(k.cluster_ip.as_deref(), Some("10.96.0.1"));
        assert_eq!(ip(&loaded, "b").as_deref(), Some("10.96.0.20"));
        assert_eq!(loaded.warnings.len(), 2, "{:?}", loaded.warnings);
        assert!(
            loaded.warnings[0].contains("Service demo/b: cluster IP 10.96.0.20 is also given to")
        );
        assert!(loaded.warnings[1].contains("outside the service CIDR"));
    }
}
