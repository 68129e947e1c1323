//! The shipped CNI config through libcni itself, as container runtimes call
//! it: a Go driver built against Debian 12's libcni 1.1 (what containerd
//! 1.6/1.7 and CRI-O before libcni 1.2 use; `deploy/libcni-driver.sh`
//! builds it) runs ADD, CHECK (with libcni's cached result) and DEL on the
//! conflist `deploy/cni/install.sh` installs, against a lab node's agent,
//! with a `portMappings` capability argument. The conflist the project
//! shipped before (`cniVersion` 1.1.0) is shown failing the way those
//! runtimes fail: after the plugin wired the pod. Needs root.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{podswitch, serial, text};
use serde_json::Value;
use testkit::netns::{require_root, Netns};

/// The driver `deploy/libcni-driver.sh` builds (the test command runs it).
fn driver() -> PathBuf {
    let path = std::env::var_os("PODSWITCH_LIBCNI_DRIVER").map_or_else(
        || PathBuf::from("/var/cache/podswitch/libcni-driver/libcni-driver"),
        PathBuf::from,
    );
    assert!(
        path.is_file(),
        "{} is missing: run deploy/libcni-driver.sh (deploy/test.sh does)",
        path.display()
    );
    path
}

struct Lab(String);

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = podswitch(&["lab", "down", "--name", &self.0]);
    }
}

/// Where a runtime's files live for this test.
struct Runtime {
    conf: PathBuf,
    bin: PathBuf,
    cache: PathBuf,
    node_ns: String,
    pod_ns: String,
}

impl Runtime {
    /// Runs the driver as the runtime would, in the node's namespace.
    fn call(&self, verb: &str, container: &str, mappings: &str) -> Output {
        let mut cmd = Command::new("timeout");
        cmd.args(["60", "ip", "netns", "exec", &self.node_ns])
            .arg(driver())
            .arg("-conf-dir")
            .arg(&self.conf)
            .arg("-bin-dir")
            .arg(&self.bin)
            .arg("-cache-dir")
            .arg(&self.cache)
            .args(["-netns", &format!("/run/netns/{}", self.pod_ns)])
            .args(["-container-id", container, "-ifname", "eth0"])
            .args([
                "-args",
                "IgnoreUnknown=1;K8S_POD_NAMESPACE=demo;K8S_POD_NAME=libcni",
            ]);
        if !mappings.is_empty() {
            cmd.args(["-port-mappings", mappings]);
        }
        cmd.arg(verb).output().expect("run the libcni driver")
    }
}

/// Rewrites the installed conflist for this test: addresses from the top
/// of node1's range (the lab's pods have the bottom) and its own IPAM and
/// plugin state; `version` replaces `cniVersion` when given.
fn adapt(conflist: &Path, dir: &Path, version: Option<&str>) {
    let mut list: Value = serde_json::from_slice(&std::fs::read(conflist).unwrap()).unwrap();
    if let Some(v) = version {
        list["cniVersion"] = v.into();
        list.as_object_mut().unwrap().remove("cniVersions");
    }
    let plugin = &mut list["plugins"][0];
    plugin["stateDir"] = dir.join("state").display().to_string().into();
    plugin["ipam"]["dataDir"] = dir.join("ipam").display().to_string().into();
    plugin["ipam"]["ranges"] = serde_json::json!([[{
        "subnet": "10.244.1.0/24",
        "rangeStart": "10.244.1.200",
        "rangeEnd": "10.244.1.250"
    }]]);
    std::fs::write(conflist, serde_json::to_vec_pretty(&list).unwrap()).unwrap();
}

fn services_of(socket: &str) -> String {
    text(&podswitch(&["services", "--socket", socket]))
}

