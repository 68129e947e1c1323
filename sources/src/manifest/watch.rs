//! The manifest source's thread: loads the folder, then reloads it after
//! every change and tells the reconciler.
//!
//! Uses: inotify through `notify` (or, where that fails or is not wanted,
//! a poll of the manifest files' names, sizes and modification times).
//! Sends: at start the load's `Warning`s, a `Replace` of every kind and
//! `Synced(true)`; after a change (events settle for 100 ms, at most 500 ms
//! after the first) the new load's `Warning`s and `Replace`, unless the
//! load is the same as the last one sent. When the folder cannot be read
//! it sends a `Warning` and `Synced(false)` and no `Replace` (the tables in
//! force stay), then polls until it can; `Synced(true)` follows the next
//! good load. The thread ends when the [`ManifestSource`] is dropped or
//! the reconciler's receiver is.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};

use crossbeam_channel::Sender as EventSender;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tables::model::Cidr;

use super::{list_manifests, Loaded, ManifestError, ManifestLoader};
use crate::{Kind, SourceEvent};

/// How quiet the folder must be before it is read again.
const DEBOUNCE: Duration = Duration::from_millis(100);
/// The longest a stream of changes can hold a reload back.
const MAX_DELAY: Duration = Duration::from_millis(500);
/// How often the folder is polled when it cannot be watched.
pub const POLL_INTERVAL: Duration = Duration::from_millis(250);

/// How the source learns of changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WatchMode {
    /// inotify (through `notify`'s recommended watcher); polling every
    /// [`POLL_INTERVAL`] when it cannot be set up.
    Notify,
    /// Polling at this interval, for folders inotify does not see change
    /// (network file systems, some container mounts).
    Poll(Duration),
}

/// The running manifest source. Dropping it stops its thread (and waits
/// for it).
#[derive(Debug)]
pub struct ManifestSource {
    control: Sender<Control>,
    thread: Option<JoinHandle<()>>,
}

/// What the thread is told, by the watcher or by [`ManifestSource`].
enum Control {
    Changed,
    Stop,
}

impl ManifestSource {
    /// Starts watching `dir` with inotify, allocating cluster IPs from
    /// `service_cidr`, sending on `tx`. Fails when `dir` is not a folder.
    pub fn start(
        dir: PathBuf,
        service_cidr: Cidr,
        tx: EventSender<SourceEvent>,
    ) -> Result<ManifestSource, ManifestError> {
        ManifestSource::start_with(dir, service_cidr, tx, WatchMode::Notify)
    }

    /// [`start`](Self::start), choosing how changes are noticed.
    pub fn start_with(
        dir: PathBuf,
        service_cidr: Cidr,
        tx: EventSender<SourceEvent>,
        mode: WatchMode,
    ) -> Result<ManifestSource, ManifestError> {
        if !dir.is_dir() {
            return Err(ManifestError::NotAFolder { path: dir });
        }
        let (control, control_rx) = mpsc::channel();
        let mut first_notes = Vec::new();
        // The watch is set up before start returns: a change made after it
        // is never missed.
        let (watcher, poll) = match mode {
            WatchMode::Poll(every) => (None, Some(every)),
            WatchMode::Notify => match watch(&dir, control.clone()) {
                Ok(w) => (Some(w), None),
                Err(e) => {
                    first_notes.push(format!(
                        "cannot watch manifest folder {} ({e}); polling it every {} ms instead",
                        dir.display(),
                        POLL_INTERVAL.as_millis()
                    ));
                    (None, Some(POLL_INTERVAL))
                }
            },
        };
        let worker = Worker {
            fingerprint: fingerprint(&dir),
            loader: ManifestLoader::new(dir, service_cidr),
            tx,
            control: control_rx,
            poll,
            _watcher: watcher,
            last_sent: None,
            synced: false,
        };
        let thread = std::thread::Builder::new()
            .name("manifest-source".to_owned())
            .spawn(move || worker.run(first_notes))
            .map_err(ManifestError::Spawn)?;
        Ok(ManifestSource {
            control,
            thread: Some(thread),
        })
    }
}

impl Drop for ManifestSource {
    fn drop(&mut self) {
        // The thread may have ended already (its receiver gone): then
        // there is no one to tell, and join returns at once.
        let _ = self.control.send(Control::Stop);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// An inotify watch of `dir` that reports every change but reads (the
/// loader's own opens would otherwise wake it after every load). An error
/// from the watcher counts as a change: reading again is always safe.
fn watch(dir: &Path, control: Sender<Control>) -> notify::Result<RecommendedWatcher> {
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if !event.is_ok_and(|e| is_read(e.kind)) {
            // The thread has ended when this fails: nothing to do.
            let _ = control.send(Control::Changed);
        }
    })?;
    watcher.watch(dir, RecursiveMode::NonRecursive)?;
    Ok(watcher)
}

/// Whether the event is a read (an open, a read, a close after reading),
/// which changes nothing.
fn is_read(kind: EventKind) -> bool {
    matches!(kind, EventKind::Access(access) if access != AccessKind::Close(AccessMode::Write))
}

