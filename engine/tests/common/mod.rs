//! Shared helpers for the engine's integration tests.
#![allow(dead_code)]

use quiver_engine::*;
use serde_json::{Value, json};

pub fn block<F: std::future::Future>(f: F) -> F::Output {
    pollster::block_on(f)
}

pub fn open(dir: &std::path::Path, workers: usize) -> Engine {
    Engine::open(EngineOptions {
        storage_path: dir.to_path_buf(),
        workers,
        pin_threads: false,
    })
    .unwrap()
}

/// Deterministic xorshift generator, so failures reproduce.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub fn f32(&mut self) -> f32 {
        (self.next_u64() % 20_000) as f32 / 10_000.0 - 1.0
    }
    pub fn vec(&mut self, dim: usize) -> Vec<f32> {
        (0..dim).map(|_| self.f32()).collect()
    }
}

pub fn payload(v: Value) -> Payload {
    v.as_object().unwrap().clone()
}

pub fn point(id: u64, vector: Vec<f32>, p: Value) -> PointStruct {
    PointStruct {
        id: PointId::Num(id),
        vector: PointVectors::Single(vector),
        payload: Some(payload(p)),
    }
}

pub fn filter(v: Value) -> Filter {
    serde_json::from_value(v).unwrap()
}

pub fn scroll_all(c: &Collection, filter: Option<Filter>) -> Vec<Record> {
    block(c.scroll(ScrollRequest {
        offset: None,
        limit: usize::MAX / 2,
        filter,
        with_payload: WithPayload::Bool(true),
        with_vector: WithVector::Bool(true),
    }))
    .unwrap()
    .points
}

pub fn standard_payload(i: u64) -> Value {
    json!({"n": i, "group": format!("g{}", i % 5), "even": i.is_multiple_of(2), "score": i as f64 / 10.0})
}
