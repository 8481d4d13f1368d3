//! Storing a batch of events on PostgreSQL: the twin of
//! [`crate::db::ingest::ingest`], with the same derived state (see that
//! module's doc for the rules: receipt order, bounds, notices).
//!
//! The batch's events go in ONE statement: arrays of their columns,
//! `unnest`ed in batch order, the ids already stored left out, `RETURNING
//! id`, so redelivery stores nothing twice and the ids returned are the new
//! events (an id twice in one batch: the first counts, as on SQLite). The
//! insert is a plain one ([`Insert::Plain`]), the database's cheapest;
//! another replica storing one of the same ids at the same moment makes it
//! fail, and the writer runs it again as [`Insert::Guarded`] (`ON CONFLICT
//! (agent_id, id) DO NOTHING`). The statements are prepared with their
//! parameter types once per connection (the pool's statement cache), so
//! each is parsed and planned once and costs one round trip after.
//!
//! **Replicas.** Two replicas may ingest batches of one agent at once. The
//! derived state of the agent's row is one `UPDATE ... RETURNING` of
//! values from the batch alone (`event_count + n`, `COALESCE(new, old)`),
//! which locks the row: the second waits for the first's commit, then
//! updates the row as the first left it, and holds the lock over its
//! `agent_release` rows and their bound. The events' unique key makes a
//! redelivered event new in one transaction only. Run [`ingest`] in a transaction (the [`super::writer`] does).

use std::collections::{BTreeMap, HashSet};

use flotilla_protocol::{EventKind, EventStatus};
use tokio_postgres::types::Type;

use super::outbox;
use crate::db::ingest::{agent_change, event_release, AgentChange};
use crate::db::ingest::{release_state, stored_severity, Batch, IngestOutcome, ReleaseState, Row};
use crate::db::DbError;
use crate::notify::{Notice, Notifier};

// Ids already stored, or twice in the batch, are left out before the
// insert, so they take no `seq` (an identity value is drawn for every row
// that reaches the insert, even one `ON CONFLICT` then skips): `seq` counts
// like SQLite's. A replica storing the same id at the same moment is what
// is left: [`Insert::Plain`] fails then, with [`is_events_key_violation`],
// and the writer runs the transaction again with [`Insert::Guarded`].
macro_rules! insert_events {
    ($on_conflict:literal) => {
        concat!(
            "INSERT INTO events (id, agent_id, ts, kind, status, severity, component, message,
                 from_version, to_version, channel, wave, details)
             SELECT u.id, $2, u.ts, u.kind, u.status, u.severity, u.component, u.message,
                    u.from_version, u.to_version, u.channel, u.wave, u.details
             FROM (SELECT DISTINCT ON (v.id) v.*
                   FROM unnest($1::bytea[], $3::int8[], $4::text[], $5::text[], $6::text[],
                               $7::text[], $8::text[], $9::text[], $10::text[], $11::text[],
                               $12::text[], $13::text[])
                        WITH ORDINALITY
                        AS v(id, ts, kind, status, severity, component, message, from_version,
                             to_version, channel, wave, details, n)
                   ORDER BY v.id, v.n) u
             WHERE NOT EXISTS (SELECT 1 FROM events e WHERE e.agent_id = $2 AND e.id = u.id)
             ORDER BY u.n ",
            $on_conflict,
            " RETURNING id"
        )
    };
}
const INSERT_EVENTS_PLAIN: &str = insert_events!("");

// The same, safe next to a replica storing the same ids at once, at the
// cost of a speculative insertion per row (`ON CONFLICT`: a third more of
// the database's time per row than the plain insert).
const INSERT_EVENTS_GUARDED: &str = insert_events!("ON CONFLICT (agent_id, id) DO NOTHING");

const AGENT_SEEN: &str = "UPDATE agents SET last_seen = $2 WHERE agent_id = $1";

const AGENT_UPDATE: &str = "UPDATE agents SET last_seen = $2, event_count = event_count + $3,
         version = COALESCE($4, version), channel = COALESCE($5, channel),
         wave = COALESCE($6, wave), labels = COALESCE($7, labels), state_ts = $2,
         last_error = COALESCE($8, last_error), last_error_ts = COALESCE($9, last_error_ts)
     WHERE agent_id = $1
     RETURNING channel";

