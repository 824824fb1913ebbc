//! `quiver`: opens the storage (replaying every WAL) and serves until SIGINT/SIGTERM.
//!
//! The Qdrant-compatible REST and gRPC APIs are not served yet (they are the next issue); today
//! the binary loads and recovers the storage, reports what it holds, and shuts down cleanly,
//! syncing every WAL.

use std::path::PathBuf;

use clap::Parser;
use quiver_engine::{Engine, EngineOptions};
use signal_hook::consts::{SIGINT, SIGTERM};

/// Command-line options.
#[derive(Debug, Parser)]
#[command(name = "quiver", version, about = "Quiver vector search engine")]
struct Args {
    /// Directory holding collections.
    #[arg(
        long,
        env = "QDRANT__STORAGE__STORAGE_PATH",
        default_value = "./storage"
    )]
    storage_path: PathBuf,
    /// Worker threads (0 = one per core).
    #[arg(long, default_value_t = 0)]
    workers: usize,
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let mut signals = match signal_hook::iterator::Signals::new([SIGINT, SIGTERM]) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: cannot install signal handlers: {e}");
            std::process::exit(1);
        }
    };
    let engine = match Engine::open(EngineOptions {
        storage_path: args.storage_path.clone(),
        workers: args.workers,
        pin_threads: true,
    }) {
        Ok(e) => e,
        Err(e) => {
            eprintln!(
                "error: cannot open storage at {}: {e}",
                args.storage_path.display()
            );
            std::process::exit(1);
        }
    };
    let names = engine.list_collections();
    tracing::info!(storage = %args.storage_path.display(), workers = engine.workers(), collections = names.len(), "storage open; waiting for SIGINT/SIGTERM");
    if let Some(sig) = signals.forever().next() {
        tracing::info!(signal = sig, "shutting down");
    }
    engine.shutdown();
}
