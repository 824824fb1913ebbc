//! Data survives restarts; torn WAL tails and interrupted checkpoints recover to the last
//! acknowledged state.

mod common;

use common::*;
use quiver_engine::*;
use serde_json::json;
use std::fs;
use std::path::{Path, PathBuf};

fn make(dir: &Path, seal_at: usize) -> (Engine, std::sync::Arc<Collection>) {
    let e = open(dir, 2);
    let mut cfg = CollectionConfig::single(4, Distance::Cosine);
    cfg.segment_max_points = seal_at;
    cfg.shard_number = 2;
    let c = e.create_collection("p", cfg).unwrap();
    (e, c)
}

fn wal_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for shard in fs::read_dir(dir.join("collections/p")).unwrap() {
        let shard = shard.unwrap().path();
        if shard.is_dir() {
            for f in fs::read_dir(&shard).unwrap() {
                let f = f.unwrap().path();
                if f.file_name().unwrap().to_string_lossy().starts_with("wal-") {
                    out.push(f);
                }
            }
        }
    }
    out.sort();
    out
}

#[test]
fn clean_restart_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let expected;
    let search_before;
    {
        let (e, c) = make(dir.path(), 40);
        block(c.create_index("group".into(), PayloadFieldSchema::Type(PayloadSchemaType::Keyword))).unwrap();
        let mut rng = Rng(5);
        block(c.upsert(
            (0..250).map(|i| point(i, rng.vec(4), standard_payload(i))).collect(),
            true,
        ))
        .unwrap();
        // Deletions and payload changes that hit sealed segments, plus some unsealed tail.
        block(c.delete(
            PointsSelector::Ids((0..250).step_by(3).map(PointId::Num).collect()),
            true,
        ))
        .unwrap();
        block(c.set_payload(
            PointsSelector::Filter(filter(json!({"must": [{"key": "group", "match": {"value": "g1"}}]}))),
            payload(json!({"tag": "x"})),
            None,
            true,
        ))
        .unwrap();
        block(c.upsert(
            vec![point(1000, vec![1.0, 2.0, 3.0, 4.0], json!({"late": true}))],
            false,
        ))
        .unwrap();
        expected = scroll_all(&c, None);
        search_before = block(c.search(SearchRequest::new(vec![0.5, -0.5, 0.1, 0.9], 15))).unwrap();
        e.shutdown();
    }
    let e = open(dir.path(), 2);
    let c = e.collection("p").unwrap();
    assert_eq!(scroll_all(&c, None), expected);
    assert_eq!(
        block(c.search(SearchRequest::new(vec![0.5, -0.5, 0.1, 0.9], 15))).unwrap(),
        search_before
    );
    assert_eq!(c.config().payload_schema.len(), 1, "index definition persisted");
    let f = filter(json!({"must": [{"key": "tag", "match": {"value": "x"}}]}));
    assert_eq!(
        block(c.count(Some(f))).unwrap(),
        expected
            .iter()
            .filter(|r| r.payload.as_ref().unwrap().get("tag").is_some())
            .count()
    );
    // Checkpoint everything, restart again: the WAL is empty, data comes from sealed segments.
    block(c.flush()).unwrap();
    e.shutdown();
    drop(e);
    for w in wal_files(dir.path()) {
        assert_eq!(fs::metadata(&w).unwrap().len(), 0, "{w:?} empty after a checkpoint");
    }
    let e = open(dir.path(), 2);
    assert_eq!(scroll_all(&e.collection("p").unwrap(), None), expected);
}

#[test]
fn torn_wal_tail_drops_only_the_torn_record() {
    let dir = tempfile::tempdir().unwrap();
    let acknowledged;
    {
        let (e, c) = make(dir.path(), 10_000);
        block(
            c.upsert(
                (0..50)
                    .map(|i| point(i, vec![1.0, i as f32, 0.0, 0.0], json!({"i": i})))
                    .collect(),
                true,
            ),
        )
        .unwrap();
        acknowledged = scroll_all(&c, None);
        e.shutdown();
    }
    // Simulate a crash in the middle of writing one more record to each shard's log.
    for w in wal_files(dir.path()) {
        let mut bytes = fs::read(&w).unwrap();
        let good = bytes.len();
        bytes.extend_from_slice(&[200, 0, 0, 0, 1, 2, 3, 4, 9, 9, 9]);
        fs::write(&w, &bytes).unwrap();
        let e = open(dir.path(), 2);
        assert_eq!(scroll_all(&e.collection("p").unwrap(), None), acknowledged);
        e.shutdown();
        drop(e);
        assert_eq!(fs::metadata(&w).unwrap().len() as usize, good, "torn tail truncated");
    }
    // A corrupted byte inside the last record: that record is dropped, earlier ones survive.
    let w = &wal_files(dir.path())[0];
    let mut bytes = fs::read(w).unwrap();
    let n = bytes.len();
    bytes[n - 3] ^= 0x55;
    fs::write(w, &bytes).unwrap();
    let e = open(dir.path(), 2);
    let after = scroll_all(&e.collection("p").unwrap(), None);
    assert!(after.len() < acknowledged.len());
    assert!(
        after.iter().all(|r| acknowledged.contains(r)),
        "no record applied half or changed"
    );
}

