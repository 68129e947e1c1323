//! The control core's rules, driven the way the loop drives it, with the
//! sockets and the kernel played by [`Driver`].

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use serde_json::json;
use sources::{Kind, Object, ObjectKey};

use super::*;
use crate::test_objects::{node_config, obj};
use tables::proto::Proto;

const NODE2: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
const NODE2_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x22];

/// The core and the I/O around it: binds succeed unless their port is in
/// `failing`, next hops resolve to `neighbours`.
struct Driver {
    control: Control,
    now: Instant,
    failing: HashSet<PortId>,
    neighbours: Macs,
}

impl Driver {
    fn new() -> Driver {
        Driver::with_ports(2..6)
    }

    fn with_ports(pod_ids: Range<PortId>) -> Driver {
        let node = node_config();
        let settings = Settings {
            cluster_domain: "cluster.local".into(),
            fixed: Vec::new(),
            fixed_names: vec![(0, "uplink".into()), (1, "host".into())],
            pod_ids,
            pod_cidr: node.pod_cidr,
            notified: true,
            node: node.clone(),
        };
        let now = Instant::now();
        let feed = Feed::live(&node, &[]);
        let (control, first) = Control::new(settings, feed, Macs::new(), Vec::new(), now);
        assert!(first.is_empty(), "no services, nothing to filter");
        let mut d = Driver {
            control,
            now,
            failing: HashSet::new(),
            neighbours: Macs::new(),
        };
        // The first round gives cluster DNS its (empty) zone.
        assert_eq!(names(&d.quick(Vec::new())), ["zone"]);
        d
    }

    /// Steps `input`, carrying out what asks for an answer the way the
    /// loop does; returns every effect in order.
    fn step(&mut self, input: Input) -> Vec<Effect> {
        let mut all = Vec::new();
        let mut queue = vec![input];
        while let Some(input) = queue.pop() {
            for effect in self.control.step(input) {
                match &effect {
                    Effect::Bind { id, .. } => queue.push(Input::Bound {
                        id: *id,
                        result: if self.failing.contains(id) {
                            Err(Refusal::new(500, "no sockets"))
                        } else {
                            Ok(())
                        },
                    }),
                    Effect::Resolve(ips) => queue.push(Input::NextHops {
                        macs: ips
                            .iter()
                            .filter_map(|ip| Some((*ip, *self.neighbours.get(ip)?)))
                            .collect(),
                        on_link: Vec::new(),
                    }),
                    _ => {}
                }
                all.push(effect);
            }
        }
        all
    }

    /// One round: `inputs`, then the tick `after` the last one.
    fn round(&mut self, inputs: Vec<Input>, after: Duration) -> Vec<Effect> {
        let mut all = Vec::new();
        for input in inputs {
            all.extend(self.step(input));
        }
        self.now += after;
        all.extend(self.step(Input::Tick(self.now)));
        all
    }

    /// A round soon after the last (no resolving due).
    fn quick(&mut self, inputs: Vec<Input>) -> Vec<Effect> {
        self.round(inputs, Duration::from_millis(1))
    }
}

fn attachment(container: &str, ip: &str) -> Attachment {
    Attachment {
        container_id: container.into(),
        ifname: "eth0".into(),
        namespace: "demo".into(),
        name: container.into(),
        ip: ip.parse().unwrap(),
        mac: "02:00:0a:f4:01:0a".into(),
        host_ifname: format!("ps-{container}"),
        kind: api::ports::PodPortKind::Veth,
        netns: String::new(),
        port_mappings: Vec::new(),
    }
}

type AttachReply = Receiver<Result<AttachedPort, Refusal>>;

fn attach(a: Attachment, ifindex: Option<u32>) -> (Input, AttachReply) {
    let (reply, answer) = crossbeam_channel::bounded(1);
    let input = Input::Attach {
        attachment: a,
        ifindex,
        reply: Some(reply),
    };
    (input, answer)
}

