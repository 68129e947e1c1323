//! Worker threads: one per configured core, pinned, each owning a
//! [`Worker`] and polling it in one of two modes:
//!
//! - [`PollMode::Busy`]: never sleeps (production and benchmarks);
//! - [`PollMode::Adaptive`]: after a run of empty polls, sleeps in `poll(2)`
//!   on the ports' descriptors (or a short timed sleep for ports without
//!   one) for at most a millisecond, so the lab and tests can share two
//!   cores with everything else.
//!
//! Ports are added and removed while traffic flows on the others: control
//! sends a [`Command`] down the worker's channel, and the worker applies it
//! between two polls (a non-blocking channel check per poll round; no
//! stop-the-world). The worker also reaps a bounded slice of the conntrack
//! table every millisecond.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{bounded, Receiver, Sender};
use tables::route::PortId;

use dataplane::counters::Counters;
use dataplane::port::{Port, PortKind};
use dataplane::worker::Worker;

/// How an idle worker waits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PollMode {
    Busy,
    Adaptive,
}

impl std::str::FromStr for PollMode {
    type Err = String;

    fn from_str(s: &str) -> Result<PollMode, String> {
        match s {
            "busy" => Ok(PollMode::Busy),
            "adaptive" => Ok(PollMode::Adaptive),
            _ => Err(format!(
                "poll mode {s:?}: expected \"busy\" or \"adaptive\""
            )),
        }
    }
}

/// A change a worker applies between polls.
pub enum Command {
    AddPort {
        id: PortId,
        kind: PortKind,
        port: Box<dyn Port>,
    },
    /// Removes a port and sends it back (to be closed by control).
    RemovePort {
        id: PortId,
        reply: Sender<Option<Box<dyn Port>>>,
    },
    /// Answers once every command sent before it is applied.
    Sync { reply: Sender<()> },
}

/// Empty polls before an adaptive worker sleeps.
const SPIN_ROUNDS: u32 = 64;
/// Longest sleep of an adaptive worker.
const MAX_SLEEP_MS: i32 = 1;
/// Conntrack entries a worker checks for expiry per millisecond.
const REAP_BUDGET: u32 = 1024;

struct Running {
    commands: Sender<Command>,
    thread: Option<JoinHandle<Worker>>,
    counters: Arc<Counters>,
}

/// The worker threads of an agent.
pub struct Runner {
    workers: Vec<Running>,
    stop: Arc<AtomicBool>,
}

impl Runner {
    /// Starts one thread per worker; worker `i` is pinned to `cores[i]` if
    /// given.
    pub fn start(
        workers: Vec<Worker>,
        cores: &[Option<core_affinity::CoreId>],
        mode: PollMode,
    ) -> Runner {
        let stop = Arc::new(AtomicBool::new(false));
        let workers = workers
            .into_iter()
            .enumerate()
            .map(|(i, worker)| {
                let (tx, rx) = bounded(64);
                let counters = worker.pipeline().counters.clone();
                let core = cores.get(i).copied().flatten();
                let stop = stop.clone();
                let thread = std::thread::Builder::new()
                    .name(format!("podswitch-worker-{i}"))
                    .spawn(move || run(worker, core, mode, rx, stop))
                    .ok();
                Running {
                    commands: tx,
                    thread,
                    counters,
                }
            })
            .collect();
        Runner { workers, stop }
    }

    /// Number of workers.
    pub fn len(&self) -> usize {
        self.workers.len()
    }

    /// Whether there are no workers.
    pub fn is_empty(&self) -> bool {
        self.workers.is_empty()
    }

    /// Sends `command` to worker `worker`. Returns false if it is gone.
    pub fn send(&self, worker: usize, command: Command) -> bool {
        self.workers
            .get(worker)
            .is_some_and(|w| w.commands.send(command).is_ok())
    }

    /// Removes port `id` from worker `worker` and returns it.
    pub fn remove_port(&self, worker: usize, id: PortId) -> Option<Box<dyn Port>> {
        let (reply, answer) = bounded(1);
        if !self.send(worker, Command::RemovePort { id, reply }) {
            return None;
        }
        answer.recv_timeout(Duration::from_secs(5)).ok().flatten()
    }

    /// Waits until worker `worker` has applied every command sent to it so
    /// far (e.g. a new port is polled and its fill ring stocked). False if
    /// it did not answer within a second.
    pub fn sync(&self, worker: usize) -> bool {
        let (reply, answer) = bounded(1);
        self.send(worker, Command::Sync { reply })
            && answer.recv_timeout(Duration::from_secs(1)).is_ok()
    }

    /// Every worker's counters (summed by readers).
    pub fn counters(&self) -> Vec<Arc<Counters>> {
        self.workers.iter().map(|w| w.counters.clone()).collect()
    }

    /// Stops every worker and returns them (with their ports, to close).
    pub fn stop(mut self) -> Vec<Worker> {
        self.stop.store(true, Ordering::Release);
        self.workers
            .iter_mut()
            .filter_map(|w| w.thread.take()?.join().ok())
            .collect()
    }
}

