//! Qdrant's universal query (`/points/query`): nearest by vector, sparse vector or point id,
//! nested prefetches re-scored by the outer query, and rank fusion (RRF, DBSF).

use std::collections::HashMap;
use std::sync::Arc;

use hyper::Response;
use quiver_engine::filter::Condition;
use quiver_engine::{
    Collection, Filter, PointId, QueryVector, ScoredPoint, ScrollRequest, SearchRequest, SparseVector, VectorData,
    VectorOutput, WithPayload, WithVector,
};
use serde_json::Value;

use super::models::{Prefetch, QueryBatchBody, QueryBody, SearchParamsBody, unsupported};
use super::points::check_limit;
use super::response::{self, ApiError, Body};
use super::{AppState, Request};

/// What the `query` field asks for.
enum QueryKind {
    /// No query: prefetch results as they are, or points in id order.
    None,
    /// Nearest neighbours of a vector.
    Nearest(QueryVector),
    /// Nearest neighbours of a stored point's vector (the point itself excluded).
    ById(PointId),
    /// Reciprocal rank fusion of the prefetches.
    Rrf { k: f32, weights: Option<Vec<f32>> },
    /// Distribution-based score fusion of the prefetches.
    Dbsf,
}

fn parse_vector(v: &Value) -> Result<QueryKind, ApiError> {
    match v {
        Value::Array(items) if items.iter().all(Value::is_number) => Ok(QueryKind::Nearest(QueryVector::Dense(
            items.iter().map(|x| x.as_f64().unwrap_or(0.0) as f32).collect(),
        ))),
        Value::Array(items) if items.iter().all(Value::is_array) => Err(ApiError::bad(
            "multi-vector queries are not supported by this server yet",
        )),
        Value::Number(_) | Value::String(_) => serde_json::from_value::<PointId>(v.clone())
            .map(QueryKind::ById)
            .map_err(|e| ApiError::bad(format!("query: {e}"))),
        Value::Object(o) if o.contains_key("indices") => serde_json::from_value::<SparseVector>(v.clone())
            .map(|s| QueryKind::Nearest(QueryVector::Sparse(s)))
            .map_err(|e| ApiError::bad(format!("query: invalid sparse vector: {e}"))),
        other => Err(ApiError::bad(format!(
            "query: expected a vector, a sparse vector or a point id, got {other}"
        ))),
    }
}

fn parse_query(q: Option<&Value>) -> Result<QueryKind, ApiError> {
    let Some(q) = q.filter(|q| !q.is_null()) else {
        return Ok(QueryKind::None);
    };
    let Value::Object(o) = q else { return parse_vector(q) };
    if o.contains_key("indices") {
        return parse_vector(q);
    }
    if let Some(inner) = o.get("nearest") {
        unsupported("query.mmr", &o.get("mmr").cloned())?;
        return parse_vector(inner);
    }
    if let Some(f) = o.get("fusion") {
        return match f.as_str() {
            Some("rrf") => Ok(QueryKind::Rrf { k: 2.0, weights: None }),
            Some("dbsf") => Ok(QueryKind::Dbsf),
            _ => Err(ApiError::bad(format!("query.fusion: unknown fusion {f}"))),
        };
    }
    if let Some(r) = o.get("rrf") {
        let k = r.get("k").and_then(Value::as_f64).unwrap_or(2.0) as f32;
        let weights = match r.get("weights") {
            None | Some(Value::Null) => None,
            Some(w) => {
                Some(serde_json::from_value(w.clone()).map_err(|e| ApiError::bad(format!("query.rrf.weights: {e}")))?)
            }
        };
        return Ok(QueryKind::Rrf { k, weights });
    }
    let kind = o.keys().next().map_or("empty", String::as_str);
    Err(ApiError::bad(format!(
        "query type `{kind}` is not supported by this server yet"
    )))
}

/// One level of a query: the request itself or one of its prefetches.
struct Stage<'a> {
    prefetch: &'a [Prefetch],
    query: Option<&'a Value>,
    using: String,
    filter: Option<Filter>,
    score_threshold: Option<f32>,
    limit: usize,
    offset: usize,
    with_payload: WithPayload,
    with_vector: WithVector,
    params: quiver_engine::SearchParams,
}

