//! S3 snapshot storage (feature `s3`): archives streamed straight into multipart uploads, and the
//! list / get / delete / download operations the snapshot API needs.
//!
//! ## Memory
//!
//! The archive pipeline hands its windows, in order, to a [`MultipartUpload`]. It copies them
//! into the part being filled; a full part is sent as one `UploadPart` while the next one fills.
//! At most `parts_in_flight` parts are being sent; when that many are, the pipeline waits for one
//! to finish and takes its buffer back for the next part. Peak memory is therefore about
//! `part_size × (parts_in_flight + 1)` (plus the pipeline's own fixed windows), whatever the
//! archive size. The part size grows beyond the configured one only when the archive would
//! otherwise need more than S3's 10,000 parts; the archive size is known before the first byte.
//!
//! ## Never a truncated object
//!
//! An upload is completed only after every byte the archive plan promised went into a part and
//! every part was acknowledged, and after the `<key>.checksum` object was stored. Any error of a
//! source file, the network or the server aborts the multipart upload instead
//! (`AbortMultipartUpload`). When even the abort fails (the server is gone), the upload is kept
//! in a list of pending aborts, retried before the next write to the store; a bucket lifecycle
//! rule (`AbortIncompleteMultipartUpload`) is the backstop for a process that dies meanwhile.
//!
//! ## Retries
//!
//! Each request, and so each part, is retried by the SDK's standard retry strategy on transient
//! errors (5xx, throttling, connection resets and refusals, timeouts) with exponential backoff and
//! jitter, up to `max_attempts`. Parts are sent from an in-memory `Bytes`, so a retry resends
//! the same bytes without re-reading anything.
//!
//! The blocking functions here (`upload`, `put_archive`, `download_to`) drive async requests
//! with [`Handle::block_on`]: call them from a blocking thread (`spawn_blocking`), never from
//! inside an async task.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use aws_sdk_s3::Client;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use bytes::Bytes;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio::runtime::Handle;
use tokio::task::JoinSet;

use crate::{Archive, ArchiveError, Backend, Sink, Summary};

/// S3's smallest part (but for the last one).
pub const MIN_PART: u64 = 5 << 20;
/// S3's largest number of parts in one upload.
pub const MAX_PARTS: u64 = 10_000;
const MIB: u64 = 1 << 20;

/// `storage.snapshots_config.s3_config`, as Qdrant's, plus the multipart settings.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct S3Config {
    /// Bucket holding the snapshots (must exist).
    pub bucket: String,
    /// Region (`AWS_REGION` / `AWS_DEFAULT_REGION` when unset; `us-east-1` at last).
    #[serde(default)]
    pub region: Option<String>,
    /// Access key (`AWS_ACCESS_KEY_ID` when unset).
    #[serde(default)]
    pub access_key: Option<String>,
    /// Secret key (`AWS_SECRET_ACCESS_KEY` when unset).
    #[serde(default)]
    pub secret_key: Option<String>,
    /// Endpoint of an S3-compatible server (`AWS_ENDPOINT_URL_S3` / `AWS_ENDPOINT_URL` when
    /// unset). When set, requests use path-style addressing, which such servers expect.
    #[serde(default)]
    pub endpoint_url: Option<String>,
    /// Key prefix under which `snapshots/...` is kept (none by default).
    #[serde(default)]
    pub prefix: Option<String>,
    /// Multipart part size in MiB (default 64); grown automatically to stay under 10,000 parts.
    #[serde(default)]
    pub part_size_mb: Option<u64>,
    /// Parts sent concurrently (default 4).
    #[serde(default)]
    pub parts_in_flight: Option<usize>,
    /// Attempts per request, including the first (default 5).
    #[serde(default)]
    pub max_attempts: Option<u32>,
    /// Whether part bodies are hashed into the SigV4 signature. Default: only over plain
    /// `http://`, as botocore does; over `https://` TLS already protects the bytes in transit.
    /// Either way the whole archive's SHA-256 is stored and checked on recovery.
    #[serde(default)]
    pub payload_signing: Option<bool>,
}

