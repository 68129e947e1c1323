//! Measuring helpers for the benchmark binaries: resident memory from
//! /proc/self/status, this thread's CPU time, order statistics of
//! durations, and a reproducible random sequence.

use std::time::Duration;

/// Resident memory of this process, from /proc/self/status.
#[derive(Clone, Copy, Debug)]
pub struct Memory {
    /// VmRSS, bytes.
    pub rss: u64,
    /// VmHWM (peak RSS since start or the last reset), bytes.
    pub hwm: u64,
}

impl Memory {
    /// The current figures.
    pub fn now() -> Memory {
        let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                .map_or(0, |kb| kb * 1024)
        };
        Memory {
            rss: field("VmRSS:"),
            hwm: field("VmHWM:"),
        }
    }

    /// Returns freed heap to the kernel, so RSS growth measures what is
    /// live, then resets VmHWM to the current RSS.
    pub fn settle() -> Memory {
        // SAFETY: malloc_trim only releases free memory of the allocator's
        // arenas; it takes no pointers and is safe to call at any time.
        unsafe { libc::malloc_trim(0) };
        // Linux >= 4.0: writing 5 resets the peak RSS ("high water mark").
        std::fs::write("/proc/self/clear_refs", "5").expect("reset VmHWM");
        Memory::now()
    }
}

/// Bytes in MiB.
pub fn mib(bytes: u64) -> f64 {
    // Exact for any size this benchmark reaches (< 2^53).
    #[allow(clippy::cast_precision_loss)]
    let b = bytes as f64;
    b / (1024.0 * 1024.0)
}

/// A duration in milliseconds.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Order statistics of a set of durations.
#[derive(Clone, Copy, Debug)]
pub struct Stats {
    pub min: Duration,
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
}

impl Stats {
    /// The statistics of `samples` (zero when there are none).
    pub fn of(samples: &[Duration]) -> Stats {
        let mut v = samples.to_vec();
        v.sort_unstable();
        let n = v.len().max(1);
        // Nearest rank: the smallest sample with at least p% at or below it.
        let rank = |p: usize| v.get((n * p).div_ceil(100).max(1) - 1).copied();
        Stats {
            min: v.first().copied().unwrap_or_default(),
            p50: rank(50).unwrap_or_default(),
            p99: rank(99).unwrap_or_default(),
            max: v.last().copied().unwrap_or_default(),
        }
    }

    /// As JSON, in milliseconds.
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "min_ms": ms(self.min), "p50_ms": ms(self.p50),
            "p99_ms": ms(self.p99), "max_ms": ms(self.max),
        })
    }
}

/// splitmix64: a reproducible sequence without a dependency.
pub struct Rng(pub u64);

impl Rng {
    /// The next number of the sequence.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number below `n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        let n64 = u64::try_from(n).expect("usize fits u64");
        usize::try_from(self.next_u64() % n64).expect("below n")
    }
}

/// CPU time this thread has used: the wall time minus what the scheduler
/// gave to other work on this shared VM.
pub fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_THREAD_CPUTIME_ID
    // is supported on every Linux this runs on.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    let secs = u64::try_from(ts.tv_sec).unwrap_or(0);
    let nanos = u32::try_from(ts.tv_nsec).unwrap_or(0);
    Duration::new(secs, nanos)
}
