//! The storage layer: the one type the handlers, web pages, gate,
//! retention, notifier, check-ins, halts and command line talk to. It
//! knows no HTTP; each method is one operation of the reporter, answered by
//! the backend in use:
//!
//! - [`Store::Sqlite`]: the embedded default. Writes are jobs of the one
//!   writer thread ([`db::writer`], group commit), reads run on the read
//!   pool ([`db::pool`]); the SQL is in `db::<module>`.
//! - [`Store::Postgres`]: several stateless replicas over one database.
//!   Ingestion and check-ins go through [`db::pg::writer`] (group commit
//!   across concurrent requests); every other write is one transaction on a
//!   pooled connection, every read one statement (or, for a composition,
//!   one REPEATABLE READ snapshot); the SQL is in `db::pg::<module>`, each
//!   function the twin of SQLite's of the same name.
//!
//! Each method's SQLite arm calls the `db::<module>::<function>` named in
//! its doc with the same arguments; an operation that must see or change
//! several tables at once is one such function (a *composition*, e.g.
//! [`db::queries::overview`], [`db::notices::insert`]), so it runs in one
//! transaction or one read snapshot on every backend.
//!
//! Arguments are owned where the SQLite arm moves them into a writer job
//! or onto a blocking thread (no copies of request bodies: the batch of
//! [`Store::ingest`] is moved, its texts pointing into the body).

use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::Duration;

use chrono::{DateTime, Utc};
use flotilla_protocol::api::{AgentSummary, EnrollRequest, EnrollResponse, Gate, Halt};

use crate::checkin::Received;
use crate::db::checkpoint::Checkpointer;
use crate::db::enroll::Refusal;
use crate::db::halts::Closed;
use crate::db::ingest::{Batch, IngestOutcome};
use crate::db::notices::Expiring;
use crate::db::outbox::Queued;
use crate::db::pool::ReadPool;
use crate::db::queries::{
    AgentFilter, AgentWithEvents, EventFilter, GaugeCounts, Overview, RolloutRow,
};
use crate::db::rollout_history::Entry;
use crate::db::tokens::TokenInfo;
use crate::db::writer::Writer;
use crate::db::{self, DbError};
use crate::notify::{Notice, Notifier};
use crate::settings::{DbTarget, Durability, Settings};
use crate::Error;

/// A PostgreSQL read: `$body` with `$c` a pooled connection.
macro_rules! pg_read {
    ($p:expr, |$c:ident| $body:expr) => {{
        let client = $p.pg.client().await?;
        let $c = &**client;
        $body.await
    }};
}

/// A PostgreSQL write: `$body` in a transaction of its own, committed
/// before the answer.
macro_rules! pg_tx {
    ($p:expr, |$c:ident| $body:expr) => {{
        let mut client = $p.pg.client().await?;
        let tx = client.transaction().await?;
        let $c = &*tx;
        let r = $body.await?;
        tx.commit().await?;
        Ok(r)
    }};
}

/// A PostgreSQL composition of reads: one REPEATABLE READ, read-only
/// snapshot, so its parts agree with each other.
macro_rules! pg_snapshot {
    ($p:expr, |$c:ident| $body:expr) => {{
        let mut client = $p.pg.client().await?;
        let tx = client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await?;
        let $c = &*tx;
        let r = $body.await?;
        tx.commit().await?;
        Ok(r)
    }};
}

/// The database the reporter stores into; cheap to clone.
#[derive(Clone)]
pub enum Store {
    /// A SQLite file.
    Sqlite(SqliteStore),
    /// A PostgreSQL database.
    Postgres(PgStore),
}

/// The PostgreSQL side: the pool and the ingest writer.
#[derive(Clone)]
pub struct PgStore {
    /// The connections.
    pub pg: db::pg::Pg,
    /// The group-commit writer of events and check-ins.
    pub writer: db::pg::writer::PgWriter,
}

