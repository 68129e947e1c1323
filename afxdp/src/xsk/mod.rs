//! The AF_XDP port: one socket on one queue of one interface, sharing its
//! worker's UMEM (the worker's [`FramePool`]) with the worker's other ports.
//!
//! Frame ownership: a chunk is either free in the pool, in the pipeline, or
//! owned by the kernel through one socket — on its fill ring, on its RX ring
//! not yet consumed, or on its TX ring / in flight until it shows up on the
//! completion ring. [`XskPort::in_flight`] counts the last group, so a
//! worker can check `free + Σ in_flight + pipeline == total`.
//!
//! Where received data lands (aligned mode, UMEM headroom 0; read in
//! `net/xdp/xsk_buff_pool.c`, `xsk.c` and `include/net/xsk_buff_pool.h` of
//! 6.x, not yet measured here: that needs the XDP program): the kernel masks
//! a fill address down to its chunk, sets `data_hard_start = chunk +
//! umem_headroom` and `data = data_hard_start + XDP_PACKET_HEADROOM` (256).
//! The RX descriptor's address is where the data really is: since 6.10
//! `xp_get_handle` returns `data - umem_base` in aligned mode (before,
//! `chunk + umem_headroom + (data - data_hard_start)`, the same value). In
//! copy mode the frame is copied to `data`, so RX addresses are always
//! `chunk + 256` = `chunk + HEADROOM`, where `FramePool::alloc_with` also
//! puts data, and a UMEM headroom would only push data further in. In
//! zero-copy mode an XDP program's `bpf_xdp_adjust_head`/`_meta` moves
//! `data`, so `recv` assumes nothing: it hands out the descriptor as is.
//! TX descriptors may start anywhere in a chunk as long as `addr + len` stays
//! inside it (room to prepend VXLAN), and completions return the TX address
//! unchanged; `FramePool::free` masks it to the chunk.
//!
//! Wake-ups (`XDP_USE_NEED_WAKEUP`): `sendto` only when the TX ring's flag
//! is set (in copy mode it always is: TX happens inside `sendto`, at most
//! 32 frames per call, so `service` kicks again while frames are queued);
//! `recvfrom` only when the fill ring's flag is set and RX was idle.
//!
//! Sharing rules (kernel ≥ 5.10): sockets on *different* devices or queues
//! share one UMEM, each with its own fill and completion ring; two sockets
//! on the same device and queue would have to share those rings, which this
//! port does not do (the kernel refuses that bind with EINVAL).

mod ring;
mod umem;

pub use ring::{free_slots, ready_entries, slot};
pub use umem::Umem;

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use ring::{ConsRing, ProdRing};
use umem::Claim;

use dataplane::counters::PortCounters;
use dataplane::frame::{Desc, FramePool};
use dataplane::port::Port;

/// Ring sizes and bind behaviour of one socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct XskConfig {
    pub rx_size: u32,
    pub tx_size: u32,
    pub fill_size: u32,
    pub comp_size: u32,
    /// Frames kept on the fill ring (at most `fill_size`): what this socket
    /// takes from the shared pool to receive into.
    pub fill_target: u32,
    /// Bind in zero-copy mode (fails with EOPNOTSUPP on veth).
    pub zero_copy: bool,
    /// Bind attempts while the queue is EBUSY (backoff 10 ms doubling to
    /// 200 ms).
    pub bind_attempts: u32,
}

impl XskConfig {
    /// Rings of 2048 with half the fill ring stocked: the host port's and
    /// what `Default` gives.
    pub const DEFAULT: XskConfig = XskConfig {
        rx_size: 2048,
        tx_size: 2048,
        fill_size: 2048,
        comp_size: 2048,
        fill_target: 1024,
        zero_copy: false,
        bind_attempts: 10,
    };
}

impl Default for XskConfig {
    fn default() -> Self {
        XskConfig::DEFAULT
    }
}

/// Why an AF_XDP socket could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum XskError {
    #[error(
        "AF_XDP socket on {ifname} (ifindex {ifindex}) queue {queue}: {step} failed: {source}"
    )]
    Socket {
        ifname: String,
        ifindex: u32,
        queue: u32,
        step: &'static str,
        #[source]
        source: io::Error,
    },
    #[error(
        "AF_XDP socket on {ifname} (ifindex {ifindex}) queue {queue}: bind still busy after \
         {attempts} attempts; another socket holds this queue"
    )]
    Busy {
        ifname: String,
        ifindex: u32,
        queue: u32,
        attempts: u32,
    },
    #[error("AF_XDP UMEM registration: {step} failed: {source}")]
    Umem {
        step: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("AF_XDP socket on {ifname}: bad configuration: {reason}")]
    Config { ifname: String, reason: String },
    #[error("interface {ifname} does not exist in this network namespace")]
    NoInterface { ifname: String },
}

