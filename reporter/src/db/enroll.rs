//! Enrollment: an enrollment token buys an agent id its agent token.
//!
//! The rule, in order:
//!
//! 1. The enrollment token must exist (else *unknown token*) and be of
//!    scope `enroll` (a `read` token is refused as such).
//! 2. An agent id an admin revoked (`agent revoke`) stays out, whatever
//!    the token, until `agent readmit ID`.
//! 3. If the agent id is enrolled and not revoked, the request must prove
//!    the agent's current token (in `agent_token`, or as the `Bearer`
//!    header); then the answer is the same token again, no use is counted
//!    and an expired or used-up enrollment token does not matter (this is
//!    what makes a retried enrollment idempotent). Without that proof the
//!    id is *taken*: nobody can take an agent id over; an admin must first
//!    run `flotilla-reporter agent release ID` (a squatted id) or `agent
//!    revoke ID` and later `agent readmit ID`.
//! 4. Otherwise (a new id, or a released or readmitted one) the enrollment token must be
//!    active: not revoked, not expired, uses left. One use is counted, and
//!    the agent token (the agent's proposal or a fresh random one) is
//!    stored as its SHA-256. A token that was revoked is never accepted
//!    again, not even for the same id.

use chrono::{DateTime, Utc};
use flotilla_protocol::api::{EnrollRequest, EnrollResponse};
use rusqlite::{params, Connection, OptionalExtension};

use super::tokens::{token_from_row, Scope, TokenState};
use super::{to_micros, DbError};
use crate::tokens;

/// Why an enrollment was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No such enrollment token.
    UnknownToken,
    /// The enrollment token is expired, used up or revoked.
    Token(TokenState),
    /// The agent id is enrolled and the request did not prove its token.
    Taken,
    /// An admin revoked this agent id and has not readmitted it.
    Blocked,
    /// The token presented is a `read` token, not an enrollment token.
    ReadToken,
    /// The proposed agent token was revoked before, or belongs to another agent.
    AgentTokenUnusable,
}

/// Enrolls per the rule above. `agent_token`: the proof or proposal (from
/// the body or the header), else `None` for a fresh one.
pub fn enroll(
    conn: &Connection,
    req: &EnrollRequest,
    agent_token: Option<&str>,
    now: DateTime<Utc>,
) -> Result<Result<EnrollResponse, Refusal>, DbError> {
    let Some(token) = conn
        .prepare_cached("SELECT * FROM enrollment_tokens WHERE hash = ?1")?
        .query_row([tokens::hash(&req.enrollment_token)], token_from_row)
        .optional()?
    else {
        return Ok(Err(Refusal::UnknownToken));
    };
    if token.scope != Scope::Enroll {
        return Ok(Err(Refusal::ReadToken));
    }
    let labels = serde_json::to_string(&req.labels).expect("labels serialise");
    let existing: Option<(Option<String>, Option<i64>, Option<i64>)> = conn
        .prepare_cached(
            "SELECT token_hash, revoked_at, blocked_at FROM agents WHERE agent_id = ?1",
        )?
        .query_row([&req.agent_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?;
    if existing.as_ref().is_some_and(|e| e.2.is_some()) {
        return Ok(Err(Refusal::Blocked));
    }
    let existing = existing.map(|(hash, revoked, _)| (hash, revoked));
    let proof = agent_token.map(tokens::hash);
    if let Some((stored, None)) = &existing {
        // Enrolled and active: only the holder of its token may repeat it.
        if proof.is_some() && proof == *stored {
            if token.state(now) == TokenState::Revoked {
                return Ok(Err(Refusal::Token(TokenState::Revoked)));
            }
            conn.execute(
                "UPDATE agents SET labels = ?2, version = COALESCE(?3, version),
                     channel = COALESCE(?4, channel) WHERE agent_id = ?1",
                params![req.agent_id, labels, req.version, req.channel],
            )?;
            return Ok(Ok(EnrollResponse {
                agent_id: req.agent_id.clone(),
                agent_token: agent_token.expect("proof implies a token").to_owned(),
                already_enrolled: true,
            }));
        }
        return Ok(Err(Refusal::Taken));
    }
    let state = token.state(now);
    if state != TokenState::Active {
        return Ok(Err(Refusal::Token(state)));
    }
    if let (Some(p), Some((Some(old), Some(_)))) = (&proof, &existing) {
        if p == old {
            return Ok(Err(Refusal::AgentTokenUnusable));
        }
    }
    let secret = agent_token
        .map(str::to_owned)
        .unwrap_or_else(tokens::random_hex256);
    let hash = tokens::hash(&secret);
    let used_elsewhere: bool = conn
        .prepare_cached("SELECT 1 FROM agents WHERE token_hash = ?1 AND agent_id <> ?2")?
        .exists(params![hash, req.agent_id])?;
    if used_elsewhere {
        return Ok(Err(Refusal::AgentTokenUnusable));
    }
    conn.execute(
        "INSERT INTO agents (agent_id, token_hash, enrolled_with, enrolled_at, labels, version, channel)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT (agent_id) DO UPDATE SET
             token_hash = excluded.token_hash, enrolled_with = excluded.enrolled_with,
             enrolled_at = excluded.enrolled_at, revoked_at = NULL, labels = excluded.labels,
             version = COALESCE(excluded.version, agents.version),
             channel = COALESCE(excluded.channel, agents.channel)",
        params![
            req.agent_id,
            hash,
            token.id,
            to_micros(now),
            labels,
            req.version,
            req.channel
        ],
    )?;
    conn.execute(
        "UPDATE enrollment_tokens SET uses = uses + 1 WHERE id = ?1",
        [&token.id],
    )?;
    Ok(Ok(EnrollResponse {
        agent_id: req.agent_id.clone(),
        agent_token: secret,
        already_enrolled: false,
    }))
}

/// The agent a bearer token belongs to, if it is enrolled and not revoked.
pub fn agent_for_token(conn: &Connection, token: &str) -> Result<Option<String>, DbError> {
    Ok(conn
        .prepare_cached("SELECT agent_id FROM agents WHERE token_hash = ?1 AND revoked_at IS NULL")?
        .query_row([tokens::hash(token)], |r| r.get(0))
        .optional()?)
}
