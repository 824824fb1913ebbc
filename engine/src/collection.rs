//! A collection: its configuration and its shards, spread over the workers. Requests are
//! validated here, on the caller's thread, so shards only ever see well-formed operations;
//! point operations are routed to shards by id hash, searches fan out to all shards and their
//! top-k lists are merged.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use serde::Serialize;

use crate::error::{EngineError, Result};
use crate::filter::Filter;
use crate::fsutil;
use crate::runtime::{Runtime, ShardKey, Worker};
use crate::search::{PointsSelector, QueryVector, RankedHit, ScrollPage, ScrollRequest, SearchRequest};
use crate::shard::Shard;
use crate::types::{
    CollectionConfig, Payload, PayloadFieldSchema, PointId, PointStruct, Record, ScoredPoint, VectorData, WithPayload,
    WithVector,
};
use crate::wal::{PointWrite, WalOp};

/// File holding a collection's configuration.
pub const CONFIG_FILE: &str = "config.json";

/// What collection info reports.
#[derive(Debug, Clone, Serialize)]
pub struct CollectionInfo {
    /// `green`, or `yellow` while HNSW graphs are being built.
    pub status: &'static str,
    /// Live points.
    pub points_count: usize,
    /// Segments over all shards (appendable ones included).
    pub segments_count: usize,
    /// Vectors covered by HNSW graphs.
    pub indexed_vectors_count: usize,
    /// The configuration.
    pub config: CollectionConfig,
}

/// One collection (see the module docs).
pub struct Collection {
    name: String,
    uid: u64,
    dir: PathBuf,
    config: RwLock<Arc<CollectionConfig>>,
    rt: Arc<Runtime>,
    /// Held shared while a write's jobs are handed to the workers and exclusively while a
    /// snapshot's pin jobs are: every worker runs its queue in order, so each multi-shard write
    /// lands entirely before or entirely after the snapshot's point in time.
    dispatch: RwLock<()>,
}

/// Every shard of a collection, pinned at one point in time (see [`Shard::pin`]).
pub struct CollectionPin {
    /// The configuration at that moment, as `config.json` holds it.
    pub config: CollectionConfig,
    /// Pinned files per shard id.
    pub shards: Vec<(u32, Vec<crate::shard::PinnedFile>)>,
}

/// Where a shard directory waits while its replacement is moved in.
fn replaced_shard_dir(collection_dir: &Path, shard: u32) -> PathBuf {
    collection_dir.join(format!(".{shard}.replaced"))
}

fn recv_err(_: oneshot::RecvError) -> EngineError {
    EngineError::ShuttingDown
}

impl Collection {
    /// Opens every shard of a collection whose directory and config exist. Blocks.
    pub(crate) fn open(
        name: &str,
        uid: u64,
        dir: &Path,
        config: CollectionConfig,
        rt: Arc<Runtime>,
    ) -> Result<Collection> {
        let c = Collection {
            name: name.to_string(),
            uid,
            dir: dir.to_path_buf(),
            config: RwLock::new(Arc::new(config)),
            rt,
            dispatch: RwLock::new(()),
        };
        let cfg = c.config();
        for shard in 0..cfg.shard_number {
            // A shard replacement interrupted between its two renames: put the old shard back.
            let grave = replaced_shard_dir(dir, shard);
            if grave.exists() {
                if dir.join(shard.to_string()).exists() {
                    fsutil::remove_any(&grave)?;
                } else {
                    tracing::warn!(collection = name, shard, "restoring a shard of an interrupted recovery");
                    fs::rename(&grave, dir.join(shard.to_string()))?;
                    fsutil::fsync_dir(dir)?;
                }
            }
        }
        let mut pending = Vec::new();
        for shard in 0..cfg.shard_number {
            let (key, sdir, cfg) = (c.key(shard), dir.join(shard.to_string()), cfg.clone());
            pending.push(c.rt.call(c.worker_of(shard), move |w| -> Result<()> {
                w.insert(key, Shard::open(&sdir, cfg)?);
                Ok(())
            })?);
        }
        let mut first_err = None;
        for p in pending {
            if let Err(e) = p.recv().map_err(recv_err).and_then(|r| r) {
                first_err.get_or_insert(e);
            }
        }
        match first_err {
            None => Ok(c),
            Some(e) => {
                c.close_blocking();
                Err(e)
            }
        }
    }

