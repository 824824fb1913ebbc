//! A shard: segments, the id map and the WAL of one slice of a collection. A shard is owned by
//! exactly one worker thread and is never shared, so nothing in it is locked.
//!
//! On disk:
//! ```text
//! <shard>/shard.json                 current generation, version, segment list (the commit point)
//! <shard>/wal-<generation>.log       operations since that generation was committed
//! <shard>/segments/<id>/             sealed segments (see segment.rs)
//! <shard>/segments/<id>/deleted-<generation>.bits
//! ```
//!
//! Crash safety of sealing (a checkpoint): the appendable segment is written to
//! `segments/<id>.tmp`, fsync'd and renamed; changed deletion bitsets are written under the new
//! generation's name; an empty `wal-<new>.log` is created; then `shard.json` is replaced
//! atomically. Until that rename the old `shard.json` still names the old WAL, which holds every
//! operation the new files contain, so a crash anywhere before it recovers the old state and
//! replays; after it, the new state is complete. Files no generation references are removed at
//! the next open.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::bitset::BitSet;
use crate::error::{EngineError, Result};
use crate::filter::Filter;
use crate::fsutil;
use crate::kernels;
use crate::search::{QueryVector, RankedHit, ScrollRequest, SearchRequest};
use crate::segment::{DenseQuery, Segment, segment_dir_name};
use crate::topk::{Hit, TopK};
use crate::types::{CollectionConfig, Payload, PointId, Record, ScoredPoint, WithPayload, WithVector};
use crate::wal::{PointWrite, Wal, WalOp};

