//! What an archive contains and where every byte of it goes.
//!
//! The archive is planned before a single byte is written: every member's size is known up
//! front (pinned files, in-memory bytes, or nested archives whose size is computed the same way),
//! so the plan is a flat, sorted list of [`Piece`]s covering `[0, size)` exactly. Writers then
//! fill fixed-size windows of the archive from the plan, strictly sequentially, which is what
//! lets the same stream go to a file, an HTTP response or S3 parts.

use std::fs::File;
use std::sync::Arc;

use crate::ArchiveError;

/// Tar block size.
pub const BLOCK: u64 = 512;

fn pad(n: u64) -> u64 {
    n.div_ceil(BLOCK) * BLOCK
}

/// Where a member's bytes come from.
pub enum Source {
    /// Bytes held in memory (small: manifests, configs).
    Bytes(Arc<[u8]>),
    /// An open file and the number of bytes to take from its start. The file was opened when the
    /// snapshot pinned it, so later renames or unlinks of its path do not affect what is read.
    File(Arc<File>, u64),
    /// A nested archive, streamed inline (full snapshots hold one per collection).
    Archive(Archive),
}

/// One member of an archive.
pub struct Entry {
    /// Relative path inside the archive.
    pub name: String,
    /// Its content.
    pub source: Source,
}

/// A planned tar archive.
#[derive(Default)]
pub struct Archive {
    entries: Vec<Entry>,
    mtime: u64,
}

/// One contiguous run of archive bytes.
#[derive(Clone)]
pub enum Piece {
    /// Copied from memory.
    Bytes { off: u64, data: Arc<[u8]> },
    /// Read from a file.
    File {
        off: u64,
        file: Arc<File>,
        file_off: u64,
        len: u64,
    },
    /// Zero padding.
    Zero { off: u64, len: u64 },
}

impl Piece {
    /// Archive offset of the first byte.
    pub fn off(&self) -> u64 {
        match self {
            Piece::Bytes { off, .. } | Piece::File { off, .. } | Piece::Zero { off, .. } => *off,
        }
    }
    /// Number of bytes.
    pub fn len(&self) -> u64 {
        match self {
            Piece::Bytes { data, .. } => data.len() as u64,
            Piece::File { len, .. } | Piece::Zero { len, .. } => *len,
        }
    }
    /// True for an empty piece.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Checks that a member name is a plain relative path.
pub fn validate_name(name: &str) -> Result<(), ArchiveError> {
    let bad = name.is_empty()
        || name.starts_with('/')
        || name.contains('\0')
        || name.contains('\\')
        || name.split('/').any(|c| c.is_empty() || c == "." || c == "..");
    if bad {
        Err(ArchiveError::InvalidName(name.to_string()))
    } else {
        Ok(())
    }
}

impl Archive {
    /// An empty archive whose members carry `mtime` (seconds since the epoch).
    pub fn new(mtime: u64) -> Self {
        Archive {
            entries: Vec::new(),
            mtime,
        }
    }

    /// Adds a member held in memory.
    pub fn add_bytes(&mut self, name: impl Into<String>, data: impl Into<Arc<[u8]>>) -> Result<(), ArchiveError> {
        self.push(name.into(), Source::Bytes(data.into()))
    }

    /// Adds the first `len` bytes of an open file.
    pub fn add_file(&mut self, name: impl Into<String>, file: Arc<File>, len: u64) -> Result<(), ArchiveError> {
        self.push(name.into(), Source::File(file, len))
    }

    /// Adds a nested archive as one member.
    pub fn add_archive(&mut self, name: impl Into<String>, inner: Archive) -> Result<(), ArchiveError> {
        self.push(name.into(), Source::Archive(inner))
    }

    fn push(&mut self, name: String, source: Source) -> Result<(), ArchiveError> {
        validate_name(&name)?;
        self.entries.push(Entry { name, source });
        Ok(())
    }

    /// Member names in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|e| e.name.as_str())
    }

    fn member_len(source: &Source) -> u64 {
        match source {
            Source::Bytes(b) => b.len() as u64,
            Source::File(_, len) => *len,
            Source::Archive(a) => a.size(),
        }
    }

    /// Exact size of the archive in bytes, end-of-archive blocks included.
    pub fn size(&self) -> u64 {
        let mut total = 0;
        for e in &self.entries {
            if e.name.len() > 100 {
                total += BLOCK + pad(e.name.len() as u64 + 1);
            }
            total += BLOCK + pad(Self::member_len(&e.source));
        }
        total + 2 * BLOCK
    }
}

/// One 512-byte GNU header (or the header of a GNU long-name member when `long_link`).
fn header(name: &str, size: u64, long_link: bool, mtime: u64) -> Result<[u8; 512], ArchiveError> {
    let mut h = tar::Header::new_gnu();
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(mtime);
    if long_link {
        h.set_entry_type(tar::EntryType::GNULongName);
        h.as_old_mut().name[..13].copy_from_slice(b"././@LongLink");
        h.set_size(name.len() as u64 + 1);
    } else {
        h.set_entry_type(tar::EntryType::Regular);
        h.set_size(size);
        if name.len() > 100 {
            // The real name went into the preceding long-name member; keep a prefix here.
            h.as_old_mut().name.copy_from_slice(&name.as_bytes()[..100]);
        } else {
            h.set_path(name)
                .map_err(|_| ArchiveError::InvalidName(name.to_string()))?;
        }
    }
    h.set_cksum();
    Ok(*h.as_bytes())
}

impl Archive {
    /// Flattens the archive into pieces starting at archive offset `base`.
    pub fn plan(self, base: u64, out: &mut Vec<Piece>) -> Result<u64, ArchiveError> {
        let mut off = base;
        let push_padded = |out: &mut Vec<Piece>, off: &mut u64, len: u64| {
            let p = pad(len) - len;
            if p > 0 {
                out.push(Piece::Zero { off: *off, len: p });
                *off += p;
            }
        };
        let Archive { entries, mtime } = self;
        for e in entries {
            let len = Self::member_len(&e.source);
            if e.name.len() > 100 {
                out.push(Piece::Bytes {
                    off,
                    data: Arc::new(header(&e.name, 0, true, mtime)?),
                });
                off += BLOCK;
                let mut name = e.name.as_bytes().to_vec();
                name.push(0);
                let n = name.len() as u64;
                out.push(Piece::Bytes { off, data: name.into() });
                off += n;
                push_padded(out, &mut off, n);
            }
            out.push(Piece::Bytes {
                off,
                data: Arc::new(header(&e.name, len, false, mtime)?),
            });
            off += BLOCK;
            match e.source {
                Source::Bytes(data) => {
                    if !data.is_empty() {
                        out.push(Piece::Bytes { off, data });
                    }
                }
                Source::File(file, len) => {
                    if len > 0 {
                        out.push(Piece::File {
                            off,
                            file,
                            file_off: 0,
                            len,
                        });
                    }
                }
                Source::Archive(inner) => {
                    let end = inner.plan(off, out)?;
                    debug_assert_eq!(end - off, len);
                }
            }
            off += len;
            push_padded(out, &mut off, len);
        }
        out.push(Piece::Zero { off, len: 2 * BLOCK });
        Ok(off + 2 * BLOCK)
    }
}
