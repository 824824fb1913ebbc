//! Snapshots through the real binary: round trips that reopen identically, consistency under
//! concurrent writes, crash safety, checksums, names, shard and full snapshots, aliases.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use common::{Server, assert_error};
use quiver_engine::{Engine, EngineOptions, ScrollRequest, WithPayload, WithVector};
use serde_json::{Value, json};

fn sha256sum(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().expect("sha256sum");
    String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

fn untar(archive: &Path, dest: &Path) {
    std::fs::create_dir_all(dest).unwrap();
    let st = Command::new("tar")
        .arg("-xf")
        .arg(archive)
        .arg("-C")
        .arg(dest)
        .status()
        .expect("tar");
    assert!(st.success(), "tar -xf {archive:?}");
}

fn download(s: &Server, path: &str, to: &Path) -> Vec<u8> {
    let mut resp = Server::agent()
        .get(format!("{}{}", s.base, path))
        .call()
        .expect("download");
    assert_eq!(resp.status().as_u16(), 200, "GET {path}");
    let bytes = resp.body_mut().with_config().limit(u64::MAX).read_to_vec().unwrap();
    std::fs::write(to, &bytes).unwrap();
    bytes
}

/// Checks every member listed in the manifest against its size and CRC32.
fn verify_manifest(root: &Path) -> Value {
    let manifest: Value = serde_json::from_slice(&std::fs::read(root.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["format_version"], 1);
    for f in manifest["files"].as_array().unwrap() {
        let bytes = std::fs::read(root.join(f["path"].as_str().unwrap())).unwrap();
        assert_eq!(bytes.len() as u64, f["size"].as_u64().unwrap(), "{f}");
        assert_eq!(crc32fast::hash(&bytes), f["crc32"].as_u64().unwrap() as u32, "{f}");
    }
    manifest
}

/// Opens an unpacked collection snapshot with the engine and returns all its records as JSON.
fn open_unpacked(unpacked: &Path, name: &str) -> Vec<Value> {
    let storage = unpacked.parent().unwrap().join(format!("storage-{name}"));
    std::fs::create_dir_all(storage.join("collections")).unwrap();
    std::fs::rename(unpacked, storage.join("collections").join(name)).unwrap();
    let engine = Engine::open(EngineOptions {
        storage_path: storage,
        workers: 2,
        pin_threads: false,
    })
    .expect("snapshot opens");
    let c = engine.collection(name).unwrap();
    let page = pollster::block_on(c.scroll(ScrollRequest {
        offset: None,
        limit: 1_000_000,
        filter: None,
        with_payload: WithPayload::Bool(true),
        with_vector: WithVector::Bool(true),
    }))
    .unwrap();
    engine.shutdown();
    // Through text, as the HTTP API would send it (f32 values print shortest-first).
    page.points
        .iter()
        .map(|r| serde_json::from_str(&serde_json::to_string(r).unwrap()).unwrap())
        .collect()
}

/// Compares record lists, reporting the first difference instead of both lists.
fn assert_same_points(got: &[Value], want: &[Value]) {
    assert_eq!(got.len(), want.len(), "number of points");
    if let Some((g, w)) = got.iter().zip(want).find(|(g, w)| g != w) {
        panic!("first differing point:\n got  {g}\n want {w}");
    }
}

fn all_points(s: &Server, c: &str) -> Vec<Value> {
    let r = s.ok(
        "POST",
        &format!("/collections/{c}/points/scroll"),
        Some(json!({"limit": 1_000_000, "with_vector": true})),
    );
    r["points"].as_array().unwrap().clone()
}

fn small_segments(dir: &Path) -> Server {
    Server::start(
        dir,
        &[
            ("QDRANT__STORAGE__SEGMENT_MAX_POINTS", "100"),
            (
                "QDRANT__STORAGE__SNAPSHOTS_PATH",
                dir.join("snapshots").to_str().unwrap(),
            ),
        ],
    )
}

#[test]
fn collection_snapshot_round_trip_reopens_identically() {
    let dir = tempfile::tempdir().unwrap();
    let s = small_segments(dir.path());
    s.ok("PUT", "/collections/r", Some(json!({"vectors": {"img": {"size": 4, "distance": "Cosine"}}, "sparse_vectors": {"kw": {}}, "shard_number": 2})));
    for chunk in 0..10 {
        let points: Vec<Value> = (chunk * 100..chunk * 100 + 100)
            .map(|i| json!({"id": i, "vector": {"img": [i as f32, 1.0, 2.0, 3.0], "kw": {"indices": [i % 7, 100 + i % 3], "values": [1.0, 0.5]}}, "payload": {"i": i, "tag": format!("t{}", i % 5)}}))
            .collect();
        s.ok(
            "PUT",
            "/collections/r/points?wait=true",
            Some(json!({ "points": points })),
        );
    }
    s.ok(
        "POST",
        "/collections/r/points/delete?wait=true",
        Some(json!({"filter": {"must": [{"key": "tag", "match": {"value": "t3"}}]}})),
    );
    s.ok(
        "POST",
        "/collections/r/points/payload?wait=true",
        Some(json!({"payload": {"late": true}, "points": [1, 2, 501]})),
    );
    s.ok(
        "PUT",
        "/collections/r/index",
        Some(json!({"field_name": "tag", "field_schema": "keyword"})),
    );
    assert!(
        s.ok("GET", "/collections/r", None)["segments_count"].as_u64().unwrap() > 4,
        "several segments"
    );
    let expected = all_points(&s, "r");
    assert_eq!(expected.len(), 800);

    let d = s.ok("POST", "/collections/r/snapshots?wait=true", None);
    let name = d["name"].as_str().unwrap();
    assert!(name.starts_with("r-") && name.ends_with(".snapshot"), "{name}");
    assert!(d["creation_time"].as_str().unwrap().contains('T'));
    let listed = s.ok("GET", "/collections/r/snapshots", None);
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["checksum"], d["checksum"]);

    // On disk as Qdrant lays it out, with a sidecar matching sha256sum.
    let on_disk = dir.path().join("snapshots/r").join(name);
    assert_eq!(sha256sum(&on_disk), d["checksum"].as_str().unwrap());
    let sidecar = std::fs::read_to_string(dir.path().join("snapshots/r").join(format!("{name}.checksum"))).unwrap();
    assert_eq!(sidecar, d["checksum"].as_str().unwrap());
    assert_eq!(std::fs::metadata(&on_disk).unwrap().len(), d["size"].as_u64().unwrap());

    let file = dir.path().join("downloaded.tar");
    download(&s, &format!("/collections/r/snapshots/{name}"), &file);
    assert_eq!(sha256sum(&file), d["checksum"].as_str().unwrap());
    let unpacked = dir.path().join("unpacked");
    untar(&file, &unpacked);
    let manifest = verify_manifest(&unpacked);
    assert_eq!(manifest["kind"], "collection");
    assert_eq!(manifest["collection"], "r");
    // Writes after the snapshot do not leak into it.
    s.ok(
        "PUT",
        "/collections/r/points?wait=true",
        Some(json!({"points": [{"id": 9999, "vector": {"img": [1.0, 1.0, 1.0, 1.0]}}]})),
    );
    assert_same_points(&open_unpacked(&unpacked, "r"), &expected);
}

#[test]
fn snapshot_during_continuous_writes_has_every_acknowledged_point_and_no_torn_one() {
    let dir = tempfile::tempdir().unwrap();
    let s = Arc::new(small_segments(dir.path()));
    s.ok(
        "PUT",
        "/collections/w",
        Some(json!({"vectors": {"size": 3, "distance": "Dot"}, "shard_number": 2})),
    );
    const BATCH: u64 = 40;
    let acked = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (s, acked, stop) = (s.clone(), acked.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut b = 0u64;
            while !stop.load(Ordering::SeqCst) && b < 5000 {
                let points: Vec<Value> = (b * BATCH..(b + 1) * BATCH)
                    .map(|i| json!({"id": i, "vector": [i as f32, 1.0, 0.0], "payload": {"v": i, "batch": b}}))
                    .collect();
                s.ok(
                    "PUT",
                    "/collections/w/points?wait=true",
                    Some(json!({ "points": points })),
                );
                b += 1;
                acked.store(b, Ordering::SeqCst);
            }
        })
    };
    while acked.load(Ordering::SeqCst) < 15 {
        std::thread::sleep(Duration::from_millis(5));
    }
    let acked_before = acked.load(Ordering::SeqCst);
    let d = s.ok("POST", "/collections/w/snapshots", None);
    std::thread::sleep(Duration::from_millis(50));
    stop.store(true, Ordering::SeqCst);
    writer.join().unwrap();
    let written = acked.load(Ordering::SeqCst);
    assert!(written > acked_before, "writes went on while the snapshot was taken");

    let file = dir.path().join("snap.tar");
    download(
        &s,
        &format!("/collections/w/snapshots/{}", d["name"].as_str().unwrap()),
        &file,
    );
    let unpacked = dir.path().join("unpacked");
    untar(&file, &unpacked);
    verify_manifest(&unpacked);
    let points = open_unpacked(&unpacked, "w");
    let ids: Vec<u64> = points.iter().map(|p| p["id"].as_u64().unwrap()).collect();
    assert!(
        ids.len() as u64 >= acked_before * BATCH,
        "{} points, {acked_before} batches acknowledged before",
        ids.len()
    );
    assert_eq!(
        ids,
        (0..ids.len() as u64).collect::<Vec<_>>(),
        "a prefix of the write stream, nothing missing"
    );
    assert_eq!(
        ids.len() as u64 % BATCH,
        0,
        "batches are in the snapshot entirely or not at all"
    );
    for p in &points {
        let id = p["id"].as_u64().unwrap();
        assert_eq!(p["payload"]["v"], id, "payload of {id}");
        assert_eq!(p["vector"][0].as_f64().unwrap() as u64, id, "vector of {id}");
    }
}