/// The SQLite side: the writer and the read pool over one file.
#[derive(Clone)]
pub struct SqliteStore {
    /// The one writer.
    pub writer: Writer,
    /// The read-only connections.
    pub reader: ReadPool,
    /// The database file.
    pub path: PathBuf,
}

/// What runs beside a SQLite store: the writer thread and the checkpointer.
/// [`Running::stop`] once every [`Store`] handle is dropped.
pub struct Running {
    writer: Option<JoinHandle<()>>,
    checkpointer: Option<Checkpointer>,
}

impl Running {
    /// Waits (up to 30 s) for the writer to commit its queue and end (it
    /// ends once the last [`Store`] is dropped), then stops the
    /// checkpointer after a final checkpoint.
    pub async fn stop(self) {
        let Running {
            writer,
            checkpointer,
        } = self;
        if let Some(writer) = writer {
            let joined = tokio::task::spawn_blocking(move || writer.join());
            if tokio::time::timeout(Duration::from_secs(30), joined)
                .await
                .is_err()
            {
                tracing::warn!("the writer did not stop within 30 s");
            }
        }
        if let Some(c) = checkpointer {
            let _ = tokio::task::spawn_blocking(move || c.stop()).await;
        }
    }
}

impl Store {
    /// Opens the database `settings.db` names for the server (see
    /// [`Store::open_sqlite`]).
    pub async fn open(settings: &Settings) -> Result<(Store, Running), Error> {
        match &settings.db {
            DbTarget::Sqlite(path) => {
                Store::open_sqlite(path, settings.durability, settings.read_connections)
            }
            DbTarget::Postgres { .. } => Store::open_postgres(settings).await,
        }
    }

    /// Opens the existing database `settings.db` names for an admin
    /// command (see [`Store::open_sqlite_existing`]; PostgreSQL is
    /// migrated like for the server, an admin command being as likely as a
    /// replica to meet a new database).
    pub async fn open_existing(settings: &Settings) -> Result<(Store, Running), Error> {
        match &settings.db {
            DbTarget::Sqlite(path) => Store::open_sqlite_existing(path, settings.durability),
            DbTarget::Postgres { .. } => Store::open_postgres(settings).await,
        }
    }

    /// Connects to the PostgreSQL database `settings.db` names (the
    /// password from its file or `PGPASSWORD`), migrates it (one replica at
    /// a time) and starts the ingest writer.
    pub async fn open_postgres(settings: &Settings) -> Result<(Store, Running), Error> {
        let DbTarget::Postgres { url, .. } = &settings.db else {
            unreachable!("open_postgres on a SQLite target");
        };
        let password = settings.db.password()?;
        let pg = db::pg::Pg::connect_with(
            url,
            &db::pg::Options {
                password: password.map(|p| p.expose().to_owned()),
                max_connections: settings.db_max_connections,
                ca_file: settings.db_ca_file.clone(),
            },
        )
        .await?;
        db::pg::schema::migrate(&pg).await?;
        let writer = db::pg::writer::PgWriter::start(pg.clone(), settings.db_writers);
        Ok((
            Store::Postgres(PgStore { pg, writer }),
            Running {
                writer: None,
                checkpointer: None,
            },
        ))
    }

    /// Opens (creating and migrating) the SQLite database at `path` for the
    /// server: the writer thread, `read_connections` readers and the
    /// checkpoint thread.
    pub fn open_sqlite(
        path: &Path,
        durability: Durability,
        read_connections: usize,
    ) -> Result<(Store, Running), Error> {
        let conn = db::open_writer(path, durability)?;
        db::disable_autocheckpoint(&conn).map_err(|source| Error::Db {
            path: path.to_owned(),
            source,
        })?;
        let checkpointer = Checkpointer::start(path)?;
        let (writer, thread) = Writer::start(conn, Some(checkpointer.state.clone()));
        let reader = ReadPool::open(path, read_connections)?;
        let store = Store::Sqlite(SqliteStore {
            writer,
            reader,
            path: path.to_owned(),
        });
        Ok((
            store,
            Running {
                writer: Some(thread),
                checkpointer: Some(checkpointer),
            },
        ))
    }

