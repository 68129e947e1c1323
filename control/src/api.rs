//! The agent's local API: a unix socket speaking a small subset of HTTP/1.0
//! ([`http`]) with JSON bodies, for the CLI, readiness probes and tests.
//!
//! The socket defaults to [`DEFAULT_SOCKET`]; its directory is created with
//! mode 0700 when missing, and the socket itself has mode 0600 from the
//! moment it appears at its path (it is bound under a temporary name,
//! restricted, then renamed into place).
//!
//! Every route answers `GET` (and `/ports` also `POST` and `DELETE`, see
//! [`ports`]), with JSON (errors: `{"error": "..."}` saying what was wrong;
//! 404 for an unknown path, 400 for a bad or unknown query parameter, 405
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
//! The server accepts on its own thread and answers each request on a
//! thread of its own (at most 64 at once). It reads the
//! workers' counters without stopping them (relaxed atomic loads), the
//! tables from the current snapshot the way a worker does (pinned, no
//! lock), and conntrack with a dump. [`State`] holds what it reads; the
//! agent (and its reconciler) update [`AgentStatus`] through
//! [`State::status`].
//!
//! The client side is [`get`] (any route, decoded into any type) and one
//! typed helper per route ([`status`], [`services`], ...); its errors name
//! the socket and say what to do.

pub mod http;
pub mod ports;
pub mod render;
mod status;
pub mod views;

pub use status::{AgentStatus, SourceKind, MAX_WARNINGS};

use std::io::{BufReader, Read, Write};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use dataplane::counters::{Counters, DropReason};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tables::conntrack::Conntrack;
use tables::snapshot::Publisher;

use self::http::{ErrorBody, Request, Response};
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
    /// Sums `counters` (one per worker) for the ports named in `ports`.
    pub fn collect(counters: &[Arc<Counters>], ports: &[(u16, String)]) -> Stats {
        let sum = |f: &dyn Fn(&Counters) -> u64| counters.iter().map(|c| f(c)).sum::<u64>();
        let ports = ports
            .iter()
            .map(|(id, name)| {
                let p = |f: &dyn Fn(&dataplane::counters::PortCounters) -> u64| {
                    counters
                        .iter()
                        .filter_map(|c| c.port(usize::from(*id)))
                        .map(f)
                        .sum::<u64>()
                };
                PortStats {
                    id: *id,
                    name: name.clone(),
                    rx_packets: p(&|c| c.rx_packets.get()),
                    rx_bytes: p(&|c| c.rx_bytes.get()),
                    tx_packets: p(&|c| c.tx_packets.get()),
                    tx_bytes: p(&|c| c.tx_bytes.get()),
                    tx_full: p(&|c| c.tx_full.get()),
                    fill_empty: p(&|c| c.fill_empty.get()),
                    wakeups: p(&|c| c.wakeups.get()),
                    ebusy_retries: p(&|c| c.ebusy_retries.get()),
                }
            })
            .collect();
        let drops = DropReason::ALL
            .iter()
            .map(|r| (r.name().to_string(), sum(&|c| c.drops_of(*r))))
            .filter(|(_, n)| *n > 0)
            .collect();
        Stats {
            workers: counters.len(),
            forwarded: sum(&|c| c.forwarded.get()),
            arp_replies: sum(&|c| c.arp_replies.get()),
            encapsulated: sum(&|c| c.encapsulated.get()),
            decapsulated: sum(&|c| c.decapsulated.get()),
            conntrack_new: sum(&|c| c.ct_new.get()),
            conntrack_hits: sum(&|c| c.ct_hits.get()),
            frames_total: sum(&|c| c.frames_total.get()),
            frames_free: sum(&|c| c.frames_free.get()),
            frames_in_flight: sum(&|c| c.frames_in_flight.get()),
            ports,
            drops,
        }
    }

    /// The one-shot table `podswitch stats` prints.
    pub fn render(&self) -> String {
        let mut out = format!(
            "workers {}  forwarded {}  arp {}  encap {}  decap {}  ct new {}  ct hits {}\nframes: {} total, {} free, {} in flight\n\n",
            self.workers,
            self.forwarded,
            self.arp_replies,
            self.encapsulated,
            self.decapsulated,
            self.conntrack_new,
            self.conntrack_hits,
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
            let help = DropReason::ALL
                .iter()
                .find(|r| r.name() == name)
                .map_or("", |r| r.help());
            out.push_str(&format!("{name:<28} {n:>10}  {help}\n"));
        }
        out
    }
}