impl<'a> Stage<'a> {
    /// The top level of a query request.
    fn of_query(body: &'a QueryBody) -> Result<Stage<'a>, ApiError> {
        unsupported("shard_key", &body.shard_key)?;
        unsupported("lookup_from", &body.lookup_from)?;
        Ok(Stage {
            prefetch: &body.prefetch,
            query: body.query.as_ref(),
            using: body.using.clone().unwrap_or_default(),
            filter: body.filter.clone(),
            score_threshold: body.score_threshold,
            limit: check_limit("limit", body.limit.unwrap_or(10))?,
            offset: body.offset.unwrap_or(0),
            with_payload: body.with_payload.clone().unwrap_or_default(),
            with_vector: body.with_vector.clone().unwrap_or_default(),
            params: SearchParamsBody::to_engine(&body.params),
        })
    }

    fn of_prefetch(p: &'a Prefetch) -> Result<Stage<'a>, ApiError> {
        unsupported("prefetch.lookup_from", &p.lookup_from)?;
        Ok(Stage {
            prefetch: &p.prefetch,
            query: p.query.as_ref(),
            using: p.using.clone().unwrap_or_default(),
            filter: p.filter.clone(),
            score_threshold: p.score_threshold,
            limit: check_limit("prefetch.limit", p.limit.unwrap_or(10))?,
            offset: 0,
            with_payload: WithPayload::Bool(false),
            with_vector: WithVector::Bool(false),
            params: SearchParamsBody::to_engine(&p.params),
        })
    }
}

fn restrict(filter: Option<Filter>, must: Vec<Condition>, must_not: Vec<Condition>) -> Option<Filter> {
    if must.is_empty() && must_not.is_empty() {
        return filter;
    }
    let mut all = must;
    if let Some(f) = filter {
        all.push(Condition::Filter(f));
    }
    Some(Filter {
        must: all,
        must_not,
        ..Default::default()
    })
}

/// Attaches payloads and vectors to fused or prefetched hits, which carry none.
async fn attach(
    c: &Collection,
    mut hits: Vec<ScoredPoint>,
    wp: &WithPayload,
    wv: &WithVector,
) -> Result<Vec<ScoredPoint>, ApiError> {
    if !wp.wants_any() && !wv.wants_any() {
        return Ok(hits);
    }
    let records = c
        .retrieve(hits.iter().map(|h| h.id).collect(), wp.clone(), wv.clone())
        .await?;
    let mut by_id: HashMap<PointId, _> = records.into_iter().map(|r| (r.id, r)).collect();
    for h in hits.iter_mut() {
        if let Some(r) = by_id.remove(&h.id) {
            h.payload = r.payload;
            h.vector = r.vector;
        }
    }
    Ok(hits)
}

fn fuse(lists: Vec<Vec<ScoredPoint>>, kind: &QueryKind) -> Vec<ScoredPoint> {
    let mut acc: HashMap<PointId, (f32, u64)> = HashMap::new();
    for (li, list) in lists.iter().enumerate() {
        match kind {
            QueryKind::Rrf { k, weights } => {
                let w = weights.as_ref().and_then(|w| w.get(li)).copied().unwrap_or(1.0);
                for (rank, h) in list.iter().enumerate() {
                    let e = acc.entry(h.id).or_insert((0.0, h.version));
                    e.0 += w / (k + rank as f32);
                }
            }
            _ => {
                // DBSF: each list's scores normalised to mean ± 3σ, then summed.
                let n = list.len().max(1) as f32;
                let mean = list.iter().map(|h| h.score).sum::<f32>() / n;
                let sd = (list.iter().map(|h| (h.score - mean).powi(2)).sum::<f32>() / n).sqrt();
                let (lo, hi) = (mean - 3.0 * sd, mean + 3.0 * sd);
                for h in list {
                    let norm = if hi > lo { (h.score - lo) / (hi - lo) } else { 0.5 };
                    acc.entry(h.id).or_insert((0.0, h.version)).0 += norm;
                }
            }
        }
    }
    let mut out: Vec<ScoredPoint> = acc
        .into_iter()
        .map(|(id, (score, version))| ScoredPoint {
            id,
            version,
            score,
            payload: None,
            vector: None,
        })
        .collect();
    out.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.id.cmp(&b.id)));
    out
}

async fn vector_of(c: &Collection, id: PointId, using: &str) -> Result<QueryVector, ApiError> {
    let mut found = c
        .retrieve(
            vec![id],
            WithPayload::Bool(false),
            WithVector::Names(vec![using.to_string()]),
        )
        .await?;
    let rec = found
        .pop()
        .ok_or_else(|| ApiError::not_found(format!("No point with id {id} found")))?;
    let missing = || ApiError::bad(format!("point {id} has no vector `{using}`"));
    match rec.vector.ok_or_else(missing)? {
        VectorOutput::Single(v) => Ok(QueryVector::Dense(v)),
        VectorOutput::Named(mut m) => match m.remove(using).ok_or_else(missing)? {
            VectorData::Dense(v) => Ok(QueryVector::Dense(v)),
            VectorData::Sparse(s) => Ok(QueryVector::Sparse(s)),
        },
    }
}