    /// Closes every shard of this collection (their WALs are synced first).
    pub(crate) fn close_blocking(&self) {
        let cfg = self.config();
        let mut pending = Vec::new();
        for shard in 0..cfg.shard_number {
            let key = self.key(shard);
            if let Ok(rx) = self.rt.call(self.worker_of(shard), move |w| {
                if let Some(mut s) = w.remove(key) {
                    let _ = s.sync();
                }
            }) {
                pending.push(rx);
            }
        }
        pending.into_iter().for_each(|p| {
            let _ = p.recv();
        });
    }

    /// The collection's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The collection's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A snapshot of the current configuration.
    pub fn config(&self) -> Arc<CollectionConfig> {
        self.config.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn key(&self, shard: u32) -> ShardKey {
        (self.uid, shard)
    }

    fn worker_of(&self, shard: u32) -> usize {
        (self.uid as usize).wrapping_add(shard as usize) % self.rt.workers()
    }

    fn shard_of(&self, id: &PointId, shards: u32) -> u32 {
        (id.route_hash() % shards as u64) as u32
    }

    /// Runs `f` on every shard concurrently and collects the results in shard order.
    async fn on_all_shards<T: Send + 'static>(
        &self,
        f: impl Fn(&mut Shard) -> Result<T> + Send + Sync + Clone + 'static,
    ) -> Result<Vec<T>> {
        let shards = self.config().shard_number;
        let mut pending = Vec::with_capacity(shards as usize);
        for s in 0..shards {
            let (key, f) = (self.key(s), f.clone());
            pending.push(self.rt.call(self.worker_of(s), move |w| w.shard(key).and_then(&f))?);
        }
        let mut out = Vec::with_capacity(pending.len());
        for p in pending {
            out.push(p.await.map_err(recv_err)??);
        }
        Ok(out)
    }

    /// Sends a write to one shard; with `wait`, replies only once the WAL is fsync'd.
    fn write_shard(
        &self,
        shard: u32,
        wait: bool,
        op: impl FnOnce(&mut Shard) -> Result<Option<WalOp>> + Send + 'static,
    ) -> Result<oneshot::Receiver<Result<()>>> {
        let key = self.key(shard);
        let (tx, rx) = oneshot::channel();
        self.rt.submit(self.worker_of(shard), move |w: &mut Worker| {
            let res = w.shard(key).and_then(|sh| match op(sh)? {
                Some(op) => sh.write(op),
                None => Ok(()),
            });
            match res {
                Ok(()) if wait => w.after_sync(key, move |r| {
                    let _ = tx.send(r);
                }),
                other => {
                    let _ = tx.send(other);
                }
            }
        })?;
        Ok(rx)
    }

    async fn await_all(pending: Vec<oneshot::Receiver<Result<()>>>) -> Result<()> {
        let mut first = Ok(());
        for p in pending {
            let r = p.await.map_err(recv_err).and_then(|r| r);
            if first.is_ok() {
                first = r;
            }
        }
        first
    }

    fn group_by_shard<T>(&self, items: Vec<T>, id: impl Fn(&T) -> PointId) -> BTreeMap<u32, Vec<T>> {
        let shards = self.config().shard_number;
        let mut out: BTreeMap<u32, Vec<T>> = BTreeMap::new();
        for item in items {
            out.entry(self.shard_of(&id(&item), shards)).or_default().push(item);
        }
        out
    }

