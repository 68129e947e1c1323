//! The tables the CLI prints (`-o table`, the default), kubectl style:
//! upper-case headers, columns aligned with three spaces between them, one
//! row per item, `-` for an empty cell.

use super::views::{
    ConntrackView, DirectionView, PoliciesView, PortRef, PortsView, RoutesView, ServicesView,
};
use super::AgentStatus;

/// Backends listed in a `services` row before `+ N more...`, as kubectl
/// lists endpoints.
const LISTED_BACKENDS: usize = 3;

/// A table of text cells.
#[derive(Clone, Debug, Default)]
pub struct Table {
    headers: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headers.
    pub fn new(headers: &[&'static str]) -> Table {
        Table {
            headers: headers.to_vec(),
            rows: Vec::new(),
        }
    }

    /// Adds a row (missing cells print as `-`, extra ones are dropped).
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The header line and one line per row, columns padded to their widest
    /// cell; no trailing spaces.
    pub fn render(&self) -> String {
        let cell = |row: &[String], i: usize| -> String {
            match row.get(i).map(String::as_str) {
                None | Some("") => "-".to_string(),
                Some(s) => s.to_string(),
            }
        };
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, w) in widths.iter_mut().enumerate() {
                *w = (*w).max(cell(row, i).chars().count());
            }
        }
        let mut out = String::new();
        let header: Vec<String> = self.headers.iter().map(|h| h.to_string()).collect();
        for line in std::iter::once(&header).chain(&self.rows) {
            let cells: Vec<String> = (0..widths.len()).map(|i| cell(line, i)).collect();
            let mut text = String::new();
            for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
                if i + 1 == widths.len() {
                    text.push_str(c);
                } else {
                    text.push_str(&format!("{c:<w$}   "));
                }
            }
            out.push_str(text.trim_end());
            out.push('\n');
        }
        out
    }
}

fn yes_no(b: bool) -> String {
    if b { "yes" } else { "no" }.to_string()
}

