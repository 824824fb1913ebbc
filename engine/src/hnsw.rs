//! HNSW graph over the dense vectors of one sealed segment.
//!
//! ## Layout
//!
//! Node ids are segment offsets. Links are flat `u32` arrays, never `Vec<Vec<_>>`: level 0 holds
//! `m0 + 1` words per node (`[count, n1, .., n_m0]`), so a node's neighbours are one cache-line
//! run at a computable address; the few nodes on upper levels have their blocks (`m + 1` words
//! per level) in a second array, found through `upper_start`. The same arrays are the on-disk
//! format (`hnsw-<i>-m<m>-ef<ef>.bin` in the segment directory), read back through `memmap2`
//! with no parsing or copying (one validation pass over the links at open).
//!
//! ## Build
//!
//! Nodes are inserted in batches. Within a batch, the search for each new node's neighbours runs
//! in parallel against the graph as it was before the batch (read-only, no locks). The new
//! nodes' own lists are then written, and the reverse links are applied in parallel again,
//! grouped by target node so that each list is written by exactly one thread. Batches start at a
//! single node and grow with the graph (an eighth of its size, at most 4096), so a new node
//! misses at most a small fraction of its true neighbours among its batch peers, and those reach
//! it through reverse links anyway. Neighbours are chosen with HNSW's heuristic (a candidate is
//! kept only when it is closer to the new node than to every neighbour already kept).
//!
//! ## Search
//!
//! Greedy descent on the upper levels, then a best-first search on level 0 with `ef`
//! candidates. The walk scores int8 codes of the vectors (one symmetric scale per graph, kept in
//! the graph file): a quarter of the memory traffic of f32 rows, which is what a walk over a
//! graph larger than the caches waits on. The `ef` candidates it ends with are rescored with the
//! full vectors, so the returned scores are exact and the ranking among candidates is too.
//! A node's unvisited neighbours are gathered and all prefetched before any is scored, so their
//! cache misses overlap. A filter restricts what is returned, not what is traversed, so a
//! filtered search still walks the whole graph's connectivity; callers fall back to an exact
//! scan when a filter leaves too few points for that to pay off.

use std::cell::RefCell;
use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::Write;
use std::path::Path;

use memmap2::Mmap;

use crate::bitset::BitSet;
use crate::kernels::Kernels;
use crate::types::Distance;

const MAGIC: u32 = u32::from_le_bytes(*b"QHNW");
const VERSION: u32 = 2;
const HEADER_WORDS: usize = 10;

/// Graph construction parameters (Qdrant's `hnsw_config` names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BuildParams {
    /// Links per node on upper levels; level 0 has `2 * m`.
    pub m: usize,
    /// Candidates considered while linking a new node.
    pub ef_construct: usize,
    /// Threads used to build.
    pub threads: usize,
}

/// The vectors a graph is built over and searched against.
#[derive(Clone, Copy)]
pub struct Vectors<'a> {
    /// Row-major `n × dim` data.
    pub data: &'a [f32],
    /// Dimension.
    pub dim: usize,
    /// Distance (scores are the engine's internal ones: higher is closer).
    pub distance: Distance,
    /// Kernels to score with.
    pub kernels: &'static Kernels,
}

impl Vectors<'_> {
    #[inline]
    fn row(&self, i: u32) -> &[f32] {
        let s = i as usize * self.dim;
        &self.data[s..s + self.dim]
    }

    #[inline(always)]
    fn score(&self, q: &[f32], i: u32) -> f32 {
        self.distance.raw_score(self.kernels, q, self.row(i))
    }

    /// Prefetches a row.
    #[inline]
    fn prefetch(&self, i: u32) {
        let row = self.data.as_ptr().wrapping_add(i as usize * self.dim);
        prefetch_bytes(row as *const u8, self.dim * 4);
    }
}

/// Starts fetching the first `len` bytes at `p` into the cache: up to 8 lines (the hardware
/// prefetcher follows on). A prefetch is a hint: it never faults, whatever the address.
#[inline(always)]
fn prefetch_bytes(p: *const u8, len: usize) {
    #[cfg(target_arch = "x86_64")]
    for l in 0..len.div_ceil(64).min(8) {
        #[allow(unused_unsafe)]
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.wrapping_add(l * 64) as *const i8);
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (p, len);
}

