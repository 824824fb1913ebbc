//! The archive layouts of Quiver snapshots.
//!
//! A collection snapshot holds `manifest.json` (format version, kind, collection config, every
//! member's path, size and CRC32), `config.json`, then each shard's files under `<shard id>/`,
//! exactly as the collection directory holds them. A shard snapshot holds the shard's files at
//! the archive root. A full snapshot holds `config.json` (`collections_mapping`,
//! `collections_aliases`) and one member per collection containing exactly the bytes of that
//! collection's snapshot. Every size is known when the archive is planned, so each is written in
//! one sequential pass.

use std::collections::BTreeMap;
use std::fs::File;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::{Archive, ArchiveError};

/// A file frozen for a snapshot: its path in the shard, an open handle, its size and CRC32.
pub struct PinnedMember {
    /// Path relative to the shard directory.
    pub path: String,
    /// Handle opened when the shard was pinned.
    pub file: Arc<File>,
    /// Bytes to take.
    pub size: u64,
    /// CRC32 of those bytes.
    pub crc32: u32,
}

/// Version of the snapshot archive layout.
pub const SNAPSHOT_FORMAT_VERSION: u32 = 1;
/// Name of the manifest, the first member of collection and shard snapshots.
pub const MANIFEST: &str = "manifest.json";
/// One file entry of the archive manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManifestFile {
    /// Member path.
    pub path: String,
    /// Bytes.
    pub size: u64,
    /// CRC32 of the bytes.
    pub crc32: u32,
}

/// The manifest of a collection or shard snapshot.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SnapshotManifest {
    /// [`SNAPSHOT_FORMAT_VERSION`].
    pub format_version: u32,
    /// `collection` or `shard`.
    pub kind: String,
    /// Source collection name.
    pub collection: String,
    /// Shard id for shard snapshots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard_id: Option<u32>,
    /// Collection configuration.
    pub config: Value,
    /// Every data member.
    pub files: Vec<ManifestFile>,
}

/// Builds the archive of a pinned collection (or of one pinned shard when `shard` is given).
pub fn collection_archive(
    collection: &str,
    config: &Value,
    shards: Vec<(u32, Vec<PinnedMember>)>,
    shard: Option<u32>,
) -> Result<Archive, ArchiveError> {
    let prefix = |id: u32, p: &str| {
        if shard.is_some() {
            p.to_string()
        } else {
            format!("{id}/{p}")
        }
    };
    let files: Vec<ManifestFile> = shards
        .iter()
        .flat_map(|(id, fs)| {
            fs.iter().map(move |f| ManifestFile {
                path: prefix(*id, &f.path),
                size: f.size,
                crc32: f.crc32,
            })
        })
        .collect();
    let manifest = SnapshotManifest {
        format_version: SNAPSHOT_FORMAT_VERSION,
        kind: if shard.is_some() { "shard" } else { "collection" }.to_string(),
        collection: collection.to_string(),
        shard_id: shard,
        config: config.clone(),
        files,
    };
    let mut a = Archive::new(now_secs());
    a.add_bytes(
        MANIFEST,
        serde_json::to_vec_pretty(&manifest).map_err(std::io::Error::other)?,
    )?;
    a.add_bytes(
        "config.json",
        serde_json::to_vec_pretty(config).map_err(std::io::Error::other)?,
    )?;
    for (id, files) in shards {
        for f in files {
            a.add_file(prefix(id, &f.path), f.file, f.size)?;
        }
    }
    Ok(a)
}

/// Builds a full-storage archive from per-collection archives.
pub fn full_archive(
    members: Vec<(String, String, Archive)>,
    aliases: BTreeMap<String, String>,
) -> Result<Archive, ArchiveError> {
    let mapping: BTreeMap<&str, &str> = members.iter().map(|(c, m, _)| (c.as_str(), m.as_str())).collect();
    let config = json!({"collections_mapping": mapping, "collections_aliases": aliases});
    let mut a = Archive::new(now_secs());
    a.add_bytes(
        "config.json",
        serde_json::to_vec_pretty(&config).map_err(std::io::Error::other)?,
    )?;
    for (_, member, inner) in members {
        a.add_archive(member, inner)?;
    }
    Ok(a)
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
