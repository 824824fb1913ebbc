//! The data model: point ids, vectors, payloads and collection configuration, with serde shapes
//! identical to Qdrant's REST API so the server can pass them through unchanged.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use crate::error::{EngineError, Result};

/// A JSON object attached to a point.
pub type Payload = Map<String, Value>;

/// Name of the unnamed ("default") dense vector, as Qdrant stores it.
pub const DEFAULT_VECTOR: &str = "";

/// A point id: an unsigned integer or a UUID. Integers sort before UUIDs, as in Qdrant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PointId {
    /// Unsigned integer id.
    Num(u64),
    /// UUID id.
    Uuid(uuid::Uuid),
}

impl PointId {
    /// A hash that is stable across processes and versions, used to route a point to its shard.
    /// It must never change: shards on disk were filled with it.
    pub fn route_hash(&self) -> u64 {
        let x = match self {
            PointId::Num(n) => *n,
            PointId::Uuid(u) => {
                let v = u.as_u128();
                (v as u64) ^ ((v >> 64) as u64).rotate_left(17)
            }
        };
        // splitmix64 finaliser: spreads sequential ids evenly over shards.
        let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// 17-byte on-disk encoding: a kind byte, then 16 little-endian bytes.
    pub fn to_bytes(&self) -> [u8; 17] {
        let mut out = [0u8; 17];
        match self {
            PointId::Num(n) => out[1..9].copy_from_slice(&n.to_le_bytes()),
            PointId::Uuid(u) => {
                out[0] = 1;
                out[1..].copy_from_slice(&u.as_u128().to_le_bytes());
            }
        }
        out
    }

    /// Inverse of [`PointId::to_bytes`].
    pub fn from_bytes(b: &[u8; 17]) -> Option<PointId> {
        match b[0] {
            0 => Some(PointId::Num(u64::from_le_bytes(b[1..9].try_into().ok()?))),
            1 => Some(PointId::Uuid(uuid::Uuid::from_u128(u128::from_le_bytes(
                b[1..].try_into().ok()?,
            )))),
            _ => None,
        }
    }
}

impl fmt::Display for PointId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PointId::Num(n) => write!(f, "{n}"),
            PointId::Uuid(u) => write!(f, "{u}"),
        }
    }
}

impl From<u64> for PointId {
    fn from(n: u64) -> Self {
        PointId::Num(n)
    }
}

impl Serialize for PointId {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            PointId::Num(n) => s.serialize_u64(*n),
            PointId::Uuid(u) => s.serialize_str(&u.hyphenated().to_string()),
        }
    }
}

impl<'de> Deserialize<'de> for PointId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        use serde::de::Error;
        match Value::deserialize(d)? {
            Value::Number(n) => n
                .as_u64()
                .map(PointId::Num)
                .ok_or_else(|| D::Error::custom(format!("point id must be an unsigned integer or a UUID, got {n}"))),
            Value::String(s) => uuid::Uuid::parse_str(&s)
                .map(PointId::Uuid)
                .map_err(|_| D::Error::custom(format!("point id `{s}` is not a valid UUID"))),
            other => Err(D::Error::custom(format!(
                "point id must be an unsigned integer or a UUID, got {other}"
            ))),
        }
    }
}

/// Distance function of a dense vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Distance {
    /// Cosine similarity; vectors are normalised on insert, then scored by dot product.
    Cosine,
    /// Dot product.
    Dot,
    /// Euclidean distance (lower is better).
    Euclid,
    /// Manhattan distance (lower is better).
    Manhattan,
}

impl Distance {
    /// Prepares a stored or query vector (cosine vectors are normalised).
    pub fn preprocess(self, v: &mut [f32]) {
        if self == Distance::Cosine {
            let n = crate::kernels::norm(v);
            if n > f32::EPSILON {
                v.iter_mut().for_each(|x| *x /= n);
            }
        }
    }

    /// Internal score, where higher is always better: euclid uses `-l2²`, manhattan `-l1`.
    #[inline]
    pub fn raw_score(self, k: &crate::kernels::Kernels, a: &[f32], b: &[f32]) -> f32 {
        match self {
            Distance::Cosine | Distance::Dot => (k.dot)(a, b),
            Distance::Euclid => -(k.l2sq)(a, b),
            Distance::Manhattan => -(k.l1)(a, b),
        }
    }

