//! Group commit on PostgreSQL, like [`crate::db::writer`] for SQLite: a
//! few tasks (shards, `db_writers`), each owning one pooled connection,
//! each running the ingest and check-in jobs of many concurrent requests in
//! one transaction.
//!
//! An agent's jobs always go to the same shard (by a hash of its id), so
//! they run in the order they came, and two shards of one reporter never
//! wait for each other's locks on an agent's rows. A check-in job is split
//! by shard and answered when every part committed. More than one shard
//! keeps the database busy while a transaction commits (the WAL flush);
//! more than a few make them contend for the same index pages: on a
//! 2-core machine 2 shards ingested the most.
//!
//! Each shard:
//!
//! 1. wait for a job; take every other job already queued (up to
//!    [`MAX_JOBS_PER_COMMIT`]); sort them by agent id, so that two
//!    replicas' transactions lock agents' rows in the same order;
//! 2. `BEGIN`; store the new events of every ingest job in one binary
//!    `COPY` ([`super::ingest::copy_new`]: the ids already stored probed
//!    first, every probe sent at once); run each job's derived state; the
//!    first that fails ends the run (PostgreSQL refuses every later
//!    statement of a failed transaction);
//! 3. a deadlock or serialization failure (another replica's transaction
//!    crossed this one): `ROLLBACK` and run them all again, up to
//!    [`RETRIES`] times; the same when another replica stored one of the
//!    same events meanwhile (the `COPY` fails on the events' key), but
//!    then each job inserts its own events with `ON CONFLICT DO NOTHING`
//!    ([`Insert::Guarded`]), which costs the database half as much again
//!    per row, so only the rare transaction that met a duplicate pays it;
//! 4. any other failure: `ROLLBACK`, and run the same jobs again in a new
//!    transaction, each in its own savepoint, so a failing job is rolled
//!    back alone (jobs are re-runnable; the common case pays for no
//!    savepoint);
//! 5. `COMMIT`, and only then answer each job with its result, or every
//!    job with the error if the transaction could not be committed.
//!
//! So an acknowledgement always means "committed". The queue holds
//! [`QUEUE`] jobs; callers beyond that wait (backpressure). If the
//! connection breaks, the jobs in hand are answered with the error and the
//! next transaction runs on a new connection from the pool. The task ends
//! when every [`PgWriter`] handle is dropped and the queue is drained.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};
use tokio_postgres::error::SqlState;

use super::ingest::{is_events_key_violation, Insert};
use super::Pg;
use crate::checkin::Received;
use crate::db::ingest::{Batch, IngestOutcome};
use crate::db::DbError;
use crate::notify::Notifier;

/// Jobs in one transaction, at most.
pub const MAX_JOBS_PER_COMMIT: usize = 512;
/// Jobs waiting, at most (callers wait beyond that: backpressure).
pub const QUEUE: usize = 4096;
/// Connections tried after one broke, at most, before the jobs in hand fail.
pub const CONNECT_TRIES: usize = 16;
/// Runs of one transaction that another crossed (deadlock, serialization), at most.
pub const RETRIES: usize = 4;

enum Work {
    Ingest {
        agent_id: String,
        batch: Batch,
        now: i64,
        notifier: Notifier,
    },
    Checkin(Vec<(String, Received)>),
}

enum Answer {
    Ingest(IngestOutcome),
    Checkin,
}

impl Work {
    /// The agent whose row the job locks first.
    fn key(&self) -> &str {
        match self {
            Work::Ingest { agent_id, .. } => agent_id,
            Work::Checkin(_) => "",
        }
    }

    async fn run(
        &self,
        c: &deadpool_postgres::Transaction<'_>,
        insert: Insert<'_>,
    ) -> Result<Answer, DbError> {
        match self {
            Work::Ingest {
                agent_id,
                batch,
                now,
                notifier,
            } => super::ingest::ingest(c, agent_id, batch, *now, notifier, insert)
                .await
                .map(Answer::Ingest),
            Work::Checkin(rows) => super::checkin::apply(c, rows)
                .await
                .map(|()| Answer::Checkin),
        }
    }
}

struct Job {
    work: Work,
    result: Option<Result<Answer, DbError>>,
    reply: oneshot::Sender<Result<Answer, DbError>>,
}

/// Writer shards, at most (see [`PgWriter::start`]).
pub const MAX_WRITERS: usize = 16;

/// A handle to the writer tasks; cheap to clone.
#[derive(Clone)]
pub struct PgWriter {
    shards: Arc<[mpsc::Sender<Job>]>,
}

