//! `flotilla-reporter db copy --from PATH.sqlite --to postgres://...`.

use std::path::PathBuf;

use anyhow::Context;
use flotilla_reporter::db::copy::copy_sqlite_to_pg;
use flotilla_reporter::db::pg::{self, Pg};

/// `db copy --help`'s epilogue.
pub const COPY_HELP: &str = "\
Moves a reporter from one SQLite file to PostgreSQL, keeping its past: the
enrollment and read tokens, the agents (their tokens keep working), every
event (with its sequence number, so API cursors stay valid), rollout state,
halts, the rollout history, queued notices and web sessions.

The PostgreSQL database must exist (CREATE DATABASE flotilla OWNER ...);
its schema is created or migrated first. The SQLite file is read as of one
moment, safely while `serve` runs on it, and streamed in batches; all rows
go in one transaction, so a failed copy leaves nothing behind. Copying
again adds what is new and updates what changed (a second copy of the same
file reports 0 new, 0 changed). To move with a short pause: copy while the
old reporter runs, stop it, copy again, start the reporters on PostgreSQL.
Rows deleted from SQLite between two copies (pruned events, notices sent,
expired sessions) stay in PostgreSQL: a notice sent meanwhile is sent again.

The URL holds no password (it would show in the process list): give it in
--db-password-file, or in PGPASSWORD.

Example:
  flotilla-reporter db copy --from /var/lib/flotilla-reporter/db.sqlite \\
      --to postgres://flotilla@db.example:5432/flotilla \\
      --db-password-file /etc/flotilla-reporter/db-password";

/// Database moves.
#[derive(clap::Subcommand)]
pub enum Command {
    /// Copy a SQLite database into PostgreSQL, idempotently.
    #[command(after_help = COPY_HELP)]
    Copy(CopyArgs),
}

/// `db copy`'s arguments.
#[derive(clap::Args)]
pub struct CopyArgs {
    /// The SQLite database to copy (it must exist).
    #[arg(long, value_name = "PATH")]
    from: PathBuf,
    /// The PostgreSQL database: postgres://USER@HOST[:PORT]/DBNAME, no password.
    #[arg(long, value_name = "URL")]
    to: String,
    /// A file holding the PostgreSQL password (else PGPASSWORD, if set).
    #[arg(long, value_name = "FILE")]
    db_password_file: Option<PathBuf>,
    /// The CA certificates (PEM) PostgreSQL's TLS certificate must chain to
    /// [default: the system's].
    #[arg(long, value_name = "FILE")]
    db_ca_file: Option<PathBuf>,
}

/// Runs a `db` subcommand.
pub fn run(c: Command) -> anyhow::Result<()> {
    match c {
        Command::Copy(a) => copy(a),
    }
}

fn copy(a: CopyArgs) -> anyhow::Result<()> {
    if !pg::is_url(&a.to) {
        anyhow::bail!(
            "--to {:?} is not a PostgreSQL URL (postgres://USER@HOST/DBNAME)",
            pg::redact(&a.to)
        );
    }
    let password = match &a.db_password_file {
        Some(f) => Some(
            std::fs::read_to_string(f)
                .with_context(|| format!("reading the password file {}", f.display()))?
                .trim_end_matches(['\r', '\n'])
                .to_owned(),
        ),
        None => std::env::var("PGPASSWORD").ok(),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let report = rt.block_on(async {
        let opts = pg::Options {
            password,
            max_connections: 2,
            ca_file: a.db_ca_file.clone(),
        };
        let pg = Pg::connect_with(&a.to, &opts).await?;
        copy_sqlite_to_pg(&a.from, &pg).await
    })?;
    for t in &report.tables {
        eprintln!(
            "  {}: {} rows, {} new, {} changed",
            t.table, t.rows, t.new, t.changed
        );
    }
    eprintln!(
        "copied {} to {}: {} rows, {} new, {} changed",
        a.from.display(),
        pg::redact(&a.to),
        report.rows(),
        report.new_rows(),
        report.changed_rows()
    );
    Ok(())
}