/// The manifest files' names, sizes and modification times: what polling
/// compares. `None` when the folder cannot be listed.
type Fingerprint = Option<Vec<(OsString, u64, Option<SystemTime>)>>;

fn fingerprint(dir: &Path) -> Fingerprint {
    let names = list_manifests(dir).ok()?;
    Some(
        names
            .into_iter()
            .map(|name| {
                let meta = std::fs::metadata(dir.join(&name)).ok();
                let len = meta.as_ref().map_or(0, |m| m.len());
                let modified = meta.and_then(|m| m.modified().ok());
                (name, len, modified)
            })
            .collect(),
    )
}

struct Worker {
    loader: ManifestLoader,
    tx: EventSender<SourceEvent>,
    control: mpsc::Receiver<Control>,
    /// Polling interval; `None` while inotify watches.
    poll: Option<Duration>,
    /// Kept alive for its watch; dropped when the thread falls back to
    /// polling.
    _watcher: Option<RecommendedWatcher>,
    fingerprint: Fingerprint,
    last_sent: Option<Loaded>,
    synced: bool,
}

impl Worker {
    fn run(mut self, first_notes: Vec<String>) {
        for note in first_notes {
            if self.tx.send(SourceEvent::Warning(note)).is_err() {
                return;
            }
        }
        if !self.reload() {
            return;
        }
        loop {
            let message = match self.poll {
                None => self.control.recv().ok(),
                Some(every) => match self.control.recv_timeout(every) {
                    Ok(message) => Some(message),
                    Err(RecvTimeoutError::Timeout) => {
                        if fingerprint(self.loader.dir()) == self.fingerprint {
                            continue;
                        }
                        Some(Control::Changed)
                    }
                    Err(RecvTimeoutError::Disconnected) => None,
                },
            };
            match message {
                Some(Control::Changed) if self.settle() => {}
                _ => return,
            }
            if !self.reload() {
                return;
            }
        }
    }

    /// Waits for the changes to stop (quiet for [`DEBOUNCE`], or
    /// [`MAX_DELAY`] after the first). False when told to stop.
    fn settle(&self) -> bool {
        let start = Instant::now();
        loop {
            let left = MAX_DELAY.saturating_sub(start.elapsed());
            if left.is_zero() {
                return true;
            }
            match self.control.recv_timeout(DEBOUNCE.min(left)) {
                Ok(Control::Changed) => {}
                Err(RecvTimeoutError::Timeout) => return true,
                Ok(Control::Stop) | Err(RecvTimeoutError::Disconnected) => return false,
            }
        }
    }