    /// Validates and normalises a point against the configuration.
    fn prepare_point(cfg: &CollectionConfig, p: PointStruct) -> Result<PointWrite> {
        let mut vectors = p.vector.into_named();
        for (name, data) in vectors.iter_mut() {
            match data {
                VectorData::Dense(v) => {
                    let params = cfg
                        .vectors
                        .0
                        .get(name)
                        .ok_or_else(|| EngineError::UnknownVector(name.clone()))?;
                    if v.len() != params.size {
                        return Err(EngineError::WrongVectorDim {
                            expected: params.size,
                            got: v.len(),
                        });
                    }
                    if v.iter().any(|x| !x.is_finite()) {
                        return Err(EngineError::bad(format!(
                            "vector of point {} contains NaN or infinite values",
                            p.id
                        )));
                    }
                    params.distance.preprocess(v);
                }
                VectorData::Sparse(s) => {
                    if !cfg.sparse_vectors.contains_key(name) {
                        return Err(EngineError::UnknownVector(name.clone()));
                    }
                    s.validate_and_sort()?;
                }
            }
        }
        Ok(PointWrite {
            id: p.id,
            vectors,
            payload: p.payload.unwrap_or_default(),
        })
    }

    /// Inserts or replaces points. Every point is validated before anything is written.
    pub async fn upsert(&self, points: Vec<PointStruct>, wait: bool) -> Result<()> {
        let cfg = self.config();
        let prepared = points
            .into_iter()
            .map(|p| Self::prepare_point(&cfg, p))
            .collect::<Result<Vec<_>>>()?;
        let mut pending = Vec::new();
        {
            let _barrier = self.dispatch.read().unwrap_or_else(|p| p.into_inner());
            for (shard, batch) in self.group_by_shard(prepared, |p| p.id) {
                pending.push(self.write_shard(shard, wait, move |_| Ok(Some(WalOp::Upsert(batch))))?);
            }
        }
        Self::await_all(pending).await
    }

    /// Applies an id-based operation: to the shards owning the ids, or, for a filter, to every
    /// shard after resolving the filter there (in the same job, so nothing slips in between).
    async fn update(
        &self,
        selector: PointsSelector,
        wait: bool,
        make: impl Fn(Vec<PointId>) -> WalOp + Send + Sync + Clone + 'static,
    ) -> Result<()> {
        let mut pending = Vec::new();
        let barrier = self.dispatch.read().unwrap_or_else(|p| p.into_inner());
        match selector {
            PointsSelector::Ids(ids) => {
                for (shard, ids) in self.group_by_shard(ids, |id| *id) {
                    let make = make.clone();
                    pending.push(self.write_shard(shard, wait, move |_| Ok(Some(make(ids))))?);
                }
            }
            PointsSelector::Filter(filter) => {
                let filter = Arc::new(filter);
                for shard in 0..self.config().shard_number {
                    let (make, filter) = (make.clone(), filter.clone());
                    pending.push(self.write_shard(shard, wait, move |sh| {
                        let ids = sh.resolve(&filter)?;
                        Ok((!ids.is_empty()).then(|| make(ids)))
                    })?);
                }
            }
        }
        drop(barrier);
        Self::await_all(pending).await
    }

    /// Fails with `PointNotFound` unless every id exists, so that a payload update addressed to
    /// several shards changes nothing when one id is missing.
    async fn require_ids(&self, selector: &PointsSelector) -> Result<()> {
        if let PointsSelector::Ids(ids) = selector {
            let found = self
                .retrieve(ids.clone(), WithPayload::Bool(false), WithVector::Bool(false))
                .await?;
            if let Some(missing) = ids.iter().find(|id| !found.iter().any(|r| r.id == **id)) {
                return Err(EngineError::PointNotFound(*missing));
            }
        }
        Ok(())
    }

    /// Deletes points by id or filter (missing ids are ignored, as in Qdrant).
    pub async fn delete(&self, selector: PointsSelector, wait: bool) -> Result<()> {
        self.update(selector, wait, WalOp::Delete).await
    }

    /// Merges keys into payloads (under the nested path `key` when given).
    pub async fn set_payload(
        &self,
        selector: PointsSelector,
        payload: Payload,
        key: Option<String>,
        wait: bool,
    ) -> Result<()> {
        self.require_ids(&selector).await?;
        self.update(selector, wait, move |ids| WalOp::SetPayload {
            ids,
            payload: payload.clone(),
            key: key.clone(),
        })
        .await
    }

