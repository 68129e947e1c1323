//! Network namespaces: the one place that calls `setns(CLONE_NEWNET)`.
//!
//! `setns` moves only the calling thread. [`Guard`] moves the current
//! thread and always brings it back (the CNI plugin, single-threaded, moves
//! the whole process that way); [`on_thread`] runs a function on a
//! short-lived thread inside a namespace, leaving the caller where it is
//! (the lab and the tests).

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// Where `ip netns add NAME` puts the namespace called `name`.
pub fn named(name: &str) -> PathBuf {
    PathBuf::from(format!("/run/netns/{name}"))
}

/// Moves the calling thread into the namespace `ns` refers to.
pub fn setns(ns: &File) -> std::io::Result<()> {
    // SAFETY: setns(2) on a descriptor the caller holds for the duration of
    // the call; it changes only the calling thread's network namespace.
    let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// The current thread is inside another network namespace until this drops.
///
/// The namespace to return to is opened (`/proc/thread-self/ns/net`) before
/// leaving it. When the thread cannot return, the process aborts: carrying
/// on would make the caller's changes in the wrong namespace.
pub struct Guard {
    home: File,
}

impl Guard {
    /// Moves the current thread into `target`.
    pub fn enter(target: &File) -> std::io::Result<Guard> {
        let home = File::open("/proc/thread-self/ns/net")?;
        setns(target)?;
        Ok(Guard { home })
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Err(e) = setns(&self.home) {
            eprintln!("cannot return to the original network namespace: {e}");
            std::process::abort();
        }
    }
}

/// Why [`on_thread`] could not run its function.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("{path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("entering {path}: {source}")]
    Enter {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Runs `f` on a short-lived (scoped) thread inside the namespace at `path`
/// and returns its result; the calling thread stays where it is. A panic in
/// `f` is re-raised in the caller.
pub fn on_thread<T: Send>(path: &Path, f: impl FnOnce() -> T + Send) -> Result<T, NetnsError> {
    let file = File::open(path).map_err(|source| NetnsError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                setns(&file).map_err(|source| NetnsError::Enter {
                    path: path.to_path_buf(),
                    source,
                })?;
                Ok(f())
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}