    /// Opens an existing SQLite database for an admin command (one reader,
    /// SQLite's own checkpoints): a typo'd path is an error, not a new file.
    pub fn open_sqlite_existing(
        path: &Path,
        durability: Durability,
    ) -> Result<(Store, Running), Error> {
        let conn = db::open_existing(path, durability)?;
        let (writer, thread) = Writer::start(conn, None);
        let reader = ReadPool::open(path, 1)?;
        let store = Store::Sqlite(SqliteStore {
            writer,
            reader,
            path: path.to_owned(),
        });
        Ok((
            store,
            Running {
                writer: Some(thread),
                checkpointer: None,
            },
        ))
    }

    /// What the logs and messages call the database: its path or URL.
    pub fn target(&self) -> String {
        match self {
            Store::Sqlite(s) => s.path.display().to_string(),
            Store::Postgres(p) => p.pg.target().to_owned(),
        }
    }

    /// The schema version ([`db::schema::version`]).
    pub async fn schema_version(&self) -> Result<u32, DbError> {
        match self {
            Store::Sqlite(s) => s.reader.read(db::schema::version).await,
            Store::Postgres(p) => pg_read!(p, |c| db::pg::schema::version(c)),
        }
    }

    // ---- enrollment and authentication ----

    /// Enrolls an agent ([`db::enroll::enroll`]), in one transaction.
    pub async fn enroll(
        &self,
        req: EnrollRequest,
        agent_token: Option<String>,
        now: DateTime<Utc>,
    ) -> Result<Result<EnrollResponse, Refusal>, DbError> {
        match self {
            Store::Sqlite(s) => {
                s.writer
                    .run(move |c| db::enroll::enroll(c, &req, agent_token.as_deref(), now))
                    .await
            }
            Store::Postgres(p) => pg_tx!(p, |c| db::pg::enroll::enroll(
                c,
                &req,
                agent_token.as_deref(),
                now
            )),
        }
    }

    /// The agent an agent token belongs to ([`db::enroll::agent_for_token`]).
    pub async fn agent_for_token(&self, token: String) -> Result<Option<String>, DbError> {
        match self {
            Store::Sqlite(s) => {
                s.reader
                    .read_quick(move |c| db::enroll::agent_for_token(c, &token))
                    .await
            }
            Store::Postgres(p) => {
                let client = p.pg.client().await?;
                db::pg::enroll::agent_for_token(&client, &token).await
            }
        }
    }

    /// Whether `token` is a live read token ([`db::tokens::read_token_active`]).
    pub async fn read_token_active(
        &self,
        token: String,
        now: DateTime<Utc>,
    ) -> Result<bool, DbError> {
        match self {
            Store::Sqlite(s) => {
                s.reader
                    .read_quick(move |c| db::tokens::read_token_active(c, &token, now))
                    .await
            }
            Store::Postgres(p) => {
                pg_read!(p, |c| db::pg::tokens::read_token_active(c, &token, now))
            }
        }
    }

    // ---- ingestion and check-ins ----

    /// Stores a batch of `agent_id`'s events and the notices they raise
    /// ([`db::ingest::ingest`], a composition: events, derived state and
    /// outbox rows in one transaction). Call [`Notifier::wake`] after, when
    /// the outcome says notices were queued.
    pub async fn ingest(
        &self,
        agent_id: String,
        batch: Batch,
        now: i64,
        notifier: Notifier,
    ) -> Result<IngestOutcome, DbError> {
        match self {
            Store::Sqlite(s) => {
                s.writer
                    .run(move |c| db::ingest::ingest(c, &agent_id, &batch, now, &notifier))
                    .await
            }
            Store::Postgres(p) => p.writer.ingest(agent_id, batch, now, notifier).await,
        }
    }

