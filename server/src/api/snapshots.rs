//! Snapshot routes (collection, shard, full storage) and alias routes.

use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use hyper::{Response, StatusCode, header};
use quiver_engine::{AliasAction, Collection};
use quiver_io::{Backend, Sink};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::mpsc;

use super::models::UpdateParams;
use super::response::{self, ApiError, Body};
use super::{AppState, Request};
use crate::snapshots::{SnapshotError, collection_archive, stamp};
use crate::snapshots_s3::S3Snapshots;
use quiver_io::s3::S3Error;
use quiver_io::snapshot::full_archive;

impl From<SnapshotError> for ApiError {
    fn from(e: SnapshotError) -> Self {
        match e {
            SnapshotError::InvalidName(_) | SnapshotError::ChecksumMismatch { .. } => ApiError::bad(e.to_string()),
            SnapshotError::NotFound(_) => ApiError::not_found(e.to_string()),
            SnapshotError::S3(S3Error::NotFound(ref key)) => ApiError::not_found(format!("Snapshot {key} not found")),
            SnapshotError::S3(S3Error::Request { status: Some(416), .. }) => {
                ApiError::new(StatusCode::RANGE_NOT_SATISFIABLE, e.to_string())
            }
            SnapshotError::S3(S3Error::TooLarge { .. }) => ApiError::bad(e.to_string()),
            other => ApiError::internal(other.to_string()),
        }
    }
}

fn join_err(e: tokio::task::JoinError) -> ApiError {
    ApiError::internal(format!("snapshot task failed: {e}"))
}

/// Snapshot creation waits by default, as in Qdrant.
fn wait_param(req: &Request) -> Result<bool, ApiError> {
    Ok(req.params::<UpdateParams>()?.wait.unwrap_or(true))
}

/// Runs `job` now (`wait`) or in the background (202).
async fn run_or_accept<F>(req: &Request, wait: bool, job: F) -> Result<Response<Body>, ApiError>
where
    F: std::future::Future<Output = Result<crate::snapshots::SnapshotDescription, ApiError>> + Send + 'static,
{
    if wait {
        let d = job.await?;
        return Ok(response::ok(&d, req.started));
    }
    tokio::spawn(async move {
        if let Err(e) = job.await {
            tracing::warn!(error = %e.message, "background snapshot failed");
        }
    });
    Ok(response::accepted(req.started))
}

/// Where the snapshots a route addresses are kept: a local folder, or a folder of the S3 store.
pub enum Place {
    /// A folder under `snapshots_path`.
    Local(PathBuf),
    /// A relative key folder (ending in `/`) in the S3 store.
    S3(Arc<S3Snapshots>, String),
}

/// Writes `archive` as a new snapshot in `place` (on a blocking thread).
async fn store_archive(
    state: &AppState,
    place: Place,
    prefix: String,
    with_node: bool,
    archive: quiver_io::Archive,
) -> Result<crate::snapshots::SnapshotDescription, ApiError> {
    let snaps = state.snapshots.clone();
    let handle = tokio::runtime::Handle::current();
    let created = tokio::task::spawn_blocking(move || match place {
        Place::Local(dir) => snaps.create(&dir, &prefix, with_node, archive),
        Place::S3(s3, dir) => s3.create(&handle, &dir, &prefix, with_node, archive),
    })
    .await
    .map_err(join_err)?;
    Ok(created?)
}

pub async fn create_collection(state: &Arc<AppState>, req: &Request, name: &str) -> Result<Response<Body>, ApiError> {
    let wait = wait_param(req)?;
    let place = place(state, &Scope::Collection(name))?;
    let c = state.collection(name)?;
    let st = state.clone();
    run_or_accept(req, wait, async move {
        let pin = c.pin().await?;
        let cname = c.name().to_string();
        let archive = collection_archive(&cname, &pin.config, pin.shards, None)?;
        store_archive(&st, place, cname, true, archive).await
    })
    .await
}

