//! Frames and the per-worker frame pool.
//!
//! A worker owns one pool (for AF_XDP: its UMEM) shared by all its ports, so
//! a frame received on one port is transmitted on another without a copy.
//! Frames are `FRAME_SIZE` chunks; received data starts `HEADROOM` bytes into
//! its chunk, leaving room to prepend a VXLAN header in place.
//!
//! Super-packets (up to 64 KB, from offload-aware TAP ports) live in large
//! chunks of their own memory, at addresses from [`LARGE_BASE`] on, so the
//! UMEM stays as AF_XDP wants it. Each large chunk carries the virtio-net
//! header its frame came with ([`FramePool::vnet`]): what the sender left
//! for the egress to finish (segmentation, a partial checksum). A small
//! frame has none: it is whole and fully checksummed.
//!
//! Only the owning worker touches its pool: no locks, no atomics. The free
//! list is preallocated; `alloc`/`free` never allocate.

use crate::wire::vnet::VnetHeader;

/// Size of one frame chunk.
pub const FRAME_SIZE: u32 = 2048;
/// Bytes reserved in front of received data (the kernel's
/// `XDP_PACKET_HEADROOM`): more than the 50 bytes VXLAN needs.
pub const HEADROOM: u32 = 256;
/// Largest frame a chunk can hold after the headroom.
pub const MAX_FRAME: u32 = FRAME_SIZE - HEADROOM;
/// Frames per burst: the pipeline's batch size.
pub const BATCH: usize = 64;
/// Size of one large chunk: a 64 KB super-packet with its Ethernet header
/// after the headroom.
pub const LARGE_FRAME_SIZE: u32 = 72 * 1024;
/// Largest frame a large chunk holds after the headroom.
pub const MAX_LARGE_FRAME: u32 = LARGE_FRAME_SIZE - HEADROOM;
/// Where large chunks' addresses start (far past any UMEM).
pub const LARGE_BASE: u64 = 1 << 40;
/// Large chunks of a worker's pool: a burst of super-packets from each of
/// a few TAP ports (a port's frames are sent or freed within its burst).
pub const LARGE_FRAMES: u32 = 128;

/// A frame descriptor: where the data starts in the pool and how long it is
/// (the layout of an AF_XDP ring descriptor).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Desc {
    pub addr: u64,
    pub len: u32,
}

impl Desc {
    /// Whether the frame is in a large chunk (a super-packet, or a frame
    /// from a TAP port).
    #[inline]
    pub fn is_large(&self) -> bool {
        self.addr >= LARGE_BASE
    }

    /// Size of the chunk holding this frame.
    #[inline]
    pub fn chunk_size(&self) -> u32 {
        if self.is_large() {
            LARGE_FRAME_SIZE
        } else {
            FRAME_SIZE
        }
    }

    /// Base address of the chunk holding this frame.
    #[inline]
    pub fn chunk(&self) -> u64 {
        self.addr - u64::from(self.headroom())
    }

    /// Bytes free in front of the data within its chunk.
    #[inline]
    pub fn headroom(&self) -> u32 {
        // Each modulo by its own constant: a mask for the small chunks (the
        // per-packet case), not a division by a size chosen at run time.
        let offset = if self.is_large() {
            (self.addr - LARGE_BASE) % u64::from(LARGE_FRAME_SIZE)
        } else {
            self.addr % u64::from(FRAME_SIZE)
        };
        // Below the chunk size by construction of the modulo.
        u32::try_from(offset).unwrap_or(0)
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
    large: Large,
}

/// The large chunks: their memory (touched only as far as frames reach),
/// free list and each one's virtio-net header.
struct Large {
    mem: PageMemory,
    free: Vec<u64>,
    vnet: Vec<VnetHeader>,
}

impl Large {
    fn new(frames: u32) -> Large {
        let size = frames as usize * LARGE_FRAME_SIZE as usize;
        Large {
            // A zeroed allocation this large is mapped on demand: chunks
            // never used cost no memory.
            mem: PageMemory::new(size),
            free: chunk_addresses(frames, LARGE_BASE, LARGE_FRAME_SIZE),
            vnet: vec![VnetHeader::default(); frames as usize],
        }
    }

    fn index(&self, addr: u64) -> Option<usize> {
        let offset = addr.checked_sub(LARGE_BASE)?;
        let index = usize::try_from(offset / u64::from(LARGE_FRAME_SIZE)).ok()?;
        (index < self.vnet.len()).then_some(index)
    }
}

/// Base addresses of `frames` chunks of `size` from `base`, the lowest last
/// (a free list pops it first).
fn chunk_addresses(frames: u32, base: u64, size: u32) -> Vec<u64> {
    (0..u64::from(frames))
        .rev()
        .map(|i| base + i * u64::from(size))
        .collect()
}

impl FramePool {
    /// A pool of `frames` chunks, all free, and no large chunks.
    pub fn new(frames: u32) -> FramePool {
        FramePool::with_large(frames, 0)
    }

