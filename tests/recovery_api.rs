//! Recovery through the real binary: every path (file://, http://, upload) and priority, shard
//! recovery, start-up flags, and hostile archives that must be refused with the live collection
//! answering exactly as before.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{Server, assert_error};
use serde_json::{Value, json};

fn env_for(dir: &Path) -> Vec<(&'static str, String)> {
    vec![
        (
            "QDRANT__STORAGE__SNAPSHOTS_PATH",
            dir.join("snapshots").to_string_lossy().into_owned(),
        ),
        ("QDRANT__STORAGE__SEGMENT_MAX_POINTS", "100".into()),
    ]
}

fn start(dir: &Path, extra: &[(&str, &str)]) -> Server {
    let env = env_for(dir);
    let mut all: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    all.extend_from_slice(extra);
    Server::start(dir, &all)
}

fn points(s: &Server, c: &str) -> Value {
    s.ok(
        "POST",
        &format!("/collections/{c}/points/scroll"),
        Some(json!({"limit": 100000, "with_vector": true})),
    )["points"]
        .clone()
}

fn fill(s: &Server, c: &str, n: u64, tag: &str) {
    s.ok(
        "PUT",
        &format!("/collections/{c}"),
        Some(json!({"vectors": {"size": 3, "distance": "Dot"}, "shard_number": 2})),
    );
    let pts: Vec<Value> = (0..n)
        .map(|i| json!({"id": i, "vector": [i as f32, 1.0, 0.5], "payload": {"tag": tag, "i": i}}))
        .collect();
    s.ok(
        "PUT",
        &format!("/collections/{c}/points?wait=true"),
        Some(json!({ "points": pts })),
    );
}

/// Takes a snapshot and returns its path on disk and its checksum.
fn snapshot(s: &Server, dir: &Path, c: &str) -> (PathBuf, String) {
    let d = s.ok("POST", &format!("/collections/{c}/snapshots"), None);
    (
        dir.join("snapshots").join(c).join(d["name"].as_str().unwrap()),
        d["checksum"].as_str().unwrap().to_string(),
    )
}

/// Serves one file over HTTP on loopback, for as many requests as come.
fn serve_file(path: PathBuf) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            let bytes = std::fs::read(&path).unwrap();
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                bytes.len()
            );
            let _ = stream.write_all(&bytes);
        }
    });
    format!("http://127.0.0.1:{port}/snapshot")
}

fn upload(s: &Server, path: &str, file: &Path) -> (u16, Value) {
    let boundary = "quiverboundary7MA4YWxk";
    let mut body = format!("--{boundary}\r\ncontent-disposition: form-data; name=\"snapshot\"; filename=\"s.snapshot\"\r\ncontent-type: application/octet-stream\r\n\r\n").into_bytes();
    body.extend_from_slice(&std::fs::read(file).unwrap());
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    s.raw(
        "POST",
        path,
        Some(&body),
        &[("content-type", &format!("multipart/form-data; boundary={boundary}"))],
    )
}