/// `12s`, `5m`, `3h`, `2d` (kubectl's AGE column, coarser units only).
pub fn age(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..=119 => format!("{s}s"),
        120..=7199 => format!("{}m", s / 60),
        7200..=172_799 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

fn port_ref(p: &PortRef) -> String {
    match &p.name {
        Some(name) => format!("{} ({name})", p.id),
        None => p.id.to_string(),
    }
}

impl AgentStatus {
    /// `podswitch status`: the agent's row, then object counts, then recent
    /// warnings. `now_unix_ms` dates the last sync.
    pub fn render(&self, now_unix_ms: u64) -> String {
        let mut t = Table::new(&[
            "NODE",
            "SOURCE",
            "SYNCED",
            "READY",
            "GENERATION",
            "WORKERS",
            "PORTS",
            "LAST-SYNC",
        ]);
        t.row(vec![
            self.node.clone(),
            self.source.name().to_string(),
            yes_no(self.synced),
            yes_no(self.ready),
            self.generation.to_string(),
            self.workers.to_string(),
            self.ports.len().to_string(),
            self.last_sync_unix_ms
                .map(|t| format!("{} ago", age(now_unix_ms.saturating_sub(t))))
                .unwrap_or_default(),
        ]);
        let mut out = t.render();
        if !self.objects.is_empty() {
            let mut t = Table::new(&["KIND", "OBJECTS"]);
            for (kind, n) in &self.objects {
                t.row(vec![kind.clone(), n.to_string()]);
            }
            out.push('\n');
            out.push_str(&t.render());
        }
        if !self.warnings.is_empty() {
            out.push_str("\nWARNINGS\n");
            for w in &self.warnings {
                out.push_str(w);
                out.push('\n');
            }
        }
        out
    }
}

impl ServicesView {
    /// `podswitch services`: one row per frontend.
    pub fn render(&self) -> String {
        let mut t = Table::new(&[
            "NAMESPACE",
            "NAME",
            "TYPE",
            "IP",
            "PORT",
            "POLICY",
            "AFFINITY",
            "BACKENDS",
        ]);
        for s in &self.services {
            for f in &s.frontends {
                let listed: Vec<String> = f
                    .backends
                    .iter()
                    .take(LISTED_BACKENDS)
                    .map(|b| {
                        let local = if b.local { "*" } else { "" };
                        format!("{}:{}{local}", b.ip, b.port)
                    })
                    .collect();
                let mut backends = listed.join(",");
                if f.backends.len() > LISTED_BACKENDS {
                    backends.push_str(&format!(
                        " + {} more...",
                        f.backends.len() - LISTED_BACKENDS
                    ));
                }
                if f.backends.is_empty() {
                    backends = "<none>".into();
                }
                t.row(vec![
                    s.namespace.clone(),
                    s.name.clone(),
                    f.kind.name().to_string(),
                    f.ip.to_string(),
                    format!("{}/{}", f.port, f.proto),
                    f.traffic_policy.clone(),
                    f.affinity_timeout_s
                        .map(|s| format!("ClientIP {s}s"))
                        .unwrap_or_default(),
                    backends,
                ]);
            }
        }
        t.render()
    }
}

impl PortsView {
    /// `TCP 80,443; UDP 53`, `all`, or `none`.
    pub fn summary(&self) -> String {
        if self.all_protocols {
            return "all".into();
        }
        let parts: Vec<String> = [("TCP", &self.tcp), ("UDP", &self.udp), ("SCTP", &self.sctp)]
            .iter()
            .filter(|(_, r)| !r.is_empty())
            .map(|(name, r)| {
                if r.len() == 1 && r[0] == "0-65535" {
                    format!("{name} all")
                } else {
                    format!("{name} {}", r.join(","))
                }
            })
            .collect();
        if parts.is_empty() {
            "none".into()
        } else {
            parts.join("; ")
        }
    }
}

impl DirectionView {
    /// `open`, `deny all`, or the allowed peers and ports:
    /// `from 10.244.1.10/32,10.244.2.10/31 on TCP 5432`.
    pub fn summary(&self, preposition: &str) -> String {
        if !self.isolated {
            return "open".into();
        }
        if self.allowed.is_empty() {
            return "deny all".into();
        }
        self.allowed
            .iter()
            .map(|a| {
                let peers = if a.peers.len() == 1 && a.peers[0] == "0.0.0.0/0" {
                    "any".to_string()
                } else if a.peer_count > 2 {
                    format!("{} prefixes", a.peer_count)
                } else {
                    a.peers.join(",")
                };
                format!("{preposition} {peers} on {}", a.ports.summary())
            })
            .collect::<Vec<_>>()
            .join(" | ")
    }
}

impl PoliciesView {
    /// `podswitch policies`: one row per local pod.
    pub fn render(&self) -> String {
        let mut t = Table::new(&["POD", "IP", "PORT", "POLICIES", "INGRESS", "EGRESS"]);
        for p in &self.pods {
            t.row(vec![
                p.pod.clone().unwrap_or_default(),
                p.ip.to_string(),
                p.port.as_ref().map(port_ref).unwrap_or_default(),
                p.policies.join(","),
                p.ingress.summary("from"),
                p.egress.summary("to"),
            ]);
        }
        t.render()
    }
}

impl RoutesView {
    /// `podswitch routes`: one row per destination: local pods, this node's
    /// addresses, remote pod CIDRs, on-link underlay hosts.
    pub fn render(&self) -> String {
        let mut t = Table::new(&["DESTINATION", "TYPE", "NODE", "VIA", "PORT", "MAC"]);
        let none = String::new;
        for p in &self.local_pods {
            t.row(vec![
                format!("{}/32", p.ip),
                "pod".into(),
                self.node.clone(),
                p.pod.clone().unwrap_or_default(),
                port_ref(&p.port),
                p.mac.clone(),
            ]);
        }
        for ip in &self.node_ips {
            t.row(vec![
                format!("{ip}/32"),
                "node".into(),
                self.node.clone(),
                "host port".into(),
                self.host_port.as_ref().map(port_ref).unwrap_or_default(),
                self.host_mac.clone(),
            ]);
        }
        for r in &self.remote {
            t.row(vec![
                r.cidr.clone(),
                "remote".into(),
                r.node.clone(),
                format!("vtep {}", r.vtep_ip),
                port_ref(&self.uplink),
                r.vtep_mac.clone(),
            ]);
        }
        for n in &self.neighbours {
            t.row(vec![
                format!("{}/32", n.ip),
                "neighbour".into(),
                none(),
                "on link".into(),
                port_ref(&self.uplink),
                n.mac.clone(),
            ]);
        }
        t.render()
    }
}

impl ConntrackView {
    /// `podswitch conntrack`: one row per connection.
    pub fn render(&self) -> String {
        let mut t = Table::new(&["PROTO", "SOURCE", "DESTINATION", "STATE", "NAT", "EXPIRES"]);
        for c in &self.entries {
            let nat: Vec<String> = c
                .dnat
                .iter()
                .map(|d| format!("dnat {d}"))
                .chain(c.snat.iter().map(|s| format!("snat {s}")))
                .collect();
            // ICMP echo flows carry the identifier as both "ports".
            let (src, dst) = if c.proto == "ICMP" {
                (
                    format!("{} (id {})", c.orig.src, c.orig.sport),
                    c.orig.dst.to_string(),
                )
            } else {
                (
                    format!("{}:{}", c.orig.src, c.orig.sport),
                    format!("{}:{}", c.orig.dst, c.orig.dport),
                )
            };
            t.row(vec![
                c.proto.clone(),
                src,
                dst,
                c.state.clone(),
                nat.join(", "),
                age(c.expires_in_ms),
            ]);
        }
        t.render()
    }

    /// The line saying entries were left out, if any were.
    pub fn truncation_note(&self) -> Option<String> {
        (self.entries.len() < self.matched).then(|| {
            format!(
                "showing {} of {} matching connections ({} tracked); raise --limit for more",
                self.entries.len(),
                self.matched,
                self.total
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::views::{ConnectionView, ConntrackQuery};
    use crate::{AgentStatus, SourceKind};
    use fixtures::example;
    use tables::proto::Proto;

    /// The column where `header` starts, and every row's cell there.
    fn column<'a>(out: &'a str, header: &str) -> Vec<&'a str> {
        let mut lines = out.lines();
        let first = lines.next().unwrap();
        let at = first.find(header).unwrap();
        std::iter::once(first)
            .chain(lines)
            .map(|l| {
                l.get(at..)
                    .unwrap_or("")
                    .split("   ")
                    .next()
                    .unwrap()
                    .trim()
            })
            .collect()
    }

    #[test]
    fn tables_align_and_mark_empty_cells() {
        let mut t = Table::new(&["NAME", "IP", "NOTE"]);
        t.row(vec!["a".into(), "10.0.0.1".into(), "x".into()]);
        t.row(vec!["longer-name".into(), String::new()]);
        assert_eq!(
            t.render(),
            "NAME          IP         NOTE\n\
             a             10.0.0.1   x\n\
             longer-name   -          -\n"
        );
        assert_eq!(Table::new(&["A", "B"]).render(), "A   B\n");
    }

    #[test]
    fn ages() {
        assert_eq!(age(999), "0s");
        assert_eq!(age(61_000), "61s");
        assert_eq!(age(600_000), "10m");
        assert_eq!(age(3 * 3_600_000), "3h");
        assert_eq!(age(3 * 86_400_000), "3d");
    }

    #[test]
    fn status_table() {
        let mut s = AgentStatus {
            node: "node1".into(),
            source: SourceKind::Static,
            synced: true,
            ready: true,
            generation: 4,
            workers: 2,
            ports: vec!["eth0".into(), "psw-host".into()],
            last_sync_unix_ms: Some(1_000),
            ..AgentStatus::default()
        };
        s.objects.insert("Pod".into(), 6);
        s.warn("NetworkPolicy demo/x: bad".into());
        let out = s.render(13_000);
        assert_eq!(column(&out, "NODE")[..2], ["NODE", "node1"]);
        assert_eq!(column(&out, "READY")[1], "yes");
        assert_eq!(column(&out, "LAST-SYNC")[1], "12s ago");
        assert!(out.contains("\nKIND   OBJECTS\nPod    6\n"), "{out}");
        assert!(
            out.ends_with("WARNINGS\nNetworkPolicy demo/x: bad\n"),
            "{out}"
        );
    }

    #[test]
    fn services_table() {
        let v = ServicesView::build(&example::snapshot("node1"));
        let out = v.render();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 1 + 4, "{out}");
        assert_eq!(
            column(&out, "TYPE"),
            ["TYPE", "ClusterIP", "ClusterIP", "NodePort", "External"]
        );
        assert_eq!(column(&out, "PORT")[1], "5432/TCP");
        assert_eq!(column(&out, "AFFINITY")[1], "ClientIP 10800s");
        assert_eq!(
            column(&out, "BACKENDS")[2],
            "10.244.1.10:8080*,10.244.2.10:8080,10.244.2.11:8080"
        );
    }

    #[test]
    fn policies_table() {
        let v = PoliciesView::build(&example::snapshot("node1"), &[(4, "veth-db".into())]);
        let out = v.render();
        let db = out.lines().find(|l| l.starts_with("demo/db ")).unwrap();
        assert!(db.contains("4 (veth-db)"), "{db}");
        assert!(db.contains("demo/db-from-web"), "{db}");
        assert!(
            db.contains("   from 10.244.1.10/32,10.244.2.10/31 on TCP 5432   "),
            "{db}"
        );
        assert!(db.trim_end().ends_with("open"), "{db}");
        let client = out.lines().find(|l| l.starts_with("demo/client ")).unwrap();
        assert!(client.contains(" - "), "no policies: {client}");
        let deny = DirectionView {
            isolated: true,
            ..DirectionView::default()
        };
        assert_eq!(deny.summary("from"), "deny all");
    }

    #[test]
    fn port_summaries() {
        let p = PortsView {
            tcp: vec!["80".into(), "8000-8080".into()],
            udp: vec!["0-65535".into()],
            ..PortsView::default()
        };
        assert_eq!(p.summary(), "TCP 80,8000-8080; UDP all");
        assert_eq!(PortsView::default().summary(), "none");
    }

    #[test]
    fn routes_table() {
        let out = RoutesView::build(&example::snapshot("node1"), &[(0, "eth0".into())]).render();
        assert_eq!(
            column(&out, "TYPE"),
            ["TYPE", "pod", "pod", "pod", "pod", "node", "remote"]
        );
        let remote = out.lines().find(|l| l.contains("remote")).unwrap();
        assert!(remote.starts_with("10.244.2.0/24 "), "{remote}");
        assert!(remote.contains("vtep 198.18.0.2"), "{remote}");
        assert!(remote.contains("0 (eth0)"), "{remote}");
    }

    #[test]
    fn conntrack_table() {
        let orig = tables::flow::FlowKey {
            src: u32::from(std::net::Ipv4Addr::new(10, 244, 1, 11)),
            dst: u32::from(std::net::Ipv4Addr::new(10, 96, 0, 20)),
            sport: 40000,
            dport: 80,
            proto: Proto::Tcp.number(),
        };
        let reply = tables::flow::FlowKey {
            src: u32::from(std::net::Ipv4Addr::new(10, 244, 2, 10)),
            sport: 8080,
            ..orig.reversed()
        };
        let e = tables::conntrack::EntryInfo {
            orig,
            reply,
            state: tables::conntrack::CtState::Established,
            flags: 0,
            epoch: 1,
            last_seen_ms: 0,
            expires_in_ms: 90_000,
        };
        let v = ConntrackView {
            total: 5,
            matched: 2,
            entries: vec![ConnectionView::of(&e)],
        };
        let out = v.render();
        assert_eq!(
            out.lines().nth(1).unwrap(),
            "TCP     10.244.1.11:40000   10.96.0.20:80   ESTABLISHED   dnat 10.244.2.10:8080   90s"
        );
        assert!(v.truncation_note().unwrap().starts_with("showing 1 of 2"));
        let all = ConntrackView::build(&[e], &ConntrackQuery::default());
        assert_eq!(all.truncation_note(), None);
    }
}
