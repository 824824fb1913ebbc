//! Segments: the unit of storage inside a shard.
//!
//! A shard has one *appendable* segment, held in memory and made durable by the WAL, and any
//! number of *sealed* segments: immutable directories written once and read through `mmap`.
//! Both kinds share one representation (flat `f32` arrays per dense vector, presence bitsets,
//! flat sparse arrays plus an inverted index, payloads, ids, versions, a deletion bitset and
//! payload indexes), so search, filter and retrieval code has a single path.
//!
//! A sealed segment directory is self-describing: `manifest.json` (format version, point count,
//! vector layout, every file's size and CRC32) beside the data files. Only the deletion bitset
//! changes after sealing, and it is written under a new, generation-numbered name that the
//! shard's state file points to (see `shard.rs`), so the segment files themselves never change
//! and can be streamed by the snapshot pipeline as they are.
//! All integers and floats on disk are little-endian; vector files are cast in place with
//! `bytemuck`, which is why only little-endian targets are supported.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::Mmap;
use serde::{Deserialize, Serialize};

use crate::bitset::BitSet;
use crate::error::{EngineError, Result};
use crate::filter::{Condition, Filter, PointView};
use crate::fsutil;
use crate::hnsw::{Graph, Vectors};
use crate::kernels::Kernels;
use crate::payload_index::FieldIndex;
use crate::topk::{Hit, TopK};
use crate::types::{
    CollectionConfig, Distance, Payload, PayloadSchemaType, PointId, SparseVector, VectorData, VectorOutput,
};

#[cfg(not(target_endian = "little"))]
compile_error!("Quiver's on-disk format is little-endian and mapped in place");

/// Version of the sealed segment layout.
pub const SEGMENT_FORMAT_VERSION: u32 = 1;
/// Name of the manifest inside a segment directory.
pub const MANIFEST: &str = "manifest.json";

enum Floats {
    Owned(Vec<f32>),
    Mapped(Mmap),
}

impl Floats {
    fn as_slice(&self) -> &[f32] {
        match self {
            Floats::Owned(v) => v,
            // A mapping starts page-aligned and its length was checked to be a multiple of 4.
            Floats::Mapped(m) => bytemuck::cast_slice(&m[..]),
        }
    }
}

/// All values of one dense vector, `dim` floats per slot (zeros where absent).
struct DenseStore {
    dim: usize,
    distance: Distance,
    data: Floats,
    present: BitSet,
}

impl DenseStore {
    fn get(&self, off: usize) -> Option<&[f32]> {
        self.present
            .get(off)
            .then(|| &self.data.as_slice()[off * self.dim..(off + 1) * self.dim])
    }
}

/// All values of one sparse vector, flat, plus postings `dim -> [(offset, value)]`.
#[derive(Default)]
struct SparseStore {
    starts: Vec<u64>,
    indices: Vec<u32>,
    values: Vec<f32>,
    present: BitSet,
    postings: HashMap<u32, Vec<(u32, f32)>>,
}

impl SparseStore {
    fn push(&mut self, v: Option<&SparseVector>) {
        if self.starts.is_empty() {
            self.starts.push(0);
        }
        let off = self.present.len() as u32;
        self.present.push(v.is_some());
        if let Some(v) = v {
            self.indices.extend_from_slice(&v.indices);
            self.values.extend_from_slice(&v.values);
            for (i, x) in v.indices.iter().zip(&v.values) {
                self.postings.entry(*i).or_default().push((off, *x));
            }
        }
        self.starts.push(self.indices.len() as u64);
    }

    fn get(&self, off: usize) -> Option<SparseVector> {
        if !self.present.get(off) {
            return None;
        }
        let (a, b) = (self.starts[off] as usize, self.starts[off + 1] as usize);
        Some(SparseVector {
            indices: self.indices[a..b].to_vec(),
            values: self.values[a..b].to_vec(),
        })
    }
}

