//! Every collection and point operation through the public API.

mod common;

use common::*;
use quiver_engine::*;
use serde_json::json;
use std::collections::BTreeMap;

fn ids(records: &[Record]) -> Vec<PointId> {
    records.iter().map(|r| r.id).collect()
}

#[test]
fn collection_lifecycle() {
    let dir = tempfile::tempdir().unwrap();
    let e = open(dir.path(), 2);
    assert!(e.list_collections().is_empty());
    let c = e
        .create_collection("a", CollectionConfig::single(4, Distance::Cosine))
        .unwrap();
    assert_eq!(c.config().shard_number, 2, "defaults to one shard per worker");
    e.create_collection("b", CollectionConfig::single(2, Distance::Dot))
        .unwrap();
    assert_eq!(e.list_collections(), vec!["a", "b"]);
    assert!(matches!(
        e.create_collection("a", CollectionConfig::single(4, Distance::Dot)),
        Err(EngineError::CollectionExists(_))
    ));
    for bad in ["", "../x", "a/b", ".hidden"] {
        assert!(
            matches!(
                e.create_collection(bad, CollectionConfig::single(4, Distance::Dot)),
                Err(EngineError::InvalidName(..))
            ),
            "{bad}"
        );
    }
    let info = block(c.info()).unwrap();
    assert_eq!((info.status, info.points_count, info.segments_count), ("green", 0, 2));
    assert!(e.delete_collection("a").unwrap());
    assert!(!e.delete_collection("a").unwrap());
    assert!(matches!(e.collection("a"), Err(EngineError::CollectionNotFound(_))));
    assert_eq!(e.list_collections(), vec!["b"]);
    assert!(!dir.path().join("collections/a").exists());
    // A deleted name can be created again, empty.
    let c = e
        .create_collection("a", CollectionConfig::single(4, Distance::Cosine))
        .unwrap();
    assert_eq!(block(c.count(None)).unwrap(), 0);
}

#[test]
fn upsert_retrieve_delete_and_payload_ops() {
    let dir = tempfile::tempdir().unwrap();
    let e = open(dir.path(), 2);
    let mut cfg = CollectionConfig::single(3, Distance::Dot);
    cfg.segment_max_points = 7; // exercise sealed segments alongside the appendable one
    let c = e.create_collection("c", cfg).unwrap();
    let pts: Vec<PointStruct> = (0..30)
        .map(|i| point(i, vec![i as f32, 1.0, 0.0], standard_payload(i)))
        .collect();
    block(c.upsert(pts, true)).unwrap();
    assert_eq!(block(c.count(None)).unwrap(), 30);
    assert!(block(c.info()).unwrap().segments_count > 2, "sealing happened");

    // Retrieve keeps request order, skips missing ids, dedups.
    let got = block(c.retrieve(
        vec![5.into(), 99.into(), 2.into(), 5.into()],
        WithPayload::Bool(true),
        WithVector::Bool(true),
    ))
    .unwrap();
    assert_eq!(ids(&got), vec![PointId::Num(5), PointId::Num(2)]);
    assert_eq!(got[0].payload.as_ref().unwrap()["group"], "g0");
    assert_eq!(got[0].vector, Some(VectorOutput::Single(vec![5.0, 1.0, 0.0])));
    let bare = block(c.retrieve(vec![5.into()], WithPayload::Bool(false), WithVector::Bool(false))).unwrap();
    assert_eq!((bare[0].payload.clone(), bare[0].vector.clone()), (None, None));

    // Upsert replaces.
    block(c.upsert(vec![point(5, vec![0.0, 0.0, 9.0], json!({"new": true}))], true)).unwrap();
    let got = block(c.retrieve(vec![5.into()], WithPayload::Bool(true), WithVector::Bool(true))).unwrap();
    assert_eq!(got[0].payload.as_ref().unwrap(), &payload(json!({"new": true})));
    assert_eq!(block(c.count(None)).unwrap(), 30);

    // Delete by ids and by filter.
    block(c.delete(PointsSelector::Ids(vec![0.into(), 1.into(), 12345.into()]), true)).unwrap();
    assert_eq!(block(c.count(None)).unwrap(), 28);
    block(c.delete(
        PointsSelector::Filter(filter(json!({"must": [{"key": "group", "match": {"value": "g3"}}]}))),
        true,
    ))
    .unwrap();
    assert_eq!(block(c.count(None)).unwrap(), 22);
    assert_eq!(
        block(c.count(Some(filter(
            json!({"must": [{"key": "group", "match": {"value": "g3"}}]})
        ))))
        .unwrap(),
        0
    );

    // set / overwrite / delete keys / clear, by ids and by filter.
    block(c.set_payload(
        PointsSelector::Ids(vec![2.into()]),
        payload(json!({"extra": 1})),
        None,
        true,
    ))
    .unwrap();
    block(c.set_payload(
        PointsSelector::Ids(vec![2.into()]),
        payload(json!({"deep": 2})),
        Some("a.b".into()),
        true,
    ))
    .unwrap();
    let p = block(c.retrieve(vec![2.into()], WithPayload::Bool(true), WithVector::Bool(true)))
        .unwrap()
        .remove(0);
    assert_eq!(p.payload.as_ref().unwrap()["extra"], 1);
    assert_eq!(p.payload.as_ref().unwrap()["a"]["b"]["deep"], 2);
    assert_eq!(p.payload.as_ref().unwrap()["group"], "g2");
    assert_eq!(
        p.vector,
        Some(VectorOutput::Single(vec![2.0, 1.0, 0.0])),
        "payload updates keep vectors"
    );
    block(c.delete_payload(
        PointsSelector::Ids(vec![2.into()]),
        vec!["extra".into(), "a.b.deep".into()],
        true,
    ))
    .unwrap();
    let p = block(c.retrieve(vec![2.into()], WithPayload::Bool(true), WithVector::Bool(false)))
        .unwrap()
        .remove(0);
    assert!(p.payload.as_ref().unwrap().get("extra").is_none());
    assert_eq!(p.payload.as_ref().unwrap()["a"]["b"], json!({}));
    block(c.overwrite_payload(
        PointsSelector::Filter(filter(json!({"must": [{"key": "even", "match": {"value": true}}]}))),
        payload(json!({"o": 1})),
        true,
    ))
    .unwrap();
    assert_eq!(
        block(c.count(Some(filter(json!({"must": [{"key": "o", "match": {"value": 1}}]}))))).unwrap(),
        11
    );
    block(c.clear_payload(PointsSelector::Ids(vec![7.into()]), true)).unwrap();
    let p = block(c.retrieve(vec![7.into()], WithPayload::Bool(true), WithVector::Bool(false)))
        .unwrap()
        .remove(0);
    assert!(p.payload.unwrap().is_empty());

    // Payload ops on a missing id fail and change nothing anywhere.
    let before = scroll_all(&c, None);
    let err = block(c.set_payload(
        PointsSelector::Ids(vec![2.into(), 4242.into()]),
        payload(json!({"x": 1})),
        None,
        true,
    ))
    .unwrap_err();
    assert!(matches!(err, EngineError::PointNotFound(PointId::Num(4242))), "{err}");
    assert_eq!(scroll_all(&c, None), before);
}

