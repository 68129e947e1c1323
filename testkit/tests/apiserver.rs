//! The test kit's real kube-apiserver (testkit::apiserver): objects written
//! with kubectl read back with kube-rs (EndpointSlices as
//! `discovery.k8s.io/v1` through the stand-in CRD), kept across an
//! apiserver restart, and seen by a kube-rs watcher, before and after an
//! outage. Needs `deploy/kube-apiserver.sh` to have run.

use std::net::Ipv4Addr;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Namespace, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ListParams};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use testkit::apiserver::ApiServer;

/// One server at a time: each is an etcd and a kube-apiserver, and the
/// machine may have two cores.
static ONE_SERVER: Mutex<()> = Mutex::new(());

const SERVICE: &str = r#"
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: shop
spec:
  selector:
    app: web
  ports:
    - name: http
      port: 80
      targetPort: 8080
      protocol: TCP
    - name: dns
      port: 53
      targetPort: 5353
      protocol: UDP
"#;

/// An EndpointSlice of `web` named `name`, with a ready endpoint on node1
/// and one that is terminating (serving, not ready) on node2, whose first
/// address ends in `last`.
fn endpoint_slice(name: &str, last: u8) -> String {
    format!(
        r#"
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {name}
  namespace: shop
  labels:
    kubernetes.io/service-name: web
addressType: IPv4
ports:
  - name: http
    port: 8080
    protocol: TCP
  - name: dns
    port: 5353
    protocol: UDP
endpoints:
  - addresses: ["10.244.1.{last}"]
    conditions:
      ready: true
      serving: true
      terminating: false
    nodeName: node1
    targetRef:
      kind: Pod
      namespace: shop
      name: web-{last}
  - addresses: ["10.244.2.{last}"]
    conditions:
      ready: false
      serving: true
      terminating: true
    nodeName: node2
"#
    )
}

/// (address, ready, serving, terminating, node) of each endpoint.
fn endpoints(slice: &EndpointSlice) -> Vec<(String, bool, bool, bool, String)> {
    slice
        .endpoints
        .iter()
        .flatten()
        .map(|e| {
            let c = e.conditions.clone().unwrap_or_default();
            (
                e.addresses.join(","),
                c.ready.unwrap_or(false),
                c.serving.unwrap_or(false),
                c.terminating.unwrap_or(false),
                e.node_name.clone().unwrap_or_default(),
            )
        })
        .collect()
}

/// (name, port, protocol) of each port.
fn ports(slice: &EndpointSlice) -> Vec<(String, i32, String)> {
    slice
        .ports
        .iter()
        .flatten()
        .map(|p| {
            (
                p.name.clone().unwrap_or_default(),
                p.port.unwrap_or(0),
                p.protocol.clone().unwrap_or_default(),
            )
        })
        .collect()
}

fn assert_web_slice(slice: &EndpointSlice, name: &str, last: u8) {
    assert_eq!(slice.metadata.name.as_deref(), Some(name));
    assert_eq!(slice.metadata.namespace.as_deref(), Some("shop"));
    assert_eq!(
        slice
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("kubernetes.io/service-name"))
            .map(String::as_str),
        Some("web")
    );
    assert_eq!(slice.address_type, "IPv4");
    assert_eq!(
        endpoints(slice),
        vec![
            (
                format!("10.244.1.{last}"),
                true,
                true,
                false,
                "node1".into()
            ),
            (
                format!("10.244.2.{last}"),
                false,
                true,
                true,
                "node2".into()
            ),
        ]
    );
    let first = slice.endpoints.as_ref().and_then(|e| e.first());
    let target = first
        .and_then(|e| e.target_ref.as_ref())
        .expect("targetRef");
    assert_eq!(target.kind.as_deref(), Some("Pod"));
    assert_eq!(target.name.as_deref(), Some(format!("web-{last}").as_str()));
    assert_eq!(
        ports(slice),
        vec![
            ("http".into(), 8080, "TCP".into()),
            ("dns".into(), 5353, "UDP".into()),
        ]
    );
}

/// Reads namespace `shop`, Service `web` and its EndpointSlices with kube-rs
/// and checks them; returns their UIDs (which a re-creation would change).
async fn read_back(client: &kube::Client) -> Vec<String> {
    let namespace = Api::<Namespace>::all(client.clone())
        .get("shop")
        .await
        .expect("namespace shop");
    let service = Api::<Service>::namespaced(client.clone(), "shop")
        .get("web")
        .await
        .expect("service web");
    let spec = service.spec.as_ref().expect("service spec");
    let ip: Ipv4Addr = spec
        .cluster_ip
        .as_deref()
        .expect("a ClusterIP")
        .parse()
        .expect("an IPv4 ClusterIP");
    assert_eq!(
        u32::from(ip) & 0xfff0_0000,
        u32::from(Ipv4Addr::new(10, 96, 0, 0)),
        "ClusterIP {ip} outside 10.96.0.0/12"
    );
    let service_ports: Vec<_> = spec
        .ports
        .iter()
        .flatten()
        .map(|p| {
            (
                p.name.clone().unwrap_or_default(),
                p.port,
                p.protocol.clone(),
            )
        })
        .collect();
    assert_eq!(
        service_ports,
        vec![
            ("http".into(), 80, Some("TCP".into())),
            ("dns".into(), 53, Some("UDP".into())),
        ]
    );
    let slices = Api::<EndpointSlice>::namespaced(client.clone(), "shop")
        .list(&ListParams::default().labels("kubernetes.io/service-name=web"))
        .await
        .expect("listing EndpointSlices");
    assert_eq!(slices.items.len(), 1, "{:?}", slices.items);
    assert_web_slice(&slices.items[0], "web-a", 5);

    [
        &namespace.metadata.uid,
        &service.metadata.uid,
        &slices.items[0].metadata.uid,
    ]
    .into_iter()
    .map(|uid| uid.clone().expect("a UID"))
    .collect()
}

