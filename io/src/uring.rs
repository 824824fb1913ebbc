//! The io_uring path: up to [`WINDOWS`] windows in flight, their file reads and the writes of
//! finished windows submitted together from one thread.
//!
//! Windows are hashed and emitted strictly in archive order; a window's buffer is reused only
//! after its write completed. Every buffer the kernel may still touch outlives the submission:
//! on any error, all operations in flight are waited for before the buffers are freed.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::Arc;

use io_uring::{IoUring, opcode, squeue, types};
use sha2::{Digest, Sha256};

use crate::window::{ALIGN, AlignedBuf, Planner};
use crate::{ArchiveError, Output, Summary, WINDOW, WINDOWS, hex};

struct Slot {
    buf: AlignedBuf,
    window: Option<u64>,
    len: usize,
    pending_reads: usize,
    writing: bool,
}

enum Op {
    Read {
        slot: usize,
        file: Arc<File>,
        file_off: u64,
        buf_off: usize,
        len: usize,
    },
    Write {
        slot: usize,
        off: u64,
        buf_off: usize,
        len: usize,
    },
}

struct Ring {
    ring: IoUring,
    ops: HashMap<u64, Op>,
    next_token: u64,
    /// The archive file (-1 when writing to a sink).
    out_fd: i32,
}

impl Ring {
    fn push(&mut self, slots: &mut [Slot], op: Op) -> io::Result<()> {
        let entry: squeue::Entry = match &op {
            Op::Read {
                slot,
                file,
                file_off,
                buf_off,
                len,
            } => {
                // SAFETY: the pointer stays valid until the completion is reaped (see module docs).
                let ptr = unsafe { slots[*slot].buf.as_mut_ptr().add(*buf_off) };
                opcode::Read::new(types::Fd(file.as_raw_fd()), ptr, *len as u32)
                    .offset(*file_off)
                    .build()
            }
            Op::Write {
                slot,
                off,
                buf_off,
                len,
            } => {
                // SAFETY: as above.
                let ptr = unsafe { slots[*slot].buf.as_mut_ptr().add(*buf_off) };
                opcode::Write::new(types::Fd(self.out_fd), ptr, *len as u32)
                    .offset(*off)
                    .build()
            }
        };
        let token = self.next_token;
        self.next_token += 1;
        let entry = entry.user_data(token);
        // SAFETY: the entry's buffer and fd outlive the operation (drained before return).
        while unsafe { self.ring.submission().push(&entry) }.is_err() {
            self.ring.submit()?;
        }
        self.ops.insert(token, op);
        Ok(())
    }

    /// Waits for every operation in flight, ignoring their outcome (error path).
    fn drain(&mut self) {
        while !self.ops.is_empty() {
            if self.ring.submit_and_wait(1).is_err() {
                // Cannot wait any more; leaking is the only memory-safe option left.
                std::mem::forget(std::mem::take(&mut self.ops));
                return;
            }
            let done: Vec<u64> = self.ring.completion().map(|c| c.user_data()).collect();
            for t in done {
                self.ops.remove(&t);
            }
        }
    }
}

pub(crate) fn run(planner: Planner, out: Output<'_>) -> Result<Summary, ArchiveError> {
    let total = planner.windows();
    let mut slots: Vec<Slot> = (0..WINDOWS.min(total.max(1) as usize))
        .map(|_| Slot {
            buf: AlignedBuf::new(WINDOW),
            window: None,
            len: 0,
            pending_reads: 0,
            writing: false,
        })
        .collect();
    let out_fd = match &out {
        Output::File { file, .. } => file.as_raw_fd(),
        Output::Sink(_) => -1,
    };
    let mut ring = Ring {
        ring: IoUring::new(256)?,
        ops: HashMap::new(),
        next_token: 0,
        out_fd,
    };
    let result = pump(planner, out, &mut ring, &mut slots);
    if result.is_err() {
        ring.drain();
    }
    result
}

