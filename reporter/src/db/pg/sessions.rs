//! The twins of [`crate::db::sessions`]: web sessions in the database, so a
//! login made on one replica is valid on every other.

use tokio_postgres::GenericClient;

use crate::db::DbError;

/// Stores a new session.
pub async fn create(
    c: &impl GenericClient,
    hash: &str,
    csrf: &str,
    expires_at: i64,
) -> Result<(), DbError> {
    c.execute(
        "INSERT INTO web_sessions (hash, csrf, expires_at) VALUES ($1, $2, $3)",
        &[&hash, &csrf, &expires_at],
    )
    .await?;
    Ok(())
}

/// The CSRF token of session `hash` if it has not expired by `now`.
pub async fn get(c: &impl GenericClient, hash: &str, now: i64) -> Result<Option<String>, DbError> {
    Ok(c.query_opt(
        "SELECT csrf FROM web_sessions WHERE hash = $1 AND expires_at > $2",
        &[&hash, &now],
    )
    .await?
    .map(|r| r.get(0)))
}

/// Ends session `hash` (nothing if there is none).
pub async fn remove(c: &impl GenericClient, hash: &str) -> Result<(), DbError> {
    c.execute("DELETE FROM web_sessions WHERE hash = $1", &[&hash])
        .await?;
    Ok(())
}

/// Deletes the sessions expired by `now`; returns how many.
pub async fn expire(c: &impl GenericClient, now: i64) -> Result<usize, DbError> {
    Ok(
        c.execute("DELETE FROM web_sessions WHERE expires_at <= $1", &[&now])
            .await? as usize,
    )
}