enum Payloads {
    Owned(Vec<Payload>),
    /// `starts` holds n+1 little-endian u64 offsets into `data` (JSON objects back to back).
    Mapped {
        starts: Mmap,
        data: Option<Mmap>,
    },
}

/// File entry of a segment manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileEntry {
    /// File name inside the segment directory.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// CRC32 of the content.
    pub crc32: u32,
}

/// Layout of one dense vector in a sealed segment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DenseLayout {
    /// Vector name ("" for the unnamed one).
    pub name: String,
    /// Dimensions.
    pub dim: usize,
    /// Distance.
    pub distance: Distance,
    /// Flat f32 file.
    pub file: String,
    /// Presence bitset file.
    pub present: String,
}

/// Layout of one sparse vector in a sealed segment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SparseLayout {
    /// Vector name.
    pub name: String,
    /// File with starts, indices, values and presence.
    pub file: String,
}

/// An HNSW graph of one dense vector of a sealed segment (its file is also in `files`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HnswLayout {
    /// Vector name.
    pub name: String,
    /// Graph file.
    pub file: String,
    /// `m` it was built with.
    pub m: usize,
    /// `ef_construct` it was built with.
    pub ef_construct: usize,
}

/// The self-describing header of a sealed segment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegmentManifest {
    /// [`SEGMENT_FORMAT_VERSION`] at write time.
    pub format_version: u32,
    /// Segment id (also its directory name).
    pub id: u64,
    /// Number of slots.
    pub points: usize,
    /// Dense vectors.
    pub dense: Vec<DenseLayout>,
    /// Sparse vectors.
    pub sparse: Vec<SparseLayout>,
    /// Every data file with its size and CRC32 (indexes and deletion bitsets are not listed:
    /// they are derived or generation-numbered).
    pub files: Vec<FileEntry>,
    /// HNSW graphs built for this segment (added after sealing, by the index builder).
    #[serde(default)]
    pub hnsw: Vec<HnswLayout>,
}

#[derive(Serialize, Deserialize)]
struct IndexFile {
    key: String,
    kind: PayloadSchemaType,
    index: FieldIndex,
}

/// One segment (see the module docs).
pub struct Segment {
    /// Stable id, the directory name of a sealed segment.
    pub id: u64,
    dir: Option<PathBuf>,
    ids: Vec<PointId>,
    versions: Vec<u64>,
    dense: BTreeMap<String, DenseStore>,
    sparse: BTreeMap<String, SparseStore>,
    payloads: Payloads,
    deleted: BitSet,
    /// Set when `deleted` changed since it was last persisted.
    pub deleted_dirty: bool,
    indexes: BTreeMap<String, FieldIndex>,
    /// HNSW graph per dense vector, with the (`m`, `ef_construct`) it was built with.
    graphs: BTreeMap<String, (Arc<Graph>, (usize, usize))>,
}

/// Directory name of a segment id.
pub fn segment_dir_name(id: u64) -> String {
    format!("{id:016x}")
}

fn index_file_name(key: &str) -> String {
    let hex: String = key.bytes().map(|b| format!("{b:02x}")).collect();
    format!("index-{hex}.json")
}

fn map_file(path: &Path) -> Result<Option<Mmap>> {
    let f = File::open(path)?;
    if f.metadata()?.len() == 0 {
        return Ok(None);
    }
    // SAFETY: sealed segment files are never modified or truncated while mapped: they are
    // written once under a temp name and removed only after the segment is dropped.
    Ok(Some(unsafe { Mmap::map(&f)? }))
}

