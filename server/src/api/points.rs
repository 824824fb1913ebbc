//! Point routes: upsert, retrieve, delete, payload updates, scroll, count, legacy search.

use std::sync::Arc;

use hyper::Response;
use quiver_engine::{
    PointId, PointStruct, PointsSelector, QueryVector, ScrollRequest, SearchRequest, WithPayload, WithVector,
};
use serde_json::{Value, json};

use super::models::{
    CountBody, DeletePayload, NamedVectorStruct, PointRequest, PointsBatch, PointsList, ScrollBody, SearchBatchBody,
    SearchBody, SelectorBody, SetPayload, unsupported,
};
use super::response::{self, ApiError, Body};
use super::{AppState, Request, parse_json, selector};

fn check_common(shard_key: &Option<Value>) -> Result<(), ApiError> {
    unsupported("shard_key", shard_key)
}

pub async fn upsert(state: &Arc<AppState>, req: &Request, name: &str) -> Result<Response<Body>, ApiError> {
    let raw: Value = req.json()?;
    let is_batch = raw.get("batch").is_some();
    let (points, shard_key, update_filter, update_mode): (Vec<PointStruct>, _, _, _) = if is_batch {
        let b: PointsBatch = parse_json(&req.body)?;
        (b.batch.into_points()?, b.shard_key, b.update_filter, b.update_mode)
    } else {
        let l: PointsList = parse_json(&req.body)?;
        (l.points, l.shard_key, l.update_filter, l.update_mode)
    };
    check_common(&shard_key)?;
    unsupported("update_filter", &update_filter)?;
    if update_mode.as_ref().is_some_and(|m| !m.is_null() && m != "upsert") {
        return Err(ApiError::bad(
            "`update_mode` other than \"upsert\" is not supported by this server yet",
        ));
    }
    let wait = req.wait()?;
    let c = state.collection(name)?;
    c.upsert(points, wait).await?;
    Ok(response::ok(&state.update_result(wait), req.started))
}

pub async fn retrieve(state: &Arc<AppState>, req: &Request, name: &str) -> Result<Response<Body>, ApiError> {
    let body: PointRequest = req.json()?;
    check_common(&body.shard_key)?;
    let c = state.collection(name)?;
    let records = c
        .retrieve(
            body.ids,
            body.with_payload.unwrap_or(WithPayload::Bool(true)),
            body.with_vector.unwrap_or_default(),
        )
        .await?;
    Ok(response::ok(&records, req.started))
}

/// Parses a point id from a path segment: an unsigned integer or a UUID.
fn parse_id(s: &str) -> Result<PointId, ApiError> {
    let v = match s.parse::<u64>() {
        Ok(n) => json!(n),
        Err(_) => json!(s),
    };
    serde_json::from_value(v).map_err(|e| ApiError::bad(format!("invalid point id `{s}`: {e}")))
}

pub async fn get_point(state: &Arc<AppState>, req: &Request, name: &str, id: &str) -> Result<Response<Body>, ApiError> {
    let id = parse_id(id)?;
    let c = state.collection(name)?;
    let mut found = c
        .retrieve(vec![id], WithPayload::Bool(true), WithVector::Bool(true))
        .await?;
    match found.pop() {
        Some(r) => Ok(response::ok(&r, req.started)),
        None => Err(ApiError::not_found(format!("No point with id {id} found"))),
    }
}

pub async fn delete(state: &Arc<AppState>, req: &Request, name: &str) -> Result<Response<Body>, ApiError> {
    let body: SelectorBody = req.json()?;
    check_common(&body.shard_key)?;
    let sel = selector(body.points, body.filter)?;
    let wait = req.wait()?;
    state.collection(name)?.delete(sel, wait).await?;
    Ok(response::ok(&state.update_result(wait), req.started))
}

pub async fn set_payload(
    state: &Arc<AppState>,
    req: &Request,
    name: &str,
    overwrite: bool,
) -> Result<Response<Body>, ApiError> {
    let body: SetPayload = req.json()?;
    check_common(&body.shard_key)?;
    let sel = selector(body.points, body.filter)?;
    let wait = req.wait()?;
    let c = state.collection(name)?;
    if overwrite {
        if body.key.is_some() {
            return Err(ApiError::bad("`key` is not supported when overwriting the payload"));
        }
        c.overwrite_payload(sel, body.payload, wait).await?;
    } else {
        c.set_payload(sel, body.payload, body.key, wait).await?;
    }
    Ok(response::ok(&state.update_result(wait), req.started))
}

