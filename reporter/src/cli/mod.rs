//! The subcommands: each an `Args`/`Command` and a `run`.

pub mod agent;
pub mod serve;
pub mod token;

use std::path::PathBuf;

use anyhow::Context;
use flotilla_reporter::settings::{FileSettings, Settings};

/// Logs go to stderr, filtered by `FLOTILLA_LOG` (default `info`).
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("FLOTILLA_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

/// Where the database is, for the admin subcommands.
#[derive(clap::Args)]
pub struct DbArgs {
    /// The SQLite database [default: ./flotilla-reporter.db, or the config file's `db`].
    #[arg(long)]
    pub db: Option<PathBuf>,
    /// A TOML config file (the same as `serve --config`).
    #[arg(long)]
    pub config: Option<PathBuf>,
}

impl DbArgs {
    /// Opens (creating and migrating) the database.
    pub fn open(&self) -> anyhow::Result<rusqlite::Connection> {
        let mut s = Settings::default();
        if let Some(c) = &self.config {
            FileSettings::load(c)?.apply(&mut s)?;
        }
        if let Some(db) = &self.db {
            s.db = db.clone();
        }
        flotilla_reporter::db::open_writer(&s.db, s.durability)
            .with_context(|| format!("opening {}", s.db.display()))
    }
}
