//! WAL checkpoints on their own thread, so the writer never copies pages
//! back into the database file while requests wait for it.
//!
//! The writer runs with `wal_autocheckpoint = 0`; this thread, on its own
//! connection, runs a `PASSIVE` checkpoint every [`EVERY`] (it never blocks
//! the writer or readers): it copies pages into the database file, and
//! then fsyncs that file itself. SQLite fsyncs the database file only at the
//! end of a checkpoint that copied the *whole* WAL, and under steady writes
//! only the writer's finishing checkpoint (below) does; without this fsync,
//! that one paid for writing back every page copied since the WAL last
//! started over (tens of MiB: 25-60 ms of stall at 1,100 batches/s, the
//! slowest requests of `reporter_latency`; with it, 1-3 ms).
//!
//! While the writer keeps appending, a `PASSIVE` checkpoint never quite
//! catches up, so the WAL would never start over; once it holds more
//! than [`RESTART_FRAMES`], this thread raises [`WalState::finish_wanted`]
//! (after checkpointing again until at most about [`WRITER_FRAMES`] are
//! left) and the writer, between two transactions, runs a `PASSIVE`
//! checkpoint itself: only the few frames appended since remain, and with
//! no writer racing it completes, so the next transaction writes the WAL
//! from its start again. The WAL file stays around [`RESTART_FRAMES`]
//! pages (under `journal_size_limit`, so it is rewritten in place). On
//! shutdown a final `TRUNCATE` checkpoint leaves an empty WAL behind.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

/// How often to checkpoint.
pub const EVERY: Duration = Duration::from_millis(250);
/// WAL frames (pages) beyond which the writer is asked to finish a
/// checkpoint (64 MiB; see `WAL_LIMIT`): each finish stalls every
/// waiting request for a copy and two fsyncs, so not too often.
pub const RESTART_FRAMES: i64 = 16384;

/// Frames left to the writer's finishing checkpoint, about.
const WRITER_FRAMES: i64 = 256;
/// Extra checkpoints at most before handing over to the writer.
const CATCH_UP_ROUNDS: usize = 8;

/// Shared between the checkpoint thread and the writer.
#[derive(Default)]
pub struct WalState {
    /// Set when the writer should finish a checkpoint between transactions.
    pub finish_wanted: AtomicBool,
}

impl WalState {
    /// Called by the writer after a commit: finishes a checkpoint if asked.
    pub fn after_commit(&self, conn: &Connection) {
        if self.finish_wanted.swap(false, Ordering::Relaxed) {
            match checkpoint(conn, "PASSIVE") {
                Ok(r) => tracing::trace!(?r, "writer finished a checkpoint"),
                Err(e) => tracing::warn!(error = %e, "writer checkpoint failed"),
            }
        }
    }
}

/// The checkpointer; dropping [`Checkpointer::stop`]'s sender ends it.
pub struct Checkpointer {
    stop: mpsc::Sender<()>,
    handle: JoinHandle<()>,
    /// Hand this to the writer.
    pub state: Arc<WalState>,
}

impl Checkpointer {
    /// Starts the thread on `path`.
    pub fn start(path: &Path) -> Result<Checkpointer, crate::Error> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .and_then(|c| {
            c.busy_timeout(Duration::from_secs(10))?;
            Ok(c)
        })
        .map_err(|source| crate::Error::Db {
            path: path.to_owned(),
            source,
        })?;
        let (stop, rx) = mpsc::channel::<()>();
        let state = Arc::new(WalState::default());
        let shared = state.clone();
        let handle = std::thread::Builder::new()
            .name("flotilla-db-checkpoint".into())
            .spawn(move || run(conn, rx, &shared))
            .expect("spawn checkpoint thread");
        Ok(Checkpointer {
            stop,
            handle,
            state,
        })
    }

    /// Stops after a final checkpoint.
    pub fn stop(self) {
        drop(self.stop);
        let _ = self.handle.join();
    }
}

fn checkpoint(conn: &Connection, mode: &str) -> rusqlite::Result<(i64, i64, i64)> {
    conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
    })
}

