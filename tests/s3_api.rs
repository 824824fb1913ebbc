//! S3 snapshot storage against real S3-compatible servers on loopback: s3s-fs (in-process) and
//! moto (a child process). Full cycle for collection and full snapshots, the stored bytes checked
//! against the checksum object; faults: the server stopped mid-upload, a wrong bucket, bad
//! credentials.

mod common;
#[path = "common/s3.rs"]
mod s3_servers;

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::{Server, assert_error};
use s3_servers::{Kind, S3Server};
use serde_json::{Value, json};
use sha2::Digest;

const BUCKET: &str = "snaps";
const DIM: usize = 256;
/// 12,000 × 256 f32 ≈ 12 MiB of vectors: three 5 MiB parts at least.
const POINTS: u64 = 12_000;

fn env_refs(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

fn vector(id: u64) -> Vec<f32> {
    let mut x = id.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..DIM)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ((x % 2000) as f32 - 1000.0) / 1000.0
        })
        .collect()
}

fn fill(s: &Server, c: &str) {
    s.ok(
        "PUT",
        &format!("/collections/{c}"),
        Some(json!({"vectors": {"size": DIM, "distance": "Dot"}})),
    );
    for chunk in 0..POINTS / 1000 {
        let points: Vec<Value> = (chunk * 1000..chunk * 1000 + 1000)
            .map(|id| json!({"id": id, "vector": vector(id), "payload": {"n": id}}))
            .collect();
        s.ok(
            "PUT",
            &format!("/collections/{c}/points?wait=true"),
            Some(json!({ "points": points })),
        );
    }
}

fn count(s: &Server, c: &str) -> u64 {
    s.ok(
        "POST",
        &format!("/collections/{c}/points/count"),
        Some(json!({"exact": true})),
    )["count"]
        .as_u64()
        .unwrap()
}

