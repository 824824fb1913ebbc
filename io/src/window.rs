//! Page-aligned window buffers and filling them from a plan.

use std::alloc::{Layout, alloc_zeroed, dealloc};

use crate::layout::Piece;

/// Alignment of window buffers: enough for O_DIRECT on every common device.
pub const ALIGN: usize = 4096;

/// A heap buffer aligned to [`ALIGN`], never moved while I/O targets it.
pub struct AlignedBuf {
    ptr: *mut u8,
    cap: usize,
}

// SAFETY: the buffer is plain memory owned by this value; access is coordinated by its owner.
unsafe impl Send for AlignedBuf {}

impl AlignedBuf {
    /// A zeroed buffer of `cap` bytes (`cap` a multiple of [`ALIGN`]).
    pub fn new(cap: usize) -> AlignedBuf {
        let layout = Layout::from_size_align(cap, ALIGN).expect("valid window layout");
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { alloc_zeroed(layout) };
        assert!(!ptr.is_null(), "out of memory allocating a {cap}-byte window");
        AlignedBuf { ptr, cap }
    }
    /// Raw pointer for the kernel.
    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.ptr
    }
    /// The whole buffer.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: `ptr` is valid for `cap` bytes for the lifetime of `self`.
        unsafe { std::slice::from_raw_parts(self.ptr, self.cap) }
    }
    /// The whole buffer, mutably.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as above, and `&mut self` makes the access exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.cap) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this exact layout.
        unsafe {
            dealloc(
                self.ptr,
                Layout::from_size_align(self.cap, ALIGN).expect("valid window layout"),
            )
        }
    }
}

/// A file read a window needs: `len` bytes at `file_off` into the window at `buf_off`.
pub struct ReadReq {
    /// The file.
    pub file: std::sync::Arc<std::fs::File>,
    /// Offset in the file.
    pub file_off: u64,
    /// Offset in the window.
    pub buf_off: usize,
    /// Bytes to read.
    pub len: usize,
}

/// Walks the plan window by window.
pub struct Planner {
    pieces: Vec<Piece>,
    next: usize,
    /// Total archive size.
    pub size: u64,
    window: usize,
}

impl Planner {
    /// A planner over `pieces` (sorted, contiguous, covering `[0, size)`).
    pub fn new(pieces: Vec<Piece>, size: u64, window: usize) -> Self {
        Planner {
            pieces,
            next: 0,
            size,
            window,
        }
    }

    /// Number of windows.
    pub fn windows(&self) -> u64 {
        self.size.div_ceil(self.window as u64)
    }

    /// Fills window `w` into `buf`: copies memory pieces, zeroes padding, and returns the file
    /// reads still needed and the window's length. Windows must be requested in order.
    pub fn fill(&mut self, w: u64, buf: &mut [u8]) -> (Vec<ReadReq>, usize) {
        let start = w * self.window as u64;
        let end = (start + self.window as u64).min(self.size);
        let mut reads = Vec::new();
        let mut i = self.next;
        while i < self.pieces.len() && self.pieces[i].off() < end {
            let p = &self.pieces[i];
            let (ps, pe) = (p.off(), p.off() + p.len());
            let (s, e) = (ps.max(start), pe.min(end));
            if s < e {
                let dst = (s - start) as usize..(e - start) as usize;
                match p {
                    Piece::Bytes { data, .. } => buf[dst].copy_from_slice(&data[(s - ps) as usize..(e - ps) as usize]),
                    Piece::Zero { .. } => buf[dst].fill(0),
                    Piece::File { file, file_off, .. } => reads.push(ReadReq {
                        file: file.clone(),
                        file_off: file_off + (s - ps),
                        buf_off: dst.start,
                        len: dst.len(),
                    }),
                }
            }
            if pe <= end {
                i += 1;
            } else {
                break;
            }
        }
        self.next = i;
        (reads, (end - start) as usize)
    }
}
