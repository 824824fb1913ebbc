//! Request and response types of searches, scrolls and counts at the engine level.

use crate::filter::Filter;
use crate::types::{PointId, Record, ScoredPoint, SparseVector, WithPayload, WithVector};

/// A query vector.
#[derive(Debug, Clone, PartialEq)]
pub enum QueryVector {
    /// Dense query, scored with the vector's distance.
    Dense(Vec<f32>),
    /// Sparse query, scored by dot product.
    Sparse(SparseVector),
}

/// One exact search.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchRequest {
    /// Name of the vector to search ("" for the unnamed one).
    pub using: String,
    /// The query.
    pub query: QueryVector,
    /// Only points matching this filter.
    pub filter: Option<Filter>,
    /// Number of hits to return.
    pub limit: usize,
    /// Number of best hits to skip.
    pub offset: usize,
    /// Minimal score (maximal distance for euclid/manhattan).
    pub score_threshold: Option<f32>,
    /// Payload selector.
    pub with_payload: WithPayload,
    /// Vector selector.
    pub with_vector: WithVector,
    /// Search parameters (`params` of Qdrant's requests).
    pub params: SearchParams,
}

/// How to search (Qdrant's `params`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SearchParams {
    /// Candidates explored in the HNSW graph (default: the collection's `ef_construct`).
    pub hnsw_ef: Option<usize>,
    /// Scan exactly, ignoring the HNSW graphs.
    pub exact: bool,
}

impl SearchRequest {
    /// A plain search of the unnamed vector.
    pub fn new(vector: Vec<f32>, limit: usize) -> Self {
        SearchRequest {
            using: String::new(),
            query: QueryVector::Dense(vector),
            filter: None,
            limit,
            offset: 0,
            score_threshold: None,
            with_payload: WithPayload::Bool(false),
            with_vector: WithVector::Bool(false),
            params: SearchParams::default(),
        }
    }
}

/// A hit with its internal score, so shards' answers can be merged on one scale.
#[derive(Debug, Clone)]
pub struct RankedHit {
    /// Internal score (higher is better).
    pub raw: f32,
    /// What the user sees.
    pub point: ScoredPoint,
}

/// A page of points in id order.
#[derive(Debug, Clone, PartialEq)]
pub struct ScrollRequest {
    /// First id to return (inclusive).
    pub offset: Option<PointId>,
    /// Page size.
    pub limit: usize,
    /// Only points matching this filter.
    pub filter: Option<Filter>,
    /// Payload selector.
    pub with_payload: WithPayload,
    /// Vector selector.
    pub with_vector: WithVector,
}

/// A scroll page.
#[derive(Debug, Clone, PartialEq)]
pub struct ScrollPage {
    /// Points in id order.
    pub points: Vec<Record>,
    /// Id to pass as `offset` for the next page, if any.
    pub next_page_offset: Option<PointId>,
}

/// Which points an update targets.
#[derive(Debug, Clone, PartialEq)]
pub enum PointsSelector {
    /// These ids.
    Ids(Vec<PointId>),
    /// Every point matching the filter.
    Filter(Filter),
}
