//! S3 snapshot upload of a ≥ 2 GiB collection to a local S3-compatible server, against boto3's
//! multipart upload of the same bytes to the same server with the same part size and
//! concurrency (`../shared/bench/s3_baseline.py`), measured in the same run, alternating rounds.
//! Prints both throughputs, the ratio, and Quiver's peak RSS growth during its uploads.
//!
//! Run through `perf/s3_bench.sh`, which installs the server (s3s-fs) and boto3. Environment:
//! - `QUIVER_S3_ENDPOINT`: an S3 endpoint to use; else `S3S_FS_BIN` is started on loopback
//! - `QUIVER_S3_ACCESS_KEY` / `QUIVER_S3_SECRET_KEY` (default `bench` / `bench-secret`)
//! - `QUIVER_S3_GIB` (2), `QUIVER_S3_PART_MIB` (64), `QUIVER_S3_CONCURRENCY` (4), `QUIVER_S3_ROUNDS` (3)
//! - `QUIVER_BENCH_PYTHON`: a Python with boto3 (default `python3`)

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use quiver_benches::{PeakRss, load, pinned_archive};
use quiver_io::s3::{S3Config, S3Store};

const BUCKET: &str = "bench";

fn var<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|s| s.parse().ok()).unwrap_or(default)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// s3s-fs as a separate process, so that its CPU and memory are not counted as Quiver's.
struct S3sFs(Child);

impl Drop for S3sFs {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_s3s_fs(bin: &str, root: &Path, access: &str, secret: &str) -> (S3sFs, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    std::fs::create_dir_all(root.join(BUCKET)).unwrap();
    let child = Command::new(bin)
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["--access-key", access, "--secret-key", secret])
        .arg(root)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {bin}: {e}"));
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "s3s-fs did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    (S3sFs(child), format!("http://127.0.0.1:{port}"))
}

