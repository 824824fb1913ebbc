//! Request bodies of the REST API, field for field as Qdrant's OpenAPI schema (and the Python
//! client's models) define them. Unknown fields are rejected, as Qdrant does. Fields that only
//! matter for features Quiver does not have (shard keys, custom sharding) are accepted when empty
//! and refused with a clear message otherwise.

use std::collections::BTreeMap;

use quiver_engine::{
    Filter, Payload, PayloadFieldSchema, PointId, PointStruct, SparseVector, SparseVectorParams, VectorData,
    VectorsConfig,
};
use quiver_engine::{WithPayload, WithVector};
use serde::Deserialize;
use serde_json::Value;

use super::response::ApiError;

/// Refuses a non-null value for a feature Quiver does not implement yet.
pub fn unsupported(field: &str, v: &Option<Value>) -> Result<(), ApiError> {
    match v {
        None | Some(Value::Null) => Ok(()),
        Some(_) => Err(ApiError::bad(format!("`{field}` is not supported by this server yet"))),
    }
}

/// `PUT /collections/{name}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateCollection {
    #[serde(default)]
    pub vectors: Option<VectorsConfig>,
    #[serde(default)]
    pub sparse_vectors: Option<BTreeMap<String, SparseVectorParams>>,
    #[serde(default)]
    pub shard_number: Option<u32>,
    #[serde(default)]
    pub sharding_method: Option<Value>,
    #[serde(default)]
    pub replication_factor: Option<Value>,
    #[serde(default)]
    pub write_consistency_factor: Option<Value>,
    #[serde(default)]
    pub on_disk_payload: Option<Value>,
    #[serde(default)]
    pub payload: Option<Value>,
    #[serde(default)]
    pub id_tracker: Option<Value>,
    #[serde(default)]
    pub hnsw_config: Option<Value>,
    #[serde(default)]
    pub wal_config: Option<Value>,
    #[serde(default)]
    pub optimizers_config: Option<Value>,
    #[serde(default)]
    pub quantization_config: Option<Value>,
    #[serde(default)]
    pub strict_mode_config: Option<Value>,
    #[serde(default)]
    pub metadata: Option<Value>,
    #[serde(default)]
    pub init_from: Option<Value>,
}

/// `PATCH /collections/{name}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateCollection {
    #[serde(default)]
    pub vectors: Option<BTreeMap<String, serde_json::Map<String, Value>>>,
    #[serde(default)]
    pub optimizers_config: Option<Value>,
    #[serde(default)]
    pub params: Option<Value>,
    #[serde(default)]
    pub hnsw_config: Option<Value>,
    #[serde(default)]
    pub quantization_config: Option<Value>,
    #[serde(default)]
    pub sparse_vectors: Option<BTreeMap<String, serde_json::Map<String, Value>>>,
    #[serde(default)]
    pub strict_mode_config: Option<Value>,
    #[serde(default)]
    pub metadata: Option<Value>,
}

/// `PUT /collections/{name}/points`, list form.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PointsList {
    pub points: Vec<PointStruct>,
    #[serde(default)]
    pub shard_key: Option<Value>,
    #[serde(default)]
    pub update_filter: Option<Value>,
    #[serde(default)]
    pub update_mode: Option<Value>,
}

/// `PUT /collections/{name}/points`, column form.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PointsBatch {
    pub batch: Batch,
    #[serde(default)]
    pub shard_key: Option<Value>,
    #[serde(default)]
    pub update_filter: Option<Value>,
    #[serde(default)]
    pub update_mode: Option<Value>,
}

/// Vectors of a batch: one list for the unnamed vector, or a list per name.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum BatchVectors {
    Single(Vec<Vec<f32>>),
    Named(BTreeMap<String, Vec<VectorData>>),
}

/// Columns of a batch upsert.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Batch {
    pub ids: Vec<PointId>,
    pub vectors: BatchVectors,
    #[serde(default)]
    pub payloads: Option<Vec<Option<Payload>>>,
}

