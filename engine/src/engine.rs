//! The engine: the catalog of collections on top of the worker runtime.
//!
//! Layout under the storage path:
//! ```text
//! collections/<name>/config.json
//! collections/<name>/<shard>/...      (see shard.rs)
//! ```
//! A collection appears atomically: it is built under `collections/.tmp-<name>` and renamed into
//! place; a deleted one is renamed to `collections/.deleted-<uid>` before its files are removed.
//! Leftovers of either are cleared at start.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use crate::collection::{CONFIG_FILE, Collection};
use crate::error::{EngineError, Result};
use crate::fsutil;
use crate::runtime::Runtime;
use crate::types::CollectionConfig;

/// How to start an engine.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Root of all collection data.
    pub storage_path: PathBuf,
    /// Worker threads (0 = one per core).
    pub workers: usize,
    /// Pin each worker to a core.
    pub pin_threads: bool,
}

impl EngineOptions {
    /// Defaults: one pinned worker per core.
    pub fn new(storage_path: impl Into<PathBuf>) -> Self {
        EngineOptions {
            storage_path: storage_path.into(),
            workers: 0,
            pin_threads: true,
        }
    }
}

/// The engine (see the module docs). Cheap to share behind an `Arc`.
pub struct Engine {
    root: PathBuf,
    rt: Arc<Runtime>,
    collections: RwLock<HashMap<String, Arc<Collection>>>,
    /// Serialises create/delete so two of them never race on one name.
    ddl: Mutex<()>,
    next_uid: AtomicU64,
}

/// Checks that `name` can be a directory name of its own.
pub fn validate_collection_name(name: &str) -> Result<()> {
    let err = |why| Err(EngineError::InvalidName(name.to_string(), why));
    if name.is_empty() {
        return err("must not be empty");
    }
    if name.len() > 255 {
        return err("must be at most 255 bytes");
    }
    if name.starts_with('.') {
        return err("must not start with `.`");
    }
    if name.chars().any(|c| matches!(c, '/' | '\\' | '\0') || c.is_control()) {
        return err("must not contain `/`, `\\` or control characters");
    }
    Ok(())
}

impl Engine {
    /// Opens the storage (creating it when missing), loading and replaying every collection.
    pub fn open(opts: EngineOptions) -> Result<Engine> {
        let root = opts.storage_path.join("collections");
        fs::create_dir_all(&root)?;
        let engine = Engine {
            root: root.clone(),
            rt: Arc::new(Runtime::start(opts.workers, opts.pin_threads)),
            collections: RwLock::new(HashMap::new()),
            ddl: Mutex::new(()),
            next_uid: AtomicU64::new(1),
        };
        let mut names = Vec::new();
        for entry in fs::read_dir(&root)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(".tmp-") || name.starts_with(".deleted-") {
                fsutil::remove_any(&entry.path())?;
            } else if entry.file_type()?.is_dir() {
                names.push(name);
            }
        }
        names.sort();
        for name in names {
            let dir = root.join(&name);
            let cfg: CollectionConfig = serde_json::from_slice(&fs::read(dir.join(CONFIG_FILE))?)
                .map_err(|e| EngineError::Corrupted(format!("{}: {e}", dir.join(CONFIG_FILE).display())))?;
            let uid = engine.next_uid.fetch_add(1, Ordering::Relaxed);
            let c = Collection::open(&name, uid, &dir, cfg, engine.rt.clone())?;
            tracing::info!(collection = %name, "collection loaded");
            engine.map_write().insert(name, Arc::new(c));
        }
        Ok(engine)
    }

    fn map_write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Arc<Collection>>> {
        self.collections.write().unwrap_or_else(|p| p.into_inner())
    }

    fn map_read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Arc<Collection>>> {
        self.collections.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Number of worker threads.
    pub fn workers(&self) -> usize {
        self.rt.workers()
    }

    /// Directory that holds the collections.
    pub fn collections_dir(&self) -> &Path {
        &self.root
    }

    /// Creates a collection. Blocks while its shards are created.
    pub fn create_collection(&self, name: &str, mut config: CollectionConfig) -> Result<Arc<Collection>> {
        validate_collection_name(name)?;
        config.validate()?;
        if config.shard_number == 0 {
            config.shard_number = self.workers() as u32;
        }
        let _ddl = self.ddl.lock().unwrap_or_else(|p| p.into_inner());
        if self.map_read().contains_key(name) {
            return Err(EngineError::CollectionExists(name.to_string()));
        }
        let dir = self.root.join(name);
        let tmp = self.root.join(format!(".tmp-{name}"));
        fsutil::remove_any(&tmp)?;
        fs::create_dir_all(&tmp)?;
        let staged = (|| -> Result<()> {
            fsutil::atomic_write(
                &tmp.join(CONFIG_FILE),
                &serde_json::to_vec_pretty(&config).map_err(std::io::Error::other)?,
            )?;
            fs::rename(&tmp, &dir)?;
            fsutil::fsync_dir(&self.root)?;
            Ok(())
        })();
        if let Err(e) = staged {
            let _ = fsutil::remove_any(&tmp);
            return Err(e);
        }
        let uid = self.next_uid.fetch_add(1, Ordering::Relaxed);
        match Collection::open(name, uid, &dir, config, self.rt.clone()) {
            Ok(c) => {
                let c = Arc::new(c);
                self.map_write().insert(name.to_string(), c.clone());
                Ok(c)
            }
            Err(e) => {
                let _ = fsutil::remove_any(&dir);
                Err(e)
            }
        }
    }

    /// Deletes a collection and its files. Returns false when it did not exist.
    pub fn delete_collection(&self, name: &str) -> Result<bool> {
        let _ddl = self.ddl.lock().unwrap_or_else(|p| p.into_inner());
        let Some(c) = self.map_write().remove(name) else {
            return Ok(false);
        };
        c.close_blocking();
        let grave = self.root.join(format!(
            ".deleted-{}-{}",
            std::process::id(),
            self.next_uid.fetch_add(1, Ordering::Relaxed)
        ));
        fs::rename(c.dir(), &grave)?;
        fsutil::fsync_dir(&self.root)?;
        fsutil::remove_any(&grave)?;
        Ok(true)
    }

    /// The collection called `name`.
    pub fn collection(&self, name: &str) -> Result<Arc<Collection>> {
        self.map_read()
            .get(name)
            .cloned()
            .ok_or_else(|| EngineError::CollectionNotFound(name.to_string()))
    }

    /// Names of all collections, sorted.
    pub fn list_collections(&self) -> Vec<String> {
        let mut v: Vec<String> = self.map_read().keys().cloned().collect();
        v.sort();
        v
    }

    /// Syncs every WAL and stops the workers.
    pub fn shutdown(&self) {
        self.rt.shutdown();
    }
}
