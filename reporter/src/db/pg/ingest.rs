//! Storing a batch of events on PostgreSQL: the twin of
//! [`crate::db::ingest::ingest`], with the same derived state (see that
//! module's doc for the rules: receipt order, bounds, notices).
//!
//! The events go in by binary `COPY` ([`copy_new`]), the database's
//! cheapest way in: one probe per batch for the ids already stored (all
//! the probes of a transaction sent at once), the new rows picked in the
//! reporter (an id twice in one batch, or in two batches of the same agent
//! in one transaction: the first counts, as on SQLite), and one `COPY` of
//! the new rows of every batch of the transaction. So redelivery stores
//! nothing twice. Another replica storing one of the same ids at the same
//! moment makes the `COPY` fail ([`is_events_key_violation`]), and the
//! writer runs the transaction again with [`Insert::Guarded`]: arrays of
//! the columns `unnest`ed in batch order, the ids already stored left out,
//! `ON CONFLICT (agent_id, id) DO NOTHING`, `RETURNING id`. The probe and
//! the guarded insert are planned for their own values each time (unnamed
//! statements, one round trip each): a plan cached while `events` was
//! small would read an agent's every event through `events_agent_ts`. The
//! derived state's statements are prepared with their parameter types once
//! per connection (the pool's statement cache), so each is parsed and
//! planned once and costs one round trip after.
//!
//! **Replicas.** Two replicas may ingest batches of one agent at once. The
//! derived state of the agent's row is one `UPDATE ... RETURNING` of
//! values from the batch alone (`event_count + n`, `COALESCE(new, old)`),
//! which locks the row: the second waits for the first's commit, then
//! updates the row as the first left it, and holds the lock over its
//! `agent_release` rows and their bound. The events' unique key makes a
//! redelivered event new in one transaction only. Run [`ingest`] in a transaction (the [`super::writer`] does).

use std::collections::{BTreeMap, HashSet};
use std::pin::pin;

use flotilla_protocol::{EventKind, EventStatus};
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};

use super::outbox;
use crate::db::ingest::{agent_change, event_release, AgentChange};
use crate::db::ingest::{release_state, stored_severity, Batch, IngestOutcome, ReleaseState, Row};
use crate::db::DbError;
use crate::notify::{Notice, Notifier};

// The guarded insert: ids already stored, or twice in the batch, are left
// out before the insert, so they take no `seq` (an identity value is drawn
// for every row that reaches the insert, even one `ON CONFLICT` then
// skips): `seq` counts like SQLite's. `ON CONFLICT` costs a speculative
// insertion per row (a third more of the database's time per row than a
// plain insert), so only a transaction that met a racing replica pays it.
const INSERT_EVENTS_GUARDED: &str =
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
     ORDER BY u.n
     ON CONFLICT (agent_id, id) DO NOTHING
     RETURNING id";

/// Which of a batch's ids one agent has stored already (the unique key's
/// index, one descent per id).
const PROBE: &str = "SELECT id FROM events WHERE agent_id = $1 AND id = ANY($2)";

const COPY_EVENTS: &str = "COPY events (id, agent_id, ts, kind, status, severity, component,
         message, from_version, to_version, channel, wave, details) FROM STDIN BINARY";

const COPY_TYPES: [Type; 13] = [
    Type::BYTEA,
    Type::TEXT,
    Type::INT8,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
];

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

/// How [`ingest`] stores the events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Insert<'a> {
    /// [`copy_new`] of this one batch: fails (see
    /// [`is_events_key_violation`]) if another transaction stores one of
    /// its ids meanwhile.
    Copy,
    /// Already stored by [`copy_new`] (for several batches at once): the
    /// rows at these indexes of the batch were new.
    Stored(&'a [usize]),
    /// `INSERT ... ON CONFLICT DO NOTHING`: never fails on a duplicate.
    Guarded,
}

/// The constraint an id stored twice by one agent breaks.
pub const EVENTS_KEY: &str = "events_agent_id_id_key";

