//! Snapshot files: naming, building archives from pinned shards, crash-safe placement, listing.
//!
//! Layout, as Qdrant's (so scripts and `file://` paths written for Qdrant keep working):
//! collection snapshots at `<snapshots_path>/<collection>/<name>`, shard snapshots at
//! `<snapshots_path>/<collection>/shards/<id>/<name>`, full snapshots at
//! `<snapshots_path>/<name>`, each with `<name>.checksum` holding the bare hex SHA-256.
//!
//! Crash safety: an archive is written under a hidden temporary name (in `temp_path` when set,
//! else beside its final place), fsync'd, its checksum sidecar is written atomically, and only
//! then is the archive renamed to its final name and the directory fsync'd. A `.snapshot` name is
//! therefore only ever visible complete and with its checksum. Temporary names start with `.`
//! and end in `.tmp`; whatever a crash left behind is removed at start-up.
//!
//! The archive layouts themselves are defined in `quiver_io::snapshot`.

use std::collections::HashSet;
use std::fs;
use std::hash::Hash;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use quiver_engine::fsutil::fsync_dir;
use quiver_io::{Archive, Backend};
use serde::Serialize;

const TMP_SUFFIX: &str = ".tmp";

/// Why a snapshot operation failed.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The name is not a plain file name of a snapshot.
    #[error("invalid snapshot name `{0}`")]
    InvalidName(String),
    /// No such snapshot.
    #[error("Snapshot {0} not found")]
    NotFound(String),
    /// Building the archive failed.
    #[error("snapshot archive: {0}")]
    Archive(#[from] quiver_io::ArchiveError),
    /// The filesystem refused.
    #[error("snapshot I/O: {0}")]
    Io(#[from] io::Error),
    /// The S3 store refused or failed.
    #[error("{0}")]
    S3(#[from] quiver_io::s3::S3Error),
    /// A downloaded snapshot does not match its stored checksum.
    #[error("snapshot `{key}` does not match its checksum object: expected {expected}, got {actual}")]
    ChecksumMismatch {
        /// Object key.
        key: String,
        /// The stored checksum.
        expected: String,
        /// SHA-256 of the downloaded bytes.
        actual: String,
    },
}

/// What Qdrant reports about a snapshot.
#[derive(Debug, Clone, Serialize)]
pub struct SnapshotDescription {
    /// File name.
    pub name: String,
    /// Modification time, `%Y-%m-%dT%H:%M:%S` (UTC).
    pub creation_time: Option<String>,
    /// Bytes.
    pub size: u64,
    /// Hex SHA-256 from the sidecar.
    pub checksum: Option<String>,
}

/// Checks that `name` is a plain snapshot file name (no path, no traversal, not hidden).
pub fn validate_name(name: &str) -> Result<(), SnapshotError> {
    let bad = name.is_empty()
        || name.len() > 255
        || name.starts_with('.')
        || name.contains(['/', '\\', '\0'])
        || name.ends_with(".checksum")
        || name == ".."
        || name.chars().any(char::is_control);
    if bad {
        Err(SnapshotError::InvalidName(name.to_string()))
    } else {
        Ok(())
    }
}

/// Converts the engine's pinned files into archive members (the io crate knows no engine types).
pub fn members(files: Vec<quiver_engine::PinnedFile>) -> Vec<quiver_io::snapshot::PinnedMember> {
    files
        .into_iter()
        .map(|f| quiver_io::snapshot::PinnedMember {
            path: f.path,
            file: f.file,
            size: f.size,
            crc32: f.crc32,
        })
        .collect()
}

/// The archive of a pinned collection, or of one pinned shard when `shard` is given.
pub fn collection_archive(
    collection: &str,
    config: &quiver_engine::CollectionConfig,
    shards: Vec<(u32, Vec<quiver_engine::PinnedFile>)>,
    shard: Option<u32>,
) -> Result<Archive, SnapshotError> {
    let config = serde_json::to_value(config).map_err(io::Error::other)?;
    let shards = shards.into_iter().map(|(id, files)| (id, members(files))).collect();
    Ok(quiver_io::snapshot::collection_archive(
        collection, &config, shards, shard,
    )?)
}

/// Snapshot names being written (paths or object keys), so that two snapshots started in the
/// same second get distinct names whatever the storage.
pub struct Reservations<K: Eq + Hash>(Mutex<HashSet<K>>);

/// A reserved name; released when dropped.
pub struct Reservation<'a, K: Eq + Hash> {
    owner: &'a Reservations<K>,
    key: K,
}

impl<K: Eq + Hash> Drop for Reservation<'_, K> {
    fn drop(&mut self) {
        self.owner.0.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.key);
    }
}

