//! The TAP pod port: a multi-queue TAP device whose frames carry a
//! virtio-net header, so a pod's stack hands the switch 64 KB TCP
//! super-packets with partial checksums (TSO and checksum offload towards
//! the TAP) and takes them back whole.
//!
//! [`TapDevice::create`] opens one queue per worker (`IFF_TAP | IFF_NO_PI |
//! IFF_VNET_HDR | IFF_MULTI_QUEUE`, non-blocking), sets the device's
//! offloads (`TUNSETOFFLOAD`: checksum, TSO4, TSO6; not USO, which the
//! switch does not segment yet) and a little-endian header (`TUNSETVNETLE`),
//! and makes the device persistent so it outlives an agent restart (the
//! successor opens it again by name). The netdev can then be moved into the
//! pod's namespace; the queues' descriptors keep working there.
//!
//! A [`TapQueue`] is a [`Port`]: `recv` reads one frame per `readv` (header
//! and frame into a large chunk of the pool, the header kept beside it for
//! the pipeline to check), `send` writes one per `writev` (the header the
//! frame's offloads call for, then the frame) and frees it at once. Idle
//! queues cost no system call: the queues of one worker are registered with
//! its [`TapReadiness`], whose one `epoll_wait` per round marks the queues
//! that have frames; a queue reads only when marked, until the device says
//! EAGAIN.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use dataplane::frame::{Desc, FramePool, HEADROOM, MAX_LARGE_FRAME};
use dataplane::gso;
use dataplane::port::{Port, Readiness};
use dataplane::wire::vnet::{VnetHeader, VNET_HDR_LEN};

/// Offloads asked of every TAP device.
const OFFLOADS: libc::c_uint = libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6;
/// Bytes one queue reads per burst (about four 64 KB super-packets): a pod
/// writing faster than the switch drains takes this share of a worker's
/// round and no more, and the segments a burst makes for the uplink stay
/// within what its rings and the next node take at once.
pub const BURST_BYTES: usize = 256 * 1024;
/// Largest super-packet the pod's stack may build (the device's
/// `gso_max_size`): a 64 KB packet plus the switch's VXLAN headers must
/// still fit an IPv4 total length.
pub const GSO_MAX_SIZE: u32 = 65_536 - 128;

/// Why a TAP device could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("TAP device {name}: {step} failed: {source}")]
pub struct TapError {
    pub name: String,
    pub step: &'static str,
    #[source]
    pub source: io::Error,
}

/// The queues of one TAP device, before they go to the workers.
pub struct TapDevice {
    pub name: String,
    pub queues: Vec<OwnedFd>,
}

impl TapDevice {
    /// Creates (or opens again, if it persists) TAP device `name` with
    /// `queues` queues in the calling thread's network namespace.
    pub fn create(name: &str, queues: u32) -> Result<TapDevice, TapError> {
        let fail = |step: &'static str| {
            let source = io::Error::last_os_error();
            move || TapError {
                name: name.to_owned(),
                step,
                source,
            }
        };
        let mut fds = Vec::new();
        for q in 0..queues.max(1) {
            // SAFETY: a NUL-terminated path and plain flags.
            let raw = unsafe {
                libc::open(
                    c"/dev/net/tun".as_ptr(),
                    libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC,
                )
            };
            if raw < 0 {
                return Err(fail("open /dev/net/tun")());
            }
            // SAFETY: `raw` is a descriptor just opened and owned by nobody.
            let fd = unsafe { OwnedFd::from_raw_fd(raw) };
            let mut req = ifreq(name).map_err(|source| TapError {
                name: name.to_owned(),
                step: "name",
                source,
            })?;
            let flags =
                libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR | libc::IFF_MULTI_QUEUE;
            req.ifr_ifru.ifru_flags = i16::try_from(flags).unwrap_or(0);
            // SAFETY: TUNSETIFF reads (and writes back) one ifreq.
            if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF, &mut req) } < 0 {
                return Err(fail("TUNSETIFF")());
            }
            if q == 0 {
                set_int(&fd, libc::TUNSETVNETLE, 1).map_err(|_| fail("TUNSETVNETLE")())?;
                // SAFETY: TUNSETOFFLOAD takes its flags by value.
                if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETOFFLOAD, OFFLOADS) } < 0 {
                    return Err(fail("TUNSETOFFLOAD")());
                }
                // SAFETY: TUNSETPERSIST takes its flag by value.
                if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETPERSIST, 1) } < 0 {
                    return Err(fail("TUNSETPERSIST")());
                }
            }
            fds.push(fd);
        }
        Ok(TapDevice {
            name: name.to_owned(),
            queues: fds,
        })
    }

    /// A device holding a duplicate of queue 0's descriptor only (the same
    /// open queue): enough to make the device non-persistent later.
    pub fn duplicate(&self) -> Result<TapDevice, TapError> {
        let fd = self.queues.first().map(|q| q.try_clone()).transpose();
        let fd = fd.map_err(|source| TapError {
            name: self.name.clone(),
            step: "dup",
            source,
        })?;
        Ok(TapDevice {
            name: self.name.clone(),
            queues: fd.into_iter().collect(),
        })
    }

    /// Makes the device non-persistent: it goes when its last queue closes.
    pub fn release(&self) -> Result<(), TapError> {
        let Some(fd) = self.queues.first() else {
            return Ok(());
        };
        // SAFETY: TUNSETPERSIST takes its flag by value.
        if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETPERSIST, 0) } < 0 {
            return Err(TapError {
                name: self.name.clone(),
                step: "TUNSETPERSIST",
                source: io::Error::last_os_error(),
            });
        }
        Ok(())
    }
}

