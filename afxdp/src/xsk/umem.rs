//! UMEM registration and the raw socket calls behind [`super::XskPort`].
//!
//! One [`Umem`] per worker: its [`FramePool`]'s memory, registered with the
//! kernel on an AF_XDP socket. That socket becomes the worker's first port
//! (it binds without `XDP_SHARED_UMEM`); every later port opens a new socket
//! with its own fill and completion rings and binds with `XDP_SHARED_UMEM`
//! naming any live port of the same UMEM (the kernel only needs a *bound*
//! socket that uses it; ≥ 5.10 semantics). When every port is gone, the next
//! bind registers the memory again on a fresh socket.
//!
//! Drop order: ports unmap their rings, then close their socket; the kernel
//! keeps the UMEM alive (pinned pages) until the last socket using it closes.
//! The pool's memory must outlive every port, which is what
//! [`Umem::new`]'s safety contract says and the worker's field order
//! (ports before pool) provides. The `Umem` itself may drop at any time: it
//! only holds an unbound registration socket (if not yet claimed) and weak
//! references to the ports' sockets.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Weak};

use super::ring::RingMap;
use super::XskError;
use dataplane::frame::{FramePool, FRAME_SIZE};

/// A worker's frame memory registered as an AF_XDP UMEM.
pub struct Umem {
    base: usize,
    len: usize,
    /// The socket that registered the UMEM, until a port binds on it.
    owner: Option<OwnedFd>,
    /// Sockets of live ports (bound, sharing this UMEM).
    sockets: Vec<Weak<OwnedFd>>,
}

/// How a new port gets its socket.
pub(super) enum Claim {
    /// The registering socket: binds with its own flags.
    Owner(OwnedFd),
    /// A new socket sharing the UMEM of the bound socket `with`.
    Shared { fd: OwnedFd, with: Arc<OwnedFd> },
}

impl Umem {
    /// Registers `pool`'s memory as a UMEM (chunk size `FRAME_SIZE`, aligned
    /// mode, no UMEM headroom: see the module doc of `port::xsk` for where
    /// the kernel then places received data).
    ///
    /// # Safety
    /// The kernel writes received frames into `pool`'s memory for as long as
    /// any [`super::XskPort`] bound on this `Umem` lives: every such port
    /// must be dropped before `pool`, and ports must only ever be given this
    /// same `pool`.
    pub unsafe fn new(pool: &mut FramePool) -> Result<Umem, XskError> {
        let (ptr, len) = pool.region();
        let mut umem = Umem {
            base: ptr as usize,
            len,
            owner: None,
            sockets: Vec::new(),
        };
        umem.owner = Some(umem.register()?);
        Ok(umem)
    }

    /// Base address of the registered memory (to recognise its pool).
    pub fn base(&self) -> usize {
        self.base
    }

    /// Sockets bound on this UMEM that are still open.
    pub fn live_sockets(&self) -> usize {
        self.sockets.iter().filter(|w| w.strong_count() > 0).count()
    }

    fn register(&self) -> Result<OwnedFd, XskError> {
        let fd = xdp_socket().map_err(|e| XskError::umem("socket(AF_XDP)", e))?;
        let reg = libc::xdp_umem_reg {
            addr: self.base as u64,
            len: self.len as u64,
            chunk_size: FRAME_SIZE,
            headroom: 0,
            flags: 0,
            tx_metadata_len: 0,
        };
        setsockopt(&fd, libc::XDP_UMEM_REG, &reg)
            .map_err(|e| XskError::umem("setsockopt(XDP_UMEM_REG)", e))?;
        Ok(fd)
    }

    /// The socket for a new port: the registering socket if unclaimed, else a
    /// new one sharing a live port's UMEM, else a fresh registration.
    pub(super) fn claim(&mut self) -> Result<Claim, XskError> {
        if let Some(fd) = self.owner.take() {
            return Ok(Claim::Owner(fd));
        }
        self.sockets.retain(|w| w.strong_count() > 0);
        if let Some(with) = self.sockets.iter().find_map(Weak::upgrade) {
            let fd = xdp_socket().map_err(|e| XskError::umem("socket(AF_XDP)", e))?;
            return Ok(Claim::Shared { fd, with });
        }
        Ok(Claim::Owner(self.register()?))
    }