/// fsyncs the database file through the connection's own file handle:
/// another descriptor of the file, once closed, would drop every POSIX lock
/// the process holds on it, SQLite's among them.
fn sync_db(conn: &Connection) -> rusqlite::Result<()> {
    use rusqlite::ffi;
    let failed = |rc| rusqlite::Error::SqliteFailure(ffi::Error::new(rc), None);
    let mut file: *mut ffi::sqlite3_file = std::ptr::null_mut();
    // SAFETY: `conn.handle()` is this thread's open connection, and
    // FILE_POINTER writes a `sqlite3_file *` (the main database's, owned by
    // the connection) into `file`, which is as big as that pointer.
    let rc = unsafe {
        ffi::sqlite3_file_control(
            conn.handle(),
            c"main".as_ptr(),
            ffi::SQLITE_FCNTL_FILE_POINTER,
            (&mut file as *mut *mut ffi::sqlite3_file).cast(),
        )
    };
    if rc != ffi::SQLITE_OK {
        return Err(failed(rc));
    }
    // SAFETY: a non-null `file` is the connection's open database file, used
    // only on this thread (the connection's), and `xSync` is its VFS's fsync,
    // which needs no lock.
    let rc = unsafe {
        match file
            .as_ref()
            .and_then(|f| f.pMethods.as_ref())
            .and_then(|m| m.xSync)
        {
            Some(sync) => sync(file, ffi::SQLITE_SYNC_NORMAL),
            None => ffi::SQLITE_OK,
        }
    };
    if rc == ffi::SQLITE_OK {
        Ok(())
    } else {
        Err(failed(rc))
    }
}

/// A `PASSIVE` checkpoint, then an fsync of the database file if it copied
/// anything; returns `(wal_frames, frames_copied_in_total)`.
fn round(conn: &Connection, synced: &mut i64) -> rusqlite::Result<(i64, i64)> {
    let (_, log, done) = checkpoint(conn, "PASSIVE")?;
    if done != *synced {
        sync_db(conn)?;
        *synced = done;
    }
    Ok((log, done))
}

fn run(conn: Connection, rx: mpsc::Receiver<()>, state: &WalState) {
    let mut synced = 0;
    while let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(EVERY) {
        match round(&conn, &mut synced) {
            Ok((log, _)) if log > RESTART_FRAMES => {
                // Catch up first: each round copies what the writer appended
                // while the round before ran (`log` is where the WAL ended
                // when a round started), until a round finds little new; the
                // writer's own checkpoint, which every waiting request waits
                // for, then has only that little to copy and fsync.
                let mut last = log;
                for _ in 0..CATCH_UP_ROUNDS {
                    match round(&conn, &mut synced) {
                        Ok((log, _)) => {
                            let appended = log - last;
                            last = log;
                            if appended <= WRITER_FRAMES {
                                break;
                            }
                        }
                        Err(_) => break,
                    }
                }
                state.finish_wanted.store(true, Ordering::Relaxed);
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "checkpoint failed"),
        }
    }
    if let Err(e) = checkpoint(&conn, "TRUNCATE") {
        tracing::debug!(error = %e, "final checkpoint incomplete");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_round_copies_the_wal_and_syncs_the_database_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.db");
        let w = Connection::open(&path).unwrap();
        w.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA wal_autocheckpoint = 0;
             CREATE TABLE t(x); INSERT INTO t VALUES (zeroblob(100000));",
        )
        .unwrap();
        let c = Connection::open(&path).unwrap();
        let mut synced = 0;
        let (log, done) = round(&c, &mut synced).unwrap();
        assert!(log > 0);
        assert_eq!(done, log, "nothing else was writing: all copied");
        assert_eq!(synced, done);
        // All was copied, so this write starts the WAL over.
        w.execute_batch("INSERT INTO t VALUES (1)").unwrap();
        let (log2, done2) = round(&c, &mut synced).unwrap();
        assert!(log2 > 0 && log2 < log, "{log2} frames after {log}");
        assert_eq!((done2, synced), (log2, log2));
        // An in-memory database has no file to sync: not an error.
        sync_db(&Connection::open_in_memory().unwrap()).unwrap();
    }
}
