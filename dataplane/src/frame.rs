//! Frames and the per-worker frame pool.
//!
//! A worker owns one pool (for AF_XDP: its UMEM) shared by all its ports, so
//! a frame received on one port is transmitted on another without a copy.
//! Frames are `FRAME_SIZE` chunks; received data starts `HEADROOM` bytes into
//! its chunk, leaving room to prepend a VXLAN header in place.
//!
//! Only the owning worker touches its pool: no locks, no atomics. The free
//! list is preallocated; `alloc`/`free` never allocate.

/// Size of one frame chunk.
pub const FRAME_SIZE: u32 = 2048;
/// Bytes reserved in front of received data (the kernel's
/// `XDP_PACKET_HEADROOM`): more than the 50 bytes VXLAN needs.
pub const HEADROOM: u32 = 256;
/// Largest frame a chunk can hold after the headroom.
pub const MAX_FRAME: u32 = FRAME_SIZE - HEADROOM;
/// Frames per burst: the pipeline's batch size.
pub const BATCH: usize = 64;

/// A frame descriptor: where the data starts in the pool and how long it is
/// (the layout of an AF_XDP ring descriptor).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Desc {
    pub addr: u64,
    pub len: u32,
}

impl Desc {
    /// Base address of the chunk holding this frame.
    #[inline]
    pub fn chunk(&self) -> u64 {
        self.addr - self.addr % u64::from(FRAME_SIZE)
    }

    /// Bytes free in front of the data within its chunk.
    #[inline]
    pub fn headroom(&self) -> u32 {
        // Below FRAME_SIZE by construction of the modulo.
        u32::try_from(self.addr % u64::from(FRAME_SIZE)).unwrap_or(0)
    }
}

/// Page-aligned, zeroed memory: what an AF_XDP UMEM must be registered on.
struct PageMemory {
    ptr: std::ptr::NonNull<u8>,
    len: usize,
}

const PAGE: usize = 4096;

impl PageMemory {
    fn new(len: usize) -> PageMemory {
        let len = len.max(PAGE).next_multiple_of(PAGE);
        let layout =
            std::alloc::Layout::from_size_align(len, PAGE).expect("frame pool size overflows");
        // SAFETY: the layout has a non-zero size (at least one page).
        let raw = unsafe { std::alloc::alloc_zeroed(layout) };
        let Some(ptr) = std::ptr::NonNull::new(raw) else {
            std::alloc::handle_alloc_error(layout)
        };
        PageMemory { ptr, len }
    }

    fn slice(&self) -> &[u8] {
        // SAFETY: `ptr` points to `len` initialised (zeroed) bytes owned by
        // `self`, alive until drop; the shared borrow of `self` prevents
        // writes through `slice_mut` meanwhile.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    fn slice_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `slice`, and `&mut self` makes the borrow unique.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for PageMemory {
    fn drop(&mut self) {
        if let Ok(layout) = std::alloc::Layout::from_size_align(self.len, PAGE) {
            // SAFETY: allocated in `new` with exactly this layout.
            unsafe { std::alloc::dealloc(self.ptr.as_ptr(), layout) };
        }
    }
}

// SAFETY: PageMemory owns its allocation exclusively (like a Box<[u8]>), so
// moving it to another thread is sound.
unsafe impl Send for PageMemory {}

/// A worker's frame memory and free list. The memory is page-aligned so it
/// can be registered as an AF_XDP UMEM; a port that registers it must be
/// dropped before the pool (the worker declares its ports first).
pub struct FramePool {
    mem: PageMemory,
    free: Vec<u64>,
    frames: u32,
}

impl FramePool {
    /// A pool of `frames` chunks, all free.
    pub fn new(frames: u32) -> FramePool {
        let size = frames as usize * FRAME_SIZE as usize;
        let free = (0..u64::from(frames))
            .rev()
            .map(|i| i * u64::from(FRAME_SIZE))
            .collect();
        FramePool {
            mem: PageMemory::new(size),
            free,
            frames,
        }
    }

    /// Takes a free chunk; returns its base address.
    #[inline]
    pub fn alloc(&mut self) -> Option<u64> {
        self.free.pop()
    }

    /// Returns the chunk holding `addr` to the free list.
    #[inline]
    pub fn free(&mut self, addr: u64) {
        let chunk = addr - addr % u64::from(FRAME_SIZE);
        if chunk < self.mem.len as u64 && self.free.len() < self.free.capacity() {
            self.free.push(chunk);
        }
    }

    /// Copies `data` into a free chunk after the headroom.
    #[inline]
    pub fn alloc_with(&mut self, data: &[u8]) -> Option<Desc> {
        let len = u32::try_from(data.len()).ok().filter(|&l| l <= MAX_FRAME)?;
        let chunk = self.alloc()?;
        let desc = Desc {
            addr: chunk + u64::from(HEADROOM),
            len,
        };
        match self.data_mut(desc) {
            Some(buf) => {
                buf.copy_from_slice(data);
                Some(desc)
            }
            None => {
                self.free(chunk);
                None
            }
        }
    }

    /// The bytes of a frame; `None` if the descriptor leaves its chunk.
    #[inline]
    pub fn data(&self, d: Desc) -> Option<&[u8]> {
        let (start, end) = self.bounds(d)?;
        self.mem.slice().get(start..end)
    }

    /// The bytes of a frame, writable.
    #[inline]
    pub fn data_mut(&mut self, d: Desc) -> Option<&mut [u8]> {
        let (start, end) = self.bounds(d)?;
        self.mem.slice_mut().get_mut(start..end)
    }

    fn bounds(&self, d: Desc) -> Option<(usize, usize)> {
        if u64::from(d.headroom()) + u64::from(d.len) > u64::from(FRAME_SIZE) {
            return None;
        }
        let start = usize::try_from(d.addr).ok()?;
        Some((start, start.checked_add(d.len as usize)?))
    }

    /// Start and length of the pool's memory, for UMEM registration.
    pub fn region(&mut self) -> (*mut u8, usize) {
        (self.mem.ptr.as_ptr(), self.mem.len)
    }

    /// Frames currently free.
    pub fn free_count(&self) -> u32 {
        u32::try_from(self.free.len()).unwrap_or(u32::MAX)
    }

    /// Frames in the pool.
    pub fn total(&self) -> u32 {
        self.frames
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alloc_free_and_bounds() {
        let mut pool = FramePool::new(2);
        let a = pool.alloc_with(&[1, 2, 3]).unwrap();
        assert_eq!(a.headroom(), HEADROOM);
        assert_eq!(pool.data(a).unwrap(), &[1, 2, 3]);
        let _b = pool.alloc_with(&[4]).unwrap();
        assert!(pool.alloc_with(&[5]).is_none(), "pool exhausted");
        pool.free(a.addr);
        assert_eq!(pool.free_count(), 1);
        assert!(pool.alloc_with(&vec![0; MAX_FRAME as usize + 1]).is_none());
        let past_chunk = Desc {
            addr: a.addr,
            len: FRAME_SIZE,
        };
        assert!(pool.data(past_chunk).is_none());
        let past_pool = Desc {
            addr: 10 * u64::from(FRAME_SIZE),
            len: 10,
        };
        assert!(pool.data(past_pool).is_none());
    }

    #[test]
    fn free_list_never_exceeds_the_pool() {
        let mut pool = FramePool::new(1);
        let a = pool.alloc().unwrap();
        pool.free(a);
        pool.free(a);
        assert_eq!(pool.free_count(), 1);
    }
}
