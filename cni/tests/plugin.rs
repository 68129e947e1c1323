//! `podswitch-cni` executed as a runtime executes it (`ip netns exec NODE
//! podswitch-cni`, `CNI_*` variables, config on stdin), for the commands
//! that need no agent: VERSION, errors for bad input, ADD and STATUS with
//! the agent down, DEL in every state of disrepair. The real host-local
//! IPAM plugin allocates under a per-test data directory. Needs root.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use testkit::cni::{allocations, netns_path, test_config, Cni, Pod, SYSTEM_CNI_PATH};
use testkit::netns::{require_root, Netns};

/// A node namespace, a temporary directory for state and IPAM data, and
/// the plugin ready to run there. Everything goes when it drops.
struct Fixture {
    node: Netns,
    dir: tempfile::TempDir,
    cni: Cni,
    name: String,
}

impl Fixture {
    fn new(tag: &str) -> Fixture {
        require_root();
        let node = Netns::new(tag);
        let cni = Cni::new(Path::new(env!("CARGO_BIN_EXE_podswitch-cni")), &node);
        Fixture {
            node,
            dir: tempfile::tempdir().unwrap(),
            cni,
            name: format!("net-{tag}"),
        }
    }

    fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn ipam_dir(&self) -> PathBuf {
        self.dir.path().join("ipam")
    }

    /// The agent socket nobody listens on.
    fn socket(&self) -> PathBuf {
        self.dir.path().join("agent.sock")
    }

    fn config(&self, version: &str) -> Value {
        test_config(
            version,
            &self.name,
            &self.socket(),
            &self.state_dir(),
            77,
            &self.ipam_dir(),
        )
    }

    fn records(&self) -> Vec<String> {
        std::fs::read_dir(self.state_dir().join(&self.name))
            .map(|d| {
                d.filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Interfaces in the node namespace other than `lo`.
    fn node_links(&self) -> Vec<String> {
        self.node
            .ip(&["-o", "link", "show"])
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap_or(n).to_string())
            .filter(|n| n != "lo")
            .collect()
    }
}

#[test]
fn version_lists_the_supported_versions() {
    let f = Fixture::new("cver");
    assert_eq!(
        f.cni.version().unwrap(),
        json!({"cniVersion": "1.1.0", "supportedVersions": ["0.4.0", "1.0.0", "1.1.0"]})
    );
    // The kit finds the same binary cargo built for this test.
    let built = PathBuf::from(env!("CARGO_BIN_EXE_podswitch-cni"));
    assert_eq!(testkit::cni::plugin_binary(None), built);
    let beside_agent = built.with_file_name("podswitch");
    assert_eq!(testkit::cni::plugin_binary(Some(&beside_agent)), built);
}

#[test]
fn bad_input_gets_the_spec_codes() {
    let f = Fixture::new("cbad");
    let pod_ns = Netns::new("cbadpod");
    let pod = Pod::new("bad-input", &pod_ns);

    let mut wrong_type = f.config("1.0.0");
    wrong_type["type"] = json!("bridge");
    let e = f.cni.add(&pod, &wrong_type).unwrap_err();
    assert_eq!(e.code, 7, "{e:?}");
    assert!(e.msg.contains("type"), "{e:?}");
    assert_eq!(e.cni_version, "1.0.0");
    assert_eq!(e.status, Some(1));

    let mut no_ipam_type = f.config("1.0.0");
    no_ipam_type["ipam"] = json!({"ranges": []});
    let e = f.cni.add(&pod, &no_ipam_type).unwrap_err();
    assert_eq!((e.code, e.msg.contains("ipam.type")), (7, true), "{e:?}");

    let mut bad_mtu = f.config("1.1.0");
    bad_mtu["mtu"] = json!(100);
    assert_eq!(f.cni.add(&pod, &bad_mtu).unwrap_err().code, 7);

    let e = f.cni.add(&pod, &f.config("0.3.1")).unwrap_err();
    assert_eq!(e.code, 1, "{e:?}");
    assert!(e.msg.contains("0.3.1"), "{e:?}");

    let out = f.cni.exec(
        &[
            ("CNI_COMMAND", "ADD"),
            ("CNI_PATH", SYSTEM_CNI_PATH),
            ("CNI_IFNAME", "eth0"),
            ("CNI_NETNS", "/run/netns/x"),
        ],
        &f.config("1.0.0").to_string(),
    );
    let e = out.parse().unwrap_err();
    assert_eq!(e.code, 4, "{e:?}");
    assert!(e.msg.contains("CNI_CONTAINERID"), "{e:?}");

    let e = f
        .cni
        .exec(&[("CNI_COMMAND", "FROB")], "{}")
        .parse()
        .unwrap_err();
    assert_eq!(e.code, 4, "{e:?}");

    let mut cni_args = Cni::new(&f.cni.binary, &f.node);
    cni_args.args = "K8S_POD_NAME".into();
    assert_eq!(cni_args.add(&pod, &f.config("1.0.0")).unwrap_err().code, 4);

    let e = f
        .cni
        .exec(
            &[
                ("CNI_COMMAND", "DEL"),
                ("CNI_PATH", SYSTEM_CNI_PATH),
                ("CNI_CONTAINERID", "x"),
                ("CNI_IFNAME", "eth0"),
            ],
            "not json",
        )
        .parse()
        .unwrap_err();
    assert_eq!(e.code, 6, "{e:?}");

    assert!(f.records().is_empty());
    assert!(f.node_links().is_empty());
}

#[test]
fn add_without_an_agent_is_try_again_and_changes_nothing() {
    let f = Fixture::new("cadd");
    let pod_ns = Netns::new("caddpod");
    let pod = Pod::new("0123456789abcdef", &pod_ns);
    for version in ["0.4.0", "1.0.0", "1.1.0"] {
        let e = f.cni.add(&pod, &f.config(version)).unwrap_err();
        assert_eq!(e.code, 11, "{e:?}");
        assert!(
            e.msg.contains("agent.sock"),
            "the message names the socket: {e:?}"
        );
        assert_eq!(e.cni_version, version);
    }
    assert!(f.node_links().is_empty(), "no veth: {:?}", f.node_links());
    let pod_links = pod_ns.ip(&["-o", "link", "show"]);
    assert!(!pod_links.contains("eth0"), "{pod_links}");
    assert!(f.records().is_empty(), "no record: {:?}", f.records());
    assert!(allocations(&f.ipam_dir(), &f.name).is_empty());
}

#[test]
fn status_without_an_agent_is_not_available() {
    let f = Fixture::new("cstat");
    let e = f.cni.status(&f.config("1.1.0")).unwrap_err();
    assert_eq!(e.code, 50, "{e:?}");
    assert!(e.msg.contains("agent.sock"), "{e:?}");
}

#[test]
fn del_of_an_unknown_container_succeeds_twice() {
    let f = Fixture::new("cdel");
    let pod_ns = Netns::new("cdelpod");
    let pod = Pod::new("never-added", &pod_ns);
    f.cni.del(&pod, &f.config("1.0.0")).unwrap();
    f.cni.del(&pod, &f.config("1.1.0")).unwrap();
    let without_netns = Pod { netns: None, ..pod };
    f.cni.del(&without_netns, &f.config("0.4.0")).unwrap();
}

/// What a crashed or agent-less ADD leaves: a record, a host-local
/// allocation and the veth. DEL cleans all three after the pod's namespace
/// is gone (the runtime deleted it first), and again when there is nothing.
#[test]
fn del_cleans_up_after_the_namespace_is_gone() {
    let f = Fixture::new("cgone");
    let config = f.config("1.1.0");
    let cid = "deadbeef00";
    let host = cni::naming::host_ifname(cid, "eth0");
    let pod_ns = Netns::new("cgonepod");
    let pod = Pod::new(cid, &pod_ns);

    // IPAM ADD as the plugin would make it (host-local speaks 1.0.0).
    let mut ipam_config = config.clone();
    ipam_config["cniVersion"] = json!("1.0.0");
    let ipam = Cni {
        binary: PathBuf::from(SYSTEM_CNI_PATH).join("host-local"),
        ..Cni::new(&f.cni.binary, &f.node)
    };
    let allocated = ipam.add(&pod, &ipam_config).unwrap();
    assert_eq!(allocations(&f.ipam_dir(), &f.name).len(), 1, "{allocated}");
    cni::record::Store::new(&f.state_dir(), &f.name)
        .write(&cni::record::Record {
            container_id: cid.into(),
            ifname: "eth0".into(),
            netns: pod.netns.clone(),
            host_ifname: host.clone(),
            kind: api::ports::PodPortKind::Veth,
            config: config.clone(),
            ip: None,
            mac: None,
        })
        .unwrap();
    f.node.ip(&[
        "link",
        "add",
        &host,
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        &pod_ns.name,
    ]);
    assert_eq!(f.node_links(), vec![host.clone()]);

    let gone = netns_path(&pod_ns);
    drop(pod_ns);
    assert!(!Path::new(&gone).exists());
    // The namespace takes the pod end, and the host end with it (the
    // kernel does so asynchronously). Put a host end back, as if it had
    // been left behind.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !f.node_links().is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    f.node.ip(&[
        "link", "add", &host, "type", "veth", "peer", "name", "stray",
    ]);

