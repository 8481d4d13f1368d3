//! The SQL of the emergency stop ([`crate::halts`]).

use flotilla_protocol::api::Halt;
use rusqlite::{params, Connection, OptionalExtension, Row};

use super::{from_micros, DbError};

const COLUMNS: &str =
    "id, channel, release, reason, closed_by, closed_at, reopened_by, reopened_at";

fn halt_from_row(r: &Row<'_>) -> rusqlite::Result<Halt> {
    Ok(Halt {
        id: r.get(0)?,
        channel: r.get(1)?,
        release: r.get(2)?,
        reason: r.get(3)?,
        closed_by: r.get(4)?,
        closed_at: from_micros(r.get(5)?),
        reopened_by: r.get(6)?,
        reopened_at: r.get::<_, Option<i64>>(7)?.map(from_micros),
    })
}

/// What [`close`] did.
#[derive(Clone, Debug, PartialEq)]
pub enum Closed {
    /// A new halt.
    New(Halt),
    /// The same scope is halted already: that halt, unchanged.
    Already(Halt),
}

/// Closes the gate of `channel` (one `release`, or all), unless the same
/// scope is halted already. `now` in µs.
pub fn close(
    conn: &Connection,
    channel: &str,
    release: Option<&str>,
    reason: &str,
    by: &str,
    now: i64,
) -> Result<Closed, DbError> {
    let existing = conn
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM halts WHERE channel = ?1 AND release IS ?2
             AND reopened_at IS NULL"
        ))?
        .query_row(params![channel, release], halt_from_row)
        .optional()?;
    if let Some(h) = existing {
        return Ok(Closed::Already(h));
    }
    conn.prepare_cached(
        "INSERT INTO halts (channel, release, reason, closed_by, closed_at) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![channel, release, reason, by, now])?;
    let id = conn.last_insert_rowid();
    Ok(Closed::New(get(conn, id)?.expect("just inserted")))
}

/// Reopens halt `id`: `None` if there is none; the halt as it is now
/// (reopened already, it stays as it was).
pub fn reopen(conn: &Connection, id: i64, by: &str, now: i64) -> Result<Option<Halt>, DbError> {
    conn.prepare_cached(
        "UPDATE halts SET reopened_by = ?2, reopened_at = ?3 WHERE id = ?1 AND reopened_at IS NULL",
    )?
    .execute(params![id, by, now])?;
    get(conn, id)
}

/// One halt.
pub fn get(conn: &Connection, id: i64) -> Result<Option<Halt>, DbError> {
    Ok(conn
        .prepare_cached(&format!("SELECT {COLUMNS} FROM halts WHERE id = ?1"))?
        .query_row([id], halt_from_row)
        .optional()?)
}

/// Active halts, oldest first, then the `recent` newest reopened ones.
pub fn list(conn: &Connection, recent: u32) -> Result<Vec<Halt>, DbError> {
    let mut out: Vec<Halt> = conn
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM halts WHERE reopened_at IS NULL ORDER BY id"
        ))?
        .query_map([], halt_from_row)?
        .collect::<Result<_, _>>()?;
    let reopened = conn
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM halts WHERE reopened_at IS NOT NULL
             ORDER BY reopened_at DESC LIMIT ?1"
        ))?
        .query_map([recent], halt_from_row)?
        .collect::<Result<Vec<_>, _>>()?;
    out.extend(reopened);
    Ok(out)
}

/// Active halts only.
pub fn active(conn: &Connection) -> Result<Vec<Halt>, DbError> {
    list(conn, 0)
}