/// What the server needs to answer. A state without `publisher` or
/// `conntrack` still serves `/stats`, `/status` and `/readyz`; the table
/// routes answer 503.
#[derive(Clone, Default)]
pub struct State {
    /// One per worker.
    pub counters: Vec<Arc<Counters>>,
    /// Port id and interface name.
    pub ports: Vec<(u16, String)>,
    /// Kept current by the agent and its reconciler.
    pub status: Arc<Mutex<AgentStatus>>,
    /// The current table snapshot.
    pub publisher: Option<Arc<Publisher>>,
    pub conntrack: Option<Arc<Conntrack>>,
    /// Where `POST`/`DELETE /ports` go: the agent's control thread (`None`:
    /// the agent attaches no ports and those requests answer 503).
    pub port_control: Option<crossbeam_channel::Sender<ports::PortCommand>>,
    /// The attached pod interfaces, kept current by the control thread.
    pub attachments: Vec<ports::AttachedPort>,
}

impl State {
    /// The status as `/status` returns it (see [`AgentStatus`]).
    pub fn current_status(&self) -> AgentStatus {
        let mut s = self
            .status
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if let Some(p) = &self.publisher {
            s.generation = p.generation();
        }
        s.workers = self.counters.len();
        s.ports = self.ports.iter().map(|(_, name)| name.clone()).collect();
        s.ready = s.not_ready_reason().is_none();
        s
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

/// A running API server; stops (and removes its socket) on drop.
pub struct Server {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    /// Listens on `path`. A missing parent directory is created with mode
    /// 0700; a stale socket there is replaced, but not one an agent still
    /// answers on, nor a file that is no socket.
    pub fn start(path: &Path, state: Arc<Mutex<State>>) -> Result<Server, ApiError> {
        let err = |source| ApiError::Listen {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if !dir.exists() {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir)
                    .map_err(err)?;
            }
        }
        match std::fs::symlink_metadata(path) {
            Ok(meta) if meta.file_type().is_socket() => {
                if UnixStream::connect(path).is_ok() {
                    return Err(ApiError::InUse {
                        path: path.to_path_buf(),
                    });
                }
                std::fs::remove_file(path).map_err(err)?;
            }
            Ok(_) => {
                return Err(ApiError::NotASocket {
                    path: path.to_path_buf(),
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(err(e)),
        }
        // Bound under a temporary name and restricted before it is renamed
        // into place, so the socket is never reachable at `path` with the
        // umask's wider mode.
        let name = path.file_name().ok_or_else(|| {
            err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "the socket path has no file name",
            ))
        })?;
        let tmp = path.with_file_name(format!(
            ".{}.{}.tmp",
            name.to_string_lossy(),
            std::process::id()
        ));
        let _ = std::fs::remove_file(&tmp);
        let listener = UnixListener::bind(&tmp).map_err(err)?;
        let placed = std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
            .and_then(|()| std::fs::rename(&tmp, path));
        if let Err(e) = placed {
            let _ = std::fs::remove_file(&tmp);
            return Err(err(e));
        }
        listener.set_nonblocking(true).map_err(err)?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("podswitch-api".into())
                .spawn(move || serve(listener, state, stop))
                .map_err(err)?
        };
        Ok(Server {
            path: path.to_path_buf(),
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Requests answered at once; beyond this many, a new one is answered on
/// the accepting thread (which then waits for it).
const MAX_IN_FLIGHT: usize = 64;

fn serve(listener: UnixListener, state: Arc<Mutex<State>>, stop: Arc<AtomicBool>) {
    use std::os::fd::AsRawFd;
    let in_flight = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    while !stop.load(Ordering::Acquire) {
        // Sleep until a client connects (or 100 ms pass, to see `stop`):
        // a connection is accepted the moment it arrives.
        let mut pfd = libc::pollfd {
            fd: listener.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the call's duration.
        if unsafe { libc::poll(&mut pfd, 1, 100) } <= 0 {
            continue;
        }
        let Ok((stream, _)) = listener.accept() else {
            continue;
        };
        // Each request on its own thread: `POST /ports` waits for the
        // control thread, and must not hold up `/readyz` or `/stats`. A
        // client that goes away mid-answer concerns only itself.
        if in_flight.fetch_add(1, Ordering::AcqRel) >= MAX_IN_FLIGHT {
            drop(answer(stream, &state));
            in_flight.fetch_sub(1, Ordering::AcqRel);
            continue;
        }
        let (state, done) = (state.clone(), in_flight.clone());
        let spawned = std::thread::Builder::new()
            .name("podswitch-api-req".into())
            .spawn(move || {
                drop(answer(stream, &state));
                done.fetch_sub(1, Ordering::AcqRel);
            });
        if spawned.is_err() {
            in_flight.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

fn answer(stream: UnixStream, state: &Mutex<State>) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let response = match Request::read(&mut reader) {
        Ok(request) => {
            // Answer from a copy (Arcs and names): the lock is not held
            // while views are built.
            let state = state.lock().unwrap_or_else(PoisonError::into_inner).clone();
            respond(&state, &request)
        }
        Err(Ok(message)) => Response::error(400, message),
        Err(Err(e)) if e.kind() == std::io::ErrorKind::InvalidData => {
            Response::error(400, e.to_string())
        }
        Err(Err(e)) => return Err(e),
    };
    let mut stream = stream;
    response.write_to(&mut stream)
}

/// The answer to `request` (the routing of the module doc's table).
pub fn respond(state: &State, request: &Request) -> Response {
    match route(state, request) {
        Ok(response) | Err(response) => response,
    }
}

fn route(state: &State, request: &Request) -> Result<Response, Response> {
    let path = request.path.as_str();
    if path == "/ports" {
        return ports::respond(state, request);
    }
    if request.method != "GET" {
        return Err(Response::error(
            405,
            format!(
                "{} {path} is not allowed: the API answers GET only",
                request.method
            ),
        ));
    }
    let no_params = || match request.query.first() {
        Some((key, _)) => Err(Response::error(
            400,
            format!("{path} takes no parameters (got {key:?})"),
        )),
        None => Ok(()),
    };
    let tables = || {
        state
            .publisher
            .as_ref()
            .ok_or_else(|| Response::error(503, format!("{path}: this agent serves no tables")))
    };
    match path {
        "/stats" => {
            no_params()?;
            Ok(Response::json(&Stats::collect(
                &state.counters,
                &state.ports,
            )))
        }
        "/status" => {
            no_params()?;
            Ok(Response::json(&state.current_status()))
        }
        "/readyz" => {
            no_params()?;
            Ok(match state.current_status().not_ready_reason() {
                None => Response::text(200, "ok"),
                Some(reason) => Response::text(503, format!("not ready: {reason}")),
            })
        }
        "/services" => {
            no_params()?;
            Ok(Response::json(&tables()?.read(ServicesView::build)))
        }
        "/policies" => {
            no_params()?;
            let view = tables()?.read(|s| PoliciesView::build(s, &state.ports));
            Ok(Response::json(&view))
        }
        "/routes" => {
            no_params()?;
            let view = tables()?.read(|s| RoutesView::build(s, &state.ports));
            Ok(Response::json(&view))
        }
        "/conntrack" => {
            let query =
                ConntrackQuery::parse(&request.query).map_err(|e| Response::error(400, e))?;
            let conntrack = state.conntrack.as_ref().ok_or_else(|| {
                Response::error(503, "/conntrack: this agent has no conntrack table")
            })?;
            let dump = conntrack.dump_at(monotonic_ms());
            Ok(Response::json(&ConntrackView::build(&dump, &query)))
        }
        other => Err(Response::error(
            404,
            format!(
                "no such endpoint: {other} (the API serves {})",
                ROUTES.join(", ")
            ),
        )),
    }
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
    write!(
        stream,
        "{method} {path} HTTP/1.0\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .map_err(io)?;
    let mut response = String::new();
    stream.read_to_string(&mut response).map_err(io)?;
    let (status, body) = http::parse_response(&response).map_err(|reason| ApiError::BadAnswer {
        path: socket.to_path_buf(),
        reason,
    })?;
    Ok((status, body.to_string()))
}

/// Fetches `path` and decodes its JSON into `T`; a status other than 200 is
/// [`ApiError::Refused`] with the agent's error message.
pub fn get<T: DeserializeOwned>(socket: &Path, path: &str) -> Result<T, ApiError> {
    decode(socket, &format!("GET {path}"), get_raw(socket, path)?)
}

/// Decodes an answer to `request` (`"GET /x"`) as [`get`] does.
fn decode<T: DeserializeOwned>(
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

/// Milliseconds on the coarse monotonic clock: the clock the workers give
/// conntrack, so dumps can say when entries expire.
pub fn monotonic_ms() -> u64 {
    dataplane::runner::coarse_now_ms()
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(line: &str) -> Request {
        Request::parse(line).unwrap()
    }

    fn tables_state() -> State {
        let snapshot = crate::example::snapshot("node1");
        State {
            counters: vec![Arc::new(Counters::new(4))],
            ports: vec![(0, "eth0".into()), (4, "veth-db".into())],
            publisher: Some(Arc::new(Publisher::new(snapshot))),
            conntrack: Some(Arc::new(Conntrack::new(64))),
            ..State::default()
        }
    }

    #[test]
    fn routing_answers_every_route() {
        let state = tables_state();
        state.status.lock().unwrap().mark_synced();
        for route in ROUTES {
            let r = respond(&state, &request(&format!("GET {route} HTTP/1.0")));
            assert_eq!(r.status, 200, "{route}: {}", r.body);
        }
        let r = respond(&state, &request("GET /readyz HTTP/1.0"));
        assert_eq!((r.status, r.body.as_str()), (200, "ok"));
        let s: AgentStatus =
            serde_json::from_str(&respond(&state, &request("GET /status HTTP/1.0")).body).unwrap();
        assert_eq!((s.generation, s.workers, s.ready), (1, 1, true));
        assert_eq!(s.ports, ["eth0", "veth-db"]);
    }

    #[test]
    fn bad_requests_say_what_was_wrong() {
        let state = tables_state();
        let error = |line: &str| {
            let r = respond(&state, &request(line));
            let body: ErrorBody = serde_json::from_str(&r.body).unwrap();
            (r.status, body.error)
        };
        let (code, msg) = error("GET /nope HTTP/1.0");
        assert_eq!(code, 404);
        assert!(
            msg.starts_with("no such endpoint: /nope (the API serves /status"),
            "{msg}"
        );
        let (code, msg) = error("POST /status HTTP/1.0");
        assert_eq!(code, 405);
        assert!(msg.contains("GET only"), "{msg}");
        let (code, msg) = error("GET /conntrack?port=http HTTP/1.0");
        assert_eq!(code, 400);
        assert!(msg.contains("port=\"http\""), "{msg}");
        let (code, msg) = error("GET /conntrack?sport=1 HTTP/1.0");
        assert_eq!(code, 400);
        assert!(msg.contains("unknown parameter \"sport\""), "{msg}");
        let (code, msg) = error("GET /services?all=1 HTTP/1.0");
        assert_eq!(code, 400);
        assert!(msg.contains("takes no parameters"), "{msg}");
    }

    #[test]
    fn a_state_without_tables_serves_stats_and_status() {
        let state = State::default();
        for (line, want) in [
            ("GET /stats HTTP/1.0", 200),
            ("GET /status HTTP/1.0", 200),
            ("GET /readyz HTTP/1.0", 503),
            ("GET /services HTTP/1.0", 503),
            ("GET /conntrack HTTP/1.0", 503),
        ] {
            assert_eq!(respond(&state, &request(line)).status, want, "{line}");
        }
        let r = respond(&state, &request("GET /readyz HTTP/1.0"));
        assert_eq!(r.body, "not ready: the source has not synced");
        state.status.lock().unwrap().synced = true;
        let r = respond(&state, &request("GET /readyz HTTP/1.0"));
        assert_eq!(r.body, "not ready: no worker is running");
    }

    #[test]
    fn stats_round_trip_over_the_socket() {
        let dir = std::env::temp_dir().join(format!("podswitch-api-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let socket = dir.join("sub").join("agent.sock");
        let counters = Arc::new(Counters::new(4));
        counters.forwarded.add(7);
        counters.count_drop(DropReason::FragmentNoFirst);
        counters.port(2).unwrap().rx_packets.add(9);
        let state = Arc::new(Mutex::new(State {
            counters: vec![counters.clone(), Arc::new(Counters::new(4))],
            ports: vec![(2, "veth-pod".into())],
            ..State::default()
        }));
        let server = Server::start(&socket, state.clone()).unwrap();
        let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dir_mode = std::fs::metadata(dir.join("sub"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(dir_mode, 0o700);
        let s = stats(&socket).unwrap();
        assert_eq!((s.workers, s.forwarded), (2, 7));
        assert_eq!(s.ports[0].rx_packets, 9);
        assert_eq!(s.drops, vec![("fragment_no_first".to_string(), 1)]);
        assert!(s.render().contains("veth-pod"));
        match get::<Stats>(&socket, "/nope") {
            Err(ApiError::Refused {
                status: 404,
                message,
                ..
            }) => assert!(message.starts_with("no such endpoint"), "{message}"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            Server::start(&socket, state.clone()),
            Err(ApiError::InUse { .. })
        ));
        drop(server);
        assert!(!socket.exists(), "socket removed on stop");
        let err = stats(&socket).unwrap_err();
        assert!(matches!(err, ApiError::NotRunning { .. }), "{err:?}");
        assert!(err.to_string().contains(&socket.display().to_string()));
        // Not a socket: left alone.
        std::fs::write(&socket, "x").unwrap();
        assert!(matches!(
            Server::start(&socket, state),
            Err(ApiError::NotASocket { .. })
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
