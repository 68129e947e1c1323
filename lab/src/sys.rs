//! The system calls of the lab's plumbing: namespaces and links through
//! `ip` (a lab harness, not the dataplane), processes it started, the
//! per-namespace `resolv.conf`.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::LabError;

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

/// Runs `ip -n NS ARGS...`.
pub fn ip_in(ns: &str, args: &[&str]) -> Result<(), LabError> {
    let mut all = vec!["-n", ns];
    all.extend_from_slice(args);
    ip(&all)
}

/// Whether network namespace `name` exists.
pub fn netns_exists(name: &str) -> bool {
    std::path::Path::new("/run/netns").join(name).exists()
}

/// Creates namespace `name` with `lo` up.
pub fn add_netns(name: &str) -> Result<(), LabError> {
    ip(&["netns", "add", name])?;
    ip_in(name, &["link", "set", "lo", "up"])
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

/// `ethtool -K DEV tx off` inside `ns` (so that frames
/// reach AF_XDP with full checksums, not partial ones left to a NIC).
pub fn tx_checksum_off(ns: &str, dev: &str) -> Result<(), LabError> {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "ethtool", "-K", dev, "tx", "off"])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| LabError::step(format!("ethtool -K {dev} tx off in {ns}"), e))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(LabError::step(
            format!("ethtool -K {dev} tx off in {ns}"),
            String::from_utf8_lossy(&out.stderr).trim(),
        ))
    }
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