    /// Converts an internal score to the one reported to users.
    pub fn user_score(self, raw: f32) -> f32 {
        match self {
            Distance::Cosine | Distance::Dot => raw,
            Distance::Euclid => (-raw).max(0.0).sqrt(),
            Distance::Manhattan => -raw,
        }
    }

    /// Converts a user `score_threshold` to the internal scale (a distance bound becomes a
    /// lower bound on the negated distance).
    pub fn raw_threshold(self, user: f32) -> f32 {
        match self {
            Distance::Cosine | Distance::Dot => user,
            Distance::Euclid => -(user * user),
            Distance::Manhattan => -user,
        }
    }
}

/// Configuration of one dense vector. Fields we do not act on yet are kept in `extra` and echoed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VectorParams {
    /// Number of dimensions.
    pub size: usize,
    /// Distance function.
    pub distance: Distance,
    /// Other Qdrant parameters (`hnsw_config`, `on_disk`, ...), stored verbatim.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl VectorParams {
    /// Params with no extra settings.
    pub fn new(size: usize, distance: Distance) -> Self {
        VectorParams {
            size,
            distance,
            extra: Map::new(),
        }
    }
}

/// Dense vectors of a collection: one unnamed, or several named ones.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct VectorsConfig(pub BTreeMap<String, VectorParams>);

impl VectorsConfig {
    /// A single unnamed vector.
    pub fn single(size: usize, distance: Distance) -> Self {
        VectorsConfig(BTreeMap::from([(
            DEFAULT_VECTOR.to_string(),
            VectorParams::new(size, distance),
        )]))
    }

    /// True when the collection has exactly one unnamed dense vector.
    pub fn is_single(&self) -> bool {
        self.0.len() == 1 && self.0.contains_key(DEFAULT_VECTOR)
    }
}

impl Serialize for VectorsConfig {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        if self.is_single() {
            self.0[DEFAULT_VECTOR].serialize(s)
        } else {
            self.0.serialize(s)
        }
    }
}

impl<'de> Deserialize<'de> for VectorsConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        use serde::de::Error;
        let v = Value::deserialize(d)?;
        if v.get("size").is_some() || v.get("distance").is_some() {
            let p = VectorParams::deserialize(v).map_err(|e| D::Error::custom(format!("vectors: {e}")))?;
            return Ok(VectorsConfig(BTreeMap::from([(DEFAULT_VECTOR.to_string(), p)])));
        }
        let map =
            BTreeMap::<String, VectorParams>::deserialize(v).map_err(|e| D::Error::custom(format!("vectors: {e}")))?;
        Ok(VectorsConfig(map))
    }
}

/// Configuration of a named sparse vector; Qdrant's options (`index`, `modifier`) are stored.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct SparseVectorParams {
    /// Qdrant parameters, stored verbatim.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A sparse vector: parallel `indices` and `values`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct SparseVector {
    /// Dimension indices.
    pub indices: Vec<u32>,
    /// Values, one per index.
    pub values: Vec<f32>,
}

impl SparseVector {
    /// Checks lengths, duplicates and finiteness, and sorts by index.
    pub fn validate_and_sort(&mut self) -> Result<()> {
        if self.indices.len() != self.values.len() {
            return Err(EngineError::bad(format!(
                "sparse vector has {} indices but {} values",
                self.indices.len(),
                self.values.len()
            )));
        }
        if self.values.iter().any(|v| !v.is_finite()) {
            return Err(EngineError::bad("sparse vector contains NaN or infinite values"));
        }
        let mut pairs: Vec<(u32, f32)> = self.indices.iter().copied().zip(self.values.iter().copied()).collect();
        pairs.sort_by_key(|p| p.0);
        if pairs.windows(2).any(|w| w[0].0 == w[1].0) {
            return Err(EngineError::bad("sparse vector contains duplicate indices"));
        }
        self.indices = pairs.iter().map(|p| p.0).collect();
        self.values = pairs.iter().map(|p| p.1).collect();
        Ok(())
    }