    /// Writes check-ins ([`db::checkin::apply`]), in one transaction.
    pub async fn checkin_apply(&self, rows: Vec<(String, Received)>) -> Result<(), DbError> {
        match self {
            Store::Sqlite(s) => s.writer.run(move |c| db::checkin::apply(c, &rows)).await,
            Store::Postgres(p) => p.writer.checkin(rows).await,
        }
    }

    // ---- queries ----

    /// Agents matching `f`, and how many match ([`db::queries::agents`]).
    /// On PostgreSQL the count and the page are two statements: one
    /// snapshot, so the total agrees with the page while check-ins land.
    pub async fn agents(&self, f: AgentFilter) -> Result<(Vec<AgentSummary>, u64), DbError> {
        match self {
            Store::Sqlite(s) => s.reader.read(move |c| db::queries::agents(c, &f)).await,
            Store::Postgres(p) => pg_snapshot!(p, |c| db::pg::queries::agents(c, &f)),
        }
    }

    /// One agent ([`db::queries::agent`]).
    pub async fn agent(
        &self,
        agent_id: String,
        stale_before: i64,
    ) -> Result<Option<AgentSummary>, DbError> {
        match self {
            Store::Sqlite(s) => {
                s.reader
                    .read(move |c| db::queries::agent(c, &agent_id, stale_before))
                    .await
            }
            Store::Postgres(p) => {
                pg_read!(p, |c| db::pg::queries::agent(c, &agent_id, stale_before))
            }
        }
    }

    /// One agent and a page of its events, from one snapshot
    /// ([`db::queries::agent_with_events`], a composition).
    pub async fn agent_with_events(
        &self,
        agent_id: String,
        stale_before: i64,
        f: EventFilter,
    ) -> Result<AgentWithEvents, DbError> {
        match self {
            Store::Sqlite(s) => {
                s.reader
                    .read(move |c| db::queries::agent_with_events(c, &agent_id, stale_before, &f))
                    .await
            }
            Store::Postgres(p) => pg_snapshot!(p, |c| db::pg::queries::agent_with_events(
                c,
                &agent_id,
                stale_before,
                &f
            )),
        }
    }

    /// A release's rows for its rollout progress ([`db::queries::rollout_rows`]).
    pub async fn rollout_rows(
        &self,
        channel: String,
        release: String,
    ) -> Result<Vec<RolloutRow>, DbError> {
        match self {
            Store::Sqlite(s) => {
                s.reader
                    .read(move |c| db::queries::rollout_rows(c, &channel, &release))
                    .await
            }
            Store::Postgres(p) => {
                pg_read!(p, |c| db::pg::queries::rollout_rows(c, &channel, &release))
            }
        }
    }

    /// A release's agents per state, for its gate
    /// ([`db::queries::release_state_counts`]).
    pub async fn release_state_counts(
        &self,
        channel: String,
        release: String,
    ) -> Result<std::collections::BTreeMap<String, u64>, DbError> {
        match self {
            Store::Sqlite(s) => {
                s.reader
                    .read(move |c| db::queries::release_state_counts(c, &channel, &release))
                    .await
            }
            Store::Postgres(p) => pg_read!(p, |c| db::pg::queries::release_state_counts(
                c, &channel, &release
            )),
        }
    }

    /// The web overview's figures ([`db::queries::overview`], a composition).
    pub async fn overview(&self, since: i64, errors: u32) -> Result<Overview, DbError> {
        match self {
            Store::Sqlite(s) => {
                s.reader
                    .read(move |c| db::queries::overview(c, since, errors))
                    .await
            }
            Store::Postgres(p) => pg_snapshot!(p, |c| db::pg::queries::overview(c, since, errors)),
        }
    }