impl Segment {
    /// An empty appendable segment with stores for every vector of `config`.
    pub fn new_appendable(id: u64, config: &CollectionConfig) -> Segment {
        let dense = config
            .vectors
            .0
            .iter()
            .map(|(n, p)| {
                (
                    n.clone(),
                    DenseStore {
                        dim: p.size,
                        distance: p.distance,
                        data: Floats::Owned(Vec::new()),
                        present: BitSet::new(0),
                    },
                )
            })
            .collect();
        let sparse = config
            .sparse_vectors
            .keys()
            .map(|n| (n.clone(), SparseStore::default()))
            .collect();
        let indexes = config
            .payload_schema
            .iter()
            .map(|(k, s)| (k.clone(), FieldIndex::new(s.kind())))
            .collect();
        Segment {
            id,
            dir: None,
            ids: Vec::new(),
            versions: Vec::new(),
            dense,
            sparse,
            payloads: Payloads::Owned(Vec::new()),
            deleted: BitSet::new(0),
            deleted_dirty: false,
            indexes,
            graphs: BTreeMap::new(),
        }
    }

    /// True for the in-memory appendable segment.
    pub fn is_appendable(&self) -> bool {
        self.dir.is_none()
    }

    /// Number of slots, live or deleted.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// True when the segment has no slot.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Number of live points.
    pub fn live_count(&self) -> usize {
        self.len() - self.deleted.count_ones()
    }

    /// Id of the point in slot `off`.
    pub fn id_at(&self, off: usize) -> PointId {
        self.ids[off]
    }

    /// Version of the point in slot `off`.
    pub fn version_at(&self, off: usize) -> u64 {
        self.versions[off]
    }

    /// True when slot `off` is deleted.
    pub fn is_deleted(&self, off: usize) -> bool {
        self.deleted.get(off)
    }