fn pump(
    mut planner: Planner,
    mut out: Output<'_>,
    ring: &mut Ring,
    slots: &mut [Slot],
) -> Result<Summary, ArchiveError> {
    let total = planner.windows();
    let (mut next_fill, mut next_out) = (0u64, 0u64);
    let mut sha = Sha256::new();
    loop {
        // Fill every free slot with the next windows and queue their reads.
        while next_fill < total {
            let Some(si) = slots.iter().position(|s| s.window.is_none()) else {
                break;
            };
            let (reads, len) = planner.fill(next_fill, slots[si].buf.as_mut_slice());
            slots[si].window = Some(next_fill);
            slots[si].len = len;
            slots[si].pending_reads = reads.len();
            for r in reads {
                ring.push(
                    slots,
                    Op::Read {
                        slot: si,
                        file: r.file,
                        file_off: r.file_off,
                        buf_off: r.buf_off,
                        len: r.len,
                    },
                )?;
            }
            next_fill += 1;
        }
        // Emit complete windows in order.
        while let Some(si) = slots
            .iter()
            .position(|s| s.window == Some(next_out) && s.pending_reads == 0 && !s.writing)
        {
            let len = slots[si].len;
            match &mut out {
                Output::File { direct, .. } => {
                    let wlen = if *direct { len.div_ceil(ALIGN) * ALIGN } else { len };
                    slots[si].buf.as_mut_slice()[len..wlen].fill(0);
                    slots[si].writing = true;
                    // Submit the write first and hash while it is in flight: both only read the
                    // buffer, and the hash is then off the disk's critical path.
                    ring.push(
                        slots,
                        Op::Write {
                            slot: si,
                            off: next_out * WINDOW as u64,
                            buf_off: 0,
                            len: wlen,
                        },
                    )?;
                    ring.ring.submit()?;
                    sha.update(&slots[si].buf.as_slice()[..len]);
                }
                Output::Sink(sink) => {
                    sha.update(&slots[si].buf.as_slice()[..len]);
                    sink.write_chunk(&slots[si].buf.as_slice()[..len])?;
                    slots[si].window = None;
                }
            }
            next_out += 1;
        }
        if ring.ops.is_empty() {
            if next_out >= total {
                break;
            }
            continue;
        }
        ring.ring.submit_and_wait(1)?;
        let done: Vec<(u64, i32)> = ring.ring.completion().map(|c| (c.user_data(), c.result())).collect();
        for (token, res) in done {
            let op = ring.ops.remove(&token).expect("completion for a known operation");
            if res < 0 {
                return Err(io::Error::from_raw_os_error(-res).into());
            }
            let n = res as usize;
            match op {
                Op::Read {
                    slot,
                    file,
                    file_off,
                    buf_off,
                    len,
                } => {
                    if n == 0 {
                        return Err(ArchiveError::SourceShrunk);
                    } else if n < len {
                        ring.push(
                            slots,
                            Op::Read {
                                slot,
                                file,
                                file_off: file_off + n as u64,
                                buf_off: buf_off + n,
                                len: len - n,
                            },
                        )?;
                    } else {
                        slots[slot].pending_reads -= 1;
                    }
                }
                Op::Write {
                    slot,
                    off,
                    buf_off,
                    len,
                } => {
                    if n == 0 {
                        return Err(io::Error::new(io::ErrorKind::WriteZero, "archive write made no progress").into());
                    } else if n < len {
                        ring.push(
                            slots,
                            Op::Write {
                                slot,
                                off: off + n as u64,
                                buf_off: buf_off + n,
                                len: len - n,
                            },
                        )?;
                    } else {
                        slots[slot].writing = false;
                        slots[slot].window = None;
                    }
                }
            }
        }
    }
    Ok(Summary {
        size: planner.size,
        sha256: hex(&sha.finalize()),
        io_uring: true,
    })
}
