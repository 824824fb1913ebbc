//! HNSW through the engine: graphs built in the background for sealed segments, recall against
//! exact search for every distance, filtered search, deletions and updates of indexed points,
//! and graphs surviving a restart without a rebuild.

mod common;

use std::time::{Duration, Instant};

use common::*;
use quiver_engine::*;
use serde_json::json;

const DIM: usize = 32;

/// Clustered points: 50 centres, points spread around them.
fn clustered(n: usize, seed: u64) -> Vec<Vec<f32>> {
    let mut rng = Rng(seed);
    let mut centres = Rng(99);
    let centres: Vec<Vec<f32>> = (0..50).map(|_| centres.vec(DIM)).collect();
    (0..n)
        .map(|i| {
            let c = &centres[(i * 7919) % centres.len()];
            c.iter().map(|x| x + 0.3 * rng.f32()).collect()
        })
        .collect()
}

fn config(distance: Distance) -> CollectionConfig {
    let mut cfg = CollectionConfig::single(DIM, distance);
    cfg.segment_max_points = 4000;
    cfg.shard_number = 1;
    // 10 KiB of 32-d vectors = 80 points: every sealed segment gets a graph.
    cfg.extra.insert(
        "hnsw_config".into(),
        json!({"m": 16, "ef_construct": 100, "full_scan_threshold": 10}),
    );
    cfg
}

/// Waits until every graph is built; then the sealed segments' vectors (all but the last
/// segment's, which is the appendable one and below `segment_max_points`) are indexed.
fn wait_green(c: &Collection) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let info = block(c.info()).unwrap();
        if info.status == "green" {
            assert!(
                info.indexed_vectors_count >= 8000,
                "graphs cover the sealed segments: {info:?}"
            );
            return;
        }
        assert!(Instant::now() < deadline, "indexes never finished");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn search(c: &Collection, q: &[f32], limit: usize, filter: Option<Filter>, exact: bool) -> Vec<ScoredPoint> {
    let mut r = SearchRequest::new(q.to_vec(), limit);
    r.filter = filter;
    r.params = SearchParams {
        hnsw_ef: Some(64),
        exact,
    };
    block(c.search(r)).unwrap()
}

fn ids(hits: &[ScoredPoint]) -> Vec<PointId> {
    hits.iter().map(|h| h.id).collect()
}

fn load(dir: &std::path::Path, distance: Distance, n: usize) -> (Engine, std::sync::Arc<Collection>) {
    let e = open(dir, 1);
    let c = e.create_collection("c", config(distance)).unwrap();
    let data = clustered(n, 7);
    for (chunk_i, chunk) in data.chunks(1000).enumerate() {
        let pts = chunk
            .iter()
            .enumerate()
            .map(|(j, v)| {
                let id = (chunk_i * 1000 + j) as u64;
                point(id, v.clone(), json!({"group": id % 100}))
            })
            .collect();
        block(c.upsert(pts, true)).unwrap();
    }
    block(c.flush()).unwrap();
    (e, c)
}

#[test]
fn recall_at_10_against_exact_for_every_distance() {
    for distance in [Distance::Cosine, Distance::Dot, Distance::Euclid, Distance::Manhattan] {
        let dir = tempfile::tempdir().unwrap();
        let (e, c) = load(dir.path(), distance, 12_000);
        wait_green(&c);
        let queries = clustered(100, 1234);
        let mut found = 0;
        for q in &queries {
            let truth = ids(&search(&c, q, 10, None, true));
            let got = ids(&search(&c, q, 10, None, false));
            found += got.iter().filter(|id| truth.contains(id)).count();
        }
        let recall = found as f64 / 1000.0;
        assert!(recall >= 0.95, "{distance:?}: recall@10 {recall}");
        e.shutdown();
    }
}

