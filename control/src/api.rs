//! The agent's local API: a unix socket (mode 0600) speaking a small subset
//! of HTTP/1.0 with JSON bodies, for the CLI (and later the CNI plugin).
//!
//! `GET /stats` returns the counters of every worker, summed per port and
//! per drop reason. The server runs on its own thread and reads the workers'
//! counters without stopping them (relaxed atomic loads).

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use dataplane::counters::{Counters, DropReason};
use serde::{Deserialize, Serialize};

/// The default socket path.
pub const DEFAULT_SOCKET: &str = "/run/podswitch/agent.sock";

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

/// What the server needs to answer: the workers' counters and port names.
#[derive(Clone, Default)]
pub struct State {
    pub counters: Vec<Arc<Counters>>,
    pub ports: Vec<(u16, String)>,
}

/// Errors of the local API.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("cannot listen on {path}: {source}")]
    Listen {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot reach the agent at {path}: {source} (is `podswitch agent` running?)")]
    Connect {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the agent at {path} answered badly: {reason}")]
    BadAnswer { path: PathBuf, reason: String },
}

/// A running API server; stops (and removes its socket) on drop.
pub struct Server {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    /// Listens on `path` (a stale socket file there is replaced; the parent
    /// directory is created).
    pub fn start(path: &Path, state: Arc<Mutex<State>>) -> Result<Server, ApiError> {
        let err = |source| ApiError::Listen {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        if path.exists() {
            std::fs::remove_file(path).map_err(err)?;
        }
        let listener = UnixListener::bind(path).map_err(err)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
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

fn serve(listener: UnixListener, state: Arc<Mutex<State>>, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Acquire) {
        match listener.accept() {
            Ok((stream, _)) => {
                let _ = answer(stream, &state);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

fn answer(stream: UnixStream, state: &Mutex<State>) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request = String::new();
    reader.read_line(&mut request)?;
    let mut line = String::new();
    while reader.read_line(&mut line)? > 2 {
        line.clear();
    }
    let mut stream = stream;
    let path = request.split_whitespace().nth(1).unwrap_or("");
    let (status, body) = match path {
        "/stats" => {
            let s = state.lock().unwrap_or_else(PoisonError::into_inner);
            let stats = Stats::collect(&s.counters, &s.ports);
            ("200 OK", serde_json::to_string(&stats).unwrap_or_default())
        }
        _ => (
            "404 Not Found",
            format!("{{\"error\":\"no such endpoint: {path}\"}}"),
        ),
    };
    write!(
        stream,
        "HTTP/1.0 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// Fetches `path` from the agent listening on `socket`; returns the body.
pub fn get(socket: &Path, path: &str) -> Result<String, ApiError> {
    let connect = |source| ApiError::Connect {
        path: socket.to_path_buf(),
        source,
    };
    let mut stream = UnixStream::connect(socket).map_err(connect)?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(connect)?;
    write!(stream, "GET {path} HTTP/1.0\r\n\r\n").map_err(connect)?;
    let mut response = String::new();
    stream.read_to_string(&mut response).map_err(connect)?;
    let bad = |reason: &str| ApiError::BadAnswer {
        path: socket.to_path_buf(),
        reason: reason.to_string(),
    };
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| bad("no header end"))?;
    if !head.starts_with("HTTP/1.0 200") {
        return Err(bad(head.lines().next().unwrap_or("")));
    }
    Ok(body.to_string())
}

/// Fetches and decodes `/stats`.
pub fn stats(socket: &Path) -> Result<Stats, ApiError> {
    let body = get(socket, "/stats")?;
    serde_json::from_str(&body).map_err(|e| ApiError::BadAnswer {
        path: socket.to_path_buf(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_round_trip_over_the_socket() {
        let dir = std::env::temp_dir().join(format!("podswitch-api-test-{}", std::process::id()));
        let socket = dir.join("agent.sock");
        let counters = Arc::new(Counters::new(4));
        counters.forwarded.add(7);
        counters.count_drop(DropReason::Fragment);
        counters.port(2).unwrap().rx_packets.add(9);
        let state = Arc::new(Mutex::new(State {
            counters: vec![counters.clone(), Arc::new(Counters::new(4))],
            ports: vec![(2, "veth-pod".into())],
        }));
        let server = Server::start(&socket, state).unwrap();
        let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let s = stats(&socket).unwrap();
        assert_eq!((s.workers, s.forwarded), (2, 7));
        assert_eq!(s.ports[0].rx_packets, 9);
        assert_eq!(s.drops, vec![("fragment".to_string(), 1)]);
        assert!(s.render().contains("veth-pod"));
        assert!(matches!(
            get(&socket, "/nope"),
            Err(ApiError::BadAnswer { .. })
        ));
        drop(server);
        assert!(!socket.exists(), "socket removed on stop");
        assert!(matches!(stats(&socket), Err(ApiError::Connect { .. })));
        let _ = std::fs::remove_dir(&dir);
    }
}