    /// Replaces payloads.
    pub async fn overwrite_payload(&self, selector: PointsSelector, payload: Payload, wait: bool) -> Result<()> {
        self.require_ids(&selector).await?;
        self.update(selector, wait, move |ids| WalOp::OverwritePayload {
            ids,
            payload: payload.clone(),
        })
        .await
    }

    /// Removes payload keys.
    pub async fn delete_payload(&self, selector: PointsSelector, keys: Vec<String>, wait: bool) -> Result<()> {
        self.require_ids(&selector).await?;
        self.update(selector, wait, move |ids| WalOp::DeletePayloadKeys {
            ids,
            keys: keys.clone(),
        })
        .await
    }

    /// Removes whole payloads.
    pub async fn clear_payload(&self, selector: PointsSelector, wait: bool) -> Result<()> {
        self.require_ids(&selector).await?;
        self.update(selector, wait, WalOp::ClearPayload).await
    }

    /// Points by id, in request order, without duplicates; missing ids are skipped.
    pub async fn retrieve(
        &self,
        ids: Vec<PointId>,
        with_payload: WithPayload,
        with_vector: WithVector,
    ) -> Result<Vec<Record>> {
        let mut unique = ids.clone();
        unique.sort_unstable();
        unique.dedup();
        let (wp, wv) = (Arc::new(with_payload), Arc::new(with_vector));
        let mut pending = Vec::new();
        for (shard, ids) in self.group_by_shard(unique, |id| *id) {
            let (key, wp, wv) = (self.key(shard), wp.clone(), wv.clone());
            pending.push(self.rt.call(self.worker_of(shard), move |w| {
                w.shard(key).and_then(|s| s.retrieve(&ids, &wp, &wv))
            })?);
        }
        let mut found: HashMap<PointId, Record> = HashMap::new();
        for p in pending {
            for r in p.await.map_err(recv_err)?? {
                found.insert(r.id, r);
            }
        }
        let mut out = Vec::with_capacity(found.len());
        for id in ids {
            if let Some(r) = found.remove(&id) {
                out.push(r);
            }
        }
        Ok(out)
    }

    fn prepare_search(cfg: &CollectionConfig, r: &mut SearchRequest) -> Result<()> {
        match &mut r.query {
            QueryVector::Dense(v) => {
                let params = cfg
                    .vectors
                    .0
                    .get(&r.using)
                    .ok_or_else(|| EngineError::UnknownVector(r.using.clone()))?;
                if v.len() != params.size {
                    return Err(EngineError::WrongVectorDim {
                        expected: params.size,
                        got: v.len(),
                    });
                }
                if v.iter().any(|x| !x.is_finite()) {
                    return Err(EngineError::bad("query vector contains NaN or infinite values"));
                }
                params.distance.preprocess(v);
            }
            QueryVector::Sparse(s) => {
                if !cfg.sparse_vectors.contains_key(&r.using) {
                    return Err(EngineError::UnknownVector(r.using.clone()));
                }
                s.validate_and_sort()?;
            }
        }
        if r.score_threshold.is_some_and(|t| t.is_nan()) {
            return Err(EngineError::bad("score_threshold is NaN"));
        }
        Ok(())
    }

    /// Exact search for several requests; every shard scans once for the whole batch.
    pub async fn search_batch(&self, mut reqs: Vec<SearchRequest>) -> Result<Vec<Vec<ScoredPoint>>> {
        let cfg = self.config();
        for r in reqs.iter_mut() {
            Self::prepare_search(&cfg, r)?;
        }
        let reqs = Arc::new(reqs);
        let shared = reqs.clone();
        let per_shard = self.on_all_shards(move |s| s.search_batch(&shared)).await?;
        let mut merged: Vec<Vec<RankedHit>> = vec![Vec::new(); reqs.len()];
        for shard_answer in per_shard {
            for (i, hits) in shard_answer.into_iter().enumerate() {
                merged[i].extend(hits);
            }
        }
        Ok(merged
            .into_iter()
            .zip(reqs.iter())
            .map(|(mut hits, r)| {
                hits.sort_by(|a, b| b.raw.total_cmp(&a.raw).then_with(|| a.point.id.cmp(&b.point.id)));
                hits.into_iter().skip(r.offset).take(r.limit).map(|h| h.point).collect()
            })
            .collect())
    }

