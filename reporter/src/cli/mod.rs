//! The subcommands: each an `Args`/`Command` and a `run`.

pub mod agent;
pub mod backup;
pub mod db;
pub mod serve;
pub mod token;

use std::io::IsTerminal;
use std::path::PathBuf;

use flotilla_reporter::settings::{FileSettings, Settings};

/// Logs go to stderr, filtered by `FLOTILLA_LOG` (default `info`), in
/// colour only on a terminal (not into journald or a file) and unless
/// `NO_COLOR` is set (<https://no-color.org>).
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("FLOTILLA_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal() && !no_color)
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
    /// The settings: defaults, the config file, then `--db`.
    pub fn settings(&self) -> anyhow::Result<Settings> {
        let mut s = Settings::default();
        if let Some(c) = &self.config {
            FileSettings::load(c)?.apply(&mut s)?;
        }
        if let Some(db) = &self.db {
            s.db = db.clone();
        }
        Ok(s)
    }

    /// Opens (and migrates) the database, which must exist: a typo'd
    /// `--db` must not make a new, empty one.
    pub fn open(&self) -> anyhow::Result<rusqlite::Connection> {
        let s = self.settings()?;
        Ok(flotilla_reporter::db::open_existing(&s.db, s.durability)?)
    }
}

/// `init`: creates the database (mode 0600) or migrates an existing one.
pub fn init(db: DbArgs) -> anyhow::Result<()> {
    let s = db.settings()?;
    let conn = flotilla_reporter::db::open_writer(&s.db, s.durability)?;
    let version: u32 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    eprintln!(
        "database {} is ready (schema version {version})",
        s.db.display()
    );
    Ok(())
}
