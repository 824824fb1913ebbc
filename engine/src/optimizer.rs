//! Background index builder: HNSW graphs for sealed segments, built off the shards' worker
//! threads so that writes and searches carry on (exactly) while a graph is being built.
//!
//! One builder thread takes jobs in order (each build itself uses a few threads). A job reads
//! the segment's vectors through its own memory map of the immutable vector file, builds the
//! graph, and writes it crash-safely into the segment directory:
//!
//! 1. the graph goes to `.hnsw-<i>-m<m>-ef<ef>.bin.tmp`, is fsync'd, and is renamed to
//!    `hnsw-<i>-m<m>-ef<ef>.bin`;
//! 2. the segment's `manifest.json` is rewritten (temp name, fsync, rename, fsync of the
//!    directory) with the file's size and CRC32 added to `files` and the graph listed in `hnsw`.
//!
//! A crash before step 2 leaves a file no manifest names: the next open removes it and asks for
//! the graph again. A rebuild after `hnsw_config` changed writes a file of another name and
//! replaces the old entry in step 2; the old file is removed at the next open. After step 2 the graph belongs to the segment: it is
//! carried by snapshots (with its CRC32) and mapped at open, so nothing is rebuilt. If the
//! segment was merged away meanwhile, its directory is gone and the job simply fails.
//!
//! The finished graph is left in the shard's [`Inbox`]; the shard attaches it on its own thread
//! the next time it is used (the shard is never touched from here).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Sender, channel};
use std::sync::{Arc, Mutex, OnceLock};

use crate::bitset::BitSet;
use crate::error::{EngineError, Result};
use crate::fsutil;
use crate::hnsw::{BuildParams, Graph, Vectors};
use crate::segment::{FileEntry, HnswLayout, MANIFEST, SegmentManifest};

/// Graphs finished for one shard, waiting to be attached by it.
#[derive(Default)]
pub struct Inbox {
    built: Mutex<Vec<Built>>,
    ready: AtomicBool,
    pending: AtomicUsize,
}

/// A finished graph.
pub struct Built {
    /// Segment id.
    pub segment: u64,
    /// Vector name.
    pub vector: String,
    /// The graph, mapped from its file.
    pub graph: Arc<Graph>,
    /// (`m`, `ef_construct`) it was built with.
    pub params: (usize, usize),
}

impl Inbox {
    /// Takes the finished graphs (cheap when there are none).
    pub fn take(&self) -> Vec<Built> {
        if !self.ready.swap(false, Ordering::AcqRel) {
            return Vec::new();
        }
        std::mem::take(&mut *self.built.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Jobs submitted and not finished yet.
    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::Acquire)
    }

    /// True when graphs are queued, building, or built but not attached yet.
    pub fn busy(&self) -> bool {
        self.pending() > 0 || self.ready.load(Ordering::Acquire)
    }
}

/// One graph to build.
pub struct Job {
    /// Sealed segment directory.
    pub segment_dir: PathBuf,
    /// Segment id.
    pub segment: u64,
    /// Dense vector name.
    pub vector: String,
    /// Build parameters.
    pub params: BuildParams,
    /// Where the result goes.
    pub inbox: Arc<Inbox>,
}

fn queue() -> &'static Mutex<Sender<Job>> {
    static QUEUE: OnceLock<Mutex<Sender<Job>>> = OnceLock::new();
    QUEUE.get_or_init(|| {
        let (tx, rx) = channel::<Job>();
        std::thread::Builder::new()
            .name("quiver-index".into())
            .spawn(move || {
                for job in rx {
                    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| build(&job)));
                    match result {
                        Ok(Ok(graph)) => {
                            job.inbox.built.lock().unwrap_or_else(|p| p.into_inner()).push(Built {
                                segment: job.segment,
                                vector: job.vector.clone(),
                                graph,
                                params: (job.params.m, job.params.ef_construct),
                            });
                            job.inbox.ready.store(true, Ordering::Release);
                        }
                        Ok(Err(e)) => {
                            tracing::warn!(error = %e, segment = %job.segment_dir.display(), "HNSW build failed")
                        }
                        Err(_) => tracing::error!(segment = %job.segment_dir.display(), "HNSW build panicked"),
                    }
                    job.inbox.pending.fetch_sub(1, Ordering::AcqRel);
                }
            })
            .expect("spawn the index builder thread");
        Mutex::new(tx)
    })
}

