//! The contract of the agent's local API: the JSON types of every route,
//! [`ApiError`], the client functions and the messages ([`http`]) both ends
//! exchange over the agent's unix socket. The CLI, the CNI plugin and the
//! lab use the agent through this crate alone.
//!
//! It owns wire types and their rendering as tables; it depends on
//! `tables` (whose snapshots the views are built from) and serde, and must
//! never depend on the agent, the dataplane, tokio, kube or libbpf: the CNI
//! plugin links it.
//!
//! The socket defaults to [`DEFAULT_SOCKET`]; its directory is created with
//! mode 0700 when missing, and the socket itself has mode 0600 from the
//! moment it appears at its path (it is bound under a temporary name,
//! restricted, then renamed into place).
//!
//! The agent speaks HTTP/1.1 on the socket (hyper; any HTTP client works,
//! e.g. `curl --unix-socket`). Every route answers `GET` (and `/ports` also
//! `POST` and `DELETE`, see [`ports`]), with JSON (errors: `{"error":
//! "..."}` saying what was wrong; 404 for an unknown path, 400 for a bad or unknown query parameter, 405
//! for another method, 503 when the agent serves no tables):
//!
//! | route | answer |
//! |-------|--------|
//! | `/status` | [`AgentStatus`]: node, source (`static`, `kubernetes`, `manifests`), synced, ready, snapshot generation, objects per kind, last sync time, the last 50 warnings, workers, port names |
//! | `/readyz` | `200 ok` when ready (source synced and workers running), `503` and the reason otherwise; plain text, for a readiness probe |
//! | `/stats` | [`Stats`]: counters of every worker summed per port and per drop reason |
//! | `/services` | [`views::ServicesView`]: every service and frontend (kind, IP, protocol, port, traffic policy, affinity, SNAT) with its backends (`ip:port`, node, local, which set) |
//! | `/policies` | [`views::PoliciesView`]: per local pod, the selecting policies and per direction whether it is isolated and which peer prefixes may use which ports |
//! | `/routes` | [`views::RoutesView`]: local pods (IP, port, MAC), this node's addresses and host port, remote pod CIDRs with their node and VTEP, on-link neighbours |
//! | `/ports` | [`ports::PortsView`]: the pod interfaces the CNI plugin attached, with their port ids |
//! | `/conntrack?src=IP&dst=IP&proto=tcp\|udp\|icmp\|sctp\|N&port=N&limit=N` | [`views::ConntrackView`]: tracked connections passing the filters (see [`views::ConntrackQuery`]; `limit` defaults to 1000) with both tuples, NAT, state and expiry, plus how many matched and how many are tracked |
//!
//! The agent serves these routes (its `server` module); this crate builds
//! the views from a table snapshot so that both ends and the tests agree on
//! what a route returns.
//!
//! The client side is [`get`] (any route, decoded into any type) and one
//! typed helper per route ([`status`], [`services`], ...); its errors name
//! the socket and say what to do.

pub mod http;
pub mod ports;
pub mod render;
mod status;
pub mod views;

pub use status::{AgentStatus, DnsStats, SourceKind, MAX_WARNINGS};

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use self::http::ErrorBody;
use self::views::{ConntrackQuery, ConntrackView, PoliciesView, RoutesView, ServicesView};

/// The default socket path.
pub const DEFAULT_SOCKET: &str = "/run/podswitch/agent.sock";

/// Every route the API serves.
pub const ROUTES: [&str; 8] = [
    "/status",
    "/readyz",
    "/stats",
    "/services",
    "/policies",
    "/routes",
    "/conntrack",
    "/ports",
];

/// Counters of one port, summed over workers.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortStats {
    pub id: u16,
    pub name: String,
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub tx_full: u64,
    pub fill_empty: u64,
    pub wakeups: u64,
    pub ebusy_retries: u64,
}

/// Everything `GET /stats` returns.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    pub workers: usize,
    pub forwarded: u64,
    pub arp_replies: u64,
    pub encapsulated: u64,
    pub decapsulated: u64,
    pub conntrack_new: u64,
    pub conntrack_hits: u64,
    /// Super-packets split into segments for ports without offloads, the
    /// segments made, and partial checksums completed for such ports.
    #[serde(default)]
    pub gso_split: u64,
    #[serde(default)]
    pub gso_segments: u64,
    #[serde(default)]
    pub csum_completed: u64,
    /// Super-packets coalesced from segments for TAP ports (GRO), and the
    /// segments they took.
    #[serde(default)]
    pub gro_merged: u64,
    #[serde(default)]
    pub gro_segments: u64,
    /// Frame accounting over all workers: free + in flight == total when
    /// the workers are idle.
    pub frames_total: u64,
    pub frames_free: u64,
    pub frames_in_flight: u64,
    pub ports: Vec<PortStats>,
    /// Drop reason name -> count (non-zero ones).
    pub drops: Vec<(String, u64)>,
}