#[test]
fn killed_mid_snapshot_leaves_no_visible_or_stray_file() {
    let dir = tempfile::tempdir().unwrap();
    let snaps = dir.path().join("snapshots");
    for round in 0..3u64 {
        let s = small_segments(dir.path());
        if round == 0 {
            s.ok(
                "PUT",
                "/collections/k",
                Some(json!({"vectors": {"size": 256, "distance": "Dot"}})),
            );
            for chunk in 0..20u64 {
                let points: Vec<Value> = (chunk * 1000..chunk * 1000 + 1000)
                    .map(|i| json!({"id": i, "vector": vec![i as f32; 256]}))
                    .collect();
                s.ok(
                    "PUT",
                    "/collections/k/points?wait=false",
                    Some(json!({ "points": points })),
                );
            }
        }
        let base = s.base.clone();
        let t = std::thread::spawn(move || {
            let _ = Server::agent()
                .post(format!("{base}/collections/k/snapshots?wait=true"))
                .send_empty();
        });
        std::thread::sleep(Duration::from_millis(10 + round * 40));
        let pid = s.child.id();
        // SIGKILL: no chance to clean up.
        let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
        t.join().unwrap();
        drop(s);
        let s = small_segments(dir.path());
        assert_eq!(s.ok("POST", "/collections/k/points/count", None)["count"], 20_000);
        for d in s.ok("GET", "/collections/k/snapshots", None).as_array().unwrap() {
            let path = snaps.join("k").join(d["name"].as_str().unwrap());
            assert_eq!(
                sha256sum(&path),
                d["checksum"].as_str().unwrap(),
                "a visible snapshot is complete"
            );
        }
        let stray: Vec<PathBuf> = walk(&snaps)
            .into_iter()
            .filter(|p| p.to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(stray.is_empty(), "round {round}: stray temp files {stray:?}");
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            }
            out.push(p);
        }
    }
    out
}