    /// Iterates `(offset, id)` of live slots.
    pub fn live_ids(&self) -> impl Iterator<Item = (usize, PointId)> + '_ {
        self.ids
            .iter()
            .enumerate()
            .filter(|(o, _)| !self.deleted.get(*o))
            .map(|(o, id)| (o, *id))
    }

    /// Marks slot `off` deleted.
    pub fn delete(&mut self, off: usize) {
        if !self.deleted.get(off) {
            self.deleted.set(off, true);
            self.deleted_dirty = true;
        }
    }

    /// The deletion bitset (for persisting).
    pub fn deleted(&self) -> &BitSet {
        &self.deleted
    }

    /// Appends a point; only valid on the appendable segment. Returns its offset.
    pub fn push(&mut self, id: PointId, version: u64, vectors: &BTreeMap<String, VectorData>, payload: Payload) -> u32 {
        debug_assert!(self.is_appendable());
        let off = self.ids.len() as u32;
        for (name, store) in self.dense.iter_mut() {
            let Floats::Owned(data) = &mut store.data else {
                unreachable!("appendable stores are owned")
            };
            match vectors.get(name) {
                Some(VectorData::Dense(v)) => {
                    data.extend_from_slice(v);
                    store.present.push(true);
                }
                _ => {
                    data.resize(data.len() + store.dim, 0.0);
                    store.present.push(false);
                }
            }
        }
        for (name, store) in self.sparse.iter_mut() {
            store.push(match vectors.get(name) {
                Some(VectorData::Sparse(s)) => Some(s),
                _ => None,
            });
        }
        for (key, index) in self.indexes.iter_mut() {
            index.add(off, key, &payload);
        }
        let Payloads::Owned(p) = &mut self.payloads else {
            unreachable!("appendable payloads are owned")
        };
        p.push(payload);
        self.ids.push(id);
        self.versions.push(version);
        self.deleted.push(false);
        off
    }

    /// The payload of slot `off`.
    pub fn payload(&self, off: usize) -> Result<Cow<'_, Payload>> {
        match &self.payloads {
            Payloads::Owned(p) => Ok(Cow::Borrowed(&p[off])),
            Payloads::Mapped { starts, data } => {
                let s: &[u64] = bytemuck::cast_slice(&starts[..]);
                let (a, b) = (s[off] as usize, s[off + 1] as usize);
                let bytes = data.as_ref().map_or(&[][..], |d| &d[a..b]);
                serde_json::from_slice(bytes)
                    .map(Cow::Owned)
                    .map_err(|e| EngineError::Corrupted(format!("payload of slot {off} in segment {}: {e}", self.id)))
            }
        }
    }

    /// The dense vector `name` of slot `off`, if the point has it.
    pub fn dense_vector(&self, name: &str, off: usize) -> Option<&[f32]> {
        self.dense.get(name)?.get(off)
    }

    /// True when slot `off` has vector `name` (dense or sparse).
    pub fn has_vector(&self, name: &str, off: usize) -> bool {
        self.dense.get(name).is_some_and(|s| s.present.get(off))
            || self.sparse.get(name).is_some_and(|s| s.present.get(off))
    }

    /// Every vector of slot `off`.
    pub fn vectors(&self, off: usize) -> BTreeMap<String, VectorData> {
        let mut out = BTreeMap::new();
        for (name, store) in &self.dense {
            if let Some(v) = store.get(off) {
                out.insert(name.clone(), VectorData::Dense(v.to_vec()));
            }
        }
        for (name, store) in &self.sparse {
            if let Some(v) = store.get(off) {
                out.insert(name.clone(), VectorData::Sparse(v));
            }
        }
        out
    }

    /// The vectors of slot `off` that `wants` selects, shaped as Qdrant returns them.
    pub fn vector_output(&self, off: usize, wants: &dyn Fn(&str) -> bool, single: bool) -> VectorOutput {
        let mut all = self.vectors(off);
        all.retain(|k, _| wants(k));
        if single && let Some(VectorData::Dense(v)) = all.remove(crate::types::DEFAULT_VECTOR) {
            return VectorOutput::Single(v);
        }
        VectorOutput::Named(all)
    }

    /// Live slots that have vector `vector` (when given) and satisfy `filter` (when given).
    /// Payload indexes narrow the candidates first; payloads are read only when they cannot
    /// answer the filter exactly.
    pub fn mask(&self, vector: Option<&str>, filter: Option<&Filter>) -> Result<BitSet> {
        let n = self.len();
        let mut mask = BitSet::full(n);
        mask.and_not_with(&self.deleted);
        if let Some(name) = vector {
            match (self.dense.get(name), self.sparse.get(name)) {
                (Some(d), _) => mask.and_with(&d.present),
                (_, Some(s)) => mask.and_with(&s.present),
                _ => return Ok(BitSet::new(n)),
            }
        }
        let Some(filter) = filter.filter(|f| !f.is_empty()) else {
            return Ok(mask);
        };
        let mut exact = filter.should.is_empty() && filter.must_not.is_empty() && filter.min_should.is_none();
        for cond in &filter.must {
            let answered = match cond {
                Condition::Field(fc) => self.indexes.get(&fc.key).and_then(|idx| idx.candidates(fc, n)),
                Condition::HasId(ids) => {
                    // Ids are in memory: answer exactly without reading any payload.
                    let wanted: std::collections::HashSet<&PointId> = ids.iter().collect();
                    let mut offsets = BitSet::new(n);
                    self.ids
                        .iter()
                        .enumerate()
                        .filter(|(_, id)| wanted.contains(id))
                        .for_each(|(o, _)| offsets.set(o, true));
                    Some(crate::payload_index::Candidates { offsets, exact: true })
                }
                _ => None,
            };
            match answered {
                Some(c) => {
                    mask.and_with(&c.offsets);
                    exact &= c.exact;
                }
                None => exact = false,
            }
        }
        if !exact {
            let mut rejected = Vec::new();
            for off in mask.iter_ones() {
                let payload = self.payload(off)?;
                let hv = |name: &str| self.has_vector(name, off);
                if !filter.matches(&PointView {
                    id: self.ids[off],
                    payload: &payload,
                    has_vector: &hv,
                }) {
                    rejected.push(off);
                }
            }
            rejected.into_iter().for_each(|o| mask.set(o, false));
        }
        Ok(mask)
    }

    /// Exact scan of dense vector `name` for several queries at once. The scan is blocked:
    /// each block of rows is scored against every query while it is in cache, so a batch costs
    /// one pass over memory instead of one per query.
    pub fn scan_dense(&self, seg_idx: u32, name: &str, queries: &mut [DenseQuery<'_>], k: &Kernels) {
        const BLOCK: usize = 128;
        let Some(store) = self.dense.get(name) else {
            return;
        };
        let data = store.data.as_slice();
        let dim = store.dim;
        let n = self.len().min(data.len() / dim.max(1));
        let mut start = 0;
        while start < n {
            let end = (start + BLOCK).min(n);
            for q in queries.iter_mut() {
                for off in start..end {
                    if !q.mask.get(off) {
                        continue;
                    }
                    let s = store.distance.raw_score(k, q.vector, &data[off * dim..(off + 1) * dim]);
                    if s >= q.threshold && s > q.top.floor() {
                        q.top.push(Hit {
                            score: s,
                            seg: seg_idx,
                            off: off as u32,
                        });
                    }
                }
            }
            start = end;
        }
    }

    /// Sparse dot-product search through the inverted index; only points sharing at least one
    /// index with the query are candidates.
    pub fn scan_sparse(
        &self,
        seg_idx: u32,
        name: &str,
        query: &SparseVector,
        mask: &BitSet,
        threshold: f32,
        top: &mut TopK,
    ) {
        let Some(store) = self.sparse.get(name) else {
            return;
        };
        let mut acc: HashMap<u32, f32> = HashMap::new();
        for (i, qv) in query.indices.iter().zip(&query.values) {
            if let Some(list) = store.postings.get(i) {
                for (off, v) in list {
                    *acc.entry(*off).or_insert(0.0) += qv * v;
                }
            }
        }
        for (off, s) in acc {
            if mask.get(off as usize) && s >= threshold {
                top.push(Hit {
                    score: s,
                    seg: seg_idx,
                    off,
                });
            }
        }
    }

    /// Builds the index for `key` if it is missing or of another type (persisting it when sealed).
    pub fn ensure_index(&mut self, key: &str, kind: PayloadSchemaType) -> Result<()> {
        if self
            .indexes
            .get(key)
            .is_some_and(|i| std::mem::discriminant(i) == std::mem::discriminant(&FieldIndex::new(kind)))
        {
            return Ok(());
        }
        let mut index = FieldIndex::new(kind);
        for off in 0..self.len() {
            index.add(off as u32, key, &*self.payload(off)?);
        }
        if let Some(dir) = &self.dir {
            let file = IndexFile {
                key: key.to_string(),
                kind,
                index,
            };
            fsutil::atomic_write(
                &dir.join(index_file_name(key)),
                &serde_json::to_vec(&file).map_err(std::io::Error::other)?,
            )?;
            index = file.index;
        }
        self.indexes.insert(key.to_string(), index);
        Ok(())
    }

    /// Drops the index for `key` (and its file).
    pub fn drop_index(&mut self, key: &str) -> Result<()> {
        self.indexes.remove(key);
        if let Some(dir) = &self.dir {
            fsutil::remove_any(&dir.join(index_file_name(key)))?;
        }
        Ok(())
    }

    /// Writes the live slots of this segment as a sealed segment into `dir` (which must not
    /// exist), fsyncing every file. The caller renames `dir` into place.
    pub fn write_sealed(&self, id: u64, dir: &Path) -> Result<SegmentManifest> {
        fs::create_dir_all(dir)?;
        let live: Vec<usize> = (0..self.len()).filter(|o| !self.deleted.get(*o)).collect();
        let mut files = Vec::new();
        let mut put = |name: String, bytes: &[u8]| -> Result<String> {
            fsutil::write_synced(&dir.join(&name), bytes)?;
            files.push(FileEntry {
                name: name.clone(),
                size: bytes.len() as u64,
                crc32: crc32fast::hash(bytes),
            });
            Ok(name)
        };
        let ids: Vec<u8> = live.iter().flat_map(|&o| self.ids[o].to_bytes()).collect();
        put("ids.bin".into(), &ids)?;
        let versions: Vec<u8> = live.iter().flat_map(|&o| self.versions[o].to_le_bytes()).collect();
        put("versions.bin".into(), &versions)?;
        let mut dense = Vec::new();
        for (i, (name, store)) in self.dense.iter().enumerate() {
            let mut data: Vec<u8> = Vec::with_capacity(live.len() * store.dim * 4);
            let mut present = BitSet::new(live.len());
            let zeros = vec![0f32; store.dim];
            for (new, &o) in live.iter().enumerate() {
                let v = store.get(o);
                present.set(new, v.is_some());
                data.extend_from_slice(bytemuck::cast_slice(v.unwrap_or(&zeros)));
            }
            let file = put(format!("dense-{i}.f32"), &data)?;
            let present = put(format!("dense-{i}.present"), &present.to_bytes())?;
            dense.push(DenseLayout {
                name: name.clone(),
                dim: store.dim,
                distance: store.distance,
                file,
                present,
            });
        }
        let mut sparse = Vec::new();
        for (i, (name, store)) in self.sparse.iter().enumerate() {
            let mut out = SparseStore::default();
            for &o in &live {
                out.push(store.get(o).as_ref());
            }
            let mut bytes = Vec::new();
            bytes.extend_from_slice(&(live.len() as u64).to_le_bytes());
            bytes.extend_from_slice(&(out.indices.len() as u64).to_le_bytes());
            bytes.extend_from_slice(bytemuck::cast_slice(&out.starts));
            bytes.extend_from_slice(bytemuck::cast_slice(&out.indices));
            bytes.extend_from_slice(bytemuck::cast_slice(&out.values));
            bytes.extend_from_slice(&out.present.to_bytes());
            sparse.push(SparseLayout {
                name: name.clone(),
                file: put(format!("sparse-{i}.bin"), &bytes)?,
            });
        }
        let mut starts: Vec<u64> = vec![0];
        let mut data = Vec::new();
        for &o in &live {
            serde_json::to_writer(&mut data, &*self.payload(o)?).map_err(std::io::Error::other)?;
            starts.push(data.len() as u64);
        }
        put("payload.starts".into(), bytemuck::cast_slice(&starts))?;
        put("payload.json".into(), &data)?;
        let manifest = SegmentManifest {
            format_version: SEGMENT_FORMAT_VERSION,
            id,
            points: live.len(),
            dense,
            sparse,
            files,
            hnsw: Vec::new(),
        };
        fsutil::write_synced(
            &dir.join(MANIFEST),
            &serde_json::to_vec_pretty(&manifest).map_err(std::io::Error::other)?,
        )?;
        fsutil::fsync_dir(dir)?;
        Ok(manifest)
    }

    /// Opens a sealed segment directory. `deleted` is the content of its current deletion file.
    pub fn open_sealed(dir: &Path, config: &CollectionConfig, deleted: Option<BitSet>) -> Result<Segment> {
        let bad = |what: String| EngineError::Corrupted(format!("segment {}: {what}", dir.display()));
        let manifest: SegmentManifest =
            serde_json::from_slice(&fs::read(dir.join(MANIFEST))?).map_err(|e| bad(format!("manifest: {e}")))?;
        if manifest.format_version != SEGMENT_FORMAT_VERSION {
            return Err(bad(format!(
                "format version {} is not supported",
                manifest.format_version
            )));
        }
        for f in &manifest.files {
            let size = fs::metadata(dir.join(&f.name))
                .map_err(|e| bad(format!("{}: {e}", f.name)))?
                .len();
            if size != f.size {
                return Err(bad(format!("{} has {size} bytes, manifest says {}", f.name, f.size)));
            }
        }
        let n = manifest.points;
        let ids_raw = fs::read(dir.join("ids.bin"))?;
        if ids_raw.len() != n * 17 {
            return Err(bad("ids.bin size".into()));
        }
        let ids = ids_raw
            .chunks_exact(17)
            .map(|c| PointId::from_bytes(c.try_into().unwrap()))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| bad("invalid point id".into()))?;
        let versions: Vec<u64> = fs::read(dir.join("versions.bin"))?
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
            .collect();
        if versions.len() != n {
            return Err(bad("versions.bin size".into()));
        }
        let mut dense = BTreeMap::new();
        for l in &manifest.dense {
            if config.vectors.0.get(&l.name).is_some_and(|p| p.size != l.dim) {
                return Err(bad(format!(
                    "vector `{}` has {} dims, the collection {}",
                    l.name, l.dim, config.vectors.0[&l.name].size
                )));
            }
            let data = match map_file(&dir.join(&l.file))? {
                Some(m) if m.len() == n * l.dim * 4 => Floats::Mapped(m),
                None if n == 0 => Floats::Owned(Vec::new()),
                _ => return Err(bad(format!("{} size", l.file))),
            };
            let present = BitSet::from_bytes(&fs::read(dir.join(&l.present))?)
                .filter(|b| b.len() == n)
                .ok_or_else(|| bad(l.present.to_string()))?;
            dense.insert(
                l.name.clone(),
                DenseStore {
                    dim: l.dim,
                    distance: l.distance,
                    data,
                    present,
                },
            );
        }
        for (name, p) in &config.vectors.0 {
            dense.entry(name.clone()).or_insert_with(|| DenseStore {
                dim: p.size,
                distance: p.distance,
                data: Floats::Owned(vec![]),
                present: BitSet::new(n),
            });
        }
        let mut sparse = BTreeMap::new();
        for l in &manifest.sparse {
            sparse.insert(
                l.name.clone(),
                read_sparse(&dir.join(&l.file), n).ok_or_else(|| bad(format!("{} is malformed", l.file)))?,
            );
        }
        for name in config.sparse_vectors.keys() {
            sparse.entry(name.clone()).or_insert_with(|| SparseStore {
                starts: vec![0; n + 1],
                present: BitSet::new(n),
                ..Default::default()
            });
        }
        let starts = map_file(&dir.join("payload.starts"))?.ok_or_else(|| bad("payload.starts is empty".into()))?;
        let data = map_file(&dir.join("payload.json"))?;
        {
            let s: &[u64] = bytemuck::try_cast_slice(&starts[..]).map_err(|_| bad("payload.starts size".into()))?;
            let data_len = data.as_ref().map_or(0, |d| d.len()) as u64;
            if s.len() != n + 1 || s.windows(2).any(|w| w[0] > w[1]) || s[n] != data_len {
                return Err(bad("payload.starts does not match payload.json".into()));
            }
        }
        let deleted = match deleted {
            Some(d) if d.len() == n => d,
            Some(_) => return Err(bad("deletion bitset size".into())),
            None => BitSet::new(n),
        };
        let mut seg = Segment {
            id: manifest.id,
            dir: Some(dir.to_path_buf()),
            ids,
            versions,
            dense,
            sparse,
            payloads: Payloads::Mapped { starts, data },
            deleted,
            deleted_dirty: false,
            indexes: BTreeMap::new(),
            graphs: BTreeMap::new(),
        };
        for h in &manifest.hnsw {
            // Graphs are derived data: one that cannot be read is rebuilt, not fatal.
            match Graph::open(&dir.join(&h.file), n) {
                Ok(g) => {
                    seg.graphs.insert(h.name.clone(), (Arc::new(g), (h.m, h.ef_construct)));
                }
                Err(e) => tracing::warn!(error = %e, "HNSW graph unusable; it will be rebuilt"),
            }
        }
        // Graph files the manifest no longer names (replaced by a rebuild with other
        // parameters, or left by a crash mid-build) are removed; nothing has them pinned yet.
        if let Ok(entries) = fs::read_dir(dir) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let graph_file = name.starts_with("hnsw-") || (name.starts_with(".hnsw-") && name.ends_with(".tmp"));
                if graph_file && !manifest.hnsw.iter().any(|h| h.file == name) {
                    let _ = fs::remove_file(e.path());
                }
            }
        }
        for (key, schema) in &config.payload_schema {
            let kind = schema.kind();
            let loaded = fs::read(dir.join(index_file_name(key)))
                .ok()
                .and_then(|b| serde_json::from_slice::<IndexFile>(&b).ok())
                .filter(|f| f.key == *key && f.kind == kind);
            match loaded {
                Some(f) => {
                    seg.indexes.insert(key.clone(), f.index);
                }
                // Missing or stale (crash while building, type changed): indexes are derived
                // data, so rebuild rather than fail.
                None => seg.ensure_index(key, kind)?,
            }
        }
        Ok(seg)
    }

    /// Directory of a sealed segment (`None` for the appendable one).
    pub fn directory(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// The HNSW graph of dense vector `name`, once built.
    pub fn graph(&self, name: &str) -> Option<&Arc<Graph>> {
        self.graphs.get(name).map(|(g, _)| g)
    }

    /// (`m`, `ef_construct`) the graph of `name` was built with.
    pub fn graph_params(&self, name: &str) -> Option<(usize, usize)> {
        self.graphs.get(name).map(|(_, p)| *p)
    }

    /// Attaches a graph built for dense vector `name` with (`m`, `ef_construct`) `params`.
    pub fn attach_graph(&mut self, name: &str, graph: Arc<Graph>, params: (usize, usize)) {
        if graph.len() == self.len() {
            self.graphs.insert(name.to_string(), (graph, params));
        }
    }

    /// Points that have dense vector `name`.
    pub fn dense_count(&self, name: &str) -> usize {
        self.dense.get(name).map_or(0, |d| d.present.count_ones())
    }

    /// Dimension of dense vector `name`.
    pub fn dense_dim(&self, name: &str) -> Option<usize> {
        self.dense.get(name).map(|d| d.dim)
    }

    /// The dense vectors `name` as the HNSW code reads them.
    pub fn vectors_view(&self, name: &str) -> Option<Vectors<'_>> {
        let d = self.dense.get(name)?;
        Some(Vectors {
            data: d.data.as_slice(),
            dim: d.dim,
            distance: d.distance,
            kernels: crate::kernels::active(),
        })
    }
}