    /// The figures of `GET /metrics` ([`db::queries::gauges`], a composition).
    pub async fn gauges(&self, since: i64) -> Result<GaugeCounts, DbError> {
        match self {
            Store::Sqlite(s) => s.reader.read(move |c| db::queries::gauges(c, since)).await,
            Store::Postgres(p) => pg_snapshot!(p, |c| db::pg::queries::gauges(c, since)),
        }
    }

    // ---- tokens and agents (admin) ----

    /// Every enrollment and read token ([`db::tokens::list`]).
    pub async fn tokens_list(&self) -> Result<Vec<TokenInfo>, DbError> {
        match self {
            Store::Sqlite(s) => s.reader.read(db::tokens::list).await,
            Store::Postgres(p) => pg_read!(p, |c| db::pg::tokens::list(c)),
        }
    }

    /// A new enrollment token and its secret ([`db::tokens::create`]).
    pub async fn token_create(
        &self,
        expires_in: Option<Duration>,
        max_uses: Option<u64>,
        note: String,
    ) -> Result<(TokenInfo, String), DbError> {
        match self {
            Store::Sqlite(s) => {
                s.writer
                    .run(move |c| db::tokens::create(c, expires_in, max_uses, &note))
                    .await
            }
            Store::Postgres(p) => pg_tx!(p, |c| db::pg::tokens::create(
                c, expires_in, max_uses, &note
            )),
        }
    }

    /// A new read token and its secret ([`db::tokens::create_read`]).
    pub async fn token_create_read(
        &self,
        expires_in: Option<Duration>,
        note: String,
    ) -> Result<(TokenInfo, String), DbError> {
        match self {
            Store::Sqlite(s) => {
                s.writer
                    .run(move |c| db::tokens::create_read(c, expires_in, &note))
                    .await
            }
            Store::Postgres(p) => pg_tx!(p, |c| db::pg::tokens::create_read(c, expires_in, &note)),
        }
    }

    /// Revokes token `id`; whether there was one ([`db::tokens::revoke`]).
    pub async fn token_revoke(&self, id: String) -> Result<bool, DbError> {
        match self {
            Store::Sqlite(s) => s.writer.run(move |c| db::tokens::revoke(c, &id)).await,
            Store::Postgres(p) => pg_tx!(p, |c| db::pg::tokens::revoke(c, &id)),
        }
    }

    /// Revokes an agent ([`db::tokens::revoke_agent`]).
    pub async fn revoke_agent(&self, agent_id: String) -> Result<bool, DbError> {
        match self {
            Store::Sqlite(s) => {
                s.writer
                    .run(move |c| db::tokens::revoke_agent(c, &agent_id))
                    .await
            }
            Store::Postgres(p) => pg_tx!(p, |c| db::pg::tokens::revoke_agent(c, &agent_id)),
        }
    }

    /// Readmits a revoked agent ([`db::tokens::readmit_agent`]).
    pub async fn readmit_agent(&self, agent_id: String) -> Result<bool, DbError> {
        match self {
            Store::Sqlite(s) => {
                s.writer
                    .run(move |c| db::tokens::readmit_agent(c, &agent_id))
                    .await
            }
            Store::Postgres(p) => pg_tx!(p, |c| db::pg::tokens::readmit_agent(c, &agent_id)),
        }
    }

    /// Frees an agent id ([`db::tokens::release_agent`]).
    pub async fn release_agent(&self, agent_id: String) -> Result<bool, DbError> {
        match self {
            Store::Sqlite(s) => {
                s.writer
                    .run(move |c| db::tokens::release_agent(c, &agent_id))
                    .await
            }
            Store::Postgres(p) => pg_tx!(p, |c| db::pg::tokens::release_agent(c, &agent_id)),
        }
    }

    // ---- manual halts ----

