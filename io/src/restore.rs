//! Unpacking snapshots for recovery: archives are unpacked into a staging directory and checked
//! completely (manifest, member types and paths, sizes, CRC32s, total size, format version,
//! kind, and the SHA-256 of the whole input computed while the bytes stream by), so that the
//! caller can swap the staged directory in only once every check passed.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Component, Path};

use crate::snapshot::{MANIFEST, SNAPSHOT_FORMAT_VERSION, SnapshotManifest};
use sha2::{Digest, Sha256};

/// Why a recovery was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    /// The archive is not an acceptable snapshot (the message says why).
    #[error("invalid snapshot: {0}")]
    Invalid(String),
    /// The archive's SHA-256 differs from the one given.
    #[error("checksum mismatch: expected {expected}, the snapshot has {actual}")]
    Checksum {
        /// Given by the client.
        expected: String,
        /// Computed.
        actual: String,
    },
    /// The snapshot source may not be used (file outside the snapshots folder, URLs disabled).
    #[error("{0}")]
    Forbidden(String),
    /// The local filesystem failed.
    #[error("I/O error during recovery: {0}")]
    Io(#[from] io::Error),
}

/// Shorthand for [`RecoveryError::Invalid`].
pub fn invalid(msg: impl Into<String>) -> RecoveryError {
    RecoveryError::Invalid(msg.into())
}

/// A reader that hashes and counts what passes through it.
pub struct HashingReader<R> {
    inner: R,
    sha: Sha256,
    read: u64,
    limit: u64,
}

impl<R: Read> HashingReader<R> {
    /// Wraps `inner`, failing once more than `limit` bytes were read.
    pub fn new(inner: R, limit: u64) -> Self {
        HashingReader {
            inner,
            sha: Sha256::new(),
            read: 0,
            limit,
        }
    }
    /// Hex SHA-256 of everything read.
    pub fn finish(self) -> (String, u64) {
        (
            self.sha.finalize().iter().map(|b| format!("{b:02x}")).collect(),
            self.read,
        )
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.sha.update(&buf[..n]);
        self.read += n as u64;
        if self.read > self.limit {
            return Err(io::Error::new(
                io::ErrorKind::FileTooLarge,
                format!("snapshot larger than the limit of {} bytes", self.limit),
            ));
        }
        Ok(n)
    }
}

/// What kind of archive is expected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// A collection snapshot.
    Collection,
    /// A shard snapshot.
    Shard,
}

/// Checks a member path: relative, plain components only.
pub fn safe_path(p: &Path) -> Result<String, RecoveryError> {
    let mut parts = Vec::new();
    for c in p.components() {
        match c {
            Component::Normal(s) => parts.push(
                s.to_str()
                    .ok_or_else(|| invalid("member path is not UTF-8"))?
                    .to_string(),
            ),
            _ => {
                return Err(invalid(format!(
                    "member path `{}` is absolute or leaves the archive",
                    p.display()
                )));
            }
        }
    }
    if parts.is_empty() {
        return Err(invalid("empty member path"));
    }
    Ok(parts.join("/"))
}

