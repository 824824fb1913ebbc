//! Real S3-compatible servers for the S3 snapshot tests, on loopback: `s3s-fs` in-process
//! (filesystem-backed, checks SigV4 signatures) and `moto_server` (a separate implementation,
//! from PyPI) as a child process. Both can be stopped and restarted on the same port, and both
//! sit behind a small TCP relay that can slow uploads down, so a test can stop the server while
//! an upload is certainly still running.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};

pub const ACCESS_KEY: &str = "quiver-test-access";
pub const SECRET_KEY: &str = "quiver-test-secret-key";

/// Which server implementation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    S3sFs,
    Moto,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn wait_listening(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not start on port {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A runtime for the test's own S3 client calls.
pub fn rt() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap()
    })
}

/// s3s-fs served from a thread with its own runtime; dropping the runtime closes every socket.
struct InProcess {
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl InProcess {
    fn start(root: &Path, port: u16) -> InProcess {
        let root = root.to_path_buf();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                use hyper_util::rt::{TokioExecutor, TokioIo};
                use s3s::service::S3ServiceBuilder;
                let fs = s3s_fs::FileSystem::new(&root).expect("s3s-fs root");
                let mut b = S3ServiceBuilder::new(fs);
                b.set_auth(s3s::auth::SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
                let service = b.build();
                let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
                    .await
                    .expect("bind s3s-fs");
                ready_tx.send(()).unwrap();
                let mut rx = rx;
                loop {
                    tokio::select! {
                        conn = listener.accept() => {
                            let Ok((socket, _)) = conn else { continue };
                            let service = service.clone();
                            tokio::spawn(async move {
                                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                                let _ = builder.serve_connection(TokioIo::new(socket), service).await;
                            });
                        }
                        _ = &mut rx => break,
                    }
                }
            });
            // Dropping the runtime here cancels every connection task: the server is gone.
            rt.shutdown_timeout(Duration::from_millis(100));
        });
        ready_rx.recv_timeout(Duration::from_secs(30)).expect("s3s-fs started");
        InProcess {
            shutdown: Some(tx),
            thread: Some(thread),
        }
    }

    fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A TCP relay: clients connect to `port`, bytes go to `upstream`. Client-to-server traffic can
/// be throttled (bytes per second), so that uploads take a predictable while.
struct Relay {
    stopped: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
    thread: Option<JoinHandle<()>>,
}

impl Relay {
    fn start(port: u16, upstream: u16, rate: Arc<AtomicU64>) -> Relay {
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind relay");
        listener.set_nonblocking(true).unwrap();
        let stopped = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (st, cs) = (stopped.clone(), conns.clone());
        let thread = std::thread::spawn(move || {
            while !st.load(Ordering::SeqCst) {
                let client = match listener.accept() {
                    Ok((c, _)) => c,
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    }
                };
                client.set_nonblocking(false).unwrap();
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                };
                {
                    let mut c = cs.lock().unwrap();
                    c.push(client.try_clone().unwrap());
                    c.push(server.try_clone().unwrap());
                }
                let rate = rate.clone();
                let (mut c_in, mut s_out) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                std::thread::spawn(move || pump(&mut c_in, &mut s_out, Some(rate)));
                let (mut s_in, mut c_out) = (server, client);
                std::thread::spawn(move || pump(&mut s_in, &mut c_out, None));
            }
        });
        Relay {
            stopped,
            conns,
            thread: Some(thread),
        }
    }

    fn stop(&mut self) {
        self.stopped.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        for c in self.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
    }
}