/// Queues a build.
pub fn submit(job: Job) {
    job.inbox.pending.fetch_add(1, Ordering::AcqRel);
    let inbox = job.inbox.clone();
    if queue().lock().unwrap_or_else(|p| p.into_inner()).send(job).is_err() {
        inbox.pending.fetch_sub(1, Ordering::AcqRel);
    }
}

fn build(job: &Job) -> Result<Arc<Graph>> {
    let dir = &job.segment_dir;
    let bad = |what: String| EngineError::Corrupted(format!("segment {}: {what}", dir.display()));
    let manifest_path = dir.join(MANIFEST);
    let mut manifest: SegmentManifest =
        serde_json::from_slice(&std::fs::read(&manifest_path)?).map_err(|e| bad(format!("manifest: {e}")))?;
    let n = manifest.points;
    let params = (job.params.m, job.params.ef_construct);
    if let Some(h) = manifest
        .hnsw
        .iter()
        .find(|h| h.name == job.vector && (h.m, h.ef_construct) == params)
    {
        return Ok(Arc::new(Graph::open(&dir.join(&h.file), n)?));
    }
    let (i, layout) = manifest
        .dense
        .iter()
        .enumerate()
        .find(|(_, l)| l.name == job.vector)
        .ok_or_else(|| bad(format!("no dense vector `{}`", job.vector)))?;
    let file = std::fs::File::open(dir.join(&layout.file))?;
    // SAFETY: sealed vector files are never modified; merged-away ones are only unlinked.
    let map = unsafe { memmap2::Mmap::map(&file)? };
    let data: &[f32] = bytemuck::try_cast_slice(&map[..]).map_err(|_| bad(format!("{} size", layout.file)))?;
    if data.len() != n * layout.dim {
        return Err(bad(format!("{} size", layout.file)));
    }
    let present = BitSet::from_bytes(&std::fs::read(dir.join(&layout.present))?)
        .filter(|b| b.len() == n)
        .ok_or_else(|| bad(layout.present.clone()))?;
    let vectors = Vectors {
        data,
        dim: layout.dim,
        distance: layout.distance,
        kernels: crate::kernels::active(),
    };
    let started = std::time::Instant::now();
    let graph = Graph::build(vectors, n, &|o| present.get(o), job.params);
    // Parameters in the name: a rebuild with other ones never overwrites a file that the
    // current manifest (and so a snapshot in progress) names.
    let name = format!("hnsw-{i}-m{}-ef{}.bin", job.params.m, job.params.ef_construct);
    let final_path = dir.join(&name);
    let tmp = dir.join(format!(".{name}.tmp"));
    fsutil::remove_any(&tmp)?;
    let (size, crc32) = match graph.write(&tmp) {
        Ok(written) => written,
        Err(e) => {
            let _ = fsutil::remove_any(&tmp);
            return Err(e.into());
        }
    };
    std::fs::rename(&tmp, &final_path)?;
    fsutil::fsync_dir(dir)?;
    let replaced: Vec<String> = manifest
        .hnsw
        .iter()
        .filter(|h| h.name == job.vector)
        .map(|h| h.file.clone())
        .collect();
    manifest.hnsw.retain(|h| h.name != job.vector);
    manifest.files.retain(|f| f.name != name && !replaced.contains(&f.name));
    manifest.files.push(FileEntry {
        name: name.clone(),
        size,
        crc32,
    });
    manifest.hnsw.push(HnswLayout {
        name: job.vector.clone(),
        file: name.clone(),
        m: job.params.m,
        ef_construct: job.params.ef_construct,
    });
    fsutil::atomic_write(
        &manifest_path,
        &serde_json::to_vec_pretty(&manifest).map_err(std::io::Error::other)?,
    )?;
    tracing::info!(segment = %dir.display(), vector = %job.vector, points = n,
        secs = started.elapsed().as_secs_f64(), "HNSW graph built");
    Ok(Arc::new(Graph::open(&final_path, n)?))
}