#[test]
fn names_shards_ranges_background_and_deletion() {
    let dir = tempfile::tempdir().unwrap();
    let s = small_segments(dir.path());
    s.ok(
        "PUT",
        "/collections/n",
        Some(json!({"vectors": {"size": 2, "distance": "Dot"}, "shard_number": 2})),
    );
    let points: Vec<Value> = (0..300).map(|i| json!({"id": i, "vector": [i as f32, 1.0]})).collect();
    s.ok(
        "PUT",
        "/collections/n/points?wait=true",
        Some(json!({ "points": points })),
    );
    let d = s.ok("POST", "/collections/n/snapshots", None);
    let name = d["name"].as_str().unwrap().to_string();

    for bad in ["..%2F..%2Fetc%2Fpasswd", "%2Fetc%2Fpasswd", ".hidden", "x%00y"] {
        let (st, v) = s.call("GET", &format!("/collections/n/snapshots/{bad}"), None);
        assert_error(st, &v, 400, bad);
        let (st, v) = s.call("DELETE", &format!("/collections/n/snapshots/{bad}"), None);
        assert_error(st, &v, 400, bad);
    }
    let (st, v) = s.call("GET", "/collections/n/snapshots/missing.snapshot", None);
    assert_error(st, &v, 404, "missing snapshot");
    let (st, v) = s.call("GET", "/collections/nope/snapshots", None);
    assert_error(st, &v, 404, "missing collection");

    // Range requests return exactly the slice.
    let whole = std::fs::read(dir.path().join("snapshots/n").join(&name)).unwrap();
    let mut resp = Server::agent()
        .get(format!("{}/collections/n/snapshots/{name}", s.base))
        .header("Range", "bytes=100-1123")
        .call()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 206);
    assert_eq!(resp.body_mut().read_to_vec().unwrap(), whole[100..1124].to_vec());

    // Background creation answers 202 and the snapshot appears.
    let resp = Server::agent()
        .post(format!("{}/collections/n/snapshots?wait=false", s.base))
        .send_empty()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 202);
    let mut n = 0;
    for _ in 0..200 {
        n = s.ok("GET", "/collections/n/snapshots", None).as_array().unwrap().len();
        if n == 2 {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(n, 2);

    // Shard snapshots: stored, listed, downloadable, deletable, and streamed live.
    let sd = s.ok("POST", "/collections/n/shards/1/snapshots", None);
    let sname = sd["name"].as_str().unwrap();
    assert!(dir.path().join("snapshots/n/shards/1").join(sname).exists());
    assert_eq!(
        s.ok("GET", "/collections/n/shards/1/snapshots", None)
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let file = dir.path().join("shard.tar");
    download(&s, &format!("/collections/n/shards/1/snapshots/{sname}"), &file);
    assert_eq!(sha256sum(&file), sd["checksum"].as_str().unwrap());
    let live = dir.path().join("live.tar");
    download(&s, "/collections/n/shards/0/snapshot", &live);
    let unpacked = dir.path().join("live");
    untar(&live, &unpacked);
    let m = verify_manifest(&unpacked);
    assert_eq!((m["kind"].as_str(), m["shard_id"].as_u64()), (Some("shard"), Some(0)));
    assert!(unpacked.join("shard.json").exists());
    let (st, v) = s.call("GET", "/collections/n/shards/7/snapshot", None);
    assert_error(st, &v, 404, "missing shard");
    s.ok("DELETE", &format!("/collections/n/shards/1/snapshots/{sname}"), None);
    assert!(
        s.ok("GET", "/collections/n/shards/1/snapshots", None)
            .as_array()
            .unwrap()
            .is_empty()
    );

    s.ok("DELETE", &format!("/collections/n/snapshots/{name}"), None);
    assert!(!dir.path().join("snapshots/n").join(&name).exists());
    assert!(!dir.path().join("snapshots/n").join(format!("{name}.checksum")).exists());
    let (st, v) = s.call("DELETE", &format!("/collections/n/snapshots/{name}"), None);
    assert_error(st, &v, 404, "deleted twice");
}

#[test]
fn full_snapshot_holds_every_collection_and_the_aliases() {
    let dir = tempfile::tempdir().unwrap();
    let s = small_segments(dir.path());
    for (c, dim) in [("a", 2), ("b", 3)] {
        s.ok(
            "PUT",
            &format!("/collections/{c}"),
            Some(json!({"vectors": {"size": dim, "distance": "Euclid"}})),
        );
        let points: Vec<Value> = (0..150)
            .map(|i| json!({"id": i, "vector": vec![i as f32; dim], "payload": {"c": c}}))
            .collect();
        s.ok(
            "PUT",
            &format!("/collections/{c}/points?wait=true"),
            Some(json!({ "points": points })),
        );
    }
    s.ok(
        "POST",
        "/collections/aliases",
        Some(json!({"actions": [
            {"create_alias": {"collection_name": "a", "alias_name": "first"}},
            {"create_alias": {"collection_name": "b", "alias_name": "tmp"}},
            {"rename_alias": {"old_alias_name": "tmp", "new_alias_name": "second"}}
        ]})),
    );
    assert_eq!(
        s.ok("POST", "/collections/first/points/count", None)["count"],
        150,
        "aliases resolve"
    );
    assert_eq!(
        s.ok("GET", "/collections/b/aliases", None)["aliases"],
        json!([{"alias_name": "second", "collection_name": "b"}])
    );
    let (st, v) = s.call(
        "POST",
        "/collections/aliases",
        Some(json!({"actions": [{"delete_alias": {"alias_name": "nope"}}]})),
    );
    assert_error(st, &v, 404, "unknown alias");
    assert_eq!(
        s.ok("GET", "/aliases", None)["aliases"].as_array().unwrap().len(),
        2,
        "a failed action list changes nothing"
    );

    let d = s.ok("POST", "/snapshots", None);
    let name = d["name"].as_str().unwrap();
    assert!(name.starts_with("full-snapshot-"), "{name}");
    assert_eq!(s.ok("GET", "/snapshots", None).as_array().unwrap().len(), 1);
    let file = dir.path().join("full.tar");
    download(&s, &format!("/snapshots/{name}"), &file);
    assert_eq!(sha256sum(&file), d["checksum"].as_str().unwrap());
    let unpacked = dir.path().join("full");
    untar(&file, &unpacked);
    let config: Value = serde_json::from_slice(&std::fs::read(unpacked.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["collections_aliases"], json!({"first": "a", "second": "b"}));
    for c in ["a", "b"] {
        let member = unpacked.join(config["collections_mapping"][c].as_str().unwrap());
        let inner = dir.path().join(format!("inner-{c}"));
        untar(&member, &inner);
        assert_eq!(verify_manifest(&inner)["collection"], c);
        assert_same_points(&open_unpacked(&inner, c), &all_points(&s, c));
    }
    s.ok("DELETE", &format!("/snapshots/{name}"), None);
    assert!(s.ok("GET", "/snapshots", None).as_array().unwrap().is_empty());
    s.ok(
        "POST",
        "/collections/aliases",
        Some(json!({"actions": [{"delete_alias": {"alias_name": "first"}}]})),
    );
    s.ok("DELETE", "/collections/b", None);
    assert!(
        s.ok("GET", "/aliases", None)["aliases"].as_array().unwrap().is_empty(),
        "deleting a collection drops its aliases"
    );
}

#[test]
fn temp_path_stages_the_archive_and_moves_it_across_filesystems() {
    let dir = tempfile::tempdir().unwrap();
    // tmpfs when available: a different filesystem (rename fails with EXDEV, so the archive is
    // copied) that also refuses O_DIRECT (so the buffered write path runs).
    let staging = match tempfile::tempdir_in("/dev/shm") {
        Ok(d) => d,
        Err(_) => tempfile::tempdir().unwrap(),
    };
    let snaps = dir.path().join("snapshots");
    let s = Server::start(
        dir.path(),
        &[
            ("QDRANT__STORAGE__TEMP_PATH", staging.path().to_str().unwrap()),
            ("QDRANT__STORAGE__SNAPSHOTS_PATH", snaps.to_str().unwrap()),
        ],
    );
    s.ok(
        "PUT",
        "/collections/t",
        Some(json!({"vectors": {"size": 8, "distance": "Dot"}})),
    );
    let points: Vec<Value> = (0..2000)
        .map(|i| json!({"id": i, "vector": vec![i as f32; 8]}))
        .collect();
    s.ok(
        "PUT",
        "/collections/t/points?wait=true",
        Some(json!({ "points": points })),
    );
    let d = s.ok("POST", "/collections/t/snapshots", None);
    let path = snaps.join("t").join(d["name"].as_str().unwrap());
    assert_eq!(sha256sum(&path), d["checksum"].as_str().unwrap());
    assert!(
        walk(staging.path()).is_empty(),
        "nothing left in temp_path: {:?}",
        walk(staging.path())
    );
    assert!(walk(&snaps).iter().all(|p| !p.to_string_lossy().ends_with(".tmp")));
    let unpacked = dir.path().join("unpacked");
    untar(&path, &unpacked);
    verify_manifest(&unpacked);
    assert_eq!(open_unpacked(&unpacked, "t").len(), 2000);
}

/// A snapshot storage that cannot work stops the server at start-up with a clear message,
/// rather than snapshots silently going elsewhere.
#[test]
fn unusable_snapshot_storage_config_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&[(&str, &str)], &str); 3] = [
        (
            &[("QDRANT__STORAGE__SNAPSHOTS_CONFIG__SNAPSHOTS_STORAGE", "s3")],
            "s3_config is not set",
        ),
        (
            &[
                ("QDRANT__STORAGE__SNAPSHOTS_CONFIG__SNAPSHOTS_STORAGE", "s3"),
                ("QDRANT__STORAGE__SNAPSHOTS_CONFIG__S3_CONFIG__BUCKET", "b"),
                ("AWS_ACCESS_KEY_ID", ""),
                ("AWS_SECRET_ACCESS_KEY", ""),
            ],
            "credentials missing",
        ),
        (
            &[("QDRANT__STORAGE__SNAPSHOTS_CONFIG__SNAPSHOTS_STORAGE", "ftp")],
            "must be `local` or `s3`",
        ),
    ];
    for (env, expected) in cases {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_quiver"))
            .current_dir(dir.path())
            .env("QDRANT__SERVICE__HTTP_PORT", "0")
            .env("QDRANT__SERVICE__HOST", "127.0.0.1")
            .envs(env.iter().copied())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{expected}: exits with an error");
        assert!(stderr.contains(expected), "{expected}: {stderr}");
    }
    assert!(!dir.path().join("snapshots/c").exists());
}