pub async fn create_shard(
    state: &Arc<AppState>,
    req: &Request,
    name: &str,
    shard: &str,
) -> Result<Response<Body>, ApiError> {
    let wait = wait_param(req)?;
    let place = place(state, &Scope::Shard(name, shard))?;
    let shard = parse_shard(shard)?;
    let c = state.collection(name)?;
    let st = state.clone();
    run_or_accept(req, wait, async move {
        let files = c.pin_shard(shard).await?;
        let cname = c.name().to_string();
        let archive = collection_archive(&cname, &c.config(), vec![(shard, files)], Some(shard))?;
        store_archive(&st, place, format!("{cname}-shard-{shard}"), true, archive).await
    })
    .await
}

pub async fn create_full(state: &Arc<AppState>, req: &Request) -> Result<Response<Body>, ApiError> {
    let wait = wait_param(req)?;
    let place = place(state, &Scope::Full)?;
    let engine = state.engine.clone();
    let st = state.clone();
    run_or_accept(req, wait, async move {
        let ts = stamp();
        let mut members = Vec::new();
        for name in engine.list_collections() {
            let Ok(c) = engine.collection(&name) else { continue };
            let pin = c.pin().await?;
            let archive = collection_archive(&name, &pin.config, pin.shards, None)?;
            members.push((
                name.clone(),
                format!("{name}-{}-{ts}.snapshot", st.snapshots.node_id()),
                archive,
            ));
        }
        let archive = full_archive(members, engine.aliases()).map_err(SnapshotError::from)?;
        store_archive(&st, place, "full-snapshot".to_string(), false, archive).await
    })
    .await
}

fn parse_shard(s: &str) -> Result<u32, ApiError> {
    s.parse().map_err(|_| ApiError::bad(format!("invalid shard id `{s}`")))
}

/// Folder of the snapshots a route addresses: a collection's, a shard's, or the full ones.
pub enum Scope<'a> {
    Collection(&'a str),
    Shard(&'a str, &'a str),
    Full,
}

/// Resolves a scope (the collection must exist, the shard must be one of it) to its place.
pub fn place(state: &AppState, scope: &Scope<'_>) -> Result<Place, ApiError> {
    let (local, rel) = match scope {
        Scope::Collection(c) => {
            let name = state.collection(c)?.name().to_string();
            (
                state.snapshots.collection_dir(&name),
                S3Snapshots::collection_dir(&name),
            )
        }
        Scope::Shard(c, s) => {
            let coll: Arc<Collection> = state.collection(c)?;
            let shard = parse_shard(s)?;
            if shard >= coll.config().shard_number {
                return Err(ApiError::not_found(format!("Shard {shard} does not exist")));
            }
            (
                state.snapshots.shard_dir(coll.name(), shard),
                S3Snapshots::shard_dir(coll.name(), shard),
            )
        }
        Scope::Full => (state.snapshots.root().to_path_buf(), S3Snapshots::full_dir()),
    };
    Ok(match &state.s3 {
        Some(s3) => Place::S3(s3.clone(), rel),
        None => Place::Local(local),
    })
}

pub async fn list(state: &Arc<AppState>, req: &Request, scope: Scope<'_>) -> Result<Response<Body>, ApiError> {
    let listed = match place(state, &scope)? {
        Place::Local(dir) => state.snapshots.list(&dir)?,
        Place::S3(s3, dir) => s3.list(&dir).await?,
    };
    Ok(response::ok(&listed, req.started))
}

pub async fn delete(
    state: &Arc<AppState>,
    req: &Request,
    scope: Scope<'_>,
    name: &str,
) -> Result<Response<Body>, ApiError> {
    match place(state, &scope)? {
        Place::Local(dir) => state.snapshots.delete(&dir, name)?,
        Place::S3(s3, dir) => s3.delete(&dir, name).await?,
    }
    Ok(response::ok(&true, req.started))
}

/// Parses a single `bytes=` range against a file of `len` bytes.
fn parse_range(h: &str, len: u64) -> Option<(u64, u64)> {
    let spec = h.strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let (start, end) = match (a.trim(), b.trim()) {
        ("", n) => {
            let n: u64 = n.parse().ok()?;
            (len.checked_sub(n.min(len))?, len.checked_sub(1)?)
        }
        (s, "") => (s.parse().ok()?, len.checked_sub(1)?),
        (s, e) => (s.parse().ok()?, e.parse::<u64>().ok()?.min(len.checked_sub(1)?)),
    };
    (start <= end && end < len).then_some((start, end))
}