/// Why an S3 operation failed.
#[derive(Debug, thiserror::Error)]
pub enum S3Error {
    /// The configuration cannot work.
    #[error("S3 configuration: {0}")]
    Config(String),
    /// The server (or the network on the way) refused or failed a request.
    #[error("S3 {op} of `{key}` in bucket `{bucket}` failed: {message}")]
    Request {
        /// Operation name (`UploadPart`, ...).
        op: &'static str,
        /// Bucket.
        bucket: String,
        /// Object key.
        key: String,
        /// HTTP status, when a response arrived.
        status: Option<u16>,
        /// S3 error code (`NoSuchBucket`, `InvalidAccessKeyId`, ...), when given.
        code: Option<String>,
        /// Everything known about the error.
        message: String,
    },
    /// No such object.
    #[error("S3 object `{0}` not found")]
    NotFound(String),
    /// Building the archive failed.
    #[error("snapshot archive: {0}")]
    Archive(#[from] ArchiveError),
    /// A local file failed.
    #[error("I/O: {0}")]
    Io(#[from] io::Error),
    /// A download is larger than allowed.
    #[error("S3 object `{key}` is larger than the allowed {limit} bytes")]
    TooLarge {
        /// Object key.
        key: String,
        /// The limit.
        limit: u64,
    },
}

impl S3Error {
    /// The S3 error code, when the server gave one.
    pub fn code(&self) -> Option<&str> {
        match self {
            S3Error::Request { code, .. } => code.as_deref(),
            _ => None,
        }
    }
}

/// One object of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Key relative to the listed folder.
    pub name: String,
    /// Bytes.
    pub size: u64,
    /// Last modification, seconds since the Unix epoch.
    pub modified: Option<i64>,
}

/// A streamed `GetObject`.
pub struct Download {
    /// Bytes in this response.
    pub content_length: u64,
    /// `Content-Range` of a ranged response.
    pub content_range: Option<String>,
    /// The body.
    pub body: ByteStream,
}

/// The part size for an archive of `size` bytes: the configured one, grown (in whole MiB) so that
/// the archive fits in 10,000 parts, and never below S3's 5 MiB minimum.
pub fn part_size_for(size: u64, configured: u64) -> u64 {
    let needed = size.div_ceil(MAX_PARTS).div_ceil(MIB) * MIB;
    configured.max(needed).max(MIN_PART)
}

/// Status, S3 code and a readable message of an SDK error.
fn request_error<E>(bucket: &str, op: &'static str, key: &str, e: SdkError<E>) -> S3Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let status = e.raw_response().map(|r| r.status().as_u16());
    let code = e.code().map(str::to_string);
    let message = match (&code, e.message()) {
        (Some(c), Some(m)) => format!("{c}: {m}"),
        (Some(c), None) => c.clone(),
        _ => match status {
            // HEAD answers carry no error body: say what a bare 403 means.
            Some(403) => format!(
                "HTTP 403: access denied (wrong credentials, or no permission on the bucket): {}",
                DisplayErrorContext(&e)
            ),
            Some(s) => format!("HTTP {s}: {}", DisplayErrorContext(&e)),
            None => DisplayErrorContext(&e).to_string(),
        },
    };
    S3Error::Request {
        op,
        bucket: bucket.to_string(),
        key: key.to_string(),
        status,
        code,
        message,
    }
}

fn env(names: &[&str]) -> Option<String> {
    names
        .iter()
        .find_map(|n| std::env::var(n).ok().filter(|v| !v.is_empty()))
}

/// A bucket (and key prefix) holding snapshots.
pub struct S3Store {
    client: Client,
    bucket: String,
    prefix: String,
    part_size: u64,
    parts_in_flight: usize,
    sign_payload: bool,
    /// Multipart uploads (key, upload id) whose abort failed; retried before the next write.
    pending_aborts: Mutex<Vec<(String, String)>>,
}

impl S3Store {
    /// A client for `config`, filling unset fields from the standard `AWS_*` variables.
    pub fn new(config: &S3Config) -> Result<S3Store, S3Error> {
        if config.bucket.is_empty() {
            return Err(S3Error::Config("s3_config.bucket is not set".into()));
        }
        let region = config
            .region
            .clone()
            .or_else(|| env(&["AWS_REGION", "AWS_DEFAULT_REGION"]))
            .unwrap_or_else(|| "us-east-1".into());
        let access = config.access_key.clone().or_else(|| env(&["AWS_ACCESS_KEY_ID"]));
        let secret = config.secret_key.clone().or_else(|| env(&["AWS_SECRET_ACCESS_KEY"]));
        let (Some(access), Some(secret)) = (access, secret) else {
            return Err(S3Error::Config(
                "credentials missing: set s3_config.access_key and s3_config.secret_key (or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)".into(),
            ));
        };
        let token = env(&["AWS_SESSION_TOKEN"]);
        let endpoint = config
            .endpoint_url
            .clone()
            .or_else(|| env(&["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"]));
        let retry = RetryConfig::standard()
            .with_max_attempts(config.max_attempts.unwrap_or(5).max(1))
            .with_initial_backoff(Duration::from_millis(200))
            .with_max_backoff(Duration::from_secs(5));
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(10))
            .build();
        let mut b = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(region))
            .credentials_provider(Credentials::new(access, secret, token, None, "quiver-config"))
            .retry_config(retry)
            .timeout_config(timeouts)
            // The SHA-256 of the whole archive is ours to keep; per-request CRCs would only add
            // client CPU and headers that some S3-compatible servers reject.
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
        let sign_payload = config
            .payload_signing
            .unwrap_or_else(|| endpoint.as_deref().is_some_and(|u| u.starts_with("http://")));
        if let Some(url) = endpoint {
            b = b.endpoint_url(url).force_path_style(true);
        }
        let prefix = match config.prefix.as_deref().map(|p| p.trim_matches('/')) {
            None | Some("") => String::new(),
            Some(p) => format!("{p}/"),
        };
        let part_size = config.part_size_mb.unwrap_or(64).saturating_mul(MIB).max(MIN_PART);
        Ok(S3Store {
            client: Client::from_conf(b.build()),
            bucket: config.bucket.clone(),
            prefix,
            part_size,
            parts_in_flight: config.parts_in_flight.unwrap_or(4).max(1),
            sign_payload,
            pending_aborts: Mutex::new(Vec::new()),
        })
    }

    /// The bucket.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The full key of `rel` (the configured prefix prepended).
    pub fn key(&self, rel: &str) -> String {
        format!("{}{rel}", self.prefix)
    }

    /// Configured part size in bytes (before growth for very large archives).
    pub fn part_size(&self) -> u64 {
        self.part_size
    }

    /// Parts sent concurrently.
    pub fn parts_in_flight(&self) -> usize {
        self.parts_in_flight
    }

    /// An SDK error as ours; a 404 on an object (not a missing bucket) is `NotFound`.
    fn error<E>(&self, op: &'static str, key: &str, e: SdkError<E>) -> S3Error
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        match request_error(&self.bucket, op, key, e) {
            S3Error::Request {
                status: Some(404),
                code,
                ..
            } if code.as_deref() != Some("NoSuchBucket") => S3Error::NotFound(key.to_string()),
            other => other,
        }
    }

    /// A failure while reading a `GetObject` body.
    fn body_error(&self, key: &str, message: String) -> S3Error {
        S3Error::Request {
            op: "GetObject",
            bucket: self.bucket.clone(),
            key: key.to_string(),
            status: None,
            code: None,
            message,
        }
    }

    /// Objects directly in the folder `dir` (a relative key ending in `/`), sorted by name;
    /// deeper keys are not listed.
    pub async fn list(&self, dir: &str) -> Result<Vec<ObjectInfo>, S3Error> {
        let prefix = self.key(dir);
        let mut out = Vec::new();
        let mut token = None;
        loop {
            let page = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(&prefix)
                .delimiter("/")
                .set_continuation_token(token.take())
                .send()
                .await
                .map_err(|e| self.error("ListObjectsV2", &prefix, e))?;
            for o in page.contents() {
                let Some(name) = o.key().and_then(|k| k.strip_prefix(&prefix)) else {
                    continue;
                };
                out.push(ObjectInfo {
                    name: name.to_string(),
                    size: o.size().unwrap_or(0).max(0) as u64,
                    modified: o.last_modified().map(|t| t.secs()),
                });
            }
            match page.next_continuation_token() {
                Some(t) if page.is_truncated() == Some(true) => token = Some(t.to_string()),
                _ => break,
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Size and modification time of `rel`, or `None` when it does not exist.
    pub async fn head(&self, rel: &str) -> Result<Option<ObjectInfo>, S3Error> {
        let key = self.key(rel);
        match self.client.head_object().bucket(&self.bucket).key(&key).send().await {
            Ok(o) => Ok(Some(ObjectInfo {
                name: rel.to_string(),
                size: o.content_length().unwrap_or(0).max(0) as u64,
                modified: o.last_modified().map(|t| t.secs()),
            })),
            Err(e) => match self.error("HeadObject", &key, e) {
                S3Error::NotFound(_) => Ok(None),
                other => Err(other),
            },
        }
    }

    /// Streams `rel`, or the single `range` (`bytes=a-b`, passed through) of it.
    pub async fn get(&self, rel: &str, range: Option<&str>) -> Result<Download, S3Error> {
        let key = self.key(rel);
        let o = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(&key)
            .set_range(range.map(str::to_string))
            .send()
            .await
            .map_err(|e| self.error("GetObject", &key, e))?;
        Ok(Download {
            content_length: o.content_length().unwrap_or(0).max(0) as u64,
            content_range: o.content_range().map(str::to_string),
            body: o.body,
        })
    }

    /// The whole of a small object (a checksum), or `None` when it does not exist.
    pub async fn get_small(&self, rel: &str) -> Result<Option<Vec<u8>>, S3Error> {
        let key = self.key(rel);
        let o = match self.get(rel, None).await {
            Ok(o) => o,
            Err(S3Error::NotFound(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        let bytes = o
            .body
            .collect()
            .await
            .map_err(|e| self.body_error(&key, e.to_string()))?;
        Ok(Some(bytes.to_vec()))
    }

    /// Stores a small object in one request.
    pub async fn put_small(&self, rel: &str, data: Vec<u8>) -> Result<(), S3Error> {
        let key = self.key(rel);
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(&key)
            .body(ByteStream::from(data))
            .send()
            .await
            .map_err(|e| self.error("PutObject", &key, e))?;
        Ok(())
    }

    /// Deletes `rel` (no error when it does not exist, as S3 itself).
    pub async fn delete(&self, rel: &str) -> Result<(), S3Error> {
        let key = self.key(rel);
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(&key)
            .send()
            .await
            .map_err(|e| self.error("DeleteObject", &key, e))?;
        Ok(())
    }

    async fn abort(&self, key: &str, upload_id: &str) -> Result<(), S3Error> {
        self.client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .send()
            .await
            .map_err(|e| self.error("AbortMultipartUpload", key, e))?;
        Ok(())
    }

    /// Retries the aborts that failed earlier; those that fail again stay pending.
    pub async fn retry_pending_aborts(&self) {
        let pending = std::mem::take(&mut *self.pending_aborts.lock().unwrap_or_else(|p| p.into_inner()));
        for (key, id) in pending {
            match self.abort(&key, &id).await {
                Ok(()) | Err(S3Error::NotFound(_)) => {
                    tracing::info!(key = %key, upload_id = %id, "aborted a multipart upload left by a failed snapshot")
                }
                Err(e) => {
                    tracing::warn!(error = %e, "multipart upload still cannot be aborted");
                    self.pending_aborts
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push((key, id));
                }
            }
        }
    }

    /// Multipart uploads whose abort failed and is still to be retried: (key, upload id).
    pub fn pending_aborts(&self) -> Vec<(String, String)> {
        self.pending_aborts.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Checks that the bucket exists and the credentials open it (`HeadBucket`), so that a
    /// wrong bucket is reported as such: some S3-compatible servers would otherwise create
    /// objects in a bucket nobody created.
    pub async fn check_bucket(&self) -> Result<(), S3Error> {
        match self.client.head_bucket().bucket(&self.bucket).send().await {
            Ok(_) => Ok(()),
            Err(e) => Err(match self.error("HeadBucket", "", e) {
                S3Error::NotFound(_) => S3Error::Request {
                    op: "HeadBucket",
                    bucket: self.bucket.clone(),
                    key: String::new(),
                    status: Some(404),
                    code: Some("NoSuchBucket".into()),
                    message: format!("NoSuchBucket: bucket `{}` does not exist", self.bucket),
                },
                other => other,
            }),
        }
    }

    /// Starts a multipart upload of `rel` for an archive of `size` bytes. Blocking.
    pub fn upload(&self, handle: &Handle, rel: &str, size: u64) -> Result<MultipartUpload<'_>, S3Error> {
        handle.block_on(self.retry_pending_aborts());
        handle.block_on(self.check_bucket())?;
        let key = self.key(rel);
        let created = handle
            .block_on(
                self.client
                    .create_multipart_upload()
                    .bucket(&self.bucket)
                    .key(&key)
                    .content_type("application/x-tar")
                    .send(),
            )
            .map_err(|e| self.error("CreateMultipartUpload", &key, e))?;
        let upload_id = created
            .upload_id()
            .ok_or_else(|| S3Error::Config(format!("CreateMultipartUpload of `{key}` returned no upload id")))?
            .to_string();
        let part_size = part_size_for(size, self.part_size) as usize;
        Ok(MultipartUpload {
            store: self,
            handle: handle.clone(),
            key,
            upload_id,
            part_size,
            filling: Vec::with_capacity(part_size),
            spare: Vec::new(),
            running: JoinSet::new(),
            parts: Vec::new(),
            next_part: 1,
            sent: 0,
            failed: None,
            finished: false,
        })
    }

    /// Streams `archive` into a new object `rel`, stores its hex SHA-256 as `rel.checksum` and
    /// only then completes the upload. With `staging`, the archive is first written there at
    /// local disk speed (the pinned segment files are released as soon as that is done) and the
    /// file is uploaded afterwards. Blocking; on any error nothing is left visible under `rel`.
    pub fn put_archive(
        &self,
        handle: &Handle,
        rel: &str,
        archive: Archive,
        staging: Option<&Path>,
    ) -> Result<Summary, S3Error> {
        match staging {
            None => {
                let mut up = self.upload(handle, rel, archive.size())?;
                let streamed = crate::stream(archive, &mut up, Backend::Auto).map_err(S3Error::from);
                up.conclude(rel, streamed)
            }
            Some(dir) => {
                let tmp = dir.join(format!(".s3-upload-{}.tmp", uuid_like()));
                let written = crate::write_to_path(archive, &tmp, Backend::Auto);
                let result = written.map_err(S3Error::from).and_then(|summary| {
                    let mut up = self.upload(handle, rel, summary.size)?;
                    let sent = copy_file(&tmp, &mut up, summary.size)
                        .map(|()| summary)
                        .map_err(S3Error::from);
                    up.conclude(rel, sent)
                });
                let _ = std::fs::remove_file(&tmp);
                result
            }
        }
    }

    /// Downloads `rel` into a new file `dest`, hashing on the way; fails beyond `max_bytes`.
    /// Returns the hex SHA-256 and the size. Blocking.
    pub fn download_to(
        &self,
        handle: &Handle,
        rel: &str,
        dest: &Path,
        max_bytes: u64,
    ) -> Result<(String, u64), S3Error> {
        let key = self.key(rel);
        let mut dl = handle.block_on(self.get(rel, None))?;
        if dl.content_length > max_bytes {
            return Err(S3Error::TooLarge { key, limit: max_bytes });
        }
        let mut out = File::create_new(dest)?;
        let mut hasher = Sha256::new();
        let mut total = 0u64;
        while let Some(chunk) = handle.block_on(dl.body.next()) {
            let chunk = chunk.map_err(|e| self.body_error(&key, format!("download interrupted: {e}")))?;
            total += chunk.len() as u64;
            if total > max_bytes {
                return Err(S3Error::TooLarge { key, limit: max_bytes });
            }
            hasher.update(&chunk);
            out.write_all(&chunk)?;
        }
        if total != dl.content_length {
            return Err(self.body_error(
                &key,
                format!("download ended after {total} of {} bytes", dl.content_length),
            ));
        }
        out.sync_all()?;
        Ok((crate::hex(&hasher.finalize()), total))
    }
}

fn uuid_like() -> String {
    use std::time::{SystemTime, UNIX_EPOCH};
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{}-{nanos:x}", std::process::id())
}

/// Feeds the file at `path` (expected to hold `size` bytes) into `sink` in 4 MiB reads.
fn copy_file(path: &Path, sink: &mut dyn Sink, size: u64) -> io::Result<()> {
    let mut f = File::open(path)?;
    let mut buf = vec![0u8; crate::WINDOW];
    let mut total = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        total += n as u64;
        sink.write_chunk(&buf[..n])?;
    }
    if total != size {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("staged archive has {total} bytes, expected {size}"),
        ));
    }
    Ok(())
}

type PartResult = Result<(i32, String, Bytes), S3Error>;

/// An open multipart upload fed in order through [`Sink`]; see the module docs for its memory
/// bound. Dropped without [`finish`](Self::finish), it is aborted.
pub struct MultipartUpload<'a> {
    store: &'a S3Store,
    handle: Handle,
    key: String,
    upload_id: String,
    part_size: usize,
    filling: Vec<u8>,
    spare: Vec<Vec<u8>>,
    running: JoinSet<PartResult>,
    parts: Vec<CompletedPart>,
    next_part: i32,
    sent: u64,
    failed: Option<S3Error>,
    finished: bool,
}

impl MultipartUpload<'_> {
    /// The upload id the server gave.
    pub fn upload_id(&self) -> &str {
        &self.upload_id
    }

    /// The part size used for this upload.
    pub fn part_size(&self) -> usize {
        self.part_size
    }

    /// Waits for one running part; keeps its buffer for reuse.
    fn reap_one(&mut self) -> Result<(), S3Error> {
        let Some(joined) = self.handle.block_on(self.running.join_next()) else {
            return Ok(());
        };
        let (n, etag, bytes) =
            joined.map_err(|e| S3Error::Io(io::Error::other(format!("part task failed: {e}"))))??;
        self.parts
            .push(CompletedPart::builder().part_number(n).e_tag(etag).build());
        // The SDK has dropped its references once the request finished: the buffer comes back
        // without a copy. Should one still be shared, the next part simply allocates.
        if let Ok(b) = bytes.try_into_mut() {
            let mut v = Vec::from(b);
            v.clear();
            self.spare.push(v);
        }
        Ok(())
    }

    /// Sends the part being filled (a background task) and starts a new one.
    fn send_filling(&mut self) -> Result<(), S3Error> {
        while self.running.len() >= self.store.parts_in_flight {
            self.reap_one()?;
        }
        let next = self.spare.pop().unwrap_or_else(|| Vec::with_capacity(self.part_size));
        let body = Bytes::from(std::mem::replace(&mut self.filling, next));
        let n = self.next_part;
        self.next_part += 1;
        self.sent += body.len() as u64;
        let client = self.store.client.clone();
        let (bucket, key, id) = (self.store.bucket.clone(), self.key.clone(), self.upload_id.clone());
        let sign_payload = self.store.sign_payload;
        self.running.spawn_on(
            async move {
                let request = client
                    .upload_part()
                    .bucket(&bucket)
                    .key(&key)
                    .upload_id(id)
                    .part_number(n)
                    .content_length(body.len() as i64)
                    .body(ByteStream::from(body.clone()));
                let sent = if sign_payload {
                    request.send().await
                } else {
                    request.customize().disable_payload_signing().send().await
                };
                let out = sent.map_err(|e| {
                    let mut err = request_error(&bucket, "UploadPart", &key, e);
                    if let S3Error::Request { message, .. } = &mut err {
                        *message = format!("part {n}: {message}");
                    }
                    err
                })?;
                Ok((n, out.e_tag().unwrap_or_default().to_string(), body))
            },
            &self.handle,
        );
        Ok(())
    }

    /// Completes the upload when everything went into it (`fed` is the archive's summary),
    /// aborts it otherwise. A part's error wins over the pipeline's own report of it.
    fn conclude(mut self, rel: &str, fed: Result<Summary, S3Error>) -> Result<Summary, S3Error> {
        match (fed, self.failed.take()) {
            (Ok(summary), None) => self.finish(rel, &summary).map(|()| summary),
            (_, Some(e)) | (Err(e), None) => {
                self.abort_now();
                Err(e)
            }
        }
    }

    /// Sends the last part, waits for all, stores the checksum object, completes the upload.
    fn finish(mut self, rel: &str, summary: &Summary) -> Result<(), S3Error> {
        let result = (|| -> Result<(), S3Error> {
            if !self.filling.is_empty() || self.next_part == 1 {
                self.send_filling()?;
            }
            while !self.running.is_empty() {
                self.reap_one()?;
            }
            if self.sent != summary.size {
                return Err(S3Error::Io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("{} bytes sent of a {}-byte archive", self.sent, summary.size),
                )));
            }
            self.parts.sort_by_key(|p| p.part_number());
            let checksum_rel = format!("{rel}.checksum");
            self.handle
                .block_on(self.store.put_small(&checksum_rel, summary.sha256.clone().into_bytes()))?;
            let done = CompletedMultipartUpload::builder()
                .set_parts(Some(std::mem::take(&mut self.parts)))
                .build();
            let completed = self.handle.block_on(
                self.store
                    .client
                    .complete_multipart_upload()
                    .bucket(&self.store.bucket)
                    .key(&self.key)
                    .upload_id(&self.upload_id)
                    .multipart_upload(done)
                    .send(),
            );
            if let Err(e) = completed {
                let err = self.store.error("CompleteMultipartUpload", &self.key, e);
                // The completion may have taken effect even though its answer was lost or could
                // not be parsed (a dropped connection; some servers answer with another XML
                // root). The object then exists, whole: keep it rather than report a failure
                // for a snapshot that is in fact there.
                let rel_key = self
                    .key
                    .strip_prefix(&self.store.prefix)
                    .unwrap_or(&self.key)
                    .to_string();
                if let Ok(Some(o)) = self.handle.block_on(self.store.head(&rel_key))
                    && o.size == summary.size
                {
                    tracing::warn!(error = %err, key = %self.key, "CompleteMultipartUpload answered with an error, but the object is complete; kept");
                    return Ok(());
                }
                let _ = self.handle.block_on(self.store.delete(&checksum_rel));
                return Err(err);
            }
            Ok(())
        })();
        match result {
            Ok(()) => {
                self.finished = true;
                Ok(())
            }
            Err(e) => {
                self.abort_now();
                Err(e)
            }
        }
    }

    /// Stops running parts and aborts the upload; a failed abort is kept for a later retry.
    fn abort_now(&mut self) {
        if self.finished {
            return;
        }
        self.finished = true;
        self.running.abort_all();
        while self.handle.block_on(self.running.join_next()).is_some() {}
        let aborted = match self.handle.block_on(self.store.abort(&self.key, &self.upload_id)) {
            Err(S3Error::NotFound(_)) => Ok(()), // no such upload (any more): nothing to abort
            other => other,
        };
        if let Err(e) = aborted {
            tracing::warn!(error = %e, key = %self.key, upload_id = %self.upload_id,
                "multipart upload could not be aborted now; retried before the next snapshot");
            self.store
                .pending_aborts
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((self.key.clone(), self.upload_id.clone()));
        } else {
            tracing::info!(key = %self.key, upload_id = %self.upload_id, "multipart upload aborted");
        }
    }
}

