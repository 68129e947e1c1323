//! The agent's side of the local API (the routes and their JSON are the
//! `api` crate's): HTTP/1.1 with hyper on a unix socket, one router
//! ([`respond`]) that any byte stream can be served with
//! ([`serve_connection`]). Connections are served on the API's own thread;
//! answers run on a bounded pool (at most 64 at once). It reads the
//! workers' counters without stopping them (relaxed atomic loads), the tables from the current snapshot the way a worker does
//! (pinned, no lock), and conntrack with a dump. [`State`] holds what it
//! reads; the agent and its reconciler keep the status current through
//! [`State::status`]. `/ports` changes go to the control thread as
//! [`PortCommand`]s.
//!
//! The socket's directory is created with mode 0700 when missing, and the
//! socket itself has mode 0600 from the moment it appears at its path (it
//! is bound under a temporary name, restricted, then renamed into place).

use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use api::http::{Request, Response, MAX_BODY};
use api::ports::{AttachedPort, Attachment, Detached, PortsView, Refusal};
use api::views::{ConntrackQuery, ConntrackView, PoliciesView, RoutesView, ServicesView};
use api::{AgentStatus, ApiError, PortStats, Stats, ROUTES};
use crossbeam_channel::Sender;
use dataplane::counters::{Counters, DropReason};
use tables::conntrack::Conntrack;
use tables::snapshot::Publisher;

/// Sums `counters` (one per worker) for the ports named in `ports`.
pub fn collect_stats(counters: &[Arc<Counters>], ports: &[(u16, String)]) -> Stats {
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
        gso_split: sum(&|c| c.gso_split.get()),
        gso_segments: sum(&|c| c.gso_segments.get()),
        csum_completed: sum(&|c| c.csum_completed.get()),
        gro_merged: sum(&|c| c.gro_merged.get()),
        gro_segments: sum(&|c| c.gro_segments.get()),
        frames_total: sum(&|c| c.frames_total.get()),
        frames_free: sum(&|c| c.frames_free.get()),
        frames_in_flight: sum(&|c| c.frames_in_flight.get()),
        ports,
        drops,
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
    pub port_control: Option<Sender<PortCommand>>,
    /// The attached pod interfaces, kept current by the control thread.
    pub attachments: Vec<AttachedPort>,
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

/// A running API server; stops (and removes its socket) on drop.
pub struct Server {
    path: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
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
        // The API's own small runtime: one thread for the connections, a
        // bounded pool for the answers (which may wait for the control
        // thread), nothing shared with the rest of the agent.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .max_blocking_threads(MAX_IN_FLIGHT)
            .thread_name("podswitch-api-req")
            .build()
            .map_err(err)?;
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("podswitch-api".into())
            .spawn(move || runtime.block_on(serve_unix(listener, state, stopped)))
            .map_err(err)?;
        Ok(Server {
            path: path.to_path_buf(),
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Requests answered at once (each may wait up to 20 s for the control
/// thread); beyond this many, a request waits for a free slot.
const MAX_IN_FLIGHT: usize = 64;
/// How long a client may take to send its request head, and its body.
const READ_TIMEOUT: Duration = Duration::from_secs(2);

/// Accepts on `listener` until `stopped` fires; each connection is served
/// on its own task.
async fn serve_unix(
    listener: std::os::unix::net::UnixListener,
    state: Arc<Mutex<State>>,
    mut stopped: tokio::sync::oneshot::Receiver<()>,
) {
    let listener = match tokio::net::UnixListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("the local API cannot listen: {e}");
            return;
        }
    };
    loop {
        tokio::select! {
            _ = &mut stopped => return,
            accepted = listener.accept() => {
                if let Ok((stream, _)) = accepted {
                    tokio::spawn(serve_connection(stream, state.clone()));
                }
            }
        }
    }
}

/// Serves one connection (HTTP/1.1, keep-alive allowed) with the router.
/// Any byte stream will do: a TCP listener is served the same way.
pub async fn serve_connection<I>(io: I, state: Arc<Mutex<State>>)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |request| answer(request, state.clone()));
    serve_http1(io, service).await;
}

/// Serves HTTP/1.1 on `io` with `service`, giving a client
/// [`READ_TIMEOUT`] for each request head (the health checks' server too).
pub(crate) async fn serve_http1<I, S>(io: I, service: S)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::HttpService<hyper::body::Incoming, ResBody = Body>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let served = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(READ_TIMEOUT)
        .serve_connection(hyper_util::rt::TokioIo::new(io), service)
        .await;
    // A client that goes away mid-answer concerns only itself.
    drop(served);
}

/// Every answer's body: whole, in memory.
pub(crate) type Body = http_body_util::Full<hyper::body::Bytes>;

