//! `quiver`: Quiver's server. Loads the configuration, opens (and recovers) the storage, serves
//! Qdrant's REST API, and on SIGINT/SIGTERM stops accepting connections, finishes in-flight
//! requests and syncs every WAL before exiting.

mod api;
mod http;
mod recovery;
mod settings;
mod snapshots;
mod snapshots_s3;

use std::path::PathBuf;
use std::sync::Arc;

use clap::Parser;
use quiver_engine::{Engine, EngineOptions};

use settings::Settings;

/// Command-line options (Qdrant's where they exist).
#[derive(Debug, Parser)]
#[command(
    name = "quiver",
    version,
    about = "Quiver: a vector search engine that speaks Qdrant's API"
)]
struct Args {
    /// YAML configuration file (default: config/config.yaml when present).
    #[arg(long)]
    config_path: Option<PathBuf>,
    /// Restore a collection snapshot before serving: `<path>:<collection>` (repeatable; the same
    /// file may feed several collections).
    #[arg(long = "snapshot", value_name = "PATH:COLLECTION")]
    snapshots: Vec<String>,
    /// Overwrite collections that already exist when restoring snapshots at start-up.
    #[arg(long)]
    force_snapshot: bool,
    /// Restore a full-storage snapshot (collections and aliases) before serving.
    #[arg(long, value_name = "PATH")]
    storage_snapshot: Option<PathBuf>,
}

fn main() {
    let args = Args::parse();
    let settings = match Settings::load(args.config_path.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(settings.log_level.to_lowercase()));
    tracing_subscriber::fmt().with_env_filter(filter).init();
    if let Err(e) = run(settings, &args) {
        tracing::error!("{e}");
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run(settings: Settings, args: &Args) -> Result<(), String> {
    let engine = Engine::open(EngineOptions {
        storage_path: settings.storage.storage_path.clone(),
        workers: settings.storage.workers,
        pin_threads: true,
    })
    .map_err(|e| {
        format!(
            "cannot open storage at {}: {e}",
            settings.storage.storage_path.display()
        )
    })?;
    let limit = settings.storage.recovery_max_unpacked_mb.saturating_mul(1 << 20);
    let restored = (|| -> Result<(), String> {
        if let Some(path) = &args.storage_snapshot {
            let names = recovery::recover_storage_at_startup(&engine, path, args.force_snapshot, limit)?;
            tracing::info!(snapshot = %path.display(), collections = ?names, "storage snapshot restored");
        }
        for spec in &args.snapshots {
            let (path, name) = spec
                .rsplit_once(':')
                .filter(|(p, n)| !p.is_empty() && !n.is_empty())
                .ok_or_else(|| format!("--snapshot expects <path>:<collection>, got `{spec}`"))?;
            recovery::recover_at_startup(&engine, std::path::Path::new(path), name, args.force_snapshot, limit)?;
            tracing::info!(snapshot = path, collection = name, "collection snapshot restored");
        }
        Ok(())
    })();
    if let Err(e) = restored {
        engine.shutdown();
        return Err(e);
    }
    let engine = Arc::new(engine);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("quiver-http")
        .build()
        .map_err(|e| format!("cannot start the HTTP runtime: {e}"))?;
    let addr = format!("{}:{}", settings.service.host, settings.service.http_port);
    tracing::info!(
        storage_path = %settings.storage.storage_path.display(),
        snapshots_path = %settings.storage.snapshots_path.display(),
        temp_path = %settings.temp_path().display(),
        snapshots_storage = %settings.storage.snapshots_config.snapshots_storage,
        s3_configured = settings.storage.snapshots_config.s3_config.is_some(),
        grpc_port = ?settings.service.grpc_port,
        url_recovery = settings.service.enable_snapshot_url_recovery,
        "configuration loaded (gRPC is not served yet)"
    );
    let snapshots = snapshots::Snapshots::open(
        &settings.storage.snapshots_path,
        settings.storage.temp_path.as_deref(),
        &settings.storage.storage_path,
    )
    .map_err(|e| {
        format!(
            "cannot open snapshots folder {}: {e}",
            settings.storage.snapshots_path.display()
        )
    })?;
    let s3 =
        match settings.storage.snapshots_config.snapshots_storage.as_str() {
            "local" => None,
            "s3" => {
                let cfg =
                    settings.storage.snapshots_config.s3_config.clone().ok_or(
                        "snapshots_storage is `s3` but storage.snapshots_config.s3_config is not set".to_string(),
                    )?;
                let store = quiver_io::s3::S3Store::new(&cfg).map_err(|e| e.to_string())?;
                tracing::info!(bucket = %cfg.bucket, endpoint = ?cfg.endpoint_url, part_size = store.part_size(),
                parts_in_flight = store.parts_in_flight(), "snapshots are stored in S3");
                Some(Arc::new(snapshots_s3::S3Snapshots::new(
                    store,
                    snapshots.node_id(),
                    settings.storage.temp_path.clone(),
                )))
            }
            other => {
                return Err(format!(
                    "storage.snapshots_config.snapshots_storage must be `local` or `s3`, not `{other}`"
                ));
            }
        };
    let state = Arc::new(api::AppState::new(engine.clone(), Arc::new(snapshots), s3, settings));
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(&addr).await.map_err(|e| format!("cannot listen on {addr}: {e}"))?;
        let local = listener.local_addr().map_err(|e| e.to_string())?;
        tracing::info!(address = %local, collections = engine.list_collections().len(), workers = engine.workers(), "Qdrant-compatible REST API listening");
        http::serve(listener, state, shutdown_signal()).await;
        Ok::<_, String>(())
    })?;
    engine.shutdown();
    tracing::info!("shut down cleanly");
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGTERM");
            return std::future::pending().await;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
        _ = term.recv() => tracing::info!("SIGTERM received"),
    }
}
