//! Retention: deleting events by age and by count per agent, in bounded
//! chunks so that one job never holds the writer for long. The agents'
//! `event_count` is kept in step. Rollout state (`agent_release`) is not
//! pruned: the gate keeps counting outcomes whose events are gone.

use std::collections::HashMap;

use rusqlite::{params, Connection, OptionalExtension};

use super::DbError;

fn subtract(conn: &Connection, deleted: HashMap<String, i64>) -> Result<(), DbError> {
    let mut st = conn.prepare_cached(
        "UPDATE agents SET event_count = max(0, event_count - ?2) WHERE agent_id = ?1",
    )?;
    for (agent, n) in deleted {
        st.execute(params![agent, n])?;
    }
    Ok(())
}

fn delete_returning(
    conn: &Connection,
    sql: &str,
    args: impl rusqlite::Params,
) -> Result<usize, DbError> {
    let mut st = conn.prepare_cached(sql)?;
    let mut rows = st.query(args)?;
    let mut per: HashMap<String, i64> = HashMap::new();
    let mut total = 0;
    while let Some(r) = rows.next()? {
        *per.entry(r.get(0)?).or_default() += 1;
        total += 1;
    }
    drop(rows);
    subtract(conn, per)?;
    Ok(total)
}

/// Deletes up to `max` events older than `cutoff` (µs); returns how many.
pub fn older_than(conn: &Connection, cutoff: i64, max: u32) -> Result<usize, DbError> {
    delete_returning(
        conn,
        "DELETE FROM events WHERE seq IN (SELECT seq FROM events WHERE ts < ?1 ORDER BY ts LIMIT ?2)
         RETURNING agent_id",
        params![cutoff, max],
    )
}

/// Agents holding more than `keep` events.
pub fn agents_over(conn: &Connection, keep: u64) -> Result<Vec<String>, DbError> {
    let mut st = conn.prepare_cached("SELECT agent_id FROM agents WHERE event_count > ?1")?;
    let rows = st.query_map([keep as i64], |r| r.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Deletes up to `max` of the oldest events of `agent_id` beyond its
/// newest `keep`; returns how many.
pub fn beyond_count(
    conn: &Connection,
    agent_id: &str,
    keep: u64,
    max: u32,
) -> Result<usize, DbError> {
    let edge: Option<(i64, i64)> = conn
        .prepare_cached(
            "SELECT ts, seq FROM events WHERE agent_id = ?1 ORDER BY ts DESC, seq DESC LIMIT 1 OFFSET ?2",
        )?
        .query_row(params![agent_id, keep as i64], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let Some((ts, seq)) = edge else {
        // fewer than keep + 1: the count was stale; make it right
        conn.execute(
            "UPDATE agents SET event_count = (SELECT count(*) FROM events WHERE agent_id = ?1)
             WHERE agent_id = ?1",
            [agent_id],
        )?;
        return Ok(0);
    };
    delete_returning(
        conn,
        "DELETE FROM events WHERE seq IN (
             SELECT seq FROM events WHERE agent_id = ?1 AND (ts < ?2 OR (ts = ?2 AND seq <= ?3))
             ORDER BY ts LIMIT ?4)
         RETURNING agent_id",
        params![agent_id, ts, seq, max],
    )
}
