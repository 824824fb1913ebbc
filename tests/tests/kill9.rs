//! A process writing with wait=true is killed with SIGKILL at arbitrary moments; every batch it
//! acknowledged must be present, exactly, when the storage is reopened.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use quiver_engine::{Engine, EngineOptions, PointId, VectorOutput, WithPayload, WithVector};
use quiver_tests::{CRASH_BATCH, crash_vector};

fn run_and_kill(storage: &std::path::Path, first: u64, acks_before_kill: u64) -> u64 {
    let mut child = Command::new(env!("CARGO_BIN_EXE_crash_writer"))
        .arg(storage)
        .arg(first.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn crash_writer");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut last = None;
    for line in lines.by_ref() {
        let line = line.expect("read ack");
        let b: u64 = line
            .strip_prefix("ack ")
            .and_then(|s| s.parse().ok())
            .expect("ack line");
        last = Some(b);
        if b + 1 - first >= acks_before_kill {
            break;
        }
    }
    child.kill().expect("SIGKILL"); // std's kill is SIGKILL on Unix
    child.wait().unwrap();
    last.expect("at least one acknowledged batch")
}

fn check(storage: &std::path::Path, last_acked: u64) {
    let engine = Engine::open(EngineOptions {
        storage_path: storage.into(),
        workers: 2,
        pin_threads: false,
    })
    .expect("reopen after kill -9");
    let c = engine.collection("crash").unwrap();
    let ids: Vec<PointId> = (0..(last_acked + 1) * CRASH_BATCH).map(PointId::Num).collect();
    let got = pollster::block_on(c.retrieve(ids.clone(), WithPayload::Bool(true), WithVector::Bool(true))).unwrap();
    assert_eq!(got.len(), ids.len(), "every acknowledged point is present");
    for r in &got {
        let PointId::Num(id) = r.id else {
            panic!("numeric ids only")
        };
        assert_eq!(r.vector, Some(VectorOutput::Single(crash_vector(id))), "vector of {id}");
        let p = r.payload.as_ref().unwrap();
        assert_eq!(p["id"], id);
        if id == 0 {
            assert!(
                p["batch"].as_u64().unwrap() >= last_acked,
                "latest acknowledged update of point 0 kept"
            );
        } else {
            assert_eq!(p["batch"], id / CRASH_BATCH);
        }
    }
    engine.shutdown();
}

#[test]
fn acknowledged_writes_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let mut next = 0;
    // Several kill/reopen rounds on the same storage, at different points of the write stream
    // (some land during segment seals: 300-point segments, 26 points a batch).
    for round in [3u64, 17, 40, 9] {
        let last = run_and_kill(dir.path(), next, round);
        check(dir.path(), last);
        next = last + 1;
    }
}