    /// Dot product of two index-sorted sparse vectors.
    pub fn dot(&self, other: &SparseVector) -> f32 {
        let (mut i, mut j, mut s) = (0, 0, 0.0);
        while i < self.indices.len() && j < other.indices.len() {
            match self.indices[i].cmp(&other.indices[j]) {
                std::cmp::Ordering::Less => i += 1,
                std::cmp::Ordering::Greater => j += 1,
                std::cmp::Ordering::Equal => {
                    s += self.values[i] * other.values[j];
                    i += 1;
                    j += 1;
                }
            }
        }
        s
    }
}

/// One vector of a point as given by a client: dense or sparse.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum VectorData {
    /// Dense values.
    Dense(Vec<f32>),
    /// Sparse index/value pairs.
    Sparse(SparseVector),
}

/// The `vector` field of a point: a bare dense vector or named vectors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PointVectors {
    /// The unnamed dense vector.
    Single(Vec<f32>),
    /// Named dense and sparse vectors.
    Named(BTreeMap<String, VectorData>),
}

impl Default for PointVectors {
    fn default() -> Self {
        PointVectors::Named(BTreeMap::new())
    }
}

impl PointVectors {
    /// Named form, with the unnamed vector under [`DEFAULT_VECTOR`].
    pub fn into_named(self) -> BTreeMap<String, VectorData> {
        match self {
            PointVectors::Single(v) => BTreeMap::from([(DEFAULT_VECTOR.to_string(), VectorData::Dense(v))]),
            PointVectors::Named(m) => m,
        }
    }
}

/// A point to upsert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PointStruct {
    /// Its id.
    pub id: PointId,
    /// Its vectors (any subset of the collection's).
    #[serde(default)]
    pub vector: PointVectors,
    /// Its payload.
    #[serde(default)]
    pub payload: Option<Payload>,
}

/// Which payload keys a response carries: Qdrant's `with_payload`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum WithPayload {
    /// All or nothing.
    Bool(bool),
    /// Only these keys.
    Include(Vec<String>),
    /// `{"include": [...]}` / `{"exclude": [...]}`.
    Selector {
        /// Keys to keep.
        #[serde(default)]
        include: Option<Vec<String>>,
        /// Keys to drop.
        #[serde(default)]
        exclude: Option<Vec<String>>,
    },
}

impl Default for WithPayload {
    fn default() -> Self {
        WithPayload::Bool(false)
    }
}

impl WithPayload {
    /// Applies the selector to a payload; `None` when no payload is wanted.
    pub fn select(&self, payload: &Payload) -> Option<Payload> {
        let top = |k: &String| k.split('.').next().unwrap_or(k).to_string();
        match self {
            WithPayload::Bool(false) => None,
            WithPayload::Bool(true) => Some(payload.clone()),
            WithPayload::Include(keys)
            | WithPayload::Selector {
                include: Some(keys),
                exclude: None,
            } => {
                let keys: Vec<String> = keys.iter().map(top).collect();
                Some(
                    payload
                        .iter()
                        .filter(|(k, _)| keys.contains(k))
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect(),
                )
            }
            WithPayload::Selector { include, exclude } => {
                let inc: Option<Vec<String>> = include.as_ref().map(|v| v.iter().map(top).collect());
                let exc: Vec<String> = exclude.iter().flatten().cloned().collect();
                Some(
                    payload
                        .iter()
                        .filter(|(k, _)| inc.as_ref().is_none_or(|i| i.contains(k)) && !exc.contains(k))
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect(),
                )
            }
        }
    }

    /// True when some payload will be returned.
    pub fn wants_any(&self) -> bool {
        !matches!(self, WithPayload::Bool(false))
    }
}

/// Which vectors a response carries: Qdrant's `with_vector`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum WithVector {
    /// All or nothing.
    Bool(bool),
    /// Only these vector names.
    Names(Vec<String>),
}

impl Default for WithVector {
    fn default() -> Self {
        WithVector::Bool(false)
    }
}

impl WithVector {
    /// True when the vector called `name` is wanted.
    pub fn wants(&self, name: &str) -> bool {
        match self {
            WithVector::Bool(b) => *b,
            WithVector::Names(n) => n.iter().any(|x| x == name),
        }
    }

    /// True when any vector is wanted.
    pub fn wants_any(&self) -> bool {
        !matches!(self, WithVector::Bool(false))
    }
}

