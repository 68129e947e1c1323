//! The non-endpoint events at the main scale: relabelled pods (seen by a
//! policy or not), a node added; which table each rebuilt.

use super::*;

/// One kind of non-endpoint event, timed `repeat` times.
pub struct EventRun {
    pub what: &'static str,
    /// Which table the event rebuilt.
    pub rebuilt: &'static str,
    pub series: Series,
}

/// Whether the last publish replaced the policy table / the routes.
fn replaced(
    before: &(
        Arc<tables::policy::PolicyTable>,
        Arc<tables::route::RouteTable>,
    ),
    publisher: &Publisher,
) -> (bool, bool) {
    publisher.read(|s| {
        (
            !Arc::ptr_eq(&s.policy, &before.0),
            !Arc::ptr_eq(&s.routes, &before.1),
        )
    })
}

fn tables_of(
    publisher: &Publisher,
) -> (
    Arc<tables::policy::PolicyTable>,
    Arc<tables::route::RouteTable>,
) {
    publisher.read(|s| (s.policy.clone(), s.routes.clone()))
}

fn relabelled(pod: &mut k8s::Pod, key: &str, value: &str) -> SourceEvent {
    pod.metadata
        .labels
        .get_or_insert_with(Default::default)
        .insert(key.to_owned(), value.to_owned());
    SourceEvent::Apply(Object::Pod(pod.clone()))
}

fn label<'p>(pod: &'p k8s::Pod, key: &str) -> &'p str {
    pod.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(key))
        .map_or("", String::as_str)
}

fn on_node(pod: &k8s::Pod, node: &str) -> bool {
    pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node)
}

/// Relabels pod `pod` `repeat` times, toggling `key` between `a` and `b`,
/// and says which tables each publish replaced (the same every time, or
/// the benchmark stops).
fn relabels(
    r: &mut Reconciler,
    publisher: &Publisher,
    pod: &mut k8s::Pod,
    (key, a, b): (&str, &str, &str),
    repeat: usize,
) -> (Series, (bool, bool)) {
    let mut series = Series::default();
    let mut seen = None;
    for k in 0..repeat {
        let before = tables_of(publisher);
        let event = relabelled(pod, key, if k % 2 == 0 { b } else { a });
        series.push(timed(r, publisher, event));
        let now = replaced(&before, publisher);
        assert!(
            seen.is_none_or(|s| s == now),
            "relabels differ in what they rebuild"
        );
        seen = Some(now);
    }
    (series, seen.unwrap_or_default())
}

/// The first pod satisfying `pred` whose relabel (`key` to `value`) the
/// policy table does (`seen`) or does not depend on, found by applying it
/// (untimed) and asking the reconciler whether anything is pending.
fn find_pod(
    cluster: &Cluster,
    r: &mut Reconciler,
    publisher: &Publisher,
    pred: impl Fn(&k8s::Pod) -> bool,
    (key, value): (&str, &str),
    seen: bool,
) -> k8s::Pod {
    for pod in cluster.pods.iter().filter(|p| !on_node(p, NODE) && pred(p)) {
        let mut pod = pod.clone();
        r.apply(relabelled(&mut pod, key, value));
        let pending = r.pending();
        if pending {
            publisher.publish(publisher.read(|prev| r.build(Some(prev), &underlay_mac)));
        }
        if pending == seen {
            return pod;
        }
    }
    panic!("no pod whose relabel {key}={value} a policy sees: {seen}");
}

fn rebuilt(what: (bool, bool)) -> &'static str {
    match what {
        (true, true) => "policy + routes",
        (true, false) => "policy",
        (false, true) => "routes",
        (false, false) => "nothing (all shared)",
    }
}

pub fn other_events(
    scale: &Scale,
    cluster: &Cluster,
    r: &mut Reconciler,
    publisher: &Publisher,
    repeat: usize,
) -> Vec<EventRun> {
    let mut runs = Vec::new();
    // A pod on this node: policies may select it, so its policy is
    // recompiled (today: the whole table).
    let mut local = cluster
        .pods
        .iter()
        .find(|p| on_node(p, NODE))
        .cloned()
        .expect("a pod on node1");
    let tier = label(&local, "tier").to_owned();
    let other = if tier == "web" { "api" } else { "web" };
    let (series, what) = relabels(r, publisher, &mut local, ("tier", &tier, other), repeat);
    runs.push(EventRun {
        what: "pod on node1 relabelled (tier)",
        rebuilt: rebuilt(what),
        series,
    });
    // A remote pod that a policy's peer selector ({tier: api}) matches.
    let mut peer = find_pod(
        cluster,
        r,
        publisher,
        |p| label(p, "tier") == "api",
        ("tier", "web"),
        true,
    );
    let (series, what) = relabels(r, publisher, &mut peer, ("tier", "web", "api"), repeat);
    runs.push(EventRun {
        what: "remote pod a peer selector sees relabelled (tier)",
        rebuilt: rebuilt(what),
        series,
    });
    // A remote pod no policy sees: a new `version` label.
    let mut unseen = find_pod(
        cluster,
        r,
        publisher,
        |p| label(p, "tier") == "worker" && !cluster::special_namespace(p),
        ("version", "v2"),
        false,
    );
    let (series, what) = relabels(r, publisher, &mut unseen, ("version", "v2", "v3"), repeat);
    runs.push(EventRun {
        what: "remote pod no policy sees relabelled (version)",
        rebuilt: rebuilt(what),
        series,
    });
    // Nodes joining (node numbers stay within the address plan's 250).
    let mut series = Series::default();
    let mut what = (false, false);
    for k in 1..=repeat.min(250 - scale.nodes) {
        let before = tables_of(publisher);
        let node = cluster::node(scale.nodes + k);
        series.push(timed(r, publisher, SourceEvent::Apply(Object::Node(node))));
        what = replaced(&before, publisher);
    }
    runs.push(EventRun {
        what: "node added",
        rebuilt: rebuilt(what),
        series,
    });
    runs
}
