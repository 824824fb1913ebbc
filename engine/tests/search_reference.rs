//! Exact search must equal a brute-force scalar reference, for every distance, with and without
//! filters, with and without payload indexes, across sealed and appendable segments.

mod common;

use common::*;
use quiver_engine::kernels::scalar;
use quiver_engine::*;
use serde_json::json;

/// A reference predicate on payloads, the same condition a filter expresses.
type Keep = Box<dyn Fn(&Payload) -> bool>;

struct Case {
    dim: usize,
    points: Vec<(u64, Vec<f32>, Payload)>,
}

fn dataset(seed: u64, n: u64, dim: usize) -> Case {
    let mut rng = Rng(seed);
    Case {
        dim,
        points: (0..n)
            .map(|i| (i, rng.vec(dim), payload(standard_payload(i))))
            .collect(),
    }
}

fn normalise(v: &[f32]) -> Vec<f32> {
    let n = scalar::dot(v, v).sqrt();
    v.iter().map(|x| x / n).collect()
}

/// Scalar reference: user-visible score and the ranking order (best first).
fn reference(
    d: Distance,
    q: &[f32],
    data: &Case,
    keep: &dyn Fn(&Payload) -> bool,
    limit: usize,
    offset: usize,
) -> Vec<(u64, f32)> {
    let mut scored: Vec<(u64, f32)> = data
        .points
        .iter()
        .filter(|(_, _, p)| keep(p))
        .map(|(id, v, _)| {
            let s = match d {
                Distance::Cosine => scalar::dot(&normalise(q), &normalise(v)),
                Distance::Dot => scalar::dot(q, v),
                Distance::Euclid => scalar::l2sq(q, v).sqrt(),
                Distance::Manhattan => scalar::l1(q, v),
            };
            (*id, s)
        })
        .collect();
    let lower_better = matches!(d, Distance::Euclid | Distance::Manhattan);
    scored.sort_by(|a, b| {
        if lower_better {
            a.1.total_cmp(&b.1)
        } else {
            b.1.total_cmp(&a.1)
        }
        .then(a.0.cmp(&b.0))
    });
    scored.into_iter().skip(offset).take(limit).collect()
}

fn assert_same(got: &[ScoredPoint], want: &[(u64, f32)], ctx: &str) {
    assert_eq!(got.len(), want.len(), "{ctx}: lengths");
    for (g, (id, s)) in got.iter().zip(want) {
        let tol = 1e-3 * s.abs().max(1.0);
        assert!((g.score - s).abs() <= tol, "{ctx}: score {} vs {s}", g.score);
        // Ids must agree unless two reference scores tie within rounding.
        if g.id != PointId::Num(*id) {
            let alt = want.iter().find(|(i, _)| PointId::Num(*i) == g.id);
            assert!(
                alt.is_some_and(|(_, s2)| (s2 - s).abs() <= tol),
                "{ctx}: id {:?} vs {id}",
                g.id
            );
        }
    }
}

fn run_distance(d: Distance, indexed: bool) {
    let dir = tempfile::tempdir().unwrap();
    let e = open(dir.path(), 2);
    let data = dataset(d as u64 + 11, 700, 17);
    let mut cfg = CollectionConfig::single(data.dim, d);
    cfg.segment_max_points = 150;
    let c = e.create_collection("r", cfg).unwrap();
    if indexed {
        block(c.create_index("group".into(), PayloadFieldSchema::Type(PayloadSchemaType::Keyword))).unwrap();
        block(c.create_index("n".into(), PayloadFieldSchema::Type(PayloadSchemaType::Integer))).unwrap();
    }
    for chunk in data.points.chunks(100) {
        let pts = chunk
            .iter()
            .map(|(id, v, p)| PointStruct {
                id: (*id).into(),
                vector: PointVectors::Single(v.clone()),
                payload: Some(p.clone()),
            })
            .collect();
        block(c.upsert(pts, true)).unwrap();
    }
    if !indexed {
        // Indexes created after the data exists must be built over sealed segments too.
        block(c.create_index("group".into(), PayloadFieldSchema::Type(PayloadSchemaType::Keyword))).unwrap();
    }
    let mut rng = Rng(99);
    let filters: Vec<(Option<Filter>, Keep)> = vec![
        (None, Box::new(|_| true)),
        (
            Some(filter(json!({"must": [{"key": "group", "match": {"value": "g2"}}]}))),
            Box::new(|p| p["group"] == "g2"),
        ),
        (
            Some(filter(
                json!({"must": [{"key": "n", "range": {"gte": 100, "lt": 400}}], "must_not": [{"key": "even", "match": {"value": true}}]}),
            )),
            Box::new(|p| (100..400).contains(&p["n"].as_u64().unwrap()) && p["even"] == false),
        ),
        (
            Some(filter(
                json!({"should": [{"key": "group", "match": {"any": ["g0", "g4"]}}, {"key": "score", "range": {"lt": 5.0}}]}),
            )),
            Box::new(|p| ["g0", "g4"].contains(&p["group"].as_str().unwrap()) || p["score"].as_f64().unwrap() < 5.0),
        ),
    ];
    let mut batch = Vec::new();
    let mut expected = Vec::new();
    for (fi, (f, keep)) in filters.iter().enumerate() {
        for (limit, offset) in [(1, 0), (10, 0), (7, 5)] {
            let q = rng.vec(data.dim);
            let mut req = SearchRequest::new(q.clone(), limit);
            req.filter = f.clone();
            req.offset = offset;
            let got = block(c.search(req.clone())).unwrap();
            let want = reference(d, &q, &data, keep.as_ref(), limit, offset);
            assert_same(
                &got,
                &want,
                &format!("{d:?} indexed={indexed} filter#{fi} limit={limit} offset={offset}"),
            );
            batch.push(req);
            expected.push(want);
        }
    }
    let got = block(c.search_batch(batch)).unwrap();
    for (i, (g, w)) in got.iter().zip(&expected).enumerate() {
        assert_same(g, w, &format!("{d:?} batch #{i}"));
    }
    // score_threshold keeps exactly the hits on the right side of the threshold.
    let q = rng.vec(data.dim);
    let all = reference(d, &q, &data, &|_| true, 700, 0);
    let t = all[20].1;
    let mut req = SearchRequest::new(q, 700);
    req.score_threshold = Some(t);
    let got = block(c.search(req)).unwrap();
    let lower_better = matches!(d, Distance::Euclid | Distance::Manhattan);
    assert!(got.iter().all(|h| if lower_better {
        h.score <= t * 1.0001
    } else {
        h.score >= t - 1e-4
    }));
    assert!(
        (20..=22).contains(&got.len()),
        "{d:?}: {} hits within threshold",
        got.len()
    );
}