impl XskError {
    fn umem(step: &'static str, source: io::Error) -> XskError {
        XskError::Umem { step, source }
    }

    /// The step that failed, if a system call did.
    pub fn step(&self) -> Option<&'static str> {
        match self {
            XskError::Socket { step, .. } | XskError::Umem { step, .. } => Some(step),
            XskError::Busy { .. } => Some("bind"),
            _ => None,
        }
    }

    /// The errno of the failed system call, if any.
    pub fn errno(&self) -> Option<i32> {
        match self {
            XskError::Socket { source, .. } | XskError::Umem { source, .. } => {
                source.raw_os_error()
            }
            XskError::Busy { .. } => Some(libc::EBUSY),
            _ => None,
        }
    }
}

/// The index of interface `name` in the calling thread's namespace.
pub fn ifindex(name: &str) -> Result<u32, XskError> {
    let missing = || XskError::NoInterface {
        ifname: name.to_owned(),
    };
    let c = CString::new(name).map_err(|_| missing())?;
    // SAFETY: `c` is a valid NUL-terminated string for the call's duration.
    match unsafe { libc::if_nametoindex(c.as_ptr()) } {
        0 => Err(missing()),
        i => Ok(i),
    }
}

/// An AF_XDP socket bound to one queue of one interface.
pub struct XskPort {
    // Fields drop in order: the rings unmap before the socket closes.
    rx: ConsRing,
    tx: ProdRing,
    fill: ProdRing,
    comp: ConsRing,
    fd: Arc<OwnedFd>,
    name: String,
    queue: u32,
    umem_base: usize,
    fill_target: u32,
    in_flight: u32,
    rx_idle: bool,
    counters: PortCounters,
}

impl XskPort {
    /// Opens a socket on queue `queue` of `name` (index `ifindex`) sharing
    /// `umem`. The first port of a `Umem` binds its registering socket; the
    /// others bind with `XDP_SHARED_UMEM` and their own fill and completion
    /// rings. Retries while the queue is EBUSY.
    pub fn bind(
        umem: &mut Umem,
        name: &str,
        ifindex: u32,
        queue: u32,
        config: &XskConfig,
    ) -> Result<XskPort, XskError> {
        check_config(name, config)?;
        let sys = |step: &'static str| {
            move |source: io::Error| XskError::Socket {
                ifname: name.to_owned(),
                ifindex,
                queue,
                step,
                source,
            }
        };
        let (fd, shared) = match umem.claim()? {
            Claim::Owner(fd) => (fd, None),
            Claim::Shared { fd, with } => (fd, Some(with)),
        };
        umem::setsockopt(&fd, libc::XDP_RX_RING, &config.rx_size)
            .map_err(sys("setsockopt(XDP_RX_RING)"))?;
        umem::setsockopt(&fd, libc::XDP_TX_RING, &config.tx_size)
            .map_err(sys("setsockopt(XDP_TX_RING)"))?;
        umem::setsockopt(&fd, libc::XDP_UMEM_FILL_RING, &config.fill_size)
            .map_err(sys("setsockopt(XDP_UMEM_FILL_RING)"))?;
        umem::setsockopt(&fd, libc::XDP_UMEM_COMPLETION_RING, &config.comp_size)
            .map_err(sys("setsockopt(XDP_UMEM_COMPLETION_RING)"))?;
        let off = umem::mmap_offsets(&fd).map_err(sys("getsockopt(XDP_MMAP_OFFSETS)"))?;
        let desc = std::mem::size_of::<libc::xdp_desc>();
        let addr = std::mem::size_of::<u64>();
        // The kernel's page offsets are non-negative values below 2^33.
        let pg = |o: libc::off_t| u64::try_from(o).unwrap_or(0);
        let rx = umem::map_ring(
            &fd,
            pg(libc::XDP_PGOFF_RX_RING),
            &off.rx,
            config.rx_size,
            desc,
        )
        .map_err(sys("mmap(RX ring)"))?;
        let tx = umem::map_ring(
            &fd,
            pg(libc::XDP_PGOFF_TX_RING),
            &off.tx,
            config.tx_size,
            desc,
        )
        .map_err(sys("mmap(TX ring)"))?;
        let fill = umem::map_ring(
            &fd,
            libc::XDP_UMEM_PGOFF_FILL_RING,
            &off.fr,
            config.fill_size,
            addr,
        )
        .map_err(sys("mmap(fill ring)"))?;
        let comp = umem::map_ring(
            &fd,
            libc::XDP_UMEM_PGOFF_COMPLETION_RING,
            &off.cr,
            config.comp_size,
            addr,
        )
        .map_err(sys("mmap(completion ring)"))?;

