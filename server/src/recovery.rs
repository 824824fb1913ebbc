//! Snapshot recovery sources (`file://` inside the snapshots folder, `http://` downloads) and
//! start-up restores. Unpacking and checking archives is `quiver_io::restore`.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

pub use quiver_io::restore::{Expect, HashingReader, RecoveryError, invalid, safe_path, unpack, unpack_hashed};
use quiver_io::snapshot::MANIFEST;

/// Checks a client checksum: 64 hex characters.
pub fn parse_checksum(c: &str) -> Option<String> {
    (c.len() == 64 && c.bytes().all(|b| b.is_ascii_hexdigit())).then(|| c.to_ascii_lowercase())
}

/// Resolves a `file://` location, which must lie inside `snapshots_root` (as Qdrant requires).
pub fn local_path(location: &str, snapshots_root: &Path) -> Result<PathBuf, RecoveryError> {
    let raw = location
        .strip_prefix("file://")
        .ok_or_else(|| invalid("not a file:// location"))?;
    let decoded = percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| invalid("location is not UTF-8"))?;
    let path = Path::new(decoded.as_ref());
    let canonical = path.canonicalize().map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => invalid(format!("snapshot file {} does not exist", path.display())),
        _ => RecoveryError::Io(e),
    })?;
    let root = snapshots_root.canonicalize()?;
    if !canonical.starts_with(&root) {
        return Err(RecoveryError::Forbidden(format!(
            "file {} is outside the snapshots folder {}; only snapshots there can be recovered from a file",
            path.display(),
            root.display()
        )));
    }
    if !canonical.is_file() {
        return Err(invalid(format!("{} is not a file", path.display())));
    }
    Ok(canonical)
}

/// Downloads an `http(s)://` URL into `dest`, hashing as the bytes arrive; bounded in size and
/// time. TLS certificates are checked against the webpki root store.
pub fn download(url: &str, dest: &Path, max_bytes: u64) -> Result<String, RecoveryError> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_connect(Some(std::time::Duration::from_secs(10)))
        .timeout_recv_response(Some(std::time::Duration::from_secs(30)))
        .timeout_recv_body(Some(std::time::Duration::from_secs(3600)))
        .http_status_as_error(false)
        .build()
        .new_agent();
    let mut resp = agent
        .get(url)
        .call()
        .map_err(|e| invalid(format!("cannot download {url}: {e}")))?;
    if !resp.status().is_success() {
        return Err(invalid(format!("downloading {url} answered HTTP {}", resp.status())));
    }
    let body = resp
        .body_mut()
        .with_config()
        .limit(max_bytes.saturating_add(1))
        .reader();
    let mut hashing = HashingReader::new(body, max_bytes);
    let mut out = fs::File::create(dest)?;
    io::copy(&mut hashing, &mut out).map_err(|e| match e.kind() {
        io::ErrorKind::FileTooLarge => RecoveryError::Invalid(e.to_string()),
        _ => invalid(format!("download of {url} failed: {e}")),
    })?;
    out.sync_all()?;
    Ok(hashing.finish().0)
}

/// Restores `path` (a collection snapshot) as collection `name` at start-up. Without `force`,
/// an existing collection is an error.
pub fn recover_at_startup(
    engine: &quiver_engine::Engine,
    path: &Path,
    name: &str,
    force: bool,
    max_unpacked: u64,
) -> Result<(), String> {
    if engine.collection(name).is_ok() && !force {
        return Err(format!(
            "collection `{name}` already exists; pass --force-snapshot to overwrite it with {}",
            path.display()
        ));
    }
    let file = fs::File::open(path).map_err(|e| format!("cannot open snapshot {}: {e}", path.display()))?;
    let staging = engine.staging_dir();
    let result = unpack_hashed(file, &staging, Expect::Collection, max_unpacked)
        .map_err(|e| format!("snapshot {}: {e}", path.display()))
        .and_then(|_| {
            engine
                .install_collection(name, &staging)
                .map(|_| ())
                .map_err(|e| format!("snapshot {}: {e}", path.display()))
        });
    let _ = fs::remove_dir_all(&staging);
    result
}

#[derive(serde::Deserialize)]
struct FullConfig {
    collections_mapping: BTreeMap<String, String>,
    #[serde(default)]
    collections_aliases: BTreeMap<String, String>,
}

/// Restores a full-storage snapshot at start-up: every collection it holds, then its aliases.
pub fn recover_storage_at_startup(
    engine: &quiver_engine::Engine,
    path: &Path,
    force: bool,
    max_unpacked: u64,
) -> Result<Vec<String>, String> {
    let ctx = |e: &dyn std::fmt::Display| format!("storage snapshot {}: {e}", path.display());
    let file = fs::File::open(path).map_err(|e| ctx(&e))?;
    let mut archive = tar::Archive::new(file);
    let mut entries = archive.entries().map_err(|e| ctx(&e))?;
    let mut first = entries
        .next()
        .ok_or_else(|| ctx(&"empty archive"))?
        .map_err(|e| ctx(&e))?;
    let first_path = safe_path(&first.path().map_err(|e| ctx(&e))?).map_err(|e| ctx(&e))?;
    if first_path == MANIFEST {
        return Err(ctx(
            &"this is a collection snapshot, not a full-storage snapshot (use --snapshot path:collection)",
        ));
    }
    if first_path != "config.json" || first.size() > 64 << 20 {
        return Err(ctx(&"a full-storage snapshot starts with config.json"));
    }
    let mut raw = Vec::new();
    first.read_to_end(&mut raw).map_err(|e| ctx(&e))?;
    let config: FullConfig = serde_json::from_slice(&raw).map_err(|e| ctx(&format!("config.json: {e}")))?;
    let by_member: BTreeMap<&str, &str> = config
        .collections_mapping
        .iter()
        .map(|(c, m)| (m.as_str(), c.as_str()))
        .collect();
    if !force && let Some(existing) = config.collections_mapping.keys().find(|c| engine.collection(c).is_ok()) {
        return Err(ctx(&format!(
            "collection `{existing}` already exists; pass --force-snapshot to overwrite it"
        )));
    }
    let mut restored = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| ctx(&e))?;
        let member = safe_path(&entry.path().map_err(|e| ctx(&e))?).map_err(|e| ctx(&e))?;
        if entry.header().entry_type() != tar::EntryType::Regular {
            return Err(ctx(&format!("member `{member}` is not a regular file")));
        }
        let name = *by_member
            .get(member.as_str())
            .ok_or_else(|| ctx(&format!("member `{member}` is not in collections_mapping")))?;
        let staging = engine.staging_dir();
        let result = unpack(entry, &staging, Expect::Collection, max_unpacked)
            .map_err(|e| ctx(&format!("{member}: {e}")))
            .and_then(|_| {
                engine
                    .install_collection(name, &staging)
                    .map(|_| ())
                    .map_err(|e| ctx(&format!("{member}: {e}")))
            });
        let _ = fs::remove_dir_all(&staging);
        result?;
        restored.push(name.to_string());
    }
    if let Some(missing) = config.collections_mapping.keys().find(|c| !restored.contains(c)) {
        return Err(ctx(&format!(
            "collection `{missing}` is listed but its snapshot is missing"
        )));
    }
    let actions: Vec<quiver_engine::AliasAction> = config
        .collections_aliases
        .into_iter()
        .map(|(alias, collection)| quiver_engine::AliasAction::Create { collection, alias })
        .collect();
    engine
        .update_aliases(&actions)
        .map_err(|e| ctx(&format!("aliases: {e}")))?;
    Ok(restored)
}