    /// Loads the folder and sends what changed. False when the receiver
    /// is gone.
    fn reload(&mut self) -> bool {
        // Taken before reading: a change during the read shows next poll.
        self.fingerprint = fingerprint(self.loader.dir());
        let mut events = Vec::new();
        match self.loader.reload() {
            Ok(loaded) => {
                let revision = SourceEvent::Revision(self.loader.revision());
                if self.synced && self.last_sent.as_ref() == Some(&loaded) {
                    return self.tx.send(revision).is_ok();
                }
                events.extend(loaded.warnings.iter().cloned().map(SourceEvent::Warning));
                events.push(SourceEvent::Replace {
                    kinds: Kind::ALL.to_vec(),
                    objects: loaded.objects.clone(),
                });
                if !self.synced {
                    events.push(SourceEvent::Synced(true));
                    self.synced = true;
                }
                events.push(revision);
                self.last_sent = Some(loaded);
            }
            Err(e) => {
                events.push(SourceEvent::Warning(format!(
                    "{e}; the objects read before stay in force"
                )));
                if self.synced {
                    events.push(SourceEvent::Synced(false));
                    self.synced = false;
                }
                // A removed folder takes its inotify watch with it: poll
                // (whose fingerprint stays `None` while the folder is
                // missing, so this is said once) until it is back.
                if self.poll.is_none() {
                    self._watcher = None;
                    self.poll = Some(POLL_INTERVAL);
                }
            }
        }
        events.into_iter().all(|e| self.tx.send(e).is_ok())
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;
    use crate::Object;

    const WITHIN: Duration = Duration::from_secs(1);

    fn ns(name: &str) -> String {
        format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n")
    }

    /// The warnings and objects of the next `Replace`, which must come
    /// within `WITHIN`.
    fn next_replace(rx: &crossbeam_channel::Receiver<SourceEvent>) -> (Vec<String>, Vec<String>) {
        let deadline = Instant::now() + WITHIN;
        let mut warnings = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(SourceEvent::Warning(w)) => warnings.push(w),
                Ok(SourceEvent::Replace { kinds, objects }) => {
                    assert_eq!(kinds, Kind::ALL.to_vec());
                    let names = objects
                        .iter()
                        .map(|o: &Object| o.key().to_string())
                        .collect();
                    return (warnings, names);
                }
                Ok(SourceEvent::Synced(_) | SourceEvent::Revision(_)) => {}
                Ok(other) => panic!("unexpected {other:?}"),
                Err(e) => panic!("no Replace within {WITHIN:?} ({e}); warnings {warnings:?}"),
            }
        }
    }

    fn follows_changes(mode: WatchMode) {
        let dir = TempDir::new();
        dir.write("a.yaml", &ns("first"));
        let (tx, rx) = crossbeam_channel::unbounded();
        let source =
            ManifestSource::start_with(dir.path().to_path_buf(), cidr("10.96.0.0/12"), tx, mode)
                .unwrap();
        assert_eq!(
            next_replace(&rx),
            (vec![], vec!["Namespace first".to_owned()])
        );
        assert!(matches!(
            rx.recv_timeout(WITHIN),
            Ok(SourceEvent::Synced(true))
        ));

        dir.write("b.yaml", &ns("second"));
        let (_, names) = next_replace(&rx);
        assert_eq!(names, ["Namespace first", "Namespace second"]);

        // Written in place this time, as some editors do.
        std::fs::write(dir.path().join("b.yaml"), ns("third")).unwrap();
        let (_, names) = next_replace(&rx);
        assert_eq!(names, ["Namespace first", "Namespace third"]);

        dir.write("b.yaml", "apiVersion: v1\nkind: Namespace\nmetadata: [\n");
        let (warnings, names) = next_replace(&rx);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("b.yaml:"), "{warnings:?}");
        assert_eq!(names, ["Namespace first", "Namespace third"]);

        dir.remove("b.yaml");
        let (warnings, names) = next_replace(&rx);
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(names, ["Namespace first"]);

        drop(source);
        // The thread has ended: its sender is gone once the queue drains.
        while let Ok(event) = rx.recv_timeout(WITHIN) {
            assert!(!matches!(event, SourceEvent::Replace { .. }), "{event:?}");
        }
        assert!(matches!(
            rx.try_recv(),
            Err(crossbeam_channel::TryRecvError::Disconnected)
        ));
    }

    #[test]
    fn follows_changes_with_inotify() {
        follows_changes(WatchMode::Notify);
    }

    #[test]
    fn follows_changes_by_polling() {
        follows_changes(WatchMode::Poll(POLL_INTERVAL));
    }

    #[test]
    fn a_missing_folder_fails_at_start() {
        let dir = TempDir::new();
        let missing = dir.path().join("manifests");
        let (tx, _rx) = crossbeam_channel::unbounded();
        let e = ManifestSource::start(missing.clone(), cidr("10.96.0.0/12"), tx).unwrap_err();
        assert!(
            e.to_string().contains(&missing.display().to_string()),
            "{e}"
        );
    }

    #[test]
    fn a_removed_folder_keeps_the_objects_until_it_is_back() {
        let parent = TempDir::new();
        let dir = parent.path().join("m");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("a.yaml"), ns("first")).unwrap();
        let (tx, rx) = crossbeam_channel::unbounded();
        let _source = ManifestSource::start(dir.clone(), cidr("10.96.0.0/12"), tx).unwrap();
        assert_eq!(next_replace(&rx).1, ["Namespace first"]);
        assert!(matches!(
            rx.recv_timeout(WITHIN),
            Ok(SourceEvent::Synced(true))
        ));

        std::fs::remove_dir_all(&dir).unwrap();
        let mut seen = Vec::new();
        while !seen.iter().any(|e| matches!(e, SourceEvent::Synced(false))) {
            let event = rx.recv_timeout(WITHIN).expect("Synced(false) within 1 s");
            assert!(!matches!(event, SourceEvent::Replace { .. }), "{event:?}");
            if !matches!(event, SourceEvent::Revision(_)) {
                seen.push(event);
            }
        }
        let shown = dir.display().to_string();
        assert!(
            matches!(&seen[0], SourceEvent::Warning(w) if w.contains(&shown)),
            "{seen:?}"
        );

        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("a.yaml"), ns("again")).unwrap();
        assert_eq!(next_replace(&rx).1, ["Namespace again"]);
        assert!(matches!(
            rx.recv_timeout(WITHIN),
            Ok(SourceEvent::Synced(true))
        ));
    }

    /// The next `Revision` within `WITHIN`, skipping other events.
    fn next_revision(rx: &crossbeam_channel::Receiver<SourceEvent>) -> String {
        let deadline = Instant::now() + WITHIN;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(SourceEvent::Revision(r)) => return r,
                Ok(_) => {}
                Err(e) => panic!("no Revision within {WITHIN:?} ({e})"),
            }
        }
    }

    #[test]
    fn revisions_name_the_files_in_force() {
        let dir = TempDir::new();
        dir.write("a.yaml", &ns("first"));
        let (tx, rx) = crossbeam_channel::unbounded();
        let _source =
            ManifestSource::start(dir.path().to_path_buf(), cidr("10.96.0.0/12"), tx).unwrap();
        let first = next_revision(&rx);
        assert_eq!(first, super::super::folder_revision(dir.path()).unwrap());

        // Only a comment changes: no new objects, but a new revision.
        dir.write("a.yaml", &format!("# a comment\n{}", ns("first")));
        let second = next_revision(&rx);
        assert_ne!(second, first);
        assert_eq!(second, super::super::folder_revision(dir.path()).unwrap());
        assert!(rx.try_recv().is_err(), "nothing but the revision is sent");
    }
}