/// Flat `u32` words, owned (while building) or mapped from the index file.
enum Words {
    Owned(Vec<u32>),
    Mapped {
        map: std::sync::Arc<Mmap>,
        start: usize,
        len: usize,
    },
}

impl Words {
    #[inline(always)]
    fn as_slice(&self) -> &[u32] {
        match self {
            Words::Owned(v) => v,
            Words::Mapped { map, start, len } => bytemuck::cast_slice(&map[start * 4..(start + len) * 4]),
        }
    }
}

/// Scored node; ordered by score (then id, for determinism).
#[derive(Clone, Copy, Debug, PartialEq)]
struct Cand {
    score: f32,
    id: u32,
}

impl Eq for Cand {}

impl Ord for Cand {
    fn cmp(&self, o: &Self) -> Ordering {
        self.score.total_cmp(&o.score).then_with(|| o.id.cmp(&self.id))
    }
}

impl PartialOrd for Cand {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}

/// Visited marks with a generation counter, so clearing is O(1) between searches.
struct Visited {
    marks: Vec<u16>,
    generation: u16,
}

impl Visited {
    fn new(n: usize) -> Visited {
        Visited {
            marks: vec![0; n],
            generation: 0,
        }
    }

    fn reset(&mut self, n: usize) {
        if self.marks.len() < n {
            self.marks.resize(n, 0);
        }
        self.generation = self.generation.wrapping_add(1);
        if self.generation == 0 {
            self.marks.iter_mut().for_each(|m| *m = 0);
            self.generation = 1;
        }
    }

    /// Marks `i`; true when it was not marked yet.
    #[inline]
    fn insert(&mut self, i: u32) -> bool {
        let m = &mut self.marks[i as usize];
        if *m == self.generation {
            false
        } else {
            *m = self.generation;
            true
        }
    }
}

thread_local! {
    static VISITED: RefCell<Visited> = RefCell::new(Visited::new(0));
}

/// An HNSW graph.
pub struct Graph {
    n: u32,
    m: u32,
    m0: u32,
    entry: u32,
    max_level: u32,
    levels: Words,
    layer0: Words,
    upper_start: Words,
    upper: Words,
    /// Bytes per code row (the dimension rounded up to 4); 0 when there are no codes.
    code_dim: u32,
    /// Code = round(value × scale).
    scale: f32,
    /// `n × code_dim` int8 codes of the vectors, used to walk the graph.
    codes: Words,
}

/// Largest dimension given int8 codes: their integer sums stay exact in `i32` below it.
const MAX_CODE_DIM: usize = 16_384;

/// The int8 codes of one row (padded with zeros to `code_dim`).
fn quantize_row(row: &[f32], scale: f32, code_dim: usize) -> Vec<i8> {
    let mut out = vec![0i8; code_dim];
    for (o, &x) in out.iter_mut().zip(row) {
        *o = (x * scale).round().clamp(-127.0, 127.0) as i8;
    }
    out
}

impl std::fmt::Debug for Graph {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Graph")
            .field("n", &self.n)
            .field("m", &self.m)
            .field("max_level", &self.max_level)
            .finish()
    }
}

/// A level-0 row to update: the row, its node, and the reverse links it receives.
type RowWork<'r, 'b> = (&'r mut [u32], u32, &'b [Backlink]);

/// Reverse link to apply: `target` gets `source` at `level`.
struct Backlink {
    target: u32,
    level: u32,
    source: u32,
}

impl Graph {
    /// Number of node slots (the segment's size).
    pub fn len(&self) -> usize {
        self.n as usize
    }

    /// True when the graph has no node.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// `m` it was built with.
    pub fn m(&self) -> usize {
        self.m as usize
    }

    #[inline]
    fn level_of(&self, i: u32) -> u32 {
        self.levels.as_slice()[i as usize]
    }

    #[inline]
    fn prefetch_links(&self, i: u32, level: u32) {
        if level == 0 {
            let w = self.m0 as usize + 1;
            let row = self.layer0.as_slice().as_ptr().wrapping_add(i as usize * w);
            prefetch_bytes(row as *const u8, 128);
        }
    }