fn evaluate<'a>(
    c: &'a Collection,
    s: Stage<'a>,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Vec<ScoredPoint>, ApiError>> + Send + 'a>> {
    Box::pin(async move {
        let kind = parse_query(s.query)?;
        let mut candidates = Vec::with_capacity(s.prefetch.len());
        for p in s.prefetch {
            candidates.push(evaluate(c, Stage::of_prefetch(p)?).await?);
        }
        let has_prefetch = !s.prefetch.is_empty();
        let page = |hits: Vec<ScoredPoint>| -> Vec<ScoredPoint> {
            hits.into_iter()
                .filter(|h| s.score_threshold.is_none_or(|t| h.score >= t))
                .skip(s.offset)
                .take(s.limit)
                .collect()
        };
        match kind {
            QueryKind::Nearest(_) | QueryKind::ById(_) => {
                let (query, exclude) = match kind {
                    QueryKind::ById(id) => (vector_of(c, id, &s.using).await?, vec![Condition::HasId(vec![id])]),
                    QueryKind::Nearest(q) => (q, vec![]),
                    _ => unreachable!("matched above"),
                };
                let must = if has_prefetch {
                    let mut ids: Vec<PointId> = candidates.iter().flatten().map(|h| h.id).collect();
                    ids.sort_unstable();
                    ids.dedup();
                    vec![Condition::HasId(ids)]
                } else {
                    vec![]
                };
                let req = SearchRequest {
                    using: s.using.clone(),
                    query,
                    filter: restrict(s.filter.clone(), must, exclude),
                    limit: s.limit,
                    offset: s.offset,
                    score_threshold: s.score_threshold,
                    with_payload: s.with_payload.clone(),
                    with_vector: s.with_vector.clone(),
                    params: s.params,
                };
                Ok(c.search(req).await?)
            }
            QueryKind::Rrf { .. } | QueryKind::Dbsf => {
                if !has_prefetch {
                    return Err(ApiError::bad("a fusion query needs `prefetch` to fuse"));
                }
                let fused = page(fuse(candidates, &kind));
                attach(c, fused, &s.with_payload, &s.with_vector).await
            }
            QueryKind::None if s.prefetch.len() == 1 => {
                let hits = page(candidates.pop().unwrap_or_default());
                attach(c, hits, &s.with_payload, &s.with_vector).await
            }
            QueryKind::None if has_prefetch => Err(ApiError::bad(
                "several prefetches need a `query` (e.g. a fusion) to combine them",
            )),
            QueryKind::None => {
                let pageq = c
                    .scroll(ScrollRequest {
                        offset: None,
                        limit: s.offset.saturating_add(s.limit),
                        filter: s.filter.clone(),
                        with_payload: s.with_payload.clone(),
                        with_vector: s.with_vector.clone(),
                    })
                    .await?;
                Ok(pageq
                    .points
                    .into_iter()
                    .skip(s.offset)
                    .map(|r| ScoredPoint {
                        id: r.id,
                        version: 0,
                        score: 0.0,
                        payload: r.payload,
                        vector: r.vector,
                    })
                    .collect())
            }
        }
    })
}

async fn run(c: &Collection, body: &QueryBody) -> Result<Vec<ScoredPoint>, ApiError> {
    let stage = Stage::of_query(body)?;
    evaluate(c, stage).await
}

/// Qdrant's `QueryResponse`; typed so that f32 scores and vectors print as f32.
#[derive(serde::Serialize)]
struct QueryResponse {
    points: Vec<ScoredPoint>,
}

pub async fn query(state: &Arc<AppState>, req: &Request, name: &str) -> Result<Response<Body>, ApiError> {
    let body: QueryBody = req.json()?;
    let c = state.collection(name)?;
    let points = run(&c, &body).await?;
    Ok(response::ok(&QueryResponse { points }, req.started))
}

/// The plain nearest-neighbour form of a query (no prefetch, a vector given), which can join
/// other plain queries in one blocked scan.
fn plain_search(q: &QueryBody) -> Result<Option<SearchRequest>, ApiError> {
    let stage = Stage::of_query(q)?;
    if !stage.prefetch.is_empty() {
        return Ok(None);
    }
    let QueryKind::Nearest(query) = parse_query(stage.query)? else {
        return Ok(None);
    };
    Ok(Some(SearchRequest {
        using: stage.using,
        query,
        filter: stage.filter,
        limit: stage.limit,
        offset: stage.offset,
        score_threshold: stage.score_threshold,
        with_payload: stage.with_payload,
        with_vector: stage.with_vector,
        params: stage.params,
    }))
}

/// Plain nearest queries of a batch share one pass over each shard (the blocked scan); the
/// others run one by one. Answers keep the request order.
pub async fn query_batch(state: &Arc<AppState>, req: &Request, name: &str) -> Result<Response<Body>, ApiError> {
    let body: QueryBatchBody = req.json()?;
    let c = state.collection(name)?;
    let plain = body.searches.iter().map(plain_search).collect::<Result<Vec<_>, _>>()?;
    let (slots, batch): (Vec<usize>, Vec<SearchRequest>) = plain
        .iter()
        .enumerate()
        .filter_map(|(i, p)| p.clone().map(|r| (i, r)))
        .unzip();
    let mut batched = c.search_batch(batch).await?.into_iter();
    let mut out = Vec::with_capacity(body.searches.len());
    for (i, q) in body.searches.iter().enumerate() {
        let points = if slots.contains(&i) {
            batched.next().unwrap_or_default()
        } else {
            run(&c, q).await?
        };
        out.push(QueryResponse { points });
    }
    Ok(response::ok(&out, req.started))
}