fn wait_indexed(s: &Server, c: &str, at_least: u64) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let info = s.ok("GET", &format!("/collections/{c}"), None);
        if info["status"] == "green" && info["indexed_vectors_count"].as_u64().unwrap() >= at_least {
            return info;
        }
        assert!(std::time::Instant::now() < deadline, "never indexed: {info}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// HNSW graphs are part of the snapshot: a recovered collection is searchable through its
/// graphs at once (green, every sealed vector indexed), with nothing rebuilt.
#[test]
fn hnsw_graphs_travel_with_snapshots() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[("QDRANT__STORAGE__SEGMENT_MAX_POINTS", "2000")]);
    s.ok(
        "PUT",
        "/collections/h",
        Some(json!({
            "vectors": {"size": 16, "distance": "Euclid"},
            "shard_number": 1,
            "hnsw_config": {"m": 8, "ef_construct": 64, "full_scan_threshold": 1}
        })),
    );
    let vec_of = |i: u64| -> Vec<f32> {
        let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..16)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x % 1000) as f32 / 100.0
            })
            .collect()
    };
    for chunk in 0..6u64 {
        let points: Vec<Value> = (chunk * 1000..chunk * 1000 + 1000)
            .map(|i| json!({"id": i, "vector": vec_of(i)}))
            .collect();
        s.ok(
            "PUT",
            "/collections/h/points?wait=true",
            Some(json!({ "points": points })),
        );
    }
    let info = wait_indexed(&s, "h", 4000);
    let indexed = info["indexed_vectors_count"].as_u64().unwrap();
    for i in [5u64, 1234, 4321] {
        let hnsw = s.ok(
            "POST",
            "/collections/h/points/search",
            Some(json!({"vector": vec_of(i), "limit": 1, "params": {"hnsw_ef": 64}})),
        );
        let exact = s.ok(
            "POST",
            "/collections/h/points/search",
            Some(json!({"vector": vec_of(i), "limit": 1, "params": {"exact": true}})),
        );
        assert_eq!(hnsw[0]["score"], 0.0, "the point itself: {hnsw}");
        assert_eq!(hnsw[0]["score"], exact[0]["score"]);
    }
    let (st, v) = s.call(
        "POST",
        "/collections/h/points/search",
        Some(json!({"vector": vec_of(1), "limit": 1, "params": {"hnsw_eff": 64}})),
    );
    assert_error(st, &v, 400, "unknown search parameter");

    let d = s.ok("POST", "/collections/h/snapshots", None);
    let name = d["name"].as_str().unwrap();
    let archive = dir.path().join("snapshots/h").join(name);
    let listing = Command::new("tar").arg("-tf").arg(&archive).output().unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout);
    assert!(
        listing.lines().any(|l| l.contains("/hnsw-")),
        "graphs in the archive:\n{listing}"
    );
    s.ok(
        "PUT",
        "/collections/h2/snapshots/recover",
        Some(json!({"location": format!("file://{}", archive.display())})),
    );
    let info2 = s.ok("GET", "/collections/h2", None);
    assert_eq!(info2["status"], "green", "no rebuild: {info2}");
    assert!(info2["indexed_vectors_count"].as_u64().unwrap() >= indexed, "{info2}");
    let hit = s.ok(
        "POST",
        "/collections/h2/points/search",
        Some(json!({"vector": vec_of(4321), "limit": 1})),
    );
    assert_eq!(hit[0]["id"], 4321);
}
