//! The cluster zone: the records the agent answers, built from the raw
//! Kubernetes objects the reconciler holds (Services, EndpointSlices,
//! Pods), as CoreDNS's kubernetes plugin derives them.
//!
//! **Who writes, who reads.** The control thread builds a new [`Zone`]
//! whenever a Service, EndpointSlice or Pod changed and swaps it into the
//! [`SharedZone`]; the server threads take the current `Arc` per query
//! (a lock held for one pointer copy) and answer from it. A zone never
//! changes after it is built.
//!
//! Names are kept lowercase without the trailing dot; lookups normalise
//! the question's name the same way, so `WEB.Demo.svc.cluster.local.` and
//! `web.demo.svc.cluster.local` are one name.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex, PoisonError};

use hickory_proto::rr::RecordType;
use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::discovery::v1 as discovery;

use crate::reconcile::convert::SERVICE_NAME_LABEL;
use sources::Object;

/// One record's data.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Data {
    A(Ipv4Addr),
    /// An ExternalName service: an alias for another name.
    Cname(String),
    /// A named port: priority 0, weight 100, this port on `target`.
    Srv {
        port: u16,
        target: String,
    },
    /// A reverse name's owner (`d.c.b.a.in-addr.arpa` -> a service, an
    /// endpoint of a headless service or a pod).
    Ptr(String),
    /// The zone's start of authority, at its apex.
    Soa,
}

/// What a lookup found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// Records of the asked name: of the asked type, or its CNAME.
    Answer(Vec<Data>),
    /// The name exists (with records or names below it), not with this type.
    NoData,
    /// No such name in the cluster domain.
    NxDomain,
    /// The name is outside the cluster domain.
    OutOfZone,
}

/// The records of the cluster domain.
#[derive(Debug, Default)]
pub struct Zone {
    domain: String,
    records: HashMap<String, Vec<Data>>,
    /// Every name that exists without records of its own (`svc.cluster.local`,
    /// `demo.svc.cluster.local`, ...): NODATA rather than NXDOMAIN.
    interior: HashSet<String>,
    /// The SOA serial: when the zone was built (Unix seconds).
    serial: u32,
}

/// Which name a reverse lookup of an address gives, lowest first: a
/// service's cluster IP, a headless endpoint, a pod.
const PTR_SERVICE: u8 = 0;
const PTR_ENDPOINT: u8 = 1;
const PTR_POD: u8 = 2;

/// The reverse zone PTR names live in.
const REVERSE_SUFFIX: &str = ".in-addr.arpa";

/// A name as the zone keys it: lowercase, no trailing dot.
pub fn normalize(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// `10.244.1.10` -> `10-244-1-10`, the pod and endpoint name form.
fn dashed(ip: Ipv4Addr) -> String {
    ip.to_string().replace('.', "-")
}

fn namespace_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> String {
    meta.namespace
        .clone()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "default".to_owned())
}