const STATE_FILE: &str = "shard.json";
const STATE_FORMAT_VERSION: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct SegmentRef {
    id: u64,
    deleted: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ShardState {
    format_version: u32,
    generation: u64,
    version: u64,
    next_segment_id: u64,
    segments: Vec<SegmentRef>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Loc {
    seg: u32,
    off: u32,
}

/// A file of a pinned snapshot: its path inside the shard directory, a handle opened at pin
/// time, and its size and CRC32 at that moment.
///
/// Holding the handle is what keeps the snapshot consistent while the shard goes on: files are
/// never modified in place after they are committed (new generations get new names, old ones are
/// unlinked), so an unlinked file stays readable through the handle and a growing WAL is only
/// read up to `size`.
#[derive(Debug, Clone)]
pub struct PinnedFile {
    /// Path relative to the shard directory, `/`-separated.
    pub path: String,
    /// Open handle.
    pub file: Arc<fs::File>,
    /// Bytes to take.
    pub size: u64,
    /// CRC32 of those bytes.
    pub crc32: u32,
}

fn pin_by_reading(dir: &Path, rel: &str) -> Result<PinnedFile> {
    let file = fs::File::open(dir.join(rel))?;
    let mut hasher = crc32fast::Hasher::new();
    let mut size = 0u64;
    let mut buf = vec![0u8; 64 * 1024];
    let mut reader = &file;
    loop {
        let n = std::io::Read::read(&mut reader, &mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok(PinnedFile {
        path: rel.to_string(),
        file: Arc::new(file),
        size,
        crc32: hasher.finalize(),
    })
}

/// Counters reported by collection info.
#[derive(Debug, Clone, Copy, Default)]
pub struct ShardStats {
    /// Live points.
    pub points: usize,
    /// Segments, the appendable one included.
    pub segments: usize,
    /// HNSW graphs are being built.
    pub indexing: bool,
    /// Vectors covered by an HNSW graph.
    pub indexed_vectors: usize,
}

/// One shard (see the module docs).
pub struct Shard {
    dir: PathBuf,
    config: Arc<CollectionConfig>,
    /// Sealed segments, then the appendable one last.
    segments: Vec<Segment>,
    /// Deletion file of each sealed segment, parallel to `segments`.
    deleted_files: Vec<Option<String>>,
    id_map: BTreeMap<PointId, Loc>,
    wal: Wal,
    generation: u64,
    version: u64,
    next_segment_id: u64,
    /// Graphs built in the background for this shard's segments.
    inbox: Arc<crate::optimizer::Inbox>,
    /// (segment, vector, (m, ef_construct)) graphs already asked for.
    requested: std::collections::HashSet<(u64, String, (usize, usize))>,
}

fn wal_name(generation: u64) -> String {
    format!("wal-{generation}.log")
}

impl Shard {
    /// Opens the shard in `dir` (creating it when empty) and replays its WAL.
    pub fn open(dir: &Path, config: Arc<CollectionConfig>) -> Result<Shard> {
        fs::create_dir_all(dir.join("segments"))?;
        let state_path = dir.join(STATE_FILE);
        let state: ShardState = match fs::read(&state_path) {
            Ok(b) => serde_json::from_slice(&b)
                .map_err(|e| EngineError::Corrupted(format!("{}: {e}", state_path.display())))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let s = ShardState {
                    format_version: STATE_FORMAT_VERSION,
                    generation: 0,
                    version: 0,
                    next_segment_id: 1,
                    segments: vec![],
                };
                fsutil::atomic_write(
                    &state_path,
                    &serde_json::to_vec_pretty(&s).map_err(std::io::Error::other)?,
                )?;
                s
            }
            Err(e) => return Err(e.into()),
        };
        if state.format_version != STATE_FORMAT_VERSION {
            return Err(EngineError::Corrupted(format!(
                "{}: unsupported format version {}",
                state_path.display(),
                state.format_version
            )));
        }
        remove_unreferenced(dir, &state)?;
        let mut segments = Vec::new();
        let mut deleted_files = Vec::new();
        for r in &state.segments {
            let seg_dir = dir.join("segments").join(segment_dir_name(r.id));
            let deleted = match &r.deleted {
                Some(name) => Some(BitSet::from_bytes(&fs::read(seg_dir.join(name))?).ok_or_else(|| {
                    EngineError::Corrupted(format!("{}: malformed deletion bitset", seg_dir.join(name).display()))
                })?),
                None => None,
            };
            segments.push(Segment::open_sealed(&seg_dir, &config, deleted)?);
            deleted_files.push(r.deleted.clone());
        }
        segments.push(Segment::new_appendable(state.next_segment_id, &config));
        let (wal, replay) = Wal::open(&dir.join(wal_name(state.generation)))?;
        let mut shard = Shard {
            dir: dir.to_path_buf(),
            config,
            segments,
            deleted_files,
            id_map: BTreeMap::new(),
            wal,
            generation: state.generation,
            version: state.version,
            next_segment_id: state.next_segment_id,
            inbox: Arc::default(),
            requested: Default::default(),
        };
        shard.rebuild_id_map();
        shard.request_indexes();
        let replayed = replay.records.len();
        for (version, op) in replay.records {
            shard.apply(version, op)?;
            shard.version = shard.version.max(version);
        }
        if replayed > 0 {
            tracing::debug!(shard = %dir.display(), replayed, "WAL replayed");
        }
        Ok(shard)
    }

    /// Live points and segment count.
    pub fn stats(&self) -> ShardStats {
        ShardStats {
            points: self.id_map.len(),
            segments: self.segments.len(),
            indexing: self.inbox.busy(),
            indexed_vectors: self
                .segments
                .iter()
                .flat_map(|seg| {
                    self.config
                        .vectors
                        .0
                        .keys()
                        .filter(|name| seg.graph(name).is_some())
                        .map(|name| seg.dense_count(name))
                })
                .sum(),
        }
    }

    /// Asks the background builder for the HNSW graphs sealed segments should have and lack (or
    /// have with other `m` / `ef_construct` than configured): segments whose vectors exceed
    /// `full_scan_threshold` (smaller ones are scanned exactly).
    fn request_indexes(&mut self) {
        let hnsw = self.config.hnsw();
        if hnsw.m == 0 {
            return;
        }
        let n_sealed = self.segments.len().saturating_sub(1);
        for seg in &self.segments[..n_sealed] {
            for name in self.config.vectors.0.keys() {
                let Some(dim) = seg.dense_dim(name) else { continue };
                let params = (hnsw.m, hnsw.ef_construct);
                if seg.graph_params(name) == Some(params)
                    || seg.dense_count(name) < hnsw.full_scan_points(dim).max(1)
                    || !self.requested.insert((seg.id, name.clone(), params))
                {
                    continue;
                }
                let Some(dir) = seg.directory() else { continue };
                crate::optimizer::submit(crate::optimizer::Job {
                    segment_dir: dir.to_path_buf(),
                    segment: seg.id,
                    vector: name.clone(),
                    params: crate::hnsw::BuildParams {
                        m: hnsw.m,
                        ef_construct: hnsw.ef_construct,
                        threads: std::thread::available_parallelism().map_or(2, |n| n.get()).min(4),
                    },
                    inbox: self.inbox.clone(),
                });
            }
        }
    }

    /// Attaches graphs the background builder finished (called on the shard's own thread).
    pub fn absorb_indexes(&mut self) {
        for b in self.inbox.take() {
            if let Some(seg) = self.segments.iter_mut().find(|s| s.id == b.segment) {
                seg.attach_graph(&b.vector, b.graph, b.params);
            }
        }
    }

    /// The configuration this shard was opened with.
    pub fn config(&self) -> &Arc<CollectionConfig> {
        &self.config
    }

    fn appendable_idx(&self) -> u32 {
        (self.segments.len() - 1) as u32
    }

    fn check_exist(&self, ids: &[PointId]) -> Result<()> {
        match ids.iter().find(|id| !self.id_map.contains_key(id)) {
            Some(id) => Err(EngineError::PointNotFound(*id)),
            None => Ok(()),
        }
    }

    /// Logs and applies one operation. The record is in the WAL (not yet fsync'd: the worker
    /// syncs per batch) before memory changes. Seals when the appendable segment is full.
    pub fn write(&mut self, op: WalOp) -> Result<()> {
        match &op {
            WalOp::SetPayload { ids, .. }
            | WalOp::OverwritePayload { ids, .. }
            | WalOp::DeletePayloadKeys { ids, .. }
            | WalOp::ClearPayload(ids) => self.check_exist(ids)?,
            WalOp::Upsert(_) | WalOp::Delete(_) => {}
        }
        let version = self.version + 1;
        self.wal.append(version, &op)?;
        self.version = version;
        self.apply(version, op)?;
        if self
            .segments
            .last()
            .is_some_and(|s| s.len() >= self.config.segment_max_points)
        {
            self.seal()?;
        }
        Ok(())
    }

    /// Makes logged operations durable.
    pub fn sync(&mut self) -> Result<()> {
        self.wal.sync()
    }

    /// True when logged operations are not yet durable.
    pub fn needs_sync(&self) -> bool {
        self.wal.is_dirty()
    }

    fn put(
        &mut self,
        version: u64,
        id: PointId,
        vectors: &BTreeMap<String, crate::types::VectorData>,
        payload: Payload,
    ) {
        if let Some(old) = self.id_map.get(&id) {
            self.segments[old.seg as usize].delete(old.off as usize);
        }
        let seg = self.appendable_idx();
        let off = self
            .segments
            .last_mut()
            .expect("appendable segment")
            .push(id, version, vectors, payload);
        self.id_map.insert(id, Loc { seg, off });
    }

    fn rewrite_payload(&mut self, version: u64, ids: &[PointId], f: impl Fn(&mut Payload)) -> Result<()> {
        for id in ids {
            let Some(loc) = self.id_map.get(id).copied() else {
                continue;
            };
            let seg = &self.segments[loc.seg as usize];
            let mut payload = seg.payload(loc.off as usize)?.into_owned();
            let vectors = seg.vectors(loc.off as usize);
            f(&mut payload);
            self.put(version, *id, &vectors, payload);
        }
        Ok(())
    }

    /// Applies an operation to memory (live writes and WAL replay share this path).
    fn apply(&mut self, version: u64, op: WalOp) -> Result<()> {
        match op {
            WalOp::Upsert(points) => {
                for PointWrite { id, vectors, payload } in points {
                    self.put(version, id, &vectors, payload);
                }
            }
            WalOp::Delete(ids) => {
                for id in ids {
                    if let Some(loc) = self.id_map.remove(&id) {
                        self.segments[loc.seg as usize].delete(loc.off as usize);
                    }
                }
            }
            WalOp::SetPayload { ids, payload, key } => {
                self.rewrite_payload(version, &ids, |p| set_payload(p, &payload, key.as_deref()))?
            }
            WalOp::OverwritePayload { ids, payload } => {
                self.rewrite_payload(version, &ids, |p| *p = payload.clone())?
            }
            WalOp::DeletePayloadKeys { ids, keys } => {
                self.rewrite_payload(version, &ids, |p| keys.iter().for_each(|k| delete_path(p, k)))?
            }
            WalOp::ClearPayload(ids) => self.rewrite_payload(version, &ids, |p| p.clear())?,
        }
        Ok(())
    }

    /// Sealed segments worth rewriting at the next seal: small ones (under a quarter of the seal
    /// size) and mostly deleted ones, smallest first, as long as everything merged stays within
    /// one seal size. Without this, every snapshot (which seals) and every small flush would
    /// leave a small segment behind, and deleted slots would never be reclaimed.
    fn merge_candidates(&self) -> Vec<usize> {
        let max = self.config.segment_max_points;
        let sealed = &self.segments[..self.segments.len() - 1];
        let mostly_deleted = |s: &Segment| !s.is_empty() && (s.len() - s.live_count()) * 2 > s.len();
        let mut cands: Vec<usize> = (0..sealed.len())
            .filter(|&i| sealed[i].live_count() < max / 4 || mostly_deleted(&sealed[i]))
            .collect();
        cands.sort_by_key(|&i| sealed[i].live_count());
        let app_live = self.segments.last().map_or(0, Segment::live_count);
        let mut total = app_live;
        let mut picked = Vec::new();
        for i in cands {
            if total + sealed[i].live_count() <= max {
                total += sealed[i].live_count();
                picked.push(i);
            }
        }
        // Rewriting one segment alone only pays when it reclaims deleted slots.
        let worth = picked.len() >= 2
            || (app_live > 0 && !picked.is_empty())
            || picked.iter().any(|&i| mostly_deleted(&sealed[i]));
        if !worth {
            picked.clear();
        }
        picked.sort_unstable();
        picked
    }

    /// Seals the appendable segment (merging small or mostly deleted sealed segments into it)
    /// and persists deletions: a checkpoint (see the module docs). Merged-away segments stay
    /// readable through handles a snapshot pinned: their files are only unlinked.
    pub fn seal(&mut self) -> Result<()> {
        let n_sealed = self.segments.len() - 1;
        let merge = self.merge_candidates();
        let any_deleted_dirty = self.segments[..n_sealed].iter().any(|s| s.deleted_dirty);
        if self.segments[n_sealed].is_empty() && !any_deleted_dirty && merge.is_empty() {
            return Ok(());
        }
        let new_gen = self.generation + 1;
        let seg_root = self.dir.join("segments");
        let mut next_segment_id = self.next_segment_id;
        let mut sealed_new = None;
        let merged_live: usize =
            merge.iter().map(|&i| self.segments[i].live_count()).sum::<usize>() + self.segments[n_sealed].live_count();
        if merged_live > 0 {
            let combined;
            let source: &Segment = if merge.is_empty() {
                &self.segments[n_sealed]
            } else {
                let mut c = Segment::new_appendable(0, &self.config);
                for &i in merge.iter().chain(std::iter::once(&n_sealed)) {
                    let seg = &self.segments[i];
                    for (off, id) in seg.live_ids().collect::<Vec<_>>() {
                        c.push(
                            id,
                            seg.version_at(off),
                            &seg.vectors(off),
                            seg.payload(off)?.into_owned(),
                        );
                    }
                }
                combined = c;
                &combined
            };
            let id = next_segment_id;
            next_segment_id += 1;
            let final_dir = seg_root.join(segment_dir_name(id));
            let tmp = fsutil::tmp_path(&final_dir);
            fsutil::remove_any(&tmp)?;
            if let Err(e) = source.write_sealed(id, &tmp) {
                let _ = fsutil::remove_any(&tmp);
                return Err(e);
            }
            fs::rename(&tmp, &final_dir)?;
            fsutil::fsync_dir(&seg_root)?;
            sealed_new = Some(Segment::open_sealed(&final_dir, &self.config, None)?);
        }
        let mut deleted_files = self.deleted_files.clone();
        for (i, seg) in self.segments[..n_sealed].iter().enumerate() {
            if seg.deleted_dirty && !merge.contains(&i) {
                let name = format!("deleted-{new_gen}.bits");
                fsutil::atomic_write(&seg.directory().expect("sealed").join(&name), &seg.deleted().to_bytes())?;
                deleted_files[i] = Some(name);
            }
        }
        let new_wal_path = self.dir.join(wal_name(new_gen));
        fsutil::remove_any(&new_wal_path)?;
        let (new_wal, _) = Wal::open(&new_wal_path)?;
        fsutil::fsync_dir(&self.dir)?;
        let keep: Vec<usize> = (0..n_sealed).filter(|i| !merge.contains(i)).collect();
        let mut refs: Vec<SegmentRef> = keep
            .iter()
            .map(|&i| SegmentRef {
                id: self.segments[i].id,
                deleted: deleted_files[i].clone(),
            })
            .collect();
        if let Some(s) = &sealed_new {
            refs.push(SegmentRef {
                id: s.id,
                deleted: None,
            });
        }
        let state = ShardState {
            format_version: STATE_FORMAT_VERSION,
            generation: new_gen,
            version: self.version,
            next_segment_id,
            segments: refs,
        };
        fsutil::atomic_write(
            &self.dir.join(STATE_FILE),
            &serde_json::to_vec_pretty(&state).map_err(std::io::Error::other)?,
        )?;

        // Committed: switch memory over to the new generation.
        let old_wal = std::mem::replace(&mut self.wal, new_wal);
        let old_segments = std::mem::take(&mut self.segments);
        let mut kept_files = Vec::with_capacity(keep.len() + 1);
        for (i, mut seg) in old_segments.into_iter().enumerate() {
            if keep.contains(&i) {
                seg.deleted_dirty = false;
                self.segments.push(seg);
                kept_files.push(deleted_files[i].clone());
            }
        }
        if let Some(seg) = sealed_new {
            self.segments.push(seg);
            kept_files.push(None);
        }
        self.deleted_files = kept_files;
        self.segments
            .push(Segment::new_appendable(next_segment_id, &self.config));
        self.rebuild_id_map();
        self.generation = new_gen;
        self.next_segment_id = next_segment_id;
        let _ = fs::remove_file(old_wal.path());
        if let Err(e) = remove_unreferenced(&self.dir, &state) {
            tracing::warn!(error = %e, "could not remove files of an older generation");
        }
        self.request_indexes();
        Ok(())
    }

    fn rebuild_id_map(&mut self) {
        self.id_map.clear();
        for (si, seg) in self.segments.iter().enumerate() {
            for (off, id) in seg.live_ids() {
                self.id_map.insert(
                    id,
                    Loc {
                        seg: si as u32,
                        off: off as u32,
                    },
                );
            }
        }
    }

    /// Freezes a point-in-time view for a snapshot: seals the appendable segment (so every
    /// acknowledged write is in sealed files and the WAL is empty), then opens every file of the
    /// current generation. Large data files take their size and CRC32 from the segment manifest
    /// (written at seal time), so only small files are read here. Payload index files are left
    /// out: they are derived data, rebuilt when the segment is opened.
    pub fn pin(&mut self) -> Result<Vec<PinnedFile>> {
        self.seal()?;
        let mut out = vec![
            pin_by_reading(&self.dir, STATE_FILE)?,
            pin_by_reading(&self.dir, &wal_name(self.generation))?,
        ];
        for (seg, deleted) in self.segments[..self.segments.len() - 1].iter().zip(&self.deleted_files) {
            let rel = format!("segments/{}", segment_dir_name(seg.id));
            let manifest_pin = pin_by_reading(&self.dir, &format!("{rel}/{}", crate::segment::MANIFEST))?;
            let manifest: crate::segment::SegmentManifest =
                serde_json::from_slice(&fs::read(self.dir.join(&manifest_pin.path))?)
                    .map_err(|e| EngineError::Corrupted(format!("{rel}/manifest.json: {e}")))?;
            out.push(manifest_pin);
            for f in &manifest.files {
                let path = format!("{rel}/{}", f.name);
                let file = fs::File::open(self.dir.join(&path))?;
                let size = file.metadata()?.len();
                if size != f.size {
                    return Err(EngineError::Corrupted(format!(
                        "{path} has {size} bytes, its manifest says {}",
                        f.size
                    )));
                }
                out.push(PinnedFile {
                    path,
                    file: Arc::new(file),
                    size,
                    crc32: f.crc32,
                });
            }
            if let Some(d) = deleted {
                out.push(pin_by_reading(&self.dir, &format!("{rel}/{d}"))?);
            }
        }
        Ok(out)
    }

    /// Point ids matching `filter` (all live ids without one).
    pub fn resolve(&self, filter: &Filter) -> Result<Vec<PointId>> {
        let masks = self.masks(None, Some(filter))?;
        Ok(self
            .id_map
            .iter()
            .filter(|(_, l)| masks[l.seg as usize].get(l.off as usize))
            .map(|(id, _)| *id)
            .collect())
    }

    fn masks(&self, vector: Option<&str>, filter: Option<&Filter>) -> Result<Vec<BitSet>> {
        self.segments.iter().map(|s| s.mask(vector, filter)).collect()
    }

    /// Number of live points matching `filter`.
    pub fn count(&self, filter: Option<&Filter>) -> Result<usize> {
        match filter {
            None => Ok(self.id_map.len()),
            Some(f) => Ok(self.masks(None, Some(f))?.iter().map(BitSet::count_ones).sum()),
        }
    }

    fn record(&self, id: PointId, loc: Loc, with_payload: &WithPayload, with_vector: &WithVector) -> Result<Record> {
        let seg = &self.segments[loc.seg as usize];
        let off = loc.off as usize;
        let payload = if with_payload.wants_any() {
            with_payload.select(&*seg.payload(off)?)
        } else {
            None
        };
        let vector = with_vector
            .wants_any()
            .then(|| seg.vector_output(off, &|n| with_vector.wants(n), self.config.vectors.is_single()));
        Ok(Record { id, payload, vector })
    }

    /// The points with these ids that exist, in the given order.
    pub fn retrieve(
        &self,
        ids: &[PointId],
        with_payload: &WithPayload,
        with_vector: &WithVector,
    ) -> Result<Vec<Record>> {
        ids.iter()
            .filter_map(|id| {
                self.id_map
                    .get(id)
                    .map(|l| self.record(*id, *l, with_payload, with_vector))
            })
            .collect()
    }

    /// Up to `limit + 1` points from `offset` on, in id order (the extra one gives the next offset).
    pub fn scroll(&self, req: &ScrollRequest) -> Result<Vec<Record>> {
        let masks = match &req.filter {
            Some(f) if !f.is_empty() => Some(self.masks(None, Some(f))?),
            _ => None,
        };
        let start = req.offset.map_or(std::ops::Bound::Unbounded, std::ops::Bound::Included);
        self.id_map
            .range((start, std::ops::Bound::Unbounded))
            .filter(|(_, l)| masks.as_ref().is_none_or(|m| m[l.seg as usize].get(l.off as usize)))
            .take(req.limit.saturating_add(1))
            .map(|(id, l)| self.record(*id, *l, &req.with_payload, &req.with_vector))
            .collect()
    }

    /// Exact search for a batch of requests; each answer holds up to `offset + limit` hits.
    /// Dense requests on the same vector share one blocked pass over each segment.
    pub fn search_batch(&self, reqs: &[SearchRequest]) -> Result<Vec<Vec<RankedHit>>> {
        let k = kernels::active();
        let mut tops: Vec<TopK> = reqs
            .iter()
            .map(|r| TopK::new(r.offset.saturating_add(r.limit)))
            .collect();
        let threshold = |r: &SearchRequest| -> f32 {
            match (&r.query, r.score_threshold) {
                (_, None) => f32::NEG_INFINITY,
                (QueryVector::Sparse(_), Some(t)) => t,
                (QueryVector::Dense(_), Some(t)) => self
                    .config
                    .vectors
                    .0
                    .get(&r.using)
                    .map_or(t, |p| p.distance.raw_threshold(t)),
            }
        };
        let mut dense_names: Vec<&str> = reqs
            .iter()
            .filter(|r| matches!(r.query, QueryVector::Dense(_)))
            .map(|r| r.using.as_str())
            .collect();
        dense_names.sort_unstable();
        dense_names.dedup();
        let hnsw = self.config.hnsw();
        for (si, seg) in self.segments.iter().enumerate() {
            for name in &dense_names {
                let mut queries = Vec::new();
                let graph = seg.graph(name).zip(seg.vectors_view(name));
                for (r, top) in reqs.iter().zip(tops.iter_mut()) {
                    if let QueryVector::Dense(v) = &r.query
                        && r.using == *name
                    {
                        let mask = seg.mask(Some(name), r.filter.as_ref())?;
                        // The graph when there is one and enough candidates pass the filter
                        // for a graph walk to pay off; an exact scan otherwise (or on request).
                        if let Some((g, vectors)) = graph
                            && !r.params.exact
                            && mask.count_ones() >= hnsw.full_scan_points(vectors.dim)
                        {
                            let want = r.offset.saturating_add(r.limit);
                            let ef = r.params.hnsw_ef.unwrap_or(hnsw.ef_construct).max(want);
                            let floor = threshold(r);
                            for (score, off) in g.search(vectors, v, want, ef, Some(&mask)) {
                                if score >= floor {
                                    top.push(Hit {
                                        score,
                                        seg: si as u32,
                                        off,
                                    });
                                }
                            }
                            continue;
                        }
                        queries.push(DenseQuery {
                            vector: v,
                            mask,
                            threshold: threshold(r),
                            top,
                        });
                    }
                }
                seg.scan_dense(si as u32, name, &mut queries, k);
            }
            for (r, top) in reqs.iter().zip(tops.iter_mut()) {
                if let QueryVector::Sparse(q) = &r.query {
                    let mask = seg.mask(Some(&r.using), r.filter.as_ref())?;
                    seg.scan_sparse(si as u32, &r.using, q, &mask, threshold(r), top);
                }
            }
        }
        reqs.iter()
            .zip(tops)
            .map(|(r, top)| self.materialize(r, top.into_sorted()))
            .collect()
    }

    fn materialize(&self, r: &SearchRequest, hits: Vec<Hit>) -> Result<Vec<RankedHit>> {
        let distance = self.config.vectors.0.get(&r.using).map(|p| p.distance);
        hits.into_iter()
            .map(|h| {
                let seg = &self.segments[h.seg as usize];
                let id = seg.id_at(h.off as usize);
                let rec = self.record(id, Loc { seg: h.seg, off: h.off }, &r.with_payload, &r.with_vector)?;
                let score = match (&r.query, distance) {
                    (QueryVector::Dense(_), Some(d)) => d.user_score(h.score),
                    _ => h.score,
                };
                Ok(RankedHit {
                    raw: h.score,
                    point: ScoredPoint {
                        id,
                        version: seg.version_at(h.off as usize),
                        score,
                        payload: rec.payload,
                        vector: rec.vector,
                    },
                })
            })
            .collect()
    }

    /// Builds a payload index in every segment.
    pub fn create_index(
        &mut self,
        key: &str,
        kind: crate::types::PayloadSchemaType,
        config: Arc<CollectionConfig>,
    ) -> Result<()> {
        for seg in self.segments.iter_mut() {
            seg.ensure_index(key, kind)?;
        }
        self.config = config;
        Ok(())
    }

    /// Drops a payload index from every segment.
    pub fn drop_index(&mut self, key: &str, config: Arc<CollectionConfig>) -> Result<()> {
        for seg in self.segments.iter_mut() {
            seg.drop_index(key)?;
        }
        self.config = config;
        Ok(())
    }

    /// Replaces the configuration (for settings that need no data change).
    pub fn set_config(&mut self, config: Arc<CollectionConfig>) {
        self.config = config;
        // A changed `hnsw_config` rebuilds the graphs in the background; the old ones serve
        // until the new ones are attached.
        self.request_indexes();
    }
}

/// Removes segment directories, deletion files, WALs and temp files that `state` does not name.
fn remove_unreferenced(dir: &Path, state: &ShardState) -> Result<()> {
    let seg_root = dir.join("segments");
    for entry in fs::read_dir(&seg_root)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        match state.segments.iter().find(|r| segment_dir_name(r.id) == name) {
            None => fsutil::remove_any(&entry.path())?,
            Some(r) => {
                for f in fs::read_dir(entry.path())? {
                    let f = f?;
                    let fname = f.file_name().to_string_lossy().into_owned();
                    let stale_deleted = fname.starts_with("deleted-") && Some(&fname) != r.deleted.as_ref();
                    if stale_deleted || fname.ends_with(fsutil::TMP_SUFFIX) {
                        fsutil::remove_any(&f.path())?;
                    }
                }
            }
        }
    }
    let current_wal = wal_name(state.generation);
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if (name.starts_with("wal-") && name != current_wal) || name.ends_with(fsutil::TMP_SUFFIX) {
            fsutil::remove_any(&entry.path())?;
        }
    }
    Ok(())
}

/// Merges `new` into `payload`, or into the object at the dotted path `key` (created as needed).
pub fn set_payload(payload: &mut Payload, new: &Payload, key: Option<&str>) {
    let mut target = payload;
    if let Some(key) = key {
        for part in key.split('.') {
            let slot = target
                .entry(part.to_string())
                .or_insert_with(|| Value::Object(Default::default()));
            if !slot.is_object() {
                *slot = Value::Object(Default::default());
            }
            target = slot.as_object_mut().expect("just made an object");
        }
    }
    for (k, v) in new {
        target.insert(k.clone(), v.clone());
    }
}

/// Removes the value at a dotted path.
pub fn delete_path(payload: &mut Payload, key: &str) {
    match key.split_once('.') {
        None => {
            payload.remove(key);
        }
        Some((head, rest)) => {
            if let Some(Value::Object(inner)) = payload.get_mut(head) {
                delete_path(inner, rest);
            }
        }
    }
}
