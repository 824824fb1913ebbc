//! Quiver's HNSW on a `gen_dataset.py` data set (`../shared/bench/`): build time with 2 threads,
//! then recall@10 and single-thread QPS for each ef, measured the way `ann_peers.py` measures
//! its peers (one query per call, each ef point run until at least `QUIVER_ANN_MIN_SECS`).
//! Ends with one JSON line. `perf/ann_bench.sh` runs the peers and this in the same run and
//! prints the ratios.
//!
//! Environment: `QUIVER_ANN_DATA` (dataset directory, required), `QUIVER_ANN_METRIC` (cosine),
//! `QUIVER_ANN_M` (16), `QUIVER_ANN_EF_CONSTRUCT` (100), `QUIVER_ANN_EF` (16,32,64,128,256),
//! `QUIVER_ANN_THREADS` (2), `QUIVER_ANN_MIN_SECS` (2).

use std::path::Path;
use std::time::Instant;

use quiver_engine::Distance;
use quiver_engine::hnsw::{BuildParams, Graph, Vectors};

/// Reads a little-endian `.npy` array of f4 or i4: (shape, raw 4-byte words).
fn read_npy(path: &Path) -> (Vec<usize>, Vec<u8>) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(&bytes[..6], b"\x93NUMPY", "{}: not a .npy file", path.display());
    let (hlen, hstart) = if bytes[6] == 1 {
        (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10)
    } else {
        (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        )
    };
    let header = std::str::from_utf8(&bytes[hstart..hstart + hlen]).unwrap();
    assert!(header.contains("'<f4'") || header.contains("'<i4'"), "{header}");
    assert!(header.contains("'fortran_order': False"), "{header}");
    let shape_txt = header.split("'shape': (").nth(1).unwrap().split(')').next().unwrap();
    let shape: Vec<usize> = shape_txt
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.trim().parse().unwrap())
        .collect();
    (shape, bytes[hstart + hlen..].to_vec())
}

fn f32s(raw: &[u8]) -> Vec<f32> {
    raw.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn var<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|s| s.parse().ok()).unwrap_or(default)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let data_dir = std::env::var("QUIVER_ANN_DATA").expect("QUIVER_ANN_DATA: a gen_dataset.py output directory");
    let data_dir = Path::new(&data_dir);
    let metric = std::env::var("QUIVER_ANN_METRIC").unwrap_or_else(|_| "cosine".into());
    let distance = match metric.as_str() {
        "cosine" => Distance::Cosine,
        "dot" => Distance::Dot,
        "euclid" => Distance::Euclid,
        other => panic!("unknown metric {other}"),
    };
    let m: usize = var("QUIVER_ANN_M", 16);
    let ef_construct: usize = var("QUIVER_ANN_EF_CONSTRUCT", 100);
    let threads: usize = var("QUIVER_ANN_THREADS", 2);
    let min_secs: f64 = var("QUIVER_ANN_MIN_SECS", 2.0);
    let efs: Vec<usize> = std::env::var("QUIVER_ANN_EF")
        .unwrap_or_else(|_| "16,32,64,128,256".into())
        .split(',')
        .map(|s| s.trim().parse().unwrap())
        .collect();

    let (bshape, braw) = read_npy(&data_dir.join("base.npy"));
    let (qshape, qraw) = read_npy(&data_dir.join("queries.npy"));
    let (gshape, graw) = read_npy(&data_dir.join(format!("gt_{metric}.npy")));
    let (n, dim) = (bshape[0], bshape[1]);
    let mut base = f32s(&braw);
    let mut queries = f32s(&qraw);
    let gt: Vec<u32> = graw
        .chunks_exact(4)
        .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as u32)
        .collect();
    let gk = gshape[1];
    // The engine stores cosine vectors normalised, as it does for every upsert.
    for row in base.chunks_mut(dim).chain(queries.chunks_mut(dim)) {
        distance.preprocess(row);
    }
    let kernels = quiver_engine::kernels::active();
    eprintln!(
        "data {}: {n} x {dim}, {} queries, metric {metric}, kernels {}",
        data_dir.display(),
        qshape[0],
        kernels.name
    );
    let v = Vectors {
        data: &base,
        dim,
        distance,
        kernels,
    };

    let t = Instant::now();
    let graph = Graph::build(
        v,
        n,
        &|_| true,
        BuildParams {
            m,
            ef_construct,
            threads,
        },
    );
    let build_s = t.elapsed().as_secs_f64();
    eprintln!("build: {build_s:.2}s (m {m}, ef_construct {ef_construct}, {threads} threads)");

    let k = 10;
    let nq = qshape[0];
    let mut points = Vec::new();
    for &ef in &efs {
        // Warm-up, then recall over one pass.
        for q in queries.chunks(dim).take(200) {
            std::hint::black_box(graph.search(v, q, k, ef, None));
        }
        let mut hits = 0usize;
        for (qi, q) in queries.chunks(dim).enumerate() {
            let truth = &gt[qi * gk..qi * gk + k];
            let got = graph.search(v, q, k, ef, None);
            hits += got.iter().filter(|(_, id)| truth.contains(id)).count();
        }
        let recall = hits as f64 / (nq * k) as f64;
        let (mut timed, mut passes, mut best) = (0usize, 0usize, 0f64);
        let start = Instant::now();
        while start.elapsed().as_secs_f64() < min_secs {
            let t = Instant::now();
            for q in queries.chunks(dim) {
                std::hint::black_box(graph.search(v, q, k, ef, None));
            }
            let pass = t.elapsed().as_secs_f64();
            best = best.max(nq as f64 / pass);
            timed += nq;
            passes += 1;
        }
        let qps = timed as f64 / start.elapsed().as_secs_f64();
        eprintln!("ef {ef:>4}: recall@10 {recall:.4}  QPS {qps:>9.1}  (best pass {best:.1}, {passes} passes)");
        points.push(format!(
            r#"{{"ef":{ef},"recall":{recall:.4},"qps":{qps:.1},"qps_best_pass":{best:.1},"passes":{passes}}}"#
        ));
    }
    println!(
        r#"{{"tool":"quiver_ann","n":{n},"dim":{dim},"metric":"{metric}","m":{m},"ef_construct":{ef_construct},"build_threads":{threads},"build_s":{build_s:.3},"points":[{}]}}"#,
        points.join(",")
    );
}