#[test]
fn every_recovery_path_and_priority_restores_identically() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path(), &[]);
    fill(&s, "src", 500, "orig");
    let want = points(&s, "src");
    let (snap, checksum) = snapshot(&s, dir.path(), "src");

    let file_url = format!("file://{}", snap.display());
    s.ok(
        "PUT",
        "/collections/by-file/snapshots/recover",
        Some(json!({"location": file_url, "priority": "replica", "checksum": checksum})),
    );
    assert_eq!(points(&s, "by-file"), want);

    let http_url = serve_file(snap.clone());
    s.ok(
        "PUT",
        "/collections/by-http/snapshots/recover?wait=true",
        Some(json!({"location": http_url, "priority": "snapshot"})),
    );
    assert_eq!(points(&s, "by-http"), want);

    let (st, v) = upload(
        &s,
        &format!("/collections/by-upload/snapshots/upload?priority=no_sync&checksum={checksum}"),
        &snap,
    );
    assert_eq!(st, 200, "{v}");
    assert_eq!(points(&s, "by-upload"), want);

    // Recovering over an existing collection replaces its data.
    fill(&s, "other", 7, "other");
    s.ok(
        "PUT",
        "/collections/other/snapshots/recover",
        Some(json!({"location": format!("file://{}", snap.display())})),
    );
    assert_eq!(points(&s, "other"), want);

    // wait=false: 202, then the data appears.
    let (st, v) = s.call(
        "PUT",
        "/collections/later/snapshots/recover?wait=false",
        Some(json!({"location": format!("file://{}", snap.display())})),
    );
    assert_eq!((st, v["status"].as_str()), (202, Some("accepted")), "{v}");
    let mut done = false;
    for _ in 0..200 {
        if s.call("GET", "/collections/later/exists", None).1["result"]["exists"] == true {
            done = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(done);
    assert_eq!(points(&s, "later"), want);

    // Shard level: shard 0 goes back to the snapshot's state, shard 1 keeps its changes.
    let d = s.ok("POST", "/collections/src/shards/0/snapshots", None);
    let shard_snap = dir
        .path()
        .join("snapshots/src/shards/0")
        .join(d["name"].as_str().unwrap());
    s.ok(
        "POST",
        "/collections/src/points/payload?wait=true",
        Some(json!({"payload": {"tag": "changed"}, "filter": {}})),
    );
    s.ok(
        "PUT",
        "/collections/src/shards/0/snapshots/recover",
        Some(json!({"location": format!("file://{}", shard_snap.display())})),
    );
    let after = points(&s, "src");
    let changed = after
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["payload"]["tag"] == "changed")
        .count();
    assert!(changed > 0 && changed < 500, "only shard 1 keeps the change: {changed}");
    let (st, v) = upload(&s, "/collections/src/shards/0/snapshots/upload", &shard_snap);
    assert_eq!(st, 200, "{v}");
    let (st, v) = upload(&s, "/collections/src/shards/0/snapshots/upload", &snap);
    assert_error(st, &v, 400, "a collection snapshot is not a shard snapshot");
}

#[test]
fn sources_are_restricted() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(
        dir.path(),
        &[("QDRANT__SERVICE__ENABLE_SNAPSHOT_URL_RECOVERY", "false")],
    );
    fill(&s, "c", 10, "x");
    let (snap, _) = snapshot(&s, dir.path(), "c");
    let outside = dir.path().join("outside.snapshot");
    std::fs::copy(&snap, &outside).unwrap();
    let (st, v) = s.call(
        "PUT",
        "/collections/n/snapshots/recover",
        Some(json!({"location": format!("file://{}", outside.display())})),
    );
    assert_error(st, &v, 403, "file outside snapshots_path");
    let (st, v) = s.call(
        "PUT",
        "/collections/n/snapshots/recover",
        Some(json!({"location": "http://127.0.0.1:9/x.snapshot"})),
    );
    assert_error(st, &v, 403, "URL recovery disabled");
    let loc = format!("file://{}", snap.display());
    let (st, v) = s.call(
        "PUT",
        "/collections/n/snapshots/recover",
        Some(json!({"location": loc, "priority": "fastest"})),
    );
    assert_error(st, &v, 400, "bad priority");
    let (st, v) = s.call(
        "PUT",
        "/collections/n/snapshots/recover",
        Some(json!({"location": loc, "checksum": "abc"})),
    );
    assert_error(st, &v, 400, "short checksum");
    let (st, v) = s.call(
        "PUT",
        "/collections/n/snapshots/recover",
        Some(json!({"location": "ftp://x"})),
    );
    assert_error(st, &v, 400, "unknown scheme");
    assert_eq!(
        s.call("GET", "/collections/n/exists", None).1["result"]["exists"],
        false
    );
}

/// Members of a genuine archive, for rebuilding hostile variants.
fn members(path: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut ar = tar::Archive::new(std::fs::File::open(path).unwrap());
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let name = e.path().unwrap().to_string_lossy().into_owned();
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        out.push((name, data));
    }
    out
}

/// A member header with any name and type, bypassing the tar crate's path checks.
fn raw_header(name: &str, size: u64, kind: tar::EntryType, link: Option<&str>) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
    h.set_size(size);
    h.set_mode(0o644);
    h.set_entry_type(kind);
    if let Some(l) = link {
        h.as_old_mut().linkname[..l.len()].copy_from_slice(l.as_bytes());
    }
    h.set_cksum();
    h
}

fn build(path: &Path, entries: &[(tar::Header, Vec<u8>)]) {
    let mut b = tar::Builder::new(std::fs::File::create(path).unwrap());
    for (h, data) in entries {
        b.append(h, &data[..]).unwrap();
    }
    b.finish().unwrap();
}