    #[inline(always)]
    fn links(&self, i: u32, level: u32) -> &[u32] {
        if level == 0 {
            let w = self.m0 as usize + 1;
            let row = &self.layer0.as_slice()[i as usize * w..(i as usize + 1) * w];
            &row[1..1 + row[0] as usize]
        } else {
            let w = self.m as usize + 1;
            let start = self.upper_start.as_slice()[i as usize] as usize + (level as usize - 1) * w;
            let row = &self.upper.as_slice()[start..start + w];
            &row[1..1 + row[0] as usize]
        }
    }

    /// Builds the graph over the nodes `0..n` for which `include` holds.
    pub fn build(vectors: Vectors<'_>, n: usize, include: &dyn Fn(usize) -> bool, params: BuildParams) -> Graph {
        let m = params.m.max(2) as u32;
        let m0 = 2 * m;
        let ml = 1.0 / (m as f64).ln();
        // Deterministic levels: the same data gives the same graph.
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        let mut levels = vec![0u32; n];
        let mut upper_start = vec![u32::MAX; n];
        let mut upper_len = 0usize;
        let nodes: Vec<u32> = (0..n).filter(|&i| include(i)).map(|i| i as u32).collect();
        for &i in &nodes {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let u = ((x >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
            let l = ((-u.ln() * ml) as u32).min(16);
            levels[i as usize] = l;
            if l > 0 {
                upper_start[i as usize] = upper_len as u32;
                upper_len += l as usize * (m as usize + 1);
            }
        }
        let mut g = Graph {
            n: n as u32,
            m,
            m0,
            entry: nodes.first().copied().unwrap_or(0),
            max_level: nodes.first().map_or(0, |&i| levels[i as usize]),
            levels: Words::Owned(levels),
            layer0: Words::Owned(vec![0; n * (m0 as usize + 1)]),
            upper_start: Words::Owned(upper_start),
            upper: Words::Owned(vec![0; upper_len]),
            code_dim: 0,
            scale: 1.0,
            codes: Words::Owned(Vec::new()),
        };
        let threads = params.threads.max(1);
        let ef = params.ef_construct.max(m0 as usize);
        let mut done = 1usize.min(nodes.len());
        while done < nodes.len() {
            let batch_len = (done / 8).clamp(1, 4096).min(nodes.len() - done);
            let batch = &nodes[done..done + batch_len];
            // Phase 1 (parallel, read-only): neighbours of each new node, per level.
            let chosen: Vec<Vec<Vec<Cand>>> = if batch.len() < 32 || threads == 1 {
                let mut visited = Visited::new(n);
                batch
                    .iter()
                    .map(|&u| g.plan_insert(vectors, u, ef, &mut visited))
                    .collect()
            } else {
                let per = batch.len().div_ceil(threads);
                let g = &g;
                std::thread::scope(|s| {
                    let handles: Vec<_> = batch
                        .chunks(per)
                        .map(|chunk| {
                            s.spawn(move || {
                                let mut visited = Visited::new(n);
                                chunk
                                    .iter()
                                    .map(|&u| g.plan_insert(vectors, u, ef, &mut visited))
                                    .collect::<Vec<_>>()
                            })
                        })
                        .collect();
                    handles
                        .into_iter()
                        .flat_map(|h| h.join().expect("build thread"))
                        .collect()
                })
            };
            // Phase 2 (serial): the new nodes' own lists, and the reverse links to apply.
            let mut back = Vec::new();
            for (&u, per_level) in batch.iter().zip(&chosen) {
                for (level, list) in per_level.iter().enumerate() {
                    let ids: Vec<u32> = list.iter().map(|c| c.id).collect();
                    g.set_links(u, level as u32, &ids);
                    back.extend(ids.iter().map(|&t| Backlink {
                        target: t,
                        level: level as u32,
                        source: u,
                    }));
                }
            }
            for &u in batch {
                let l = g.level_of(u);
                if l > g.max_level {
                    g.max_level = l;
                    g.entry = u;
                }
            }
            // Phase 3: reverse links; level 0 in parallel by target, upper levels serially.
            g.apply_backlinks(vectors, back, threads);
            done += batch_len;
        }
        g.quantize(vectors, &nodes);
        g
    }

    /// Int8 codes of the vectors, with one symmetric scale mapping the largest magnitude to 127.
    /// Searches walk the graph on them and rescore the candidates with the full vectors.
    fn quantize(&mut self, v: Vectors<'_>, nodes: &[u32]) {
        if v.dim > MAX_CODE_DIM || nodes.is_empty() {
            return;
        }
        let max = nodes
            .iter()
            .flat_map(|&i| v.row(i).iter())
            .fold(0f32, |m, x| if x.is_finite() { m.max(x.abs()) } else { m });
        let scale = if max > 0.0 { 127.0 / max } else { 1.0 };
        let code_dim = v.dim.div_ceil(4) * 4;
        let mut bytes = vec![0i8; self.n as usize * code_dim];
        for &i in nodes {
            let row = quantize_row(v.row(i), scale, code_dim);
            bytes[i as usize * code_dim..(i as usize + 1) * code_dim].copy_from_slice(&row);
        }
        let words: Vec<u32> = bytes
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0] as u8, c[1] as u8, c[2] as u8, c[3] as u8]))
            .collect();
        self.code_dim = code_dim as u32;
        self.scale = scale;
        self.codes = Words::Owned(words);
    }

    /// Finds the neighbours a new node `u` should link to, on each of its levels (top first
    /// search, returned per level from 0).
    fn plan_insert(&self, v: Vectors<'_>, u: u32, ef: usize, visited: &mut Visited) -> Vec<Vec<Cand>> {
        let q = v.row(u);
        let score = |i: u32| v.score(q, i);
        let prefetch = |i: u32| v.prefetch(i);
        let top = self.level_of(u);
        let mut ep = Cand {
            score: score(self.entry),
            id: self.entry,
        };
        let mut level = self.max_level;
        while level > top {
            ep = self.greedy(&score, ep, level);
            level -= 1;
        }
        let mut out = vec![Vec::new(); top.min(self.max_level) as usize + 1];
        let mut eps = vec![ep];
        for l in (0..=top.min(self.max_level)).rev() {
            let found = self.search_layer(&score, &prefetch, &eps, ef, l, visited, None);
            // A new node takes `m` links on every level (as hnswlib does); level 0 lists grow
            // to `2 m` through the reverse links of later nodes.
            out[l as usize] = select(v, &found, self.m as usize);
            eps = found;
        }
        out
    }

    fn set_links(&mut self, u: u32, level: u32, ids: &[u32]) {
        let (words, start, w) = if level == 0 {
            let w = self.m0 as usize + 1;
            (&mut self.layer0, u as usize * w, w)
        } else {
            let w = self.m as usize + 1;
            let s = self.upper_start.as_slice()[u as usize] as usize + (level as usize - 1) * w;
            (&mut self.upper, s, w)
        };
        let Words::Owned(words) = words else {
            unreachable!("only a graph being built is written")
        };
        let row = &mut words[start..start + w];
        row[0] = ids.len() as u32;
        row[1..1 + ids.len()].copy_from_slice(ids);
    }

    fn apply_backlinks(&mut self, v: Vectors<'_>, mut back: Vec<Backlink>, threads: usize) {
        back.sort_unstable_by_key(|b| (b.level, b.target));
        let split = back.partition_point(|b| b.level == 0);
        let (zero, upper) = back.split_at(split);
        for group in upper.chunk_by(|a, b| a.target == b.target && a.level == b.level) {
            let (t, level) = (group[0].target, group[0].level);
            let mut ids = self.links(t, level).to_vec();
            ids.extend(group.iter().map(|b| b.source));
            let ids = prune(v, t, ids, self.m as usize);
            self.set_links(t, level, &ids);
        }
        let groups: Vec<&[Backlink]> = zero.chunk_by(|a, b| a.target == b.target).collect();
        let w = self.m0 as usize + 1;
        let m0 = self.m0 as usize;
        let Words::Owned(layer0) = &mut self.layer0 else {
            unreachable!("only a graph being built is written")
        };
        // Each target's row goes to exactly one worker: disjoint `&mut` slices, no locks.
        let mut rows: Vec<Option<&mut [u32]>> = layer0.chunks_mut(w).map(Some).collect();
        let mut work: Vec<Vec<RowWork<'_, '_>>> = (0..threads).map(|_| Vec::new()).collect();
        for (i, g) in groups.iter().enumerate() {
            let t = g[0].target;
            let row = rows[t as usize].take().expect("one group per target");
            work[i % threads].push((row, t, g));
        }
        let apply = |items: Vec<RowWork<'_, '_>>| {
            for (row, t, group) in items {
                let mut ids: Vec<u32> = row[1..1 + row[0] as usize].to_vec();
                ids.extend(group.iter().map(|b| b.source));
                let ids = prune(v, t, ids, m0);
                row[0] = ids.len() as u32;
                row[1..1 + ids.len()].copy_from_slice(&ids);
            }
        };
        if zero.len() < 256 || threads == 1 {
            work.into_iter().for_each(apply);
        } else {
            std::thread::scope(|s| {
                for items in work {
                    s.spawn(move || apply(items));
                }
            });
        }
    }

    fn greedy(&self, score: &impl Fn(u32) -> f32, mut cur: Cand, level: u32) -> Cand {
        loop {
            let mut moved = false;
            for &nb in self.links(cur.id, level) {
                let s = score(nb);
                if s > cur.score {
                    cur = Cand { score: s, id: nb };
                    moved = true;
                }
            }
            if !moved {
                return cur;
            }
        }
    }

    /// Best-first search of one level from `eps`; up to `ef` nodes, best first. With `allowed`,
    /// only allowed nodes are returned (all are traversed).
    #[allow(clippy::too_many_arguments)]
    fn search_layer(
        &self,
        score: &impl Fn(u32) -> f32,
        prefetch: &impl Fn(u32),
        eps: &[Cand],
        ef: usize,
        level: u32,
        visited: &mut Visited,
        allowed: Option<&BitSet>,
    ) -> Vec<Cand> {
        visited.reset(self.n as usize);
        let mut candidates: BinaryHeap<Cand> = BinaryHeap::with_capacity(ef * 2);
        let mut results: BinaryHeap<Reverse<Cand>> = BinaryHeap::with_capacity(ef + 1);
        let ok = |i: u32| allowed.is_none_or(|a| a.get(i as usize));
        for &e in eps {
            if visited.insert(e.id) {
                candidates.push(e);
                if ok(e.id) {
                    results.push(Reverse(e));
                }
            }
        }
        while results.len() > ef {
            results.pop();
        }
        while let Some(c) = candidates.pop() {
            if results.len() >= ef && results.peek().is_some_and(|w| c.score < w.0.score) {
                break;
            }
            // The next candidate's links are needed soon: start fetching them now.
            if let Some(next) = candidates.peek() {
                self.prefetch_links(next.id, level);
            }
            // Gather the unvisited neighbours and prefetch all their vectors before scoring
            // any: the loads overlap instead of each distance waiting for its own miss.
            for links in self.links(c.id, level).chunks(128) {
                let mut fresh = [0u32; 128];
                let mut k = 0;
                for &nb in links {
                    if visited.insert(nb) {
                        prefetch(nb);
                        fresh[k] = nb;
                        k += 1;
                    }
                }
                for &nb in &fresh[..k] {
                    let s = score(nb);
                    let worst = results.peek().map_or(f32::NEG_INFINITY, |w| w.0.score);
                    if results.len() < ef || s > worst {
                        let cand = Cand { score: s, id: nb };
                        candidates.push(cand);
                        if ok(nb) {
                            results.push(Reverse(cand));
                            if results.len() > ef {
                                results.pop();
                            }
                        }
                    }
                }
            }
        }
        let mut out: Vec<Cand> = results.into_iter().map(|r| r.0).collect();
        out.sort_unstable_by(|a, b| b.cmp(a));
        out
    }

    /// The `top` nearest nodes to `query` (engine scores, best first) that `allowed` admits,
    /// exploring `ef` candidates on level 0.
    pub fn search(
        &self,
        v: Vectors<'_>,
        query: &[f32],
        top: usize,
        ef: usize,
        allowed: Option<&BitSet>,
    ) -> Vec<(f32, u32)> {
        if self.n == 0 || top == 0 {
            return Vec::new();
        }
        let ef = ef.max(top);
        let found = if self.code_dim > 0 {
            // Walk the graph on the int8 codes (a quarter of the memory traffic), then rescore
            // the `ef` candidates found with the full vectors.
            let k = crate::kernels::int8::active();
            let qc = quantize_row(query, self.scale, self.code_dim as usize);
            let kernel = match v.distance {
                Distance::Cosine | Distance::Dot => k.dot,
                Distance::Euclid => k.l2sq,
                Distance::Manhattan => k.l1,
            };
            let sign = if matches!(v.distance, Distance::Cosine | Distance::Dot) {
                1.0
            } else {
                -1.0
            };
            let score = |i: u32| sign * kernel(&qc, self.code_row(i)) as f32;
            let prefetch = |i: u32| self.prefetch_code(i);
            let mut found = self.walk(&score, &prefetch, ef, allowed);
            for c in &mut found {
                c.score = v.score(query, c.id);
            }
            found.sort_unstable_by(|a, b| b.cmp(a));
            found
        } else {
            let score = |i: u32| v.score(query, i);
            let prefetch = |i: u32| v.prefetch(i);
            self.walk(&score, &prefetch, ef, allowed)
        };
        found.into_iter().take(top).map(|c| (c.score, c.id)).collect()
    }

    /// Greedy descent, then the level-0 search.
    fn walk(
        &self,
        score: &impl Fn(u32) -> f32,
        prefetch: &impl Fn(u32),
        ef: usize,
        allowed: Option<&BitSet>,
    ) -> Vec<Cand> {
        let mut ep = Cand {
            score: score(self.entry),
            id: self.entry,
        };
        for level in (1..=self.max_level).rev() {
            ep = self.greedy(score, ep, level);
        }
        VISITED.with(|cell| {
            let mut visited = cell.borrow_mut();
            self.search_layer(score, prefetch, &[ep], ef, 0, &mut visited, allowed)
        })
    }

    #[inline(always)]
    fn code_row(&self, i: u32) -> &[i8] {
        let w = self.code_dim as usize / 4;
        bytemuck::cast_slice(&self.codes.as_slice()[i as usize * w..(i as usize + 1) * w])
    }

    #[inline(always)]
    fn prefetch_code(&self, i: u32) {
        let w = self.code_dim as usize / 4;
        let row = self.codes.as_slice().as_ptr().wrapping_add(i as usize * w);
        prefetch_bytes(row as *const u8, self.code_dim as usize);
    }

    /// Writes the graph to `path` (a new file), fsync'd, and returns its size and CRC32 (for the
    /// segment manifest). The caller renames it into place.
    pub fn write(&self, path: &Path) -> std::io::Result<(u64, u32)> {
        let header: [u32; HEADER_WORDS] = [
            MAGIC,
            VERSION,
            self.n,
            self.m,
            self.m0,
            self.entry,
            self.max_level,
            self.upper.as_slice().len() as u32,
            self.code_dim,
            self.scale.to_bits(),
        ];
        let mut f = std::io::BufWriter::with_capacity(1 << 20, File::create_new(path)?);
        let (mut size, mut crc) = (0u64, crc32fast::Hasher::new());
        for part in [
            &header[..],
            self.levels.as_slice(),
            self.layer0.as_slice(),
            self.upper_start.as_slice(),
            self.upper.as_slice(),
            self.codes.as_slice(),
        ] {
            let bytes: &[u8] = bytemuck::cast_slice(part);
            crc.update(bytes);
            size += bytes.len() as u64;
            f.write_all(bytes)?;
        }
        f.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        Ok((size, crc.finalize()))
    }

    /// Checks every level, offset, count and link of a mapped graph (one pass over the links),
    /// so that a damaged file is refused at open instead of misdirecting searches.
    fn validate(&self) -> Result<(), String> {
        let n = self.n as usize;
        let (m, m0) = (self.m as usize, self.m0 as usize);
        let upper = self.upper.as_slice();
        let starts = self.upper_start.as_slice();
        for (i, &l) in self.levels.as_slice().iter().enumerate() {
            if l > self.max_level {
                return Err(format!("node {i} is above the top level"));
            }
            if l > 0 {
                let s = starts[i] as usize;
                if s.checked_add(l as usize * (m + 1)).is_none_or(|e| e > upper.len()) {
                    return Err(format!("node {i}: upper links out of range"));
                }
                for lv in 1..=l {
                    let row = &upper[s + (lv as usize - 1) * (m + 1)..s + lv as usize * (m + 1)];
                    if row[0] as usize > m || row[1..1 + row[0] as usize].iter().any(|&x| x as usize >= n) {
                        return Err(format!("node {i}: bad links on level {lv}"));
                    }
                }
            }
        }
        for (i, row) in self.layer0.as_slice().chunks_exact(m0 + 1).enumerate() {
            if row[0] as usize > m0 || row[1..1 + row[0] as usize].iter().any(|&x| x as usize >= n) {
                return Err(format!("node {i}: bad links on level 0"));
            }
        }
        Ok(())
    }

    /// Maps a graph file written by [`write`](Self::write). `n` is the segment's size.
    pub fn open(path: &Path, n: usize) -> std::io::Result<Graph> {
        let bad =
            |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{}: {what}", path.display()));
        let file = File::open(path)?;
        // SAFETY: index files are immutable once renamed into a sealed segment's directory.
        let map = std::sync::Arc::new(unsafe { Mmap::map(&file)? });
        if map.len() < HEADER_WORDS * 4 || map.len() % 4 != 0 {
            return Err(bad("truncated HNSW file"));
        }
        let h: &[u32] = bytemuck::cast_slice(&map[..HEADER_WORDS * 4]);
        let (magic, version, gn, m, m0, entry, max_level, upper_len) = (h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7]);
        let (code_dim, scale) = (h[8], f32::from_bits(h[9]));
        if code_dim % 4 != 0 || code_dim as usize > MAX_CODE_DIM + 3 || !scale.is_finite() {
            return Err(bad("HNSW codes header is invalid"));
        }
        if magic != MAGIC || version != VERSION {
            return Err(bad("not an HNSW file of this version"));
        }
        if gn as usize != n || m0 != 2 * m || m < 2 {
            return Err(bad("HNSW file does not match its segment"));
        }
        let sizes = [
            n,
            n * (m0 as usize + 1),
            n,
            upper_len as usize,
            n * code_dim as usize / 4,
        ];
        if map.len() / 4 != HEADER_WORDS + sizes.iter().sum::<usize>() {
            return Err(bad("HNSW file has the wrong size"));
        }
        let mut start = HEADER_WORDS;
        let mut words = sizes.iter().map(|&len| {
            let w = Words::Mapped {
                map: map.clone(),
                start,
                len,
            };
            start += len;
            w
        });
        let mut next = || words.next().expect("five arrays");
        let (levels, layer0, upper_start, upper, codes) = (next(), next(), next(), next(), next());
        let g = Graph {
            n: gn,
            m,
            m0,
            entry,
            max_level,
            levels,
            layer0,
            upper_start,
            upper,
            code_dim,
            scale,
            codes,
        };
        if n > 0 && (entry as usize >= n || g.level_of(entry) != max_level) {
            return Err(bad("HNSW entry point is invalid"));
        }
        g.validate().map_err(|what| bad(&what))?;
        Ok(g)
    }
}