/// Streams a snapshot file, honouring a single `Range`.
pub async fn download(
    state: &Arc<AppState>,
    req: &Request,
    scope: Scope<'_>,
    name: &str,
) -> Result<Response<Body>, ApiError> {
    let dir = match place(state, &scope)? {
        Place::Local(dir) => dir,
        Place::S3(s3, dir) => return download_s3(&s3, req, &dir, name).await,
    };
    let path = state.snapshots.path(&dir, name)?;
    let mut file = std::fs::File::open(&path).map_err(|e| ApiError::internal(e.to_string()))?;
    let len = file.metadata().map_err(|e| ApiError::internal(e.to_string()))?.len();
    let (status, start, end) = match req.range.as_deref() {
        None => (StatusCode::OK, 0, len),
        Some(h) => match parse_range(h, len) {
            Some((s, e)) => (StatusCode::PARTIAL_CONTENT, s, e + 1),
            None => {
                let mut r = response::error(
                    &ApiError::new(
                        StatusCode::RANGE_NOT_SATISFIABLE,
                        format!("invalid range `{h}` for {len} bytes"),
                    ),
                    req.started,
                );
                r.headers_mut().insert(
                    header::CONTENT_RANGE,
                    format!("bytes */{len}").parse().expect("valid header"),
                );
                return Ok(r);
            }
        },
    };
    let (tx, body) = response::channel(4);
    tokio::task::spawn_blocking(move || {
        let send = |chunk: std::io::Result<Bytes>| tx.blocking_send(chunk).is_ok();
        if let Err(e) = file.seek(SeekFrom::Start(start)) {
            send(Err(e));
            return;
        }
        let mut left = end - start;
        let mut buf = vec![0u8; 1 << 20];
        while left > 0 {
            let want = left.min(buf.len() as u64) as usize;
            match file.read(&mut buf[..want]) {
                Ok(0) => {
                    send(Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "snapshot shrank while being read",
                    )));
                    return;
                }
                Ok(n) => {
                    left -= n as u64;
                    if !send(Ok(Bytes::copy_from_slice(&buf[..n]))) {
                        return; // client went away
                    }
                }
                Err(e) => {
                    send(Err(e));
                    return;
                }
            }
        }
    });
    let mut r = Response::new(body);
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(header::CONTENT_LENGTH, (end - start).into());
    h.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::ACCEPT_RANGES, header::HeaderValue::from_static("bytes"));
    if status == StatusCode::PARTIAL_CONTENT {
        h.insert(
            header::CONTENT_RANGE,
            format!("bytes {start}-{}/{len}", end - 1)
                .parse()
                .expect("valid header"),
        );
    }
    Ok(r)
}

/// Streams a snapshot from S3, passing `Range` through to `GetObject`.
async fn download_s3(s3: &S3Snapshots, req: &Request, dir: &str, name: &str) -> Result<Response<Body>, ApiError> {
    let dl = s3.download(dir, name, req.range.as_deref()).await?;
    let (tx, body) = response::channel(4);
    let mut stream = dl.body;
    tokio::spawn(async move {
        while let Some(chunk) = stream.next().await {
            let failed = chunk.is_err();
            if tx.send(chunk.map_err(std::io::Error::other)).await.is_err() || failed {
                return; // client went away, or the store's stream broke (the body then errors)
            }
        }
    });
    let mut r = Response::new(body);
    let h = r.headers_mut();
    h.insert(header::CONTENT_LENGTH, dl.content_length.into());
    h.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::ACCEPT_RANGES, header::HeaderValue::from_static("bytes"));
    if let Some(range) = dl.content_range.filter(|_| req.range.is_some()) {
        *r.status_mut() = StatusCode::PARTIAL_CONTENT;
        r.headers_mut().insert(
            header::CONTENT_RANGE,
            range
                .parse()
                .map_err(|_| ApiError::internal("S3 returned an invalid Content-Range"))?,
        );
    }
    Ok(r)
}