/// A runtime for the kube-rs side; the harness itself blocks (it runs
/// processes and waits), so tests are plain `#[test]`s that enter the
/// runtime only for kube-rs calls.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

#[test]
fn kubectl_objects_read_back_with_kube_rs_and_outlive_an_apiserver_restart() {
    let _one = ONE_SERVER.lock().unwrap_or_else(PoisonError::into_inner);
    let rt = runtime();
    let mut server = ApiServer::start();
    server.kubectl_ok(&["create", "namespace", "shop"]);
    server.apply(SERVICE);
    server.apply(&endpoint_slice("web-a", 5));

    // kubectl sees the slice as discovery.k8s.io/v1 with what was applied.
    let fields = server.kubectl_ok(&[
        "get",
        "endpointslices.v1.discovery.k8s.io",
        "-n",
        "shop",
        "web-a",
        "-o",
        "jsonpath={.apiVersion} {.endpoints[1].conditions.terminating} {.ports[0].name}",
    ]);
    assert_eq!(fields, "discovery.k8s.io/v1 true http");

    let client = rt.block_on(server.client());
    let before = rt.block_on(read_back(&client));

    server.stop_apiserver();
    let out = server.kubectl(&["get", "namespace", "shop", "--request-timeout=5s"]);
    assert!(
        !out.status.success(),
        "kubectl still reached a stopped apiserver"
    );
    let namespaces = Api::<Namespace>::all(client.clone());
    assert!(
        rt.block_on(namespaces.get("shop")).is_err(),
        "kube-rs still reached a stopped apiserver"
    );

    server.start_apiserver();
    // The same client reconnects, and etcd kept the very same objects.
    assert_eq!(rt.block_on(read_back(&client)), before);
}

/// The next item of `stream`, within 30 s.
async fn next_event<S>(stream: &mut S) -> Result<Event<EndpointSlice>, watcher::Error>
where
    S: Stream<Item = Result<Event<EndpointSlice>, watcher::Error>> + Unpin,
{
    tokio::time::timeout(Duration::from_secs(30), stream.next())
        .await
        .expect("no watch event within 30 s")
        .expect("the watch stream ended")
}

/// Waits for `Init`, then collects `InitApply` objects until `InitDone`.
async fn initial_list<S>(stream: &mut S) -> Vec<EndpointSlice>
where
    S: Stream<Item = Result<Event<EndpointSlice>, watcher::Error>> + Unpin,
{
    let mut listed = Vec::new();
    loop {
        match next_event(stream).await.expect("a watch error") {
            Event::Init => listed.clear(),
            Event::InitApply(slice) => listed.push(slice),
            Event::InitDone => return listed,
            other => panic!("expected the initial list, got {other:?}"),
        }
    }
}

/// The next `Apply` of the slice `name`, skipping re-lists and the errors
/// of an outage (the watcher retries after them).
async fn applied<S>(stream: &mut S, name: &str) -> EndpointSlice
where
    S: Stream<Item = Result<Event<EndpointSlice>, watcher::Error>> + Unpin,
{
    let wait = async {
        loop {
            match next_event(stream).await {
                Ok(Event::Apply(slice) | Event::InitApply(slice))
                    if slice.metadata.name.as_deref() == Some(name) =>
                {
                    return slice
                }
                Ok(Event::Delete(slice)) => {
                    panic!("unexpected delete of {:?}", slice.metadata.name)
                }
                _ => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(60), wait)
        .await
        .unwrap_or_else(|_| panic!("no apply of {name} within 60 s"))
}

#[test]
fn kube_rs_watcher_lists_then_follows_endpoint_slices_across_an_outage() {
    let _one = ONE_SERVER.lock().unwrap_or_else(PoisonError::into_inner);
    let rt = runtime();
    let mut server = ApiServer::start();
    server.kubectl_ok(&["create", "namespace", "shop"]);
    server.apply(SERVICE);
    server.apply(&endpoint_slice("web-a", 5));

    let client = rt.block_on(server.client());
    let api = Api::<EndpointSlice>::namespaced(client, "shop");
    let mut stream = watcher::watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();

    let listed = rt.block_on(initial_list(&mut stream));
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_web_slice(&listed[0], "web-a", 5);

    server.apply(&endpoint_slice("web-b", 9));
    let slice = rt.block_on(applied(&mut stream, "web-b"));
    assert_web_slice(&slice, "web-b", 9);

    // Through an apiserver outage the watcher backs off, re-lists and then
    // follows again.
    server.stop_apiserver();
    server.start_apiserver();
    server.apply(&endpoint_slice("web-c", 11));
    let slice = rt.block_on(applied(&mut stream, "web-c"));
    assert_web_slice(&slice, "web-c", 11);
}
