//! The notification outbox on PostgreSQL: the twins of [`crate::db::outbox`]
//! and of [`crate::notify::insert`] ([`queue`]) and the gate part of
//! [`crate::notify::Notifier::observe_gate`] ([`record_gate`]).
//!
//! **Replicas.** Every replica runs a delivery task over the same table, so
//! [`due`] *claims* the rows it returns: in one `UPDATE ... RETURNING` it
//! moves their `next_at` [`CLAIM`] ahead, choosing them with `FOR UPDATE
//! SKIP LOCKED`, so two replicas asking at once get disjoint rows and a row
//! handed out is not due again until the claim runs out. Delivery then
//! ends the claim with [`delete`] (delivered or dropped) or [`failed`]
//! (next attempt at its backoff). A replica that dies holding a claim
//! leaves its rows due again after [`CLAIM`]: at least once, as on SQLite.
//! The other writes are single statements, safe as they are at READ
//! COMMITTED; [`set_state`] is an upsert.

use flotilla_protocol::api::{Gate, GateState};
use tokio_postgres::GenericClient;

use crate::db::outbox::Queued;
use crate::db::DbError;
use crate::notify::{Notice, Notifier};

/// How long a row [`due`] handed out stays claimed, µs: longer than a
/// delivery round of the rows it returns takes.
pub const CLAIM: i64 = 300 * 1_000_000;

/// Queues `body` for `receiver`.
pub async fn insert(
    c: &impl GenericClient,
    receiver: &str,
    kind: &str,
    body: &str,
    now: i64,
) -> Result<(), DbError> {
    c.execute(
        "INSERT INTO notify_outbox (receiver, kind, body, created_at, next_at)
         VALUES ($1, $2, $3, $4, $4)",
        &[&receiver, &kind, &body, &now],
    )
    .await?;
    Ok(())
}