/// Reads `request` (its body bounded by [`MAX_BODY`]) and answers it on the
/// blocking pool: `/ports` waits for the control thread.
async fn answer(
    request: hyper::Request<hyper::body::Incoming>,
    state: Arc<Mutex<State>>,
) -> Result<hyper::Response<Body>, std::convert::Infallible> {
    use http_body_util::BodyExt;
    let (head, body) = request.into_parts();
    let target = head.uri.path_and_query().map_or("/", |pq| pq.as_str());
    let parsed = Request::new(head.method.as_str(), target);
    let body = tokio::time::timeout(
        READ_TIMEOUT,
        http_body_util::Limited::new(body, MAX_BODY).collect(),
    )
    .await;
    let request = parsed.and_then(|mut request| {
        let bytes = body
            .ok()
            .and_then(Result::ok)
            .ok_or_else(|| {
                format!(
                    "the request body is late, unreadable or over the limit of {MAX_BODY} bytes"
                )
            })?
            .to_bytes();
        request.body =
            String::from_utf8(bytes.into()).map_err(|_| "the request body is not UTF-8")?;
        Ok(request)
    });
    let response = match request {
        Err(message) => Response::error(400, message),
        Ok(request) => tokio::task::spawn_blocking(move || {
            // Answer from a copy (Arcs and names): the lock is not held
            // while views are built.
            let state = state.lock().unwrap_or_else(PoisonError::into_inner).clone();
            respond(&state, &request)
        })
        .await
        .unwrap_or_else(|_| Response::error(500, "the answer failed")),
    };
    Ok(to_hyper(response))
}

fn to_hyper(response: Response) -> hyper::Response<Body> {
    let mut out = hyper::Response::new(Body::from(response.body));
    *out.status_mut() = hyper::StatusCode::from_u16(response.status)
        .unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    out.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(response.content_type),
    );
    out
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
        return respond_ports(state, request);
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
            Ok(Response::json(&collect_stats(
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

/// Milliseconds on the coarse monotonic clock: the clock the workers give
/// conntrack, so dumps can say when entries expire.
pub fn monotonic_ms() -> u64 {
    afxdp::runner::coarse_now_ms()
}

/// A change the API thread asks the control thread for.
pub enum PortCommand {
    Attach {
        attachment: Attachment,
        reply: Sender<Result<AttachedPort, Refusal>>,
    },
    Detach {
        container_id: String,
        ifname: String,
        reply: Sender<Result<bool, Refusal>>,
    },
}

/// How long the API thread waits for the control thread's answer.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(20);

/// Answers a `/ports` request.
fn respond_ports(state: &State, request: &Request) -> Result<Response, Response> {
    match request.method.as_str() {
        "GET" => {
            if let Some((key, _)) = request.query.first() {
                return Err(Response::error(
                    400,
                    format!("GET /ports takes no parameters (got {key:?})"),
                ));
            }
            Ok(Response::json(&PortsView {
                ports: state.attachments.clone(),
            }))
        }
        "POST" => {
            let attachment: Attachment = serde_json::from_str(&request.body).map_err(|e| {
                Response::error(
                    400,
                    format!("POST /ports: the body is not an attachment: {e}"),
                )
            })?;
            let (reply, answer) = crossbeam_channel::bounded(1);
            send(state, PortCommand::Attach { attachment, reply })?;
            wait(&answer).map(|port| Response::json(&port))
        }
        "DELETE" => {
            let param = |key: &str| {
                request
                    .param(key)
                    .filter(|v| !v.is_empty())
                    .map(str::to_owned)
                    .ok_or_else(|| {
                        Response::error(400, format!("DELETE /ports needs the parameter {key}"))
                    })
            };
            let (container_id, ifname) = (param("container_id")?, param("ifname")?);
            let (reply, answer) = crossbeam_channel::bounded(1);
            send(
                state,
                PortCommand::Detach {
                    container_id,
                    ifname,
                    reply,
                },
            )?;
            wait(&answer).map(|removed| Response::json(&Detached { removed }))
        }
        other => Err(Response::error(
            405,
            format!("{other} /ports is not allowed: use GET, POST or DELETE"),
        )),
    }
}

fn send(state: &State, command: PortCommand) -> Result<(), Response> {
    let control = state.port_control.as_ref().ok_or_else(|| {
        Response::error(
            503,
            "this agent does not attach ports (it runs no dataplane)",
        )
    })?;
    control
        .send(command)
        .map_err(|_| Response::error(503, "the agent is shutting down"))
}

fn wait<T>(answer: &crossbeam_channel::Receiver<Result<T, Refusal>>) -> Result<T, Response> {
    match answer.recv_timeout(CONTROL_TIMEOUT) {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(refusal)) => Err(Response::error(refusal.status, refusal.message)),
        Err(_) => Err(Response::error(
            503,
            "the agent's control thread did not answer in 20 s",
        )),
    }
}

/// What the drop reason called `name` means (empty for an unknown name):
/// the help `podswitch stats` prints beside each count.
pub fn drop_help(name: &str) -> &'static str {
    DropReason::ALL
        .iter()
        .find(|r| r.name() == name)
        .map_or("", |r| r.help())
}

#[cfg(test)]
mod tests {
    use super::*;
    use api::http::ErrorBody;

    /// `"GET /path HTTP/1.0"` as the router sees it.
    fn request(line: &str) -> Request {
        let mut parts = line.split(' ');
        let (method, target) = (parts.next().unwrap(), parts.next().unwrap());
        Request::new(method, target).unwrap()
    }

    fn tables_state() -> State {
        let snapshot = fixtures::example::snapshot("node1");
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
        let s = api::stats(&socket).unwrap();
        assert_eq!((s.workers, s.forwarded), (2, 7));
        assert_eq!(s.ports[0].rx_packets, 9);
        assert_eq!(s.drops, vec![("fragment_no_first".to_string(), 1)]);
        assert!(s.render(drop_help).contains("veth-pod"));
        match api::get::<Stats>(&socket, "/nope") {
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
        let err = api::stats(&socket).unwrap_err();
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
