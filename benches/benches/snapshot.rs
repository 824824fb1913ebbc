//! Snapshot throughput on ≥ 2 GiB of vectors, against `cp -r` and `tar -cf` of the same segment
//! files measured in the same run, with the pipeline's peak RSS growth; and recovery of the same
//! archive (unpack with every check, then install) against `tar -xf`.
//!
//! `cargo bench -p quiver-benches --bench snapshot` (QUIVER_SNAPSHOT_GIB=0.5 for a smaller set,
//! QUIVER_SNAPSHOT_QUICK=1 to print only the same-run ratios and skip criterion's sampling).
//! Every contender ends durable: our archive is fsync'd, `cp` and `tar` are followed by `sync`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use quiver_benches::{DIM, PeakRss, load, pinned_archive};
use quiver_engine::Collection;
use quiver_io::Backend;

fn snapshot_once(c: &Collection, out: &Path, backend: Backend) -> u64 {
    let archive = pinned_archive(c);
    let _ = std::fs::remove_file(out);
    let s = quiver_io::write_to_path(archive, out, backend).unwrap();
    s.size
}

fn run(cmd: &mut Command) {
    let st = cmd.status().expect("spawn");
    assert!(st.success(), "{cmd:?}");
    assert!(Command::new("sync").status().expect("sync").success());
}

fn cp_r(src: &Path, dst: &Path) {
    let _ = std::fs::remove_dir_all(dst);
    run(Command::new("cp").arg("-r").arg(src).arg(dst));
}

