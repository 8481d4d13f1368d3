//! The rollout history on PostgreSQL: the twins of
//! [`crate::db::rollout_history`]. `touch` is an upsert, so replicas
//! touching the same release at once keep one row (first seen stays the
//! first).

use tokio_postgres::GenericClient;

use crate::db::rollout_history::Entry;
use crate::db::DbError;

/// Records that the manifest names `pairs` (channel, release) now.
pub async fn touch(
    c: &impl GenericClient,
    pairs: &[(String, String)],
    now: i64,
) -> Result<(), DbError> {
    let st = c
        .prepare(
            "INSERT INTO rollout_history (channel, release, first_seen, last_seen)
             VALUES ($1, $2, $3, $3)
             ON CONFLICT (channel, release) DO UPDATE SET last_seen = excluded.last_seen",
        )
        .await?;
    for (ch, r) in pairs {
        c.execute(&st, &[ch, r, &now]).await?;
    }
    Ok(())
}

/// The newest `per_channel` rollouts of each channel (or of `channel`),
/// by channel, newest first.
pub async fn list(
    c: &impl GenericClient,
    channel: Option<&str>,
    per_channel: u32,
) -> Result<Vec<Entry>, DbError> {
    let rows = c
        .query(
            "SELECT channel, release, first_seen, last_seen FROM (
                 SELECT *, row_number() OVER (PARTITION BY channel ORDER BY first_seen DESC) AS n
                 FROM rollout_history WHERE $1::TEXT IS NULL OR channel = $1) h
             WHERE n <= $2 ORDER BY channel COLLATE \"C\", first_seen DESC",
            &[&channel, &(per_channel as i64)],
        )
        .await?;
    rows.iter()
        .map(|r| {
            Ok(Entry {
                channel: r.try_get(0)?,
                release: r.try_get(1)?,
                first_seen: r.try_get(2)?,
                last_seen: r.try_get(3)?,
            })
        })
        .collect()
}
