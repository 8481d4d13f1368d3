//! The SQL of the rollout history ([`crate::rollout_history`]).

use rusqlite::{params, Connection};

use super::DbError;

/// One release a channel rolled out: when the reporter first and last saw
/// the verified manifest name it (µs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The channel.
    pub channel: String,
    /// The release.
    pub release: String,
    /// First seen as the channel's release.
    pub first_seen: i64,
    /// Last seen so.
    pub last_seen: i64,
}

/// Records that the manifest names `pairs` (channel, release) now.
pub fn touch(conn: &Connection, pairs: &[(String, String)], now: i64) -> Result<(), DbError> {
    let mut st = conn.prepare_cached(
        "INSERT INTO rollout_history (channel, release, first_seen, last_seen) VALUES (?1, ?2, ?3, ?3)
         ON CONFLICT (channel, release) DO UPDATE SET last_seen = excluded.last_seen",
    )?;
    for (c, r) in pairs {
        st.execute(params![c, r, now])?;
    }
    Ok(())
}

/// The newest `per_channel` rollouts of each channel (or of `channel`),
/// by channel, newest first.
pub fn list(
    conn: &Connection,
    channel: Option<&str>,
    per_channel: u32,
) -> Result<Vec<Entry>, DbError> {
    let mut st = conn.prepare_cached(
        "SELECT channel, release, first_seen, last_seen FROM (
             SELECT *, row_number() OVER (PARTITION BY channel ORDER BY first_seen DESC) AS n
             FROM rollout_history WHERE ?1 IS NULL OR channel = ?1)
         WHERE n <= ?2 ORDER BY channel, first_seen DESC",
    )?;
    let rows = st.query_map(params![channel, per_channel], |r| {
        Ok(Entry {
            channel: r.get(0)?,
            release: r.get(1)?,
            first_seen: r.get(2)?,
            last_seen: r.get(3)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}