        // A sharing socket passes only XDP_SHARED_UMEM: copy/zero-copy and
        // need_wakeup come from the socket it shares with.
        let flags = match shared {
            Some(_) => libc::XDP_SHARED_UMEM,
            None if config.zero_copy => libc::XDP_USE_NEED_WAKEUP | libc::XDP_ZEROCOPY,
            None => libc::XDP_USE_NEED_WAKEUP | libc::XDP_COPY,
        };
        let counters = PortCounters::default();
        let shared_fd = shared.as_ref().map(|s| s.as_raw_fd());
        let mut delay = Duration::from_millis(10);
        let mut attempt = 1;
        loop {
            match umem::bind(&fd, ifindex, queue, flags, shared_fd) {
                Ok(()) => break,
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                    if attempt >= config.bind_attempts {
                        return Err(XskError::Busy {
                            ifname: name.to_owned(),
                            ifindex,
                            queue,
                            attempts: attempt,
                        });
                    }
                    counters.ebusy_retries.add(1);
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(Duration::from_millis(200));
                    attempt += 1;
                }
                Err(e) => return Err(sys("bind")(e)),
            }
        }
        drop(shared);
        let fd = Arc::new(fd);
        umem.bound(&fd);
        Ok(XskPort {
            rx: ConsRing::new(rx),
            tx: ProdRing::new(tx),
            fill: ProdRing::new(fill),
            comp: ConsRing::new(comp),
            fd,
            name: name.to_owned(),
            queue,
            umem_base: umem.base(),
            fill_target: config.fill_target,
            in_flight: 0,
            rx_idle: true,
            counters,
        })
    }

    /// Frames the kernel owns through this socket: on the fill ring, on the
    /// RX ring not yet received, or sent and not yet completed.
    pub fn in_flight(&self) -> u32 {
        self.in_flight
    }

    /// The ring-condition counters of this socket (`fill_empty`, `wakeups`,
    /// `ebusy_retries`); the worker counts packets and `tx_full` itself.
    pub fn counters(&self) -> &PortCounters {
        &self.counters
    }

    /// The queue this socket is bound to.
    pub fn queue(&self) -> u32 {
        self.queue
    }

    /// The socket, for `poll` in adaptive mode.
    pub fn raw_fd(&self) -> std::os::fd::RawFd {
        self.fd.as_raw_fd()
    }

    /// Whether `pool` is the one this port's UMEM was registered on: frames
    /// of any other pool would be meaningless addresses to the kernel.
    #[inline]
    fn owns(&self, pool: &mut FramePool) -> bool {
        pool.region().0 as usize == self.umem_base
    }

    /// Tops the fill ring up to `fill_target` frames from `pool`.
    fn refill(&mut self, pool: &mut FramePool) {
        let size = self.fill.size();
        let stocked = size - self.fill.free(size);
        let want = self.fill_target.saturating_sub(stocked);
        if want == 0 {
            return;
        }
        let mut n = 0;
        while n < want {
            let Some(chunk) = pool.alloc() else {
                self.counters.fill_empty.add(1);
                break;
            };
            self.fill.write_addr(n, chunk);
            n += 1;
        }
        if n > 0 {
            self.fill.submit(n);
            self.in_flight += n;
        }
    }

    /// Reaps transmit completions back into `pool`.
    fn reap(&mut self, pool: &mut FramePool) {
        let n = self.comp.ready(u32::MAX);
        for i in 0..n {
            pool.free(self.comp.read_addr(i));
        }
        if n > 0 {
            self.comp.release(n);
            self.in_flight = self.in_flight.saturating_sub(n);
        }
    }

    /// `sendto` if the kernel asked for a TX kick.
    fn kick_tx(&mut self) {
        if !self.tx.needs_wakeup() {
            return;
        }
        self.counters.wakeups.add(1);
        // SAFETY: a zero-length sendto with no buffer or address: the
        // AF_XDP wake-up. Errors (EAGAIN, ENOBUFS, EBUSY, ENETDOWN) are
        // transient: frames stay queued and `service` kicks again.
        unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                std::ptr::null(),
                0,
                libc::MSG_DONTWAIT,
                std::ptr::null(),
                0,
            )
        };
    }
}