fn detach(container: &str) -> (Input, Receiver<Result<bool, Refusal>>) {
    let (reply, answer) = crossbeam_channel::bounded(1);
    let input = Input::Detach {
        container_id: container.into(),
        ifname: "eth0".into(),
        reply,
    };
    (input, answer)
}

/// Each effect's name, in order.
fn names(effects: &[Effect]) -> Vec<&'static str> {
    effects
        .iter()
        .map(|e| match e {
            Effect::Bind { .. } => "bind",
            Effect::Unbind(_) => "unbind",
            Effect::Resolve(_) => "resolve",
            Effect::Filter(_) => "filter",
            Effect::Publish { .. } => "publish",
            Effect::Built { .. } => "built",
            Effect::Unsynced => "unsynced",
            Effect::Revision(_) => "revision",
            Effect::Zone(_) => "zone",
            Effect::Ports { .. } => "ports",
            Effect::Save(_) => "save",
            Effect::Warn(_) => "warn",
            Effect::Answer(_) => "answer",
        })
        .collect()
}

fn position(effects: &[Effect], name: &str) -> usize {
    let at = names(effects).iter().position(|n| *n == name);
    at.unwrap_or_else(|| panic!("no {name} in {:?}", names(effects)))
}

/// The snapshot the effects published last.
fn published(effects: &[Effect]) -> Option<&Snapshot> {
    effects.iter().rev().find_map(|e| match e {
        Effect::Publish { snapshot, .. } => Some(snapshot),
        _ => None,
    })
}

fn warnings(effects: &[Effect]) -> Vec<&str> {
    let lines = effects.iter().filter_map(|e| match e {
        Effect::Warn(line) => Some(line.as_str()),
        _ => None,
    });
    lines.collect()
}

/// Sends the answers (as the loop does) so the replies can be read.
fn send_answers(effects: Vec<Effect>) {
    for effect in effects {
        if let Effect::Answer(answer) = effect {
            answer.send();
        }
    }
}

fn pod_ip(s: &str) -> u32 {
    u32::from(s.parse::<Ipv4Addr>().unwrap())
}

fn node2() -> Object {
    obj(
        Kind::Node,
        json!({"metadata": {"name": "node2"},
               "spec": {"podCIDR": "10.244.2.0/24"},
               "status": {"addresses": [{"type": "InternalIP", "address": NODE2.to_string()}]}}),
    )
}

fn node_port_service() -> Object {
    obj(
        Kind::Service,
        json!({"metadata": {"namespace": "demo", "name": "web"},
               "spec": {"type": "NodePort", "clusterIP": "10.96.0.5", "selector": {"app": "web"},
                        "ports": [{"name": "http", "protocol": "TCP", "port": 80, "nodePort": 30080}]}}),
    )
}

#[test]
fn an_attach_is_answered_after_the_tables_with_its_pod() {
    let mut d = Driver::new();
    let (input, answer) = attach(attachment("c1", "10.244.1.10"), Some(7));
    let effects = d.quick(vec![input]);
    assert_eq!(
        names(&effects),
        ["bind", "publish", "built", "ports", "save", "answer"]
    );
    match &effects[0] {
        Effect::Bind { id, ifindex, .. } => assert_eq!((*id, *ifindex), (2, 7)),
        other => panic!("{other:?}"),
    }
    let snapshot = published(&effects).unwrap();
    let pod = snapshot.routes.local_pod(pod_ip("10.244.1.10")).unwrap();
    assert_eq!(pod.port, 2);
    assert_eq!(pod.mac, [0x02, 0, 0x0a, 0xf4, 1, 0x0a]);
    assert_eq!(d.control.snapshot().routes.local_pod(pod.ip), Some(pod));
    send_answers(effects);
    assert_eq!(answer.try_recv().unwrap().unwrap().port, 2);
    let names = d.control.port_names();
    assert_eq!(names.last(), Some(&(2, "ps-c1".to_owned())));
    assert_eq!(d.control.pod_interfaces(), ["ps-c1"]);
}

