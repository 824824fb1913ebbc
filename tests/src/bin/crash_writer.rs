//! Writes points forever with `wait=true`, printing `ack <batch>` after each acknowledged batch,
//! so a test can kill it at any moment (kill -9) and check that every acknowledged point survived.
//!
//! Usage: `crash_writer <storage-path> <first-batch>`

use std::io::Write;

use quiver_engine::{CollectionConfig, Distance, Engine, EngineOptions};

fn main() {
    let mut args = std::env::args().skip(1);
    let storage = args.next().expect("storage path");
    let first: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    let engine = Engine::open(EngineOptions {
        storage_path: storage.into(),
        workers: 2,
        pin_threads: false,
    })
    .expect("open engine");
    let c = match engine.collection("crash") {
        Ok(c) => c,
        Err(_) => {
            let mut cfg = CollectionConfig::single(quiver_tests::CRASH_DIM, Distance::Dot);
            // Small segments, so that kills also land in the middle of checkpoints.
            cfg.segment_max_points = 300;
            cfg.shard_number = 2;
            engine.create_collection("crash", cfg).expect("create collection")
        }
    };
    let stdout = std::io::stdout();
    for batch in first.. {
        pollster::block_on(c.upsert(quiver_tests::crash_batch(batch), true)).expect("upsert");
        let mut out = stdout.lock();
        writeln!(out, "ack {batch}").and_then(|_| out.flush()).expect("stdout");
    }
}