    /// A pool of `frames` chunks and `large` large chunks, all free.
    pub fn with_large(frames: u32, large: u32) -> FramePool {
        let size = frames as usize * FRAME_SIZE as usize;
        FramePool {
            mem: PageMemory::new(size),
            free: chunk_addresses(frames, 0, FRAME_SIZE),
            frames,
            large: Large::new(large),
        }
    }

    /// Takes a free chunk; returns its base address.
    #[inline]
    pub fn alloc(&mut self) -> Option<u64> {
        self.free.pop()
    }

    /// Takes a free large chunk, its virtio-net header cleared; returns its
    /// base address.
    #[inline]
    pub fn alloc_large(&mut self) -> Option<u64> {
        let chunk = self.large.free.pop()?;
        if let Some(i) = self.large.index(chunk) {
            self.large.vnet[i] = VnetHeader::default();
        }
        Some(chunk)
    }

    /// Returns the chunk holding `addr` (small or large) to its free list.
    #[inline]
    pub fn free(&mut self, addr: u64) {
        let chunk = Desc { addr, len: 0 }.chunk();
        if addr >= LARGE_BASE {
            let large = &mut self.large;
            if large.index(chunk).is_some() && large.free.len() < large.free.capacity() {
                large.free.push(chunk);
            }
        } else if chunk < self.mem.len as u64 && self.free.len() < self.free.capacity() {
            self.free.push(chunk);
        }
    }

    /// The virtio-net header of a large frame (none, all zero, for a small
    /// one or an address outside the pool).
    #[inline]
    pub fn vnet(&self, d: Desc) -> VnetHeader {
        self.large
            .index(d.addr)
            .map_or_else(VnetHeader::default, |i| self.large.vnet[i])
    }

    /// Sets the virtio-net header of a large frame; false (nothing kept)
    /// for a small one.
    #[inline]
    pub fn set_vnet(&mut self, d: Desc, header: VnetHeader) -> bool {
        match self.large.index(d.addr) {
            Some(i) => {
                self.large.vnet[i] = header;
                true
            }
            None => false,
        }
    }

    /// Copies `data` into a free chunk after the headroom.
    #[inline]
    pub fn alloc_with(&mut self, data: &[u8]) -> Option<Desc> {
        let len = u32::try_from(data.len()).ok().filter(|&l| l <= MAX_FRAME)?;
        let chunk = self.alloc()?;
        self.fill_chunk(chunk, data, len)
    }