#[test]
fn a_detach_releases_the_port_before_the_tables_and_answers_after() {
    let mut d = Driver::new();
    let (input, _) = attach(attachment("c1", "10.244.1.10"), Some(7));
    d.quick(vec![input]);
    let (input, answer) = detach("c1");
    let effects = d.quick(vec![input]);
    assert_eq!(
        names(&effects),
        ["unbind", "publish", "built", "ports", "save", "answer"]
    );
    assert!(matches!(effects[0], Effect::Unbind(2)));
    let snapshot = published(&effects).unwrap();
    assert!(snapshot.routes.local_pod(pod_ip("10.244.1.10")).is_none());
    send_answers(effects);
    assert_eq!(answer.try_recv().unwrap(), Ok(true));
    assert!(d.control.attached().is_empty());

    // Detaching what is not attached is answered, and changes nothing.
    let (input, answer) = detach("c1");
    let effects = d.quick(vec![input]);
    assert_eq!(names(&effects), ["answer"]);
    send_answers(effects);
    assert_eq!(answer.try_recv().unwrap(), Ok(false));
}

#[test]
fn attaching_again_releases_the_old_port_first() {
    let mut d = Driver::new();
    let (input, _) = attach(attachment("c1", "10.244.1.10"), Some(7));
    d.quick(vec![input]);
    let mut again = attachment("c1", "10.244.1.10");
    again.host_ifname = "ps-c1b".into();
    let (input, answer) = attach(again, Some(8));
    let effects = d.quick(vec![input]);
    let order = names(&effects);
    assert_eq!(&order[..2], ["unbind", "bind"]);
    assert!(matches!(effects[0], Effect::Unbind(2)));
    assert!(position(&effects, "publish") < position(&effects, "answer"));
    send_answers(effects);
    assert!(answer.try_recv().unwrap().is_ok());
    assert_eq!(d.control.pod_interfaces(), ["ps-c1b"]);
}

#[test]
fn refused_attaches_bind_nothing_and_say_why() {
    let mut d = Driver::with_ports(2..4);
    let (input, _) = attach(attachment("c1", "10.244.1.10"), Some(7));
    d.quick(vec![input]);
    let mut bad_mac = attachment("c2", "10.244.1.11");
    bad_mac.mac = "02:00:zz".into();
    let cases = [
        (attachment("c2", "10.244.2.11"), Some(8), 400, "pod CIDR"),
        (bad_mac, Some(8), 400, "mac"),
        (attachment("", "10.244.1.11"), Some(8), 400, "empty"),
        (attachment("c2", "10.244.1.11"), None, 400, "does not exist"),
        (
            attachment("c2", "10.244.1.10"),
            Some(8),
            409,
            "already attached",
        ),
    ];
    for (a, ifindex, status, says) in cases {
        let (input, answer) = attach(a, ifindex);
        let effects = d.quick(vec![input]);
        assert_eq!(names(&effects), ["answer"], "{says}");
        send_answers(effects);
        let refusal = answer.try_recv().unwrap().unwrap_err();
        assert_eq!(refusal.status, status, "{}", refusal.message);
        assert!(refusal.message.contains(says), "{}", refusal.message);
    }
    // Port 3 is the last one.
    let (input, _) = attach(attachment("c2", "10.244.1.11"), Some(8));
    d.quick(vec![input]);
    let (input, answer) = attach(attachment("c3", "10.244.1.12"), Some(9));
    let effects = d.quick(vec![input]);
    assert_eq!(names(&effects), ["answer"]);
    send_answers(effects);
    let refusal = answer.try_recv().unwrap().unwrap_err();
    assert_eq!(refusal.status, 409);
    assert!(refusal.message.contains("every pod port is taken"));
    assert_eq!(d.control.attached().len(), 2);
}