#[test]
fn scroll_pages_in_id_order_with_filter() {
    let dir = tempfile::tempdir().unwrap();
    let e = open(dir.path(), 2);
    let mut cfg = CollectionConfig::single(2, Distance::Euclid);
    cfg.segment_max_points = 10;
    let c = e.create_collection("s", cfg).unwrap();
    let u = uuid::Uuid::from_u128(42);
    let mut pts: Vec<PointStruct> = (0..45)
        .rev()
        .map(|i| point(i, vec![i as f32, 0.0], standard_payload(i)))
        .collect();
    pts.push(PointStruct {
        id: PointId::Uuid(u),
        vector: PointVectors::Single(vec![0.0, 0.0]),
        payload: None,
    });
    block(c.upsert(pts, true)).unwrap();
    let mut seen = Vec::new();
    let mut offset = None;
    loop {
        let page = block(c.scroll(ScrollRequest {
            offset,
            limit: 7,
            filter: None,
            with_payload: WithPayload::Bool(false),
            with_vector: WithVector::Bool(false),
        }))
        .unwrap();
        seen.extend(ids(&page.points));
        match page.next_page_offset {
            Some(o) => offset = Some(o),
            None => break,
        }
    }
    let mut expected: Vec<PointId> = (0..45).map(PointId::Num).collect();
    expected.push(PointId::Uuid(u));
    assert_eq!(seen, expected, "numbers first, then UUIDs, each once");
    let f = filter(
        json!({"must": [{"key": "n", "range": {"gte": 10, "lt": 20}}], "must_not": [{"key": "even", "match": {"value": true}}]}),
    );
    let page = block(c.scroll(ScrollRequest {
        offset: Some(13.into()),
        limit: 2,
        filter: Some(f),
        with_payload: WithPayload::Include(vec!["n".into()]),
        with_vector: WithVector::Bool(false),
    }))
    .unwrap();
    assert_eq!(ids(&page.points), vec![PointId::Num(13), PointId::Num(15)]);
    assert_eq!(page.next_page_offset, Some(PointId::Num(17)));
    assert_eq!(page.points[0].payload.as_ref().unwrap().len(), 1);
}