fn check_config(name: &str, c: &XskConfig) -> Result<(), XskError> {
    let bad = |reason: String| XskError::Config {
        ifname: name.to_owned(),
        reason,
    };
    for (ring, size) in [
        ("RX", c.rx_size),
        ("TX", c.tx_size),
        ("fill", c.fill_size),
        ("completion", c.comp_size),
    ] {
        if !size.is_power_of_two() {
            return Err(bad(format!(
                "{ring} ring size {size} is not a power of two"
            )));
        }
    }
    if c.fill_target > c.fill_size {
        return Err(bad(format!(
            "fill target {} exceeds the fill ring size {}",
            c.fill_target, c.fill_size
        )));
    }
    if c.bind_attempts == 0 {
        return Err(bad("bind_attempts must be at least 1".to_owned()));
    }
    Ok(())
}

impl Port for XskPort {
    fn name(&self) -> &str {
        &self.name
    }

    fn recv(&mut self, pool: &mut FramePool, out: &mut [Desc]) -> usize {
        if !self.owns(pool) {
            return 0;
        }
        let want = u32::try_from(out.len()).unwrap_or(u32::MAX);
        let n = self.rx.ready(want);
        for (i, d) in (0..n).zip(out.iter_mut()) {
            let (addr, len) = self.rx.read_desc(i);
            *d = Desc { addr, len };
        }
        if n > 0 {
            self.rx.release(n);
            self.in_flight = self.in_flight.saturating_sub(n);
        }
        self.rx_idle = n == 0;
        self.refill(pool);
        n as usize
    }

    fn send(&mut self, pool: &mut FramePool, descs: &[Desc]) -> usize {
        if !self.owns(pool) {
            return 0;
        }
        let want = u32::try_from(descs.len()).unwrap_or(u32::MAX);
        let room = self.tx.free(want).min(want);
        let mut written = 0;
        for d in &descs[..room as usize] {
            // The kernel skips (and never completes) a descriptor that is
            // empty or leaves its chunk: drop such a frame here instead.
            if d.len == 0 || pool.data(*d).is_none() {
                pool.free(d.addr);
                continue;
            }
            self.tx.write_desc(written, d.addr, d.len);
            written += 1;
        }
        if written > 0 {
            self.tx.submit(written);
            self.in_flight += written;
            self.kick_tx();
        }
        room as usize
    }

    fn service(&mut self, pool: &mut FramePool) {
        if !self.owns(pool) {
            return;
        }
        self.reap(pool);
        self.refill(pool);
        if self.tx.outstanding() > 0 {
            self.kick_tx();
        }
        if self.rx_idle && self.fill.needs_wakeup() {
            self.counters.wakeups.add(1);
            // SAFETY: a zero-length non-blocking recvfrom with no buffer or
            // address: the AF_XDP RX wake-up. Errors are transient.
            unsafe {
                libc::recvfrom(
                    self.fd.as_raw_fd(),
                    std::ptr::null_mut(),
                    0,
                    libc::MSG_DONTWAIT,
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                )
            };
        }
    }

    fn poll_fd(&self) -> Option<i32> {
        Some(self.raw_fd())
    }

    fn in_flight(&self) -> u32 {
        XskPort::in_flight(self)
    }

    fn close(&mut self, pool: &mut FramePool) {
        if !self.owns(pool) {
            return;
        }
        self.reap(pool);
        let rx = self.rx.ready(u32::MAX);
        for i in 0..rx {
            pool.free(self.rx.read_desc(i).0);
        }
        self.rx.release(rx);
        let fill = self.fill.outstanding();
        for i in 0..fill {
            pool.free(self.fill.outstanding_addr(i));
        }
        let tx = self.tx.outstanding();
        for i in 0..tx {
            pool.free(self.tx.outstanding_desc_addr(i));
        }
        self.in_flight = 0;
    }

    fn ring_counters(&self) -> Option<&PortCounters> {
        Some(self.counters())
    }
}