fn pump(from: &mut TcpStream, to: &mut TcpStream, rate: Option<Arc<AtomicU64>>) {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
        if let Some(r) = &rate {
            let bps = r.load(Ordering::Relaxed);
            if bps > 0 {
                std::thread::sleep(Duration::from_secs_f64(n as f64 / bps as f64));
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

/// One S3-compatible server behind a relay.
pub struct S3Server {
    pub kind: Kind,
    /// Port clients use (the relay's).
    pub port: u16,
    inner_port: u16,
    /// s3s-fs's data folder (buckets are its sub-folders).
    pub root: PathBuf,
    in_process: Option<InProcess>,
    child: Option<Child>,
    relay: Option<Relay>,
    /// Client-to-server bytes per second through the relay; 0 = unthrottled.
    pub upload_rate: Arc<AtomicU64>,
}

impl S3Server {
    pub fn start(kind: Kind, dir: &Path) -> S3Server {
        let root = dir.join(format!("s3-{kind:?}"));
        std::fs::create_dir_all(&root).unwrap();
        let mut s = S3Server {
            kind,
            port: free_port(),
            inner_port: free_port(),
            root,
            in_process: None,
            child: None,
            relay: None,
            upload_rate: Arc::new(AtomicU64::new(0)),
        };
        s.launch();
        s
    }

    fn launch(&mut self) {
        match self.kind {
            Kind::S3sFs => self.in_process = Some(InProcess::start(&self.root, self.inner_port)),
            Kind::Moto => {
                let bin = std::env::var("MOTO_SERVER").unwrap_or_else(|_| "moto_server".into());
                let child = Command::new(&bin)
                    .args(["-H", "127.0.0.1", "-p", &self.inner_port.to_string()])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap_or_else(|e| {
                        panic!("cannot run `{bin}` ({e}): install moto[server] (tests/python/requirements.txt; tests/run.sh puts .venv/bin on PATH) or set MOTO_SERVER")
                    });
                self.child = Some(child);
                wait_listening(self.inner_port, "moto_server");
            }
        }
        self.relay = Some(Relay::start(self.port, self.inner_port, self.upload_rate.clone()));
    }

    /// Stops the server (and closes every open connection to it).
    pub fn stop(&mut self) {
        if let Some(mut r) = self.relay.take() {
            r.stop();
        }
        if let Some(mut s) = self.in_process.take() {
            s.stop();
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port (s3s-fs keeps its data; moto starts empty).
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A plain SDK client (not Quiver's wrapper) for checking what the server holds.
    pub fn client(&self) -> aws_sdk_s3::Client {
        self.client_with(ACCESS_KEY, SECRET_KEY)
    }

    pub fn client_with(&self, access: &str, secret: &str) -> aws_sdk_s3::Client {
        let conf = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new(access, secret, None, None, "test"))
            .endpoint_url(self.endpoint())
            .force_path_style(true)
            .build();
        aws_sdk_s3::Client::from_conf(conf)
    }

    pub fn create_bucket(&self, bucket: &str) {
        let c = self.client();
        rt().block_on(c.create_bucket().bucket(bucket).send())
            .expect("create bucket");
    }

    /// Object bytes, or None when there is no such object.
    pub fn get(&self, bucket: &str, key: &str) -> Option<Vec<u8>> {
        let c = self.client();
        rt().block_on(async {
            let o = c.get_object().bucket(bucket).key(key).send().await.ok()?;
            Some(o.body.collect().await.ok()?.to_vec())
        })
    }

    /// Object ETag, or None.
    pub fn etag(&self, bucket: &str, key: &str) -> Option<String> {
        let c = self.client();
        rt().block_on(async {
            let o = c.head_object().bucket(bucket).key(key).send().await.ok()?;
            o.e_tag().map(str::to_string)
        })
    }

    /// Every key in the bucket.
    pub fn keys(&self, bucket: &str) -> Vec<String> {
        let c = self.client();
        rt().block_on(async {
            let o = c.list_objects_v2().bucket(bucket).send().await.expect("list");
            let mut keys: Vec<String> = o
                .contents()
                .iter()
                .filter_map(|o| o.key().map(str::to_string))
                .collect();
            keys.sort();
            keys
        })
    }

    /// Multipart uploads in progress (s3s-fs: its upload files on disk; moto: the API).
    pub fn uploads_in_progress(&self, bucket: &str) -> usize {
        match self.kind {
            Kind::S3sFs => std::fs::read_dir(&self.root)
                .unwrap()
                .filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().starts_with(".upload-"))
                .count(),
            Kind::Moto => {
                let c = self.client();
                rt().block_on(async {
                    let o = c
                        .list_multipart_uploads()
                        .bucket(bucket)
                        .send()
                        .await
                        .expect("list uploads");
                    o.uploads().len()
                })
            }
        }
    }

    /// Parts received so far of uploads in progress (s3s-fs only: its part files).
    pub fn parts_received(&self) -> usize {
        std::fs::read_dir(&self.root)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with(".upload_id-"))
            .count()
    }

    /// Environment for a Quiver server storing its snapshots in `bucket` here.
    pub fn quiver_env(&self, bucket: &str) -> Vec<(String, String)> {
        let p = "QDRANT__STORAGE__SNAPSHOTS_CONFIG__S3_CONFIG__";
        vec![
            (
                "QDRANT__STORAGE__SNAPSHOTS_CONFIG__SNAPSHOTS_STORAGE".into(),
                "s3".into(),
            ),
            (format!("{p}BUCKET"), bucket.into()),
            (format!("{p}REGION"), "us-east-1".into()),
            (format!("{p}ENDPOINT_URL"), self.endpoint()),
            (format!("{p}ACCESS_KEY"), ACCESS_KEY.into()),
            (format!("{p}SECRET_KEY"), SECRET_KEY.into()),
            (format!("{p}PART_SIZE_MB"), "5".into()),
            (format!("{p}PARTS_IN_FLIGHT"), "2".into()),
            (format!("{p}MAX_ATTEMPTS"), "3".into()),
        ]
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
    }
}
