//! The system calls of the lab's plumbing: links and addresses through the
//! `netlink` crate (the code the agent and the CNI plugin use); `ip netns`
//! for the named namespaces, their process lists and running commands in
//! them; processes it started; the per-namespace `resolv.conf`.

use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use netlink::links;

use super::LabError;

/// The bridge of a lab's underlay namespace, which every node's uplink and
/// every outside client is plugged into.
const BRIDGE: &str = "br0";

/// Runs `ip ARGS...`; the error carries its stderr.
pub fn ip(args: &[&str]) -> Result<(), LabError> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| LabError::step(format!("ip {}", args.join(" ")), e))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(LabError::step(
            format!("ip {}", args.join(" ")),
            String::from_utf8_lossy(&out.stderr).trim(),
        ))
    }
}

/// Whether network namespace `name` exists.
pub fn netns_exists(name: &str) -> bool {
    std::path::Path::new("/run/netns").join(name).exists()
}

/// Creates namespace `name` with `lo` up.
pub fn add_netns(name: &str) -> Result<(), LabError> {
    ip(&["netns", "add", name])?;
    links_in(name, "bringing lo up", || links::set_up(index("lo")?))
}

/// Runs the link changes `f` inside namespace `ns`; errors name `what`.
fn links_in(
    ns: &str,
    what: &str,
    f: impl FnOnce() -> Result<(), netlink::NetlinkError> + Send + 'static,
) -> Result<(), LabError> {
    in_netns(ns, f)?.map_err(|e| LabError::step(format!("{what} in {ns}"), e))
}

/// The index of interface `name` of the current namespace.
fn index(name: &str) -> Result<u32, netlink::NetlinkError> {
    links::index_of(name).ok_or_else(|| netlink::NetlinkError::Io {
        step: "find interface",
        source: std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("no interface {name:?}"),
        ),
    })
}

/// Creates the underlay bridge in namespace `ul`, up.
pub fn add_bridge(ul: &str) -> Result<(), LabError> {
    links_in(ul, "creating the underlay bridge", || {
        links::create_bridge(BRIDGE)?;
        links::set_up(index(BRIDGE)?)
    })
}

/// Plugs namespace `ns` into the underlay bridge of `ul`: a veth whose end
/// `port` is on the bridge and whose peer is `ns`'s `eth0`, at `address`/24,
/// up, with TX checksum offload off (complete checksums, as on a wire:
/// AF_XDP gets no partial ones), with `queues` queues.
pub fn plug_into_underlay(
    ul: &str,
    port: &str,
    ns: &str,
    address: Ipv4Addr,
    queues: u32,
) -> Result<(), LabError> {
    let peer_ns = std::fs::File::open(netlink::netns::named(ns))
        .map_err(|e| LabError::step(format!("opening namespace {ns}"), e))?;
    let port = port.to_owned();
    links_in(ul, &format!("plugging {ns} into the underlay"), move || {
        use std::os::fd::AsFd;
        links::create_veth_into(&port, "eth0", peer_ns.as_fd(), 1500, queues)?;
        let at = index(&port)?;
        links::set_master(at, index(BRIDGE)?)?;
        links::set_up(at)
    })?;
    links_in(ns, "setting up eth0", move || {
        let eth0 = index("eth0")?;
        links::add_address(eth0, address, 24)?;
        links::set_up(eth0)?;
        links::set_tx_checksum("eth0", false)
    })
}

/// Deletes namespace `name` (its links go with it); true if it existed.
pub fn delete_netns(name: &str) -> bool {
    if !netns_exists(name) {
        return false;
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while ip(&["netns", "del", name]).is_err() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}

/// Stops every process running in namespace `ns` (the agent or pod server
/// the lab started there, and anything run there with `lab exec`):
/// SIGTERM, then SIGKILL what is left after 3 s. The PIDs come from the
/// kernel (`ip netns pids`), not from the state file, so a process started
/// just before `up` was killed is found too. Returns how many there were.
pub fn stop_processes_in(ns: &str) -> usize {
    let first = terminate_processes_in(ns);
    let deadline = Instant::now() + Duration::from_secs(3);
    while !pids_in(ns).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    for pid in pids_in(ns) {
        // SAFETY: kill(2) on a process inside a namespace this lab owns.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    first
}

/// Sends SIGTERM to every process in namespace `ns` without waiting (so
/// several namespaces' processes take their grace at once); how many.
pub fn terminate_processes_in(ns: &str) -> usize {
    let pids = pids_in(ns);
    for &pid in &pids {
        // SAFETY: kill(2) on a process inside a namespace this lab owns.
        unsafe { libc::kill(pid, libc::SIGTERM) };
    }
    pids.len()
}

/// The processes in namespace `ns`, as the kernel knows them.
fn pids_in(ns: &str) -> Vec<i32> {
    Command::new("ip")
        .args(["netns", "pids", ns])
        .stdin(Stdio::null())
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// `/etc/netns/<ns>/`: what `ip netns exec` bind-mounts over `/etc`.
fn etc_dir(ns: &str) -> std::path::PathBuf {
    std::path::Path::new("/etc/netns").join(ns)
}

/// Points the namespace's resolver at the cluster DNS.
pub fn write_resolv_conf(ns: &str, namespace: &str, dns: &str) -> Result<(), LabError> {
    let dir = etc_dir(ns);
    let text = format!(
        "nameserver {dns}\nsearch {namespace}.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n"
    );
    std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::write(dir.join("resolv.conf"), text))
        .map_err(|e| LabError::Io(format!("writing {}/resolv.conf: {e}", dir.display())))
}

/// Removes what [`write_resolv_conf`] wrote.
pub fn remove_resolv_conf(ns: &str) {
    let _ = std::fs::remove_dir_all(etc_dir(ns));
}

/// Starts `program ARGS...` inside namespace `ns` in its own session
/// (it outlives the lab command), output to `log`; returns its PID.
pub fn spawn_in(
    ns: &str,
    program: &std::path::Path,
    args: &[&str],
    log: &std::path::Path,
) -> Result<u32, LabError> {
    use std::os::unix::process::CommandExt;
    let what = || format!("starting {} in {ns}", program.display());
    let out = std::fs::File::create(log).map_err(|e| LabError::step(what(), e))?;
    let err = out.try_clone().map_err(|e| LabError::step(what(), e))?;
    let mut command = Command::new("ip");
    command
        .args(["netns", "exec", ns])
        .arg(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    // SAFETY: setsid(2) in the child before exec: async-signal-safe, and
    // touches nothing of the parent.
    unsafe {
        command.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let child = command.spawn().map_err(|e| LabError::step(what(), e))?;
    Ok(child.id())
}

/// Runs `f` on a short-lived thread inside network namespace `netns`
/// (setns changes only that thread's namespace) and returns its result.
pub fn in_netns<T: Send + 'static>(
    netns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, LabError> {
    netlink::netns::on_thread(&netlink::netns::named(netns), f)
        .map_err(|e| LabError::Io(e.to_string()))
}
