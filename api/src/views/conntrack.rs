//! `GET /conntrack`: the filters ([`ConntrackQuery`]) and the answer
//! ([`ConntrackView`]), built from a dump of the conntrack table.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};
use tables::conntrack::EntryInfo;
use tables::flow::FlowKey;

use super::proto_name;

/// The conntrack entries returned when the query sets no limit.
pub const DEFAULT_CONNTRACK_LIMIT: usize = 1000;

/// The filters of `GET /conntrack`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConntrackQuery {
    /// The client end: the original source, or the reply's destination
    /// (which is the client after source NAT).
    pub src: Option<Ipv4Addr>,
    /// The server end: the original destination (a service IP), or the
    /// reply's source (the backend after destination NAT).
    pub dst: Option<Ipv4Addr>,
    /// IP protocol number.
    pub proto: Option<u8>,
    /// The destination port, before or after NAT.
    pub port: Option<u16>,
    pub limit: usize,
}

impl Default for ConntrackQuery {
    fn default() -> ConntrackQuery {
        ConntrackQuery {
            src: None,
            dst: None,
            proto: None,
            port: None,
            limit: DEFAULT_CONNTRACK_LIMIT,
        }
    }
}

/// The parameters `/conntrack` takes.
pub const CONNTRACK_PARAMS: &str = "src, dst, proto, port, limit";

/// Parses a protocol: `tcp`, `udp`, `icmp`, `sctp` (any case) or a number.
pub fn parse_proto(s: &str) -> Result<u8, String> {
    match s.to_ascii_lowercase().as_str() {
        "tcp" => Ok(6),
        "udp" => Ok(17),
        "icmp" => Ok(1),
        "sctp" => Ok(132),
        other => other
            .parse()
            .map_err(|_| format!("proto={s:?} is not tcp, udp, icmp, sctp or a number 0-255")),
    }
}

impl ConntrackQuery {
    /// Parses the query pairs of a request; the error names the bad
    /// parameter and what it expects.
    pub fn parse(query: &[(String, String)]) -> Result<ConntrackQuery, String> {
        let mut q = ConntrackQuery::default();
        let ip = |key: &str, v: &str| {
            v.parse::<Ipv4Addr>()
                .map_err(|_| format!("{key}={v:?} is not an IPv4 address"))
        };
        for (key, value) in query {
            match key.as_str() {
                "src" => q.src = Some(ip(key, value)?),
                "dst" => q.dst = Some(ip(key, value)?),
                "proto" => q.proto = Some(parse_proto(value)?),
                "port" => {
                    q.port = Some(
                        value
                            .parse()
                            .map_err(|_| format!("port={value:?} is not a port number 0-65535"))?,
                    )
                }
                "limit" => {
                    q.limit = value
                        .parse()
                        .map_err(|_| format!("limit={value:?} is not a non-negative number"))?
                }
                other => {
                    return Err(format!(
                        "unknown parameter {other:?} for /conntrack (known: {CONNTRACK_PARAMS})"
                    ))
                }
            }
        }
        Ok(q)
    }

    /// The request path with this query (`/conntrack?src=...`).
    pub fn path(&self) -> String {
        let mut params = Vec::new();
        if let Some(ip) = self.src {
            params.push(format!("src={ip}"));
        }
        if let Some(ip) = self.dst {
            params.push(format!("dst={ip}"));
        }
        if let Some(p) = self.proto {
            params.push(format!("proto={p}"));
        }
        if let Some(p) = self.port {
            params.push(format!("port={p}"));
        }
        if self.limit != DEFAULT_CONNTRACK_LIMIT {
            params.push(format!("limit={}", self.limit));
        }
        if params.is_empty() {
            "/conntrack".into()
        } else {
            format!("/conntrack?{}", params.join("&"))
        }
    }

    /// Whether `e` passes every filter.
    pub fn matches(&self, e: &EntryInfo) -> bool {
        let (o, r) = (&e.orig, &e.reply);
        self.src
            .is_none_or(|ip| u32::from(ip) == o.src || u32::from(ip) == r.dst)
            && self
                .dst
                .is_none_or(|ip| u32::from(ip) == o.dst || u32::from(ip) == r.src)
            && self.proto.is_none_or(|p| p == o.proto)
            && self.port.is_none_or(|p| p == o.dport || p == r.sport)
    }
}

/// `GET /conntrack`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConntrackView {
    /// Entries in the table.
    pub total: usize,
    /// Entries passing the filters (`entries` holds at most `limit`).
    pub matched: usize,
    /// Matching entries, by original tuple.
    pub entries: Vec<ConnectionView>,
}

/// A tuple as seen on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TupleView {
    pub src: Ipv4Addr,
    pub sport: u16,
    pub dst: Ipv4Addr,
    pub dport: u16,
}

impl TupleView {
    fn of(k: &FlowKey) -> TupleView {
        TupleView {
            src: Ipv4Addr::from(k.src),
            sport: k.sport,
            dst: Ipv4Addr::from(k.dst),
            dport: k.dport,
        }
    }
}

