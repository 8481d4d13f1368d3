//! The one writer. Every write of the server goes through it:
//!
//! 1. wait for a job; take every other job already queued (up to
//!    [`MAX_JOBS_PER_COMMIT`]); under steady load (the job came within
//!    [`HOT`] of the last commit) and with fewer than [`WINDOW_FULL`] jobs
//!    in hand, wait [`WINDOW`] once and take what arrived meanwhile too;
//! 2. `BEGIN IMMEDIATE`; run each job;
//! 3. if a job failed: `ROLLBACK`, and run the same jobs again in a new
//!    transaction, each in its own savepoint, so a failing job is rolled
//!    back alone (jobs are re-runnable closures; failures are rare, so the
//!    common case pays for no savepoint);
//! 4. `COMMIT` (with `synchronous = FULL` this fsyncs the WAL);
//! 5. only then answer each job, with its result, or with the commit error;
//! 6. if the checkpoint thread asks, finish a WAL checkpoint.
//!
//! So an acknowledgement always means "committed", and many concurrent
//! requests share one commit (group commit). A job's closure goes back to
//! its caller with the answer, so whatever it owns (a request body) is freed
//! there, not on this thread. The thread ends when every [`Writer`] handle
//! is dropped and the queue is drained.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use super::checkpoint::WalState;
use super::DbError;

/// Jobs in one transaction, at most.
pub const MAX_JOBS_PER_COMMIT: usize = 512;
/// Jobs waiting, at most (callers wait beyond that: backpressure).
const QUEUE: usize = 4096;

/// The group-commit window. Each transaction rewrites the pages all jobs
/// share (the right edges of the events table and its indexes), so fewer,
/// fuller transactions write less WAL (11 WAL restarts in 20 s instead of
/// 18 at about 3 jobs per transaction instead of 1.4): less checkpoint I/O
/// and fewer of the writer's own WAL-restarting checkpoints, whose fsyncs
/// every waiting request waits for. At 1,100 batches/s of 20 events
/// (`reporter_latency`) a 1 ms window took jobs per transaction from
/// 1.4-2.8 to 2.3-3.6 and p99 from 24-59 ms to 22-33 ms in three
/// alternating rounds, for 1.4 ms more at p50 (1.9 -> 3.2 ms); 1.5 ms was
/// worse again. Like PostgreSQL's `commit_delay`, it applies only under
/// load (see [`HOT`]), so a quiet server answers at once.
pub const WINDOW: Duration = Duration::from_millis(1);
/// A job that arrives within this of the last commit means steady load.
pub const HOT: Duration = Duration::from_millis(2);
/// With this many jobs in hand the window is skipped.
pub const WINDOW_FULL: usize = 8;

/// A job as the writer thread sees it.
trait Job: Send {
    /// Runs the job (again); `Err` if it failed.
    fn run(&mut self, conn: &Connection, savepoint: bool) -> Result<(), ()>;
    /// Answers the caller: the job's result, unless the commit failed.
    fn finish(self: Box<Self>, commit: Result<(), DbError>);
}

struct Pending<R, F> {
    f: F,
    result: Option<Result<R, DbError>>,
    reply: oneshot::Sender<(Result<R, DbError>, F)>,
}

impl<R, F> Job for Pending<R, F>
where
    R: Send + 'static,
    F: FnMut(&Connection) -> Result<R, DbError> + Send + 'static,
{
    fn run(&mut self, conn: &Connection, savepoint: bool) -> Result<(), ()> {
        let r = if savepoint {
            in_savepoint(conn, &mut self.f)
        } else {
            (self.f)(conn)
        };
        let failed = r.is_err();
        self.result = Some(r);
        if failed {
            Err(())
        } else {
            Ok(())
        }
    }

    fn finish(self: Box<Self>, commit: Result<(), DbError>) {
        let Pending { f, result, reply } = *self;
        let result = match (commit, result) {
            (Err(e), _) => Err(e),
            (Ok(()), Some(r)) => r,
            (Ok(()), None) => Err(DbError::Transaction("the write did not run".into())),
        };
        let _ = reply.send((result, f));
    }
}

/// A handle to the writer thread; cheap to clone.
#[derive(Clone)]
pub struct Writer {
    tx: mpsc::Sender<Box<dyn Job>>,
}

impl Writer {
    /// Starts the writer thread on `conn`; `wal`: the checkpoint thread's
    /// shared state, if one runs (see [`super::checkpoint`]).
    pub fn start(conn: Connection, wal: Option<Arc<WalState>>) -> (Writer, JoinHandle<()>) {
        let (tx, rx) = mpsc::channel::<Box<dyn Job>>(QUEUE);
        let handle = std::thread::Builder::new()
            .name("flotilla-db-writer".into())
            .spawn(move || run(conn, rx, wal))
            .expect("spawn writer thread");
        (Writer { tx }, handle)
    }