impl Zone {
    /// An empty zone for `domain` (e.g. `cluster.local`).
    pub fn empty(domain: &str) -> Zone {
        let serial = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX))
            .unwrap_or_default();
        let mut zone = Zone {
            domain: normalize(domain),
            serial,
            ..Zone::default()
        };
        let apex = zone.domain.clone();
        zone.add(apex, Data::Soa);
        zone
    }

    /// The SOA serial.
    pub fn serial(&self) -> u32 {
        self.serial
    }

    /// The zone of `domain` for `objects` (other kinds are ignored).
    pub fn build<'a>(domain: &str, objects: impl IntoIterator<Item = &'a Object>) -> Zone {
        let mut zone = Zone::empty(domain);
        let mut ptrs = Ptrs::new();
        let mut services = Vec::new();
        let mut slices: HashMap<(String, String), Vec<&discovery::EndpointSlice>> = HashMap::new();
        for o in objects {
            match o {
                Object::Service(s) => services.push(s),
                Object::EndpointSlice(s) => {
                    let labels = s.metadata.labels.as_ref();
                    if let Some(svc) = labels.and_then(|l| l.get(SERVICE_NAME_LABEL)) {
                        let key = (namespace_of(&s.metadata), svc.clone());
                        slices.entry(key).or_default().push(s);
                    }
                }
                Object::Pod(p) => zone.add_pod(p, &mut ptrs),
                _ => {}
            }
        }
        for s in services {
            let key = (
                namespace_of(&s.metadata),
                s.metadata.name.clone().unwrap_or_default(),
            );
            let no_slices = Vec::new();
            zone.add_service(s, &key, slices.get(&key).unwrap_or(&no_slices), &mut ptrs);
        }
        for (ip, (_, target)) in ptrs {
            let [a, b, c, d] = ip.octets();
            zone.add(
                format!("{d}.{c}.{b}.{a}{REVERSE_SUFFIX}"),
                Data::Ptr(target),
            );
        }
        for list in zone.records.values_mut() {
            let unique: BTreeSet<Data> = list.drain(..).collect();
            list.extend(unique);
        }
        let names: Vec<String> = zone
            .records
            .keys()
            .filter(|n| zone.contains(n))
            .cloned()
            .collect();
        for name in names {
            let mut rest = name.as_str();
            while let Some((_, parent)) = rest.split_once('.') {
                if parent.len() < zone.domain.len() {
                    break;
                }
                zone.interior.insert(parent.to_owned());
                rest = parent;
            }
        }
        zone
    }

    fn add(&mut self, name: String, data: Data) {
        self.records.entry(name).or_default().push(data);
    }

    /// `a-b-c-d.ns.pod.<domain>` for a pod with an IPv4 address.
    fn add_pod(&mut self, pod: &core::Pod, ptrs: &mut Ptrs) {
        let ip = pod.status.as_ref().and_then(|s| s.pod_ip.as_deref());
        let Some(ip) = ip.and_then(|ip| ip.parse::<Ipv4Addr>().ok()) else {
            return;
        };
        let ns = namespace_of(&pod.metadata).to_ascii_lowercase();
        let name = format!("{}.{ns}.pod.{}", dashed(ip), self.domain);
        offer(ptrs, ip, PTR_POD, &name);
        self.add(name, Data::A(ip));
    }

    fn add_service(
        &mut self,
        svc: &core::Service,
        (ns, name): &(String, String),
        slices: &[&discovery::EndpointSlice],
        ptrs: &mut Ptrs,
    ) {
        let Some(spec) = svc.spec.as_ref() else {
            return;
        };
        if name.is_empty() {
            return;
        }
        let base = normalize(&format!("{name}.{ns}.svc.{}", self.domain));
        if spec.type_.as_deref() == Some("ExternalName") {
            if let Some(target) = spec.external_name.as_deref().filter(|t| !t.is_empty()) {
                self.add(base, Data::Cname(normalize(target)));
            }
            return;
        }
        let srv_name = |port: &str, proto: Option<&str>| {
            let proto = proto.unwrap_or("TCP").to_ascii_lowercase();
            normalize(&format!("_{port}._{proto}.{base}"))
        };
        if spec.cluster_ip.as_deref() != Some("None") {
            let mut ips: Vec<String> = spec.cluster_ips.clone().unwrap_or_default();
            if ips.is_empty() {
                ips.extend(spec.cluster_ip.clone());
            }
            for ip in ips.iter().filter_map(|s| s.parse::<Ipv4Addr>().ok()) {
                offer(ptrs, ip, PTR_SERVICE, &base);
                self.add(base.clone(), Data::A(ip));
            }
            for p in spec.ports.as_deref().unwrap_or_default() {
                let (Some(pname), Ok(port)) = (p.name.as_deref(), u16::try_from(p.port)) else {
                    continue;
                };
                if pname.is_empty() {
                    continue;
                }
                let target = base.clone();
                self.add(
                    srv_name(pname, p.protocol.as_deref()),
                    Data::Srv { port, target },
                );
            }
            return;
        }
        // Headless: the ready endpoints themselves.
        let publish_not_ready = spec.publish_not_ready_addresses.unwrap_or(false);
        for slice in slices.iter().filter(|s| s.address_type == "IPv4") {
            for e in slice.endpoints.iter().flatten() {
                let ready = e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
                if !ready && !publish_not_ready {
                    continue;
                }
                for ip in e
                    .addresses
                    .iter()
                    .filter_map(|a| a.parse::<Ipv4Addr>().ok())
                {
                    let host = e
                        .hostname
                        .clone()
                        .filter(|h| !h.is_empty())
                        .unwrap_or_else(|| dashed(ip));
                    let host = normalize(&format!("{host}.{base}"));
                    offer(ptrs, ip, PTR_ENDPOINT, &host);
                    self.add(base.clone(), Data::A(ip));
                    self.add(host.clone(), Data::A(ip));
                    for p in slice.ports.as_deref().unwrap_or_default() {
                        let (Some(pname), Some(port)) = (
                            p.name.as_deref().filter(|n| !n.is_empty()),
                            p.port.and_then(|n| u16::try_from(n).ok()),
                        ) else {
                            continue;
                        };
                        let target = host.clone();
                        self.add(
                            srv_name(pname, p.protocol.as_deref()),
                            Data::Srv { port, target },
                        );
                    }
                }
            }
        }
        // A headless service without ready endpoints still exists.
        self.records.entry(base).or_default();
    }

    /// The cluster domain (lowercase, no trailing dot).
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// Whether `name` lies in the cluster domain.
    pub fn contains(&self, name: &str) -> bool {
        let name = normalize(name);
        name == self.domain
            || name
                .strip_suffix(self.domain.as_str())
                .is_some_and(|head| head.ends_with('.'))
    }

    /// The answer to a question for `name` of type `qtype`. A CNAME answers
    /// every type (the client follows it).
    /// Reverse names (`in-addr.arpa`) of addresses the zone knows are
    /// answered; other reverse names are outside it (forwarded or
    /// refused, as CoreDNS's `fallthrough in-addr.arpa` does).
    pub fn lookup(&self, name: &str, qtype: RecordType) -> Lookup {
        let name = normalize(name);
        let reverse = name.ends_with(REVERSE_SUFFIX);
        if !reverse && !self.contains(&name) {
            return Lookup::OutOfZone;
        }
        let Some(list) = self.records.get(&name) else {
            return if reverse {
                Lookup::OutOfZone
            } else if self.interior.contains(&name) {
                Lookup::NoData
            } else {
                Lookup::NxDomain
            };
        };
        if let Some(cname) = list.iter().find(|d| matches!(d, Data::Cname(_))) {
            return Lookup::Answer(vec![cname.clone()]);
        }
        let found: Vec<Data> = list
            .iter()
            .filter(|d| {
                matches!(
                    (qtype, d),
                    (RecordType::ANY, _)
                        | (RecordType::A, Data::A(_))
                        | (RecordType::SRV, Data::Srv { .. })
                        | (RecordType::PTR, Data::Ptr(_))
                        | (RecordType::SOA, Data::Soa)
                )
            })
            .cloned()
            .collect();
        if found.is_empty() {
            Lookup::NoData
        } else {
            Lookup::Answer(found)
        }
    }

    /// The A records of `name` (for SRV targets' additional records).
    pub fn addresses(&self, name: &str) -> Vec<Ipv4Addr> {
        let list = self.records.get(&normalize(name));
        list.into_iter()
            .flatten()
            .filter_map(|d| match d {
                Data::A(ip) => Some(*ip),
                _ => None,
            })
            .collect()
    }
}