#[test]
fn a_failed_bind_is_refused_and_its_port_reused() {
    let mut d = Driver::new();
    d.failing.insert(2);
    let (input, answer) = attach(attachment("c1", "10.244.1.10"), Some(7));
    let effects = d.quick(vec![input]);
    assert_eq!(names(&effects), ["bind", "answer"]);
    send_answers(effects);
    let refusal = answer.try_recv().unwrap().unwrap_err();
    assert_eq!(
        (refusal.status, refusal.message.as_str()),
        (500, "no sockets")
    );
    assert!(d.control.attached().is_empty());
    assert!(d.control.snapshot().routes.pods().next().is_none());

    d.failing.clear();
    let (input, answer) = attach(attachment("c1", "10.244.1.10"), Some(7));
    send_answers(d.quick(vec![input]));
    assert_eq!(answer.try_recv().unwrap().unwrap().port, 2);
}

#[test]
fn a_source_outage_keeps_the_tables_and_a_resync_rebuilds_them() {
    let mut d = Driver::new();
    let effects = d.quick(vec![
        Input::Source(SourceEvent::Replace {
            kinds: Kind::ALL.to_vec(),
            objects: vec![node_port_service()],
        }),
        Input::Source(SourceEvent::Synced(true)),
    ]);
    assert!(d.control.synced());
    match &effects[..] {
        [.., Effect::Publish { synced: true, .. }, Effect::Built {
            objects,
            synced: true,
        }] => {
            assert_eq!(objects.get("Service"), Some(&1), "{objects:?}")
        }
        _ => panic!("{:?}", names(&effects)),
    }
    let before = d.control.snapshot().generation;
    let tables = d.control.snapshot().services.clone();

    // The API server goes away: not ready, the tables stay.
    let effects = d.quick(vec![Input::Source(SourceEvent::Synced(false))]);
    assert_eq!(names(&effects), ["unsynced"]);
    assert!(!d.control.synced());
    assert!(std::sync::Arc::ptr_eq(
        &d.control.snapshot().services,
        &tables
    ));
    assert!(
        d.quick(Vec::new()).is_empty(),
        "nothing more while it is away"
    );

    // Back, relisted: one rebuild, in sync.
    let effects = d.quick(vec![
        Input::Source(SourceEvent::Replace {
            kinds: Kind::ALL.to_vec(),
            objects: vec![node_port_service()],
        }),
        Input::Source(SourceEvent::Synced(true)),
    ]);
    assert_eq!(names(&effects), ["publish", "built"]);
    assert!(d.control.synced());
    assert_eq!(
        d.control.snapshot().generation,
        before,
        "the loop numbers them"
    );
}