impl PgWriter {
    /// Starts `writers` writer tasks (shards; 1 to [`MAX_WRITERS`]) on the
    /// current tokio runtime over `pg`'s pool; each keeps one of its
    /// connections for as long as it runs (a broken one is replaced).
    pub fn start(pg: Pg, writers: usize) -> PgWriter {
        let shards: Vec<_> = (0..writers.clamp(1, MAX_WRITERS))
            .map(|_| {
                let (tx, rx) = mpsc::channel(QUEUE);
                tokio::spawn(run(pg.clone(), rx));
                tx
            })
            .collect();
        PgWriter {
            shards: shards.into(),
        }
    }

    /// The shard that runs `agent_id`'s jobs.
    fn shard(&self, agent_id: &str) -> usize {
        let mut h = DefaultHasher::new();
        agent_id.hash(&mut h);
        (h.finish() % self.shards.len() as u64) as usize
    }

    /// Queues `work` on shard `i`; the answer comes once it committed.
    async fn queue(
        &self,
        i: usize,
        work: Work,
    ) -> Result<oneshot::Receiver<Result<Answer, DbError>>, DbError> {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            work,
            result: None,
            reply,
        };
        self.shards[i].send(job).await.map_err(|_| DbError::Busy)?;
        Ok(answer)
    }

    async fn submit(&self, i: usize, work: Work) -> Result<Answer, DbError> {
        let answer = self.queue(i, work).await?;
        answer.await.map_err(|_| DbError::Busy)?
    }

    /// [`super::ingest::ingest`] in the next transaction; answers once that
    /// transaction committed. If the job fails, its changes are rolled
    /// back and the other jobs of the transaction are unaffected.
    pub async fn ingest(
        &self,
        agent_id: impl Into<String>,
        batch: Batch,
        now: i64,
        notifier: Notifier,
    ) -> Result<IngestOutcome, DbError> {
        let agent_id = agent_id.into();
        let work = Work::Ingest {
            agent_id: agent_id.clone(),
            batch,
            now,
            notifier,
        };
        let i = self.shard(&agent_id);
        match self.submit(i, work).await? {
            Answer::Ingest(o) => Ok(o),
            Answer::Checkin => unreachable!("an ingest job answers with its outcome"),
        }
    }

    /// [`super::checkin::apply`] in the next transaction of each shard the
    /// rows' agents belong to; answers once every one of them committed.
    pub async fn checkin(&self, rows: Vec<(String, Received)>) -> Result<(), DbError> {
        let mut parts: Vec<Vec<(String, Received)>> = vec![Vec::new(); self.shards.len()];
        for row in rows {
            parts[self.shard(&row.0)].push(row);
        }
        // Every part queued before any is awaited: the shards run at once.
        let mut answers = Vec::with_capacity(parts.len());
        for (i, part) in parts.into_iter().enumerate() {
            if !part.is_empty() {
                answers.push(self.queue(i, Work::Checkin(part)).await?);
            }
        }
        let mut result = Ok(());
        for a in answers {
            let r = a.await.map_err(|_| DbError::Busy).and_then(|r| r);
            if let (Ok(()), Err(e)) = (&result, r) {
                result = Err(e);
            }
        }
        result
    }
}

fn retryable(e: &DbError) -> bool {
    match e {
        DbError::Postgres(e) => matches!(
            e.code(),
            Some(&SqlState::T_R_DEADLOCK_DETECTED | &SqlState::T_R_SERIALIZATION_FAILURE)
        ),
        _ => false,
    }
}

