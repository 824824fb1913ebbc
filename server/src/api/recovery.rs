//! Recovery routes: from a `file://` or `http://` location, or from a multipart upload, for
//! whole collections and single shards.
//!
//! On a single node there are no other replicas, so every `priority` (`replica`, `snapshot`,
//! `no_sync`) installs the snapshot's data, as Qdrant does; the value is validated and otherwise
//! only matters once replication exists.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::BodyStream;
use hyper::body::Incoming;
use hyper::{HeaderMap, Response, StatusCode, header};
use quiver_engine::EngineError;
use serde::Deserialize;

use super::response::{self, ApiError, Body};
use super::{AppState, Request};
use crate::recovery::{self, Expect, RecoveryError};

impl From<RecoveryError> for ApiError {
    fn from(e: RecoveryError) -> Self {
        match e {
            RecoveryError::Invalid(_) | RecoveryError::Checksum { .. } => ApiError::bad(e.to_string()),
            RecoveryError::Forbidden(_) => ApiError::new(StatusCode::FORBIDDEN, e.to_string()),
            RecoveryError::Io(_) => ApiError::internal(e.to_string()),
        }
    }
}

/// Errors of opening staged data are the archive's fault, not the server's.
fn staged_error(e: EngineError) -> ApiError {
    match e {
        EngineError::Corrupted(m) => ApiError::bad(format!("invalid snapshot: {m}")),
        other => other.into(),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RecoverBody {
    location: String,
    #[serde(default)]
    priority: Option<String>,
    #[serde(default)]
    checksum: Option<String>,
    /// Accepted for compatibility (used by Qdrant to fetch from other peers).
    #[allow(dead_code)]
    #[serde(default)]
    api_key: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct UploadParams {
    #[serde(default)]
    priority: Option<String>,
    #[serde(default)]
    checksum: Option<String>,
    #[serde(default)]
    wait: Option<bool>,
}

fn check_priority(p: Option<&str>) -> Result<(), ApiError> {
    match p {
        None | Some("replica" | "snapshot" | "no_sync") => Ok(()),
        Some(other) => Err(ApiError::bad(format!(
            "priority: unknown value `{other}`, expected one of `replica`, `snapshot`, `no_sync`"
        ))),
    }
}

fn check_checksum(c: Option<&str>) -> Result<Option<String>, ApiError> {
    c.map(|c| {
        recovery::parse_checksum(c)
            .ok_or_else(|| ApiError::bad("checksum must be 64 hexadecimal characters (a SHA-256)"))
    })
    .transpose()
}

/// Where recovered data goes.
#[derive(Clone)]
enum Target {
    Collection(String),
    Shard(String, u32),
}

impl Target {
    fn expect(&self) -> Expect {
        match self {
            Target::Collection(_) => Expect::Collection,
            Target::Shard(..) => Expect::Shard,
        }
    }
}

/// A snapshot file ready to unpack, with its SHA-256 when it was already computed on the way in.
struct Source {
    path: PathBuf,
    sha256: Option<String>,
    /// Removed afterwards (downloads and uploads); `false` for files of the snapshots folder.
    temporary: bool,
}

fn max_unpacked(state: &AppState) -> u64 {
    state.settings.storage.recovery_max_unpacked_mb.saturating_mul(1 << 20)
}

fn temp_file(state: &AppState, what: &str) -> Result<PathBuf, ApiError> {
    let dir = state.settings.temp_path();
    std::fs::create_dir_all(&dir).map_err(|e| ApiError::internal(format!("temp_path {}: {e}", dir.display())))?;
    Ok(dir.join(format!(".{what}-{}.tmp", uuid::Uuid::new_v4().simple())))
}

/// Unpacks and checks a source into `staging` (blocking); the temporary source is removed.
/// Returns the snapshot's manifest.
fn prepare(
    state: &AppState,
    expect: Expect,
    source: Source,
    checksum: Option<String>,
    staging: &std::path::Path,
) -> Result<quiver_io::snapshot::SnapshotManifest, ApiError> {
    let result = (|| -> Result<_, ApiError> {
        if let (Some(want), Some(have)) = (&checksum, &source.sha256)
            && want != have
        {
            return Err(RecoveryError::Checksum {
                expected: want.clone(),
                actual: have.clone(),
            }
            .into());
        }
        let file = std::fs::File::open(&source.path).map_err(|e| ApiError::internal(e.to_string()))?;
        let (manifest, sha) = recovery::unpack_hashed(file, staging, expect, max_unpacked(state))?;
        if let Some(want) = &checksum
            && *want != sha
        {
            return Err(RecoveryError::Checksum {
                expected: want.clone(),
                actual: sha,
            }
            .into());
        }
        Ok(manifest)
    })();
    if source.temporary {
        let _ = std::fs::remove_file(&source.path);
    }
    result
}

/// Unpacks, checks and installs. Staging and temporary files are removed whatever happens.
async fn run_recovery(
    state: Arc<AppState>,
    target: Target,
    source: Source,
    checksum: Option<String>,
) -> Result<(), ApiError> {
    let staging = state.engine.staging_dir();
    let (st, stg, expect) = (state.clone(), staging.clone(), target.expect());
    let prepared = tokio::task::spawn_blocking(move || prepare(&st, expect, source, checksum, &stg))
        .await
        .map_err(|e| ApiError::internal(format!("recovery task failed: {e}")))
        .and_then(|r| r);
    let result = match (prepared, &target) {
        (Err(e), _) => Err(e),
        (Ok(_), Target::Collection(name)) => {
            let (engine, name, stg) = (state.engine.clone(), name.clone(), staging.clone());
            tokio::task::spawn_blocking(move || engine.install_collection(&name, &stg))
                .await
                .map_err(|e| ApiError::internal(format!("recovery task failed: {e}")))
                .and_then(|r| r.map(|_| ()).map_err(staged_error))
        }
        (Ok(manifest), Target::Shard(name, shard)) => {
            let shard = *shard;
            match state.collection(name) {
                Err(e) => Err(e),
                Ok(c) => {
                    let cfg = c.config();
                    match serde_json::from_value::<quiver_engine::CollectionConfig>(manifest.config) {
                        Err(e) => Err(ApiError::bad(format!("invalid snapshot: config: {e}"))),
                        Ok(theirs)
                            if theirs.vectors != cfg.vectors
                                || theirs.sparse_vectors.keys().ne(cfg.sparse_vectors.keys()) =>
                        {
                            Err(ApiError::bad(
                                "the shard snapshot's vectors do not match this collection's",
                            ))
                        }
                        Ok(_) => c.replace_shard(shard, staging.clone()).await.map_err(staged_error),
                    }
                }
            }
        }
    };
    let _ = std::fs::remove_dir_all(&staging);
    result
}

async fn finish(
    state: &Arc<AppState>,
    target: Target,
    source: Source,
    checksum: Option<String>,
    wait: bool,
    started: Instant,
) -> Result<Response<Body>, ApiError> {
    let job = tokio::spawn(run_recovery(state.clone(), target, source, checksum));
    if !wait {
        tokio::spawn(async move {
            match job.await {
                Ok(Err(e)) => tracing::warn!(error = %e.message, "background recovery failed"),
                Err(e) => tracing::warn!(error = %e, "background recovery panicked"),
                Ok(Ok(())) => tracing::info!("background recovery finished"),
            }
        });
        return Ok(response::accepted(started));
    }
    job.await
        .map_err(|e| ApiError::internal(format!("recovery task failed: {e}")))??;
    Ok(response::ok(&true, started))
}

fn target_of(state: &AppState, collection: &str, shard: Option<&str>) -> Result<Target, ApiError> {
    match shard {
        None => {
            // Recovering into an alias means the collection it points at.
            let name = state
                .engine
                .collection(collection)
                .map(|c| c.name().to_string())
                .unwrap_or_else(|_| collection.to_string());
            quiver_engine::engine::validate_collection_name(&name)?;
            Ok(Target::Collection(name))
        }
        Some(s) => {
            let c = state.collection(collection)?;
            let id: u32 = s
                .parse()
                .map_err(|_| ApiError::bad(format!("invalid shard id `{s}`")))?;
            if id >= c.config().shard_number {
                return Err(ApiError::not_found(format!("Shard {id} does not exist")));
            }
            Ok(Target::Shard(c.name().to_string(), id))
        }
    }
}

/// `PUT /collections/{c}/snapshots/recover` and the shard variant.
pub async fn recover(
    state: &Arc<AppState>,
    req: &Request,
    collection: &str,
    shard: Option<&str>,
) -> Result<Response<Body>, ApiError> {
    let body: RecoverBody = req.json()?;
    check_priority(body.priority.as_deref())?;
    let checksum = check_checksum(body.checksum.as_deref())?;
    let wait = req.params::<super::models::UpdateParams>()?.wait.unwrap_or(true);
    let target = target_of(state, collection, shard)?;
    let source = if body.location.starts_with("file://") {
        Source {
            path: recovery::local_path(&body.location, &state.settings.storage.snapshots_path)?,
            sha256: None,
            temporary: false,
        }
    } else if body.location.starts_with("http://") || body.location.starts_with("https://") {
        if !state.settings.service.enable_snapshot_url_recovery {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "snapshot recovery from URLs is disabled (service.enable_snapshot_url_recovery)",
            ));
        }
        let dest = temp_file(state, "download")?;
        let (url, limit, d2) = (body.location.clone(), max_unpacked(state), dest.clone());
        let sha = tokio::task::spawn_blocking(move || recovery::download(&url, &d2, limit))
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?;
        match sha {
            Ok(sha) => Source {
                path: dest,
                sha256: Some(sha),
                temporary: true,
            },
            Err(e) => {
                let _ = std::fs::remove_file(&dest);
                return Err(e.into());
            }
        }
    } else if body.location.starts_with("s3://") || !body.location.contains("://") {
        stored_source(state, &body.location, &target).await?
    } else {
        return Err(ApiError::bad(
            "location must be a file://, http(s):// or s3:// URL, or the name of a stored snapshot",
        ));
    };
    finish(state, target, source, checksum, wait, req.started).await
}

/// A snapshot of the configured snapshot storage: `s3://<bucket>/<key>` (the configured bucket,
/// under its `snapshots/` folder), or a bare snapshot name, looked up in the target collection's
/// (or shard's) snapshot folder, in S3 or on local disk, whichever the storage is.
/// S3 objects are downloaded to `temp_path` and checked against their checksum object.
async fn stored_source(state: &Arc<AppState>, location: &str, target: &Target) -> Result<Source, ApiError> {
    let (collection, shard) = match target {
        Target::Collection(c) => (c.as_str(), None),
        Target::Shard(c, s) => (c.as_str(), Some(*s)),
    };
    let rel = match location.strip_prefix("s3://") {
        Some(rest) => {
            let s3 = state
                .s3
                .as_ref()
                .ok_or_else(|| ApiError::bad("s3:// locations need storage.snapshots_config.snapshots_storage: s3"))?;
            let (bucket, key) = rest
                .split_once('/')
                .ok_or_else(|| ApiError::bad("an s3:// location is s3://<bucket>/<key>"))?;
            let store = s3.store();
            let rel = key
                .strip_prefix(store.key("").as_str())
                .filter(|r| r.starts_with("snapshots/"))
                .filter(|r| r.split('/').all(|c| !c.is_empty() && c != "." && c != ".."));
            match rel {
                Some(rel) if bucket == store.bucket() => rel.to_string(),
                _ => {
                    return Err(ApiError::new(
                        StatusCode::FORBIDDEN,
                        format!(
                            "only snapshots under s3://{}/{}snapshots/ can be recovered",
                            store.bucket(),
                            store.key("")
                        ),
                    ));
                }
            }
        }
        None => {
            crate::snapshots::validate_name(location)?;
            let dir = match shard {
                None => crate::snapshots_s3::S3Snapshots::collection_dir(collection),
                Some(s) => crate::snapshots_s3::S3Snapshots::shard_dir(collection, s),
            };
            if state.s3.is_none() {
                let local = match shard {
                    None => state.snapshots.collection_dir(collection),
                    Some(s) => state.snapshots.shard_dir(collection, s),
                };
                return Ok(Source {
                    path: state.snapshots.path(&local, location)?,
                    sha256: None,
                    temporary: false,
                });
            }
            format!("{dir}{location}")
        }
    };
    let s3 = state.s3.clone().expect("checked above");
    let dest = temp_file(state, "s3-download")?;
    let (d2, limit, handle) = (dest.clone(), max_unpacked(state), tokio::runtime::Handle::current());
    let fetched = tokio::task::spawn_blocking(move || s3.fetch(&handle, &rel, &d2, limit))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    match fetched {
        Ok(sha) => Ok(Source {
            path: dest,
            sha256: Some(sha),
            temporary: true,
        }),
        Err(e) => {
            let _ = std::fs::remove_file(&dest);
            Err(e.into())
        }
    }
}

/// `POST /collections/{c}/snapshots/upload` and the shard variant: the `snapshot` field of a
/// multipart body is streamed to `temp_path` (hashed on the way), then recovered.
pub async fn upload(
    state: &Arc<AppState>,
    headers: &HeaderMap,
    query: &str,
    body: Incoming,
    collection: &str,
    shard: Option<&str>,
    started: Instant,
) -> Result<Response<Body>, ApiError> {
    let params: UploadParams = if query.is_empty() {
        UploadParams::default()
    } else {
        serde_urlencoded::from_str(query).map_err(|e| ApiError::bad(format!("Query string error: {e}")))?
    };
    check_priority(params.priority.as_deref())?;
    let checksum = check_checksum(params.checksum.as_deref())?;
    let target = target_of(state, collection, shard)?;
    let ctype = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let boundary = multer::parse_boundary(ctype)
        .map_err(|_| ApiError::bad("expected a multipart/form-data body with a `snapshot` field"))?;
    let stream = BodyStream::new(body).filter_map(|frame| async move {
        match frame {
            Ok(f) => f.into_data().ok().map(Ok::<Bytes, hyper::Error>),
            Err(e) => Some(Err(e)),
        }
    });
    let mut multipart = multer::Multipart::new(stream, boundary);
    let dest = temp_file(state, "upload")?;
    let limit = max_unpacked(state).saturating_mul(2);
    let mut received = None;
    while let Some(mut field) = multipart
        .next_field()
        .await
        .map_err(|e| ApiError::bad(format!("malformed multipart body: {e}")))?
    {
        if field.name() != Some("snapshot") {
            continue;
        }
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(8);
        let d2 = dest.clone();
        let writer = tokio::task::spawn_blocking(move || -> std::io::Result<(String, u64)> {
            use sha2::Digest;
            use std::io::Write;
            let mut out = std::fs::File::create(&d2)?;
            let mut sha = sha2::Sha256::new();
            let mut n = 0u64;
            while let Some(chunk) = rx.blocking_recv() {
                sha.update(&chunk);
                out.write_all(&chunk)?;
                n += chunk.len() as u64;
            }
            out.sync_all()?;
            Ok((sha.finalize().iter().map(|b| format!("{b:02x}")).collect(), n))
        });
        let mut total = 0u64;
        let mut failure = None;
        loop {
            match field.chunk().await {
                Ok(Some(chunk)) => {
                    total += chunk.len() as u64;
                    if total > limit {
                        failure = Some(ApiError::new(
                            StatusCode::PAYLOAD_TOO_LARGE,
                            format!("uploaded snapshot exceeds {limit} bytes"),
                        ));
                        break;
                    }
                    if tx.send(chunk).await.is_err() {
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    failure = Some(ApiError::bad(format!("upload interrupted: {e}")));
                    break;
                }
            }
        }
        drop(tx);
        let written = writer.await.map_err(|e| ApiError::internal(e.to_string()))?;
        if let Some(f) = failure {
            let _ = std::fs::remove_file(&dest);
            return Err(f);
        }
        let (sha, _) = written.map_err(|e| {
            let _ = std::fs::remove_file(&dest);
            ApiError::internal(format!("storing the upload: {e}"))
        })?;
        received = Some(sha);
        break;
    }
    let Some(sha) = received else {
        let _ = std::fs::remove_file(&dest);
        return Err(ApiError::bad("the multipart body has no `snapshot` field"));
    };
    let source = Source {
        path: dest,
        sha256: Some(sha),
        temporary: true,
    };
    finish(state, target, source, checksum, params.wait.unwrap_or(true), started).await
}

/// True for the upload routes, whose bodies are streamed instead of read whole.
pub fn is_upload(method: &hyper::Method, segments: &[String]) -> bool {
    let s: Vec<&str> = segments.iter().map(String::as_str).collect();
    method == hyper::Method::POST
        && matches!(
            s.as_slice(),
            ["collections", _, "snapshots", "upload"] | ["collections", _, "shards", _, "snapshots", "upload"]
        )
}

/// Collection and shard named by an upload route.
pub fn upload_target(segments: &[String]) -> (&str, Option<&str>) {
    match segments.len() {
        4 => (&segments[1], None),
        _ => (&segments[1], Some(segments[3].as_str())),
    }
}