impl<K: Eq + Hash + Clone> Reservations<K> {
    /// No name reserved.
    pub fn new() -> Self {
        Reservations(Mutex::new(HashSet::new()))
    }

    /// Reserves `key` unless it already is.
    pub fn reserve(&self, key: K) -> Option<Reservation<'_, K>> {
        let mut set = self.0.lock().unwrap_or_else(|p| p.into_inner());
        set.insert(key.clone()).then_some(Reservation { owner: self, key })
    }
}

impl<K: Eq + Hash + Clone> Default for Reservations<K> {
    fn default() -> Self {
        Self::new()
    }
}

/// Candidate names of a new snapshot, in order: `{prefix}-{node}-{%Y-%m-%d-%H-%M-%S}.snapshot`
/// (full snapshots, `with_node == false`: `{prefix}-{timestamp}.snapshot`), then the same with
/// `-1`, `-2`, ... before `.snapshot`.
pub fn candidate_names(prefix: &str, node_id: u64, with_node: bool) -> impl Iterator<Item = String> {
    let stem = if with_node {
        format!("{prefix}-{node_id}-{}", stamp())
    } else {
        format!("{prefix}-{}", stamp())
    };
    (0u64..).map(move |n| {
        if n == 0 {
            format!("{stem}.snapshot")
        } else {
            format!("{stem}-{n}.snapshot")
        }
    })
}

/// Snapshot storage of one server.
pub struct Snapshots {
    root: PathBuf,
    temp: Option<PathBuf>,
    node_id: u64,
    reserved: Reservations<PathBuf>,
}