/// HNSW's neighbour heuristic over `found` (best first): keep a candidate only when it is closer
/// to the base node than to every neighbour kept so far; at most `cap`.
fn select(v: Vectors<'_>, found: &[Cand], cap: usize) -> Vec<Cand> {
    let mut kept: Vec<Cand> = Vec::with_capacity(cap);
    for &c in found {
        if kept.len() >= cap {
            break;
        }
        let row = v.row(c.id);
        if kept.iter().all(|k| v.score(row, k.id) < c.score) {
            kept.push(c);
        }
    }
    kept
}

/// Re-selects the links of `t` from `ids` when there are more than `cap`.
fn prune(v: Vectors<'_>, t: u32, mut ids: Vec<u32>, cap: usize) -> Vec<u32> {
    ids.sort_unstable();
    ids.dedup();
    ids.retain(|&i| i != t);
    if ids.len() <= cap {
        return ids;
    }
    let q = v.row(t);
    let mut scored: Vec<Cand> = ids
        .iter()
        .map(|&i| Cand {
            score: v.score(q, i),
            id: i,
        })
        .collect();
    scored.sort_unstable_by(|a, b| b.cmp(a));
    select(v, &scored, cap).into_iter().map(|c| c.id).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Clustered data: `clusters` centres, points spread around them.
    pub(crate) fn clustered(n: usize, dim: usize, clusters: usize, seed: u64) -> Vec<f32> {
        let mut x = seed | 1;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ((x >> 11) as f64 / (1u64 << 53) as f64) as f32 * 2.0 - 1.0
        };
        let centres: Vec<f32> = (0..clusters * dim).map(|_| next()).collect();
        let mut out = Vec::with_capacity(n * dim);
        for i in 0..n {
            let c = (i * 7919) % clusters;
            for d in 0..dim {
                out.push(centres[c * dim + d] + 0.25 * next());
            }
        }
        out
    }

    fn recall_for(distance: Distance) -> f64 {
        let (n, dim) = (4000, 32);
        // Queries from the same distribution as the data (the last 100 rows, not indexed).
        let mut data = clustered(n + 100, dim, 40, 42);
        for row in data.chunks_mut(dim) {
            distance.preprocess(row);
        }
        let queries = data.split_off(n * dim);
        let v = Vectors {
            data: &data,
            dim,
            distance,
            kernels: crate::kernels::active(),
        };
        let g = Graph::build(
            v,
            n,
            &|_| true,
            BuildParams {
                m: 16,
                ef_construct: 100,
                threads: 2,
            },
        );
        let mut hits = 0;
        for q in queries.chunks(dim) {
            let mut exact: Vec<Cand> = (0..n as u32)
                .map(|i| Cand {
                    score: v.score(q, i),
                    id: i,
                })
                .collect();
            exact.sort_unstable_by(|a, b| b.cmp(a));
            let truth: Vec<u32> = exact[..10].iter().map(|c| c.id).collect();
            let got = g.search(v, q, 10, 64, None);
            hits += got.iter().filter(|(_, id)| truth.contains(id)).count();
        }
        hits as f64 / (10 * 100) as f64
    }

    #[test]
    fn recall_at_10_for_every_distance() {
        for d in [Distance::Cosine, Distance::Dot, Distance::Euclid, Distance::Manhattan] {
            let r = recall_for(d);
            assert!(r >= 0.95, "{d:?}: recall@10 {r}");
        }
    }

    #[test]
    fn filtered_search_returns_only_allowed_and_file_round_trips() {
        let (n, dim) = (2000, 16);
        let data = clustered(n, dim, 10, 3);
        let v = Vectors {
            data: &data,
            dim,
            distance: Distance::Euclid,
            kernels: crate::kernels::active(),
        };
        // Odd offsets are not in the graph at all (like points without this vector).
        let g = Graph::build(
            v,
            n,
            &|i| i % 2 == 0,
            BuildParams {
                m: 8,
                ef_construct: 64,
                threads: 2,
            },
        );
        let mut allowed = BitSet::new(n);
        (0..n).filter(|i| i % 4 == 0).for_each(|i| allowed.set(i, true));
        let q = &data[10 * dim..11 * dim];
        let got = g.search(v, q, 10, 100, Some(&allowed));
        assert_eq!(got.len(), 10);
        assert!(got.iter().all(|(_, id)| id % 4 == 0), "{got:?}");
        let all = g.search(v, q, 10, 100, None);
        assert!(all.iter().all(|(_, id)| id % 2 == 0), "only inserted nodes: {all:?}");
        assert_eq!(all[0].1, 10);

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.bin");
        g.write(&path).unwrap();
        let back = Graph::open(&path, n).unwrap();
        assert_eq!(back.search(v, q, 10, 100, Some(&allowed)), got);
        assert!(Graph::open(&path, n + 1).is_err(), "size mismatch refused");
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 4]).unwrap();
        assert!(Graph::open(&path, n).is_err(), "truncation refused");
    }
}
