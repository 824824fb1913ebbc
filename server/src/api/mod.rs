//! The Qdrant-compatible REST API: routing, and the handlers behind each route.

mod collections;
pub mod models;
mod points;
mod query;
pub mod recovery;
pub mod response;
mod snapshots;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use bytes::Bytes;
use hyper::{Method, Response};
use quiver_engine::{Collection, Engine, Filter, PointId, PointsSelector};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::settings::Settings;
use models::UpdateParams;
use response::{ApiError, Body};
use snapshots::Scope;

/// Qdrant API version implemented (what `GET /` reports, so clients' version checks pass).
pub const QDRANT_API_VERSION: &str = "1.20.0";

/// Shared state of the server.
pub struct AppState {
    /// The engine.
    pub engine: Arc<Engine>,
    /// Snapshot storage.
    pub snapshots: Arc<crate::snapshots::Snapshots>,
    /// Snapshot storage in S3, when configured (then it replaces the local folders).
    pub s3: Option<Arc<crate::snapshots_s3::S3Snapshots>>,
    /// Effective configuration.
    pub settings: Settings,
    op_counter: AtomicU64,
}

impl AppState {
    /// State around an opened engine.
    pub fn new(
        engine: Arc<Engine>,
        snapshots: Arc<crate::snapshots::Snapshots>,
        s3: Option<Arc<crate::snapshots_s3::S3Snapshots>>,
        settings: Settings,
    ) -> Self {
        AppState {
            engine,
            snapshots,
            s3,
            settings,
            op_counter: AtomicU64::new(0),
        }
    }

    fn collection(&self, name: &str) -> Result<Arc<Collection>, ApiError> {
        Ok(self.engine.collection(name)?)
    }

    /// Qdrant's `UpdateResult`.
    fn update_result(&self, wait: bool) -> Value {
        let id = self.op_counter.fetch_add(1, Ordering::Relaxed);
        json!({"operation_id": id, "status": if wait { "completed" } else { "acknowledged" }})
    }
}

/// One request as the handlers see it (body already read, within the size limit).
pub struct Request {
    /// Method.
    pub method: Method,
    /// Decoded path segments.
    pub segments: Vec<String>,
    /// Raw query string.
    pub query: String,
    /// Body bytes.
    pub body: Bytes,
    /// The `Range` header, if any.
    pub range: Option<String>,
    /// When handling started (for `time`).
    pub started: Instant,
}

impl Request {
    /// Parses the JSON body, naming the offending field on error.
    fn json<T: DeserializeOwned>(&self) -> Result<T, ApiError> {
        if self.body.iter().all(u8::is_ascii_whitespace) {
            return Err(ApiError::bad("Empty request body: a JSON object is required"));
        }
        parse_json(&self.body)
    }

    /// Like [`Request::json`], but an empty body means the type's default.
    fn json_or_default<T: DeserializeOwned + Default>(&self) -> Result<T, ApiError> {
        if self.body.iter().all(u8::is_ascii_whitespace) {
            Ok(T::default())
        } else {
            parse_json(&self.body)
        }
    }

    /// Parses the query string.
    fn params<T: DeserializeOwned + Default>(&self) -> Result<T, ApiError> {
        if self.query.is_empty() {
            return Ok(T::default());
        }
        serde_urlencoded::from_str(&self.query).map_err(|e| ApiError::bad(format!("Query string error: {e}")))
    }

    fn wait(&self) -> Result<bool, ApiError> {
        Ok(self.params::<UpdateParams>()?.wait.unwrap_or(false))
    }
}

/// Deserialises JSON with the path of the failing field in the message.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        if path == "." {
            ApiError::bad(format!("Format error in JSON body: {}", e.inner()))
        } else {
            ApiError::bad(format!("Format error in JSON body: {path}: {}", e.inner()))
        }
    })
}

/// Builds a points selector from the `points` / `filter` pair of a request body.
fn selector(points: Option<Vec<PointId>>, filter: Option<Filter>) -> Result<PointsSelector, ApiError> {
    match (points, filter) {
        (Some(ids), None) => Ok(PointsSelector::Ids(ids)),
        (None, Some(f)) => Ok(PointsSelector::Filter(f)),
        (Some(_), Some(_)) => Err(ApiError::bad("give either `points` or `filter`, not both")),
        (None, None) => Err(ApiError::bad("one of `points` or `filter` is required")),
    }
}

