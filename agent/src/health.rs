//! Service health checks: each `healthCheckNodePort` of a LoadBalancer
//! Service with `externalTrafficPolicy: Local` is answered over HTTP on the
//! node IP, as kube-proxy answers it, so an external load balancer sends
//! traffic only to nodes that can serve it without leaving the node: 200
//! when the node has local endpoints for the service (and the agent is in
//! sync with its source), 503 otherwise, with kube-proxy's JSON body and
//! `X-Load-Balancing-Endpoint-Weight` header, on any path.
//!
//! The ports are listened on by the kernel stack of the node's namespace
//! (the uplink's XDP program leaves them to it); the control loop syncs the
//! listeners and counts after each published snapshot ([`HealthChecks::sync`]).
//! One thread accepts on every listener; each request is answered from the
//! counts in force, on its own short-lived thread, with a read timeout, so a
//! slow client holds nothing up.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::Serialize;
use tables::snapshot::Snapshot;

/// What one health check port reports.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Check {
    namespace: String,
    name: String,
    local_endpoints: usize,
}

#[derive(Default)]
struct Shared {
    checks: BTreeMap<u16, Check>,
    /// Listeners the accept thread serves.
    listeners: BTreeMap<u16, TcpListener>,
    /// The agent's tables have come from its source in sync (kube-proxy's
    /// "healthy"); it stays so through an API outage, in which the agent
    /// keeps forwarding with the last tables.
    healthy: bool,
}

/// The health check server of one agent.
pub struct HealthChecks {
    node_ip: Ipv4Addr,
    shared: Arc<Mutex<Shared>>,
    open: BTreeSet<u16>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// The answer's body, in kube-proxy's shape.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Body<'a> {
    service: Name<'a>,
    local_endpoints: usize,
    service_proxy_healthy: bool,
}

#[derive(Serialize)]
struct Name<'a> {
    namespace: &'a str,
    name: &'a str,
}

/// How long a client may take to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(2);

