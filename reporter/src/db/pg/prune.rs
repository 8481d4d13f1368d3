//! Retention on PostgreSQL: the twins of [`crate::db::prune`]. Each delete
//! and the matching `event_count` update are ONE statement (a
//! data-modifying `WITH`), so they commit together without the caller's
//! transaction, and a row deleted by another replica at the same time is
//! counted by the one that deleted it only (READ COMMITTED re-checks the
//! row). One replica at a time runs retention, by the [`super::lease`]
//! named [`LEASE`]; the statements stay right even without it.

use tokio_postgres::types::ToSql;
use tokio_postgres::GenericClient;

use crate::db::DbError;

/// The lease the retention job holds while it prunes.
pub const LEASE: &str = "retention";

/// Runs `delete` (a `DELETE ... RETURNING agent_id`), takes the deleted
/// events off their agents' counts in the same statement; how many.
async fn delete_counted(
    c: &impl GenericClient,
    delete: &str,
    args: &[&(dyn ToSql + Sync)],
) -> Result<usize, DbError> {
    let sql = format!(
        "WITH d AS ({delete}),
              n AS (SELECT agent_id, count(*) AS k FROM d GROUP BY agent_id),
              u AS (UPDATE agents SET event_count = GREATEST(0, event_count - n.k)
                    FROM n WHERE agents.agent_id = n.agent_id)
         SELECT COALESCE(sum(k), 0)::BIGINT FROM n"
    );
    let n: i64 = c.query_one(&sql, args).await?.try_get(0)?;
    Ok(n as usize)
}

/// Deletes up to `max` events older than `cutoff` (µs); returns how many.
pub async fn older_than(c: &impl GenericClient, cutoff: i64, max: u32) -> Result<usize, DbError> {
    delete_counted(
        c,
        "DELETE FROM events WHERE seq IN
             (SELECT seq FROM events WHERE ts < $1 ORDER BY ts LIMIT $2)
         RETURNING agent_id",
        &[&cutoff, &(max as i64)],
    )
    .await
}

/// Agents holding more than `keep` events, by id (SQLite's twin gives
/// them in its table's order: the same set).
pub async fn agents_over(c: &impl GenericClient, keep: u64) -> Result<Vec<String>, DbError> {
    let rows = c
        .query(
            "SELECT agent_id FROM agents WHERE event_count > $1 ORDER BY agent_id COLLATE \"C\"",
            &[&(keep as i64)],
        )
        .await?;
    rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
}

/// Deletes up to `max` of the oldest events of `agent_id` beyond its
/// newest `keep`; returns how many.
pub async fn beyond_count(
    c: &impl GenericClient,
    agent_id: &str,
    keep: u64,
    max: u32,
) -> Result<usize, DbError> {
    let edge = c
        .query_opt(
            "SELECT ts, seq FROM events WHERE agent_id = $1
             ORDER BY ts DESC, seq DESC LIMIT 1 OFFSET $2",
            &[&agent_id, &(keep as i64)],
        )
        .await?;
    let Some(edge) = edge else {
        // fewer than keep + 1: the count was stale; make it right
        c.execute(
            "UPDATE agents SET event_count = (SELECT count(*) FROM events WHERE agent_id = $1)
             WHERE agent_id = $1",
            &[&agent_id],
        )
        .await?;
        return Ok(0);
    };
    let (ts, seq): (i64, i64) = (edge.try_get(0)?, edge.try_get(1)?);
    delete_counted(
        c,
        "DELETE FROM events WHERE seq IN (
             SELECT seq FROM events WHERE agent_id = $1 AND (ts < $2 OR (ts = $2 AND seq <= $3))
             ORDER BY ts LIMIT $4)
         RETURNING agent_id",
        &[&agent_id, &ts, &seq, &(max as i64)],
    )
    .await
}