/// Deletes the oldest rows beyond `max_rows`; returns their receivers.
pub async fn trim(c: &impl GenericClient, max_rows: u64) -> Result<Vec<String>, DbError> {
    let rows = c
        .query(
            "DELETE FROM notify_outbox WHERE id IN (
                 SELECT id FROM notify_outbox ORDER BY id DESC OFFSET $1)
             RETURNING receiver",
            &[&(max_rows.min(i64::MAX as u64) as i64)],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Deletes rows queued before `cutoff`; returns their receivers.
pub async fn expire(c: &impl GenericClient, cutoff: i64) -> Result<Vec<String>, DbError> {
    let rows = c
        .query(
            "DELETE FROM notify_outbox WHERE created_at < $1 RETURNING receiver",
            &[&cutoff],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Up to `limit` rows due at `now`, oldest first, claimed for this caller
/// until `now +` [`CLAIM`] (see the module doc). Runs as one statement.
pub async fn due(c: &impl GenericClient, now: i64, limit: u32) -> Result<Vec<Queued>, DbError> {
    let rows = c
        .query(
            "WITH claim AS (
                 SELECT id, next_at FROM notify_outbox WHERE next_at <= $1
                 ORDER BY next_at, id LIMIT $2 FOR UPDATE SKIP LOCKED)
             UPDATE notify_outbox o SET next_at = $3 FROM claim WHERE o.id = claim.id
             RETURNING o.id, o.receiver, o.kind, o.body, o.created_at, o.attempts, claim.next_at",
            &[&now, &(limit as i64), &now.saturating_add(CLAIM)],
        )
        .await?;
    let mut out: Vec<(i64, Queued)> = rows
        .iter()
        .map(|r| {
            (
                r.get(6),
                Queued {
                    id: r.get(0),
                    receiver: r.get(1),
                    kind: r.get(2),
                    body: r.get(3),
                    created_at: r.get(4),
                    attempts: r.get::<_, i64>(5) as u32,
                },
            )
        })
        .collect();
    // RETURNING has no order: SQLite's, by (next_at, id).
    out.sort_by_key(|(next_at, q)| (*next_at, q.id));
    Ok(out.into_iter().map(|(_, q)| q).collect())
}

/// When the next row is due, µs.
pub async fn next_due(c: &impl GenericClient) -> Result<Option<i64>, DbError> {
    Ok(c.query_one("SELECT min(next_at) FROM notify_outbox", &[])
        .await?
        .get(0))
}

/// Rows waiting.
pub async fn count(c: &impl GenericClient) -> Result<u64, DbError> {
    let n: i64 = c
        .query_one("SELECT count(*) FROM notify_outbox", &[])
        .await?
        .get(0);
    Ok(n as u64)
}

/// Row `id` was delivered (or dropped): it goes.
pub async fn delete(c: &impl GenericClient, id: i64) -> Result<(), DbError> {
    c.execute("DELETE FROM notify_outbox WHERE id = $1", &[&id])
        .await?;
    Ok(())
}

/// Row `id` failed once more; retried at `next_at` (which ends its claim).
pub async fn failed(
    c: &impl GenericClient,
    id: i64,
    next_at: i64,
    error: &str,
) -> Result<(), DbError> {
    c.execute(
        "UPDATE notify_outbox SET attempts = attempts + 1, next_at = $2, last_error = $3
         WHERE id = $1",
        &[&id, &next_at, &error],
    )
    .await?;
    Ok(())
}

/// A value the watcher remembers.
pub async fn state(c: &impl GenericClient, key: &str) -> Result<Option<String>, DbError> {
    Ok(
        c.query_opt("SELECT value FROM notify_state WHERE key = $1", &[&key])
            .await?
            .map(|r| r.get(0)),
    )
}

/// Remembers `value` under `key`.
pub async fn set_state(
    c: &impl GenericClient,
    key: &str,
    value: &str,
    now: i64,
) -> Result<(), DbError> {
    c.execute(
        "INSERT INTO notify_state (key, value, ts) VALUES ($1, $2, $3)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value, ts = excluded.ts",
        &[&key, &value, &now],
    )
    .await?;
    Ok(())
}

/// Agents last seen in `(after, upto]` (not revoked or blocked): those that
/// fell silent since the last look. The count and the first `limit` ids.
pub async fn fell_silent(
    c: &impl GenericClient,
    after: i64,
    upto: i64,
    limit: u32,
) -> Result<(u64, Vec<String>), DbError> {
    let filter = "FROM agents WHERE last_seen > $1 AND last_seen <= $2
                  AND revoked_at IS NULL AND blocked_at IS NULL";
    let n: i64 = c
        .query_one(&format!("SELECT count(*) {filter}"), &[&after, &upto])
        .await?
        .get(0);
    let ids = c
        .query(
            &format!("SELECT agent_id {filter} ORDER BY last_seen LIMIT $3"),
            &[&after, &upto, &(limit as i64)],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    Ok((n as u64, ids))
}

/// The twin of [`crate::notify::insert`]: queues `notice` for each receiver
/// that wants it, in `c`'s transaction, then drops the oldest rows beyond
/// `max_rows`. Returns whether anything was queued (then call
/// [`Notifier::wake`] after the commit).
pub async fn queue(
    c: &impl GenericClient,
    n: &Notifier,
    notice: &Notice,
    now: i64,
) -> Result<bool, DbError> {
    let kind = notice.kind();
    let mut body = None;
    for w in &n.settings().webhooks {
        if !(w.kinds.is_empty() || w.kinds.iter().any(|k| k == kind)) {
            continue;
        }
        let body = body.get_or_insert_with(|| notice.body(crate::db::from_micros(now)));
        insert(c, &w.name, kind, body, now).await?;
    }
    if body.is_none() {
        return Ok(false);
    }
    for receiver in trim(c, n.settings().max_rows).await? {
        n.dropped(&receiver, "max_rows");
    }
    Ok(true)
}

/// The gate part of [`Notifier::observe_gate`]: whether a notice was
/// queued. Run it in a transaction: the state row is locked from the look
/// to the change, so two replicas seeing the same change queue one notice.
pub async fn record_gate(
    c: &impl GenericClient,
    n: &Notifier,
    g: &Gate,
    now: i64,
) -> Result<bool, DbError> {
    let key = format!("gate:{}\u{1f}{}", g.channel, g.release);
    let state = match g.state {
        GateState::Closed => "closed",
        _ => "open",
    };
    // Lock the row (or, for a first look, make it, so the lock exists):
    // a replica coming second waits here and then sees the new state.
    let before: Option<String> = match c
        .query_opt(
            "SELECT value FROM notify_state WHERE key = $1 FOR UPDATE",
            &[&key],
        )
        .await?
    {
        Some(r) => Some(r.get(0)),
        None => {
            let made = c
                .execute(
                    "INSERT INTO notify_state (key, value, ts) VALUES ($1, $2, $3)
                     ON CONFLICT (key) DO NOTHING",
                    &[&key, &state, &now],
                )
                .await?;
            if made == 1 {
                // First seen: closed is news, open is not.
                return match g.state {
                    GateState::Closed => queue(c, n, &closed(g), now).await,
                    _ => Ok(false),
                };
            }
            // Another replica made it meanwhile: its value, locked.
            Some(
                c.query_one(
                    "SELECT value FROM notify_state WHERE key = $1 FOR UPDATE",
                    &[&key],
                )
                .await?
                .get(0),
            )
        }
    };
    if before.as_deref() == Some(state) {
        return Ok(false);
    }
    set_state(c, &key, state, now).await?;
    let notice = match (before.as_deref(), g.state) {
        (_, GateState::Closed) => closed(g),
        (None, _) => return Ok(false),
        (Some(_), _) => Notice::GateReopened {
            channel: g.channel.clone(),
            release: g.release.clone(),
            reason: g.reason.clone(),
        },
    };
    queue(c, n, &notice, now).await
}

fn closed(g: &Gate) -> Notice {
    Notice::GateClosed {
        channel: g.channel.clone(),
        release: g.release.clone(),
        reason: g.reason.clone(),
        failure_rate: g.failure_rate,
        failed: g.failed,
        reports: g.reports,
    }
}
