//! Exact search over 100k × 768 vectors (dot product), through the whole engine: one query at a
//! time and batches of 16 (the blocked scan reuses each vector for the whole batch).
//! Criterion's `thrpt` line is the number of vectors scanned per second.
//!
//! `cargo bench -p quiver-benches --bench exact_search` (QUIVER_BENCH_N overrides 100000)

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use quiver_engine::{
    CollectionConfig, Distance, Engine, EngineOptions, PointId, PointStruct, PointVectors, SearchRequest,
};
use simsimd::SpatialSimilarity;

const DIM: usize = 768;

struct Rng(u64);
impl Rng {
    fn f32(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % 20_000) as f32 / 10_000.0 - 1.0
    }
}

fn bench(c: &mut Criterion) {
    let n: u64 = std::env::var("QUIVER_BENCH_N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000);
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(EngineOptions::new(dir.path())).unwrap();
    let mut cfg = CollectionConfig::single(DIM, Distance::Dot);
    // Exact search is what is measured here: no HNSW graphs.
    cfg.extra.insert("hnsw_config".into(), serde_json::json!({"m": 0}));
    cfg.segment_max_points = 25_000;
    let coll = engine.create_collection("bench", cfg).unwrap();
    let mut rng = Rng(42);
    // The same vectors kept in one flat array: the baseline below scans it with simsimd on one
    // thread, the naive loop we compare the engine against in the same run.
    let flat: Vec<f32> = (0..n as usize * DIM).map(|_| rng.f32()).collect();
    let t = std::time::Instant::now();
    for start in (0..n).step_by(1000) {
        let pts = (start..(start + 1000).min(n))
            .map(|i| {
                let v = flat[i as usize * DIM..(i as usize + 1) * DIM].to_vec();
                PointStruct {
                    id: PointId::Num(i),
                    vector: PointVectors::Single(v),
                    payload: None,
                }
            })
            .collect();
        pollster::block_on(coll.upsert(pts, false)).unwrap();
    }
    pollster::block_on(coll.flush()).unwrap();
    let info = pollster::block_on(coll.info()).unwrap();
    eprintln!(
        "loaded {} x {DIM} in {:.1}s ({} segments, {} workers)",
        info.points_count,
        t.elapsed().as_secs_f64(),
        info.segments_count,
        engine.workers()
    );
    let queries: Vec<Vec<f32>> = (0..64).map(|_| (0..DIM).map(|_| rng.f32()).collect()).collect();

    let mut g = c.benchmark_group(format!("exact_search/{n}x{DIM}"));
    g.sample_size(10);
    g.throughput(Throughput::Elements(n));
    let mut qi = 0;
    g.bench_function("single_query_top10", |b| {
        b.iter(|| {
            qi = (qi + 1) % queries.len();
            black_box(pollster::block_on(coll.search(SearchRequest::new(queries[qi].clone(), 10))).unwrap())
        })
    });
    g.bench_function("baseline_simsimd_flat_scan_1thread_top10", |b| {
        b.iter(|| {
            qi = (qi + 1) % queries.len();
            let q = &queries[qi];
            let mut best: Vec<(f64, usize)> = Vec::with_capacity(11);
            for (i, v) in flat.chunks_exact(DIM).enumerate() {
                let s = f32::dot(q, v).unwrap_or(0.0);
                if best.len() < 10 || s > best[best.len() - 1].0 {
                    let pos = best.partition_point(|x| x.0 >= s);
                    best.insert(pos, (s, i));
                    best.truncate(10);
                }
            }
            black_box(best)
        })
    });
    g.throughput(Throughput::Elements(n * 16));
    g.bench_function("batch16_top10", |b| {
        b.iter(|| {
            let reqs = queries[..16]
                .iter()
                .map(|q| SearchRequest::new(q.clone(), 10))
                .collect();
            black_box(pollster::block_on(coll.search_batch(reqs)).unwrap())
        })
    });
    g.finish();
    engine.shutdown();
}

criterion_group!(benches, bench);
criterion_main!(benches);
