//! # Quiver's snapshot pipeline
//!
//! Streams a planned set of files into an uncompressed tar archive (GNU headers and long names),
//! computing its SHA-256 on the way, in one sequential pass with bounded memory: a few fixed,
//! page-aligned windows of the archive are filled directly by file reads (no intermediate copy of
//! the data, no whole file in memory) and written out in order.
//!
//! ## io_uring
//!
//! On Linux the windows are filled and written through **io_uring** (the `io-uring` crate):
//! reads for several windows and the write of earlier ones are in flight at once from a single
//! thread, and the archive file is written with `O_DIRECT` where the filesystem allows it (no
//! page-cache pollution, steady throughput). `io-uring` was chosen over `tokio-uring` and
//! `glommio`: it is the maintained one of the three, it adds no runtime of its own to a
//! thread-per-core engine, and the pipeline needs nothing beyond plain read/write submissions.
//! io_uring is often disabled (Docker's seccomp profile, `kernel.io_uring_disabled`): that is
//! detected once, logged once, and the same plan is executed with plain `pread`/`pwrite`,
//! producing byte-identical archives. `QUIVER_IO_URING=0` forces the fallback.

mod layout;
pub mod restore;
#[cfg(feature = "s3")]
pub mod s3;
pub mod snapshot;
mod syscall;
mod uring;
mod window;

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::OnceLock;

pub use layout::{Archive, Piece, Source, validate_name};

/// Bytes per window.
pub const WINDOW: usize = 4 << 20;
/// Windows in flight: the pipeline's whole memory is `WINDOW * WINDOWS`.
pub const WINDOWS: usize = 8;

/// Why an archive could not be produced.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// A member name is not a plain relative path.
    #[error("invalid archive member name `{0}`")]
    InvalidName(String),
    /// A pinned file ended before the size it had when it was pinned.
    #[error("a source file is shorter than when it was pinned")]
    SourceShrunk,
    /// The sink or a source failed.
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
}

/// What was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Archive size in bytes.
    pub size: u64,
    /// Lowercase hex SHA-256 of the whole archive.
    pub sha256: String,
    /// Whether io_uring did the I/O.
    pub io_uring: bool,
}

/// Which I/O path to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// io_uring when available, else plain syscalls.
    Auto,
    /// io_uring, failing when unavailable.
    Uring,
    /// Plain syscalls.
    Syscalls,
}

/// Receives archive bytes in order (an HTTP response, S3 parts, ...).
pub trait Sink {
    /// Takes the next chunk.
    fn write_chunk(&mut self, chunk: &[u8]) -> io::Result<()>;
}

/// True when io_uring can be used in this process (checked once; the outcome is logged once).
pub fn uring_available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        if std::env::var("QUIVER_IO_URING").is_ok_and(|v| v == "0") {
            tracing::info!("io_uring disabled by QUIVER_IO_URING=0; snapshots use plain syscalls");
            return false;
        }
        match io_uring::IoUring::new(8) {
            Ok(_) => {
                tracing::info!("io_uring available; snapshots use it");
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "io_uring unavailable (disabled by seccomp or kernel.io_uring_disabled?); snapshots use plain syscalls");
                false
            }
        }
    })
}

fn use_uring(backend: Backend) -> io::Result<bool> {
    match backend {
        Backend::Syscalls => Ok(false),
        Backend::Auto => Ok(uring_available()),
        Backend::Uring if uring_available() => Ok(true),
        Backend::Uring => Err(io::Error::new(io::ErrorKind::Unsupported, "io_uring is not available")),
    }
}

/// Where the archive goes.
pub(crate) enum Output<'a> {
    /// A file written at explicit offsets; `direct` when opened with O_DIRECT.
    File { file: &'a File, direct: bool },
    /// Any sink, in order.
    Sink(&'a mut dyn Sink),
}

fn planned(archive: Archive) -> Result<window::Planner, ArchiveError> {
    let mut pieces = Vec::new();
    let size = archive.plan(0, &mut pieces)?;
    Ok(window::Planner::new(pieces, size, WINDOW))
}

fn run(archive: Archive, out: Output<'_>, backend: Backend) -> Result<Summary, ArchiveError> {
    let planner = planned(archive)?;
    if use_uring(backend)? {
        uring::run(planner, out)
    } else {
        syscall::run(planner, out)
    }
}

/// Writes the archive to a new file at `path` (which must not exist), fsyncs it and returns
/// its size and SHA-256. On error the partial file is removed. The caller renames it into place.
pub fn write_to_path(archive: Archive, path: &Path, backend: Backend) -> Result<Summary, ArchiveError> {
    let open = |direct: bool| {
        let mut o = OpenOptions::new();
        o.write(true).create_new(true);
        if direct {
            o.custom_flags(libc::O_DIRECT);
        }
        o.open(path)
    };
    // O_DIRECT is refused by some filesystems (tmpfs): fall back to buffered writes there.
    let want_direct = !std::env::var("QUIVER_IO_DIRECT").is_ok_and(|v| v == "0");
    let (file, direct) = match open(want_direct) {
        Ok(f) => (f, true),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            let _ = std::fs::remove_file(path);
            (open(false)?, false)
        }
        Err(e) => return Err(e.into()),
    };
    let result = run(archive, Output::File { file: &file, direct }, backend).and_then(|s| {
        file.set_len(s.size)?;
        file.sync_all()?;
        Ok(s)
    });
    if result.is_err() {
        let _ = std::fs::remove_file(path);
    }
    result
}