fn sha_hex(bytes: &[u8]) -> String {
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// GET returning status, headers and raw bytes.
fn fetch(s: &Server, path: &str, range: Option<&str>) -> (u16, Vec<u8>, Option<String>) {
    let mut req = ureq::http::Request::builder().uri(format!("{}{path}", s.base));
    if let Some(r) = range {
        req = req.header("range", r);
    }
    let mut resp = Server::agent().run(req.body(()).unwrap()).unwrap();
    let cr = resp
        .headers()
        .get("content-range")
        .map(|v| v.to_str().unwrap().to_string());
    let status = resp.status().as_u16();
    let body = resp.body_mut().with_config().limit(1 << 30).read_to_vec().unwrap();
    (status, body, cr)
}

fn files_in(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// create → list → check bytes against the checksum object → download (whole, range) →
/// recover (by name, by s3://, with a wrong checksum) → full snapshot → start-up restore of it
/// → delete.
fn cycle(kind: Kind, staging: bool) {
    let dir = tempfile::tempdir().unwrap();
    let s3 = S3Server::start(kind, dir.path());
    s3.create_bucket(BUCKET);
    let mut env = s3.quiver_env(BUCKET);
    let temp = dir.path().join("staging");
    if staging {
        env.push(("QDRANT__STORAGE__TEMP_PATH".into(), temp.display().to_string()));
    }
    let qdir = dir.path().join("q");
    std::fs::create_dir_all(&qdir).unwrap();
    let q = Server::start(&qdir, &env_refs(&env));
    fill(&q, "c");

    // Create and list.
    let d = q.ok("POST", "/collections/c/snapshots", None);
    let name = d["name"].as_str().unwrap().to_string();
    let checksum = d["checksum"].as_str().unwrap().to_string();
    let size = d["size"].as_u64().unwrap();
    assert!(size > 10 << 20, "a multi-part archive: {size}");
    let listed = q.ok("GET", "/collections/c/snapshots", None);
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed[0]["name"], name.as_str());
    assert_eq!(listed[0]["size"], size);
    assert_eq!(listed[0]["checksum"], checksum.as_str());
    assert!(
        files_in(&qdir.join("snapshots")).iter().all(|f| f != "c"),
        "nothing kept locally"
    );

    // The object's bytes, read with a plain SDK client, hash to the checksum object's content.
    let key = format!("snapshots/c/{name}");
    let object = s3.get(BUCKET, &key).expect("snapshot object");
    assert_eq!(object.len() as u64, size);
    assert_eq!(sha_hex(&object), checksum);
    let stored = s3.get(BUCKET, &format!("{key}.checksum")).expect("checksum object");
    assert_eq!(String::from_utf8(stored).unwrap().trim(), checksum);
    if let Some(parts) = s3
        .etag(BUCKET, &key)
        .and_then(|e| e.trim_matches('"').split_once('-').map(|(_, n)| n.to_string()))
    {
        assert_eq!(parts.parse::<u64>().unwrap(), size.div_ceil(5 << 20), "5 MiB parts");
    }
    {
        let mut a = tar::Archive::new(&object[..]);
        let first = a.entries().unwrap().next().unwrap().unwrap();
        assert_eq!(first.path().unwrap().to_str(), Some("manifest.json"));
    }

    // Download through the API: whole and one range.
    let (status, body, _) = fetch(&q, &format!("/collections/c/snapshots/{name}"), None);
    assert_eq!(status, 200);
    assert!(body == object, "downloaded bytes are the object's");
    let (status, body, cr) = fetch(&q, &format!("/collections/c/snapshots/{name}"), Some("bytes=1000-1999"));
    assert_eq!(status, 206);
    assert_eq!(body, object[1000..2000].to_vec());
    assert_eq!(cr.as_deref(), Some(format!("bytes 1000-1999/{size}").as_str()));
    let (status, v) = q.call("GET", "/collections/c/snapshots/nope.snapshot", None);
    assert_error(status, &v, 404, "missing snapshot");

    // Recover by name into the same collection, after changing it.
    q.ok(
        "POST",
        "/collections/c/points/delete?wait=true",
        Some(json!({"points": (0..500).collect::<Vec<u64>>()})),
    );
    assert_eq!(count(&q, "c"), POINTS - 500);
    q.ok(
        "PUT",
        "/collections/c/snapshots/recover",
        Some(json!({ "location": name, "checksum": checksum })),
    );
    assert_eq!(count(&q, "c"), POINTS);
    // By s3:// into a new collection; the vectors are the snapshot's.
    q.ok(
        "PUT",
        "/collections/c2/snapshots/recover",
        Some(json!({ "location": format!("s3://{BUCKET}/{key}") })),
    );
    assert_eq!(count(&q, "c2"), POINTS);
    let p = q.ok(
        "POST",
        "/collections/c2/points",
        Some(json!({"ids": [7], "with_vector": true})),
    );
    let got: Vec<f32> = serde_json::from_value(p[0]["vector"].clone()).unwrap();
    assert_eq!(got, vector(7));
    // A wrong checksum is refused and the collection is left as it was.
    let (status, v) = q.call(
        "PUT",
        "/collections/c2/snapshots/recover",
        Some(json!({ "location": name.clone(), "checksum": "0".repeat(64) })),
    );
    assert!(status == 400 || status == 404, "{status} {v}");
    let (status, v) = q.call(
        "PUT",
        "/collections/c/snapshots/recover",
        Some(json!({ "location": name.clone(), "checksum": "0".repeat(64) })),
    );
    assert_error(status, &v, 400, "wrong checksum");
    assert_eq!(count(&q, "c"), POINTS);
    // Other buckets, and keys outside snapshots/, are not recovered from.
    let (status, v) = q.call(
        "PUT",
        "/collections/c3/snapshots/recover",
        Some(json!({ "location": format!("s3://other/{key}") })),
    );
    assert_error(status, &v, 403, "another bucket");
    let (status, v) = q.call(
        "PUT",
        "/collections/c3/snapshots/recover",
        Some(json!({ "location": format!("s3://{BUCKET}/snapshots/../x") })),
    );
    assert_error(status, &v, 403, "traversal in key");

    // Full snapshot: listed apart from the collection ones.
    q.ok("DELETE", "/collections/c2", None);
    let full = q.ok("POST", "/snapshots", None);
    let full_name = full["name"].as_str().unwrap().to_string();
    assert!(full_name.starts_with("full-snapshot-"), "{full_name}");
    let fulls = q.ok("GET", "/snapshots", None);
    assert_eq!(fulls.as_array().unwrap().len(), 1, "{fulls}");
    assert_eq!(fulls[0]["name"], full_name.as_str());
    assert_eq!(
        q.ok("GET", "/collections/c/snapshots", None).as_array().unwrap().len(),
        1
    );
    let full_key = format!("snapshots/{full_name}");
    let full_bytes = s3.get(BUCKET, &full_key).expect("full snapshot object");
    let full_sum = String::from_utf8(s3.get(BUCKET, &format!("{full_key}.checksum")).unwrap()).unwrap();
    assert_eq!(sha_hex(&full_bytes), full_sum.trim());
    assert_eq!(full["checksum"], full_sum.trim());
    // Restored at start-up by a fresh server, from the downloaded archive.
    let (status, downloaded, _) = fetch(&q, &format!("/snapshots/{full_name}"), None);
    assert_eq!(status, 200);
    let fresh = dir.path().join("fresh");
    std::fs::create_dir_all(&fresh).unwrap();
    let file = fresh.join("full.snapshot");
    std::fs::write(&file, &downloaded).unwrap();
    {
        let r = Server::start_with_args(&fresh, &[], &["--storage-snapshot", file.to_str().unwrap()]);
        assert_eq!(count(&r, "c"), POINTS);
    }

    // Delete: the object and its checksum go.
    q.ok("DELETE", &format!("/collections/c/snapshots/{name}"), None);
    q.ok("DELETE", &format!("/snapshots/{full_name}"), None);
    let (status, v) = q.call("DELETE", &format!("/snapshots/{full_name}"), None);
    assert_error(status, &v, 404, "second delete");
    assert_eq!(s3.keys(BUCKET), Vec::<String>::new());
    assert_eq!(s3.uploads_in_progress(BUCKET), 0);
    if staging {
        assert_eq!(files_in(&temp), Vec::<String>::new(), "staging files removed");
    }
}

#[test]
fn s3s_fs_snapshot_cycle_streamed() {
    cycle(Kind::S3sFs, false);
}

#[test]
fn moto_snapshot_cycle_staged_in_temp_path() {
    cycle(Kind::Moto, true);
}

/// The S3 server stops while parts are being sent: the snapshot call fails with a clear error,
/// no snapshot object exists, the collection keeps serving, and the multipart upload is aborted
/// once the server is back (here, before the next snapshot).
fn stopped_mid_upload(kind: Kind) {
    let dir = tempfile::tempdir().unwrap();
    let mut s3 = S3Server::start(kind, dir.path());
    s3.create_bucket(BUCKET);
    let mut env = s3.quiver_env(BUCKET);
    env.push((
        "QDRANT__STORAGE__SNAPSHOTS_CONFIG__S3_CONFIG__PARTS_IN_FLIGHT".into(),
        "1".into(),
    ));
    let qdir = dir.path().join("q");
    std::fs::create_dir_all(&qdir).unwrap();
    let q = Server::start(&qdir, &env_refs(&env));
    fill(&q, "c");
    // 2 MiB/s: the 12 MiB archive takes about 6 s, so the stop lands mid-upload.
    s3.upload_rate.store(2 << 20, Ordering::SeqCst);
    let base = q.base.clone();
    let call = std::thread::spawn(move || {
        let resp = Server::agent()
            .post(format!("{base}/collections/c/snapshots"))
            .header("content-type", "application/json")
            .send("")
            .unwrap();
        let status = resp.status().as_u16();
        let text = resp.into_body().read_to_string().unwrap();
        (status, serde_json::from_str::<Value>(&text).unwrap())
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let started = match kind {
            Kind::S3sFs => s3.parts_received() > 0,
            Kind::Moto => s3.uploads_in_progress(BUCKET) > 0,
        };
        if started {
            break;
        }
        assert!(Instant::now() < deadline, "the upload never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    s3.stop();
    let (status, v) = call.join().unwrap();
    assert_error(status, &v, 500, "server stopped mid-upload");
    let msg = v["status"]["error"].as_str().unwrap();
    assert!(msg.contains("S3"), "{msg}");
    // The collection serves as before.
    assert_eq!(count(&q, "c"), POINTS);
    let hits = q.ok(
        "POST",
        "/collections/c/points/search",
        Some(json!({"vector": vector(3), "limit": 1})),
    );
    assert_eq!(hits[0]["id"], 3);

    s3.upload_rate.store(0, Ordering::SeqCst);
    s3.restart();
    if kind == Kind::Moto {
        s3.create_bucket(BUCKET); // moto keeps nothing across a restart
    }
    assert!(
        s3.keys(BUCKET).iter().all(|k| !k.ends_with(".snapshot")),
        "no completed snapshot object: {:?}",
        s3.keys(BUCKET)
    );
    assert_eq!(q.ok("GET", "/collections/c/snapshots", None), json!([]));
    // The next snapshot works, and the failed upload has been aborted by then.
    let d = q.ok("POST", "/collections/c/snapshots", None);
    let key = format!("snapshots/c/{}", d["name"].as_str().unwrap());
    assert_eq!(s3.keys(BUCKET), vec![key.clone(), format!("{key}.checksum")]);
    assert_eq!(s3.uploads_in_progress(BUCKET), 0, "the interrupted upload was aborted");
    assert_eq!(sha_hex(&s3.get(BUCKET, &key).unwrap()), d["checksum"].as_str().unwrap());
}

#[test]
fn s3s_fs_stopped_mid_upload() {
    stopped_mid_upload(Kind::S3sFs);
}

#[test]
fn moto_stopped_mid_upload() {
    stopped_mid_upload(Kind::Moto);
}

/// A bucket that does not exist, or credentials the server rejects: a clear error at create
/// time, nothing stored, the collection unaffected.
#[test]
fn wrong_bucket_and_bad_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let s3 = S3Server::start(Kind::S3sFs, dir.path());
    s3.create_bucket(BUCKET);
    let cases: [(&str, &str, &[&str]); 2] = [
        ("BUCKET", "no-such-bucket", &["NoSuchBucket"]),
        (
            "SECRET_KEY",
            "not-the-secret",
            &[
                "SignatureDoesNotMatch",
                "InvalidAccessKeyId",
                "AccessDenied",
                "access denied",
            ],
        ),
    ];
    for (field, value, codes) in cases {
        let mut env = s3.quiver_env(BUCKET);
        for (k, v) in env.iter_mut() {
            if k.ends_with(&format!("S3_CONFIG__{field}")) {
                *v = value.to_string();
            }
        }
        let qdir = dir.path().join(format!("q-{field}"));
        std::fs::create_dir_all(&qdir).unwrap();
        let q = Server::start(&qdir, &env_refs(&env));
        q.ok(
            "PUT",
            "/collections/c",
            Some(json!({"vectors": {"size": 4, "distance": "Dot"}})),
        );
        q.ok(
            "PUT",
            "/collections/c/points?wait=true",
            Some(json!({"points": [{"id": 1, "vector": [1.0, 2.0, 3.0, 4.0]}]})),
        );
        let (status, v) = q.call("POST", "/collections/c/snapshots", None);
        assert_error(status, &v, 500, field);
        let msg = v["status"]["error"].as_str().unwrap();
        assert!(codes.iter().any(|c| msg.contains(c)), "{field}: {msg}");
        let (status, v) = q.call("GET", "/collections/c/snapshots", None);
        assert_error(status, &v, 500, "listing with a bad configuration");
        assert_eq!(count(&q, "c"), 1);
    }
    assert_eq!(s3.keys(BUCKET), Vec::<String>::new());
}
