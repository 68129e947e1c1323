//! Kubernetes objects for the agent's unit tests, in their JSON form.

use serde_json::json;
use sources::{Kind, Object};
use tables::route::NodeConfig;

/// The example cluster's node1.
pub fn node_config() -> NodeConfig {
    fixtures::example::node_config("node1")
}

/// `kind` from its JSON form.
pub fn obj(kind: Kind, value: serde_json::Value) -> Object {
    match kind {
        Kind::Namespace => Object::Namespace(serde_json::from_value(value).unwrap()),
        Kind::Node => Object::Node(serde_json::from_value(value).unwrap()),
        Kind::Pod => Object::Pod(serde_json::from_value(value).unwrap()),
        Kind::Service => Object::Service(serde_json::from_value(value).unwrap()),
        Kind::EndpointSlice => Object::EndpointSlice(serde_json::from_value(value).unwrap()),
        Kind::NetworkPolicy => Object::NetworkPolicy(serde_json::from_value(value).unwrap()),
    }
}

/// A ClusterIP service `demo/name` at `ip`, port 80 to 8080, selecting app=`name`.
pub fn service(name: &str, ip: &str) -> Object {
    obj(
        Kind::Service,
        json!({"metadata": {"namespace": "demo", "name": name},
               "spec": {"clusterIP": ip, "clusterIPs": [ip], "selector": {"app": name},
                        "ports": [{"name": "http", "protocol": "TCP", "port": 80, "targetPort": 8080}]}}),
    )
}

/// A running pod `demo/name` on `node`, labelled app=`app`.
pub fn pod(name: &str, ip: &str, node: &str, app: &str) -> Object {
    obj(
        Kind::Pod,
        json!({"metadata": {"namespace": "demo", "name": name, "labels": {"app": app}},
               "spec": {"nodeName": node, "containers": [{"name": "c", "ports": [{"name": "http", "containerPort": 8080}]}]},
               "status": {"podIP": ip, "phase": "Running"}}),
    )
}