/// Vectors in a response: a bare list for single-vector collections, else a map.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum VectorOutput {
    /// The unnamed dense vector.
    Single(Vec<f32>),
    /// Named vectors.
    Named(BTreeMap<String, VectorData>),
}

/// A point as returned by retrieve and scroll.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Its id.
    pub id: PointId,
    /// Selected payload, if requested.
    pub payload: Option<Payload>,
    /// Selected vectors, if requested.
    pub vector: Option<VectorOutput>,
}

/// A search hit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoredPoint {
    /// Its id.
    pub id: PointId,
    /// Version of the point (the shard's operation number that last wrote it).
    pub version: u64,
    /// Score in the user's scale (distance for euclid/manhattan).
    pub score: f32,
    /// Selected payload, if requested.
    pub payload: Option<Payload>,
    /// Selected vectors, if requested.
    pub vector: Option<VectorOutput>,
}

/// Types a payload index can have (Qdrant's `field_schema`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PayloadSchemaType {
    /// Exact string match.
    Keyword,
    /// Integers: match and range.
    Integer,
    /// Floats: range.
    Float,
    /// Booleans.
    Bool,
    /// UUID strings.
    Uuid,
    /// RFC 3339 date-times: range.
    Datetime,
    /// Geo points: stored, filters scan payloads.
    Geo,
    /// Full text: stored, filters scan payloads.
    Text,
}

/// A payload index definition: a type name or `{"type": ..., ...options}` as Qdrant accepts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PayloadFieldSchema {
    /// `"keyword"`.
    Type(PayloadSchemaType),
    /// `{"type": "keyword", ...}`.
    Params {
        /// Index type.
        #[serde(rename = "type")]
        kind: PayloadSchemaType,
        /// Other options, stored verbatim.
        #[serde(flatten)]
        extra: Map<String, Value>,
    },
}

impl PayloadFieldSchema {
    /// The index type.
    pub fn kind(&self) -> PayloadSchemaType {
        match self {
            PayloadFieldSchema::Type(t) | PayloadFieldSchema::Params { kind: t, .. } => *t,
        }
    }
}

fn default_segment_max_points() -> usize {
    20_000
}

/// Everything that defines a collection; persisted as `config.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CollectionConfig {
    /// Dense vectors.
    #[serde(default)]
    pub vectors: VectorsConfig,
    /// Named sparse vectors.
    #[serde(default)]
    pub sparse_vectors: BTreeMap<String, SparseVectorParams>,
    /// Number of shards (0 on input means: one per worker thread).
    #[serde(default)]
    pub shard_number: u32,
    /// Points the appendable segment holds before it is sealed.
    #[serde(default = "default_segment_max_points")]
    pub segment_max_points: usize,
    /// Payload indexes by field key.
    #[serde(default)]
    pub payload_schema: BTreeMap<String, PayloadFieldSchema>,
    /// Further settings the server stores and echoes (hnsw_config, wal_config, ...).
    #[serde(default)]
    pub extra: Map<String, Value>,
}

/// HNSW settings of a collection (`hnsw_config`, as Qdrant's; kept in `extra`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HnswConfig {
    /// Links per node (level 0 has twice as many). 0 disables the index.
    pub m: usize,
    /// Candidates considered while building.
    pub ef_construct: usize,
    /// Segments (and filtered candidate sets) whose vectors take fewer KiB than this are
    /// searched exactly.
    pub full_scan_threshold_kb: usize,
}

impl Default for HnswConfig {
    fn default() -> Self {
        HnswConfig {
            m: 16,
            ef_construct: 100,
            full_scan_threshold_kb: 10_000,
        }
    }
}

impl HnswConfig {
    /// Below this many points of `dim` dimensions, an exact scan is used.
    pub fn full_scan_points(&self, dim: usize) -> usize {
        self.full_scan_threshold_kb.saturating_mul(1024) / (dim.max(1) * 4)
    }
}

