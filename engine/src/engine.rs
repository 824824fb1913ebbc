//! The engine: the catalog of collections on top of the worker runtime.
//!
//! Layout under the storage path:
//! ```text
//! collections/<name>/config.json
//! collections/<name>/<shard>/...      (see shard.rs)
//! aliases.json                        alias → collection
//! ```
//! A collection appears atomically: it is built under `collections/.tmp-<name>` and renamed into
//! place; a deleted one is renamed to `collections/.deleted-<uid>` before its files are removed.
//! Leftovers of either are cleared at start. A recovered collection is staged in
//! `collections/.tmp-recover-*`; installing it moves the live one to `.replaced-<uid>-<name>` and
//! the staged one into place: if a crash falls between those two renames, the next start moves
//! the old data back.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use crate::collection::{CONFIG_FILE, Collection};
use crate::error::{EngineError, Result};
use crate::fsutil;
use crate::runtime::Runtime;
use crate::types::CollectionConfig;

/// Prefix of a collection directory moved aside while a recovery installs its replacement.
const REPLACED_PREFIX: &str = ".replaced-";

/// File holding the aliases, beside `collections/`.
pub const ALIASES_FILE: &str = "aliases.json";

/// One change to the aliases; a list of them is applied all or nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AliasAction {
    /// Points `alias` at `collection` (replacing what it pointed at).
    Create {
        /// Target collection.
        collection: String,
        /// Alias name.
        alias: String,
    },
    /// Removes an alias.
    Delete {
        /// Alias name.
        alias: String,
    },
    /// Renames an alias.
    Rename {
        /// Current name.
        old: String,
        /// New name.
        new: String,
    },
}

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
    storage: PathBuf,
    root: PathBuf,
    /// Alias name → collection name; persisted in `aliases.json` beside `collections/`.
    aliases: RwLock<BTreeMap<String, String>>,
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
        let aliases_path = opts.storage_path.join(ALIASES_FILE);
        let aliases: BTreeMap<String, String> = match fs::read(&aliases_path) {
            Ok(b) => serde_json::from_slice(&b)
                .map_err(|e| EngineError::Corrupted(format!("{}: {e}", aliases_path.display())))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(e.into()),
        };
        let engine = Engine {
            storage: opts.storage_path.clone(),
            aliases: RwLock::new(aliases),
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
            } else if let Some((_, collection)) = name.strip_prefix(REPLACED_PREFIX).and_then(|r| r.split_once('-')) {
                // A recovery was interrupted after the old data was moved aside: when the new
                // data never arrived, the old data is put back; otherwise it is dropped.
                let target = root.join(collection);
                if target.exists() {
                    fsutil::remove_any(&entry.path())?;
                } else {
                    tracing::warn!(collection, "restoring data of an interrupted recovery");
                    fs::rename(entry.path(), &target)?;
                    fsutil::fsync_dir(&root)?;
                    names.push(collection.to_string());
                }
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
        if self.map_read().contains_key(name)
            || self
                .aliases
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .contains_key(name)
        {
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

    /// A fresh staging directory for a collection being recovered, on the same filesystem as the
    /// collections (so installing it is a rename) and removed at start-up if left behind.
    pub fn staging_dir(&self) -> PathBuf {
        self.root.join(format!(
            ".tmp-recover-{}-{}",
            std::process::id(),
            self.next_uid.fetch_add(1, Ordering::Relaxed)
        ))
    }

    /// Replaces (or creates) collection `name` with the collection directory `staged` (from
    /// [`Engine::staging_dir`]). The staged data is opened and checked first, under a private
    /// identity, while the live collection keeps answering; only then is the live collection
    /// closed and the directories swapped by renames, the old data being removed after the swap.
    /// On error the live collection is as it was; `staged` is left for the caller to remove.
    pub fn install_collection(&self, name: &str, staged: &Path) -> Result<Arc<Collection>> {
        validate_collection_name(name)?;
        let cfg_path = staged.join(CONFIG_FILE);
        let cfg: CollectionConfig = serde_json::from_slice(&fs::read(&cfg_path)?)
            .map_err(|e| EngineError::Corrupted(format!("{}: {e}", cfg_path.display())))?;
        cfg.validate()?;
        if cfg.shard_number == 0 {
            return Err(EngineError::Corrupted("config.json: shard_number is 0".into()));
        }
        let trial = Collection::open(
            name,
            self.next_uid.fetch_add(1, Ordering::Relaxed),
            staged,
            cfg.clone(),
            self.rt.clone(),
        )?;
        trial.close_blocking();
        drop(trial);

        let _ddl = self.ddl.lock().unwrap_or_else(|p| p.into_inner());
        if self
            .aliases
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(name)
        {
            return Err(EngineError::bad(format!(
                "`{name}` is an alias; recover into the collection it points at"
            )));
        }
        let dir = self.root.join(name);
        // Named after the collection: if a crash falls between moving the old data aside and
        // moving the new data in, the next start puts the old data back (see `open`).
        let grave = self.root.join(format!(
            "{REPLACED_PREFIX}{}-{name}",
            self.next_uid.fetch_add(1, Ordering::Relaxed)
        ));
        let old = self.map_write().remove(name);
        if let Some(old) = &old {
            old.close_blocking();
        }
        let had_dir = dir.exists();
        let swapped = (|| -> Result<Arc<Collection>> {
            if had_dir {
                fs::rename(&dir, &grave)?;
            }
            fs::rename(staged, &dir)?;
            fsutil::fsync_dir(&self.root)?;
            let uid = self.next_uid.fetch_add(1, Ordering::Relaxed);
            Ok(Arc::new(Collection::open(name, uid, &dir, cfg, self.rt.clone())?))
        })();
        match swapped {
            Ok(c) => {
                self.map_write().insert(name.to_string(), c.clone());
                if had_dir {
                    fsutil::remove_any(&grave)?;
                }
                Ok(c)
            }
            Err(e) => {
                // Put the previous data back where it was and serve it again.
                if dir.exists() && !staged.exists() {
                    let _ = fs::rename(&dir, staged);
                }
                if had_dir && grave.exists() {
                    let _ = fs::rename(&grave, &dir);
                }
                let _ = fsutil::fsync_dir(&self.root);
                if old.is_some() {
                    let uid = self.next_uid.fetch_add(1, Ordering::Relaxed);
                    let cfg: CollectionConfig = serde_json::from_slice(&fs::read(dir.join(CONFIG_FILE))?)
                        .map_err(|e| EngineError::Corrupted(format!("{}: {e}", dir.join(CONFIG_FILE).display())))?;
                    let back = Collection::open(name, uid, &dir, cfg, self.rt.clone())?;
                    self.map_write().insert(name.to_string(), Arc::new(back));
                }
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
        {
            let mut aliases = self.aliases.write().unwrap_or_else(|p| p.into_inner());
            if aliases.values().any(|t| t == name) {
                let mut next = aliases.clone();
                next.retain(|_, t| t != name);
                self.persist_aliases(&next)?;
                *aliases = next;
            }
        }
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
        let map = self.map_read();
        if let Some(c) = map.get(name) {
            return Ok(c.clone());
        }
        let target = self
            .aliases
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned();
        target
            .and_then(|t| map.get(&t).cloned())
            .ok_or_else(|| EngineError::CollectionNotFound(name.to_string()))
    }

    /// The storage root.
    pub fn storage_path(&self) -> &Path {
        &self.storage
    }

    /// Applies alias changes all or nothing, persisting them atomically.
    pub fn update_aliases(&self, actions: &[AliasAction]) -> Result<()> {
        let _ddl = self.ddl.lock().unwrap_or_else(|p| p.into_inner());
        let mut aliases = self.aliases.write().unwrap_or_else(|p| p.into_inner());
        let mut next = aliases.clone();
        {
            let collections = self.map_read();
            for a in actions {
                match a {
                    AliasAction::Create { collection, alias } => {
                        validate_collection_name(alias)?;
                        if !collections.contains_key(collection) {
                            return Err(EngineError::CollectionNotFound(collection.clone()));
                        }
                        if collections.contains_key(alias) {
                            return Err(EngineError::bad(format!("alias `{alias}` is the name of a collection")));
                        }
                        next.insert(alias.clone(), collection.clone());
                    }
                    AliasAction::Delete { alias } => {
                        next.remove(alias)
                            .ok_or_else(|| EngineError::AliasNotFound(alias.clone()))?;
                    }
                    AliasAction::Rename { old, new } => {
                        validate_collection_name(new)?;
                        if collections.contains_key(new) {
                            return Err(EngineError::bad(format!("alias `{new}` is the name of a collection")));
                        }
                        let target = next
                            .remove(old)
                            .ok_or_else(|| EngineError::AliasNotFound(old.clone()))?;
                        next.insert(new.clone(), target);
                    }
                }
            }
        }
        self.persist_aliases(&next)?;
        *aliases = next;
        Ok(())
    }

    fn persist_aliases(&self, aliases: &BTreeMap<String, String>) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(aliases).map_err(std::io::Error::other)?;
        fsutil::atomic_write(&self.storage.join(ALIASES_FILE), &bytes)?;
        Ok(())
    }

    /// Every alias and its collection, sorted by alias.
    pub fn aliases(&self) -> BTreeMap<String, String> {
        self.aliases.read().unwrap_or_else(|p| p.into_inner()).clone()
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
