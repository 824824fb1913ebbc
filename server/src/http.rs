//! The HTTP front: connections (HTTP/1.1 and HTTP/2 cleartext), request size limits, API-key
//! checks, request logging, graceful shutdown.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode, header};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use crate::api::response::{self, ApiError, Body};
use crate::api::{self, AppState};

/// How long in-flight requests get to finish after a shutdown signal.
const GRACE: Duration = Duration::from_secs(30);

fn is_probe(path: &str) -> bool {
    matches!(path, "/healthz" | "/livez" | "/readyz")
}

/// Routes a read-only key may use: every GET, and the POST routes that only read points.
fn is_read_route(method: &Method, segments: &[String]) -> bool {
    if method == Method::GET {
        return true;
    }
    let tail: Vec<&str> = segments.iter().skip(2).map(String::as_str).collect();
    method == Method::POST
        && matches!(
            tail.as_slice(),
            ["points"]
                | ["points", "scroll"]
                | ["points", "count"]
                | ["points", "search"]
                | ["points", "search", "batch"]
                | ["points", "query"]
                | ["points", "query", "batch"]
        )
}

fn check_auth(state: &AppState, req: &Request<Incoming>, segments: &[String]) -> Result<(), ApiError> {
    let svc = &state.settings.service;
    if (svc.api_key.is_none() && svc.read_only_api_key.is_none()) || is_probe(req.uri().path()) {
        return Ok(());
    }
    let h = req.headers();
    let given = h
        .get("api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| {
            h.get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::to_string)
        });
    let Some(given) = given else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "Must provide an API key or an Authorization bearer token",
        ));
    };
    if svc.api_key.as_deref() == Some(given.as_str()) {
        return Ok(());
    }
    if svc.read_only_api_key.as_deref() == Some(given.as_str()) {
        return if is_read_route(req.method(), segments) {
            Ok(())
        } else {
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "Write access denied: read-only API key",
            ))
        };
    }
    Err(ApiError::new(StatusCode::FORBIDDEN, "Invalid API key or JWT"))
}

fn segments(path: &str) -> Result<Vec<String>, ApiError> {
    path.split('/')
        .filter(|s| !s.is_empty())
        .map(|s| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8()
                .map(|c| c.into_owned())
                .map_err(|_| ApiError::bad("path is not valid UTF-8"))
        })
        .collect()
}

async fn handle(state: Arc<AppState>, req: Request<Incoming>) -> Response<Body> {
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let result = async {
        let segments = segments(&path)?;
        check_auth(&state, &req, &segments)?;
        if api::recovery::is_upload(req.method(), &segments) {
            // Snapshot uploads may be many GiB: streamed to disk, never held in memory.
            let (parts, body) = req.into_parts();
            let (c, s) = api::recovery::upload_target(&segments);
            let query = parts.uri.query().unwrap_or("");
            return api::recovery::upload(&state, &parts.headers, query, body, c, s, started).await;
        }
        let limit = state.settings.service.max_request_size_mb.saturating_mul(1024 * 1024);
        let too_large = || {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("Request body exceeds the limit of {limit} bytes"),
            )
        };
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        if declared.is_some_and(|n| n > limit) {
            return Err(too_large());
        }
        let query = req.uri().query().unwrap_or("").to_string();
        let range = req
            .headers()
            .get(header::RANGE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = match Limited::new(req.into_body(), limit).collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => return Err(too_large()),
            Err(e) => return Err(ApiError::bad(format!("could not read request body: {e}"))),
        };
        api::route(
            &state,
            api::Request {
                method: method.clone(),
                segments,
                query,
                body,
                range,
                started,
            },
        )
        .await
    }
    .await;
    let resp = match result {
        Ok(r) => r,
        Err(e) => response::error(&e, started),
    };
    let status = resp.status();
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    if status.is_server_error() || status.is_client_error() {
        tracing::warn!(%method, %path, status = status.as_u16(), ms, "request failed");
    } else {
        tracing::debug!(%method, %path, status = status.as_u16(), ms, "request");
    }
    resp
}

/// Serves until `shutdown` completes, then lets in-flight requests finish (up to [`GRACE`]).
pub async fn serve(listener: TcpListener, state: Arc<AppState>, shutdown: impl std::future::Future<Output = ()>) {
    let builder = Builder::new(TokioExecutor::new());
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _peer): (_, SocketAddr) = match accepted {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let state = state.clone();
                let svc = service_fn(move |req| {
                    let state = state.clone();
                    async move { Ok::<_, Infallible>(handle(state, req).await) }
                });
                let conn = graceful.watch(builder.serve_connection(TokioIo::new(stream), svc).into_owned());
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                });
            }
            _ = &mut shutdown => break,
        }
    }
    drop(listener);
    tracing::info!("no longer accepting connections; finishing in-flight requests");
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(GRACE) => tracing::warn!("in-flight requests did not finish in time"),
    }
}
