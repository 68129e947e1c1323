//! The whole ADD / CHECK / DEL / GC cycle through the real binary against
//! a stand-in agent: the agent's real local API server
//! (`agent::server::Server`) with a test thread in place of its control
//! thread, which records attachments (or refuses them on request). The
//! dataplane side of `/ports` is tested with the agent; this tests the
//! plugin's side of the contract. Needs root.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use agent::server::{PortCommand, Server, State};
use api::ports::{AttachedPort, Attachment, Refusal};
use api::AgentStatus;
use dataplane::counters::Counters;
use serde_json::{json, Value};
use tables::mac::MacAddr;
use testkit::cni::{allocations, netns_path, test_config, Cni, Pod};
use testkit::netns::{require_root, Netns};

/// The API server and a thread answering its port commands.
struct FakeAgent {
    state: Arc<Mutex<State>>,
    refuse: Arc<AtomicBool>,
    _server: Server,
}

impl FakeAgent {
    fn start(socket: &Path) -> FakeAgent {
        let (commands, inbox) = crossbeam_channel::unbounded::<PortCommand>();
        let state = Arc::new(Mutex::new(State {
            counters: vec![Arc::new(Counters::new(1))],
            status: Arc::new(Mutex::new(AgentStatus {
                node: "node1".into(),
                synced: true,
                pod_mtu: 1400,
                ..AgentStatus::default()
            })),
            port_control: Some(commands),
            ..State::default()
        }));
        let refuse = Arc::new(AtomicBool::new(false));
        let (shared, refusing) = (state.clone(), refuse.clone());
        // Ends when the server (holding the sender in its state) is gone.
        std::thread::spawn(move || {
            let mut next_port = 10u16;
            for command in inbox {
                let mut state = shared.lock().unwrap();
                match command {
                    PortCommand::Attach { attachment, reply } => {
                        if refusing.load(Ordering::Relaxed) {
                            let _ =
                                reply.send(Err(Refusal::new(409, "10.244.77.0/24 is full (test)")));
                            continue;
                        }
                        state.attachments.retain(|p| {
                            !p.attachment
                                .same_key(&attachment.container_id, &attachment.ifname)
                        });
                        let port = AttachedPort {
                            attachment,
                            port: next_port,
                        };
                        next_port += 1;
                        state.attachments.push(port.clone());
                        let _ = reply.send(Ok(port));
                    }
                    PortCommand::Detach {
                        container_id,
                        ifname,
                        reply,
                    } => {
                        let before = state.attachments.len();
                        state
                            .attachments
                            .retain(|p| !p.attachment.same_key(&container_id, &ifname));
                        let _ = reply.send(Ok(state.attachments.len() != before));
                    }
                }
            }
        });
        let server = Server::start(socket, state.clone()).unwrap();
        FakeAgent {
            state,
            refuse,
            _server: server,
        }
    }

    fn attachments(&self) -> Vec<Attachment> {
        let state = self.state.lock().unwrap();
        state
            .attachments
            .iter()
            .map(|p| p.attachment.clone())
            .collect()
    }
}

struct Fixture {
    node: Netns,
    dir: tempfile::TempDir,
    cni: Cni,
    name: String,
    agent: FakeAgent,
}

impl Fixture {
    fn new(tag: &str) -> Fixture {
        require_root();
        let node = Netns::new(tag);
        let cni = Cni::new(Path::new(env!("CARGO_BIN_EXE_podswitch-cni")), &node);
        let dir = tempfile::tempdir().unwrap();
        let agent = FakeAgent::start(&dir.path().join("agent.sock"));
        Fixture {
            node,
            dir,
            cni,
            name: format!("net-{tag}"),
            agent,
        }
    }

    fn ipam_dir(&self) -> PathBuf {
        self.dir.path().join("ipam")
    }

    fn config(&self, version: &str) -> Value {
        test_config(
            version,
            &self.name,
            &self.dir.path().join("agent.sock"),
            &self.dir.path().join("state"),
            77,
            &self.ipam_dir(),
        )
    }

    fn records(&self) -> Vec<String> {
        let mut names: Vec<String> =
            std::fs::read_dir(self.dir.path().join("state").join(&self.name))
                .map(|d| {
                    d.filter_map(Result::ok)
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .collect()
                })
                .unwrap_or_default();
        names.sort();
        names
    }

    fn node_links(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .node
            .ip(&["-o", "link", "show"])
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap_or(n).to_string())
            .filter(|n| n != "lo")
            .collect();
        names.sort();
        names
    }
}