#[test]
fn libcni_1_1_adds_checks_and_deletes_a_pod_with_the_shipped_conflist() {
    require_root();
    let _serial = serial();
    let lab = Lab(format!("lc{}", std::process::id() % 100_000));
    let out = podswitch(&["lab", "up", "--name", &lab.0]);
    assert!(out.status.success(), "lab up: {}", text(&out));
    let status: Value = serde_json::from_slice(
        &podswitch(&["lab", "status", "--name", &lab.0, "-o", "json"]).stdout,
    )
    .unwrap();
    let node1 = &status["nodes"][0];
    let socket = node1["socket"].as_str().unwrap().to_string();
    let web = status["pods"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"].as_str().is_some_and(|n| n.starts_with("web-")))
        .and_then(|p| p["ip"].as_str())
        .unwrap()
        .to_string();

    // Installed as an operator installs it.
    let dir = tempfile::tempdir().unwrap();
    let (bin, conf, cache) = (
        dir.path().join("bin"),
        dir.path().join("net.d"),
        dir.path().join("cache"),
    );
    let cni = Path::new(env!("CARGO_BIN_EXE_podswitch")).with_file_name("podswitch-cni");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/cni/install.sh");
    let out = Command::new("bash")
        .arg(&script)
        .args(["10.244.1.0/24", &socket])
        .env("CNI_BIN_DIR", &bin)
        .env("CNI_CONF_DIR", &conf)
        .env("PODSWITCH_CNI", &cni)
        .output()
        .unwrap();
    assert!(out.status.success(), "install.sh: {}", text(&out));
    let conflist = conf.join("10-podswitch.conflist");
    adapt(&conflist, dir.path(), None);
    let pod = Netns::new("lcpod");
    let rt = Runtime {
        conf: conf.clone(),
        bin: bin.clone(),
        cache,
        node_ns: node1["netns"].as_str().unwrap().to_string(),
        pod_ns: pod.name.clone(),
    };
    let mappings = r#"[{"hostPort":9099,"containerPort":8080,"protocol":"tcp","hostIP":""}]"#;

    let add = rt.call("add", "libcni-1", mappings);
    assert!(add.status.success(), "ADD: {}", text(&add));
    let result: Value = serde_json::from_slice(&add.stdout).unwrap();
    assert_eq!(result["cniVersion"], "1.0.0", "{result}");
    let address = result["ips"][0]["address"].as_str().unwrap().to_string();
    assert!(address.starts_with("10.244.1.2"), "{address}");
    let ping = pod.exec(
        &["ping", "-c", "1", "-W", "3", &web],
        std::time::Duration::from_secs(5),
    );
    assert!(
        ping.status.success(),
        "the new pod reaches a lab pod: {}",
        text(&ping)
    );
    assert!(
        services_of(&socket).contains("9099"),
        "the runtime's port mapping is published: {}",
        services_of(&socket)
    );

    let check = rt.call("check", "libcni-1", mappings);
    assert!(check.status.success(), "CHECK: {}", text(&check));
    let del = rt.call("del", "libcni-1", mappings);
    assert!(del.status.success(), "DEL: {}", text(&del));
    let ports = text(&podswitch(&["ports", "--socket", &socket]));
    assert!(
        !ports.contains("libcni-1"),
        "still attached after DEL: {ports}"
    );
    assert!(
        !services_of(&socket).contains("9099"),
        "the host port left with the pod"
    );

    // The conflist shipped before: libcni 1.1 knows no 1.1.0 result, so ADD
    // fails after the plugin wired the pod (as containerd 1.7 fails).
    adapt(&conflist, dir.path(), Some("1.1.0"));
    let add = rt.call("add", "libcni-2", "");
    assert!(
        !add.status.success(),
        "libcni 1.1 took a 1.1.0 result: {}",
        text(&add)
    );
    assert!(
        text(&add).contains("unsupported CNI result version \"1.1.0\""),
        "{}",
        text(&add)
    );
    let del = rt.call("del", "libcni-2", "");
    assert!(
        del.status.success(),
        "DEL after the failed ADD: {}",
        text(&del)
    );
    let ports = text(&podswitch(&["ports", "--socket", &socket]));
    assert!(!ports.contains("libcni-2"), "{ports}");
}