fn regular(members: &[(String, Vec<u8>)]) -> Vec<(tar::Header, Vec<u8>)> {
    members
        .iter()
        .map(|(n, d)| (raw_header(n, d.len() as u64, tar::EntryType::Regular, None), d.clone()))
        .collect()
}

#[test]
fn hostile_archives_are_refused_and_the_live_collection_is_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path(), &[("QDRANT__STORAGE__RECOVERY_MAX_UNPACKED_MB", "1")]);
    fill(&s, "live", 300, "live");
    let before = points(&s, "live");
    let (snap, checksum) = snapshot(&s, dir.path(), "live");
    let genuine = members(&snap);
    let data_idx = genuine
        .iter()
        .position(|(n, d)| n.ends_with("dense-0.f32") && !d.is_empty())
        .unwrap();
    let hostile_dir = dir.path().join("snapshots/live");
    let mut cases: Vec<(&str, PathBuf)> = Vec::new();
    let mut add = |name: &'static str, entries: Vec<(tar::Header, Vec<u8>)>| {
        let p = hostile_dir.join(format!("{name}.snapshot"));
        build(&p, &entries);
        cases.push((name, p));
    };
    let bytes = std::fs::read(&snap).unwrap();
    std::fs::write(hostile_dir.join("truncated.snapshot"), &bytes[..bytes.len() / 2]).unwrap();
    std::fs::write(
        hostile_dir.join("random.snapshot"),
        (0..20_000u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 7) as u8)
            .collect::<Vec<_>>(),
    )
    .unwrap();

    let mut corrupted = regular(&genuine);
    corrupted[data_idx].1[5] ^= 0x40;
    add("corrupted", corrupted);
    let mut absolute = regular(&genuine);
    absolute.push((
        raw_header("/tmp/quiver-evil", 3, tar::EntryType::Regular, None),
        b"bad".to_vec(),
    ));
    add("absolute", absolute);
    let mut dotdot = regular(&genuine);
    dotdot.push((
        raw_header("0/../../evil", 3, tar::EntryType::Regular, None),
        b"bad".to_vec(),
    ));
    add("dotdot", dotdot);
    let mut symlink = regular(&genuine);
    symlink.push((
        raw_header("0/link", 0, tar::EntryType::Symlink, Some("/etc/passwd")),
        vec![],
    ));
    add("symlink", symlink);
    let mut hardlink = regular(&genuine);
    hardlink.push((
        raw_header("0/hard", 0, tar::EntryType::Link, Some("config.json")),
        vec![],
    ));
    add("hardlink", hardlink);
    let mut device = regular(&genuine);
    device.push((raw_header("0/dev", 0, tar::EntryType::Char, None), vec![]));
    add("device", device);
    let mut size_mismatch = regular(&genuine);
    size_mismatch[data_idx].1.extend_from_slice(&[0, 0, 0, 0]);
    let fixed = size_mismatch[data_idx].1.len() as u64;
    size_mismatch[data_idx].0 = raw_header(&genuine[data_idx].0, fixed, tar::EntryType::Regular, None);
    add("size-mismatch", size_mismatch);
    let mut manifest: Value = serde_json::from_slice(&genuine[0].1).unwrap();
    manifest["format_version"] = json!(99);
    let mut version = regular(&genuine);
    version[0] = (
        raw_header("manifest.json", 0, tar::EntryType::Regular, None),
        serde_json::to_vec(&manifest).unwrap(),
    );
    let len = version[0].1.len() as u64;
    version[0].0 = raw_header("manifest.json", len, tar::EntryType::Regular, None);
    add("format-version", version);
    let mut big: Value = serde_json::from_slice(&genuine[0].1).unwrap();
    big["files"][0]["size"] = json!(2u64 << 20);
    let mut too_big = regular(&genuine);
    too_big[0].1 = serde_json::to_vec(&big).unwrap();
    let len = too_big[0].1.len() as u64;
    too_big[0].0 = raw_header("manifest.json", len, tar::EntryType::Regular, None);
    add("too-big", too_big);
    let full = s.ok("POST", "/snapshots", None);
    let full_path = dir.path().join("snapshots").join(full["name"].as_str().unwrap());
    cases.push(("truncated", hostile_dir.join("truncated.snapshot")));
    cases.push(("random", hostile_dir.join("random.snapshot")));
    cases.push(("full-as-collection", full_path));

    for (name, path) in &cases {
        let loc = format!("file://{}", path.display());
        let (st, v) = s.call(
            "PUT",
            "/collections/live/snapshots/recover",
            Some(json!({ "location": loc })),
        );
        assert_error(st, &v, 400, name);
        let (st, v) = upload(&s, "/collections/live/snapshots/upload", path);
        assert_error(st, &v, 400, &format!("{name} (upload)"));
        assert_eq!(points(&s, "live"), before, "{name}: live collection unchanged");
    }
    let (st, v) = s.call(
        "PUT",
        "/collections/live/snapshots/recover",
        Some(json!({"location": format!("file://{}", snap.display()), "checksum": "0".repeat(64)})),
    );
    assert_error(st, &v, 400, "wrong checksum");
    assert!(v["status"]["error"].as_str().unwrap().contains("checksum"));
    assert_eq!(points(&s, "live"), before);
    assert!(!Path::new("/tmp/quiver-evil").exists());
    // The genuine archive still recovers (with its checksum), and nothing was left staged.
    s.ok(
        "PUT",
        "/collections/live/snapshots/recover",
        Some(json!({"location": format!("file://{}", snap.display()), "checksum": checksum})),
    );
    assert_eq!(points(&s, "live"), before);
    let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("storage/collections"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| n.to_string_lossy().starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

fn quiver(dir: &Path, args: &[&str]) -> std::process::Output {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_quiver"));
    cmd.current_dir(dir)
        .args(args)
        .env("QDRANT__SERVICE__HOST", "127.0.0.1")
        .env("QDRANT__SERVICE__HTTP_PORT", port.to_string());
    for (k, v) in env_for(dir) {
        cmd.env(k, v);
    }
    // Failing flags make it exit by itself; a successful start is stopped after it is ready.
    let mut child = cmd
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() || std::time::Instant::now() > deadline {
            let _ = Command::new("kill").arg(child.id().to_string()).status();
            return child.wait_with_output().unwrap();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn startup_flags_restore_before_serving() {
    let dir = tempfile::tempdir().unwrap();
    let (snap, full) = {
        let s = start(dir.path(), &[]);
        fill(&s, "c", 120, "one");
        s.ok(
            "POST",
            "/collections/aliases",
            Some(json!({"actions": [{"create_alias": {"collection_name": "c", "alias_name": "al"}}]})),
        );
        let (snap, _) = snapshot(&s, dir.path(), "c");
        let full = s.ok("POST", "/snapshots", None);
        (snap, dir.path().join("snapshots").join(full["name"].as_str().unwrap()))
    };
    let fresh = tempfile::tempdir_in(dir.path()).unwrap();
    let spec_a = format!("{}:a", snap.display());
    let spec_b = format!("{}:b", snap.display());
    let out = quiver(fresh.path(), &["--snapshot", &spec_a, "--snapshot", &spec_b]);
    assert!(
        out.status.success(),
        "served, then stopped cleanly: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        fresh.path().join("storage/collections/a/config.json").exists(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(fresh.path().join("storage/collections/b/config.json").exists());

    let out = quiver(fresh.path(), &["--snapshot", &spec_a]);
    assert!(
        !out.status.success(),
        "an existing collection without --force-snapshot stops the start"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--force-snapshot"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = quiver(fresh.path(), &["--snapshot", &spec_a, "--force-snapshot"]);
    assert!(
        out.status.success(),
        "--force-snapshot overwrites: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let other = tempfile::tempdir_in(dir.path()).unwrap();
    let out = quiver(other.path(), &["--storage-snapshot", full.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        other.path().join("storage/collections/c/config.json").exists(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let aliases = std::fs::read_to_string(other.path().join("storage/aliases.json")).unwrap();
    assert!(aliases.contains("\"al\": \"c\""), "{aliases}");
    let s = start(other.path(), &[]);
    assert_eq!(s.ok("POST", "/collections/al/points/count", None)["count"], 120);
    drop(s);

    let wrong = tempfile::tempdir_in(dir.path()).unwrap();
    let out = quiver(wrong.path(), &["--storage-snapshot", snap.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not a full-storage snapshot"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = quiver(wrong.path(), &["--snapshot", "no-colon-here"]);
    assert!(!out.status.success());
}