impl HealthChecks {
    /// A server for health checks on `node_ip` (nothing listened on until
    /// [`HealthChecks::sync`]).
    pub fn start(node_ip: Ipv4Addr) -> HealthChecks {
        let shared = Arc::new(Mutex::new(Shared::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (shared, stop) = (shared.clone(), stop.clone());
            std::thread::Builder::new()
                .name("health-checks".into())
                .spawn(move || accept_loop(&shared, &stop))
                .ok()
        };
        HealthChecks {
            node_ip,
            shared,
            open: BTreeSet::new(),
            stop,
            thread,
        }
    }

    /// Listens on the health check ports of `snapshot`'s services (and
    /// stops listening on the others); answers from its counts, healthy once
    /// a snapshot was `synced`. Returns a warning for each port that cannot be listened on.
    pub fn sync(&mut self, snapshot: &Snapshot, synced: bool) -> Vec<String> {
        let mut checks = BTreeMap::new();
        for (port, info, local) in snapshot.services.health_checks() {
            checks.entry(port).or_insert(Check {
                namespace: info.namespace.clone(),
                name: info.name.clone(),
                local_endpoints: local,
            });
        }
        let mut warnings = Vec::new();
        let mut fresh = BTreeMap::new();
        for (&port, check) in &checks {
            if self.open.contains(&port) {
                continue;
            }
            let addr = SocketAddrV4::new(self.node_ip, port);
            match TcpListener::bind(addr).and_then(|l| l.set_nonblocking(true).map(|()| l)) {
                Ok(l) => {
                    fresh.insert(port, l);
                }
                Err(e) => warnings.push(format!(
                    "service {}/{}: cannot listen on its healthCheckNodePort {addr}: {e}",
                    check.namespace, check.name
                )),
            }
        }
        let gone: Vec<u16> = self
            .open
            .iter()
            .filter(|p| !checks.contains_key(*p))
            .copied()
            .collect();
        let mut shared = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
        for port in &gone {
            self.open.remove(port);
            shared.listeners.remove(port);
        }
        for (port, l) in fresh {
            self.open.insert(port);
            shared.listeners.insert(port, l);
        }
        shared.checks = checks;
        shared.healthy |= synced;
        warnings
    }
}

impl Drop for HealthChecks {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Waits on every listener (poll, 100 ms rounds) and answers what arrives.
fn accept_loop(shared: &Mutex<Shared>, stop: &AtomicBool) {
    while !stop.load(Ordering::Acquire) {
        let (fds, ports): (Vec<libc::pollfd>, Vec<u16>) = {
            let s = shared.lock().unwrap_or_else(PoisonError::into_inner);
            s.listeners
                .iter()
                .map(|(&port, l)| {
                    (
                        libc::pollfd {
                            fd: l.as_raw_fd(),
                            events: libc::POLLIN,
                            revents: 0,
                        },
                        port,
                    )
                })
                .unzip()
        };
        let mut fds = fds;
        if fds.is_empty() {
            std::thread::sleep(Duration::from_millis(100));
            continue;
        }
        // SAFETY: `fds` is a valid, exclusively borrowed array of
        // `fds.len()` pollfd structs. A listener closed meanwhile (its
        // service left) leaves a stale number, which poll reports as
        // POLLNVAL or ready: either way only listeners still in `shared` are
        // accepted on below.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 100) };
        if n <= 0 {
            continue;
        }
        for (fd, port) in fds.iter().zip(&ports) {
            if fd.revents & libc::POLLIN == 0 {
                continue;
            }
            let s = shared.lock().unwrap_or_else(PoisonError::into_inner);
            let Some(listener) = s.listeners.get(port) else {
                continue;
            };
            while let Ok((stream, _)) = listener.accept() {
                let answer = answer(s.checks.get(port), s.healthy);
                std::thread::spawn(move || respond(stream, &answer));
            }
        }
    }
}

/// The HTTP response for a check (a 503 naming no service when the port's
/// service left meanwhile).
fn answer(check: Option<&Check>, healthy: bool) -> Vec<u8> {
    let (namespace, name, count) = check.map_or(("", "", 0), |c| {
        (c.namespace.as_str(), c.name.as_str(), c.local_endpoints)
    });
    let body = serde_json::to_string_pretty(&Body {
        service: Name { namespace, name },
        local_endpoints: count,
        service_proxy_healthy: healthy,
    })
    .unwrap_or_default();
    let status = if count > 0 && healthy {
        "200 OK"
    } else {
        "503 Service Unavailable"
    };
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nX-Content-Type-Options: nosniff\r\nX-Load-Balancing-Endpoint-Weight: {count}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Reads the request head (whatever it asks) and writes `answer`.
fn respond(mut stream: TcpStream, answer: &[u8]) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(READ_TIMEOUT));
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let _ = stream.write_all(answer);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_in_kube_proxys_shape() {
        let check = Check {
            namespace: "demo".into(),
            name: "web".into(),
            local_endpoints: 2,
        };
        let ok = String::from_utf8(answer(Some(&check), true)).unwrap();
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.contains("X-Load-Balancing-Endpoint-Weight: 2\r\n"));
        let body: serde_json::Value =
            serde_json::from_str(ok.split("\r\n\r\n").nth(1).unwrap()).unwrap();
        assert_eq!(
            body,
            serde_json::json!({
                "service": {"namespace": "demo", "name": "web"},
                "localEndpoints": 2,
                "serviceProxyHealthy": true
            })
        );
        let none = Check {
            local_endpoints: 0,
            ..check.clone()
        };
        assert!(String::from_utf8(answer(Some(&none), true))
            .unwrap()
            .starts_with("HTTP/1.1 503 "));
        assert!(
            String::from_utf8(answer(Some(&check), false))
                .unwrap()
                .starts_with("HTTP/1.1 503 "),
            "an agent out of sync is not healthy"
        );
    }
}
