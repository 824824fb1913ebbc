//! Thread-per-core runtime: one OS thread per core, pinned, each owning its shards outright.
//!
//! Work reaches a shard as a boxed closure sent over the owning worker's channel; the closure
//! runs on that thread with `&mut` access to the shard, so shard data needs no lock. Replies go
//! back through `oneshot` channels, which async callers `.await` and blocking callers `recv()`.
//!
//! Group commit: a worker runs every job already queued (up to a bound), then fsyncs the WAL of
//! each shard that has a `wait=true` write pending, then releases those replies. Writes without
//! `wait` are acknowledged at once and made durable by the next sync, at the latest after
//! [`SYNC_INTERVAL`].

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::error::{EngineError, Result};
use crate::shard::Shard;

/// Longest time an acknowledged `wait=false` write stays in the page cache only.
pub const SYNC_INTERVAL: Duration = Duration::from_millis(1000);
const MAX_BATCH: usize = 256;

/// Identifies a shard: (collection instance uid, shard number).
pub type ShardKey = (u64, u32);

type Deferred = Box<dyn FnOnce(Result<()>) + Send>;
type Job = Box<dyn FnOnce(&mut Worker) + Send>;

/// State owned by one worker thread.
#[derive(Default)]
pub struct Worker {
    shards: HashMap<ShardKey, Shard>,
    deferred: Vec<(ShardKey, Deferred)>,
    stop: bool,
}

impl Worker {
    /// The shard with this key, owned by this worker.
    pub fn shard(&mut self, key: ShardKey) -> Result<&mut Shard> {
        let shard = self.shards.get_mut(&key).ok_or(EngineError::ShuttingDown)?;
        // Graphs finished in the background are attached here, on the shard's own thread.
        shard.absorb_indexes();
        Ok(shard)
    }

    /// Adds a shard to this worker.
    pub fn insert(&mut self, key: ShardKey, shard: Shard) {
        self.shards.insert(key, shard);
    }

    /// Removes (closes) a shard.
    pub fn remove(&mut self, key: ShardKey) -> Option<Shard> {
        self.deferred.retain(|(k, _)| *k != key);
        self.shards.remove(&key)
    }

    /// Runs `f` once the WAL of `key` has been fsync'd (with the sync's outcome).
    pub fn after_sync(&mut self, key: ShardKey, f: impl FnOnce(Result<()>) + Send + 'static) {
        self.deferred.push((key, Box::new(f)));
    }

    fn sync(&mut self, all: bool) {
        let mut waiting: Vec<ShardKey> = self.deferred.iter().map(|d| d.0).collect();
        if all {
            waiting.extend(self.shards.iter().filter(|(_, s)| s.needs_sync()).map(|(k, _)| *k));
        }
        waiting.sort_unstable();
        waiting.dedup();
        let mut outcome: HashMap<ShardKey, Option<String>> = HashMap::new();
        for key in waiting {
            let res = self.shards.get_mut(&key).map_or(Ok(()), |s| s.sync());
            if let Err(e) = &res {
                tracing::error!(error = %e, "WAL fsync failed");
            }
            outcome.insert(key, res.err().map(|e| e.to_string()));
        }
        for (key, f) in self.deferred.drain(..) {
            match outcome.get(&key).cloned().flatten() {
                None => f(Ok(())),
                Some(msg) => f(Err(EngineError::Io(std::io::Error::other(msg)))),
            }
        }
    }
}

/// The set of worker threads.
pub struct Runtime {
    senders: Vec<mpsc::Sender<Job>>,
    handles: Mutex<Vec<JoinHandle<()>>>,
}

impl Runtime {
    /// Starts `workers` threads (0 = one per core), pinned to cores when `pin` is set.
    pub fn start(workers: usize, pin: bool) -> Runtime {
        let cores = core_affinity::get_core_ids().unwrap_or_default();
        let n = if workers == 0 { cores.len().max(1) } else { workers };
        let mut senders = Vec::with_capacity(n);
        let mut handles = Vec::with_capacity(n);
        for i in 0..n {
            let (tx, rx) = mpsc::channel::<Job>();
            let core = if pin && !cores.is_empty() {
                Some(cores[i % cores.len()])
            } else {
                None
            };
            let handle = std::thread::Builder::new()
                .name(format!("quiver-worker-{i}"))
                .spawn(move || {
                    if let Some(core) = core {
                        core_affinity::set_for_current(core);
                    }
                    run(rx)
                })
                .expect("spawning a worker thread");
            senders.push(tx);
            handles.push(handle);
        }
        Runtime {
            senders,
            handles: Mutex::new(handles),
        }
    }

    /// Number of worker threads.
    pub fn workers(&self) -> usize {
        self.senders.len()
    }

    /// Runs `f` on worker `worker` and returns a receiver for its result.
    pub fn call<T: Send + 'static>(
        &self,
        worker: usize,
        f: impl FnOnce(&mut Worker) -> T + Send + 'static,
    ) -> Result<oneshot::Receiver<T>> {
        let (tx, rx) = oneshot::channel();
        self.submit(worker, move |w| {
            let _ = tx.send(f(w));
        })?;
        Ok(rx)
    }

    /// Runs `f` on worker `worker`; `f` replies by itself (possibly after a sync).
    pub fn submit(&self, worker: usize, f: impl FnOnce(&mut Worker) + Send + 'static) -> Result<()> {
        self.senders[worker % self.senders.len()]
            .send(Box::new(f))
            .map_err(|_| EngineError::ShuttingDown)
    }

    /// Syncs every shard and stops every worker; later calls fail with `ShuttingDown`.
    pub fn shutdown(&self) {
        for tx in &self.senders {
            let _ = tx.send(Box::new(|w: &mut Worker| w.stop = true));
        }
        let handles = std::mem::take(&mut *self.handles.lock().unwrap_or_else(|p| p.into_inner()));
        for h in handles {
            let _ = h.join();
        }
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Runs one job; a panic is contained so the worker (and every other shard it owns) keeps
/// serving. The panicking job's reply sender is dropped, so its caller sees an error.
fn run_job(job: Job, w: &mut Worker) {
    if let Err(panic) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(w))) {
        let msg = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        tracing::error!(panic = %msg, "a shard job panicked; the worker keeps running");
    }
}

fn run(rx: mpsc::Receiver<Job>) {
    let mut w = Worker::default();
    let mut last_sync = Instant::now();
    loop {
        match rx.recv_timeout(SYNC_INTERVAL) {
            Ok(job) => {
                run_job(job, &mut w);
                for _ in 1..MAX_BATCH {
                    match rx.try_recv() {
                        Ok(job) => run_job(job, &mut w),
                        Err(_) => break,
                    }
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        let all = last_sync.elapsed() >= SYNC_INTERVAL || w.stop;
        w.sync(all);
        if all {
            last_sync = Instant::now();
        }
        if w.stop {
            break;
        }
    }
    w.sync(true);
    // Jobs still queued can no longer run; dropping them drops their reply senders, so their
    // callers see a closed channel rather than waiting forever.
    drop(rx);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panicking_job_does_not_kill_the_worker() {
        let rt = Runtime::start(1, false);
        let failed = rt.call(0, |_| -> u32 { panic!("boom") }).unwrap();
        assert!(failed.recv().is_err(), "the caller sees the failure");
        let ok = rt.call(0, |_| 7u32).unwrap();
        assert_eq!(ok.recv().unwrap(), 7, "the same worker still serves");
        rt.shutdown();
    }
}
