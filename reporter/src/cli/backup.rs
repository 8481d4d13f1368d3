//! `flotilla-reporter backup --to FILE`.

use std::path::PathBuf;

use flotilla_reporter::db::backup::{self, Overwrite};

use super::DbArgs;

/// `backup --help`'s epilogue: what the copy is, and the way back.
pub const HELP: &str = "\
The copy is the database as of one moment (every event acknowledged before
the backup started is in it), taken with SQLite's online backup while
`serve` runs and writes; it is one SQLite file, mode 0600, checked with
PRAGMA quick_check before it is moved into place. An existing FILE is never
replaced unless --force is given.

Restore (the way back): stop the reporter, remove the database's -wal and
-shm files, copy the backup over the database, start the reporter:
  systemctl stop flotilla-reporter
  rm -f /var/lib/flotilla-reporter/db.sqlite-wal /var/lib/flotilla-reporter/db.sqlite-shm
  cp backup.sqlite /var/lib/flotilla-reporter/db.sqlite  # keeps owner and mode
  systemctl start flotilla-reporter
A backup made by an older reporter is migrated when the reporter starts;
one made by a newer reporter is refused by an older one (migrations are
forward-only).";

/// Copy the live database to a new file.
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    db: DbArgs,
    /// The file to write (mode 0600); it must not exist, unless --force.
    #[arg(long, value_name = "FILE")]
    to: PathBuf,
    /// Replace FILE if it exists (atomically).
    #[arg(long)]
    force: bool,
}

/// Runs the backup.
pub fn run(args: Args) -> anyhow::Result<()> {
    let s = args.db.settings()?;
    let overwrite = if args.force {
        Overwrite::Replace
    } else {
        Overwrite::Refuse
    };
    let path = super::sqlite_only(&s.db, "backup")?;
    let c = backup::backup(path, &args.to, overwrite)?;
    eprintln!(
        "backed up {} to {} ({} bytes, {} events, schema version {})",
        path.display(),
        args.to.display(),
        c.bytes,
        c.events,
        c.schema_version
    );
    Ok(())
}