fn tar_c(src: &Path, dst: &Path) {
    let _ = std::fs::remove_file(dst);
    run(Command::new("tar").arg("-cf").arg(dst).arg("-C").arg(src).arg("."));
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn bench(c: &mut Criterion) {
    let gib: f64 = std::env::var("QUIVER_SNAPSHOT_GIB")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2.0);
    // On the project's disk (not a tmpfs /tmp), where snapshots really go.
    let base = std::env::var("QUIVER_BENCH_DIR")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../target/bench-data").into());
    std::fs::create_dir_all(&base).unwrap();
    let dir = tempfile::tempdir_in(base).unwrap();
    let storage = dir.path().join("storage");
    let t = Instant::now();
    let (engine, coll, n) = load(&storage, gib);
    let src: PathBuf = storage.join("collections/snap");
    let data_bytes: u64 = walk_size(&src);
    eprintln!(
        "loaded {n} x {DIM} ({:.2} GiB on disk) in {:.1}s; io_uring available: {}",
        data_bytes as f64 / (1u64 << 30) as f64,
        t.elapsed().as_secs_f64(),
        quiver_io::uring_available()
    );
    let out = dir.path().join("out.snapshot");
    let cp_dst = dir.path().join("cp-copy");
    let tar_dst = dir.path().join("copy.tar");

    // Peak RSS growth while one snapshot runs (sampled every 2 ms).
    let rss = PeakRss::start();
    snapshot_once(&coll, &out, Backend::Auto);
    let growth = rss.stop();

    // Ratios from medians of three runs each, measured here, in this run.
    let time = |f: &mut dyn FnMut()| {
        median(
            (0..3)
                .map(|_| {
                    let t = Instant::now();
                    f();
                    t.elapsed()
                })
                .collect(),
        )
    };
    let ours = time(&mut || {
        snapshot_once(&coll, &out, Backend::Auto);
    });
    let ours_sys = time(&mut || {
        snapshot_once(&coll, &out, Backend::Syscalls);
    });
    let cp = time(&mut || cp_r(&src, &cp_dst));
    let tar = time(&mut || tar_c(&src, &tar_dst));
    let gibs = |d: Duration| data_bytes as f64 / (1u64 << 30) as f64 / d.as_secs_f64();
    eprintln!(
        "snapshot (io_uring) {:.2}s = {:.2} GiB/s | snapshot (syscalls) {:.2}s = {:.2} GiB/s | cp -r {:.2}s = {:.2} GiB/s | tar -cf {:.2}s = {:.2} GiB/s",
        ours.as_secs_f64(),
        gibs(ours),
        ours_sys.as_secs_f64(),
        gibs(ours_sys),
        cp.as_secs_f64(),
        gibs(cp),
        tar.as_secs_f64(),
        gibs(tar)
    );
    eprintln!(
        "RATIO snapshot/cp = {:.2}  snapshot/tar = {:.2}  syscalls/io_uring = {:.2}  peak RSS growth during a snapshot = {:.1} MiB (pipeline buffers: {} MiB)",
        ours.as_secs_f64() / cp.as_secs_f64(),
        ours.as_secs_f64() / tar.as_secs_f64(),
        ours_sys.as_secs_f64() / ours.as_secs_f64(),
        growth as f64 / (1u64 << 20) as f64,
        (quiver_io::WINDOW * quiver_io::WINDOWS) >> 20
    );

    // Recovery of the same archive: unpack with every check + install (open) vs `tar -xf` + sync.
    snapshot_once(&coll, &out, Backend::Auto);
    let archive_bytes = std::fs::metadata(&out).unwrap().len();
    let untar_dst = dir.path().join("untar");
    let recover = || {
        let staging = engine.staging_dir();
        let f = std::fs::File::open(&out).unwrap();
        quiver_io::restore::unpack_hashed(f, &staging, quiver_io::restore::Expect::Collection, u64::MAX).unwrap();
        engine.install_collection("restored", &staging).unwrap();
    };
    let mut rec_times = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        recover();
        rec_times.push(t.elapsed());
        engine.delete_collection("restored").unwrap();
    }
    let untar = time(&mut || {
        let _ = std::fs::remove_dir_all(&untar_dst);
        std::fs::create_dir_all(&untar_dst).unwrap();
        run(Command::new("tar").arg("-xf").arg(&out).arg("-C").arg(&untar_dst));
    });
    let rec = median(rec_times);
    let agibs = |d: Duration| archive_bytes as f64 / (1u64 << 30) as f64 / d.as_secs_f64();
    eprintln!(
        "RECOVERY unpack+verify+install {:.2}s = {:.2} GiB/s | tar -xf then sync {:.2}s = {:.2} GiB/s | ratio recovery/tar-x = {:.2}",
        rec.as_secs_f64(),
        agibs(rec),
        untar.as_secs_f64(),
        agibs(untar),
        rec.as_secs_f64() / untar.as_secs_f64()
    );

    if std::env::var("QUIVER_SNAPSHOT_QUICK").is_ok() {
        // Tuning runs: the ratios above are all that is wanted.
        engine.shutdown();
        return;
    }
    let mut g = c.benchmark_group(format!("snapshot/{:.1}GiB", data_bytes as f64 / (1u64 << 30) as f64));
    g.sample_size(10);
    g.throughput(criterion::Throughput::Bytes(data_bytes));
    g.bench_function("quiver_io_uring", |b| {
        b.iter(|| snapshot_once(&coll, &out, Backend::Auto))
    });
    g.bench_function("quiver_syscalls", |b| {
        b.iter(|| snapshot_once(&coll, &out, Backend::Syscalls))
    });
    g.bench_function("cp_r_then_sync", |b| b.iter(|| cp_r(&src, &cp_dst)));
    g.bench_function("tar_cf_then_sync", |b| b.iter(|| tar_c(&src, &tar_dst)));
    g.bench_function("recover_unpack_verify_install", |b| {
        b.iter(|| {
            recover();
            engine.delete_collection("restored").unwrap();
        })
    });
    g.finish();
    engine.shutdown();
}

fn walk_size(p: &Path) -> u64 {
    let mut total = 0;
    for e in std::fs::read_dir(p).unwrap().flatten() {
        let m = e.metadata().unwrap();
        total += if m.is_dir() { walk_size(&e.path()) } else { m.len() };
    }
    total
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(100)).measurement_time(Duration::from_secs(5));
    targets = bench
}
criterion_main!(benches);