impl Drop for Runner {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        for w in &mut self.workers {
            if let Some(t) = w.thread.take() {
                let _ = t.join();
            }
        }
    }
}

/// Milliseconds on the kernel's coarse monotonic clock (tick resolution,
/// 1-4 ms): the workers' time for conntrack and affinity timeouts. Read
/// once per poll round, so it must be cheap: the precise clock cost ~8% of
/// a busy worker's time on these VMs (a profile of the full path), the
/// coarse one reads a word the kernel updates each tick.
pub fn coarse_now_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec to a valid pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    let secs = u64::try_from(ts.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(ts.tv_nsec).unwrap_or(0);
    secs * 1000 + nanos / 1_000_000
}

fn run(
    mut worker: Worker,
    core: Option<core_affinity::CoreId>,
    mode: PollMode,
    commands: Receiver<Command>,
    stop: Arc<AtomicBool>,
) -> Worker {
    if let Some(core) = core {
        core_affinity::set_for_current(core);
    }
    let mut idle = 0u32;
    let mut fds = Vec::new();
    let mut polls = Vec::new();
    let mut last_reap = 0u64;
    while !stop.load(Ordering::Acquire) {
        while let Ok(command) = commands.try_recv() {
            apply(&mut worker, command);
        }
        let now_ms = coarse_now_ms();
        if now_ms != last_reap {
            last_reap = now_ms;
            worker.pipeline().conntrack.reap(now_ms, REAP_BUDGET);
            worker.publish_gauges();
        }
        if worker.poll(now_ms) > 0 {
            idle = 0;
            continue;
        }
        idle = idle.saturating_add(1);
        if mode == PollMode::Adaptive && idle > SPIN_ROUNDS {
            worker.poll_fds(&mut fds);
            wait(&fds, &mut polls);
        }
    }
    worker
}

fn apply(worker: &mut Worker, command: Command) {
    match command {
        Command::AddPort { id, kind, port } => {
            // An id out of range drops (closes) the port; control validated
            // ids against the worker's size before sending.
            let _ = worker.add_port(id, kind, port);
        }
        Command::RemovePort { id, reply } => {
            let _ = reply.send(worker.remove_port(id));
        }
        Command::Sync { reply } => {
            let _ = reply.send(());
        }
    }
}

/// Sleeps until a port's descriptor is readable or a millisecond passes.
/// `polls` is scratch space kept by the caller (no allocation once warm).
fn wait(fds: &[i32], polls: &mut Vec<libc::pollfd>) {
    if fds.is_empty() {
        std::thread::sleep(Duration::from_micros(500));
        return;
    }
    polls.clear();
    polls.extend(fds.iter().map(|&fd| libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }));
    let len = libc::nfds_t::try_from(polls.len()).unwrap_or(0);
    // SAFETY: `polls` is a valid array of `len` pollfd structs that lives
    // across the call; poll(2) writes only their `revents` fields.
    unsafe {
        libc::poll(polls.as_mut_ptr(), len, MAX_SLEEP_MS);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dataplane::pipeline::Pipeline;
    use dataplane::port::MemPort;
    use std::time::Instant;
    use tables::snapshot::{Publisher, Snapshot};

    fn worker() -> Worker {
        let snap = Snapshot::empty(fixtures::example::node_config("node1"));
        let counters = Arc::new(Counters::new(8));
        let pipeline = Pipeline::new(&dataplane::pipeline::Shared::new(64, 16, 16), counters, 1);
        Worker::new(64, 8, Arc::new(Publisher::new(snap)), pipeline)
    }

    #[test]
    fn ports_come_and_go_while_the_worker_runs() {
        let runner = Runner::start(vec![worker()], &[None], PollMode::Adaptive);
        let (port, handle) = MemPort::new("p");
        assert!(runner.send(
            0,
            Command::AddPort {
                id: 3,
                kind: PortKind::Uplink,
                port: Box::new(port)
            }
        ));
        // A frame on the new port is received (and dropped: nothing owns it).
        handle.inject(&[0u8; 60]);
        let deadline = Instant::now() + Duration::from_secs(5);
        while handle.pending() > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(handle.pending(), 0, "the worker polls the added port");
        assert!(runner.sync(0), "the worker answers a sync");
        assert!(runner.remove_port(0, 3).is_some(), "the port comes back");
        assert!(runner.remove_port(0, 3).is_none(), "and is gone");
        let counters = runner.counters();
        assert_eq!(counters[0].port(3).unwrap().rx_packets.get(), 1);
        let workers = runner.stop();
        assert_eq!(workers.len(), 1);
    }

    #[test]
    fn poll_modes_parse() {
        assert_eq!("busy".parse::<PollMode>(), Ok(PollMode::Busy));
        assert_eq!("adaptive".parse::<PollMode>(), Ok(PollMode::Adaptive));
        assert!("fast".parse::<PollMode>().unwrap_err().contains("busy"));
    }
}
