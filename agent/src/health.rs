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
//! HTTP is hyper's, on a small runtime of the checks' own (one thread): a
//! task accepts on each listener and one serves each connection, with a
//! timeout on the request head, so a slow client holds nothing up; every
//! answer comes from the counts in force.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::Serialize;
use tables::snapshot::Snapshot;

use crate::server::Body;

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
    /// The agent's tables have come from its source in sync (kube-proxy's
    /// "healthy"); it stays so through an API outage, in which the agent
    /// keeps forwarding with the last tables.
    healthy: bool,
}

/// The health check server of one agent.
pub struct HealthChecks {
    node_ip: Ipv4Addr,
    shared: Arc<Mutex<Shared>>,
    /// The accept task of each port listened on (aborting it closes the
    /// listener).
    open: BTreeMap<u16, tokio::task::AbortHandle>,
    /// Runs the tasks; `None` if its thread could not start (every port's
    /// listen then fails with a warning).
    runtime: Option<Runtime>,
}

/// The checks' runtime and the thread that drives it.
struct Runtime {
    handle: tokio::runtime::Handle,
    stop: tokio::sync::oneshot::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

/// The answer's body, in kube-proxy's shape.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Report<'a> {
    service: Name<'a>,
    local_endpoints: usize,
    service_proxy_healthy: bool,
}

#[derive(Serialize)]
struct Name<'a> {
    namespace: &'a str,
    name: &'a str,
}

impl HealthChecks {
    /// A server for health checks on `node_ip` (nothing listened on until
    /// [`HealthChecks::sync`]).
    pub fn start(node_ip: Ipv4Addr) -> HealthChecks {
        let runtime = Runtime::start()
            .map_err(|e| tracing::error!("starting the health check server: {e}"))
            .ok();
        HealthChecks {
            node_ip,
            shared: Arc::default(),
            open: BTreeMap::new(),
            runtime,
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
        self.open.retain(|port, task| {
            let keep = checks.contains_key(port);
            if !keep {
                task.abort();
            }
            keep
        });
        let mut warnings = Vec::new();
        for (&port, check) in &checks {
            if self.open.contains_key(&port) {
                continue;
            }
            let addr = SocketAddrV4::new(self.node_ip, port);
            match self.listen(addr) {
                Ok(task) => {
                    self.open.insert(port, task);
                }
                Err(e) => warnings.push(format!(
                    "service {}/{}: cannot listen on its healthCheckNodePort {addr}: {e}",
                    check.namespace, check.name
                )),
            }
        }
        let mut shared = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
        shared.checks = checks;
        shared.healthy |= synced;
        warnings
    }

    /// Listens on `addr` (here, so a port in use is reported at once) and
    /// starts its accept task.
    fn listen(&self, addr: SocketAddrV4) -> std::io::Result<tokio::task::AbortHandle> {
        let runtime = self
            .runtime
            .as_ref()
            .ok_or_else(|| std::io::Error::other("the health check server did not start"))?;
        let listener = TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let _entered = runtime.handle.enter();
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let shared = self.shared.clone();
        let task = runtime.handle.spawn(accept(listener, addr.port(), shared));
        Ok(task.abort_handle())
    }
}

impl Runtime {
    fn start() -> std::io::Result<Runtime> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("health-checks".into())
            .spawn(move || {
                let _ = runtime.block_on(stopped);
            })?;
        Ok(Runtime {
            handle,
            stop,
            thread,
        })
    }
}

impl Drop for HealthChecks {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            let _ = runtime.stop.send(());
            let _ = runtime.thread.join();
        }
    }
}

/// Accepts on `listener`, the health check `port`, and serves each
/// connection on a task of its own.
async fn accept(listener: tokio::net::TcpListener, port: u16, shared: Arc<Mutex<Shared>>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // Out of descriptors, say: try again shortly.
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let shared = shared.clone();
        let service = hyper::service::service_fn(move |_request| {
            let s = shared.lock().unwrap_or_else(PoisonError::into_inner);
            let response = answer(s.checks.get(&port), s.healthy);
            std::future::ready(Ok::<_, std::convert::Infallible>(response))
        });
        tokio::spawn(crate::server::serve_http1(stream, service));
    }
}

/// The answer to any request on a check's port (a 503 naming no service
/// when the port's service left meanwhile).
fn answer(check: Option<&Check>, healthy: bool) -> hyper::Response<Body> {
    let (namespace, name, count) = check.map_or(("", "", 0), |c| {
        (c.namespace.as_str(), c.name.as_str(), c.local_endpoints)
    });
    let body = serde_json::to_string_pretty(&Report {
        service: Name { namespace, name },
        local_endpoints: count,
        service_proxy_healthy: healthy,
    })
    .unwrap_or_default();
    let status = if count > 0 && healthy {
        hyper::StatusCode::OK
    } else {
        hyper::StatusCode::SERVICE_UNAVAILABLE
    };
    let built = hyper::Response::builder()
        .status(status)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .header("X-Content-Type-Options", "nosniff")
        .header("X-Load-Balancing-Endpoint-Weight", count)
        .header(hyper::header::CONNECTION, "close")
        .body(Body::from(body));
    // Every part above is valid: the builder cannot fail.
    built.unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    fn body(response: hyper::Response<Body>) -> serde_json::Value {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let bytes = runtime
            .block_on(response.into_body().collect())
            .unwrap()
            .to_bytes();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[test]
    fn answers_in_kube_proxys_shape() {
        let check = Check {
            namespace: "demo".into(),
            name: "web".into(),
            local_endpoints: 2,
        };
        let ok = answer(Some(&check), true);
        assert_eq!(ok.status(), 200);
        assert_eq!(ok.headers()["X-Load-Balancing-Endpoint-Weight"], "2");
        assert_eq!(ok.headers()["Content-Type"], "application/json");
        assert_eq!(
            body(ok),
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
        assert_eq!(answer(Some(&none), true).status(), 503);
        assert_eq!(
            answer(Some(&check), false).status(),
            503,
            "an agent out of sync is not healthy"
        );
        let gone = answer(None, true);
        assert_eq!(gone.status(), 503);
        assert_eq!(body(gone)["service"]["name"], "");
    }
}