impl Snapshots {
    /// Opens the snapshot folders, loading (or creating) the node id and removing leftovers of
    /// interrupted snapshots.
    pub fn open(root: &Path, temp: Option<&Path>, storage: &Path) -> io::Result<Snapshots> {
        fs::create_dir_all(root)?;
        if let Some(t) = temp {
            fs::create_dir_all(t)?;
        }
        let node_file = storage.join("node_id");
        let node_id = match fs::read_to_string(&node_file) {
            Ok(s) => s
                .trim()
                .parse()
                .map_err(|_| io::Error::other(format!("{} is not a number", node_file.display())))?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir_all(storage)?;
                let id = (uuid::Uuid::new_v4().as_u128() as u64) >> 12;
                let tmp = storage.join(".node_id.tmp");
                fs::write(&tmp, id.to_string())?;
                fs::File::open(&tmp)?.sync_all()?;
                fs::rename(&tmp, &node_file)?;
                fsync_dir(storage)?;
                id
            }
            Err(e) => return Err(e),
        };
        let s = Snapshots {
            root: root.to_path_buf(),
            temp: temp.map(Path::to_path_buf),
            node_id,
            reserved: Reservations::new(),
        };
        s.remove_leftovers(&s.root, 0)?;
        if let Some(t) = &s.temp {
            s.remove_leftovers(t, 0)?;
        }
        Ok(s)
    }

    fn remove_leftovers(&self, dir: &Path, depth: usize) -> io::Result<()> {
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let ft = entry.file_type()?;
            if name.starts_with('.') && name.ends_with(TMP_SUFFIX) {
                if ft.is_dir() {
                    fs::remove_dir_all(entry.path())?
                } else {
                    fs::remove_file(entry.path())?
                }
            } else if ft.is_dir() && depth < 3 {
                self.remove_leftovers(&entry.path(), depth + 1)?;
            }
        }
        Ok(())
    }

    /// This node's id, as used in snapshot names.
    pub fn node_id(&self) -> u64 {
        self.node_id
    }

    /// Root of the snapshot folders.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Folder of a collection's snapshots.
    pub fn collection_dir(&self, collection: &str) -> PathBuf {
        self.root.join(collection)
    }

    /// Folder of a shard's snapshots.
    pub fn shard_dir(&self, collection: &str, shard: u32) -> PathBuf {
        self.root.join(collection).join("shards").join(shard.to_string())
    }

    /// A fresh name `{prefix}-{node}-{%Y-%m-%d-%H-%M-%S}.snapshot`, suffixed `-N` when a snapshot
    /// of that name exists or is being made.
    /// Full snapshots (`with_node == false`) are named `full-snapshot-{timestamp}.snapshot`.
    fn reserve(&self, dir: &Path, prefix: &str, with_node: bool) -> (String, Reservation<'_, PathBuf>) {
        for name in candidate_names(prefix, self.node_id, with_node) {
            let path = dir.join(&name);
            if !path.exists()
                && let Some(r) = self.reserved.reserve(path)
            {
                return (name, r);
            }
        }
        unreachable!("an unbounded counter always finds a free name")
    }

    /// Writes `archive` as a new snapshot in `dir` and returns its description.
    pub fn create(
        &self,
        dir: &Path,
        prefix: &str,
        with_node: bool,
        archive: Archive,
    ) -> Result<SnapshotDescription, SnapshotError> {
        fs::create_dir_all(dir)?;
        let (name, _reservation) = self.reserve(dir, prefix, with_node);
        let staging_dir = self.temp.clone().unwrap_or_else(|| dir.to_path_buf());
        let staged = staging_dir.join(format!(".{name}.{}{TMP_SUFFIX}", uuid::Uuid::new_v4().simple()));
        let final_path = dir.join(&name);
        let checksum_path = dir.join(format!("{name}.checksum"));
        let result = (|| -> Result<SnapshotDescription, SnapshotError> {
            let summary = quiver_io::write_to_path(archive, &staged, Backend::Auto)?;
            let checksum_tmp = dir.join(format!(".{name}.checksum{TMP_SUFFIX}"));
            fs::write(&checksum_tmp, &summary.sha256)?;
            fs::File::open(&checksum_tmp)?.sync_all()?;
            fs::rename(&checksum_tmp, &checksum_path)?;
            self.place(&staged, dir, &name)?;
            tracing::info!(snapshot = %final_path.display(), size = summary.size, io_uring = summary.io_uring, "snapshot created");
            Ok(SnapshotDescription {
                name: name.clone(),
                creation_time: creation_time(&final_path),
                size: summary.size,
                checksum: Some(summary.sha256),
            })
        })();
        if result.is_err() {
            let _ = fs::remove_file(&staged);
            let _ = fs::remove_file(dir.join(format!(".{name}.checksum{TMP_SUFFIX}")));
            if !final_path.exists() {
                let _ = fs::remove_file(&checksum_path);
            }
        }
        result
    }

    /// Moves a finished archive to `dir/name`: a rename on the same filesystem, else a streamed
    /// copy to a temporary name in `dir`, fsync'd and renamed.
    fn place(&self, staged: &Path, dir: &Path, name: &str) -> io::Result<()> {
        let final_path = dir.join(name);
        match fs::rename(staged, &final_path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::CrossesDevices => {
                let tmp = dir.join(format!(".{name}.copy{TMP_SUFFIX}"));
                let copied = (|| -> io::Result<()> {
                    let mut src = fs::File::open(staged)?;
                    let mut dst = fs::File::create(&tmp)?;
                    io::copy(&mut src, &mut dst)?;
                    dst.sync_all()?;
                    fs::rename(&tmp, &final_path)
                })();
                let _ = fs::remove_file(staged);
                if copied.is_err() {
                    let _ = fs::remove_file(&tmp);
                }
                copied?;
            }
            Err(e) => return Err(e),
        }
        fsync_dir(dir)
    }

    /// Complete snapshots in `dir`, sorted by name.
    pub fn list(&self, dir: &Path) -> Result<Vec<SnapshotDescription>, SnapshotError> {
        let mut out = Vec::new();
        let entries = match fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(e.into()),
        };
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !entry.file_type()?.is_file() || validate_name(&name).is_err() || !name.ends_with(".snapshot") {
                continue;
            }
            out.push(self.describe(dir, &name)?);
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn describe(&self, dir: &Path, name: &str) -> Result<SnapshotDescription, SnapshotError> {
        let path = dir.join(name);
        let size = fs::metadata(&path)?.len();
        let checksum = fs::read_to_string(dir.join(format!("{name}.checksum")))
            .ok()
            .map(|s| s.trim().to_string());
        Ok(SnapshotDescription {
            name: name.to_string(),
            creation_time: creation_time(&path),
            size,
            checksum,
        })
    }

    /// Path of an existing snapshot in `dir`.
    pub fn path(&self, dir: &Path, name: &str) -> Result<PathBuf, SnapshotError> {
        validate_name(name)?;
        let path = dir.join(name);
        if fs::metadata(&path).map(|m| m.is_file()).unwrap_or(false) {
            Ok(path)
        } else {
            Err(SnapshotError::NotFound(name.to_string()))
        }
    }

    /// Deletes a snapshot and its checksum sidecar.
    pub fn delete(&self, dir: &Path, name: &str) -> Result<(), SnapshotError> {
        let path = self.path(dir, name)?;
        fs::remove_file(&path)?;
        let _ = fs::remove_file(dir.join(format!("{name}.checksum")));
        fsync_dir(dir)?;
        Ok(())
    }
}