    /// Exact search.
    pub async fn search(&self, req: SearchRequest) -> Result<Vec<ScoredPoint>> {
        Ok(self.search_batch(vec![req]).await?.pop().unwrap_or_default())
    }

    /// A page of points in id order.
    pub async fn scroll(&self, req: ScrollRequest) -> Result<ScrollPage> {
        let limit = req.limit;
        let req = Arc::new(req);
        let mut all: Vec<Record> = self
            .on_all_shards(move |s| s.scroll(&req))
            .await?
            .into_iter()
            .flatten()
            .collect();
        all.sort_by_key(|r| r.id);
        let next_page_offset = all.get(limit).map(|r| r.id);
        all.truncate(limit);
        Ok(ScrollPage {
            points: all,
            next_page_offset,
        })
    }

    /// Exact number of points matching `filter`.
    pub async fn count(&self, filter: Option<Filter>) -> Result<usize> {
        let filter = Arc::new(filter);
        Ok(self
            .on_all_shards(move |s| s.count(filter.as_ref().as_ref()))
            .await?
            .into_iter()
            .sum())
    }

    /// Read-modify-write of the configuration under the write lock, persisted before it is
    /// visible, so concurrent updates cannot lose each other's changes.
    fn modify_config(&self, f: impl FnOnce(&mut CollectionConfig) -> Result<()>) -> Result<Arc<CollectionConfig>> {
        let mut guard = self.config.write().unwrap_or_else(|p| p.into_inner());
        let mut new = (**guard).clone();
        f(&mut new)?;
        fsutil::atomic_write(
            &self.dir.join(CONFIG_FILE),
            &serde_json::to_vec_pretty(&new).map_err(std::io::Error::other)?,
        )?;
        let new = Arc::new(new);
        *guard = new.clone();
        Ok(new)
    }

    /// Creates (or retypes) a payload index and builds it in every segment.
    pub async fn create_index(&self, key: String, schema: PayloadFieldSchema) -> Result<()> {
        if key.is_empty() {
            return Err(EngineError::bad("field_name must not be empty"));
        }
        let kind = schema.kind();
        let field = key.clone();
        let cfg = self.modify_config(move |cfg| {
            cfg.payload_schema.insert(field, schema);
            Ok(())
        })?;
        self.on_all_shards(move |s| s.create_index(&key, kind, cfg.clone()))
            .await?;
        Ok(())
    }

    /// Drops a payload index.
    pub async fn drop_index(&self, key: String) -> Result<()> {
        let cfg = self.modify_config(|cfg| match cfg.payload_schema.remove(&key) {
            Some(_) => Ok(()),
            None => Err(EngineError::bad(format!("no payload index on field `{key}`"))),
        })?;
        self.on_all_shards(move |s| s.drop_index(&key, cfg.clone())).await?;
        Ok(())
    }

    /// Changes settings that need no data migration: `extra` (stored and echoed), the seal
    /// size, and the `extra` maps of vectors. Vector sizes, distances, names, the shard count and
    /// payload indexes cannot change this way.
    pub async fn update_config(&self, f: impl FnOnce(&mut CollectionConfig) -> Result<()>) -> Result<()> {
        let cfg = self.modify_config(|cfg| {
            let old = cfg.clone();
            f(cfg)?;
            let shape = |c: &CollectionConfig| {
                (
                    c.vectors.0.iter().map(|(k, p)| (k.clone(), p.size, p.distance)).collect::<Vec<_>>(),
                    c.sparse_vectors.keys().cloned().collect::<Vec<_>>(),
                    c.shard_number,
                    c.payload_schema.clone(),
                )
            };
            if shape(cfg) != shape(&old) {
                return Err(EngineError::bad("vector sizes, distances, names, shard number and payload indexes cannot be changed by a config update"));
            }
            cfg.validate()
        })?;
        self.on_all_shards(move |s| {
            s.set_config(cfg.clone());
            Ok(())
        })
        .await?;
        Ok(())
    }

