//! The Kubernetes API source: one list+watch per kind (Nodes, Pods,
//! Namespaces, Services, EndpointSlices `discovery.k8s.io/v1`,
//! NetworkPolicies), with `kube`'s watcher on a small tokio runtime of its
//! own thread.
//!
//! Each watch lists in pages (500 objects) and then watches with bookmarks;
//! no streaming lists (older API servers lack them). Its initial list goes
//! to the reconciler as one `Replace` of that kind, then every change as an
//! `Apply` or `Delete`. When a watch fails (API server gone, 410 Gone after
//! a long outage, a network error) the source says `Synced(false)`, waits
//! (capped exponential backoff: 250 ms doubling to 30 s, reset by a
//! successful list) and lists again: the reconciler's replace of that kind
//! then converges the tables, whatever was missed. The tables in force stay
//! untouched meanwhile, so forwarding never waits for the API server.
//!
//! Configuration: `--kubeconfig PATH`, else `KUBECONFIG`, else
//! `~/.kube/config`, else the in-cluster service account.

use crossbeam_channel::Sender;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::watcher;
use kube::{Api, Client, Config};

use super::{Kind, Object, SourceEvent};

/// Why the source could not start.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    #[error("kubeconfig {path}: {reason}")]
    Kubeconfig { path: String, reason: String },
    #[error("no Kubernetes configuration found (no --kubeconfig, KUBECONFIG, ~/.kube/config or in-cluster service account): {0}")]
    Infer(String),
    #[error("Kubernetes client: {0}")]
    Client(String),
    #[error("starting the Kubernetes source's runtime: {0}")]
    Runtime(#[from] std::io::Error),
}

const PAGE_SIZE: u32 = 500;
const BACKOFF_START: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// A running Kubernetes source. Dropping it stops its watches.
pub struct KubeSource {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl KubeSource {
    /// Connects with `kubeconfig` (or the usual fallbacks) and starts
    /// watching; events go to `tx`. Returns once the client is configured
    /// (not once synced: that is reported as `Synced(true)`).
    pub fn start(
        kubeconfig: Option<PathBuf>,
        tx: Sender<SourceEvent>,
    ) -> Result<KubeSource, KubeError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let client = runtime.block_on(client(kubeconfig))?;
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("podswitch-kube".into())
            .spawn(move || runtime.block_on(run(client, tx, stop_rx)))?;
        Ok(KubeSource {
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }
}

impl Drop for KubeSource {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn client(kubeconfig: Option<PathBuf>) -> Result<Client, KubeError> {
    let config = match kubeconfig {
        Some(path) => {
            let bad = |reason: String| KubeError::Kubeconfig {
                path: path.display().to_string(),
                reason,
            };
            let kc = Kubeconfig::read_from(&path).map_err(|e| bad(e.to_string()))?;
            Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                .await
                .map_err(|e| bad(e.to_string()))?
        }
        None => Config::infer()
            .await
            .map_err(|e| KubeError::Infer(e.to_string()))?,
    };
    Client::try_from(config).map_err(|e| KubeError::Client(e.to_string()))
}

/// Which kinds have listed since their last failure.
struct SyncState {
    synced: Mutex<[bool; 6]>,
    tx: Sender<SourceEvent>,
    all: AtomicBool,
}

impl SyncState {
    fn set(&self, kind: Kind, synced: bool) {
        let mut s = self.synced.lock().unwrap_or_else(PoisonError::into_inner);
        let i = Kind::ALL.iter().position(|k| *k == kind).unwrap_or(0);
        s[i] = synced;
        let all = s.iter().all(|x| *x);
        if self.all.swap(all, Ordering::AcqRel) != all {
            let _ = self.tx.send(SourceEvent::Synced(all));
        }
    }
}

async fn run(client: Client, tx: Sender<SourceEvent>, stop: tokio::sync::oneshot::Receiver<()>) {
    let state = Arc::new(SyncState {
        synced: Mutex::new([false; 6]),
        tx: tx.clone(),
        all: AtomicBool::new(false),
    });
    let watches = futures::future::join_all([
        Box::pin(watch::<Namespace>(
            Api::all(client.clone()),
            Kind::Namespace,
            Object::Namespace,
            state.clone(),
        )) as std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>,
        Box::pin(watch::<Node>(
            Api::all(client.clone()),
            Kind::Node,
            Object::Node,
            state.clone(),
        )),
        Box::pin(watch::<Pod>(
            Api::all(client.clone()),
            Kind::Pod,
            Object::Pod,
            state.clone(),
        )),
        Box::pin(watch::<Service>(
            Api::all(client.clone()),
            Kind::Service,
            Object::Service,
            state.clone(),
        )),
        Box::pin(watch::<EndpointSlice>(
            Api::all(client.clone()),
            Kind::EndpointSlice,
            Object::EndpointSlice,
            state.clone(),
        )),
        Box::pin(watch::<NetworkPolicy>(
            Api::all(client),
            Kind::NetworkPolicy,
            Object::NetworkPolicy,
            state,
        )),
    ]);
    tokio::select! {
        _ = watches => {}
        _ = stop => {}
    }
}

/// Lists and watches one kind forever, relisting after any failure.
async fn watch<K>(api: Api<K>, kind: Kind, wrap: fn(K) -> Object, state: Arc<SyncState>)
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
    K::DynamicType: Default,
{
    let mut backoff = BACKOFF_START;
    loop {
        let config = watcher::Config::default().page_size(PAGE_SIZE);
        let mut stream = std::pin::pin!(watcher(api.clone(), config));
        let mut initial: Vec<Object> = Vec::new();
        while let Some(event) = stream.next().await {
            let sent = match event {
                Ok(watcher::Event::Init) => {
                    initial.clear();
                    Ok(())
                }
                Ok(watcher::Event::InitApply(o)) => {
                    initial.push(wrap(o));
                    Ok(())
                }
                Ok(watcher::Event::InitDone) => {
                    backoff = BACKOFF_START;
                    let sent = state.tx.send(SourceEvent::Replace {
                        kinds: vec![kind],
                        objects: std::mem::take(&mut initial),
                    });
                    state.set(kind, true);
                    sent
                }
                Ok(watcher::Event::Apply(o)) => state.tx.send(SourceEvent::Apply(wrap(o))),
                Ok(watcher::Event::Delete(o)) => state.tx.send(SourceEvent::Delete(wrap(o).key())),
                Err(e) => {
                    state.set(kind, false);
                    let _ = state.tx.send(SourceEvent::Warning(format!(
                        "watching {}s: {e}; listing again in {} ms",
                        kind.name(),
                        backoff.as_millis()
                    )));
                    break;
                }
            };
            if sent.is_err() {
                return; // the reconciler is gone
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}
