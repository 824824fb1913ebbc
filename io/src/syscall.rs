//! The plain-syscall path: the same windows, filled with `pread` and written with `pwrite`.

use std::os::unix::fs::FileExt;

use sha2::{Digest, Sha256};

use crate::window::{ALIGN, AlignedBuf, Planner};
use crate::{ArchiveError, Output, Summary, WINDOW, hex};

pub(crate) fn run(mut planner: Planner, mut out: Output<'_>) -> Result<Summary, ArchiveError> {
    let mut buf = AlignedBuf::new(WINDOW);
    let mut sha = Sha256::new();
    for w in 0..planner.windows() {
        let (reads, len) = planner.fill(w, buf.as_mut_slice());
        for r in reads {
            let dst = &mut buf.as_mut_slice()[r.buf_off..r.buf_off + r.len];
            r.file.read_exact_at(dst, r.file_off).map_err(|e| {
                if e.kind() == std::io::ErrorKind::UnexpectedEof {
                    ArchiveError::SourceShrunk
                } else {
                    e.into()
                }
            })?;
        }
        sha.update(&buf.as_slice()[..len]);
        match &mut out {
            Output::File { file, direct } => {
                // O_DIRECT needs aligned lengths: the last window is written padded with zeros
                // and the file is cut to its real size afterwards.
                let wlen = if *direct { len.div_ceil(ALIGN) * ALIGN } else { len };
                buf.as_mut_slice()[len..wlen].fill(0);
                file.write_all_at(&buf.as_slice()[..wlen], w * WINDOW as u64)?;
            }
            Output::Sink(sink) => sink.write_chunk(&buf.as_slice()[..len])?,
        }
    }
    Ok(Summary {
        size: planner.size,
        sha256: hex(&sha.finalize()),
        io_uring: false,
    })
}