/// Whether `e` is a [`copy_new`] (or [`Insert::Copy`]) that met an id
/// another transaction stored meanwhile (run it again with
/// [`Insert::Guarded`]).
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
    insert: Insert<'_>,
) -> Result<IngestOutcome, DbError> {
    let b = batch;
    let fresh: Vec<&Row> = match insert {
        Insert::Copy => {
            let stored = copy_new(c, &[(agent_id, b)]).await?;
            stored[0].iter().map(|&i| &b.rows[i]).collect()
        }
        Insert::Stored(rows) => rows.iter().map(|&i| &b.rows[i]).collect(),
        Insert::Guarded => insert_guarded(c, agent_id, b).await?,
    };
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

/// Stores the new events of `batches` (each an agent's, validated) in one
/// binary `COPY`, in batch order, batch after batch; answers, for each
/// batch, the indexes of its rows that were new (the first row of each id
/// neither stored before nor in an earlier row or batch of the same agent).
/// Fails with [`is_events_key_violation`] if another transaction stored
/// one of them meanwhile. Run it in a transaction.
pub async fn copy_new(
    c: &deadpool_postgres::Transaction<'_>,
    batches: &[(&str, &Batch)],
) -> Result<Vec<Vec<usize>>, DbError> {
    // Every probe sent before the first answer is read: tokio-postgres
    // pipelines concurrent queries on one connection. Each is planned for
    // its own values (an unnamed statement, one round trip): a plan cached
    // while `events` was small reads the agent's every event through
    // `events_agent_ts` instead of the key (measured over 10 s from a fresh
    // database: 38,291 events/s prepared once, 112,741 planned per call).
    let found = futures_util::future::try_join_all(batches.iter().map(|(agent_id, b)| {
        let ids: Vec<&[u8]> = b.rows.iter().map(|r| r.id.as_slice()).collect();
        async move {
            c.query_typed(PROBE, &[(agent_id, Type::TEXT), (&ids, Type::BYTEA_ARRAY)])
                .await
        }
    }))
    .await?;
    let mut seen: HashSet<(&str, [u8; 16])> = HashSet::new();
    let mut fresh = Vec::with_capacity(batches.len());
    let mut total = 0;
    for (&(agent_id, b), stored) in batches.iter().zip(found) {
        for r in stored {
            if let Ok(id) = <[u8; 16]>::try_from(r.get::<_, &[u8]>(0)) {
                seen.insert((agent_id, id));
            }
        }
        let new: Vec<usize> = (0..b.rows.len())
            .filter(|&i| seen.insert((agent_id, b.rows[i].id)))
            .collect();
        total += new.len();
        fresh.push(new);
    }
    if total == 0 {
        return Ok(fresh);
    }
    let st = c.prepare_typed_cached(COPY_EVENTS, &[]).await?;
    let sink = c.copy_in(&st).await?;
    let mut w = pin!(BinaryCopyInWriter::new(sink, &COPY_TYPES));
    for (&(agent_id, b), new) in batches.iter().zip(&fresh) {
        for &i in new {
            let r = &b.rows[i];
            let row: [&(dyn ToSql + Sync); 13] = [
                &r.id.as_slice(),
                &agent_id,
                &r.ts,
                &r.kind.as_str(),
                &r.status.as_str(),
                &stored_severity(r.kind, r.severity).as_str(),
                &b.text(&r.component),
                &b.text(&r.message),
                &b.opt(&r.from_version),
                &b.opt(&r.to_version),
                &b.opt(&r.channel),
                &b.opt(&r.wave),
                &b.text(&r.details),
            ];
            w.as_mut().write(&row).await?;
        }
    }
    w.as_mut().finish().await?;
    Ok(fresh)
}

/// [`INSERT_EVENTS_GUARDED`] of `b`: the first row of each new id, in
/// batch order.
async fn insert_guarded<'b>(
    c: &deadpool_postgres::Transaction<'_>,
    agent_id: &str,
    b: &'b Batch,
) -> Result<Vec<&'b Row>, DbError> {
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
    // Planned for its own values, as the probe (see [`copy_new`]).
    let ta = Type::TEXT_ARRAY;
    let inserted = c
        .query_typed(
            INSERT_EVENTS_GUARDED,
            &[
                (&ids, Type::BYTEA_ARRAY),
                (&agent_id, Type::TEXT),
                (&ts, Type::INT8_ARRAY),
                (&kind, ta.clone()),
                (&status, ta.clone()),
                (&severity, ta.clone()),
                (&component, ta.clone()),
                (&message, ta.clone()),
                (&from_version, ta.clone()),
                (&to_version, ta.clone()),
                (&channel_col, ta.clone()),
                (&wave_col, ta.clone()),
                (&details, ta),
            ],
        )
        .await?;
    let mut new_ids: HashSet<Vec<u8>> = inserted.iter().map(|r| r.get(0)).collect();
    // The first row of each new id, in batch order.
    Ok(b.rows
        .iter()
        .filter(|r| new_ids.remove(r.id.as_slice()))
        .collect())
}