fn read_sparse(path: &Path, n: usize) -> Option<SparseStore> {
    let b = fs::read(path).ok()?;
    let rd = |at: usize| -> Option<u64> { Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?)) };
    if rd(0)? as usize != n {
        return None;
    }
    let nnz = rd(8)? as usize;
    let mut pos: usize = 16;
    let mut take = |bytes: usize| -> Option<&[u8]> {
        let s = b.get(pos..pos.checked_add(bytes)?)?;
        pos += bytes;
        Some(s)
    };
    let starts: Vec<u64> = take((n + 1) * 8)?
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let indices: Vec<u32> = take(nnz * 4)?
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let values: Vec<f32> = take(nnz * 4)?
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let present = BitSet::from_bytes(b.get(pos..)?)?;
    if present.len() != n || starts.windows(2).any(|w| w[0] > w[1]) || starts.last().copied() != Some(nnz as u64) {
        return None;
    }
    let mut postings: HashMap<u32, Vec<(u32, f32)>> = HashMap::new();
    for off in 0..n {
        for j in starts[off] as usize..starts[off + 1] as usize {
            postings.entry(indices[j]).or_default().push((off as u32, values[j]));
        }
    }
    Some(SparseStore {
        starts,
        indices,
        values,
        present,
        postings,
    })
}

/// One query of a blocked dense scan.
pub struct DenseQuery<'a> {
    /// Query vector (preprocessed).
    pub vector: &'a [f32],
    /// Slots allowed for this query.
    pub mask: BitSet,
    /// Internal score threshold.
    pub threshold: f32,
    /// Where hits go.
    pub top: &'a mut TopK,
}
