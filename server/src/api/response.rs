//! Qdrant's response envelope, streamed bodies, and the one place where errors become HTTP
//! statuses.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body::Frame;
use http_body_util::{BodyExt, Full};
use hyper::{Response, StatusCode, header};
use quiver_engine::EngineError;
use serde::Serialize;
use serde_json::json;
use tokio::sync::mpsc;

/// The body type of every response: a full buffer or a stream of chunks.
pub type Body = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

/// An error on its way to the client: a status and a message for `{"status": {"error": ...}}`.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Human-readable message.
    pub message: String,
}

impl ApiError {
    /// An error with this status and message.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }
    /// 400 Bad Request.
    pub fn bad(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
    /// 422 Unprocessable Entity (well-formed JSON, invalid values).
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, message)
    }
    /// 404 Not Found.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }
    /// 500 for real faults.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        let status = match &e {
            EngineError::CollectionNotFound(_)
            | EngineError::PointNotFound(_)
            | EngineError::ShardNotFound(_)
            | EngineError::AliasNotFound(_) => StatusCode::NOT_FOUND,
            EngineError::CollectionExists(_) => StatusCode::CONFLICT,
            EngineError::InvalidName(..)
            | EngineError::WrongVectorDim { .. }
            | EngineError::UnknownVector(_)
            | EngineError::BadRequest(_) => StatusCode::BAD_REQUEST,
            EngineError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            EngineError::Corrupted(_) | EngineError::Io(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, e.to_string())
    }
}

/// A complete body.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).map_err(|never| match never {}).boxed()
}

fn json_response(status: StatusCode, body: Vec<u8>) -> Response<Body> {
    let mut r = Response::new(full(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    r
}

/// `{"result": ..., "status": "ok", "time": seconds}` with 200.
pub fn ok<T: Serialize>(result: &T, started: Instant) -> Response<Body> {
    #[derive(Serialize)]
    struct Envelope<'a, T> {
        result: &'a T,
        status: &'static str,
        time: f64,
    }
    match serde_json::to_vec(&Envelope {
        result,
        status: "ok",
        time: started.elapsed().as_secs_f64(),
    }) {
        Ok(body) => json_response(StatusCode::OK, body),
        Err(e) => error(&ApiError::internal(format!("cannot serialise response: {e}")), started),
    }
}

/// `{"status": "accepted", "time": ...}` with 202, for work finishing in the background.
pub fn accepted(started: Instant) -> Response<Body> {
    let body = json!({"status": "accepted", "time": started.elapsed().as_secs_f64()});
    json_response(StatusCode::ACCEPTED, body.to_string().into_bytes())
}

/// A bare JSON 200 without the envelope.
pub fn json(value: &serde_json::Value) -> Response<Body> {
    json_response(StatusCode::OK, value.to_string().into_bytes())
}

/// `{"status": {"error": ...}, "time": ...}` with the error's status.
pub fn error(e: &ApiError, started: Instant) -> Response<Body> {
    let body = json!({"status": {"error": e.message}, "time": started.elapsed().as_secs_f64()});
    json_response(e.status, body.to_string().into_bytes())
}

/// A plain-text 200 (health probes).
pub fn text(s: &'static str) -> Response<Body> {
    let mut r = Response::new(full(Bytes::from_static(s.as_bytes())));
    r.headers_mut()
        .insert(header::CONTENT_TYPE, header::HeaderValue::from_static("text/plain"));
    r
}

/// A body fed chunk by chunk through a bounded channel: the producer blocks when the client
/// reads slowly, so memory stays bounded and nothing else waits for the client.
pub struct ChannelBody {
    rx: mpsc::Receiver<std::io::Result<Bytes>>,
}

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        self.rx.poll_recv(cx).map(|chunk| chunk.map(|r| r.map(Frame::data)))
    }
}

/// A streamed body and the sender that feeds it (`capacity` chunks in flight at most).
pub fn channel(capacity: usize) -> (mpsc::Sender<std::io::Result<Bytes>>, Body) {
    let (tx, rx) = mpsc::channel(capacity);
    (tx, ChannelBody { rx }.boxed())
}