/// The name each address's reverse lookup gives, with its precedence.
type Ptrs = HashMap<Ipv4Addr, (u8, String)>;

/// Offers `name` as the reverse of `ip`: the lowest precedence wins, then
/// the first name in order (so the answer does not depend on object order).
fn offer(ptrs: &mut Ptrs, ip: Ipv4Addr, precedence: u8, name: &str) {
    let offered = (precedence, normalize(name));
    match ptrs.get(&ip) {
        Some(kept) if *kept <= offered => {}
        _ => {
            ptrs.insert(ip, offered);
        }
    }
}

/// The current zone, shared by the control thread (which replaces it) and
/// the server threads (which read it).
#[derive(Debug)]
pub struct SharedZone(Mutex<Arc<Zone>>);

impl SharedZone {
    /// Starts with `zone`.
    pub fn new(zone: Zone) -> SharedZone {
        SharedZone(Mutex::new(Arc::new(zone)))
    }

    /// The zone in force.
    pub fn current(&self) -> Arc<Zone> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Puts `zone` in force; queries being answered finish on the old one.
    pub fn replace(&self, zone: Zone) {
        let zone = Arc::new(zone);
        let old = std::mem::replace(
            &mut *self.0.lock().unwrap_or_else(PoisonError::into_inner),
            zone,
        );
        drop(old);
    }
}

#[cfg(test)]
#[path = "zone_tests.rs"]
pub(crate) mod tests;
