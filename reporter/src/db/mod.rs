//! The SQLite database: one file in WAL mode.
//!
//! - [`schema`]: migrations, versioned by `PRAGMA user_version`.
//! - [`writer`]: the one writer thread; every write goes through it, many
//!   requests share a transaction, and each is answered after the commit.
//! - [`pool`]: a few read-only connections for queries.
//! - [`checkpoint`]: WAL checkpoints on their own thread.
//! - [`backup`]: a consistent copy of the live database.
//! - [`ingest`], [`enroll`], [`tokens`], [`queries`], [`prune`], [`outbox`],
//!   [`checkin`], [`halts`], [`rollout_history`], [`sessions`], [`notices`]: the SQL of
//!   each job, as functions over a `&Connection` that the writer, the pool
//!   or the command line call.

pub mod backup;
pub mod checkin;
pub mod checkpoint;
pub mod copy;
pub mod enroll;
pub mod halts;
pub mod ingest;
pub mod notices;
pub mod outbox;
pub mod pg;
pub mod pool;
pub mod prune;
pub mod queries;
pub mod rollout_history;
pub mod schema;
pub mod sessions;
pub mod tokens;
pub mod writer;

use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use rusqlite::{Connection, OpenFlags};

use crate::settings::Durability;
use crate::Error;

/// A failure of a database job.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DbError {
    /// SQLite said no.
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    /// PostgreSQL said no.
    #[error(transparent)]
    Postgres(#[from] tokio_postgres::Error),
    /// No PostgreSQL connection could be had.
    #[error("no database connection: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    /// The writer or pool is gone (shutting down).
    #[error("the database is shutting down")]
    Busy,
    /// The transaction this write shared with others (group commit) could
    /// not begin or commit, so it was rolled back with them; the write may
    /// be sent again. The cause, logged once by the writer, is in it.
    #[error("the write's transaction was rolled back: {0}")]
    Transaction(String),
}

/// The writer's page cache, KiB. Small on purpose: while the database is
/// under 1 GiB, SQLite (3.46) ends every transaction that split a b-tree
/// page by scanning the whole page cache (`balance_nonroot` parks a page
/// at the number past 1 GiB, and `pcache1Truncate` then walks every hash
/// bucket); with 32 MiB that cost about 130 us per commit, a third of the
/// writer's time at 1,100 small batches/s. What the writer touches (the
/// right edges of the indexes, the agents' rows) fits in this, and pages
/// it misses come from the OS page cache.
const WRITER_CACHE_KIB: u32 = 8192;

/// The WAL's size limit, bytes: it is truncated to this when it starts
/// over. Twice the size at which it starts over
/// ([`checkpoint::RESTART_FRAMES`] pages plus what arrives meanwhile), so a
/// WAL under steady load is rewritten in place: truncating it freed blocks
/// that were allocated again a second later, and on a filesystem mounted
/// with `discard` each truncate stalled the writer ~6 ms on the discard.
pub const WAL_LIMIT: u64 = 128 << 20;

/// Opens the database for writing, creating (mode 0600) and migrating it:
/// for `serve` and `init`.
pub fn open_writer(path: &Path, durability: Durability) -> Result<Connection, Error> {
    create_private(path)?;
    open_rw(path, durability)
}

/// Opens an existing database for writing, migrating it: for the admin
/// commands, so that a typo'd `--db` is an error rather than a new, empty
/// database whose tokens the running reporter never sees.
pub fn open_existing(path: &Path, durability: Durability) -> Result<Connection, Error> {
    if !path.try_exists().unwrap_or(true) {
        return Err(Error::NoDatabase {
            path: path.to_owned(),
        });
    }
    open_rw(path, durability)
}

/// Creates an empty database file with mode 0600 unless one exists.
/// SQLite gives its `-wal` and `-shm` files the database file's mode, so
/// they are 0600 too (it would create the database 0644, less the umask).
fn create_private(path: &Path) -> Result<(), Error> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(source) => Err(Error::Io {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Opens `path` (which must exist) for writing and migrates it.
fn open_rw(path: &Path, durability: Durability) -> Result<Connection, Error> {
    let db_err = |source| Error::Db {
        path: path.to_owned(),
        source,
    };
    let mut conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(db_err)?;
    conn.busy_timeout(Duration::from_secs(10)).map_err(db_err)?;
    let sync = match durability {
        Durability::PowerLoss => "FULL",
        Durability::ProcessCrash => "NORMAL",
    };
    conn.execute_batch(&format!(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = {sync};
         PRAGMA temp_store = MEMORY;
         PRAGMA journal_size_limit = {WAL_LIMIT};
         PRAGMA cache_size = -{WRITER_CACHE_KIB};
         PRAGMA foreign_keys = OFF;"
    ))
    .map_err(db_err)?;
    schema::migrate(&mut conn, path)?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

/// Stops the connection from checkpointing by itself: the server's writer
/// leaves that to the [`checkpoint`] thread.
pub fn disable_autocheckpoint(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch("PRAGMA wal_autocheckpoint = 0")
}

/// Opens a read-only connection (the database must exist).
pub fn open_reader(path: &Path) -> Result<Connection, Error> {
    let db_err = |source| Error::Db {
        path: path.to_owned(),
        source,
    };
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(db_err)?;
    conn.busy_timeout(Duration::from_secs(10)).map_err(db_err)?;
    conn.execute_batch("PRAGMA query_only = ON; PRAGMA cache_size = -16384;")
        .map_err(db_err)?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

/// Timestamps are stored as microseconds since the epoch.
pub fn to_micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

/// The inverse of [`to_micros`].
pub fn from_micros(us: i64) -> DateTime<Utc> {
    Utc.timestamp_micros(us).single().unwrap_or_default()
}

/// Now, in microseconds.
pub fn now_micros() -> i64 {
    to_micros(Utc::now())
}
