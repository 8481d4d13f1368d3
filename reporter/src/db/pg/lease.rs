//! Leases: a job that must run on one replica at a time (retention) holds
//! the row `leases(name)` until `expires` (µs). Taking or renewing it is
//! ONE statement, an upsert that changes the row only when it expired or
//! is the caller's own; at READ COMMITTED a second replica racing for the
//! row waits for the first one's commit and then finds the row not
//! expired and not its own, so it gets nothing. No advisory locks (some
//! PostgreSQL-compatible engines lack them); a holder that dies loses the
//! lease when it expires.

use tokio_postgres::GenericClient;

use crate::db::DbError;

/// Takes (or renews) lease `name` for `holder` until `now + ttl_us`;
/// whether `holder` holds it now.
pub async fn acquire(
    c: &impl GenericClient,
    name: &str,
    holder: &str,
    ttl_us: i64,
    now: i64,
) -> Result<bool, DbError> {
    let expires = now.saturating_add(ttl_us);
    let row = c
        .query_opt(
            "INSERT INTO leases (name, holder, expires) VALUES ($1, $2, $3)
             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires = excluded.expires
             WHERE leases.expires < $4 OR leases.holder = excluded.holder
             RETURNING holder",
            &[&name, &holder, &expires, &now],
        )
        .await?;
    Ok(row.is_some())
}

/// Gives lease `name` up if `holder` holds it; whether it did.
pub async fn release(c: &impl GenericClient, name: &str, holder: &str) -> Result<bool, DbError> {
    let n = c
        .execute(
            "DELETE FROM leases WHERE name = $1 AND holder = $2",
            &[&name, &holder],
        )
        .await?;
    Ok(n == 1)
}
