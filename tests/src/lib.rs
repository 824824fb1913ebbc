//! Helpers shared by Quiver's process-level integration tests and the helper binaries they spawn.

use quiver_engine::{PointId, PointStruct, PointVectors};
use serde_json::json;

/// Vector size of the crash test collection.
pub const CRASH_DIM: usize = 8;
/// Points per batch written by `crash_writer`.
pub const CRASH_BATCH: u64 = 25;

/// The vector of point `id` in the crash test (deterministic, so the checker can recompute it).
pub fn crash_vector(id: u64) -> Vec<f32> {
    (0..CRASH_DIM)
        .map(|j| ((id * 31 + j as u64) % 97) as f32 - 48.0)
        .collect()
}

/// Batch `b` of the crash test: ids `b*CRASH_BATCH ..`; every batch also rewrites point 0's
/// payload so that updates of existing (possibly sealed) points are exercised too.
pub fn crash_batch(b: u64) -> Vec<PointStruct> {
    let mut pts: Vec<PointStruct> = (b * CRASH_BATCH..(b + 1) * CRASH_BATCH)
        .map(|id| PointStruct {
            id: PointId::Num(id),
            vector: PointVectors::Single(crash_vector(id)),
            payload: Some(json!({"batch": b, "id": id}).as_object().unwrap().clone()),
        })
        .collect();
    if b > 0 {
        pts.push(PointStruct {
            id: PointId::Num(0),
            vector: PointVectors::Single(crash_vector(0)),
            payload: Some(json!({"batch": b, "id": 0}).as_object().unwrap().clone()),
        });
    }
    pts
}