#[test]
fn named_and_sparse_vectors() {
    let dir = tempfile::tempdir().unwrap();
    let e = open(dir.path(), 2);
    let mut cfg: CollectionConfig = serde_json::from_value(json!({
        "vectors": {"img": {"size": 2, "distance": "Dot"}, "txt": {"size": 3, "distance": "Cosine"}},
        "sparse_vectors": {"kw": {}}
    }))
    .unwrap();
    cfg.segment_max_points = 3;
    let c = e.create_collection("n", cfg).unwrap();
    let mk = |id: u64, v: serde_json::Value| -> PointStruct {
        serde_json::from_value(json!({"id": id, "vector": v})).unwrap()
    };
    block(c.upsert(
        vec![
            mk(
                1,
                json!({"img": [1.0, 0.0], "kw": {"indices": [1, 7], "values": [1.0, 2.0]}}),
            ),
            mk(2, json!({"txt": [0.0, 3.0, 4.0]})),
            mk(
                3,
                json!({"img": [0.5, 0.5], "txt": [1.0, 0.0, 0.0], "kw": {"indices": [7], "values": [0.5]}}),
            ),
            mk(4, json!({"kw": {"indices": [9], "values": [1.0]}})),
            mk(5, json!({})),
        ],
        true,
    ))
    .unwrap();
    let search = |using: &str, q: QueryVector| {
        let mut r = SearchRequest::new(vec![], 10);
        r.using = using.into();
        r.query = q;
        block(c.search(r))
            .unwrap()
            .iter()
            .map(|h| (h.id, h.score))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        search("img", QueryVector::Dense(vec![1.0, 0.0])),
        vec![(1.into(), 1.0), (3.into(), 0.5)]
    );
    let txt = search("txt", QueryVector::Dense(vec![0.0, 0.0, 2.0]));
    assert_eq!(txt.iter().map(|h| h.0).collect::<Vec<_>>(), vec![2.into(), 3.into()]);
    assert!((txt[0].1 - 0.8).abs() < 1e-6, "cosine of normalised vectors: {txt:?}");
    let kw = search(
        "kw",
        QueryVector::Sparse(SparseVector {
            indices: vec![7, 1],
            values: vec![1.0, 1.0],
        }),
    );
    assert_eq!(
        kw,
        vec![(1.into(), 3.0), (3.into(), 0.5)],
        "points sharing no index are not candidates"
    );
    let r = block(c.retrieve(
        vec![3.into()],
        WithPayload::Bool(false),
        WithVector::Names(vec!["kw".into(), "img".into()]),
    ))
    .unwrap();
    let VectorOutput::Named(v) = r[0].vector.clone().unwrap() else {
        panic!("named collection returns a map")
    };
    assert_eq!(v.keys().collect::<Vec<_>>(), vec!["img", "kw"]);
    assert_eq!(
        v["kw"],
        VectorData::Sparse(SparseVector {
            indices: vec![7],
            values: vec![0.5]
        })
    );
    assert_eq!(
        block(c.count(Some(filter(json!({"must": [{"has_vector": "img"}]}))))).unwrap(),
        2
    );
    // Errors: unknown vector names, dense given for sparse, wrong sizes; nothing stored changes.
    let before = scroll_all(&c, None);
    let bad: Vec<PointStruct> = vec![mk(9, json!({"nope": [1.0]}))];
    assert!(matches!(block(c.upsert(bad, true)), Err(EngineError::UnknownVector(_))));
    let bad = vec![mk(9, json!({"img": [1.0, 2.0, 3.0]}))];
    assert!(matches!(
        block(c.upsert(bad, true)),
        Err(EngineError::WrongVectorDim { expected: 2, got: 3 })
    ));
    let bad = vec![mk(1, json!({"kw": {"indices": [1, 1], "values": [1.0, 2.0]}}))];
    assert!(matches!(block(c.upsert(bad, true)), Err(EngineError::BadRequest(_))));
    assert_eq!(scroll_all(&c, None), before);
    let _ = BTreeMap::<u8, u8>::new();
}

#[test]
fn bad_input_is_rejected_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let e = open(dir.path(), 1);
    let c = e
        .create_collection("b", CollectionConfig::single(3, Distance::Euclid))
        .unwrap();
    block(c.upsert(
        (0..5).map(|i| point(i, vec![i as f32; 3], json!({"i": i}))).collect(),
        true,
    ))
    .unwrap();
    let before = scroll_all(&c, None);
    // One bad point in a batch rejects the whole batch.
    let batch = vec![point(10, vec![1.0; 3], json!({})), point(11, vec![1.0; 4], json!({}))];
    assert!(matches!(
        block(c.upsert(batch, true)),
        Err(EngineError::WrongVectorDim { expected: 3, got: 4 })
    ));
    let batch = vec![point(1, vec![f32::NAN, 0.0, 0.0], json!({}))];
    assert!(matches!(block(c.upsert(batch, true)), Err(EngineError::BadRequest(_))));
    assert!(matches!(
        block(c.search(SearchRequest::new(vec![1.0; 2], 3))),
        Err(EngineError::WrongVectorDim { .. })
    ));
    assert!(matches!(
        block(c.search(SearchRequest::new(vec![f32::INFINITY; 3], 3))),
        Err(EngineError::BadRequest(_))
    ));
    assert!(matches!(
        e.collection("missing"),
        Err(EngineError::CollectionNotFound(_))
    ));
    assert!(matches!(
        e.create_collection("b", CollectionConfig::single(3, Distance::Dot)),
        Err(EngineError::CollectionExists(_))
    ));
    assert!(matches!(
        e.create_collection("z", CollectionConfig::single(0, Distance::Dot)),
        Err(EngineError::BadRequest(_))
    ));
    assert_eq!(scroll_all(&c, None), before);
    assert_eq!(
        c.config().vectors.0[""].distance,
        Distance::Euclid,
        "a failed duplicate create leaves the config alone"
    );
}