#[test]
fn filters_deletions_updates_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (e, c) = load(dir.path(), Distance::Cosine, 12_000);
    wait_green(&c);
    let queries = clustered(30, 555);

    // Selective filter (1% of the points): exact fallback, so identical to exact search.
    let selective = filter(json!({"must": [{"key": "group", "match": {"value": 7}}]}));
    for q in &queries {
        assert_eq!(
            ids(&search(&c, q, 10, Some(selective.clone()), false)),
            ids(&search(&c, q, 10, Some(selective.clone()), true))
        );
    }
    // A broad filter goes through the graph and returns only matching points.
    let broad = filter(json!({"must": [{"key": "group", "match": {"any": (0..50).collect::<Vec<u64>>()}}]}));
    let mut found = 0;
    for q in &queries {
        let got = search(&c, q, 10, Some(broad.clone()), false);
        assert!(got.iter().all(|h| matches!(h.id, PointId::Num(i) if i % 100 < 50)));
        let truth = ids(&search(&c, q, 10, Some(broad.clone()), true));
        found += got.iter().filter(|h| truth.contains(&h.id)).count();
    }
    assert!(found as f64 / 300.0 >= 0.95, "filtered recall {}", found as f64 / 300.0);

    // Deleted points are never returned; an updated point is found with its new vector.
    let q = &queries[0];
    let before = ids(&search(&c, q, 10, None, false));
    block(c.delete(PointsSelector::Ids(before[..5].to_vec()), true)).unwrap();
    let after = ids(&search(&c, q, 10, None, false));
    assert!(after.iter().all(|id| !before[..5].contains(id)), "{after:?}");
    let moved = before[5];
    let far: Vec<f32> = q.iter().map(|x| -x).collect();
    block(c.upsert(
        vec![PointStruct {
            id: moved,
            vector: PointVectors::Single(far.clone()),
            payload: None,
        }],
        true,
    ))
    .unwrap();
    let hits = search(&c, &far, 1, None, false);
    assert_eq!(hits[0].id, moved);
    assert!((hits[0].score - 1.0).abs() < 1e-4, "the new vector: {}", hits[0].score);
    assert!(
        !ids(&search(&c, q, 10, None, false)).contains(&moved),
        "stale copy masked"
    );

    // Restart: graphs are mapped from their files, nothing is rebuilt.
    let graphs_before = hnsw_files(dir.path());
    assert!(!graphs_before.is_empty());
    let expected = ids(&search(&c, &queries[1], 10, None, false));
    drop(c);
    e.shutdown();
    drop(e);
    let e = open(dir.path(), 1);
    let c = e.collection("c").unwrap();
    assert_eq!(block(c.info()).unwrap().status, "green", "no rebuild after a restart");
    assert_eq!(ids(&search(&c, &queries[1], 10, None, false)), expected);
    assert_eq!(hnsw_files(dir.path()), graphs_before, "the same graph files");
    e.shutdown();
}

/// (path, modification time) of every graph file under `root`.
fn hnsw_files(root: &std::path::Path) -> Vec<(std::path::PathBuf, std::time::SystemTime)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.file_name().unwrap().to_string_lossy().starts_with("hnsw-") {
                out.push((p.clone(), e.metadata().unwrap().modified().unwrap()));
            }
        }
    }
    out.sort();
    out
}

/// A changed `hnsw_config` (Qdrant's PATCH) rebuilds the graphs in the background with the new
/// parameters, while the old graphs keep serving; the old files are removed at the next open.
#[test]
fn changed_hnsw_config_rebuilds_the_graphs() {
    let dir = tempfile::tempdir().unwrap();
    let (e, c) = load(dir.path(), Distance::Euclid, 9_000);
    wait_green(&c);
    let before = hnsw_files(dir.path());
    assert!(
        before.iter().all(|(p, _)| p.to_string_lossy().contains("-m16-ef100")),
        "{before:?}"
    );
    block(c.update_config(|cfg| {
        cfg.extra.insert(
            "hnsw_config".into(),
            json!({"m": 8, "ef_construct": 50, "full_scan_threshold": 10}),
        );
        Ok(())
    }))
    .unwrap();
    wait_green(&c);
    let after = hnsw_files(dir.path());
    assert!(
        after.iter().any(|(p, _)| p.to_string_lossy().contains("-m8-ef50")),
        "{after:?}"
    );
    let q = clustered(1, 77).remove(0);
    let exact = ids(&search(&c, &q, 5, None, true));
    let approx = ids(&search(&c, &q, 5, None, false));
    assert_eq!(approx[0], exact[0]);
    drop(c);
    e.shutdown();
    drop(e);
    let e = open(dir.path(), 1);
    let c = e.collection("c").unwrap();
    assert_eq!(block(c.info()).unwrap().status, "green");
    let files = hnsw_files(dir.path());
    assert!(
        !files.is_empty() && files.iter().all(|(p, _)| p.to_string_lossy().contains("-m8-ef50")),
        "old graphs removed: {files:?}"
    );
    e.shutdown();
}