impl Sink for MultipartUpload<'_> {
    fn write_chunk(&mut self, mut chunk: &[u8]) -> io::Result<()> {
        if let Some(e) = &self.failed {
            return Err(io::Error::other(e.to_string()));
        }
        while !chunk.is_empty() {
            let room = self.part_size - self.filling.len();
            let take = room.min(chunk.len());
            self.filling.extend_from_slice(&chunk[..take]);
            chunk = &chunk[take..];
            if self.filling.len() == self.part_size
                && let Err(e) = self.send_filling()
            {
                let msg = e.to_string();
                self.failed = Some(e);
                return Err(io::Error::other(msg));
            }
        }
        Ok(())
    }
}

impl Drop for MultipartUpload<'_> {
    fn drop(&mut self) {
        if !self.finished {
            // Not finished and not aborted: an unwinding caller. Abort without blocking.
            self.finished = true;
            self.running.abort_all();
            let (client, bucket, key, id) = (
                self.store.client.clone(),
                self.store.bucket.clone(),
                self.key.clone(),
                self.upload_id.clone(),
            );
            self.handle.spawn(async move {
                let _ = client
                    .abort_multipart_upload()
                    .bucket(bucket)
                    .key(key)
                    .upload_id(id)
                    .send()
                    .await;
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_size_grows_to_stay_under_the_part_limit() {
        assert_eq!(part_size_for(1 << 30, 64 * MIB), 64 * MIB);
        assert_eq!(part_size_for(0, 1), MIN_PART, "never below S3's minimum");
        let huge = 5u64 << 40; // 5 TiB, S3's largest object
        let p = part_size_for(huge, 64 * MIB);
        assert!(huge.div_ceil(p) <= MAX_PARTS);
        assert_eq!(p % MIB, 0);
        assert!(p > 64 * MIB);
    }

    #[test]
    fn config_needs_a_bucket_and_credentials() {
        assert!(matches!(S3Store::new(&S3Config::default()), Err(S3Error::Config(_))));
        let cfg = S3Config {
            bucket: "b".into(),
            access_key: Some("a".into()),
            secret_key: Some("s".into()),
            prefix: Some("/team/".into()),
            ..Default::default()
        };
        let s = S3Store::new(&cfg).unwrap();
        assert_eq!(s.key("snapshots/c/x.snapshot"), "team/snapshots/c/x.snapshot");
        assert_eq!(s.part_size(), 64 * MIB);
    }
}
