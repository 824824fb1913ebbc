//! Configuration in Qdrant's layout: embedded defaults, then a YAML file, then
//! `QDRANT__SECTION__KEY` environment variables (the `config` crate, as Qdrant itself uses).

use std::path::{Path, PathBuf};

use serde::Deserialize;

const DEFAULT_CONFIG: &str = include_str!("../config/default.yaml");

/// `service.*`.
#[derive(Debug, Clone, Deserialize)]
pub struct ServiceSettings {
    /// Address to listen on.
    pub host: String,
    /// REST port.
    pub http_port: u16,
    /// gRPC port (reserved: gRPC is not served yet).
    pub grpc_port: Option<u16>,
    /// When set, every route but the health probes requires this key.
    pub api_key: Option<String>,
    /// A key that only allows reading.
    pub read_only_api_key: Option<String>,
    /// Largest request body accepted, in MiB.
    pub max_request_size_mb: usize,
    /// Whether snapshots may be recovered from URLs.
    pub enable_snapshot_url_recovery: bool,
}

/// `storage.snapshots_config.*`.
#[derive(Debug, Clone, Deserialize)]
pub struct SnapshotsConfig {
    /// `local` or `s3`.
    pub snapshots_storage: String,
    /// S3 settings (used when `snapshots_storage` is `s3`).
    pub s3_config: Option<quiver_io::s3::S3Config>,
}

/// `storage.*`.
#[derive(Debug, Clone, Deserialize)]
pub struct StorageSettings {
    /// Collections live under this directory.
    pub storage_path: PathBuf,
    /// Snapshots are written here.
    pub snapshots_path: PathBuf,
    /// Staging directory for snapshots (defaults to a folder inside the storage).
    pub temp_path: Option<PathBuf>,
    /// Engine worker threads (0 = one per core).
    pub workers: usize,
    /// Seal size of appendable segments for new collections.
    pub segment_max_points: usize,
    /// Largest total size a recovered snapshot may unpack to, in MiB.
    pub recovery_max_unpacked_mb: u64,
    /// Snapshot storage.
    pub snapshots_config: SnapshotsConfig,
}

/// Everything the server reads from its configuration.
#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    /// Default log filter (`RUST_LOG` wins when set).
    pub log_level: String,
    /// `service.*`.
    pub service: ServiceSettings,
    /// `storage.*`.
    pub storage: StorageSettings,
}

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// The named config file does not exist.
    #[error("config file {0} does not exist")]
    Missing(PathBuf),
    /// Parsing or merging failed.
    #[error("invalid configuration: {0}")]
    Invalid(#[from] config::ConfigError),
}

impl Settings {
    /// Loads defaults, then `path` (or `config/config.yaml` when it exists), then the environment.
    pub fn load(path: Option<&Path>) -> Result<Settings, SettingsError> {
        let mut builder =
            config::Config::builder().add_source(config::File::from_str(DEFAULT_CONFIG, config::FileFormat::Yaml));
        match path {
            Some(p) if !p.exists() => return Err(SettingsError::Missing(p.to_path_buf())),
            Some(p) => builder = builder.add_source(config::File::from(p).format(config::FileFormat::Yaml)),
            None => {
                let default = Path::new("config/config.yaml");
                if default.exists() {
                    builder = builder.add_source(config::File::from(default).format(config::FileFormat::Yaml));
                }
            }
        }
        let env = config::Environment::with_prefix("QDRANT")
            .prefix_separator("__")
            .separator("__")
            .try_parsing(true);
        Ok(builder.add_source(env).build()?.try_deserialize()?)
    }

    /// The staging directory for snapshots.
    pub fn temp_path(&self) -> PathBuf {
        self.storage
            .temp_path
            .clone()
            .unwrap_or_else(|| self.storage.storage_path.join(".tmp"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_file_and_env_layer_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.yaml");
        std::fs::write(
            &file,
            "service:\n  http_port: 7000\n  api_key: from-file\nstorage:\n  snapshots_path: /from/file\n",
        )
        .unwrap();
        // SAFETY: this test is the only one in this binary that touches the environment.
        unsafe { std::env::set_var("QDRANT__STORAGE__SNAPSHOTS_PATH", "/from/env") };
        let s = Settings::load(Some(&file)).unwrap();
        unsafe { std::env::remove_var("QDRANT__STORAGE__SNAPSHOTS_PATH") };
        assert_eq!(s.service.http_port, 7000);
        assert_eq!(s.service.api_key.as_deref(), Some("from-file"));
        assert_eq!(s.storage.snapshots_path, PathBuf::from("/from/env"));
        assert_eq!(s.storage.storage_path, PathBuf::from("./storage"));
        assert_eq!(s.service.max_request_size_mb, 32);
        assert!(matches!(
            Settings::load(Some(Path::new("/nope.yaml"))),
            Err(SettingsError::Missing(_))
        ));
    }
}
