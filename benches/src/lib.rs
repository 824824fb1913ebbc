//! Helpers shared by the benchmarks in `benches/`: a large synthetic collection, the archive of
//! a pinned collection, and peak-RSS sampling.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use quiver_engine::{
    Collection, CollectionConfig, Distance, Engine, EngineOptions, PointId, PointStruct, PointVectors,
};
use quiver_io::Archive;
use quiver_io::snapshot::{PinnedMember, collection_archive};

/// Dimension of the snapshot benchmarks' vectors.
pub const DIM: usize = 768;

/// Resident set size of this process, in bytes.
pub fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse::<u64>().ok())
        .unwrap_or(0)
        * 4096
}

/// Opens an engine in `dir` and fills collection `snap` with about `gib` GiB of pseudo-random
/// `DIM`-d vectors in sealed segments of 100,000 points (no HNSW graphs). Returns the engine, the collection and
/// the number of points.
pub fn load(dir: &Path, gib: f64) -> (Engine, Arc<Collection>, u64) {
    let n = (gib * (1u64 << 30) as f64 / (DIM * 4) as f64) as u64;
    let engine = Engine::open(EngineOptions::new(dir)).unwrap();
    let mut cfg = CollectionConfig::single(DIM, Distance::Dot);
    cfg.segment_max_points = 100_000;
    // The snapshot benches measure the data files: no HNSW builds running alongside.
    cfg.extra.insert("hnsw_config".into(), serde_json::json!({"m": 0}));
    let c = engine.create_collection("snap", cfg).unwrap();
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    for start in (0..n).step_by(2000) {
        let pts = (start..(start + 2000).min(n))
            .map(|i| {
                let v = (0..DIM)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        (x % 1000) as f32 / 1000.0
                    })
                    .collect();
                PointStruct {
                    id: PointId::Num(i),
                    vector: PointVectors::Single(v),
                    payload: None,
                }
            })
            .collect();
        pollster::block_on(c.upsert(pts, false)).unwrap();
    }
    pollster::block_on(c.flush()).unwrap();
    (engine, c, n)
}

/// Pins `c` and plans its collection snapshot archive.
pub fn pinned_archive(c: &Collection) -> Archive {
    let pin = pollster::block_on(c.pin()).unwrap();
    let config = serde_json::to_value(&pin.config).unwrap();
    let shards = pin
        .shards
        .into_iter()
        .map(|(id, files)| {
            (
                id,
                files
                    .into_iter()
                    .map(|f| PinnedMember {
                        path: f.path,
                        file: f.file,
                        size: f.size,
                        crc32: f.crc32,
                    })
                    .collect(),
            )
        })
        .collect();
    collection_archive(c.name(), &config, shards, None).unwrap()
}

/// Samples this process's RSS every 2 ms until stopped; reports the peak growth.
pub struct PeakRss {
    before: u64,
    peak: Arc<AtomicU64>,
    done: Arc<AtomicBool>,
    sampler: JoinHandle<()>,
}

impl PeakRss {
    /// Starts sampling.
    pub fn start() -> PeakRss {
        let before = rss_bytes();
        let peak = Arc::new(AtomicU64::new(before));
        let done = Arc::new(AtomicBool::new(false));
        let (p, d) = (peak.clone(), done.clone());
        let sampler = std::thread::spawn(move || {
            while !d.load(Ordering::Relaxed) {
                p.fetch_max(rss_bytes(), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(2));
            }
        });
        PeakRss {
            before,
            peak,
            done,
            sampler,
        }
    }

    /// Stops sampling; returns the peak growth over the RSS at start, in bytes.
    pub fn stop(self) -> u64 {
        self.done.store(true, Ordering::Relaxed);
        self.sampler.join().unwrap();
        self.peak.load(Ordering::Relaxed).saturating_sub(self.before)
    }
}
