//! `podswitch lab apply -f FILE|DIR [--replace]` and `podswitch lab delete
//! -f FILE|DIR`: objects added to, changed in or removed from a running
//! lab, as `kubectl apply` and `delete` would; returning once every agent
//! has the result in force.
//!
//! A pod the lab has keeps its namespace, node and address (only its labels
//! and annotations can change); a new pod is attached like `up` attaches
//! pods, and is written not ready until its server answers, so services
//! send it nothing before; a pod no longer given keeps serving until then,
//! leaves the manifests as the new pods become ready, and is then detached
//! (CNI DEL) and its namespace removed: a Deployment rolls without a gap.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use super::objects::{self, Mode};
use super::plan::{pod_documents, Plan, PODS_FILE};
use super::state::LabPod;
use super::{pods, Binaries, LabError, State};
use sources::manifest::folder_revision;

/// What a change did to the lab's pods.
#[derive(Debug, Default)]
pub struct Applied {
    /// Whether the manifests changed at all.
    pub changed: bool,
    pub created: Vec<String>,
    pub deleted: Vec<String>,
}

/// Applies the manifests at `path` to the lab in `mode`; returns when
/// every agent has the result in force and every new pod serves.
pub fn apply(
    state: &mut State,
    path: &Path,
    mode: Mode,
    bins: &Binaries,
) -> Result<Applied, LabError> {
    // One change at a time; the state as the last one left it.
    let _lock = Lock::take(&state.dir)?;
    *state = State::load(&state.dir)?;
    let inputs = objects::read_inputs(path)?;
    let given = objects::parse_all(&inputs)?;
    let desired = objects::merge(&state.lab.objects, &given, mode).map_err(LabError::Refused)?;
    let verbatim = if mode == Mode::Delete {
        &[][..]
    } else {
        &inputs[..]
    };
    let plan = super::plan::plan(&state.lab, desired, verbatim, &state.dir.join(".trial"))?;
    change(state, plan, bins)
}

/// Brings the running lab to `plan`, rolling: new pods are set up (not
/// ready) while the pods they replace still serve, then made ready as the
/// replaced ones leave the manifests, which are then detached.
fn change(state: &mut State, plan: Plan, bins: &Binaries) -> Result<Applied, LabError> {
    let gone: Vec<LabPod> = state
        .lab
        .pods
        .iter()
        .filter(|p| !plan.pods.iter().any(|q| q.key() == p.key()))
        .cloned()
        .collect();
    let new: Vec<LabPod> = plan
        .pods
        .iter()
        .filter(|p| state.pod(&p.key()).is_none())
        .cloned()
        .collect();
    let starting: BTreeSet<String> = new.iter().map(LabPod::key).collect();
    let leaving: BTreeSet<String> = gone.iter().map(LabPod::key).collect();
    let manifests = state.dir.join("manifests");
    let current = std::fs::read_to_string(manifests.join(PODS_FILE)).unwrap_or_default();
    let leaving = pod_documents(&current, &leaving);
    let mut changed = write_folder(&manifests, &plan.files(&starting, &leaving))?;
    state.lab.objects = plan.objects.clone();
    state.lab.services = plan.services.clone();
    state.save()?;
    if changed {
        wait_in_force(state)?;
    }
    for pod in &new {
        state.lab.pods.push(pod.clone());
        state.save()?;
        pods::attach(state, state.lab.pods.len() - 1, bins)?;
    }
    for pod in &new {
        pods::wait_serving(state, pod)?;
    }
    if write_folder(&manifests, &plan.files(&BTreeSet::new(), &[]))? {
        changed = true;
        wait_in_force(state)?;
    }
    // Out of every service now: their servers finish what they were
    // answering, all at once, then each is detached.
    for pod in &gone {
        pods::terminate(pod);
    }
    for pod in &gone {
        pods::detach(state, pod, bins)?;
        state.lab.pods.retain(|p| p.key() != pod.key());
        state.save()?;
    }
    state.lab.pods.sort_by_key(LabPod::key);
    state.save()?;
    Ok(Applied {
        changed,
        created: new.iter().map(LabPod::key).collect(),
        deleted: gone.iter().map(LabPod::key).collect(),
    })
}

/// Makes `dir` hold exactly `files` (other manifest files are removed);
/// each written under a hidden name, then renamed. True when anything
/// changed.
pub fn write_folder(dir: &Path, files: &[(&str, String)]) -> Result<bool, LabError> {
    let io = |e: std::io::Error| LabError::Io(format!("writing {}: {e}", dir.display()));
    std::fs::create_dir_all(dir).map_err(io)?;
    let mut changed = false;
    for (name, text) in files {
        let path = dir.join(name);
        if std::fs::read_to_string(&path).is_ok_and(|old| old == *text) {
            continue;
        }
        let tmp = dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text)
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(io)?;
        changed = true;
    }
    for entry in std::fs::read_dir(dir).map_err(io)?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let manifest = name.ends_with(".yaml") || name.ends_with(".yml");
        if manifest && !name.starts_with('.') && !files.iter().any(|(n, _)| *n == name) {
            std::fs::remove_file(entry.path()).map_err(io)?;
            changed = true;
        }
    }
    Ok(changed)
}

/// Waits until every agent reports tables built from the lab's manifest
/// folder as it is now.
fn wait_in_force(state: &State) -> Result<(), LabError> {
    let manifests = state.dir.join("manifests");
    let revision = folder_revision(&manifests)
        .map_err(|e| LabError::Io(format!("reading {}: {e}", manifests.display())))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    for node in &state.lab.nodes {
        loop {
            let status = api::status(&node.socket).ok();
            if status.is_some_and(|s| s.synced && s.source_revision.as_ref() == Some(&revision)) {
                break;
            }
            if Instant::now() > deadline {
                return Err(LabError::step(
                    format!("the agent of {}", node.name),
                    format!(
                        "did not put the change in force within 10 s (see `podswitch status --socket {}`)",
                        node.socket.display()
                    ),
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    Ok(())
}

/// The lab's lock (`<state dir>/lock`, `flock`), held while a change runs
/// so two `apply`s do not interleave; released when dropped (or when the
/// process dies).
struct Lock {
    /// Closing it releases the lock.
    _file: std::fs::File,
}

impl Lock {
    fn take(dir: &Path) -> Result<Lock, LabError> {
        use std::os::fd::AsRawFd;
        let path = dir.join("lock");
        let file = std::fs::File::create(&path)
            .map_err(|e| LabError::Io(format!("{}: {e}", path.display())))?;
        // SAFETY: flock on a descriptor this function owns (open for the
        // call), with no pointers involved.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
        if rc != 0 {
            let e = std::io::Error::last_os_error();
            return Err(LabError::Io(format!("locking {}: {e}", path.display())));
        }
        Ok(Lock { _file: file })
    }
}