#[test]
fn interrupted_checkpoint_leftovers_are_ignored_and_removed() {
    let dir = tempfile::tempdir().unwrap();
    let expected;
    {
        let (e, c) = make(dir.path(), 30);
        block(
            c.upsert(
                (0..100)
                    .map(|i| point(i, vec![1.0, i as f32, 0.0, 0.0], json!({"i": i})))
                    .collect(),
                true,
            ),
        )
        .unwrap();
        expected = scroll_all(&c, None);
        e.shutdown();
    }
    // What a crash between writing a new segment and committing shard.json leaves behind.
    let shard0 = dir.path().join("collections/p/0");
    let stray_tmp = shard0.join("segments/00000000000000ff.tmp");
    let stray_seg = shard0.join("segments/00000000000000fe");
    fs::create_dir_all(&stray_tmp).unwrap();
    fs::create_dir_all(&stray_seg).unwrap();
    fs::write(stray_seg.join("manifest.json"), b"{}").unwrap();
    fs::write(shard0.join("wal-999.log"), b"junk").unwrap();
    fs::write(shard0.join("shard.json.tmp"), b"{half").unwrap();
    fs::create_dir_all(dir.path().join("collections/.tmp-q")).unwrap();
    let e = open(dir.path(), 2);
    assert_eq!(scroll_all(&e.collection("p").unwrap(), None), expected);
    assert_eq!(e.list_collections(), vec!["p"]);
    for p in [
        &stray_tmp,
        &stray_seg,
        &shard0.join("wal-999.log"),
        &shard0.join("shard.json.tmp"),
    ] {
        assert!(!p.exists(), "{p:?} removed");
    }
}

#[test]
fn damaged_segment_is_reported_not_misread() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (e, c) = make(dir.path(), 10);
        block(
            c.upsert(
                (0..40)
                    .map(|i| point(i, vec![1.0, i as f32, 0.0, 0.0], json!({"i": i})))
                    .collect(),
                true,
            ),
        )
        .unwrap();
        e.shutdown();
    }
    let segs = dir.path().join("collections/p/0/segments");
    let seg = fs::read_dir(&segs).unwrap().next().unwrap().unwrap().path();
    let f = seg.join("dense-0.f32");
    let len = fs::metadata(&f).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&f)
        .unwrap()
        .set_len(len - 4)
        .unwrap();
    let err = Engine::open(EngineOptions {
        storage_path: dir.path().to_path_buf(),
        workers: 2,
        pin_threads: false,
    })
    .err()
    .expect("must fail");
    assert!(
        matches!(err, EngineError::Corrupted(ref m) if m.contains("dense-0.f32")),
        "{err}"
    );
}

#[test]
fn small_seals_are_merged_and_deleted_slots_reclaimed() {
    let dir = tempfile::tempdir().unwrap();
    let expected;
    {
        let (e, c) = make(dir.path(), 400);
        // Forty tiny checkpoints (what frequent snapshots do) must not leave forty segments.
        for round in 0..40u64 {
            let pts = (round * 10..round * 10 + 10)
                .map(|i| point(i, vec![1.0, i as f32, 0.0, 0.0], json!({"i": i})))
                .collect();
            block(c.upsert(pts, true)).unwrap();
            block(c.flush()).unwrap();
        }
        let info = block(c.info()).unwrap();
        assert!(
            info.segments_count <= 2 * 3,
            "segments stay few: {}",
            info.segments_count
        );
        // Deleting most points of a sealed segment gets its slots reclaimed at the next seal.
        block(c.upsert((1000..1800).map(|i| point(i, vec![1.0; 4], json!({}))).collect(), true)).unwrap();
        block(c.flush()).unwrap();
        block(c.delete(PointsSelector::Ids((1000..1700).map(PointId::Num).collect()), true)).unwrap();
        block(c.flush()).unwrap();
        expected = scroll_all(&c, None);
        assert_eq!(expected.len(), 400 + 100);
        let slots: u64 = walk_ids_bytes(dir.path()) / 17;
        assert!(slots < 800, "deleted slots were reclaimed: {slots} slots on disk");
        e.shutdown();
    }
    let e = open(dir.path(), 2);
    assert_eq!(scroll_all(&e.collection("p").unwrap(), None), expected);
}

/// Total size of every `ids.bin` (17 bytes a slot) of the collection.
fn walk_ids_bytes(root: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.file_name().is_some_and(|n| n == "ids.bin") {
                total += fs::metadata(&p).unwrap().len();
            }
        }
    }
    total
}

#[test]
fn interrupted_recovery_swaps_put_the_old_data_back() {
    let dir = tempfile::tempdir().unwrap();
    let expected;
    {
        let (e, c) = make(dir.path(), 50);
        block(
            c.upsert(
                (0..120)
                    .map(|i| point(i, vec![1.0, i as f32, 0.0, 0.0], json!({"i": i})))
                    .collect(),
                true,
            ),
        )
        .unwrap();
        expected = scroll_all(&c, None);
        e.shutdown();
    }
    let cols = dir.path().join("collections");
    // A crash after moving the old collection aside, before the new one arrived.
    fs::rename(cols.join("p"), cols.join(".replaced-17-p")).unwrap();
    {
        let e = open(dir.path(), 2);
        assert_eq!(scroll_all(&e.collection("p").unwrap(), None), expected);
        e.shutdown();
    }
    assert!(!cols.join(".replaced-17-p").exists());
    // The same for one shard of a collection.
    fs::rename(cols.join("p/1"), cols.join("p/.1.replaced")).unwrap();
    let e = open(dir.path(), 2);
    assert_eq!(scroll_all(&e.collection("p").unwrap(), None), expected);
    assert!(!cols.join("p/.1.replaced").exists());
}