const RELEASE_UPSERT: &str =
    "INSERT INTO agent_release (channel, release, agent_id, state, wave, ts, message)
     VALUES ($1, $2, $3, $4, $5, $6, $7)
     ON CONFLICT (channel, release, agent_id) DO UPDATE SET
         state = CASE WHEN excluded.state = 'waiting'
                           AND agent_release.state IN ('on_release', 'failed', 'rolled_back')
                      THEN agent_release.state ELSE excluded.state END,
         wave = COALESCE(excluded.wave, agent_release.wave),
         ts = GREATEST(excluded.ts, agent_release.ts),
         message = CASE WHEN excluded.state = 'waiting'
                             AND agent_release.state IN ('on_release', 'failed', 'rolled_back')
                        THEN agent_release.message ELSE excluded.message END";

// Byte order ("C"), as SQLite compares text, whatever the database's collation.
const RELEASE_BOUND: &str =
    "DELETE FROM agent_release WHERE agent_id = $1 AND (channel, release) IN (
         SELECT channel, release FROM agent_release WHERE agent_id = $1
         ORDER BY ts DESC, channel COLLATE \"C\" DESC, release COLLATE \"C\" DESC OFFSET $2)";

/// How [`ingest`] inserts the events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Insert {
    /// A plain `INSERT` of the ids not stored yet: fails (see
    /// [`is_events_key_violation`]) if another transaction stores one of
    /// them meanwhile.
    Plain,
    /// `INSERT ... ON CONFLICT DO NOTHING`: never fails on a duplicate.
    Guarded,
}

/// The constraint an id stored twice by one agent breaks.
pub const EVENTS_KEY: &str = "events_agent_id_id_key";

/// Whether `e` is a [`Insert::Plain`] that met an id another transaction
/// stored meanwhile (run it again with [`Insert::Guarded`]).
pub fn is_events_key_violation(e: &DbError) -> bool {
    match e {
        DbError::Postgres(e) => e.as_db_error().is_some_and(|d| {
            *d.code() == tokio_postgres::error::SqlState::UNIQUE_VIOLATION
                && d.constraint() == Some(EVENTS_KEY)
        }),
        _ => false,
    }
}