    /// Puts `data` (`len` bytes) into `chunk` after the headroom; gives the
    /// chunk back if it does not fit.
    #[inline]
    fn fill_chunk(&mut self, chunk: u64, data: &[u8], len: u32) -> Option<Desc> {
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

    /// Copies `data` into a free large chunk after the headroom, with
    /// virtio-net header `vnet`.
    pub fn alloc_large_with(&mut self, data: &[u8], vnet: VnetHeader) -> Option<Desc> {
        let len = u32::try_from(data.len())
            .ok()
            .filter(|&l| l <= MAX_LARGE_FRAME)?;
        let chunk = self.alloc_large()?;
        let desc = self.fill_chunk(chunk, data, len)?;
        self.set_vnet(desc, vnet);
        Some(desc)
    }

    /// A large frame to read while small chunks are taken and written
    /// (segmenting it, or copying it out for an AF_XDP port): the two live
    /// in different memory.
    pub fn split_large(&mut self, d: Desc) -> Option<(&[u8], SmallChunks<'_>)> {
        if !d.is_large() {
            return None;
        }
        let (_, start, end) = Self::bounds(d)?;
        let data = self.large.mem.slice().get(start..end)?;
        Some((
            data,
            SmallChunks {
                mem: &mut self.mem,
                free: &mut self.free,
            },
        ))
    }

    /// A small frame to read while a large one is written (coalescing
    /// segments into a super-packet): `small`'s bytes and `large`'s.
    pub fn small_into_large(&mut self, small: Desc, large: Desc) -> Option<(&[u8], &mut [u8])> {
        if small.is_large() || !large.is_large() {
            return None;
        }
        let (_, s0, s1) = Self::bounds(small)?;
        let (_, l0, l1) = Self::bounds(large)?;
        let from = self.mem.slice().get(s0..s1)?;
        let to = self.large.mem.slice_mut().get_mut(l0..l1)?;
        Some((from, to))
    }

    /// The bytes of a frame; `None` if the descriptor leaves its chunk.
    #[inline]
    pub fn data(&self, d: Desc) -> Option<&[u8]> {
        if d.is_large() {
            return self.large_data(d);
        }
        let (start, end) = Self::small_bounds(d)?;
        self.mem.slice().get(start..end)
    }

    /// The bytes of a frame, writable.
    #[inline]
    pub fn data_mut(&mut self, d: Desc) -> Option<&mut [u8]> {
        if d.is_large() {
            return self.large_data_mut(d);
        }
        let (start, end) = Self::small_bounds(d)?;
        self.mem.slice_mut().get_mut(start..end)
    }

    /// [`FramePool::data`] of a large frame (out of line: the per-packet
    /// path is the small frames').
    #[inline(never)]
    fn large_data(&self, d: Desc) -> Option<&[u8]> {
        let (_, start, end) = Self::bounds(d)?;
        self.large.mem.slice().get(start..end)
    }

    #[inline(never)]
    fn large_data_mut(&mut self, d: Desc) -> Option<&mut [u8]> {
        let (_, start, end) = Self::bounds(d)?;
        self.large.mem.slice_mut().get_mut(start..end)
    }

    /// Where a small frame is in the small-chunk memory.
    #[inline]
    fn small_bounds(d: Desc) -> Option<(usize, usize)> {
        let headroom = d.addr % u64::from(FRAME_SIZE);
        if headroom + u64::from(d.len) > u64::from(FRAME_SIZE) {
            return None;
        }
        let start = usize::try_from(d.addr).ok()?;
        Some((start, start.checked_add(d.len as usize)?))
    }

    /// Which memory holds `d`, and where in it.
    #[inline]
    fn bounds(d: Desc) -> Option<(bool, usize, usize)> {
        let large = d.is_large();
        let (offset, size) = if large {
            (d.addr - LARGE_BASE, LARGE_FRAME_SIZE)
        } else {
            (d.addr, FRAME_SIZE)
        };
        if u64::from(d.headroom()) + u64::from(d.len) > u64::from(size) {
            return None;
        }
        let start = usize::try_from(offset).ok()?;
        Some((large, start, start.checked_add(d.len as usize)?))
    }

    /// Start and length of the pool's small-chunk memory, for UMEM
    /// registration.
    pub fn region(&mut self) -> (*mut u8, usize) {
        (self.mem.ptr.as_ptr(), self.mem.len)
    }

    /// Frames currently free, small and large.
    pub fn free_count(&self) -> u32 {
        u32::try_from(self.free.len() + self.large.free.len()).unwrap_or(u32::MAX)
    }

    /// Frames in the pool, small and large.
    pub fn total(&self) -> u32 {
        self.frames + self.large_total()
    }

    /// Large chunks in the pool.
    pub fn large_total(&self) -> u32 {
        u32::try_from(self.large.vnet.len()).unwrap_or(u32::MAX)
    }
}

/// The small chunks of a pool, borrowed beside one of its large frames
/// ([`FramePool::split_large`]).
pub struct SmallChunks<'a> {
    mem: &'a mut PageMemory,
    free: &'a mut Vec<u64>,
}

impl SmallChunks<'_> {
    /// Takes a free chunk for a frame of `len` bytes after the headroom:
    /// its descriptor and its bytes to write.
    #[inline]
    pub fn alloc(&mut self, len: usize) -> Option<(Desc, &mut [u8])> {
        let len32 = u32::try_from(len).ok().filter(|&l| l <= MAX_FRAME)?;
        let chunk = self.free.pop()?;
        let start = usize::try_from(chunk + u64::from(HEADROOM)).ok()?;
        let desc = Desc {
            addr: chunk + u64::from(HEADROOM),
            len: len32,
        };
        match self.mem.slice_mut().get_mut(start..start + len) {
            Some(buf) => Some((desc, buf)),
            None => {
                self.free.push(chunk);
                None
            }
        }
    }

    /// Gives back a chunk taken with [`SmallChunks::alloc`] and not used.
    #[inline]
    pub fn give_back(&mut self, d: Desc) {
        if self.free.len() < self.free.capacity() {
            self.free.push(d.chunk());
        }
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
    fn large_chunks_hold_super_packets_and_their_headers() {
        let mut pool = FramePool::with_large(1, 2);
        assert_eq!(pool.total(), 3);
        let chunk = pool.alloc_large().unwrap();
        let d = Desc {
            addr: chunk + u64::from(HEADROOM),
            len: MAX_LARGE_FRAME,
        };
        assert!(d.is_large());
        assert_eq!(d.chunk(), chunk);
        assert_eq!(d.headroom(), HEADROOM);
        pool.data_mut(d).unwrap().fill(7);
        assert!(pool.data(d).unwrap().iter().all(|&b| b == 7));
        let header = VnetHeader {
            gso_size: 1448,
            ..VnetHeader::default()
        };
        assert!(pool.set_vnet(d, header));
        assert_eq!(pool.vnet(d).gso_size, 1448);
        let small = pool.alloc_with(&[1]).unwrap();
        assert!(!pool.set_vnet(small, header), "small frames carry none");
        assert_eq!(pool.vnet(small), VnetHeader::default());
        let past = Desc {
            len: MAX_LARGE_FRAME + 1,
            ..d
        };
        assert!(pool.data(past).is_none(), "past the large chunk");
        let outside = Desc {
            addr: LARGE_BASE + 2 * u64::from(LARGE_FRAME_SIZE),
            len: 1,
        };
        assert!(pool.data(outside).is_none(), "past the large memory");
        pool.free(d.addr);
        pool.free(outside.addr);
        assert_eq!(pool.free_count(), 2);
        let again = pool.alloc_large().unwrap();
        assert_eq!(
            pool.vnet(Desc {
                addr: again,
                len: 0
            }),
            VnetHeader::default(),
            "a reused chunk starts without a header"
        );
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