fn ifreq(name: &str) -> io::Result<libc::ifreq> {
    let c = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let bytes = c.as_bytes_with_nul();
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    if bytes.len() > req.ifr_name.len() {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    for (dst, src) in req.ifr_name.iter_mut().zip(bytes) {
        *dst = libc::c_char::from_ne_bytes([*src]);
    }
    Ok(req)
}

fn set_int(fd: &OwnedFd, request: libc::Ioctl, value: libc::c_int) -> io::Result<()> {
    // SAFETY: these TUN ioctls read one int through the pointer.
    if unsafe { libc::ioctl(fd.as_raw_fd(), request, &value) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The readiness of one worker's TAP queues: an epoll descriptor they are
/// registered with (level-triggered) and a flag per queue.
pub struct TapReadiness {
    inner: Arc<ReadinessInner>,
    events: Vec<libc::epoll_event>,
}

struct ReadinessInner {
    epoll: OwnedFd,
    /// Which tokens are taken (registration and release only).
    taken: Mutex<Vec<bool>>,
    /// Each token's flag, read and cleared by its queue, set by `refresh`.
    flags: Box<[Arc<AtomicBool>]>,
    /// Queues registered: with none, a round asks nothing.
    registered: AtomicUsize,
}

/// Queues one worker's readiness can hold.
pub const MAX_TAP_QUEUES: usize = 1024;

impl TapReadiness {
    /// A readiness set for up to [`MAX_TAP_QUEUES`] queues.
    pub fn new() -> io::Result<TapReadiness> {
        // SAFETY: epoll_create1 takes flags only.
        let raw = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a descriptor just created and owned by nobody.
        let epoll = unsafe { OwnedFd::from_raw_fd(raw) };
        Ok(TapReadiness {
            inner: Arc::new(ReadinessInner {
                epoll,
                taken: Mutex::new(vec![false; MAX_TAP_QUEUES]),
                flags: (0..MAX_TAP_QUEUES)
                    .map(|_| Arc::new(AtomicBool::new(false)))
                    .collect(),
                registered: AtomicUsize::new(0),
            }),
            events: vec![libc::epoll_event { events: 0, u64: 0 }; 64],
        })
    }

    /// A handle to register queues with from another thread.
    pub fn registrar(&self) -> TapRegistrar {
        TapRegistrar {
            inner: self.inner.clone(),
        }
    }
}

impl Readiness for TapReadiness {
    fn refresh(&mut self) {
        if self.inner.registered.load(Ordering::Relaxed) == 0 {
            return;
        }
        let max = i32::try_from(self.events.len()).unwrap_or(i32::MAX);
        // SAFETY: `events` holds `max` entries for the kernel to write.
        let n = unsafe {
            libc::epoll_wait(
                self.inner.epoll.as_raw_fd(),
                self.events.as_mut_ptr(),
                max,
                0,
            )
        };
        for e in self.events.iter().take(usize::try_from(n).unwrap_or(0)) {
            let token = usize::try_from(e.u64).unwrap_or(usize::MAX);
            if let Some(flag) = self.inner.flags.get(token) {
                flag.store(true, Ordering::Relaxed);
            }
        }
    }

    fn fd(&self) -> Option<RawFd> {
        Some(self.inner.epoll.as_raw_fd())
    }
}

/// Registers TAP queues with a worker's [`TapReadiness`].
#[derive(Clone)]
pub struct TapRegistrar {
    inner: Arc<ReadinessInner>,
}

impl TapRegistrar {
    /// Wraps queue `fd` of device `name` as a port whose reads wait for
    /// the worker's readiness.
    pub fn queue(&self, name: &str, fd: OwnedFd) -> io::Result<TapQueue> {
        let token = {
            let mut taken = self
                .inner
                .taken
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let token = taken
                .iter()
                .position(|t| !t)
                .ok_or_else(|| io::Error::other("a worker serves at most 1024 TAP queues"))?;
            taken[token] = true;
            self.inner.registered.fetch_add(1, Ordering::Relaxed);
            token
        };
        let flag = self.inner.flags[token].clone();
        // Anything queued before registration is read on the first round.
        flag.store(true, Ordering::Relaxed);
        let mut event = libc::epoll_event {
            events: u32::try_from(libc::EPOLLIN).unwrap_or(1),
            u64: token as u64,
        };
        // SAFETY: both descriptors are open; `event` is read by the kernel.
        let rc = unsafe {
            libc::epoll_ctl(
                self.inner.epoll.as_raw_fd(),
                libc::EPOLL_CTL_ADD,
                fd.as_raw_fd(),
                &mut event,
            )
        };
        if rc < 0 {
            let e = io::Error::last_os_error();
            self.free(token);
            return Err(e);
        }
        Ok(TapQueue {
            name: name.to_owned(),
            fd,
            flag,
            token,
            registrar: self.clone(),
            failed: false,
        })
    }

    fn free(&self, token: usize) {
        let mut taken = self
            .inner
            .taken
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(t) = taken.get_mut(token).filter(|t| **t) {
            *t = false;
            self.inner.registered.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// One queue of a TAP device, as a switch port.
pub struct TapQueue {
    name: String,
    fd: OwnedFd,
    flag: Arc<AtomicBool>,
    token: usize,
    registrar: TapRegistrar,
    /// A read failed for good (the device is gone).
    failed: bool,
}

impl Drop for TapQueue {
    fn drop(&mut self) {
        // SAFETY: both descriptors are open; DEL ignores the event.
        unsafe {
            libc::epoll_ctl(
                self.registrar.inner.epoll.as_raw_fd(),
                libc::EPOLL_CTL_DEL,
                self.fd.as_raw_fd(),
                std::ptr::null_mut(),
            );
        }
        self.registrar.free(self.token);
    }
}

impl Port for TapQueue {
    fn name(&self) -> &str {
        &self.name
    }

    fn recv(&mut self, pool: &mut FramePool, out: &mut [Desc]) -> usize {
        if self.failed || !self.flag.load(Ordering::Relaxed) {
            return 0;
        }
        let mut n = 0;
        let mut bytes = 0;
        while n < out.len() && bytes < BURST_BYTES {
            let Some(chunk) = pool.alloc_large() else {
                break; // frames stay queued in the device
            };
            let desc = Desc {
                addr: chunk + u64::from(HEADROOM),
                len: MAX_LARGE_FRAME,
            };
            let mut header = [0u8; VNET_HDR_LEN];
            let got = match pool.data_mut(desc) {
                Some(buf) => read_frame(&self.fd, &mut header, buf),
                None => Err(io::Error::from(io::ErrorKind::InvalidData)),
            };
            match got {
                Ok(len) => {
                    // A read shorter than the header arrives empty: the
                    // pipeline drops it as truncated.
                    let frame_len = len.saturating_sub(VNET_HDR_LEN);
                    let d = Desc {
                        len: u32::try_from(frame_len).unwrap_or(0),
                        ..desc
                    };
                    if let Ok(h) = VnetHeader::parse(&header) {
                        pool.set_vnet(d, h);
                    }
                    out[n] = d;
                    n += 1;
                    bytes += frame_len;
                }
                Err(e) => {
                    pool.free(chunk);
                    // Drained; or the device is gone (its namespace was
                    // deleted): reads stop for good, until the plugin's DEL
                    // or GC detaches the port.
                    self.flag.store(false, Ordering::Relaxed);
                    if e.kind() != io::ErrorKind::WouldBlock {
                        self.failed = true;
                    }
                    break;
                }
            }
        }
        n
    }

    fn send(&mut self, pool: &mut FramePool, descs: &[Desc]) -> usize {
        let mut sent = 0;
        for d in descs {
            let Some(frame) = pool.data(*d) else {
                pool.free(d.addr);
                sent += 1;
                continue;
            };
            let header = gso::egress_header(frame, &pool.vnet(*d)).unwrap_or_default();
            let mut bytes = [0u8; VNET_HDR_LEN];
            let _ = header.emit(&mut bytes);
            match write_frame(&self.fd, &bytes, frame) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                // Written, or refused by the device for good (too large,
                // the link down): either way the frame is done.
                _ => {
                    pool.free(d.addr);
                    sent += 1;
                }
            }
        }
        sent
    }

    // No poll_fd: the worker sleeps on its readiness's epoll descriptor.

    fn offloads(&self) -> bool {
        true
    }
}

fn read_frame(fd: &OwnedFd, header: &mut [u8], buf: &mut [u8]) -> io::Result<usize> {
    let iov = [
        libc::iovec {
            iov_base: header.as_mut_ptr().cast(),
            iov_len: header.len(),
        },
        libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        },
    ];
    // SAFETY: both iovecs point into live, writable buffers of their lengths.
    let n = unsafe { libc::readv(fd.as_raw_fd(), iov.as_ptr(), 2) };
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

fn write_frame(fd: &OwnedFd, header: &[u8], frame: &[u8]) -> io::Result<usize> {
    let iov = [
        libc::iovec {
            iov_base: header.as_ptr().cast_mut().cast(),
            iov_len: header.len(),
        },
        libc::iovec {
            iov_base: frame.as_ptr().cast_mut().cast(),
            iov_len: frame.len(),
        },
    ];
    // SAFETY: both iovecs point into live buffers; writev only reads them.
    let n = unsafe { libc::writev(fd.as_raw_fd(), iov.as_ptr(), 2) };
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}