/// Stores the events of `batch` (already validated and checked to be
/// `agent_id`'s) and updates the derived state; queues a notice for each
/// new rollback and failed migration ([`outbox::queue`]). `now`: receipt
/// time, µs. Run it in a transaction.
pub async fn ingest(
    c: &deadpool_postgres::Transaction<'_>,
    agent_id: &str,
    batch: &Batch,
    now: i64,
    notifier: &Notifier,
    insert: Insert,
) -> Result<IngestOutcome, DbError> {
    let b = batch;
    let n = b.rows.len();
    let mut ids: Vec<&[u8]> = Vec::with_capacity(n);
    let mut ts: Vec<i64> = Vec::with_capacity(n);
    let mut kind: Vec<&str> = Vec::with_capacity(n);
    let mut status: Vec<&str> = Vec::with_capacity(n);
    let mut severity: Vec<&str> = Vec::with_capacity(n);
    let mut component: Vec<&str> = Vec::with_capacity(n);
    let mut message: Vec<&str> = Vec::with_capacity(n);
    let mut from_version: Vec<Option<&str>> = Vec::with_capacity(n);
    let mut to_version: Vec<Option<&str>> = Vec::with_capacity(n);
    let mut channel_col: Vec<Option<&str>> = Vec::with_capacity(n);
    let mut wave_col: Vec<Option<&str>> = Vec::with_capacity(n);
    let mut details: Vec<&str> = Vec::with_capacity(n);
    for r in &b.rows {
        ids.push(r.id.as_slice());
        ts.push(r.ts);
        kind.push(r.kind.as_str());
        status.push(r.status.as_str());
        severity.push(stored_severity(r.kind, r.severity).as_str());
        component.push(b.text(&r.component));
        message.push(b.text(&r.message));
        from_version.push(b.opt(&r.from_version));
        to_version.push(b.opt(&r.to_version));
        channel_col.push(b.opt(&r.channel));
        wave_col.push(b.opt(&r.wave));
        details.push(b.text(&r.details));
    }
    let ta = Type::TEXT_ARRAY;
    let st = c
        .prepare_typed_cached(
            match insert {
                Insert::Plain => INSERT_EVENTS_PLAIN,
                Insert::Guarded => INSERT_EVENTS_GUARDED,
            },
            &[
                Type::BYTEA_ARRAY,
                Type::TEXT,
                Type::INT8_ARRAY,
                ta.clone(),
                ta.clone(),
                ta.clone(),
                ta.clone(),
                ta.clone(),
                ta.clone(),
                ta.clone(),
                ta.clone(),
                ta.clone(),
                ta,
            ],
        )
        .await?;
    let inserted = c
        .query(
            &st,
            &[
                &ids,
                &agent_id,
                &ts,
                &kind,
                &status,
                &severity,
                &component,
                &message,
                &from_version,
                &to_version,
                &channel_col,
                &wave_col,
                &details,
            ],
        )
        .await?;
    let mut new_ids: HashSet<Vec<u8>> = inserted.iter().map(|r| r.get(0)).collect();
    // The first row of each new id, in batch order.
    let fresh: Vec<&Row> = b
        .rows
        .iter()
        .filter(|r| new_ids.remove(r.id.as_slice()))
        .collect();
    let mut outcome = IngestOutcome {
        new: fresh.len(),
        duplicates: b.rows.len() - fresh.len(),
        notices: false,
    };
    if fresh.is_empty() {
        // Only redelivery: the agent was heard from, nothing else changed.
        let st = c
            .prepare_typed_cached(AGENT_SEEN, &[Type::TEXT, Type::INT8])
            .await?;
        c.execute(&st, &[&agent_id, &now]).await?;
        return Ok(outcome);
    }

    let AgentChange {
        version,
        channel,
        wave,
        labels,
        error,
        error_at,
    } = agent_change(b, &fresh, now);
    let fresh_n = fresh.len() as i64;
    let t = Type::TEXT;
    // The new channel is the batch's, else the stored one: the fallback for
    // events that name none, as SQLite's ingest reads it before its update.
    let i8 = Type::INT8;
    let st = c
        .prepare_typed_cached(
            AGENT_UPDATE,
            &[
                t.clone(),
                i8.clone(),
                i8.clone(),
                t.clone(),
                t.clone(),
                t.clone(),
                t.clone(),
                t,
                i8,
            ],
        )
        .await?;
    let fallback_channel: Option<String> = c
        .query_opt(
            &st,
            &[
                &agent_id, &now, &fresh_n, &version, &channel, &wave, &labels, &error, &error_at,
            ],
        )
        .await?
        .and_then(|r| r.get(0));

    let mut states: BTreeMap<(&str, &str), (&Row, ReleaseState)> = BTreeMap::new();
    for r in &fresh {
        let Some(release) = event_release(b, r) else {
            continue;
        };
        let Some(ch) = b.opt(&r.channel).or(fallback_channel.as_deref()) else {
            continue;
        };
        if let Some(s) = release_state(r.kind, r.status) {
            states.insert((ch, release), (r, s));
        }
    }
    if !states.is_empty() {
        let t = Type::TEXT;
        let st = c
            .prepare_typed_cached(
                RELEASE_UPSERT,
                &[
                    t.clone(),
                    t.clone(),
                    t.clone(),
                    t.clone(),
                    t.clone(),
                    Type::INT8,
                    t.clone(),
                ],
            )
            .await?;
        for ((ch, release), (r, s)) in states {
            let (state, wave, message) = (s.as_str(), b.opt(&r.wave).or(wave), b.text(&r.message));
            c.execute(
                &st,
                &[&ch, &release, &agent_id, &state, &wave, &now, &message],
            )
            .await?;
        }
        let bound = crate::db::ingest::MAX_RELEASES_PER_AGENT as i64;
        let st = c
            .prepare_typed_cached(RELEASE_BOUND, &[t, Type::INT8])
            .await?;
        c.execute(&st, &[&agent_id, &bound]).await?;
    }
    for r in &fresh {
        let notice = match (r.kind, r.status) {
            (EventKind::UpdateRollback, status) if notifier.wants("rollback") => Notice::Rollback {
                agent_id: agent_id.to_owned(),
                channel: b
                    .opt(&r.channel)
                    .or(fallback_channel.as_deref())
                    .map(Into::into),
                release: event_release(b, r).map(Into::into),
                status: status.as_str().to_owned(),
                message: b.text(&r.message).to_owned(),
            },
            (EventKind::MigrationExecution, EventStatus::Failed)
                if notifier.wants("migration_failed") =>
            {
                Notice::MigrationFailed {
                    agent_id: agent_id.to_owned(),
                    channel: b
                        .opt(&r.channel)
                        .or(fallback_channel.as_deref())
                        .map(Into::into),
                    release: event_release(b, r).map(Into::into),
                    message: b.text(&r.message).to_owned(),
                }
            }
            _ => continue,
        };
        outcome.notices |= outbox::queue(&**c, notifier, &notice, now).await?;
    }
    Ok(outcome)
}