/// Streams the archive into `sink`.
pub fn stream(archive: Archive, sink: &mut dyn Sink, backend: Backend) -> Result<Summary, ArchiveError> {
    run(archive, Output::Sink(sink), backend)
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::sync::Arc;

    struct VecSink(Vec<u8>);
    impl Sink for VecSink {
        fn write_chunk(&mut self, chunk: &[u8]) -> io::Result<()> {
            self.0.extend_from_slice(chunk);
            Ok(())
        }
    }

    fn sample(dir: &Path) -> Archive {
        let mut a = Archive::new(1_700_000_000);
        a.add_bytes("manifest.json", b"{\"v\": 1}".to_vec()).unwrap();
        for (i, len) in [0usize, 1, 511, 512, 513, WINDOW - 7, WINDOW + 4099, 3 * WINDOW + 1]
            .iter()
            .enumerate()
        {
            let p = dir.join(format!("f{i}"));
            let data: Vec<u8> = (0..*len).map(|j| (j * 31 + i) as u8).collect();
            std::fs::File::create(&p).unwrap().write_all(&data).unwrap();
            let name = if i == 3 {
                format!("{}/f{i}", "long-directory-name".repeat(8))
            } else {
                format!("seg/f{i}")
            };
            a.add_file(name, Arc::new(File::open(&p).unwrap()), *len as u64)
                .unwrap();
        }
        let mut inner = Archive::new(1_700_000_000);
        inner.add_bytes("inner.txt", b"nested".to_vec()).unwrap();
        a.add_archive("inner.tar", inner).unwrap();
        a
    }

    fn read_back(bytes: &[u8]) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        let mut ar = tar::Archive::new(bytes);
        for e in ar.entries().unwrap() {
            let mut e = e.unwrap();
            let name = e.path().unwrap().to_string_lossy().into_owned();
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            out.push((name, data));
        }
        out
    }

    #[test]
    fn both_backends_write_identical_valid_archives() {
        let dir = tempfile::tempdir().unwrap();
        let expected_size = sample(dir.path()).size();
        let mut outputs = Vec::new();
        let mut backends = vec![Backend::Syscalls];
        if uring_available() {
            backends.push(Backend::Uring);
        }
        for b in backends {
            let path = dir.path().join(format!("out-{b:?}.tar"));
            let s = write_to_path(sample(dir.path()), &path, b).unwrap();
            let bytes = std::fs::read(&path).unwrap();
            assert_eq!(bytes.len() as u64, expected_size);
            assert_eq!(s.size, expected_size);
            use sha2::Digest;
            assert_eq!(s.sha256, hex(&sha2::Sha256::digest(&bytes)));
            let mut sink = VecSink(Vec::new());
            let s2 = stream(sample(dir.path()), &mut sink, b).unwrap();
            assert_eq!(sink.0, bytes, "file and sink outputs are the same bytes");
            assert_eq!(s2.sha256, s.sha256);
            outputs.push(bytes);
        }
        assert!(outputs.windows(2).all(|w| w[0] == w[1]), "io_uring and syscalls agree");
        let members = read_back(&outputs[0]);
        assert_eq!(members[0], ("manifest.json".to_string(), b"{\"v\": 1}".to_vec()));
        let long = &members[4];
        assert!(
            long.0.ends_with("/f3") && long.0.len() > 100,
            "GNU long name kept: {}",
            long.0
        );
        assert_eq!(long.1.len(), 512);
        let big = &members[8];
        assert_eq!(big.1.len(), 3 * WINDOW + 1);
        assert!(big.1.iter().enumerate().all(|(j, b)| *b == (j * 31 + 7) as u8));
        let inner = read_back(&members[9].1);
        assert_eq!(inner, vec![("inner.txt".to_string(), b"nested".to_vec())]);
    }

    #[test]
    fn shrunk_source_fails_and_leaves_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("src");
        std::fs::write(&p, vec![1u8; 1000]).unwrap();
        for b in [Backend::Syscalls, Backend::Auto] {
            let mut a = Archive::new(0);
            a.add_file("x", Arc::new(File::open(&p).unwrap()), 5000).unwrap();
            let out = dir.path().join(format!("out-{b:?}"));
            assert!(matches!(write_to_path(a, &out, b), Err(ArchiveError::SourceShrunk)));
            assert!(!out.exists());
        }
    }

    #[test]
    fn names_are_validated() {
        let mut a = Archive::new(0);
        for bad in ["", "/abs", "../up", "a/../b", "a//b", "nul\0"] {
            assert!(a.add_bytes(bad, vec![]).is_err(), "{bad:?}");
        }
    }
}
