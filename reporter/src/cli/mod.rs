//! The subcommands: each an `Args`/`Command` and a `run`.

pub mod agent;
pub mod backup;
pub mod db;
pub mod serve;
pub mod token;

use std::future::Future;
use std::io::IsTerminal;
use std::path::PathBuf;

use flotilla_reporter::settings::{DbTarget, FileSettings, Settings};
use flotilla_reporter::store::Store;

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
    /// The database: a SQLite file, or a postgres:// URL without a password
    /// (that comes from --db-password-file, the config's `db_password_file`
    /// or PGPASSWORD) [default: ./flotilla-reporter.db, or the config
    /// file's `db`].
    #[arg(long)]
    pub db: Option<String>,
    /// PostgreSQL: a file holding the password (mode 0600).
    #[arg(long, value_name = "FILE")]
    pub db_password_file: Option<PathBuf>,
    /// PostgreSQL: the CA certificates (PEM) its TLS certificate must chain
    /// to [default: the system's].
    #[arg(long, value_name = "FILE")]
    pub db_ca_file: Option<PathBuf>,
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
        FileSettings {
            db: self.db.clone(),
            db_password_file: self.db_password_file.clone(),
            db_ca_file: self.db_ca_file.clone(),
            ..FileSettings::default()
        }
        .apply(&mut s)?;
        Ok(s)
    }

    /// Runs `f` on the store of the database, which must exist (a typo'd
    /// `--db` must not make a new, empty one; it is migrated), then
    /// waits for the writes to be committed.
    pub fn with_store<T, F, Fut>(&self, f: F) -> anyhow::Result<T>
    where
        F: FnOnce(Store) -> Fut,
        Fut: Future<Output = anyhow::Result<T>>,
    {
        let s = self.settings()?;
        block_on(async move {
            let (store, running) = Store::open_existing(&s).await?;
            let r = f(store).await;
            running.stop().await;
            r
        })
    }
}

/// Runs `f` on a runtime of the calling thread (for the admin commands).
fn block_on<T>(f: impl Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(f)
}

/// The SQLite file of `db`, for the commands that only SQLite has.
pub fn sqlite_only<'a>(db: &'a DbTarget, what: &str) -> anyhow::Result<&'a std::path::Path> {
    db.sqlite_path().ok_or_else(|| {
        anyhow::anyhow!("{what} works on a SQLite database; {db} is PostgreSQL (use its own tools)")
    })
}

/// `init`: creates the database (mode 0600) or migrates an existing one.
pub fn init(db: DbArgs) -> anyhow::Result<()> {
    let s = db.settings()?;
    let version = block_on(async {
        let (store, running) = Store::open(&s).await?;
        let v = store.schema_version().await;
        drop(store);
        running.stop().await;
        Ok(v?)
    })?;
    eprintln!("database {} is ready (schema version {version})", s.db);
    Ok(())
}