/// Routes a request to its handler.
pub async fn route(state: &Arc<AppState>, req: Request) -> Result<Response<Body>, ApiError> {
    let seg: Vec<&str> = req.segments.iter().map(String::as_str).collect();
    let m = &req.method;
    match (m, seg.as_slice()) {
        // Qdrant answers `/` with a bare object (no envelope); clients read `version` from it.
        (&Method::GET, []) => Ok(response::json(&json!({
            "title": "quiver - vector search engine (Qdrant-compatible)",
            "version": QDRANT_API_VERSION,
            "commit": env!("CARGO_PKG_VERSION"),
        }))),
        (&Method::GET, ["healthz"]) => Ok(response::text("healthz check passed")),
        (&Method::GET, ["livez"]) => Ok(response::text("livez check passed")),
        (&Method::GET, ["readyz"]) => Ok(response::text("all shards are ready")),
        (&Method::GET, ["collections"]) => collections::list(state, &req),
        (&Method::POST, ["collections", "aliases"]) => snapshots::update_aliases(state, &req).await,
        (&Method::GET, ["aliases"]) => snapshots::list_aliases(state, &req, None),
        (&Method::GET, ["collections", c, "aliases"]) => snapshots::list_aliases(state, &req, Some(c)),
        (&Method::POST, ["snapshots"]) => snapshots::create_full(state, &req).await,
        (&Method::GET, ["snapshots"]) => snapshots::list(state, &req, Scope::Full).await,
        (&Method::GET, ["snapshots", name]) => snapshots::download(state, &req, Scope::Full, name).await,
        (&Method::DELETE, ["snapshots", name]) => snapshots::delete(state, &req, Scope::Full, name).await,
        (&Method::PUT, ["collections", c, "snapshots", "recover"]) => recovery::recover(state, &req, c, None).await,
        (&Method::PUT, ["collections", c, "shards", s, "snapshots", "recover"]) => {
            recovery::recover(state, &req, c, Some(s)).await
        }
        (&Method::POST, ["collections", c, "snapshots"]) => snapshots::create_collection(state, &req, c).await,
        (&Method::GET, ["collections", c, "snapshots"]) => snapshots::list(state, &req, Scope::Collection(c)).await,
        (&Method::GET, ["collections", c, "snapshots", name]) => {
            snapshots::download(state, &req, Scope::Collection(c), name).await
        }
        (&Method::DELETE, ["collections", c, "snapshots", name]) => {
            snapshots::delete(state, &req, Scope::Collection(c), name).await
        }
        (&Method::POST, ["collections", c, "shards", s, "snapshots"]) => {
            snapshots::create_shard(state, &req, c, s).await
        }
        (&Method::GET, ["collections", c, "shards", s, "snapshots"]) => {
            snapshots::list(state, &req, Scope::Shard(c, s)).await
        }
        (&Method::GET, ["collections", c, "shards", s, "snapshots", name]) => {
            snapshots::download(state, &req, Scope::Shard(c, s), name).await
        }
        (&Method::DELETE, ["collections", c, "shards", s, "snapshots", name]) => {
            snapshots::delete(state, &req, Scope::Shard(c, s), name).await
        }
        (&Method::GET, ["collections", c, "shards", s, "snapshot"]) => snapshots::stream_shard(state, &req, c, s).await,
        (&Method::PUT, ["collections", c]) => collections::create(state, &req, c).await,
        (&Method::GET, ["collections", c]) => collections::get(state, &req, c).await,
        (&Method::DELETE, ["collections", c]) => collections::delete(state, &req, c).await,
        (&Method::PATCH, ["collections", c]) => collections::update(state, &req, c).await,
        (&Method::GET, ["collections", c, "exists"]) => collections::exists(state, &req, c),
        (&Method::PUT, ["collections", c, "index"]) => collections::create_index(state, &req, c).await,
        (&Method::DELETE, ["collections", c, "index", field]) => collections::delete_index(state, &req, c, field).await,
        (&Method::PUT, ["collections", c, "points"]) => points::upsert(state, &req, c).await,
        (&Method::POST, ["collections", c, "points"]) => points::retrieve(state, &req, c).await,
        (&Method::POST, ["collections", c, "points", "delete"]) => points::delete(state, &req, c).await,
        (&Method::POST, ["collections", c, "points", "payload"]) => points::set_payload(state, &req, c, false).await,
        (&Method::PUT, ["collections", c, "points", "payload"]) => points::set_payload(state, &req, c, true).await,
        (&Method::POST, ["collections", c, "points", "payload", "delete"]) => {
            points::delete_payload(state, &req, c).await
        }
        (&Method::POST, ["collections", c, "points", "payload", "clear"]) => {
            points::clear_payload(state, &req, c).await
        }
        (&Method::POST, ["collections", c, "points", "scroll"]) => points::scroll(state, &req, c).await,
        (&Method::POST, ["collections", c, "points", "count"]) => points::count(state, &req, c).await,
        (&Method::POST, ["collections", c, "points", "search"]) => points::search(state, &req, c).await,
        (&Method::POST, ["collections", c, "points", "search", "batch"]) => points::search_batch(state, &req, c).await,
        (&Method::POST, ["collections", c, "points", "query"]) => query::query(state, &req, c).await,
        (&Method::POST, ["collections", c, "points", "query", "batch"]) => query::query_batch(state, &req, c).await,
        (&Method::GET, ["collections", c, "points", id]) => points::get_point(state, &req, c, id).await,
        _ => Err(ApiError::not_found(format!(
            "Unknown route: {} /{}",
            req.method,
            req.segments.join("/")
        ))),
    }
}