#[test]
fn add_check_del_with_an_agent() {
    let f = Fixture::new("cfull");
    let config = f.config("1.1.0");
    f.cni.status(&config).unwrap();
    let pod_ns = Netns::new("cfullpod");
    let pod = Pod::new("c0ffee01", &pod_ns);
    let host = cni::naming::host_ifname("c0ffee01", "eth0");

    let result = f.cni.add(&pod, &config).unwrap();
    let mac = MacAddr(pod_ns.mac("eth0")).to_string();
    let host_mac = MacAddr(f.node.mac(&host)).to_string();
    assert_eq!(
        result,
        json!({
            "cniVersion": "1.1.0",
            "interfaces": [
                {"name": host, "mac": host_mac},
                {"name": "eth0", "mac": mac, "mtu": 1400, "sandbox": netns_path(&pod_ns)},
            ],
            "ips": [{"address": "10.244.77.2/32", "gateway": "169.254.1.1", "interface": 1}],
            "routes": [{"dst": "0.0.0.0/0", "gw": "169.254.1.1"}],
        })
    );
    let addr = pod_ns.ip(&["-o", "addr", "show", "dev", "eth0"]);
    assert!(addr.contains("10.244.77.2/32"), "{addr}");
    let attached = f.agent.attachments();
    assert_eq!(attached.len(), 1);
    let a = &attached[0];
    assert_eq!(
        (
            a.container_id.as_str(),
            a.ifname.as_str(),
            a.host_ifname.as_str(),
            a.mac.as_str()
        ),
        ("c0ffee01", "eth0", host.as_str(), mac.as_str())
    );
    assert_eq!(
        (a.namespace.as_str(), a.name.as_str()),
        ("default", "test-pod")
    );
    assert_eq!(a.ip.to_string(), "10.244.77.2");
    assert_eq!(f.records(), vec!["c0ffee01-eth0.json".to_string()]);

    f.cni.check(&pod, &config, &result).unwrap();
    pod_ns.ip(&["route", "del", "default"]);
    let e = f.cni.check(&pod, &config, &result).unwrap_err();
    assert!(e.msg.contains("default route"), "{e:?}");
    let unknown = Pod::new("unknown", &pod_ns);
    assert_eq!(f.cni.check(&unknown, &config, &result).unwrap_err().code, 3);

    f.cni.del(&pod, &config).unwrap();
    assert!(f.agent.attachments().is_empty());
    assert!(f.node_links().is_empty(), "{:?}", f.node_links());
    assert!(allocations(&f.ipam_dir(), &f.name).is_empty());
    assert!(f.records().is_empty());
    f.cni.del(&pod, &config).unwrap();

    // A 0.4.0 runtime gets a 0.4.0 result.
    let old = f.cni.add(&pod, &f.config("0.4.0")).unwrap();
    assert_eq!(old["cniVersion"], "0.4.0");
    assert_eq!(old["ips"][0]["version"], "4");
    assert!(old["interfaces"][1].get("mtu").is_none());
    f.cni.check(&pod, &f.config("0.4.0"), &old).unwrap();
    f.cni.del(&pod, &f.config("0.4.0")).unwrap();
}

#[test]
fn a_refused_attachment_rolls_everything_back() {
    let f = Fixture::new("crefuse");
    f.agent.refuse.store(true, Ordering::Relaxed);
    let pod_ns = Netns::new("crefusepod");
    let pod = Pod::new("refused", &pod_ns);
    let e = f.cni.add(&pod, &f.config("1.0.0")).unwrap_err();
    assert!(e.msg.contains("is full (test)"), "{e:?}");
    assert!(f.node_links().is_empty(), "{:?}", f.node_links());
    let in_pod = pod_ns.ip(&["-o", "link", "show"]);
    assert!(!in_pod.contains("eth0"), "{in_pod}");
    assert!(allocations(&f.ipam_dir(), &f.name).is_empty());
    assert!(f.records().is_empty(), "{:?}", f.records());
    assert!(f.agent.attachments().is_empty());
}

#[test]
fn gc_removes_what_is_not_listed() {
    let f = Fixture::new("cgcall");
    let config = f.config("1.1.0");
    let (ns_a, ns_b) = (Netns::new("cgca"), Netns::new("cgcb"));
    let (a, b) = (Pod::new("keep-a", &ns_a), Pod::new("drop-b", &ns_b));
    f.cni.add(&a, &config).unwrap();
    f.cni.add(&b, &config).unwrap();
    assert_eq!(allocations(&f.ipam_dir(), &f.name).len(), 2);
    // A port the agent serves with no record behind it (a lost record).
    f.agent
        .state
        .lock()
        .unwrap()
        .attachments
        .push(AttachedPort {
            attachment: Attachment {
                container_id: "orphan".into(),
                ifname: "eth0".into(),
                namespace: String::new(),
                name: String::new(),
                ip: "10.244.77.200".parse().unwrap(),
                mac: "02:00:00:00:00:01".into(),
                host_ifname: cni::naming::host_ifname("orphan", "eth0"),
                kind: api::ports::PodPortKind::Veth,
                netns: String::new(),
                port_mappings: Vec::new(),
            },
            port: 99,
        });

    f.cni.gc(&config, &[("keep-a", "eth0")]).unwrap();
    let kept: Vec<String> = f
        .agent
        .attachments()
        .into_iter()
        .map(|a| a.container_id)
        .collect();
    assert_eq!(kept, vec!["keep-a".to_string()]);
    assert_eq!(f.records(), vec!["keep-a-eth0.json".to_string()]);
    assert_eq!(
        f.node_links(),
        vec![cni::naming::host_ifname("keep-a", "eth0")]
    );
    assert_eq!(
        allocations(&f.ipam_dir(), &f.name),
        vec!["10.244.77.2".to_string()]
    );

    f.cni.del(&a, &config).unwrap();
    assert!(f.node_links().is_empty());
    assert!(allocations(&f.ipam_dir(), &f.name).is_empty());
}
