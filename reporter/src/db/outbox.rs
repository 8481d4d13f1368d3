//! The notification outbox and the watcher's memory (`notify_state`).
//!
//! One `notify_outbox` row per (notice, receiver), deleted only once that
//! receiver answered 2xx, or dropped by a bound ([`crate::notify`]).

use rusqlite::{params, Connection, OptionalExtension};

use super::DbError;

/// A notice waiting for one receiver.
#[derive(Clone, Debug)]
pub struct Queued {
    /// Row id (also the `X-Flotilla-Delivery` header).
    pub id: i64,
    /// The receiver's name.
    pub receiver: String,
    /// The notice kind.
    pub kind: String,
    /// The notice, as JSON.
    pub body: String,
    /// When it was queued, µs.
    pub created_at: i64,
    /// Attempts made.
    pub attempts: u32,
}

/// Queues `body` for `receiver`.
pub fn insert(
    conn: &Connection,
    receiver: &str,
    kind: &str,
    body: &str,
    now: i64,
) -> Result<(), DbError> {
    conn.prepare_cached(
        "INSERT INTO notify_outbox (receiver, kind, body, created_at, next_at)
         VALUES (?1, ?2, ?3, ?4, ?4)",
    )?
    .execute(params![receiver, kind, body, now])?;
    Ok(())
}

/// Deletes the oldest rows beyond `max_rows`; returns their receivers.
pub fn trim(conn: &Connection, max_rows: u64) -> Result<Vec<String>, DbError> {
    let mut st = conn.prepare_cached(
        "DELETE FROM notify_outbox WHERE id IN (
             SELECT id FROM notify_outbox ORDER BY id DESC LIMIT -1 OFFSET ?1)
         RETURNING receiver",
    )?;
    let rows = st.query_map([max_rows as i64], |r| r.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Deletes rows queued before `cutoff`; returns their receivers.
pub fn expire(conn: &Connection, cutoff: i64) -> Result<Vec<String>, DbError> {
    let mut st =
        conn.prepare_cached("DELETE FROM notify_outbox WHERE created_at < ?1 RETURNING receiver")?;
    let rows = st.query_map([cutoff], |r| r.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Up to `limit` rows due at `now`, oldest first.
pub fn due(conn: &Connection, now: i64, limit: u32) -> Result<Vec<Queued>, DbError> {
    let mut st = conn.prepare_cached(
        "SELECT id, receiver, kind, body, created_at, attempts FROM notify_outbox
         WHERE next_at <= ?1 ORDER BY next_at, id LIMIT ?2",
    )?;
    let rows = st.query_map(params![now, limit], |r| {
        Ok(Queued {
            id: r.get(0)?,
            receiver: r.get(1)?,
            kind: r.get(2)?,
            body: r.get(3)?,
            created_at: r.get(4)?,
            attempts: r.get(5)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// When the next row is due, µs.
pub fn next_due(conn: &Connection) -> Result<Option<i64>, DbError> {
    Ok(conn
        .prepare_cached("SELECT min(next_at) FROM notify_outbox")?
        .query_row([], |r| r.get(0))?)
}

/// Rows waiting.
pub fn count(conn: &Connection) -> Result<u64, DbError> {
    Ok(conn
        .prepare_cached("SELECT count(*) FROM notify_outbox")?
        .query_row([], |r| r.get(0))?)
}

/// Row `id` was delivered (or dropped): it goes.
pub fn delete(conn: &Connection, id: i64) -> Result<(), DbError> {
    conn.prepare_cached("DELETE FROM notify_outbox WHERE id = ?1")?
        .execute([id])?;
    Ok(())
}

/// Row `id` failed once more; retried at `next_at`.
pub fn failed(conn: &Connection, id: i64, next_at: i64, error: &str) -> Result<(), DbError> {
    conn.prepare_cached(
        "UPDATE notify_outbox SET attempts = attempts + 1, next_at = ?2, last_error = ?3
         WHERE id = ?1",
    )?
    .execute(params![id, next_at, error])?;
    Ok(())
}

/// A value the watcher remembers.
pub fn state(conn: &Connection, key: &str) -> Result<Option<String>, DbError> {
    Ok(conn
        .prepare_cached("SELECT value FROM notify_state WHERE key = ?1")?
        .query_row([key], |r| r.get(0))
        .optional()?)
}

/// Remembers `value` under `key`.
pub fn set_state(conn: &Connection, key: &str, value: &str, now: i64) -> Result<(), DbError> {
    conn.prepare_cached(
        "INSERT INTO notify_state (key, value, ts) VALUES (?1, ?2, ?3)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value, ts = excluded.ts",
    )?
    .execute(params![key, value, now])?;
    Ok(())
}

/// Agents last seen in `(after, upto]` (not revoked or blocked): those that
/// fell silent since the last look. The count and the first `limit` ids.
pub fn fell_silent(
    conn: &Connection,
    after: i64,
    upto: i64,
    limit: u32,
) -> Result<(u64, Vec<String>), DbError> {
    let filter = "FROM agents WHERE last_seen > ?1 AND last_seen <= ?2
                  AND revoked_at IS NULL AND blocked_at IS NULL";
    let n: u64 = conn
        .prepare_cached(&format!("SELECT count(*) {filter}"))?
        .query_row(params![after, upto], |r| r.get(0))?;
    let mut st = conn.prepare_cached(&format!(
        "SELECT agent_id {filter} ORDER BY last_seen LIMIT ?3"
    ))?;
    let ids = st
        .query_map(params![after, upto, limit], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    Ok((n, ids))
}