#[test]
fn cosine_matches_reference() {
    run_distance(Distance::Cosine, false);
    run_distance(Distance::Cosine, true);
}

#[test]
fn dot_matches_reference() {
    run_distance(Distance::Dot, false);
    run_distance(Distance::Dot, true);
}

#[test]
fn euclid_matches_reference() {
    run_distance(Distance::Euclid, false);
    run_distance(Distance::Euclid, true);
}

#[test]
fn manhattan_matches_reference() {
    run_distance(Distance::Manhattan, false);
    run_distance(Distance::Manhattan, true);
}

#[test]
fn indexed_filters_equal_scanned_filters() {
    let dir = tempfile::tempdir().unwrap();
    let e = open(dir.path(), 2);
    let mut cfg = CollectionConfig::single(2, Distance::Dot);
    cfg.segment_max_points = 64;
    let plain = e.create_collection("plain", cfg.clone()).unwrap();
    let idx = e.create_collection("idx", cfg).unwrap();
    for (key, t) in [
        ("group", PayloadSchemaType::Keyword),
        ("n", PayloadSchemaType::Integer),
        ("score", PayloadSchemaType::Float),
        ("even", PayloadSchemaType::Bool),
        ("when", PayloadSchemaType::Datetime),
    ] {
        block(idx.create_index(key.into(), PayloadFieldSchema::Type(t))).unwrap();
    }
    let pts = |i: u64| {
        let mut p = standard_payload(i);
        p["when"] = json!(format!("2024-01-{:02}T00:00:00Z", i % 28 + 1));
        point(i, vec![1.0, i as f32], p)
    };
    for c in [&plain, &idx] {
        block(c.upsert((0..300).map(pts).collect(), true)).unwrap();
        block(c.delete(
            PointsSelector::Ids((0..300).step_by(7).map(PointId::Num).collect()),
            true,
        ))
        .unwrap();
    }
    let cases = [
        json!({"must": [{"key": "group", "match": {"value": "g1"}}]}),
        json!({"must": [{"key": "group", "match": {"any": ["g1", "g3"]}}, {"key": "even", "match": {"value": false}}]}),
        json!({"must": [{"key": "n", "range": {"gt": 50, "lte": 120}}]}),
        json!({"must": [{"key": "n", "match": {"value": 78}}]}),
        json!({"must": [{"key": "score", "range": {"gte": 3.5, "lt": 9.25}}]}),
        json!({"must": [{"key": "when", "range": {"gte": "2024-01-10T00:00:00Z", "lt": "2024-01-12"}}]}),
        json!({"must": [{"key": "group", "match": {"except": ["g1"]}}, {"has_id": [1, 2, 3, 4, 5, 6]}]}),
        json!({"must": [{"key": "n", "values_count": {"gte": 1}}, {"key": "group", "match": {"value": "g4"}}]}),
    ];
    for f in cases {
        let f = filter(f);
        let a = scroll_all(&plain, Some(f.clone()));
        let b = scroll_all(&idx, Some(f.clone()));
        assert!(!a.is_empty(), "{f:?} selects something");
        assert_eq!(
            a.iter().map(|r| r.id).collect::<Vec<_>>(),
            b.iter().map(|r| r.id).collect::<Vec<_>>(),
            "{f:?}"
        );
        assert_eq!(
            block(plain.count(Some(f.clone()))).unwrap(),
            block(idx.count(Some(f.clone()))).unwrap()
        );
    }
    block(idx.drop_index("group".into())).unwrap();
    assert!(!idx.config().payload_schema.contains_key("group"));
    assert!(matches!(
        block(idx.drop_index("group".into())),
        Err(EngineError::BadRequest(_))
    ));
}