    /// Records a bound port's socket as one later ports may share from.
    pub(super) fn bound(&mut self, fd: &Arc<OwnedFd>) {
        self.sockets.push(Arc::downgrade(fd));
    }
}

/// A new `AF_XDP` socket.
pub(super) fn xdp_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain syscall with constant arguments.
    let fd = unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a new descriptor nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `setsockopt(fd, SOL_XDP, opt, value)`.
pub(super) fn setsockopt<T>(fd: &OwnedFd, opt: libc::c_int, value: &T) -> io::Result<()> {
    let len = libc::socklen_t::try_from(std::mem::size_of::<T>())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `value` points to `len` readable bytes for the call's duration.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_XDP,
            opt,
            std::ptr::from_ref(value).cast(),
            len,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The ring layout (`XDP_MMAP_OFFSETS`).
pub(super) fn mmap_offsets(fd: &OwnedFd) -> io::Result<libc::xdp_mmap_offsets> {
    // SAFETY: all-zero bytes are a valid `xdp_mmap_offsets` (plain u64s).
    let mut off: libc::xdp_mmap_offsets = unsafe { std::mem::zeroed() };
    let mut len = libc::socklen_t::try_from(std::mem::size_of::<libc::xdp_mmap_offsets>())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let expect = len;
    // SAFETY: `off` is writable for `len` bytes; the kernel writes at most
    // `len` bytes and updates `len`.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_XDP,
            libc::XDP_MMAP_OFFSETS,
            std::ptr::from_mut(&mut off).cast(),
            &mut len,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    if len != expect {
        // A pre-5.4 kernel without ring flags: need_wakeup is unusable.
        return Err(io::Error::from(io::ErrorKind::Unsupported));
    }
    Ok(off)
}

/// Maps one ring of `size` entries of `entry` bytes at page offset `pgoff`.
pub(super) fn map_ring(
    fd: &OwnedFd,
    pgoff: u64,
    off: &libc::xdp_ring_offset,
    size: u32,
    entry: usize,
) -> io::Result<RingMap> {
    let invalid = || io::Error::from(io::ErrorKind::InvalidData);
    let len = usize::try_from(off.desc)
        .ok()
        .and_then(|d| d.checked_add(size as usize * entry))
        .ok_or_else(invalid)?;
    let pgoff = libc::off_t::try_from(pgoff).map_err(|_| invalid())?;
    // SAFETY: a fresh shared mapping chosen by the kernel; no existing
    // memory is affected.
    let map = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_POPULATE,
            fd.as_raw_fd(),
            pgoff,
        )
    };
    if map == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `map` is a live mapping of `len` bytes of a ring of `size`
    // entries laid out as `off` (both from the kernel); RingMap takes it.
    match unsafe { RingMap::new(map, len, off, size) } {
        Some(ring) => Ok(ring),
        None => {
            // SAFETY: unmapping the mapping made above, not yet shared.
            unsafe { libc::munmap(map, len) };
            Err(invalid())
        }
    }
}

/// `bind(fd, sockaddr_xdp)`.
pub(super) fn bind(
    fd: &OwnedFd,
    ifindex: u32,
    queue: u32,
    flags: u16,
    shared: Option<RawFd>,
) -> io::Result<()> {
    let family =
        u16::try_from(libc::AF_XDP).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let addr = libc::sockaddr_xdp {
        sxdp_family: family,
        sxdp_flags: flags,
        sxdp_ifindex: ifindex,
        sxdp_queue_id: queue,
        sxdp_shared_umem_fd: shared.and_then(|f| u32::try_from(f).ok()).unwrap_or(0),
    };
    let len = libc::socklen_t::try_from(std::mem::size_of::<libc::sockaddr_xdp>())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `addr` is a valid sockaddr_xdp of `len` bytes.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            std::ptr::from_ref(&addr).cast::<libc::sockaddr>(),
            len,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