impl Stats {
    /// The one-shot table `podswitch stats` prints; `help` says what a drop
    /// reason (by name) means.
    pub fn render(&self, help: impl Fn(&str) -> &'static str) -> String {
        let mut out = format!(
            "workers {}  forwarded {}  arp {}  encap {}  decap {}  ct new {}  ct hits {}\ngso: {} split into {} segments, {} checksums completed; gro: {} segments into {}\nframes: {} total, {} free, {} in flight\n\n",
            self.workers,
            self.forwarded,
            self.arp_replies,
            self.encapsulated,
            self.decapsulated,
            self.conntrack_new,
            self.conntrack_hits,
            self.gso_split,
            self.gso_segments,
            self.csum_completed,
            self.gro_segments,
            self.gro_merged,
            self.frames_total,
            self.frames_free,
            self.frames_in_flight
        );
        out.push_str(&format!(
            "{:<4} {:<16} {:>12} {:>14} {:>12} {:>14} {:>8} {:>10} {:>8} {:>6}\n",
            "ID",
            "PORT",
            "RX-PKTS",
            "RX-BYTES",
            "TX-PKTS",
            "TX-BYTES",
            "TX-FULL",
            "FILL-EMPTY",
            "WAKEUPS",
            "EBUSY"
        ));
        for p in &self.ports {
            out.push_str(&format!(
                "{:<4} {:<16} {:>12} {:>14} {:>12} {:>14} {:>8} {:>10} {:>8} {:>6}\n",
                p.id,
                p.name,
                p.rx_packets,
                p.rx_bytes,
                p.tx_packets,
                p.tx_bytes,
                p.tx_full,
                p.fill_empty,
                p.wakeups,
                p.ebusy_retries
            ));
        }
        out.push_str(&format!(
            "\n{:<28} {:>10}  MEANING\n",
            "DROP REASON", "PACKETS"
        ));
        for (name, n) in &self.drops {
            let help = help(name);
            out.push_str(&format!("{name:<28} {n:>10}  {help}\n"));
        }
        out
    }
}

/// Errors of the local API, both ends. Each names the socket.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("cannot listen on {path}: {source}")]
    Listen {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("another agent is serving {path}; stop it first or pass another --socket")]
    InUse { path: PathBuf },
    #[error("{path} exists and is not a socket; remove it or pass another --socket")]
    NotASocket { path: PathBuf },
    #[error("no agent is listening on {path} ({source}); is `podswitch agent` running?")]
    NotRunning {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no permission to use {path}: the socket is mode 0600, owned by the agent's user; run as root (or as that user)")]
    Permission { path: PathBuf },
    #[error("cannot reach the agent at {path}: {source}")]
    Connect {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the agent at {path} answered badly: {reason}")]
    BadAnswer { path: PathBuf, reason: String },
    #[error("the agent at {path} refused {request} (HTTP {status}): {message}")]
    Refused {
        path: PathBuf,
        request: String,
        status: u16,
        message: String,
    },
}

/// Fetches `path` from the agent listening on `socket`: status code and
/// body, whatever the status.
pub fn get_raw(socket: &Path, path: &str) -> Result<(u16, String), ApiError> {
    call(socket, "GET", path, "")
}

/// Sends `method path` with `body` (JSON, may be empty) to the agent on
/// `socket`: status code and body, whatever the status.
pub fn call(
    socket: &Path,
    method: &str,
    path: &str,
    body: &str,
) -> Result<(u16, String), ApiError> {
    let io = |source: std::io::Error| {
        let path = socket.to_path_buf();
        match source.kind() {
            std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
                ApiError::NotRunning { path, source }
            }
            std::io::ErrorKind::PermissionDenied => ApiError::Permission { path },
            _ => ApiError::Connect { path, source },
        }
    };
    let mut stream = UnixStream::connect(socket).map_err(io)?;
    // Attaching a port waits for the control thread: allow for it.
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(io)?;
    stream
        .write_all(http::encode_request(method, path, body).as_bytes())
        .map_err(io)?;
    // `Connection: close`: the answer ends where the stream does.
    let mut response = Vec::new();
    stream.read_to_end(&mut response).map_err(io)?;
    http::parse_response(&response).map_err(|reason| ApiError::BadAnswer {
        path: socket.to_path_buf(),
        reason,
    })
}

/// Fetches `path` and decodes its JSON into `T`; a status other than 200 is
/// [`ApiError::Refused`] with the agent's error message.
pub fn get<T: DeserializeOwned>(socket: &Path, path: &str) -> Result<T, ApiError> {
    decode(socket, &format!("GET {path}"), get_raw(socket, path)?)
}

/// Decodes an answer to `request` (`"GET /x"`) as [`get`] does.
pub(crate) fn decode<T: DeserializeOwned>(
    socket: &Path,
    request: &str,
    (status, body): (u16, String),
) -> Result<T, ApiError> {
    if status != 200 {
        let message = serde_json::from_str::<ErrorBody>(&body)
            .map(|e| e.error)
            .unwrap_or(body);
        return Err(ApiError::Refused {
            path: socket.to_path_buf(),
            request: request.to_string(),
            status,
            message,
        });
    }
    serde_json::from_str(&body).map_err(|e| ApiError::BadAnswer {
        path: socket.to_path_buf(),
        reason: format!("{request}: {e}"),
    })
}

/// `GET /stats`.
pub fn stats(socket: &Path) -> Result<Stats, ApiError> {
    get(socket, "/stats")
}

/// `GET /status`.
pub fn status(socket: &Path) -> Result<AgentStatus, ApiError> {
    get(socket, "/status")
}

/// `GET /readyz`: whether the agent is ready.
pub fn ready(socket: &Path) -> Result<bool, ApiError> {
    match get_raw(socket, "/readyz")? {
        (200, _) => Ok(true),
        (503, _) => Ok(false),
        (status, body) => Err(ApiError::Refused {
            path: socket.to_path_buf(),
            request: "GET /readyz".into(),
            status,
            message: body,
        }),
    }
}

/// `GET /services`.
pub fn services(socket: &Path) -> Result<ServicesView, ApiError> {
    get(socket, "/services")
}

/// `GET /policies`.
pub fn policies(socket: &Path) -> Result<PoliciesView, ApiError> {
    get(socket, "/policies")
}

/// `GET /routes`.
pub fn routes(socket: &Path) -> Result<RoutesView, ApiError> {
    get(socket, "/routes")
}

/// `GET /conntrack` with `query`'s filters.
pub fn conntrack(socket: &Path, query: &ConntrackQuery) -> Result<ConntrackView, ApiError> {
    get(socket, &query.path())
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