pub async fn delete_payload(state: &Arc<AppState>, req: &Request, name: &str) -> Result<Response<Body>, ApiError> {
    let body: DeletePayload = req.json()?;
    check_common(&body.shard_key)?;
    let sel = selector(body.points, body.filter)?;
    let wait = req.wait()?;
    state.collection(name)?.delete_payload(sel, body.keys, wait).await?;
    Ok(response::ok(&state.update_result(wait), req.started))
}

pub async fn clear_payload(state: &Arc<AppState>, req: &Request, name: &str) -> Result<Response<Body>, ApiError> {
    let body: SelectorBody = req.json()?;
    check_common(&body.shard_key)?;
    let sel: PointsSelector = selector(body.points, body.filter)?;
    let wait = req.wait()?;
    state.collection(name)?.clear_payload(sel, wait).await?;
    Ok(response::ok(&state.update_result(wait), req.started))
}

/// Qdrant rejects zero limits with 422.
pub fn check_limit(field: &str, limit: usize) -> Result<usize, ApiError> {
    if limit == 0 {
        return Err(ApiError::invalid(format!(
            "Validation error in JSON body: {field}: value 0 invalid, must be 1 or larger"
        )));
    }
    Ok(limit)
}

pub async fn scroll(state: &Arc<AppState>, req: &Request, name: &str) -> Result<Response<Body>, ApiError> {
    let body: ScrollBody = req.json_or_default()?;
    check_common(&body.shard_key)?;
    unsupported("order_by", &body.order_by)?;
    let limit = check_limit("limit", body.limit.unwrap_or(10))?;
    let c = state.collection(name)?;
    let page = c
        .scroll(ScrollRequest {
            offset: body.offset,
            limit,
            filter: body.filter,
            with_payload: body.with_payload.unwrap_or(WithPayload::Bool(true)),
            with_vector: body.with_vector.unwrap_or_default(),
        })
        .await?;
    // A typed body, not `json!`: f32 vectors must print as f32, not widened to f64 digits.
    #[derive(serde::Serialize)]
    struct Page {
        points: Vec<quiver_engine::Record>,
        next_page_offset: Option<PointId>,
    }
    Ok(response::ok(
        &Page {
            points: page.points,
            next_page_offset: page.next_page_offset,
        },
        req.started,
    ))
}

pub async fn count(state: &Arc<AppState>, req: &Request, name: &str) -> Result<Response<Body>, ApiError> {
    let body: CountBody = req.json_or_default()?;
    check_common(&body.shard_key)?;
    let n = state.collection(name)?.count(body.filter).await?;
    Ok(response::ok(&json!({"count": n}), req.started))
}

fn search_request(body: SearchBody) -> Result<SearchRequest, ApiError> {
    check_common(&body.shard_key)?;
    let (using, query) = match body.vector {
        NamedVectorStruct::Dense(v) => (String::new(), QueryVector::Dense(v)),
        NamedVectorStruct::Named { name, vector } => (name, QueryVector::Dense(vector)),
        NamedVectorStruct::NamedSparse { name, vector } => (name, QueryVector::Sparse(vector)),
    };
    Ok(SearchRequest {
        using,
        query,
        filter: body.filter,
        limit: check_limit("limit", body.limit)?,
        offset: body.offset.unwrap_or(0),
        score_threshold: body.score_threshold,
        with_payload: body.with_payload.unwrap_or_default(),
        with_vector: body.with_vector.unwrap_or_default(),
        params: super::models::SearchParamsBody::to_engine(&body.params),
    })
}

pub async fn search(state: &Arc<AppState>, req: &Request, name: &str) -> Result<Response<Body>, ApiError> {
    let r = search_request(req.json()?)?;
    let hits = state.collection(name)?.search(r).await?;
    Ok(response::ok(&hits, req.started))
}

pub async fn search_batch(state: &Arc<AppState>, req: &Request, name: &str) -> Result<Response<Body>, ApiError> {
    let body: SearchBatchBody = req.json()?;
    let reqs = body
        .searches
        .into_iter()
        .map(search_request)
        .collect::<Result<Vec<_>, _>>()?;
    let hits = state.collection(name)?.search_batch(reqs).await?;
    Ok(response::ok(&hits, req.started))
}
