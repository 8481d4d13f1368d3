//! The web page's admin sessions (see [`crate::web::session`]): stored by
//! the SHA-256 of their id, with their CSRF token and expiry (µs), so a
//! login outlives a restart.

use rusqlite::{params, Connection, OptionalExtension};

use super::DbError;

/// Stores a new session.
pub fn create(conn: &Connection, hash: &str, csrf: &str, expires_at: i64) -> Result<(), DbError> {
    conn.prepare_cached("INSERT INTO web_sessions (hash, csrf, expires_at) VALUES (?1, ?2, ?3)")?
        .execute(params![hash, csrf, expires_at])?;
    Ok(())
}

/// The CSRF token of session `hash` if it has not expired by `now`.
pub fn get(conn: &Connection, hash: &str, now: i64) -> Result<Option<String>, DbError> {
    Ok(conn
        .prepare_cached("SELECT csrf FROM web_sessions WHERE hash = ?1 AND expires_at > ?2")?
        .query_row(params![hash, now], |r| r.get(0))
        .optional()?)
}

/// Ends session `hash` (nothing if there is none).
pub fn remove(conn: &Connection, hash: &str) -> Result<(), DbError> {
    conn.prepare_cached("DELETE FROM web_sessions WHERE hash = ?1")?
        .execute([hash])?;
    Ok(())
}

/// Deletes the sessions expired by `now`; returns how many.
pub fn expire(conn: &Connection, now: i64) -> Result<usize, DbError> {
    Ok(conn
        .prepare_cached("DELETE FROM web_sessions WHERE expires_at <= ?1")?
        .execute([now])?)
}
