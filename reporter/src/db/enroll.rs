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

use super::tokens::{token_from_row, Scope, TokenInfo, TokenState};
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

/// The agent row an enrollment finds for its id.
#[derive(Clone, Debug, Default)]
pub struct Existing {
    /// Its agent token's hash (none once released).
    pub token_hash: Option<String>,
    /// When an admin revoked it (µs), if so.
    pub revoked_at: Option<i64>,
    /// When an admin blocked it (µs), if so (until readmitted).
    pub blocked_at: Option<i64>,
}

/// What the rule above decides, from what the database holds: both
/// backends ask this, then do what it says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Refused.
    Refuse(Refusal),
    /// Enrolled and proven: update the labels, version and channel, answer
    /// the same agent token again, count no use.
    Repeat,
    /// Enroll (a new id, or a released or readmitted one): unless the agent
    /// token is another agent's, store it and count a use.
    Enroll,
}

/// The rule above for `token`, the id's row (`existing`) and the hash of the
/// proof or proposal (`proof`).
pub fn decide(
    token: &TokenInfo,
    existing: Option<&Existing>,
    proof: Option<&str>,
    now: DateTime<Utc>,
) -> Decision {
    if token.scope != Scope::Enroll {
        return Decision::Refuse(Refusal::ReadToken);
    }
    if existing.is_some_and(|e| e.blocked_at.is_some()) {
        return Decision::Refuse(Refusal::Blocked);
    }
    if let Some(e) = existing.filter(|e| e.revoked_at.is_none()) {
        // Enrolled and active: only the holder of its token may repeat it.
        if proof.is_some() && proof == e.token_hash.as_deref() {
            if token.state(now) == TokenState::Revoked {
                return Decision::Refuse(Refusal::Token(TokenState::Revoked));
            }
            return Decision::Repeat;
        }
        return Decision::Refuse(Refusal::Taken);
    }
    let state = token.state(now);
    if state != TokenState::Active {
        return Decision::Refuse(Refusal::Token(state));
    }
    // A revoked agent's token is never accepted again, not even for its id.
    if let (Some(p), Some(old)) = (proof, existing.and_then(|e| e.token_hash.as_deref())) {
        if p == old {
            return Decision::Refuse(Refusal::AgentTokenUnusable);
        }
    }
    Decision::Enroll
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
    let labels = serde_json::to_string(&req.labels).expect("labels serialise");
    let existing: Option<Existing> = conn
        .prepare_cached(
            "SELECT token_hash, revoked_at, blocked_at FROM agents WHERE agent_id = ?1",
        )?
        .query_row([&req.agent_id], |r| {
            Ok(Existing {
                token_hash: r.get(0)?,
                revoked_at: r.get(1)?,
                blocked_at: r.get(2)?,
            })
        })
        .optional()?;
    let proof = agent_token.map(tokens::hash);
    match decide(&token, existing.as_ref(), proof.as_deref(), now) {
        Decision::Refuse(r) => return Ok(Err(r)),
        Decision::Repeat => {
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
        Decision::Enroll => {}
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