#[test]
fn node_ports_open_the_uplink_filter_before_the_tables_need_it() {
    let mut d = Driver::new();
    let effects = d.quick(vec![Input::Source(SourceEvent::Apply(node_port_service()))]);
    let at = position(&effects, "filter");
    assert!(at < position(&effects, "publish"));
    match &effects[at] {
        Effect::Filter(change) => {
            assert_eq!(change.add_ports, [(Proto::Tcp.number(), 30080)]);
            assert!(change.remove_ports.is_empty() && change.add_ips.is_empty());
        }
        other => panic!("{other:?}"),
    }
    let key = ObjectKey {
        kind: Kind::Service,
        namespace: "demo".into(),
        name: "web".into(),
    };
    let effects = d.quick(vec![Input::Source(SourceEvent::Delete(key))]);
    match &effects[position(&effects, "filter")] {
        Effect::Filter(change) => {
            assert_eq!(change.remove_ports, [(Proto::Tcp.number(), 30080)]);
            assert!(change.add_ports.is_empty());
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn next_hops_are_resolved_when_due_and_the_routes_rebuilt_when_they_change() {
    let mut d = Driver::new();
    d.quick(vec![Input::Source(SourceEvent::Apply(node2()))]);
    let vtep = |s: &Snapshot| s.routes.vtep(u32::from(NODE2)).map(|v| v.underlay_mac);
    assert_eq!(vtep(d.control.snapshot()), Some([0; 6]), "not resolved yet");

    // Unresolved, and the retry interval not passed: nothing to do.
    assert!(d.quick(Vec::new()).is_empty());
    // It passed; the neighbour is not known yet: asked, nothing changes.
    let effects = d.round(Vec::new(), NEIGHBOUR_RETRY);
    assert_eq!(names(&effects), ["resolve"]);
    assert!(matches!(&effects[0], Effect::Resolve(ips) if ips == &[NODE2]));

    // Now it answers.
    d.neighbours.insert(NODE2, NODE2_MAC);
    let effects = d.round(Vec::new(), NEIGHBOUR_RETRY);
    assert_eq!(names(&effects), ["resolve", "publish", "built"]);
    assert_eq!(vtep(published(&effects).unwrap()), Some(NODE2_MAC));

    // Resolved and notified: no polling until the resync interval...
    assert!(d.round(Vec::new(), NEIGHBOUR_RETRY).is_empty());
    // ...unless the kernel reports a change; the same MAC changes nothing.
    let effects = d.quick(vec![Input::LinksChanged {
        present: HashMap::new(),
    }]);
    assert_eq!(names(&effects), ["resolve"]);
    let effects = d.round(Vec::new(), NEIGHBOUR_RESYNC);
    assert_eq!(names(&effects), ["resolve"]);
}

#[test]
fn a_vanished_interface_detaches_its_pod() {
    let mut d = Driver::new();
    let (input, _) = attach(attachment("c1", "10.244.1.10"), Some(7));
    let (other, _) = attach(attachment("c2", "10.244.1.11"), Some(8));
    d.quick(vec![input, other]);
    // c1's name is back under another index: a new interface, not the pod's.
    let present = HashMap::from([("ps-c1".to_owned(), 17), ("ps-c2".to_owned(), 8)]);
    let effects = d.quick(vec![Input::LinksChanged { present }]);
    let order = names(&effects);
    assert_eq!(&order[..2], ["unbind", "warn"]);
    assert!(matches!(effects[0], Effect::Unbind(2)));
    assert!(warnings(&effects)[0].contains("ps-c1 (demo/c1 10.244.1.10) detached"));
    // The change report made the next hops due as well.
    assert_eq!(order[2], "resolve");
    let snapshot = published(&effects).unwrap();
    assert!(snapshot.routes.local_pod(pod_ip("10.244.1.10")).is_none());
    assert!(snapshot.routes.local_pod(pod_ip("10.244.1.11")).is_some());
    assert_eq!(d.control.pod_interfaces(), ["ps-c2"]);
}

#[test]
fn a_restore_that_fails_is_a_warning_and_leaves_the_saved_list() {
    let mut d = Driver::new();
    d.failing.insert(3);
    let restore = |a: Attachment, ifindex| Input::Attach {
        attachment: a,
        ifindex,
        reply: None,
    };
    let effects = d.quick(vec![
        restore(attachment("c1", "10.244.1.10"), Some(7)),
        restore(attachment("c2", "10.244.1.11"), None),
        restore(attachment("c3", "10.244.1.12"), Some(9)),
    ]);
    let lines = warnings(&effects);
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(lines[0].starts_with("pod port c2/eth0 not restored: interface"));
    assert_eq!(lines[1], "pod port c3/eth0 not restored: no sockets");
    let saved = effects.iter().find_map(|e| match e {
        Effect::Save(list) => Some(list),
        _ => None,
    });
    let saved: Vec<_> = saved.unwrap().iter().map(|a| &a.container_id).collect();
    assert_eq!(saved, ["c1"]);
    assert!(!names(&effects).contains(&"answer"));
}

#[test]
fn one_round_publishes_once_for_all_its_changes() {
    let mut d = Driver::new();
    let (a, _) = attach(attachment("c1", "10.244.1.10"), Some(7));
    let (b, _) = attach(attachment("c2", "10.244.1.11"), Some(8));
    let effects = d.quick(vec![
        a,
        b,
        Input::Source(SourceEvent::Apply(node_port_service())),
    ]);
    let order = names(&effects);
    assert_eq!(order.iter().filter(|n| **n == "publish").count(), 1);
    assert_eq!(order.iter().filter(|n| **n == "answer").count(), 2);
    assert!(position(&effects, "publish") < position(&effects, "answer"));
    assert_eq!(d.control.snapshot().routes.pods().count(), 2);
}
