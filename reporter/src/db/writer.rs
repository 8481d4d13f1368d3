//! The one writer. Every write of the server goes through it:
//!
//! 1. wait for a job; take every other job already queued (up to
//!    [`MAX_JOBS_PER_COMMIT`]);
//! 2. `BEGIN IMMEDIATE`; run each job in its own savepoint, so a failing
//!    job is rolled back alone;
//! 3. `COMMIT` (with `synchronous = FULL` this fsyncs the WAL);
//! 4. only then answer each job, with its result, or with the commit error;
//! 5. if the checkpoint thread asks, finish a WAL checkpoint.
//!
//! So an acknowledgement always means "committed", and many concurrent
//! requests share one commit (group commit). The thread ends when every
//! [`Writer`] handle is dropped and the queue is drained.

use std::sync::Arc;
use std::thread::JoinHandle;

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use super::checkpoint::WalState;
use super::DbError;

/// Jobs in one transaction, at most.
pub const MAX_JOBS_PER_COMMIT: usize = 512;
/// Jobs waiting, at most (callers wait beyond that: backpressure).
const QUEUE: usize = 4096;

type Done = Box<dyn FnOnce(Result<(), DbError>) + Send>;
type Job = Box<dyn FnOnce(&Connection) -> Done + Send>;

/// A handle to the writer thread; cheap to clone.
#[derive(Clone)]
pub struct Writer {
    tx: mpsc::Sender<Job>,
}

impl Writer {
    /// Starts the writer thread on `conn`; `wal`: the checkpoint thread's
    /// shared state, if one runs (see [`super::checkpoint`]).
    pub fn start(conn: Connection, wal: Option<Arc<WalState>>) -> (Writer, JoinHandle<()>) {
        let (tx, rx) = mpsc::channel::<Job>(QUEUE);
        let handle = std::thread::Builder::new()
            .name("flotilla-db-writer".into())
            .spawn(move || run(conn, rx, wal))
            .expect("spawn writer thread");
        (Writer { tx }, handle)
    }

    /// Runs `f` in the next transaction and returns its result once that
    /// transaction committed. If `f` fails, its changes are rolled back and
    /// the other jobs of the transaction are unaffected.
    pub async fn run<R, F>(&self, f: F) -> Result<R, DbError>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> Result<R, DbError> + Send + 'static,
    {
        let (rtx, rrx) = oneshot::channel();
        let job: Job = Box::new(move |conn| {
            let result = in_savepoint(conn, f);
            Box::new(move |commit| {
                let _ = rtx.send(commit.and(result));
            })
        });
        self.tx.send(job).await.map_err(|_| DbError::Busy)?;
        rrx.await.map_err(|_| DbError::Busy)?
    }
}

fn drain(rx: &mut mpsc::Receiver<Job>, jobs: &mut Vec<Job>) {
    while jobs.len() < MAX_JOBS_PER_COMMIT {
        match rx.try_recv() {
            Ok(j) => jobs.push(j),
            Err(_) => break,
        }
    }
}

fn in_savepoint<R>(
    conn: &Connection,
    f: impl FnOnce(&Connection) -> Result<R, DbError>,
) -> Result<R, DbError> {
    conn.execute_batch("SAVEPOINT job")?;
    match f(conn) {
        Ok(r) => {
            conn.execute_batch("RELEASE job")?;
            Ok(r)
        }
        Err(e) => {
            conn.execute_batch("ROLLBACK TO job; RELEASE job")?;
            Err(e)
        }
    }
}

fn run(conn: Connection, mut rx: mpsc::Receiver<Job>, wal: Option<Arc<WalState>>) {
    let mut jobs: Vec<Job> = Vec::with_capacity(MAX_JOBS_PER_COMMIT);
    let mut dones: Vec<Done> = Vec::with_capacity(MAX_JOBS_PER_COMMIT);
    while let Some(first) = rx.blocking_recv() {
        jobs.push(first);
        drain(&mut rx, &mut jobs);
        let n = jobs.len();
        let began = conn.execute_batch("BEGIN IMMEDIATE");
        if let Err(e) = began {
            // Dropping the jobs answers their callers with `DbError::Busy`.
            tracing::error!(error = %e, "writer could not begin a transaction");
            jobs.clear();
            continue;
        }
        for job in jobs.drain(..) {
            dones.push(job(&conn));
        }
        let commit = conn.execute_batch("COMMIT");
        match commit {
            Ok(()) => {
                for d in dones.drain(..) {
                    d(Ok(()));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, jobs = n, "commit failed");
                let _ = conn.execute_batch("ROLLBACK");
                let msg = e.to_string();
                for d in dones.drain(..) {
                    d(Err(DbError::Sqlite(rusqlite::Error::SqliteFailure(
                        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_IOERR),
                        Some(msg.clone()),
                    ))));
                }
            }
        }
        tracing::trace!(jobs = n, "committed");
        if let Some(w) = &wal {
            w.after_commit(&conn);
        }
    }
    tracing::debug!("writer stopped");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn failing_job_does_not_spoil_the_others() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t(x INTEGER PRIMARY KEY)")
            .unwrap();
        let (w, h) = Writer::start(conn, None);
        let mut tasks = Vec::new();
        for i in 0..50i64 {
            let w = w.clone();
            tasks.push(tokio::spawn(async move {
                w.run(move |c| {
                    c.execute("INSERT INTO t VALUES (?1)", [i])?;
                    if i % 10 == 0 {
                        // a second insert of the same key fails this job only
                        c.execute("INSERT INTO t VALUES (?1)", [i])?;
                    }
                    Ok(i)
                })
                .await
            }));
        }
        let mut ok = 0;
        for t in tasks {
            if t.await.unwrap().is_ok() {
                ok += 1;
            }
        }
        assert_eq!(ok, 45);
        let count: i64 = w
            .run(|c| Ok(c.query_row("SELECT count(*) FROM t", [], |r| r.get(0))?))
            .await
            .unwrap();
        assert_eq!(count, 45);
        drop(w);
        h.join().unwrap();
    }
}
