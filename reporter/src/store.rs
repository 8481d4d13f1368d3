//! The storage layer: the one type the handlers, web pages, gate,
//! retention, notifier, check-ins, halts and command line talk to. It
//! knows no HTTP; each method is one operation of the reporter, answered by
//! the backend in use:
//!
//! - [`Store::Sqlite`]: the embedded default. Writes are jobs of the one
//!   writer thread ([`db::writer`], group commit), reads run on the read
//!   pool ([`db::pool`]); the SQL is in `db::<module>`.
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

fn not_wired(db: &DbTarget) -> Error {
    Error::Config {
        path: db.to_string().into(),
        reason: "PostgreSQL: not wired in this build".into(),
    }
}

/// The database the reporter stores into; cheap to clone.
#[derive(Clone)]
pub enum Store {
    /// A SQLite file.
    Sqlite(SqliteStore),
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
    writer: JoinHandle<()>,
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
        let joined = tokio::task::spawn_blocking(move || writer.join());
        if tokio::time::timeout(Duration::from_secs(30), joined)
            .await
            .is_err()
        {
            tracing::warn!("the writer did not stop within 30 s");
        }
        if let Some(c) = checkpointer {
            let _ = tokio::task::spawn_blocking(move || c.stop()).await;
        }
    }
}

impl Store {
    /// Opens the database `settings.db` names for the server (see
    /// [`Store::open_sqlite`]).
    pub fn open(settings: &Settings) -> Result<(Store, Running), Error> {
        match &settings.db {
            DbTarget::Sqlite(path) => {
                Store::open_sqlite(path, settings.durability, settings.read_connections)
            }
            DbTarget::Postgres { .. } => Err(not_wired(&settings.db)),
        }
    }

    /// Opens the existing database `db` names for an admin command (see
    /// [`Store::open_sqlite_existing`]).
    pub fn open_existing(db: &DbTarget, durability: Durability) -> Result<(Store, Running), Error> {
        match db {
            DbTarget::Sqlite(path) => Store::open_sqlite_existing(path, durability),
            DbTarget::Postgres { .. } => Err(not_wired(db)),
        }
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
                writer: thread,
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
                writer: thread,
                checkpointer: None,
            },
        ))
    }

    /// What the logs and messages call the database: its path or URL.
    pub fn target(&self) -> String {
        match self {
            Store::Sqlite(s) => s.path.display().to_string(),
        }
    }

    /// The schema version ([`db::schema::version`]).
    pub async fn schema_version(&self) -> Result<u32, DbError> {
        match self {
            Store::Sqlite(s) => s.reader.read(db::schema::version).await,
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
        }
    }

    /// Writes check-ins ([`db::checkin::apply`]), in one transaction.
    pub async fn checkin_apply(&self, rows: Vec<(String, Received)>) -> Result<(), DbError> {
        match self {
            Store::Sqlite(s) => s.writer.run(move |c| db::checkin::apply(c, &rows)).await,
        }
    }

    // ---- queries ----

    /// Agents matching `f`, and how many match ([`db::queries::agents`]).
    pub async fn agents(&self, f: AgentFilter) -> Result<(Vec<AgentSummary>, u64), DbError> {
        match self {
            Store::Sqlite(s) => s.reader.read(move |c| db::queries::agents(c, &f)).await,
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
        }
    }

    /// The figures of `GET /metrics` ([`db::queries::gauges`], a composition).
    pub async fn gauges(&self, since: i64) -> Result<GaugeCounts, DbError> {
        match self {
            Store::Sqlite(s) => s.reader.read(move |c| db::queries::gauges(c, since)).await,
        }
    }

    // ---- tokens and agents (admin) ----

    /// Every enrollment and read token ([`db::tokens::list`]).
    pub async fn tokens_list(&self) -> Result<Vec<TokenInfo>, DbError> {
        match self {
            Store::Sqlite(s) => s.reader.read(db::tokens::list).await,
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
        }
    }

    /// Revokes token `id`; whether there was one ([`db::tokens::revoke`]).
    pub async fn token_revoke(&self, id: String) -> Result<bool, DbError> {
        match self {
            Store::Sqlite(s) => s.writer.run(move |c| db::tokens::revoke(c, &id)).await,
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
        }
    }

    /// Halt `id` ([`db::halts::get`]).
    pub async fn halt_get(&self, id: i64) -> Result<Option<Halt>, DbError> {
        match self {
            Store::Sqlite(s) => s.reader.read(move |c| db::halts::get(c, id)).await,
        }
    }

    /// The active halts and the `recent` newest others ([`db::halts::list`]).
    pub async fn halts_list(&self, recent: u32) -> Result<Vec<Halt>, DbError> {
        match self {
            Store::Sqlite(s) => s.reader.read(move |c| db::halts::list(c, recent)).await,
        }
    }

    /// The active halts ([`db::halts::active`]).
    pub async fn halts_active(&self) -> Result<Vec<Halt>, DbError> {
        match self {
            Store::Sqlite(s) => s.reader.read(db::halts::active).await,
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
        }
    }

    /// When the next queued notification is due ([`db::outbox::next_due`]).
    pub async fn outbox_next_due(&self) -> Result<Option<i64>, DbError> {
        match self {
            Store::Sqlite(s) => s.reader.read(db::outbox::next_due).await,
        }
    }

    /// Up to `limit` notifications due by `now` ([`db::outbox::due`]).
    pub async fn outbox_due(&self, now: i64, limit: u32) -> Result<Vec<Queued>, DbError> {
        match self {
            Store::Sqlite(s) => s.reader.read(move |c| db::outbox::due(c, now, limit)).await,
        }
    }

    /// Drops a delivered or given-up notification ([`db::outbox::delete`]).
    pub async fn outbox_delete(&self, id: i64) -> Result<(), DbError> {
        match self {
            Store::Sqlite(s) => s.writer.run(move |c| db::outbox::delete(c, id)).await,
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
        }
    }

    /// Drops notifications queued before `cutoff`; their receivers
    /// ([`db::outbox::expire`]).
    pub async fn outbox_expire(&self, cutoff: i64) -> Result<Vec<String>, DbError> {
        match self {
            Store::Sqlite(s) => s.writer.run(move |c| db::outbox::expire(c, cutoff)).await,
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
        }
    }

    /// Ends a session ([`db::sessions::remove`]).
    pub async fn session_remove(&self, hash: String) -> Result<(), DbError> {
        match self {
            Store::Sqlite(s) => s.writer.run(move |c| db::sessions::remove(c, &hash)).await,
        }
    }

    /// Deletes expired sessions ([`db::sessions::expire`]).
    pub async fn sessions_expire(&self, now: i64) -> Result<usize, DbError> {
        match self {
            Store::Sqlite(s) => s.writer.run(move |c| db::sessions::expire(c, now)).await,
        }
    }
}