    /// Closes a gate unless the same scope is halted ([`db::halts::close`]).
    pub async fn halt_close(
        &self,
        channel: String,
        release: Option<String>,
        reason: String,
        by: String,
        now: i64,
    ) -> Result<Closed, DbError> {
        match self {
            Store::Sqlite(s) => {
                s.writer
                    .run(move |c| {
                        db::halts::close(c, &channel, release.as_deref(), &reason, &by, now)
                    })
                    .await
            }
            Store::Postgres(p) => pg_tx!(p, |c| db::pg::halts::close(
                c,
                &channel,
                release.as_deref(),
                &reason,
                &by,
                now
            )),
        }
    }

    /// Reopens halt `id` ([`db::halts::reopen`]).
    pub async fn halt_reopen(
        &self,
        id: i64,
        by: String,
        now: i64,
    ) -> Result<Option<Halt>, DbError> {
        match self {
            Store::Sqlite(s) => {
                s.writer
                    .run(move |c| db::halts::reopen(c, id, &by, now))
                    .await
            }
            Store::Postgres(p) => pg_tx!(p, |c| db::pg::halts::reopen(c, id, &by, now)),
        }
    }

    /// Halt `id` ([`db::halts::get`]).
    pub async fn halt_get(&self, id: i64) -> Result<Option<Halt>, DbError> {
        match self {
            Store::Sqlite(s) => s.reader.read(move |c| db::halts::get(c, id)).await,
            Store::Postgres(p) => pg_read!(p, |c| db::pg::halts::get(c, id)),
        }
    }

    /// The active halts and the `recent` newest others ([`db::halts::list`]).
    pub async fn halts_list(&self, recent: u32) -> Result<Vec<Halt>, DbError> {
        match self {
            Store::Sqlite(s) => s.reader.read(move |c| db::halts::list(c, recent)).await,
            Store::Postgres(p) => pg_read!(p, |c| db::pg::halts::list(c, recent)),
        }
    }

    /// The active halts ([`db::halts::active`]).
    pub async fn halts_active(&self) -> Result<Vec<Halt>, DbError> {
        match self {
            Store::Sqlite(s) => s.reader.read(db::halts::active).await,
            Store::Postgres(p) => pg_read!(p, |c| db::pg::halts::active(c)),
        }
    }

    // ---- notifications ----

    /// Queues `notice` for the receivers that want it and trims the outbox
    /// ([`db::notices::insert`], a composition); whether anything was queued.
    pub async fn notify_insert(
        &self,
        notifier: Notifier,
        notice: Notice,
        now: i64,
    ) -> Result<bool, DbError> {
        match self {
            Store::Sqlite(s) => {
                s.writer
                    .run(move |c| db::notices::insert(c, &notifier, &notice, now))
                    .await
            }
            Store::Postgres(p) => pg_tx!(p, |c| db::pg::outbox::queue(c, &notifier, &notice, now)),
        }
    }

    /// Records a gate's state and queues the notice its change raises
    /// ([`db::notices::record_gate`], a composition: a read-modify-write of
    /// `notify_state` and outbox rows in one transaction).
    pub async fn notify_record_gate(
        &self,
        notifier: Notifier,
        gate: Gate,
        now: i64,
    ) -> Result<bool, DbError> {
        match self {
            Store::Sqlite(s) => {
                s.writer
                    .run(move |c| db::notices::record_gate(c, &notifier, &gate, now))
                    .await
            }
            Store::Postgres(p) => {
                pg_tx!(p, |c| db::pg::outbox::record_gate(c, &notifier, &gate, now))
            }
        }
    }

    /// The watcher's silent-agent and expiry checks
    /// ([`db::notices::watch_check`], a composition in one transaction).
    pub async fn watch_check(
        &self,
        notifier: Notifier,
        cutoff: i64,
        silent_for: String,
        expiring: Vec<Expiring>,
        now: i64,
    ) -> Result<bool, DbError> {
        match self {
            Store::Sqlite(s) => {
                s.writer
                    .run(move |c| {
                        db::notices::watch_check(c, &notifier, cutoff, &silent_for, &expiring, now)
                    })
                    .await
            }
            Store::Postgres(p) => pg_tx!(p, |c| db::pg::notices::watch_check(
                c,
                &notifier,
                cutoff,
                &silent_for,
                &expiring,
                now
            )),
        }
    }

