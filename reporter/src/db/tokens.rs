//! Enrollment tokens and agent revocation: the admin side, called by the
//! `token` and `agent` subcommands on their own connection (SQLite's
//! locking makes that safe next to a running server).

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection};

use super::{from_micros, now_micros, DbError};
use crate::tokens;

/// An enrollment token's real state at a given time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenState {
    /// May enroll agents.
    Active,
    /// Past its expiry.
    Expired,
    /// Every allowed use was made.
    UsedUp,
    /// Revoked by an admin.
    Revoked,
}

impl fmt::Display for TokenState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TokenState::Active => "active",
            TokenState::Expired => "expired",
            TokenState::UsedUp => "used up",
            TokenState::Revoked => "revoked",
        })
    }
}

/// One enrollment token, as `token list` shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenInfo {
    /// Its id (not secret).
    pub id: String,
    /// When it was made.
    pub created_at: DateTime<Utc>,
    /// When it expires, if it does.
    pub expires_at: Option<DateTime<Utc>>,
    /// How many agents it may enroll, if limited.
    pub max_uses: Option<u64>,
    /// How many it enrolled.
    pub uses: u64,
    /// When it was revoked.
    pub revoked_at: Option<DateTime<Utc>>,
    /// The admin's note.
    pub note: String,
}

impl TokenInfo {
    /// Its state at `now` (revoked beats expired beats used up).
    pub fn state(&self, now: DateTime<Utc>) -> TokenState {
        if self.revoked_at.is_some() {
            TokenState::Revoked
        } else if self.expires_at.is_some_and(|e| e <= now) {
            TokenState::Expired
        } else if self.max_uses.is_some_and(|m| self.uses >= m) {
            TokenState::UsedUp
        } else {
            TokenState::Active
        }
    }
}

pub(crate) fn token_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<TokenInfo> {
    Ok(TokenInfo {
        id: r.get("id")?,
        created_at: from_micros(r.get("created_at")?),
        expires_at: r.get::<_, Option<i64>>("expires_at")?.map(from_micros),
        max_uses: r.get::<_, Option<i64>>("max_uses")?.map(|v| v as u64),
        uses: r.get::<_, i64>("uses")? as u64,
        revoked_at: r.get::<_, Option<i64>>("revoked_at")?.map(from_micros),
        note: r.get("note")?,
    })
}

/// Makes an enrollment token; returns its info and the secret, which is
/// never stored and cannot be shown again.
pub fn create(
    conn: &Connection,
    expires_in: Option<Duration>,
    max_uses: Option<u64>,
    note: &str,
) -> Result<(TokenInfo, String), DbError> {
    let secret = tokens::new_enrollment_token();
    let id = tokens::random_id();
    let now = now_micros();
    let expires =
        expires_in.map(|d| now.saturating_add(d.as_micros().min(i64::MAX as u128) as i64));
    conn.execute(
        "INSERT INTO enrollment_tokens (id, hash, created_at, expires_at, max_uses, note)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            id,
            tokens::hash(&secret),
            now,
            expires,
            max_uses.map(|m| m as i64),
            note
        ],
    )?;
    let info = conn.query_row(
        "SELECT * FROM enrollment_tokens WHERE id = ?1",
        [&id],
        token_from_row,
    )?;
    Ok((info, secret))
}

/// Every enrollment token, newest first.
pub fn list(conn: &Connection) -> Result<Vec<TokenInfo>, DbError> {
    let mut st = conn.prepare("SELECT * FROM enrollment_tokens ORDER BY created_at DESC, id")?;
    let rows = st.query_map([], token_from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Revokes an enrollment token; agents it enrolled stay enrolled.
/// Returns false if there is no such token.
pub fn revoke(conn: &Connection, id: &str) -> Result<bool, DbError> {
    let n = conn.execute(
        "UPDATE enrollment_tokens SET revoked_at = COALESCE(revoked_at, ?2) WHERE id = ?1",
        params![id, now_micros()],
    )?;
    Ok(n == 1)
}

/// Revokes an agent's token: its requests get 401 from now on, and its id
/// may be enrolled again (with a new agent token). Its history stays.
/// Returns false if there is no such agent.
pub fn revoke_agent(conn: &Connection, agent_id: &str) -> Result<bool, DbError> {
    let n = conn.execute(
        "UPDATE agents SET revoked_at = COALESCE(revoked_at, ?2) WHERE agent_id = ?1",
        params![agent_id, now_micros()],
    )?;
    Ok(n == 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_precedence() {
        let now = Utc::now();
        let mut t = TokenInfo {
            id: "x".into(),
            created_at: now,
            expires_at: Some(now + chrono::Duration::hours(1)),
            max_uses: Some(1),
            uses: 0,
            revoked_at: None,
            note: String::new(),
        };
        assert_eq!(t.state(now), TokenState::Active);
        t.uses = 1;
        assert_eq!(t.state(now), TokenState::UsedUp);
        assert_eq!(
            t.state(now + chrono::Duration::hours(2)),
            TokenState::Expired
        );
        t.revoked_at = Some(now);
        assert_eq!(t.state(now), TokenState::Revoked);
    }
}
