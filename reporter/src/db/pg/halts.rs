//! The emergency stop on PostgreSQL: the twins of [`crate::db::halts`].
//! Closing is safe across replicas: the unique partial index
//! `halts_active` admits one active halt per channel and release, the
//! insert yields to it (`ON CONFLICT DO NOTHING`), and the loser answers
//! with the winner's halt, as a second close answers on SQLite. Ids are
//! SQLite's (the next after the highest) except after such a race, which
//! leaves a gap (a sequence value taken by the insert that yielded).

use flotilla_protocol::api::Halt;
use tokio_postgres::{GenericClient, Row};

use crate::db::halts::Closed;
use crate::db::{from_micros, DbError};

const COLUMNS: &str =
    "id, channel, release, reason, closed_by, closed_at, reopened_by, reopened_at";

fn halt_from_row(r: &Row) -> Result<Halt, DbError> {
    Ok(Halt {
        id: r.try_get(0)?,
        channel: r.try_get(1)?,
        release: r.try_get(2)?,
        reason: r.try_get(3)?,
        closed_by: r.try_get(4)?,
        closed_at: from_micros(r.try_get(5)?),
        reopened_by: r.try_get(6)?,
        reopened_at: r.try_get::<_, Option<i64>>(7)?.map(from_micros),
    })
}

/// Closes the gate of `channel` (one `release`, or all), unless the same
/// scope is halted already. `now` in µs.
pub async fn close(
    c: &impl GenericClient,
    channel: &str,
    release: Option<&str>,
    reason: &str,
    by: &str,
    now: i64,
) -> Result<Closed, DbError> {
    let existing = format!(
        "SELECT {COLUMNS} FROM halts WHERE channel = $1
         AND release IS NOT DISTINCT FROM $2 AND reopened_at IS NULL"
    );
    // Looked up first, so that closing a closed gate (the common repeat)
    // takes no id: a conflicting insert would take one from the sequence,
    // and ids would then differ from SQLite's.
    if let Some(r) = c.query_opt(&existing, &[&channel, &release]).await? {
        return Ok(Closed::Already(halt_from_row(&r)?));
    }
    let insert = format!(
        "INSERT INTO halts (channel, release, reason, closed_by, closed_at)
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING RETURNING {COLUMNS}"
    );
    if let Some(r) = c
        .query_opt(&insert, &[&channel, &release, &reason, &by, &now])
        .await?
    {
        return Ok(Closed::New(halt_from_row(&r)?));
    }
    // Another replica closed it in between (committed: the insert waited
    // for it), unless that halt was reopened since.
    if let Some(r) = c.query_opt(&existing, &[&channel, &release]).await? {
        return Ok(Closed::Already(halt_from_row(&r)?));
    }
    // Reopened in between, or a halt the index deems the same scope that
    // the lookup does not (release `""` next to an all-releases halt):
    // insert plainly, which either succeeds or fails as SQLite's does.
    let r = c
        .query_one(
            &format!(
                "INSERT INTO halts (channel, release, reason, closed_by, closed_at)
                 VALUES ($1, $2, $3, $4, $5) RETURNING {COLUMNS}"
            ),
            &[&channel, &release, &reason, &by, &now],
        )
        .await?;
    Ok(Closed::New(halt_from_row(&r)?))
}

/// Reopens halt `id`: `None` if there is none; the halt as it is now
/// (reopened already, it stays as it was).
pub async fn reopen(
    c: &impl GenericClient,
    id: i64,
    by: &str,
    now: i64,
) -> Result<Option<Halt>, DbError> {
    c.execute(
        "UPDATE halts SET reopened_by = $2, reopened_at = $3 WHERE id = $1 AND reopened_at IS NULL",
        &[&id, &by, &now],
    )
    .await?;
    get(c, id).await
}

/// One halt.
pub async fn get(c: &impl GenericClient, id: i64) -> Result<Option<Halt>, DbError> {
    c.query_opt(
        &format!("SELECT {COLUMNS} FROM halts WHERE id = $1"),
        &[&id],
    )
    .await?
    .map(|r| halt_from_row(&r))
    .transpose()
}

/// Active halts, oldest first, then the `recent` newest reopened ones.
pub async fn list(c: &impl GenericClient, recent: u32) -> Result<Vec<Halt>, DbError> {
    let mut out = c
        .query(
            &format!("SELECT {COLUMNS} FROM halts WHERE reopened_at IS NULL ORDER BY id"),
            &[],
        )
        .await?
        .iter()
        .map(halt_from_row)
        .collect::<Result<Vec<_>, _>>()?;
    let reopened = c
        .query(
            &format!(
                "SELECT {COLUMNS} FROM halts WHERE reopened_at IS NOT NULL
                 ORDER BY reopened_at DESC LIMIT $1"
            ),
            &[&(recent as i64)],
        )
        .await?;
    for r in &reopened {
        out.push(halt_from_row(r)?);
    }
    Ok(out)
}

/// Active halts only.
pub async fn active(c: &impl GenericClient) -> Result<Vec<Halt>, DbError> {
    list(c, 0).await
}