    // The runtime's stdin may differ from ADD's: the record's config wins.
    let mut stdin_config = config.clone();
    stdin_config["ipam"]["dataDir"] = json!("/nonexistent/elsewhere");
    f.cni.del(&pod, &stdin_config).unwrap();
    assert!(f.node_links().is_empty(), "{:?}", f.node_links());
    assert!(allocations(&f.ipam_dir(), &f.name).is_empty());
    assert!(f.records().is_empty(), "{:?}", f.records());
    f.cni.del(&pod, &config).unwrap();
}

#[test]
fn gc_without_an_agent_cleans_records_not_listed() {
    let f = Fixture::new("cgc");
    let config = f.config("1.1.0");
    let store = cni::record::Store::new(&f.state_dir(), &f.name);
    for cid in ["keep-me", "drop-me"] {
        store
            .write(&cni::record::Record {
                container_id: cid.into(),
                ifname: "eth0".into(),
                netns: None,
                host_ifname: cni::naming::host_ifname(cid, "eth0"),
                kind: api::ports::PodPortKind::Veth,
                config: config.clone(),
                ip: None,
                mac: None,
            })
            .unwrap();
    }
    let dropped = cni::naming::host_ifname("drop-me", "eth0");
    f.node.ip(&[
        "link", "add", &dropped, "type", "veth", "peer", "name", "gcpeer",
    ]);
    f.cni.gc(&config, &[("keep-me", "eth0")]).unwrap();
    assert_eq!(f.records(), vec!["keep-me-eth0.json".to_string()]);
    assert!(f.node_links().is_empty(), "{:?}", f.node_links());

    let mut no_list = config.clone();
    no_list
        .as_object_mut()
        .unwrap()
        .remove("cni.dev/valid-attachments");
    let e = f.cni.call("GC", None, &no_list).parse().unwrap_err();
    assert_eq!(e.code, 7, "{e:?}");
    assert!(e.msg.contains("cni.dev/valid-attachments"), "{e:?}");
}