/// One boto3 upload of `file`; returns its MiB/s as the baseline script measured it.
fn boto3_upload(
    file: &Path,
    endpoint: &str,
    access: &str,
    secret: &str,
    part_mib: u64,
    conc: usize,
    tmp: &Path,
) -> f64 {
    let python = std::env::var("QUIVER_BENCH_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = std::env::var("QUIVER_S3_BASELINE")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/bench/s3_baseline.py"));
    let out = Command::new(&python)
        .arg(&script)
        .args([
            "--endpoint-url",
            endpoint,
            "--access-key",
            access,
            "--secret-key",
            secret,
        ])
        .args([
            "--bucket",
            BUCKET,
            "--no-create-bucket",
            "--no-verify",
            "--no-fsync",
            "--repeat",
            "1",
        ])
        .args([
            "--part-size-mib",
            &part_mib.to_string(),
            "--concurrency",
            &conc.to_string(),
        ])
        .arg("--file")
        .arg(file)
        .arg("--tmp-dir")
        .arg(tmp)
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {python} {}: {e}", script.display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "s3_baseline.py failed:\n{stdout}");
    let last = stdout.lines().rev().find(|l| l.starts_with('{')).expect("JSON line");
    let v: serde_json::Value = serde_json::from_str(last).unwrap();
    v["rounds"][0]["upload_mib_s"]
        .as_f64()
        .unwrap_or_else(|| panic!("no upload_mib_s in {last}"))
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench -- --list` support
    }
    let gib: f64 = var("QUIVER_S3_GIB", 2.0);
    let part_mib: u64 = var("QUIVER_S3_PART_MIB", 64);
    let conc: usize = var("QUIVER_S3_CONCURRENCY", 4);
    let rounds: usize = var("QUIVER_S3_ROUNDS", 3);
    let access = std::env::var("QUIVER_S3_ACCESS_KEY").unwrap_or_else(|_| "bench".into());
    let secret = std::env::var("QUIVER_S3_SECRET_KEY").unwrap_or_else(|_| "bench-secret".into());
    let base = std::env::var("QUIVER_BENCH_DIR")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../target/bench-data").into());
    std::fs::create_dir_all(&base).unwrap();
    let dir = tempfile::tempdir_in(base).unwrap();

    let (_server, endpoint) = match std::env::var("QUIVER_S3_ENDPOINT") {
        Ok(e) => (None, e),
        Err(_) => {
            let bin =
                std::env::var("S3S_FS_BIN").expect("set QUIVER_S3_ENDPOINT or S3S_FS_BIN (perf/s3_bench.sh does)");
            let (s, e) = start_s3s_fs(&bin, &dir.path().join("s3"), &access, &secret);
            (Some(s), e)
        }
    };

    let t = Instant::now();
    let (_engine, coll, n) = load(&dir.path().join("storage"), gib);
    eprintln!(
        "loaded {n} x {} in {:.1}s",
        quiver_benches::DIM,
        t.elapsed().as_secs_f64()
    );

    // The same bytes for boto3: the archive written once to a local file.
    let file = dir.path().join("archive.tar");
    let summary = quiver_io::write_to_path(pinned_archive(&coll), &file, quiver_io::Backend::Auto).unwrap();
    let mib = summary.size as f64 / (1u64 << 20) as f64;
    eprintln!("archive: {mib:.0} MiB; part {part_mib} MiB; {conc} parts in flight; endpoint {endpoint}");

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let store = |payload_signing| {
        S3Store::new(&S3Config {
            bucket: BUCKET.into(),
            region: Some("us-east-1".into()),
            access_key: Some(access.clone()),
            secret_key: Some(secret.clone()),
            endpoint_url: Some(endpoint.clone()),
            part_size_mb: Some(part_mib),
            parts_in_flight: Some(conc),
            payload_signing,
            ..Default::default()
        })
        .unwrap()
    };
    // Default (over http: signed payloads, as boto3 does), and with payload signing off (the
    // default over https), where the archive's own SHA-256 is the only end-to-end check.
    let (signed, unsigned) = (store(None), store(Some(false)));

    let upload = |store: &S3Store, key: &str| {
        let archive = pinned_archive(&coll);
        let rss = PeakRss::start();
        let t = Instant::now();
        let s = store.put_archive(rt.handle(), key, archive, None).unwrap();
        let secs = t.elapsed().as_secs_f64();
        let growth = rss.stop();
        // Same members and layout; only the tar headers' timestamps differ between two pins.
        assert_eq!(s.size, summary.size, "the uploaded archive is the same size");
        rt.block_on(store.delete(key)).unwrap();
        rt.block_on(store.delete(&format!("{key}.checksum"))).unwrap();
        (mib / secs, growth)
    };
    let (mut ours, mut ours_unsigned, mut theirs, mut peak_rss) = (Vec::new(), Vec::new(), Vec::new(), 0u64);
    for round in 1..=rounds {
        let key = format!("snapshots/snap/bench-{round}.snapshot");
        let (q, growth) = upload(&signed, &key);
        let b = boto3_upload(&file, &endpoint, &access, &secret, part_mib, conc, dir.path());
        let (u, growth_u) = upload(&unsigned, &key);
        peak_rss = peak_rss.max(growth).max(growth_u);
        eprintln!(
            "round {round}: quiver {q:.1} MiB/s | boto3 {b:.1} MiB/s | quiver, unsigned payload {u:.1} MiB/s | peak RSS growth {:.0} MiB",
            growth.max(growth_u) as f64 / (1u64 << 20) as f64
        );
        ours.push(q);
        ours_unsigned.push(u);
        theirs.push(b);
    }
    let (q, u, b) = (median(ours), median(ours_unsigned), median(theirs));
    let bound =
        part_mib as f64 * (conc as f64 + 1.0) + (quiver_io::WINDOW * quiver_io::WINDOWS) as f64 / (1u64 << 20) as f64;
    eprintln!(
        "RATIO quiver/boto3 upload = {:.2}  unsigned-payload quiver/boto3 = {:.2}  (quiver {q:.1}, unsigned {u:.1}, boto3 {b:.1} MiB/s, medians of {rounds}; {mib:.0} MiB archive)  peak RSS growth = {:.0} MiB (bound: part x (in flight + 1) + pipeline windows = {bound:.0} MiB)",
        q / b,
        u / b,
        peak_rss as f64 / (1u64 << 20) as f64
    );
}
