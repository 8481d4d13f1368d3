//! Tokens and agent revocation on PostgreSQL: the twins of
//! [`crate::db::tokens`]. Each write is one statement, so replicas running
//! them at once are safe: a new token's id and hash are random and unique
//! (a clash is an error, never an overwrite), and revocations keep the
//! first time (`COALESCE`), whichever replica or admin came first.

use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_postgres::types::{FromSql, Type};
use tokio_postgres::{GenericClient, Row};

use crate::db::tokens::{Scope, TokenInfo, TokenState};
use crate::db::{from_micros, now_micros, DbError};
use crate::tokens;

/// The `scope` column; a value this binary does not know is a conversion
/// error naming the column, as in SQLite's twin.
struct ScopeCol(Scope);

impl<'a> FromSql<'a> for ScopeCol {
    fn from_sql(
        ty: &Type,
        raw: &'a [u8],
    ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(ScopeCol(<&str as FromSql>::from_sql(ty, raw)?.parse()?))
    }

    fn accepts(ty: &Type) -> bool {
        <&str as FromSql>::accepts(ty)
    }
}

/// A token's row (enrollment reads it too, as on SQLite).
pub(super) fn token_from_row(r: &Row) -> Result<TokenInfo, DbError> {
    Ok(TokenInfo {
        id: r.try_get("id")?,
        scope: r.try_get::<_, ScopeCol>("scope")?.0,
        created_at: from_micros(r.try_get("created_at")?),
        expires_at: r.try_get::<_, Option<i64>>("expires_at")?.map(from_micros),
        max_uses: r.try_get::<_, Option<i64>>("max_uses")?.map(|v| v as u64),
        uses: r.try_get::<_, i64>("uses")? as u64,
        agents: 0,
        revoked_at: r.try_get::<_, Option<i64>>("revoked_at")?.map(from_micros),
        note: r.try_get("note")?,
    })
}

/// Makes an enrollment token; returns its info and the secret, which is
/// never stored and cannot be shown again. `None` means unlimited.
pub async fn create(
    c: &impl GenericClient,
    expires_in: Option<Duration>,
    max_uses: Option<u64>,
    note: &str,
) -> Result<(TokenInfo, String), DbError> {
    insert(
        c,
        Scope::Enroll,
        tokens::new_enrollment_token(),
        expires_in,
        max_uses,
        note,
    )
    .await
}

/// Makes a `read` token (see [`Scope::Read`]); returns its info and the
/// secret, shown once like an enrollment token's.
pub async fn create_read(
    c: &impl GenericClient,
    expires_in: Option<Duration>,
    note: &str,
) -> Result<(TokenInfo, String), DbError> {
    insert(
        c,
        Scope::Read,
        tokens::new_read_token(),
        expires_in,
        None,
        note,
    )
    .await
}

/// One `INSERT ... RETURNING`: the row as stored, with no window for
/// another replica in between.
async fn insert(
    c: &impl GenericClient,
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
    let row = c
        .query_one(
            "INSERT INTO enrollment_tokens (id, hash, created_at, expires_at, max_uses, note, scope)
             VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING *",
            &[
                &id,
                &tokens::hash(&secret),
                &now,
                &expires,
                &max_uses.map(|m| m as i64),
                &note,
                &scope.as_str(),
            ],
        )
        .await?;
    Ok((token_from_row(&row)?, secret))
}

/// Whether `secret` is a `read` token that is neither revoked nor expired.
pub async fn read_token_active(
    c: &impl GenericClient,
    secret: &str,
    now: DateTime<Utc>,
) -> Result<bool, DbError> {
    let t = c
        .query_opt(
            "SELECT * FROM enrollment_tokens WHERE hash = $1 AND scope = 'read'",
            &[&tokens::hash(secret)],
        )
        .await?
        .map(|r| token_from_row(&r))
        .transpose()?;
    Ok(t.is_some_and(|t| t.state(now) == TokenState::Active))
}

/// Every token, newest first, with the agents each one enrolled.
pub async fn list(c: &impl GenericClient) -> Result<Vec<TokenInfo>, DbError> {
    let rows = c
        .query(
            "SELECT t.*, (SELECT count(*) FROM agents a
                          WHERE a.enrolled_with = t.id AND a.revoked_at IS NULL) AS agents
             FROM enrollment_tokens t ORDER BY t.created_at DESC, t.id COLLATE \"C\"",
            &[],
        )
        .await?;
    rows.iter()
        .map(|r| {
            let mut t = token_from_row(r)?;
            t.agents = r.try_get::<_, i64>("agents")? as u64;
            Ok(t)
        })
        .collect()
}

/// Revokes an enrollment token; agents it enrolled stay enrolled.
/// Returns false if there is no such token.
pub async fn revoke(c: &impl GenericClient, id: &str) -> Result<bool, DbError> {
    let n = c
        .execute(
            "UPDATE enrollment_tokens SET revoked_at = COALESCE(revoked_at, $2) WHERE id = $1",
            &[&id, &now_micros()],
        )
        .await?;
    Ok(n == 1)
}

/// Revokes an agent and keeps it out (see SQLite's twin). Returns false if
/// there is no such agent.
pub async fn revoke_agent(c: &impl GenericClient, agent_id: &str) -> Result<bool, DbError> {
    let n = c
        .execute(
            "UPDATE agents SET revoked_at = COALESCE(revoked_at, $2),
                 blocked_at = COALESCE(blocked_at, $2) WHERE agent_id = $1",
            &[&agent_id, &now_micros()],
        )
        .await?;
    Ok(n == 1)
}

/// Lets a revoked agent id enroll again. Returns false if there is no such
/// agent.
pub async fn readmit_agent(c: &impl GenericClient, agent_id: &str) -> Result<bool, DbError> {
    let n = c
        .execute(
            "UPDATE agents SET blocked_at = NULL WHERE agent_id = $1",
            &[&agent_id],
        )
        .await?;
    Ok(n == 1)
}

/// Releases an agent id: its token is revoked and the id is free to be
/// enrolled anew. Returns false if there is no such agent.
pub async fn release_agent(c: &impl GenericClient, agent_id: &str) -> Result<bool, DbError> {
    let n = c
        .execute(
            "UPDATE agents SET revoked_at = COALESCE(revoked_at, $2), blocked_at = NULL
             WHERE agent_id = $1",
            &[&agent_id, &now_micros()],
        )
        .await?;
    Ok(n == 1)
}