impl Batch {
    /// Rows of the batch, checking that every column has one entry per id.
    pub fn into_points(self) -> Result<Vec<PointStruct>, ApiError> {
        use quiver_engine::PointVectors;
        let n = self.ids.len();
        let vectors: Vec<PointVectors> = match self.vectors {
            BatchVectors::Single(v) => {
                if v.len() != n {
                    return Err(ApiError::bad(format!(
                        "batch.vectors has {} entries for {n} ids",
                        v.len()
                    )));
                }
                v.into_iter().map(PointVectors::Single).collect()
            }
            BatchVectors::Named(m) => {
                let mut rows: Vec<BTreeMap<String, VectorData>> = vec![BTreeMap::new(); n];
                for (name, col) in m {
                    if col.len() != n {
                        return Err(ApiError::bad(format!(
                            "batch.vectors.{name} has {} entries for {n} ids",
                            col.len()
                        )));
                    }
                    for (row, v) in rows.iter_mut().zip(col) {
                        row.insert(name.clone(), v);
                    }
                }
                rows.into_iter().map(PointVectors::Named).collect()
            }
        };
        let payloads = match self.payloads {
            Some(p) if p.len() != n => {
                return Err(ApiError::bad(format!(
                    "batch.payloads has {} entries for {n} ids",
                    p.len()
                )));
            }
            Some(p) => p,
            None => vec![None; n],
        };
        Ok(self
            .ids
            .into_iter()
            .zip(vectors)
            .zip(payloads)
            .map(|((id, vector), payload)| PointStruct { id, vector, payload })
            .collect())
    }
}

/// `{"points": [...]}` or `{"filter": {...}}`, as delete and clear-payload take.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SelectorBody {
    #[serde(default)]
    pub points: Option<Vec<PointId>>,
    #[serde(default)]
    pub filter: Option<Filter>,
    #[serde(default)]
    pub shard_key: Option<Value>,
}

/// `POST|PUT /collections/{name}/points/payload`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetPayload {
    pub payload: Payload,
    #[serde(default)]
    pub points: Option<Vec<PointId>>,
    #[serde(default)]
    pub filter: Option<Filter>,
    #[serde(default)]
    pub shard_key: Option<Value>,
    #[serde(default)]
    pub key: Option<String>,
}

/// `POST /collections/{name}/points/payload/delete`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeletePayload {
    pub keys: Vec<String>,
    #[serde(default)]
    pub points: Option<Vec<PointId>>,
    #[serde(default)]
    pub filter: Option<Filter>,
    #[serde(default)]
    pub shard_key: Option<Value>,
}

/// `POST /collections/{name}/points`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PointRequest {
    pub ids: Vec<PointId>,
    #[serde(default)]
    pub with_payload: Option<WithPayload>,
    #[serde(default)]
    pub with_vector: Option<WithVector>,
    #[serde(default)]
    pub shard_key: Option<Value>,
}

/// `POST /collections/{name}/points/scroll`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScrollBody {
    #[serde(default)]
    pub offset: Option<PointId>,
    #[serde(default)]
    pub limit: Option<usize>,
    #[serde(default)]
    pub filter: Option<Filter>,
    #[serde(default)]
    pub with_payload: Option<WithPayload>,
    #[serde(default)]
    pub with_vector: Option<WithVector>,
    #[serde(default)]
    pub order_by: Option<Value>,
    #[serde(default)]
    pub shard_key: Option<Value>,
}

/// `POST /collections/{name}/points/count`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CountBody {
    #[serde(default)]
    pub filter: Option<Filter>,
    /// Accepted for compatibility: counts are always exact here.
    #[allow(dead_code)]
    #[serde(default)]
    pub exact: Option<bool>,
    #[serde(default)]
    pub shard_key: Option<Value>,
}

/// The `vector` of a legacy search: bare, named dense, or named sparse.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum NamedVectorStruct {
    Dense(Vec<f32>),
    NamedSparse { name: String, vector: SparseVector },
    Named { name: String, vector: Vec<f32> },
}

/// `POST /collections/{name}/points/search`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchBody {
    pub vector: NamedVectorStruct,
    #[serde(default)]
    pub filter: Option<Filter>,
    /// Qdrant's search `params` (`hnsw_ef`, `exact`).
    #[serde(default)]
    pub params: Option<SearchParamsBody>,
    pub limit: usize,
    #[serde(default)]
    pub offset: Option<usize>,
    #[serde(default)]
    pub with_payload: Option<WithPayload>,
    #[serde(default)]
    pub with_vector: Option<WithVector>,
    #[serde(default)]
    pub score_threshold: Option<f32>,
    #[serde(default)]
    pub shard_key: Option<Value>,
}