/// Runs `jobs` in one transaction (see the module doc); `Ok` once
/// committed, each job's result in it.
async fn transaction(
    client: &mut deadpool_postgres::Client,
    jobs: &mut [Job],
) -> Result<(), DbError> {
    // First every batch's new events in one COPY; after a racing replica
    // stored one of them, each job's guarded insert instead.
    let mut copy = true;
    for attempt in 1.. {
        let tx = client.transaction().await?;
        // (whether to run them all again, the COPY's error if it failed)
        let mut failure: Option<(bool, Option<DbError>)> = None;
        let mut stored = Vec::new();
        if copy {
            let batches: Vec<(&str, &Batch)> = jobs
                .iter()
                .filter_map(|j| match &j.work {
                    Work::Ingest {
                        agent_id, batch, ..
                    } => Some((agent_id.as_str(), batch)),
                    Work::Checkin(_) => None,
                })
                .collect();
            match super::ingest::copy_new(&tx, &batches).await {
                Ok(s) => stored = s,
                Err(e) => {
                    let raced = is_events_key_violation(&e);
                    // Another replica stored one of these ids meanwhile.
                    copy &= !raced;
                    failure = Some((raced || retryable(&e), Some(e)));
                }
            }
        }
        if failure.is_none() {
            let mut stored = stored.iter();
            for j in jobs.iter_mut() {
                let insert = match (&j.work, copy) {
                    (Work::Ingest { .. }, true) => {
                        Insert::Stored(stored.next().expect("copy_new answers for every batch"))
                    }
                    _ => Insert::Guarded,
                };
                let r = j.work.run(&tx, insert).await;
                if let Err(e) = &r {
                    failure = Some((retryable(e), None));
                }
                j.result = Some(r);
                if failure.is_some() {
                    break;
                }
            }
        }
        match failure {
            None => return Ok(tx.commit().await?),
            Some((true, _)) if attempt < RETRIES => {
                tx.rollback().await?;
                tracing::debug!(attempt, "transaction crossed another; again");
                for j in jobs.iter_mut() {
                    j.result = None;
                }
            }
            Some((_, copy_error)) if jobs.len() == 1 => {
                // A lone job: its failure spoils no one else's work.
                if let Some(e) = copy_error {
                    jobs[0].result = Some(Err(e));
                }
                return Ok(tx.rollback().await?);
            }
            Some(_) => {
                tx.rollback().await?;
                break;
            }
        }
    }
    // Again, each job in a savepoint: the failing ones leave nothing behind.
    let mut tx = client.transaction().await?;
    for j in jobs.iter_mut() {
        let sp = tx.savepoint("job").await?;
        let r = j.work.run(&sp, Insert::Guarded).await;
        if r.is_ok() {
            sp.commit().await?;
        } else {
            sp.rollback().await?;
        }
        j.result = Some(r);
    }
    Ok(tx.commit().await?)
}

async fn run(pg: Pg, mut rx: mpsc::Receiver<Job>) {
    let mut jobs: Vec<Job> = Vec::with_capacity(MAX_JOBS_PER_COMMIT);
    let mut client: Option<deadpool_postgres::Client> = None;
    // A connection broke: the pool's idle ones may be as dead (a server
    // restart, a failover), so the next one is tried before use.
    let mut suspect = false;
    while let Some(first) = rx.recv().await {
        jobs.push(first);
        while jobs.len() < MAX_JOBS_PER_COMMIT {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        jobs.sort_by(|a, b| a.work.key().cmp(b.work.key()));
        let n = jobs.len();
        let started = Instant::now();
        if client.as_ref().is_some_and(|c| c.is_closed()) {
            client = None;
            suspect = true;
        }
        let c = match &mut client {
            Some(c) => c,
            None => match connect(&pg, suspect).await {
                Ok(c) => {
                    suspect = false;
                    client.insert(c)
                }
                Err(e) => {
                    tracing::error!(error = %e, db = pg.target(), "writer has no connection");
                    fail(&mut jobs, e);
                    continue;
                }
            },
        };
        match transaction(c, &mut jobs).await {
            Ok(()) => {
                for j in jobs.drain(..) {
                    let r = j.result.unwrap_or_else(|| {
                        Err(DbError::Transaction("the write did not run".into()))
                    });
                    let _ = j.reply.send(r);
                }
                tracing::trace!(jobs = n, took = ?started.elapsed(), "committed");
            }
            Err(e) => {
                tracing::error!(error = %e, jobs = n, db = pg.target(), "transaction failed");
                // Whatever state the connection is in, the next transaction
                // starts on one the pool vouches for.
                client = None;
                suspect = true;
                fail(&mut jobs, e);
            }
        }
    }
    tracing::debug!("PostgreSQL writer stopped");
}

/// A connection from the pool; if `check`, one that answers (up to
/// [`CONNECT_TRIES`] are tried: the pool discards the dead ones).
async fn connect(pg: &Pg, check: bool) -> Result<deadpool_postgres::Client, DbError> {
    let mut tries = CONNECT_TRIES;
    loop {
        let c = pg.client().await?;
        if !check {
            return Ok(c);
        }
        match c.simple_query("").await {
            Ok(_) => return Ok(c),
            Err(e) if tries <= 1 => return Err(e.into()),
            Err(_) => tries -= 1,
        }
    }
}

/// Answers every job with [`DbError::Transaction`] naming `e` (logged by
/// the caller): each was rolled back with the others.
fn fail(jobs: &mut Vec<Job>, e: DbError) {
    let msg = e.to_string();
    for j in jobs.drain(..) {
        let _ = j.reply.send(Err(DbError::Transaction(msg.clone())));
    }
}