    /// When the next queued notification is due ([`db::outbox::next_due`]).
    pub async fn outbox_next_due(&self) -> Result<Option<i64>, DbError> {
        match self {
            Store::Sqlite(s) => s.reader.read(db::outbox::next_due).await,
            Store::Postgres(p) => pg_read!(p, |c| db::pg::outbox::next_due(c)),
        }
    }

    /// Up to `limit` notifications due by `now` ([`db::outbox::due`]).
    pub async fn outbox_due(&self, now: i64, limit: u32) -> Result<Vec<Queued>, DbError> {
        match self {
            Store::Sqlite(s) => s.reader.read(move |c| db::outbox::due(c, now, limit)).await,
            Store::Postgres(p) => pg_read!(p, |c| db::pg::outbox::due(c, now, limit)),
        }
    }

    /// Drops a delivered or given-up notification ([`db::outbox::delete`]).
    pub async fn outbox_delete(&self, id: i64) -> Result<(), DbError> {
        match self {
            Store::Sqlite(s) => s.writer.run(move |c| db::outbox::delete(c, id)).await,
            Store::Postgres(p) => pg_tx!(p, |c| db::pg::outbox::delete(c, id)),
        }
    }

    /// Records a failed attempt ([`db::outbox::failed`]).
    pub async fn outbox_failed(&self, id: i64, next_at: i64, error: String) -> Result<(), DbError> {
        match self {
            Store::Sqlite(s) => {
                s.writer
                    .run(move |c| db::outbox::failed(c, id, next_at, &error))
                    .await
            }
            Store::Postgres(p) => pg_tx!(p, |c| db::pg::outbox::failed(c, id, next_at, &error)),
        }
    }

    /// Drops notifications queued before `cutoff`; their receivers
    /// ([`db::outbox::expire`]).
    pub async fn outbox_expire(&self, cutoff: i64) -> Result<Vec<String>, DbError> {
        match self {
            Store::Sqlite(s) => s.writer.run(move |c| db::outbox::expire(c, cutoff)).await,
            Store::Postgres(p) => pg_tx!(p, |c| db::pg::outbox::expire(c, cutoff)),
        }
    }

    // ---- rollout history ----

    /// Records the current rollouts ([`db::rollout_history::touch`]).
    pub async fn rollout_history_touch(
        &self,
        pairs: Vec<(String, String)>,
        now: i64,
    ) -> Result<(), DbError> {
        match self {
            Store::Sqlite(s) => {
                s.writer
                    .run(move |c| db::rollout_history::touch(c, &pairs, now))
                    .await
            }
            Store::Postgres(p) => pg_tx!(p, |c| db::pg::rollout_history::touch(c, &pairs, now)),
        }
    }

    /// The newest rollouts per channel ([`db::rollout_history::list`]).
    pub async fn rollout_history_list(
        &self,
        channel: Option<String>,
        per_channel: u32,
    ) -> Result<Vec<Entry>, DbError> {
        match self {
            Store::Sqlite(s) => {
                s.reader
                    .read(move |c| db::rollout_history::list(c, channel.as_deref(), per_channel))
                    .await
            }
            Store::Postgres(p) => pg_read!(p, |c| db::pg::rollout_history::list(
                c,
                channel.as_deref(),
                per_channel
            )),
        }
    }

    // ---- retention ----

    /// Deletes up to `max` events older than `cutoff` ([`db::prune::older_than`]).
    pub async fn prune_older_than(&self, cutoff: i64, max: u32) -> Result<usize, DbError> {
        match self {
            Store::Sqlite(s) => {
                s.writer
                    .run(move |c| db::prune::older_than(c, cutoff, max))
                    .await
            }
            Store::Postgres(p) => pg_tx!(p, |c| db::pg::prune::older_than(c, cutoff, max)),
        }
    }