/// One tracked connection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionView {
    pub proto: String,
    /// The first packet as seen.
    pub orig: TupleView,
    /// What replies look like (after NAT).
    pub reply: TupleView,
    /// The destination was translated to this `ip:port`.
    pub dnat: Option<String>,
    /// The source was translated to this `ip:port`.
    pub snat: Option<String>,
    pub state: String,
    pub expires_in_ms: u64,
    /// Policy epoch the flow was last allowed under.
    pub policy_epoch: u32,
}

impl ConnectionView {
    /// The view of one dump entry.
    pub fn of(e: &EntryInfo) -> ConnectionView {
        let (o, r) = (&e.orig, &e.reply);
        ConnectionView {
            proto: proto_name(o.proto),
            orig: TupleView::of(o),
            reply: TupleView::of(r),
            dnat: (r.src != o.dst || r.sport != o.dport)
                .then(|| format!("{}:{}", Ipv4Addr::from(r.src), r.sport)),
            snat: (r.dst != o.src || r.dport != o.sport)
                .then(|| format!("{}:{}", Ipv4Addr::from(r.dst), r.dport)),
            state: e.state.name().to_string(),
            expires_in_ms: e.expires_in_ms,
            policy_epoch: e.epoch,
        }
    }
}

impl ConntrackView {
    /// Filters a dump: sorted by original tuple, at most `query.limit`.
    pub fn build(dump: &[EntryInfo], query: &ConntrackQuery) -> ConntrackView {
        let mut matched: Vec<&EntryInfo> = dump.iter().filter(|e| query.matches(e)).collect();
        matched.sort_by_key(|e| {
            let o = &e.orig;
            (o.proto, o.src, o.dst, o.sport, o.dport)
        });
        ConntrackView {
            total: dump.len(),
            matched: matched.len(),
            entries: matched
                .into_iter()
                .take(query.limit)
                .map(ConnectionView::of)
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn pairs(q: &str) -> Vec<(String, String)> {
        crate::http::parse_query(q).unwrap()
    }

    #[test]
    fn conntrack_query_parsing() {
        let q = ConntrackQuery::parse(&pairs("src=10.0.0.1&proto=UDP&port=53&limit=2")).unwrap();
        assert_eq!(q.src, Some(ip("10.0.0.1")));
        assert_eq!((q.proto, q.port, q.limit), (Some(17), Some(53), 2));
        assert_eq!(ConntrackQuery::parse(&q_pairs(&q)).unwrap(), q);
        assert_eq!(ConntrackQuery::default().path(), "/conntrack");
        for (bad, want) in [
            ("src=10.0.0", "src=\"10.0.0\" is not an IPv4 address"),
            ("proto=gre", "proto=\"gre\" is not tcp"),
            ("port=70000", "port=\"70000\" is not a port"),
            ("limit=-1", "limit=\"-1\" is not"),
            ("sport=1", "unknown parameter \"sport\""),
        ] {
            let err = ConntrackQuery::parse(&pairs(bad)).unwrap_err();
            assert!(err.starts_with(want), "{bad}: {err}");
        }
    }

    fn q_pairs(q: &ConntrackQuery) -> Vec<(String, String)> {
        let path = q.path();
        pairs(path.split_once('?').map_or("", |(_, q)| q))
    }

    #[test]
    fn conntrack_filters_see_both_sides_of_nat() {
        let key = |src: &str, sport, dst: &str, dport, proto| FlowKey {
            src: u32::from(ip(src)),
            dst: u32::from(ip(dst)),
            sport,
            dport,
            proto,
        };
        let entry = |orig: FlowKey, reply: FlowKey| EntryInfo {
            orig,
            reply,
            state: tables::conntrack::CtState::Established,
            flags: 0,
            epoch: 1,
            last_seen_ms: 0,
            expires_in_ms: 1000,
        };
        // Client to a service IP, translated to a backend.
        let orig = key("10.244.1.11", 40000, "10.96.0.20", 80, 6);
        let to_vip = entry(orig, key("10.244.2.10", 8080, "10.244.1.11", 40000, 6));
        let plain = key("10.244.1.11", 40001, "10.244.1.12", 5432, 6);
        let direct = entry(plain, plain.reversed());
        let dump = [to_vip, direct];
        let count = |q: &str| {
            ConntrackView::build(&dump, &ConntrackQuery::parse(&pairs(q)).unwrap()).matched
        };
        assert_eq!(count(""), 2);
        assert_eq!(count("dst=10.96.0.20"), 1);
        assert_eq!(count("dst=10.244.2.10"), 1, "the backend, after DNAT");
        assert_eq!(count("port=8080"), 1);
        assert_eq!(count("src=10.244.1.11&proto=tcp"), 2);
        assert_eq!(count("proto=udp"), 0);
        let v = ConntrackView::build(&dump, &ConntrackQuery::parse(&pairs("limit=1")).unwrap());
        assert_eq!((v.total, v.matched, v.entries.len()), (2, 2, 1));
        let c = ConnectionView::of(&to_vip);
        assert_eq!(c.dnat.as_deref(), Some("10.244.2.10:8080"));
        assert_eq!(c.snat, None);
        assert_eq!(ConnectionView::of(&direct).dnat, None);
    }
}
