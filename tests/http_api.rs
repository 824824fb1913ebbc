//! Drives the real `quiver` binary over HTTP on an ephemeral loopback port: the envelope, every
//! route with hostile input, size limits, auth on probes, graceful shutdown with persistence.

mod common;

use common::{Server, assert_error};
use serde_json::{Value, json};

fn setup(s: &Server) {
    s.ok(
        "PUT",
        "/collections/c",
        Some(json!({"vectors": {"size": 3, "distance": "Dot"}, "optimizers_config": {"indexing_threshold": 5}})),
    );
    let points: Vec<Value> = (0..20)
        .map(|i| json!({"id": i, "vector": [i as f32, 1.0, 0.0], "payload": {"i": i, "even": i % 2 == 0}}))
        .collect();
    s.ok(
        "PUT",
        "/collections/c/points?wait=true",
        Some(json!({ "points": points })),
    );
}

#[test]
fn envelope_routes_and_results() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    let (st, root) = s.call("GET", "/", None);
    assert_eq!(st, 200);
    assert!(root["version"].as_str().unwrap().starts_with("1."), "{root}");
    for probe in ["/healthz", "/livez", "/readyz"] {
        assert_eq!(s.call("GET", probe, None).0, 200);
    }
    setup(&s);
    assert_eq!(s.ok("GET", "/collections", None)["collections"], json!([{"name": "c"}]));
    assert_eq!(s.ok("GET", "/collections/c/exists", None)["exists"], true);
    let info = s.ok("GET", "/collections/c", None);
    assert_eq!(info["points_count"], 20);
    assert_eq!(
        info["config"]["optimizer_config"]["indexing_threshold"], 5,
        "stored settings are echoed"
    );
    assert_eq!(
        info["config"]["params"]["vectors"],
        json!({"size": 3, "distance": "Dot"})
    );
    s.ok(
        "PATCH",
        "/collections/c",
        Some(json!({"optimizers_config": {"indexing_threshold": 7}, "hnsw_config": {"m": 8}})),
    );
    let info = s.ok("GET", "/collections/c", None);
    assert_eq!(info["config"]["optimizer_config"]["indexing_threshold"], 7);
    assert_eq!(info["config"]["hnsw_config"]["m"], 8);

    let hits = s.ok(
        "POST",
        "/collections/c/points/search",
        Some(json!({"vector": [1.0, 0.0, 0.0], "limit": 3, "with_payload": true})),
    );
    assert_eq!(
        hits.as_array()
            .unwrap()
            .iter()
            .map(|h| h["id"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        vec![19, 18, 17]
    );
    assert_eq!(hits[0]["payload"]["i"], 19);
    let batch = s.ok(
        "POST",
        "/collections/c/points/search/batch",
        Some(json!({"searches": [
            {"vector": [1.0, 0.0, 0.0], "limit": 1},
            {"vector": [1.0, 0.0, 0.0], "limit": 2, "filter": {"must": [{"key": "even", "match": {"value": false}}]}}
        ]})),
    );
    assert_eq!(batch[1][0]["id"], 19);
    assert_eq!(batch[1][1]["id"], 17);
    let q = s.ok(
        "POST",
        "/collections/c/points/query",
        Some(json!({"query": {"nearest": [1.0, 0.0, 0.0]}, "limit": 2, "offset": 1, "score_threshold": 17.5})),
    );
    assert_eq!(
        q["points"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["id"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        vec![18]
    );
    let qb = s.ok(
        "POST",
        "/collections/c/points/query/batch",
        Some(json!({"searches": [{"query": [1.0, 0.0, 0.0], "limit": 1}, {"limit": 2}]})),
    );
    assert_eq!(qb[0]["points"][0]["id"], 19);
    assert_eq!(
        qb[1]["points"].as_array().unwrap().len(),
        2,
        "no query: points in id order"
    );

    let got = s.ok(
        "POST",
        "/collections/c/points",
        Some(json!({"ids": [3, 99], "with_vector": true})),
    );
    assert_eq!(got.as_array().unwrap().len(), 1);
    assert_eq!(got[0]["vector"], json!([3.0, 1.0, 0.0]));
    assert_eq!(s.ok("GET", "/collections/c/points/4", None)["payload"]["i"], 4);
    let (st, v) = s.call("GET", "/collections/c/points/404", None);
    assert_error(st, &v, 404, "missing point");

    let page = s.ok(
        "POST",
        "/collections/c/points/scroll",
        Some(json!({"limit": 5, "offset": 10, "filter": {"must": [{"key": "even", "match": {"value": true}}]}})),
    );
    let ids: Vec<u64> = page["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, vec![10, 12, 14, 16, 18]);
    assert_eq!(page["next_page_offset"], Value::Null, "no even id after 18");
    let page = s.ok("POST", "/collections/c/points/scroll", Some(json!({"limit": 2})));
    assert_eq!(page["next_page_offset"], 2);
    assert_eq!(
        s.ok(
            "POST",
            "/collections/c/points/count",
            Some(json!({"filter": {"must": [{"key": "i", "range": {"lt": 5}}]}}))
        )["count"],
        5
    );
    assert_eq!(s.ok("POST", "/collections/c/points/count", None)["count"], 20);

    s.ok(
        "POST",
        "/collections/c/points/payload?wait=true",
        Some(json!({"payload": {"x": 1}, "points": [1]})),
    );
    s.ok(
        "PUT",
        "/collections/c/points/payload?wait=true",
        Some(json!({"payload": {"y": 2}, "filter": {"must": [{"has_id": [2]}]}})),
    );
    s.ok(
        "POST",
        "/collections/c/points/payload/delete?wait=true",
        Some(json!({"keys": ["i"], "points": [1]})),
    );
    s.ok(
        "POST",
        "/collections/c/points/payload/clear?wait=true",
        Some(json!({"points": [3]})),
    );
    let got = s.ok("POST", "/collections/c/points", Some(json!({"ids": [1, 2, 3]})));
    assert_eq!(got[0]["payload"], json!({"x": 1, "even": false}));
    assert_eq!(got[1]["payload"], json!({"y": 2}));
    assert_eq!(got[2]["payload"], json!({}));

    let idx = s.ok(
        "PUT",
        "/collections/c/index?wait=true",
        Some(json!({"field_name": "even", "field_schema": "bool"})),
    );
    assert_eq!(idx["status"], "completed");
    assert_eq!(
        s.ok("GET", "/collections/c", None)["payload_schema"]["even"]["data_type"],
        "bool"
    );
    s.ok("DELETE", "/collections/c/index/even", None);
    assert_eq!(s.ok("GET", "/collections/c", None)["payload_schema"], json!({}));

    let r = s.ok(
        "PUT",
        "/collections/c/points?wait=false",
        Some(json!({"batch": {"ids": [100, 101], "vectors": [[1, 1, 1], [2, 2, 2]], "payloads": [{"b": 1}, null]}})),
    );
    assert_eq!(r["status"], "acknowledged");
    s.ok(
        "POST",
        "/collections/c/points/delete?wait=true",
        Some(json!({"points": [100]})),
    );
    s.ok(
        "POST",
        "/collections/c/points/delete?wait=true",
        Some(json!({"filter": {"must": [{"key": "even", "match": {"value": true}}]}})),
    );
    // 20 + 2 inserted - 1 deleted by id - 9 even ones (point 2 lost its `even` key when overwritten).
    assert_eq!(s.ok("POST", "/collections/c/points/count", None)["count"], 12);

    assert_eq!(s.ok("DELETE", "/collections/c", None), true);
    let (st, v) = s.call("GET", "/collections/c", None);
    assert_error(st, &v, 404, "deleted collection");
}

#[test]
fn hostile_input_gets_errors_and_the_server_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[("QDRANT__SERVICE__MAX_REQUEST_SIZE_MB", "1")]);
    setup(&s);
    let before = s.ok(
        "POST",
        "/collections/c/points/scroll",
        Some(json!({"limit": 100, "with_vector": true})),
    );
    let routes: &[(&str, &str)] = &[
        ("PUT", "/collections/x"),
        ("PATCH", "/collections/c"),
        ("PUT", "/collections/c/index"),
        ("PUT", "/collections/c/points"),
        ("POST", "/collections/c/points"),
        ("POST", "/collections/c/points/delete"),
        ("POST", "/collections/c/points/payload"),
        ("PUT", "/collections/c/points/payload"),
        ("POST", "/collections/c/points/payload/delete"),
        ("POST", "/collections/c/points/payload/clear"),
        ("POST", "/collections/c/points/scroll"),
        ("POST", "/collections/c/points/count"),
        ("POST", "/collections/c/points/search"),
        ("POST", "/collections/c/points/search/batch"),
        ("POST", "/collections/c/points/query"),
        ("POST", "/collections/c/points/query/batch"),
    ];
    let huge = vec![b' '; 2 * 1024 * 1024];
    let (st, v) = s.raw(
        "PUT",
        "/collections/c/points",
        Some(&vec![b' '; 1024 * 1024 + 1]),
        &[("transfer-encoding", "chunked")],
    );
    assert_error(st, &v, 413, "a chunked body over the limit");
    let bodies: Vec<(&str, Vec<u8>)> = vec![
        ("malformed", b"{\"points\": [".to_vec()),
        ("not json", b"\xff\xfe garbage".to_vec()),
        ("wrong types", br#"{"points": "nope", "limit": "ten", "vector": 3, "ids": {}, "payload": 1, "keys": 2, "filter": 5, "searches": 1, "vectors": 7, "field_name": 1, "query": {"bogus": 1}}"#.to_vec()),
        ("negative limit", br#"{"limit": -5, "vector": [1, 2, 3], "query": [1, 2, 3]}"#.to_vec()),
        ("unknown field", br#"{"this_field_does_not_exist": true}"#.to_vec()),
        ("array", b"[1, 2, 3]".to_vec()),
    ];
    for (method, path) in routes {
        for (what, body) in &bodies {
            let (st, v) = s.raw(method, path, Some(body), &[]);
            assert!((400..500).contains(&st), "{method} {path} with {what}: {st} {v}");
            assert_error(st, &v, st, &format!("{method} {path} with {what}"));
        }
        let (st, v) = s.oversized(method, path, huge.len());
        assert_error(st, &v, 413, &format!("{method} {path} with a 2 MiB body"));
    }
    let (st, v) = s.call("POST", "/collections/c/points/scroll", Some(json!({"limit": 0})));
    assert_error(st, &v, 422, "zero limit");
    let (st, v) = s.call(
        "PUT",
        "/collections/c/points?wait=true",
        Some(json!({"points": [{"id": 1, "vector": [1.0, 2.0]}]})),
    );
    assert_error(st, &v, 400, "wrong dimension");
    assert!(v["status"]["error"].as_str().unwrap().contains("dimension"));
    let (st, v) = s.call(
        "PUT",
        "/collections/c/points?wait=true",
        Some(json!({"points": [{"id": -1, "vector": [1.0, 2.0, 3.0]}]})),
    );
    assert_error(st, &v, 400, "negative id");
    let (st, v) = s.call(
        "PUT",
        "/collections/c",
        Some(json!({"vectors": {"size": 3, "distance": "Dot"}})),
    );
    assert_error(st, &v, 409, "duplicate collection");
    let (st, v) = s.call(
        "PUT",
        "/collections/.hidden",
        Some(json!({"vectors": {"size": 3, "distance": "Dot"}})),
    );
    assert_error(st, &v, 400, "bad name");
    let (st, v) = s.call("POST", "/collections/nope/points/count", None);
    assert_error(st, &v, 404, "missing collection");
    let (st, v) = s.call("GET", "/no/such/route", None);
    assert_error(st, &v, 404, "unknown route");
    let (st, v) = s.call("DELETE", "/collections/c/points", None);
    assert_error(st, &v, 404, "unknown method on a known path");
    // Nothing above changed the data, and the server still answers.
    assert_eq!(
        s.ok(
            "POST",
            "/collections/c/points/scroll",
            Some(json!({"limit": 100, "with_vector": true}))
        ),
        before
    );
    assert_eq!(s.call("GET", "/readyz", None).0, 200);
}

#[test]
fn api_key_guards_everything_but_probes() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[("QDRANT__SERVICE__API_KEY", "k1")]);
    for probe in ["/healthz", "/livez", "/readyz"] {
        assert_eq!(s.call("GET", probe, None).0, 200, "{probe} needs no key");
    }
    let (st, v) = s.call("GET", "/collections", None);
    assert_error(st, &v, 401, "no key");
    let (st, v) = s.raw("GET", "/collections", None, &[("api-key", "nope")]);
    assert_error(st, &v, 403, "wrong key");
    assert_eq!(s.raw("GET", "/collections", None, &[("api-key", "k1")]).0, 200);
    assert_eq!(
        s.raw("GET", "/collections", None, &[("authorization", "Bearer k1")]).0,
        200
    );
}

#[test]
fn sigterm_finishes_cleanly_and_data_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    setup(&s);
    // Acknowledged without wait: the WAL is synced on shutdown.
    s.ok(
        "PUT",
        "/collections/c/points?wait=false",
        Some(json!({"points": [{"id": 500, "vector": [5.0, 5.0, 5.0], "payload": {"late": true}}]})),
    );
    let before = s.ok(
        "POST",
        "/collections/c/points/scroll",
        Some(json!({"limit": 100, "with_vector": true})),
    );
    let status = s.terminate();
    assert!(status.success(), "clean exit on SIGTERM: {status:?}");
    let s = Server::start(dir.path(), &[]);
    assert_eq!(
        s.ok(
            "POST",
            "/collections/c/points/scroll",
            Some(json!({"limit": 100, "with_vector": true}))
        ),
        before
    );
    assert_eq!(
        s.ok("POST", "/collections/c/points", Some(json!({"ids": [500]})))[0]["payload"]["late"],
        true
    );
}