    /// Agents with more than `keep` events ([`db::prune::agents_over`]).
    pub async fn prune_agents_over(&self, keep: u64) -> Result<Vec<String>, DbError> {
        match self {
            Store::Sqlite(s) => {
                s.reader
                    .read(move |c| db::prune::agents_over(c, keep))
                    .await
            }
            Store::Postgres(p) => pg_read!(p, |c| db::pg::prune::agents_over(c, keep)),
        }
    }

    /// Deletes up to `max` of `agent_id`'s events beyond its newest `keep`
    /// ([`db::prune::beyond_count`]).
    pub async fn prune_beyond_count(
        &self,
        agent_id: String,
        keep: u64,
        max: u32,
    ) -> Result<usize, DbError> {
        match self {
            Store::Sqlite(s) => {
                s.writer
                    .run(move |c| db::prune::beyond_count(c, &agent_id, keep, max))
                    .await
            }
            Store::Postgres(p) => {
                pg_tx!(p, |c| db::pg::prune::beyond_count(c, &agent_id, keep, max))
            }
        }
    }

    // ---- web sessions ----

    /// Stores a session ([`db::sessions::create`]).
    pub async fn session_create(
        &self,
        hash: String,
        csrf: String,
        expires_at: i64,
    ) -> Result<(), DbError> {
        match self {
            Store::Sqlite(s) => {
                s.writer
                    .run(move |c| db::sessions::create(c, &hash, &csrf, expires_at))
                    .await
            }
            Store::Postgres(p) => {
                pg_tx!(p, |c| db::pg::sessions::create(c, &hash, &csrf, expires_at))
            }
        }
    }

    /// A live session's CSRF token ([`db::sessions::get`]).
    pub async fn session_get(&self, hash: String, now: i64) -> Result<Option<String>, DbError> {
        match self {
            Store::Sqlite(s) => {
                s.reader
                    .read_quick(move |c| db::sessions::get(c, &hash, now))
                    .await
            }
            Store::Postgres(p) => pg_read!(p, |c| db::pg::sessions::get(c, &hash, now)),
        }
    }

    /// Ends a session ([`db::sessions::remove`]).
    pub async fn session_remove(&self, hash: String) -> Result<(), DbError> {
        match self {
            Store::Sqlite(s) => s.writer.run(move |c| db::sessions::remove(c, &hash)).await,
            Store::Postgres(p) => pg_tx!(p, |c| db::pg::sessions::remove(c, &hash)),
        }
    }

    /// Deletes expired sessions ([`db::sessions::expire`]).
    pub async fn sessions_expire(&self, now: i64) -> Result<usize, DbError> {
        match self {
            Store::Sqlite(s) => s.writer.run(move |c| db::sessions::expire(c, now)).await,
            Store::Postgres(p) => pg_tx!(p, |c| db::pg::sessions::expire(c, now)),
        }
    }

    // ---- leases ----

    /// Takes or renews lease `name` for `holder` for `ttl`: whether
    /// `holder` holds it, so a job runs on one replica at a time
    /// ([`db::pg::lease::acquire`]). A SQLite database has one reporter, which
    /// always holds every lease.
    pub async fn lease(&self, name: &str, holder: &str, ttl: Duration) -> Result<bool, DbError> {
        match self {
            Store::Sqlite(_) => Ok(true),
            Store::Postgres(p) => {
                let ttl_us = i64::try_from(ttl.as_micros()).unwrap_or(i64::MAX);
                pg_read!(p, |c| db::pg::lease::acquire(
                    c,
                    name,
                    holder,
                    ttl_us,
                    db::now_micros()
                ))
            }
        }
    }

    /// Whether several reporters may share this database (PostgreSQL), so
    /// what one keeps in memory must be read again from the database.
    pub fn is_shared(&self) -> bool {
        matches!(self, Store::Postgres(_))
    }
}