    /// Runs `f` in the next transaction and returns its result once that
    /// transaction committed. If `f` fails, its changes are rolled back and
    /// the other jobs of the transaction are unaffected. `f` may run more
    /// than once (each time on the same state); only the last run counts.
    /// `f` is dropped here, not on the writer thread.
    pub async fn run<R, F>(&self, f: F) -> Result<R, DbError>
    where
        R: Send + 'static,
        F: FnMut(&Connection) -> Result<R, DbError> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job: Box<dyn Job> = Box::new(Pending {
            f,
            result: None,
            reply,
        });
        self.tx.send(job).await.map_err(|_| DbError::Busy)?;
        let (result, f) = answer.await.map_err(|_| DbError::Busy)?;
        drop(f);
        result
    }
}

fn drain(rx: &mut mpsc::Receiver<Box<dyn Job>>, jobs: &mut Vec<Box<dyn Job>>) {
    while jobs.len() < MAX_JOBS_PER_COMMIT {
        match rx.try_recv() {
            Ok(j) => jobs.push(j),
            Err(_) => break,
        }
    }
}

fn exec(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(|_| ())
}

fn in_savepoint<R>(
    conn: &Connection,
    f: &mut impl FnMut(&Connection) -> Result<R, DbError>,
) -> Result<R, DbError> {
    exec(conn, "SAVEPOINT job")?;
    match f(conn) {
        Ok(r) => {
            exec(conn, "RELEASE job")?;
            Ok(r)
        }
        Err(e) => {
            exec(conn, "ROLLBACK TO job")?;
            exec(conn, "RELEASE job")?;
            Err(e)
        }
    }
}

/// Ends the transaction, if a failure did not end it already.
fn rollback(conn: &Connection) -> Result<(), rusqlite::Error> {
    if conn.is_autocommit() {
        Ok(())
    } else {
        exec(conn, "ROLLBACK")
    }
}

/// Runs `jobs` in one transaction (see the module doc); `Ok` once committed.
/// `Err((true, e))` when the first `BEGIN` failed (nothing ran).
fn transaction(
    conn: &Connection,
    jobs: &mut [Box<dyn Job>],
) -> Result<(), (bool, rusqlite::Error)> {
    exec(conn, "BEGIN IMMEDIATE").map_err(|e| (true, e))?;
    run_jobs(conn, jobs).map_err(|e| (false, e))
}

fn run_jobs(conn: &Connection, jobs: &mut [Box<dyn Job>]) -> Result<(), rusqlite::Error> {
    let mut failed = false;
    for job in jobs.iter_mut() {
        failed |= job.run(conn, false).is_err();
    }
    if failed && jobs.len() > 1 {
        // Run them again, each in a savepoint: the failing ones leave nothing behind.
        rollback(conn)?;
        exec(conn, "BEGIN IMMEDIATE")?;
        for job in jobs.iter_mut() {
            let _ = job.run(conn, true);
        }
    } else if failed {
        // A lone job: its failure spoils no one else's work.
        rollback(conn)?;
        return Ok(());
    }
    exec(conn, "COMMIT")
}

fn run(conn: Connection, mut rx: mpsc::Receiver<Box<dyn Job>>, wal: Option<Arc<WalState>>) {
    let mut jobs: Vec<Box<dyn Job>> = Vec::with_capacity(MAX_JOBS_PER_COMMIT);
    let mut committed = Instant::now();
    while let Some(first) = rx.blocking_recv() {
        let hot = committed.elapsed() < HOT;
        jobs.push(first);
        drain(&mut rx, &mut jobs);
        if hot && jobs.len() < WINDOW_FULL {
            std::thread::sleep(WINDOW);
            drain(&mut rx, &mut jobs);
        }
        let n = jobs.len();
        match transaction(&conn, &mut jobs) {
            Ok(()) => {
                for j in jobs.drain(..) {
                    j.finish(Ok(()));
                }
            }
            Err((true, e)) => {
                tracing::error!(error = %e, "writer could not begin a transaction");
                let msg = format!("could not begin: {e}");
                for j in jobs.drain(..) {
                    j.finish(Err(DbError::Transaction(msg.clone())));
                }
                continue;
            }
            Err((false, e)) => {
                tracing::error!(error = %e, jobs = n, "transaction failed");
                let _ = rollback(&conn);
                let msg = e.to_string();
                for j in jobs.drain(..) {
                    j.finish(Err(DbError::Transaction(msg.clone())));
                }
            }
        }
        tracing::trace!(jobs = n, "committed");
        committed = Instant::now();
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
