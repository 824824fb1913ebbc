//! # Quiver engine
//!
//! Storage and exact search for Quiver, a vector search engine that speaks Qdrant's API.
//!
//! ## Design
//!
//! * **Collections** ([`Collection`]) hold points (an id, named dense and sparse vectors, a JSON
//!   payload) split over shards by a stable hash of the point id.
//! * **Thread-per-core** ([`runtime`]): one pinned OS thread per core owns its shards outright.
//!   Work reaches a shard as a message on its worker's channel, so segment data is never behind
//!   a lock; searches fan out to every shard and the per-shard top-k lists are merged. Plain
//!   threads and channels were chosen over `glommio`: shard work is CPU-bound, and a runtime
//!   without releases since 2024 is a liability for the core of the engine.
//! * **Segments** ([`segment`]): one appendable segment per shard, in memory and backed by the
//!   WAL, and sealed immutable segments in self-describing directories whose flat vector files
//!   are `mmap`ed and cast with `bytemuck` (no per-vector allocation on the search path).
//! * **Durability** ([`wal`], [`shard`]): every operation is logged with a CRC32 before it is
//!   applied; `wait=true` writes are acknowledged after an fsync shared by the whole batch the
//!   worker processed (group commit). Sealing is a checkpoint committed by atomically replacing
//!   `shard.json`; see the crash-safety notes in [`shard`]. A seal also merges small and mostly
//!   deleted sealed segments into the new one.
//! * **Kernels** ([`kernels`]): dot, L2² and L1 with runtime dispatch (AVX-512F, AVX2+FMA,
//!   NEON, scalar); scans are blocked so one batch of queries reuses each vector while cached.
//! * **Filters** ([`filter`]) follow Qdrant's language; **payload indexes**
//!   ([`payload_index`]) narrow candidates before payloads are read.
//!
//! ```
//! use quiver_engine::{Engine, EngineOptions, CollectionConfig, Distance, PointStruct, PointVectors, SearchRequest};
//! let dir = tempfile::tempdir().unwrap();
//! let engine = Engine::open(EngineOptions::new(dir.path())).unwrap();
//! let c = engine.create_collection("docs", CollectionConfig::single(3, Distance::Dot)).unwrap();
//! let points = vec![PointStruct { id: 1.into(), vector: PointVectors::Single(vec![1.0, 0.0, 0.0]), payload: None }];
//! pollster::block_on(c.upsert(points, true)).unwrap();
//! let hits = pollster::block_on(c.search(SearchRequest::new(vec![1.0, 0.0, 0.0], 10))).unwrap();
//! assert_eq!(hits[0].score, 1.0);
//! ```

pub mod bitset;
pub mod codec;
pub mod collection;
pub mod engine;
pub mod error;
pub mod filter;
pub mod fsutil;
pub mod hnsw;
pub mod kernels;
pub mod optimizer;
pub mod payload_index;
pub mod runtime;
pub mod search;
pub mod segment;
pub mod shard;
pub mod topk;
pub mod types;
pub mod wal;

pub use collection::CollectionPin;
pub use collection::{Collection, CollectionInfo};
pub use engine::{AliasAction, Engine, EngineOptions};
pub use error::{EngineError, Result};
pub use filter::{Condition, FieldCondition, Filter, Match};
pub use search::{PointsSelector, QueryVector, ScrollPage, ScrollRequest, SearchParams, SearchRequest};
pub use shard::PinnedFile;
pub use types::{
    CollectionConfig, Distance, Payload, PayloadFieldSchema, PayloadSchemaType, PointId, PointStruct, PointVectors,
    Record, ScoredPoint, SparseVector, SparseVectorParams, VectorData, VectorOutput, VectorParams, VectorsConfig,
    WithPayload, WithVector,
};
