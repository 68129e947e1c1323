//! Entering a pod's network namespace on the current thread, and always
//! coming back.
//!
//! `setns(CLONE_NEWNET)` moves only the calling thread. The plugin is
//! single-threaded (the IPAM stdin writer is joined before any of this), so
//! the whole process is in the pod's namespace while a [`Guard`] lives and
//! back in the node's when it drops, on success and on error alike. The
//! namespace to return to is opened (`/proc/thread-self/ns/net`, which is
//! `/proc/self/ns/net` for a single-threaded process and stays right for a
//! test thread) before leaving it.

use std::fs::File;
use std::path::Path;

use netlink::netns::Guard;

use crate::error::CniError;

/// Opens the network namespace at `path` (e.g. `CNI_NETNS`).
pub fn open(path: &Path) -> std::io::Result<File> {
    File::open(path)
}

/// Runs `f` inside the namespace `target` (named `what` in errors) and
/// returns to the current one afterwards, whatever `f` returns.
pub fn within<T>(
    target: &File,
    what: &str,
    f: impl FnOnce() -> Result<T, CniError>,
) -> Result<T, CniError> {
    let guard = Guard::enter(target).map_err(CniError::io(format!(
        "cannot enter the network namespace {what}"
    )))?;
    let result = f();
    drop(guard);
    result
}