    /// Seals every shard's appendable segment and persists deletions (a checkpoint).
    pub async fn flush(&self) -> Result<()> {
        self.on_all_shards(|s| s.seal()).await?;
        Ok(())
    }

    /// Pins every shard at one point in time for a snapshot (see [`Shard::pin`]). Writes whose
    /// jobs were handed out before are included in every shard, later ones in none.
    pub async fn pin(&self) -> Result<CollectionPin> {
        let config = (*self.config()).clone();
        let mut pending = Vec::new();
        {
            let _barrier = self.dispatch.write().unwrap_or_else(|p| p.into_inner());
            for shard in 0..config.shard_number {
                let key = self.key(shard);
                pending.push((
                    shard,
                    self.rt
                        .call(self.worker_of(shard), move |w| w.shard(key).and_then(|s| s.pin()))?,
                ));
            }
        }
        let mut shards = Vec::with_capacity(pending.len());
        for (id, p) in pending {
            shards.push((id, p.await.map_err(recv_err)??));
        }
        Ok(CollectionPin { config, shards })
    }

    /// Pins one shard (see [`Shard::pin`]).
    pub async fn pin_shard(&self, shard: u32) -> Result<Vec<crate::shard::PinnedFile>> {
        if shard >= self.config().shard_number {
            return Err(EngineError::ShardNotFound(shard));
        }
        let key = self.key(shard);
        let rx = {
            let _barrier = self.dispatch.write().unwrap_or_else(|p| p.into_inner());
            self.rt
                .call(self.worker_of(shard), move |w| w.shard(key).and_then(|s| s.pin()))?
        };
        rx.await.map_err(recv_err)?
    }

    /// Replaces shard `shard` with the shard directory `staged`: the staged shard is opened
    /// (checked) first, then, on the shard's worker, the live shard is closed, the directories are
    /// swapped by renames and the new shard is opened. On error the old shard is put back.
    pub async fn replace_shard(&self, shard: u32, staged: PathBuf) -> Result<()> {
        let cfg = self.config();
        if shard >= cfg.shard_number {
            return Err(EngineError::ShardNotFound(shard));
        }
        let key = self.key(shard);
        let dir = self.dir.join(shard.to_string());
        let rx = {
            let _barrier = self.dispatch.write().unwrap_or_else(|p| p.into_inner());
            self.rt.call(self.worker_of(shard), move |w| -> Result<()> {
                drop(Shard::open(&staged, cfg.clone())?);
                let grave = replaced_shard_dir(dir.parent().unwrap_or(Path::new(".")), shard);
                let old = w.remove(key);
                if let Some(mut old) = old {
                    old.sync()?;
                }
                fsutil::remove_any(&grave)?;
                fs::rename(&dir, &grave)?;
                let opened = fs::rename(&staged, &dir)
                    .map_err(EngineError::from)
                    .and_then(|_| Shard::open(&dir, cfg.clone()));
                match opened {
                    Ok(s) => {
                        w.insert(key, s);
                        fsutil::fsync_dir(dir.parent().unwrap_or(Path::new(".")))?;
                        fsutil::remove_any(&grave)?;
                        Ok(())
                    }
                    Err(e) => {
                        if dir.exists() {
                            let _ = fs::rename(&dir, &staged);
                        }
                        fs::rename(&grave, &dir)?;
                        w.insert(key, Shard::open(&dir, cfg)?);
                        Err(e)
                    }
                }
            })?
        };
        rx.await.map_err(recv_err)?
    }

    /// Points, segments, status and configuration.
    pub async fn info(&self) -> Result<CollectionInfo> {
        let stats = self.on_all_shards(|s| Ok(s.stats())).await?;
        Ok(CollectionInfo {
            status: if stats.iter().any(|s| s.indexing) {
                "yellow"
            } else {
                "green"
            },
            points_count: stats.iter().map(|s| s.points).sum(),
            segments_count: stats.iter().map(|s| s.segments).sum(),
            indexed_vectors_count: stats.iter().map(|s| s.indexed_vectors).sum(),
            config: (*self.config()).clone(),
        })
    }
}