/// `POST /collections/{name}/points/search/batch`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchBatchBody {
    pub searches: Vec<SearchBody>,
}

/// One prefetch stage of a universal query.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Prefetch {
    #[serde(default, deserialize_with = "one_or_many_prefetch")]
    pub prefetch: Vec<Prefetch>,
    #[serde(default)]
    pub query: Option<Value>,
    #[serde(default)]
    pub using: Option<String>,
    #[serde(default)]
    pub filter: Option<Filter>,
    /// Qdrant's search `params` (`hnsw_ef`, `exact`).
    #[serde(default)]
    pub params: Option<SearchParamsBody>,
    #[serde(default)]
    pub score_threshold: Option<f32>,
    #[serde(default)]
    pub limit: Option<usize>,
    #[serde(default)]
    pub lookup_from: Option<Value>,
}

fn one_or_many_prefetch<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<Prefetch>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        Many(Vec<Prefetch>),
        One(Box<Prefetch>),
    }
    Ok(match Option::<OneOrMany>::deserialize(d)? {
        None => Vec::new(),
        Some(OneOrMany::Many(v)) => v,
        Some(OneOrMany::One(p)) => vec![*p],
    })
}

/// `POST /collections/{name}/points/query`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryBody {
    #[serde(default, deserialize_with = "one_or_many_prefetch")]
    pub prefetch: Vec<Prefetch>,
    #[serde(default)]
    pub query: Option<Value>,
    #[serde(default)]
    pub using: Option<String>,
    #[serde(default)]
    pub filter: Option<Filter>,
    /// Qdrant's search `params` (`hnsw_ef`, `exact`).
    #[serde(default)]
    pub params: Option<SearchParamsBody>,
    #[serde(default)]
    pub score_threshold: Option<f32>,
    #[serde(default)]
    pub limit: Option<usize>,
    #[serde(default)]
    pub offset: Option<usize>,
    #[serde(default)]
    pub with_vector: Option<WithVector>,
    #[serde(default)]
    pub with_payload: Option<WithPayload>,
    #[serde(default)]
    pub lookup_from: Option<Value>,
    #[serde(default)]
    pub shard_key: Option<Value>,
}

/// `POST /collections/{name}/points/query/batch`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryBatchBody {
    pub searches: Vec<QueryBody>,
}

/// `PUT /collections/{name}/index`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateFieldIndex {
    pub field_name: String,
    #[serde(default)]
    pub field_schema: Option<PayloadFieldSchema>,
}

/// Query-string parameters shared by update routes.
#[derive(Debug, Default, Deserialize)]
pub struct UpdateParams {
    #[serde(default)]
    pub wait: Option<bool>,
    /// Accepted for compatibility: a single node has one write ordering.
    #[allow(dead_code)]
    #[serde(default)]
    pub ordering: Option<String>,
    /// Accepted for compatibility.
    #[allow(dead_code)]
    #[serde(default)]
    pub timeout: Option<u64>,
}

/// Qdrant's search `params`. `quantization` and `indexed_only` are accepted; there is no
/// quantization, and unindexed segments are always searched (exactly).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchParamsBody {
    #[serde(default)]
    pub hnsw_ef: Option<usize>,
    #[serde(default)]
    pub exact: Option<bool>,
    #[allow(dead_code)]
    #[serde(default)]
    pub quantization: Option<Value>,
    #[allow(dead_code)]
    #[serde(default)]
    pub indexed_only: Option<bool>,
    #[allow(dead_code)]
    #[serde(default)]
    pub acorn: Option<Value>,
}

impl SearchParamsBody {
    /// The engine's form.
    pub fn to_engine(p: &Option<SearchParamsBody>) -> quiver_engine::SearchParams {
        let p = p.clone().unwrap_or_default();
        quiver_engine::SearchParams {
            hnsw_ef: p.hnsw_ef.filter(|&e| e > 0),
            exact: p.exact.unwrap_or(false),
        }
    }
}
