//! Snapshots kept in S3 (`storage.snapshots_config.snapshots_storage: s3`).
//!
//! Object keys follow Qdrant's: `[prefix/]snapshots/<collection>/<name>` for collection
//! snapshots, `.../<collection>/shards/<id>/<name>` for shard snapshots and
//! `[prefix/]snapshots/<name>` for full snapshots, each with a `<name>.checksum` object holding
//! the hex SHA-256. Listings are per folder (S3 delimiter `/`), so full snapshots are never
//! mixed with collection ones.
//!
//! Visibility: the checksum object is stored before the multipart upload of the archive is
//! completed (`quiver_io::s3`), so a listed snapshot always has its checksum, and a failed or
//! interrupted upload leaves no snapshot object at all.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use quiver_io::Archive;
use quiver_io::s3::{Download, S3Error, S3Store};
use tokio::runtime::Handle;

use crate::snapshots::{Reservation, Reservations, SnapshotDescription, SnapshotError, candidate_names, validate_name};

/// Snapshot storage in an S3 bucket.
pub struct S3Snapshots {
    store: S3Store,
    node_id: u64,
    staging: Option<PathBuf>,
    reserved: Reservations<String>,
}

fn format_time(secs: Option<i64>) -> Option<String> {
    let t = chrono::DateTime::<chrono::Utc>::from_timestamp(secs?, 0)?;
    Some(t.format("%Y-%m-%dT%H:%M:%S").to_string())
}

impl S3Snapshots {
    /// Snapshots in `store`, named with `node_id`; archives are staged in `staging` first when set.
    pub fn new(store: S3Store, node_id: u64, staging: Option<PathBuf>) -> S3Snapshots {
        S3Snapshots {
            store,
            node_id,
            staging,
            reserved: Reservations::new(),
        }
    }

    /// The store.
    pub fn store(&self) -> &S3Store {
        &self.store
    }

    /// Folder (relative key) of a collection's snapshots.
    pub fn collection_dir(collection: &str) -> String {
        format!("snapshots/{collection}/")
    }

    /// Folder of a shard's snapshots.
    pub fn shard_dir(collection: &str, shard: u32) -> String {
        format!("snapshots/{collection}/shards/{shard}/")
    }

    /// Folder of full snapshots.
    pub fn full_dir() -> String {
        "snapshots/".to_string()
    }

    fn reserve(
        &self,
        handle: &Handle,
        dir: &str,
        prefix: &str,
        with_node: bool,
    ) -> Result<(String, Reservation<'_, String>), SnapshotError> {
        for name in candidate_names(prefix, self.node_id, with_node) {
            let key = format!("{dir}{name}");
            let Some(reservation) = self.reserved.reserve(key.clone()) else {
                continue;
            };
            if handle.block_on(self.store.head(&key))?.is_none() {
                return Ok((name, reservation));
            }
        }
        unreachable!("an unbounded counter always finds a free name")
    }

    /// Uploads `archive` as a new snapshot in `dir`. Blocking (call from a blocking thread).
    pub fn create(
        &self,
        handle: &Handle,
        dir: &str,
        prefix: &str,
        with_node: bool,
        archive: Archive,
    ) -> Result<SnapshotDescription, SnapshotError> {
        let (name, _reservation) = self.reserve(handle, dir, prefix, with_node)?;
        if let Some(s) = &self.staging {
            std::fs::create_dir_all(s)?;
        }
        let key = format!("{dir}{name}");
        let summary = self.store.put_archive(handle, &key, archive, self.staging.as_deref())?;
        tracing::info!(bucket = %self.store.bucket(), key = %self.store.key(&key), size = summary.size,
            io_uring = summary.io_uring, staged = self.staging.is_some(), "snapshot uploaded to S3");
        Ok(SnapshotDescription {
            name,
            creation_time: Some(chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S").to_string()),
            size: summary.size,
            checksum: Some(summary.sha256),
        })
    }

    /// Snapshots in `dir`, sorted by name, each with its stored checksum.
    pub async fn list(&self, dir: &str) -> Result<Vec<SnapshotDescription>, SnapshotError> {
        let objects = self.store.list(dir).await?;
        let names: HashSet<&str> = objects.iter().map(|o| o.name.as_str()).collect();
        let snapshots: Vec<_> = objects
            .iter()
            .filter(|o| o.name.ends_with(".snapshot") && validate_name(&o.name).is_ok())
            .collect();
        let checksums = futures_util::future::join_all(snapshots.iter().map(|o| {
            let sidecar = format!("{}.checksum", o.name);
            let has = names.contains(sidecar.as_str());
            let key = format!("{dir}{sidecar}");
            async move {
                if !has {
                    return Ok(None);
                }
                Ok::<_, S3Error>(
                    self.store
                        .get_small(&key)
                        .await?
                        .map(|b| String::from_utf8_lossy(&b).trim().to_string()),
                )
            }
        }))
        .await;
        snapshots
            .into_iter()
            .zip(checksums)
            .map(|(o, checksum)| {
                Ok(SnapshotDescription {
                    name: o.name.clone(),
                    creation_time: format_time(o.modified),
                    size: o.size,
                    checksum: checksum?,
                })
            })
            .collect()
    }

    async fn existing(&self, dir: &str, name: &str) -> Result<String, SnapshotError> {
        validate_name(name)?;
        let key = format!("{dir}{name}");
        match self.store.head(&key).await? {
            Some(_) => Ok(key),
            None => Err(SnapshotError::NotFound(name.to_string())),
        }
    }

    /// Deletes a snapshot and its checksum object.
    pub async fn delete(&self, dir: &str, name: &str) -> Result<(), SnapshotError> {
        let key = self.existing(dir, name).await?;
        self.store.delete(&key).await?;
        self.store.delete(&format!("{key}.checksum")).await?;
        Ok(())
    }

    /// Streams a snapshot (or one range of it).
    pub async fn download(&self, dir: &str, name: &str, range: Option<&str>) -> Result<Download, SnapshotError> {
        validate_name(name)?;
        match self.store.get(&format!("{dir}{name}"), range).await {
            Err(S3Error::NotFound(_)) => Err(SnapshotError::NotFound(name.to_string())),
            other => Ok(other?),
        }
    }

    /// Downloads the snapshot at relative key `key` into `dest` and checks it against its
    /// checksum object when there is one. Returns the SHA-256. Blocking.
    pub fn fetch(&self, handle: &Handle, key: &str, dest: &Path, max_bytes: u64) -> Result<String, SnapshotError> {
        let (sha, _) = match self.store.download_to(handle, key, dest, max_bytes) {
            Err(S3Error::NotFound(_)) => return Err(SnapshotError::NotFound(key.to_string())),
            other => other?,
        };
        if let Some(stored) = handle.block_on(self.store.get_small(&format!("{key}.checksum")))? {
            let stored = String::from_utf8_lossy(&stored).trim().to_ascii_lowercase();
            if stored != sha {
                return Err(SnapshotError::ChecksumMismatch {
                    key: key.to_string(),
                    expected: stored,
                    actual: sha,
                });
            }
        }
        Ok(sha)
    }
}
