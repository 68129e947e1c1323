//! Network namespaces for tests: created with a unique name, deleted when
//! the guard drops (also when the test panics). Tests never touch the root
//! namespace's interfaces; every address they use lives inside namespaces
//! made here (the README's "Addresses and pod wiring").

use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// Fails the calling test unless it runs as root: namespace tests never
/// skip silently.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    assert_eq!(
        uid, 0,
        "this test needs root (it builds network namespaces); run the suite as root"
    );
}

/// A network namespace owned by a test.
pub struct Netns {
    pub name: String,
}

impl Netns {
    /// Creates `ps<tag>-<pid>-<n>` (at most 15 characters of tag kept).
    pub fn new(tag: &str) -> Netns {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let tag: String = tag.chars().take(15).collect();
        let name = format!("ps{tag}-{}-{n}", std::process::id());
        run(&["ip", "netns", "add", &name]);
        run(&["ip", "-n", &name, "link", "set", "lo", "up"]);
        Netns { name }
    }

    /// Runs `ip -n NAME ARGS...`, panicking with its stderr on failure.
    pub fn ip(&self, args: &[&str]) -> String {
        let mut all = vec!["ip", "-n", &self.name];
        all.extend_from_slice(args);
        run(&all)
    }

    /// Runs a command inside the namespace, killed after `timeout`.
    pub fn exec(&self, args: &[&str], timeout: Duration) -> Output {
        let secs = format!("{}", timeout.as_secs().max(1));
        let mut all = vec![
            "timeout",
            "--kill-after=2",
            &secs,
            "ip",
            "netns",
            "exec",
            &self.name,
        ];
        all.extend_from_slice(args);
        Command::new(all[0])
            .args(&all[1..])
            .output()
            .unwrap_or_else(|e| panic!("{all:?}: {e}"))
    }

    /// Runs `f` on a thread that has entered this namespace.
    pub fn enter<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        enter(&self.name, f)
    }

    /// The MAC address of `dev` in this namespace.
    pub fn mac(&self, dev: &str) -> [u8; 6] {
        let text = self.ip(&["link", "show", "dev", dev]);
        let hex = text
            .split("link/ether ")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .unwrap_or_else(|| panic!("{dev} has no MAC: {text}"));
        hex.parse::<tables::mac::MacAddr>()
            .unwrap_or_else(|e| panic!("{dev}: {e}"))
            .octets()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting a namespace removes its links (and any XDP programs on
        // them). Retry briefly: the kernel may still hold it for a moment.
        let deadline = Instant::now() + Duration::from_secs(5);
        while Command::new("ip")
            .args(["netns", "del", &self.name])
            .status()
            .is_ok_and(|s| !s.success())
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Runs a command, panicking with its stderr if it fails.
pub fn run(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `f` on a thread that has entered the named namespace (one this test
/// did not create, e.g. a lab's pod).
pub fn enter<T: Send + 'static>(name: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    netlink::netns::on_thread(&netlink::netns::named(name), f).unwrap_or_else(|e| panic!("{e}"))
}