impl CollectionConfig {
    /// The HNSW settings, Qdrant's defaults filling what `hnsw_config` leaves out.
    pub fn hnsw(&self) -> HnswConfig {
        let mut c = HnswConfig::default();
        if let Some(h) = self.extra.get("hnsw_config").and_then(Value::as_object) {
            let get = |k: &str| h.get(k).and_then(Value::as_u64).map(|v| v as usize);
            c.m = get("m").unwrap_or(c.m);
            c.ef_construct = get("ef_construct").unwrap_or(c.ef_construct).max(4);
            c.full_scan_threshold_kb = get("full_scan_threshold").unwrap_or(c.full_scan_threshold_kb);
        }
        c
    }

    /// A collection with one unnamed dense vector.
    pub fn single(size: usize, distance: Distance) -> Self {
        CollectionConfig {
            vectors: VectorsConfig::single(size, distance),
            sparse_vectors: BTreeMap::new(),
            shard_number: 0,
            segment_max_points: default_segment_max_points(),
            payload_schema: BTreeMap::new(),
            extra: Map::new(),
        }
    }

    /// Checks sizes and names.
    pub fn validate(&self) -> Result<()> {
        for (name, p) in &self.vectors.0 {
            if p.size == 0 || p.size > 65_536 {
                return Err(EngineError::bad(format!(
                    "vectors.{name}.size must be between 1 and 65536, got {}",
                    p.size
                )));
            }
            if self.sparse_vectors.contains_key(name) {
                return Err(EngineError::bad(format!(
                    "vector name `{name}` is used for both a dense and a sparse vector"
                )));
            }
        }
        if self.sparse_vectors.contains_key(DEFAULT_VECTOR) {
            return Err(EngineError::bad("sparse vectors must be named"));
        }
        if self.segment_max_points == 0 {
            return Err(EngineError::bad("segment_max_points must be positive"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn point_id_serde_and_order() {
        let a: PointId = serde_json::from_str("7").unwrap();
        let b: PointId = serde_json::from_str("\"550e8400-e29b-41d4-a716-446655440000\"").unwrap();
        assert!(a < b);
        assert_eq!(
            serde_json::to_string(&b).unwrap(),
            "\"550e8400-e29b-41d4-a716-446655440000\""
        );
        assert!(serde_json::from_str::<PointId>("-1").is_err());
        assert!(serde_json::from_str::<PointId>("\"nope\"").is_err());
        for id in [a, b] {
            assert_eq!(PointId::from_bytes(&id.to_bytes()), Some(id));
        }
    }

    #[test]
    fn vectors_config_shapes() {
        let single: VectorsConfig = serde_json::from_str(r#"{"size": 4, "distance": "Cosine"}"#).unwrap();
        assert!(single.is_single());
        assert_eq!(serde_json::to_value(&single).unwrap()["size"], 4);
        let named: VectorsConfig =
            serde_json::from_str(r#"{"img": {"size": 4, "distance": "Dot", "on_disk": true}}"#).unwrap();
        assert_eq!(named.0["img"].extra["on_disk"], true);
        assert!(serde_json::from_str::<VectorsConfig>(r#"{"size": 4, "distance": "Nope"}"#).is_err());
    }

    #[test]
    fn with_payload_selectors() {
        let p: Payload = serde_json::from_str(r#"{"a": 1, "b": {"c": 2}, "d": 3}"#).unwrap();
        let inc: WithPayload = serde_json::from_str(r#"["a", "b.c"]"#).unwrap();
        assert_eq!(inc.select(&p).unwrap().len(), 2);
        let exc: WithPayload = serde_json::from_str(r#"{"exclude": ["a"]}"#).unwrap();
        assert_eq!(exc.select(&p).unwrap().keys().collect::<Vec<_>>(), vec!["b", "d"]);
        assert!(WithPayload::Bool(false).select(&p).is_none());
    }

    #[test]
    fn sparse_validation() {
        let mut s = SparseVector {
            indices: vec![5, 1],
            values: vec![0.5, 1.0],
        };
        s.validate_and_sort().unwrap();
        assert_eq!(s.indices, vec![1, 5]);
        let mut d = SparseVector {
            indices: vec![1, 1],
            values: vec![0.5, 1.0],
        };
        assert!(d.validate_and_sort().is_err());
        let o = SparseVector {
            indices: vec![5, 9],
            values: vec![2.0, 1.0],
        };
        assert_eq!(s.dot(&o), 1.0);
    }
}
