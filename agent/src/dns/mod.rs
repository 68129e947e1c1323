//! Cluster DNS, answered by the agent itself from the objects it already
//! watches, the way CoreDNS's kubernetes plugin answers:
//!
//! - `svc.ns.svc.<domain>` A: a ClusterIP service's cluster IPs; a headless
//!   service's ready endpoints (and `host.svc.ns.svc.<domain>` per
//!   endpoint, `host` its hostname or dashed address);
//! - an ExternalName service: a CNAME to its `externalName`;
//! - `_port._tcp.svc.ns.svc.<domain>` (and `_udp`) SRV for named ports:
//!   the service name, or each endpoint of a headless service;
//! - `a-b-c-d.ns.pod.<domain>` A for pods;
//! - PTR for the addresses it knows (`d.c.b.a.in-addr.arpa`): a service's
//!   cluster IP gives the service's name, a headless endpoint its host
//!   name, any other pod its pod name; other reverse names are outside the
//!   zone (as with CoreDNS's `fallthrough in-addr.arpa`);
//! - SOA at the apex (`ns.dns.<domain>`, `hostmaster.<domain>`);
//! - NXDOMAIN for unknown names in the domain, NOERROR without answers
//!   (NODATA) for other types of existing names, both with the SOA in the
//!   authority section (negative caching, RFC 2308); names outside the
//!   domain go to `--dns-upstream` or are REFUSED.
//!
//! [`zone`] builds the records; [`server`] answers on UDP and TCP.
//!
//! **How queries reach the agent.** Pods send everything to the switch,
//! and a query to the cluster DNS IP (`--cluster-dns`, 10.96.0.10) meets
//! the service stage like any ClusterIP traffic. The agent adds one
//! synthetic service, [`SERVICE_NAMESPACE`]/[`SERVICE_NAME`], to the
//! reconciler (not a watched object: a watch or a manifest folder cannot
//! remove it): frontend `<cluster DNS>:53` UDP and TCP, one backend, this
//! node's own address. The service stage DNATs to `node IP:53`; the route
//! table sends the node's own address to the host port (`Route::Host`, as
//! for a hostNetwork endpoint), so the query leaves the switch on
//! `psw-host` and reaches the node's stack on `psw-node`, where the
//! server is bound to `node IP:53`. The node routes the reply back to the
//! pod through the host port (its pod CIDR route via 169.254.1.1), the
//! switch matches it in conntrack and un-NATs the source to the cluster
//! DNS IP. Nothing is added to the fast path: to the workers this is one
//! more service with one backend.
//!
//! Caveats: the server listens on the node's address, which the underlay
//! reaches too; it answers only pods (the cluster CIDR), the node itself
//! and loopback ([`Clients`]; others are counted as `outside`). Names
//! outside the cluster domain are only forwarded when an upstream is
//! configured. Egress NetworkPolicies see the DNAT'ed
//! destination (the node IP), as they would see a CoreDNS pod's address.
//! A watched Service holding the cluster DNS IP (a cluster's own `kube-dns`
//! at 10.96.0.10) keeps its other ports, but its port 53 frontends are the
//! agent's, whichever arrived first, and the agent warns naming it: to
//! leave DNS to CoreDNS, give the agent another `--cluster-dns` address.

pub mod server;
pub mod zone;

use std::net::Ipv4Addr;

use tables::model::{Endpoint, Proto, Service, ServicePort, ServiceType, TrafficPolicy};
use tables::service::ServiceEntry;

pub use api::DnsStats;
pub use server::{Clients, DnsError, DnsServer};
pub use zone::{SharedZone, Zone};

/// The synthetic service's namespace and name.
pub const SERVICE_NAMESPACE: &str = "kube-system";
pub const SERVICE_NAME: &str = "podswitch-dns";
/// The DNS port.
pub const PORT: u16 = 53;

/// The synthetic service sending `cluster_dns:53` (UDP and TCP) to
/// `node_ip:53` on node `node`.
pub fn service_entry(cluster_dns: Ipv4Addr, node_ip: Ipv4Addr, node: &str) -> ServiceEntry {
    let port = |name: &str, proto| ServicePort {
        name: name.into(),
        proto,
        port: PORT,
        node_port: None,
    };
    ServiceEntry {
        service: Service {
            namespace: SERVICE_NAMESPACE.into(),
            name: SERVICE_NAME.into(),
            kind: ServiceType::ClusterIp,
            cluster_ips: vec![cluster_dns],
            ports: vec![port("dns", Proto::Udp), port("dns-tcp", Proto::Tcp)],
            external_ips: Vec::new(),
            load_balancer_ips: Vec::new(),
            affinity_timeout_s: None,
            external_traffic_policy: TrafficPolicy::Cluster,
            internal_traffic_policy: TrafficPolicy::Cluster,
            health_check_node_port: None,
        },
        endpoints: vec![Endpoint {
            ip: node_ip,
            node: node.into(),
            ready: true,
            serving: true,
            terminating: false,
            ports: vec![("dns".into(), PORT), ("dns-tcp".into(), PORT)],
        }],
    }
}