/// The timestamp part of snapshot names.
pub fn stamp() -> String {
    chrono::Utc::now().format("%Y-%m-%d-%H-%M-%S").to_string()
}

fn creation_time(path: &Path) -> Option<String> {
    let modified = fs::metadata(path).ok()?.modified().ok()?;
    let dt: chrono::DateTime<chrono::Utc> = modified.into();
    Some(dt.format("%Y-%m-%dT%H:%M:%S").to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_validated() {
        for bad in [
            "",
            "../x",
            "a/b",
            ".hidden",
            "x\0y",
            "..",
            "a\\b",
            "x.snapshot.checksum",
        ] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
        validate_name("c-1-2026-01-01-00-00-00.snapshot").unwrap();
    }

    #[test]
    fn create_list_delete_and_leftover_cleanup() {
        let dir = tempfile::tempdir().unwrap();
        let storage = dir.path().join("storage");
        let snaps = Snapshots::open(&dir.path().join("snaps"), None, &storage).unwrap();
        let cdir = snaps.collection_dir("c");
        let mk = || {
            let mut a = Archive::new(0);
            a.add_bytes("x", b"hello".to_vec()).unwrap();
            a
        };
        let d1 = snaps.create(&cdir, "c", true, mk()).unwrap();
        let d2 = snaps.create(&cdir, "c", true, mk()).unwrap();
        assert_ne!(d1.name, d2.name, "two snapshots in the same second get distinct names");
        let bytes = fs::read(cdir.join(&d1.name)).unwrap();
        use sha2_check::digest_hex;
        assert_eq!(d1.checksum.as_deref(), Some(digest_hex(&bytes).as_str()));
        assert_eq!(
            fs::read_to_string(cdir.join(format!("{}.checksum", d1.name))).unwrap(),
            digest_hex(&bytes)
        );
        // A crash leftover is neither listed nor kept.
        fs::write(cdir.join(".c-x.snapshot.abc.tmp"), b"partial").unwrap();
        assert_eq!(snaps.list(&cdir).unwrap().len(), 2);
        let node = snaps.node_id();
        drop(snaps);
        let snaps = Snapshots::open(&dir.path().join("snaps"), None, &storage).unwrap();
        assert_eq!(snaps.node_id(), node, "node id persists");
        assert!(!cdir.join(".c-x.snapshot.abc.tmp").exists());
        snaps.delete(&cdir, &d1.name).unwrap();
        assert!(matches!(snaps.delete(&cdir, &d1.name), Err(SnapshotError::NotFound(_))));
        assert!(matches!(
            snaps.path(&cdir, "../../etc/passwd"),
            Err(SnapshotError::InvalidName(_))
        ));
        assert_eq!(snaps.list(&cdir).unwrap().len(), 1);
    }

    mod sha2_check {
        /// SHA-256 by the system's sha256sum, independent of the code under test.
        pub fn digest_hex(bytes: &[u8]) -> String {
            use std::io::Write;
            let mut child = std::process::Command::new("sha256sum")
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .expect("sha256sum");
            child.stdin.take().unwrap().write_all(bytes).unwrap();
            let out = child.wait_with_output().unwrap();
            String::from_utf8(out.stdout)
                .unwrap()
                .split_whitespace()
                .next()
                .unwrap()
                .to_string()
        }
    }
}