/// Unpacks a collection or shard snapshot from `reader` into `dest` (created; must not exist),
/// checking everything listed in the module docs. Returns the manifest. The caller hashes the
/// input (see [`HashingReader`]) and must drain it.
pub fn unpack<R: Read>(
    reader: R,
    dest: &Path,
    expect: Expect,
    max_unpacked: u64,
) -> Result<SnapshotManifest, RecoveryError> {
    fs::create_dir_all(dest)?;
    let mut archive = tar::Archive::new(reader);
    let mut entries = archive
        .entries()
        .map_err(|e| invalid(format!("not a tar archive: {e}")))?;
    let bad_tar = |e: io::Error| -> RecoveryError {
        if e.kind() == io::ErrorKind::FileTooLarge {
            return RecoveryError::Invalid(e.to_string());
        }
        // tar's messages may quote raw header bytes: keep them printable and short.
        let msg: String = e
            .to_string()
            .chars()
            .filter(|c| c.is_ascii_graphic() || *c == ' ')
            .take(160)
            .collect();
        invalid(format!("truncated or corrupted archive: {msg}"))
    };

    // The manifest comes first and says what every other member must be.
    let mut first = entries
        .next()
        .ok_or_else(|| invalid("empty archive"))?
        .map_err(bad_tar)?;
    let first_path = safe_path(&first.path().map_err(bad_tar)?)?;
    if first_path == "config.json" {
        return Err(invalid(
            "this is a full-storage snapshot, not a collection or shard snapshot",
        ));
    }
    if first_path != MANIFEST || first.header().entry_type() != tar::EntryType::Regular || first.size() > 64 << 20 {
        return Err(invalid("the first member must be manifest.json"));
    }
    let mut raw = Vec::new();
    first.read_to_end(&mut raw).map_err(bad_tar)?;
    let manifest: SnapshotManifest =
        serde_json::from_slice(&raw).map_err(|e| invalid(format!("manifest.json: {e}")))?;
    if manifest.format_version != SNAPSHOT_FORMAT_VERSION {
        return Err(invalid(format!(
            "snapshot format version {} is not supported (this server reads {SNAPSHOT_FORMAT_VERSION})",
            manifest.format_version
        )));
    }
    match (expect, manifest.kind.as_str()) {
        (Expect::Collection, "collection") | (Expect::Shard, "shard") => {}
        (Expect::Collection, "shard") => {
            return Err(invalid(
                "this is a shard snapshot; recover it through the shard snapshot API",
            ));
        }
        (Expect::Shard, "collection") => return Err(invalid("this is a collection snapshot, not a shard snapshot")),
        (_, other) => return Err(invalid(format!("unknown snapshot kind `{other}`"))),
    }
    let mut expected: BTreeMap<String, (u64, u32)> = manifest
        .files
        .iter()
        .map(|f| (f.path.clone(), (f.size, f.crc32)))
        .collect();
    let listed: u64 = manifest.files.iter().map(|f| f.size).sum();
    if listed > max_unpacked {
        return Err(invalid(format!(
            "snapshot would unpack to {listed} bytes, more than the limit of {max_unpacked}"
        )));
    }
    let mut seen = HashSet::new();
    let mut have_config = false;
    let mut buf = vec![0u8; 1 << 20];
    for entry in entries {
        let mut entry = entry.map_err(bad_tar)?;
        let path = safe_path(&entry.path().map_err(bad_tar)?)?;
        let kind = entry.header().entry_type();
        if kind != tar::EntryType::Regular {
            return Err(invalid(format!(
                "member `{path}` is a {kind:?}: only regular files are accepted (no links, devices or directories)"
            )));
        }
        if !seen.insert(path.clone()) {
            return Err(invalid(format!("member `{path}` appears twice")));
        }
        let size = entry.size();
        let crc_expected = if path == "config.json" {
            have_config = true;
            None
        } else {
            let (want_size, crc) = expected
                .remove(&path)
                .ok_or_else(|| invalid(format!("member `{path}` is not listed in the manifest")))?;
            if size != want_size {
                return Err(invalid(format!(
                    "member `{path}` has {size} bytes, the manifest says {want_size}"
                )));
            }
            Some(crc)
        };
        let target = dest.join(&path);
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent)?;
        }
        let mut out = fs::File::create(&target)?;
        let mut crc = crc32fast::Hasher::new();
        let mut left = size;
        while left > 0 {
            let want = left.min(buf.len() as u64) as usize;
            let n = entry.read(&mut buf[..want]).map_err(bad_tar)?;
            if n == 0 {
                return Err(invalid(format!("member `{path}` is truncated")));
            }
            crc.update(&buf[..n]);
            out.write_all(&buf[..n])?;
            left -= n as u64;
        }
        out.sync_all()?;
        if let Some(want) = crc_expected {
            let got = crc.finalize();
            if got != want {
                return Err(invalid(format!(
                    "member `{path}` fails its CRC32 check (corrupted archive)"
                )));
            }
        }
    }
    if !have_config && expect == Expect::Collection {
        return Err(invalid("config.json is missing"));
    }
    if let Some(missing) = expected.keys().next() {
        return Err(invalid(format!(
            "member `{missing}` listed in the manifest is missing (truncated archive?)"
        )));
    }
    sync_tree(dest)?;
    Ok(manifest)
}

/// Fsyncs every directory of an unpacked tree, so the renames that install it are durable.
fn sync_tree(dir: &Path) -> io::Result<()> {
    for e in fs::read_dir(dir)? {
        let e = e?;
        if e.file_type()?.is_dir() {
            sync_tree(&e.path())?;
        }
    }
    fs::File::open(dir)?.sync_all()
}

/// Reads a whole source through the hasher: unpacks it, then drains what follows the archive's
/// end so that the SHA-256 covers every byte. Returns the manifest and the hex digest.
pub fn unpack_hashed<R: Read>(
    source: R,
    dest: &Path,
    expect: Expect,
    max_unpacked: u64,
) -> Result<(SnapshotManifest, String), RecoveryError> {
    let mut hashing = HashingReader::new(source, max_unpacked.saturating_mul(2).max(1 << 30));
    let manifest = unpack(&mut hashing, dest, expect, max_unpacked)?;
    io::copy(&mut hashing, &mut io::sink()).map_err(|e| invalid(format!("reading the archive tail: {e}")))?;
    Ok((manifest, hashing.finish().0))
}