struct ChannelSink(mpsc::Sender<std::io::Result<Bytes>>);

impl Sink for ChannelSink {
    fn write_chunk(&mut self, chunk: &[u8]) -> std::io::Result<()> {
        self.0
            .blocking_send(Ok(Bytes::copy_from_slice(chunk)))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "client went away"))
    }
}

/// `GET /collections/{c}/shards/{id}/snapshot`: the archive produced straight into the response.
/// The shard is only held while it is pinned; a slow client slows this stream, not the shard.
pub async fn stream_shard(
    state: &Arc<AppState>,
    _req: &Request,
    name: &str,
    shard: &str,
) -> Result<Response<Body>, ApiError> {
    let shard = parse_shard(shard)?;
    let c = state.collection(name)?;
    let files = c.pin_shard(shard).await?;
    let archive = collection_archive(c.name(), &c.config(), vec![(shard, files)], Some(shard))?;
    let size = archive.size();
    let (tx, body) = response::channel(4);
    tokio::task::spawn_blocking(move || {
        let mut sink = ChannelSink(tx.clone());
        if let Err(e) = quiver_io::stream(archive, &mut sink, Backend::Auto) {
            tracing::warn!(error = %e, "shard snapshot stream ended early");
            let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
        }
    });
    let mut r = Response::new(body);
    r.headers_mut().insert(header::CONTENT_LENGTH, size.into());
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/x-tar"),
    );
    Ok(r)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateAlias {
    collection_name: String,
    alias_name: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeleteAlias {
    alias_name: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RenameAlias {
    old_alias_name: String,
    new_alias_name: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
enum AliasOp {
    #[serde(rename = "create_alias")]
    Create(CreateAlias),
    #[serde(rename = "delete_alias")]
    Delete(DeleteAlias),
    #[serde(rename = "rename_alias")]
    Rename(RenameAlias),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AliasActions {
    actions: Vec<AliasOp>,
}

pub async fn update_aliases(state: &Arc<AppState>, req: &Request) -> Result<Response<Body>, ApiError> {
    let body: AliasActions = req.json()?;
    let actions: Vec<AliasAction> = body
        .actions
        .into_iter()
        .map(|a| match a {
            AliasOp::Create(c) => AliasAction::Create {
                collection: c.collection_name,
                alias: c.alias_name,
            },
            AliasOp::Delete(d) => AliasAction::Delete { alias: d.alias_name },
            AliasOp::Rename(r) => AliasAction::Rename {
                old: r.old_alias_name,
                new: r.new_alias_name,
            },
        })
        .collect();
    let engine = state.engine.clone();
    tokio::task::spawn_blocking(move || engine.update_aliases(&actions))
        .await
        .map_err(join_err)??;
    Ok(response::ok(&true, req.started))
}

pub fn list_aliases(
    state: &Arc<AppState>,
    req: &Request,
    collection: Option<&str>,
) -> Result<Response<Body>, ApiError> {
    let target = match collection {
        Some(c) => Some(state.collection(c)?.name().to_string()),
        None => None,
    };
    let aliases: Vec<_> = state
        .engine
        .aliases()
        .into_iter()
        .filter(|(_, c)| target.as_ref().is_none_or(|t| t == c))
        .map(|(alias, c)| json!({"alias_name": alias, "collection_name": c}))
        .collect();
    Ok(response::ok(&json!({ "aliases": aliases }), req.started))
}

#[cfg(test)]
mod tests {
    use super::parse_range;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100), Some((0, 9)));
        assert_eq!(parse_range("bytes=90-", 100), Some((90, 99)));
        assert_eq!(parse_range("bytes=-10", 100), Some((90, 99)));
        assert_eq!(parse_range("bytes=50-500", 100), Some((50, 99)));
        assert_eq!(parse_range("bytes=100-", 100), None);
        assert_eq!(parse_range("bytes=5-1", 100), None);
        assert_eq!(parse_range("bytes=0-1,3-4", 100), None);
        assert_eq!(parse_range("items=0-1", 100), None);
    }
}
