//! Tokens made by `token create` (scope `enroll`: enrollment tokens; scope
//! `read`: API read tokens) and agent revocation: the admin side, called by
//! the `token` and `agent` subcommands on their own connection (SQLite's
//! locking makes that safe next to a running server).

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension};

use super::{from_micros, now_micros, DbError};
use crate::tokens;

/// What a token made by `token create` may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Enroll agents (`POST /api/v1/enroll`).
    Enroll,
    /// Read status and plan data: `GET /api/v1/agents*`, `/api/v1/rollouts*`,
    /// `/api/v1/gate/*` and `/metrics`. Never writes, never the web page.
    Read,
}

impl Scope {
    /// Its name in the database and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Enroll => "enroll",
            Scope::Read => "read",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Scope {
    type Err = String;
    fn from_str(s: &str) -> Result<Scope, String> {
        match s {
            "enroll" => Ok(Scope::Enroll),
            "read" => Ok(Scope::Read),
            other => Err(format!("scope {other:?} is not one of enroll, read")),
        }
    }
}

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
    /// What it may do.
    pub scope: Scope,
    /// When it was made.
    pub created_at: DateTime<Utc>,
    /// When it expires, if it does.
    pub expires_at: Option<DateTime<Utc>>,
    /// How many agents it may enroll, if limited.
    pub max_uses: Option<u64>,
    /// How many enrollments it made (a re-enrolled id counts again).
    pub uses: u64,
    /// How many agents are enrolled with it now (not revoked): what a
    /// stuffed token shows (filled by [`list`]; 0 elsewhere).
    pub agents: u64,
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
        scope: r.get::<_, String>("scope")?.parse().map_err(|e: String| {
            rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, e.into())
        })?,
        created_at: from_micros(r.get("created_at")?),
        expires_at: r.get::<_, Option<i64>>("expires_at")?.map(from_micros),
        max_uses: r.get::<_, Option<i64>>("max_uses")?.map(|v| v as u64),
        uses: r.get::<_, i64>("uses")? as u64,
        agents: 0,
        revoked_at: r.get::<_, Option<i64>>("revoked_at")?.map(from_micros),
        note: r.get("note")?,
    })
}

/// Makes an enrollment token; returns its info and the secret, which is
/// never stored and cannot be shown again. `None` means unlimited: the
/// command line's defaults are in `cli::token`.
pub fn create(
    conn: &Connection,
    expires_in: Option<Duration>,
    max_uses: Option<u64>,
    note: &str,
) -> Result<(TokenInfo, String), DbError> {
    insert(
        conn,
        Scope::Enroll,
        tokens::new_enrollment_token(),
        expires_in,
        max_uses,
        note,
    )
}

/// Makes a `read` token (see [`Scope::Read`]); returns its info and the
/// secret, shown once like an enrollment token's.
pub fn create_read(
    conn: &Connection,
    expires_in: Option<Duration>,
    note: &str,
) -> Result<(TokenInfo, String), DbError> {
    insert(
        conn,
        Scope::Read,
        tokens::new_read_token(),
        expires_in,
        None,
        note,
    )
}

fn insert(
    conn: &Connection,
    scope: Scope,
    secret: String,
    expires_in: Option<Duration>,
    max_uses: Option<u64>,
    note: &str,
) -> Result<(TokenInfo, String), DbError> {
    let id = tokens::random_id();
    let now = now_micros();
    let expires =
        expires_in.map(|d| now.saturating_add(d.as_micros().min(i64::MAX as u128) as i64));
    conn.execute(
        "INSERT INTO enrollment_tokens (id, hash, created_at, expires_at, max_uses, note, scope)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            id,
            tokens::hash(&secret),
            now,
            expires,
            max_uses.map(|m| m as i64),
            note,
            scope.as_str()
        ],
    )?;
    let info = conn.query_row(
        "SELECT * FROM enrollment_tokens WHERE id = ?1",
        [&id],
        token_from_row,
    )?;
    Ok((info, secret))
}

/// Whether `secret` is a `read` token that is neither revoked nor expired.
pub fn read_token_active(
    conn: &Connection,
    secret: &str,
    now: DateTime<Utc>,
) -> Result<bool, DbError> {
    let t = conn
        .prepare_cached("SELECT * FROM enrollment_tokens WHERE hash = ?1 AND scope = 'read'")?
        .query_row([tokens::hash(secret)], token_from_row)
        .optional()?;
    Ok(t.is_some_and(|t| t.state(now) == TokenState::Active))
}

/// Every token, newest first, with the agents each one enrolled.
pub fn list(conn: &Connection) -> Result<Vec<TokenInfo>, DbError> {
    let mut st = conn.prepare(
        "SELECT t.*, (SELECT count(*) FROM agents a
                      WHERE a.enrolled_with = t.id AND a.revoked_at IS NULL) AS agents
         FROM enrollment_tokens t ORDER BY t.created_at DESC, t.id",
    )?;
    let rows = st.query_map([], |r| {
        let mut t = token_from_row(r)?;
        t.agents = r.get::<_, i64>("agents")? as u64;
        Ok(t)
    })?;
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

/// Revokes an agent and keeps it out: its requests get 401 from now on and
/// its id cannot be enrolled again, with any token, until
/// [`readmit_agent`]. Its history stays. Returns false if there is no
/// such agent.
pub fn revoke_agent(conn: &Connection, agent_id: &str) -> Result<bool, DbError> {
    let now = now_micros();
    let n = conn.execute(
        "UPDATE agents SET revoked_at = COALESCE(revoked_at, ?2),
             blocked_at = COALESCE(blocked_at, ?2) WHERE agent_id = ?1",
        params![agent_id, now],
    )?;
    Ok(n == 1)
}

/// Lets a revoked agent id enroll again (with an enrollment token and a new
/// agent token; its old token stays dead). Returns false if there is no
/// such agent.
pub fn readmit_agent(conn: &Connection, agent_id: &str) -> Result<bool, DbError> {
    let n = conn.execute(
        "UPDATE agents SET blocked_at = NULL WHERE agent_id = ?1",
        [agent_id],
    )?;
    Ok(n == 1)
}

/// Releases an agent id, e.g. one a squatter enrolled before the real host:
/// its token is revoked (the holder gets 401) and the id is free to be
/// enrolled anew by whoever has an active enrollment token, at once. Its
/// history stays. Returns false if there is no such agent.
pub fn release_agent(conn: &Connection, agent_id: &str) -> Result<bool, DbError> {
    let n = conn.execute(
        "UPDATE agents SET revoked_at = COALESCE(revoked_at, ?2), blocked_at = NULL
         WHERE agent_id = ?1",
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
            scope: Scope::Enroll,
            agents: 0,
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
