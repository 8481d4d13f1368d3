//! Enrollment on PostgreSQL: the twins of [`crate::db::enroll::enroll`]
//! (the same rule, the same answers) and
//! [`crate::db::enroll::agent_for_token`].
//!
//! **Replicas.** [`enroll`] runs in the caller's transaction and locks
//! what it decides on:
//!
//! - the enrollment token's row (`FOR UPDATE`), so enrollments with one
//!   token take turns and each sees the uses the one before counted: a
//!   token's `uses` never exceeds `max_uses`;
//! - the agent's row (`FOR UPDATE`) when the id is known; a new id is
//!   inserted with `ON CONFLICT DO NOTHING`, and if another transaction
//!   inserted it meanwhile (the insert waits for that one's commit) the
//!   rule is applied again to the row it made: one id is never enrolled
//!   twice, and the second request gets SQLite's answer for an enrolled
//!   id (the same token again if it proves it, else *taken*).

use chrono::{DateTime, Utc};
use flotilla_protocol::api::{EnrollRequest, EnrollResponse};
use tokio_postgres::Transaction;

use crate::db::enroll::{decide, Decision, Existing, Refusal};
use crate::db::{to_micros, DbError};
use crate::tokens;

/// Enrolls per the rule of [`crate::db::enroll`], in `tx` (the caller
/// commits). `agent_token`: the proof or proposal, else `None` for a fresh one.
pub async fn enroll(
    tx: &Transaction<'_>,
    req: &EnrollRequest,
    agent_token: Option<&str>,
    now: DateTime<Utc>,
) -> Result<Result<EnrollResponse, Refusal>, DbError> {
    let Some(row) = tx
        .query_opt(
            "SELECT * FROM enrollment_tokens WHERE hash = $1 FOR UPDATE",
            &[&tokens::hash(&req.enrollment_token)],
        )
        .await?
    else {
        return Ok(Err(Refusal::UnknownToken));
    };
    let token = super::tokens::token_from_row(&row)?;
    let labels = serde_json::to_string(&req.labels).expect("labels serialise");
    let proof = agent_token.map(tokens::hash);
    // At most twice: a second look only after another transaction
    // enrolled this id between our look and our insert.
    loop {
        let existing: Option<Existing> = tx
            .query_opt(
                "SELECT token_hash, revoked_at, blocked_at FROM agents WHERE agent_id = $1
                 FOR UPDATE",
                &[&req.agent_id],
            )
            .await?
            .map(|r| Existing {
                token_hash: r.get(0),
                revoked_at: r.get(1),
                blocked_at: r.get(2),
            });
        match decide(&token, existing.as_ref(), proof.as_deref(), now) {
            Decision::Refuse(r) => return Ok(Err(r)),
            Decision::Repeat => {
                tx.execute(
                    "UPDATE agents SET labels = $2, version = COALESCE($3, version),
                         channel = COALESCE($4, channel) WHERE agent_id = $1",
                    &[&req.agent_id, &labels, &req.version, &req.channel],
                )
                .await?;
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
        let used_elsewhere = tx
            .query_opt(
                "SELECT 1 FROM agents WHERE token_hash = $1 AND agent_id <> $2",
                &[&hash, &req.agent_id],
            )
            .await?
            .is_some();
        if used_elsewhere {
            return Ok(Err(Refusal::AgentTokenUnusable));
        }
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 7] = [
            &req.agent_id,
            &hash,
            &token.id,
            &to_micros(now),
            &labels,
            &req.version,
            &req.channel,
        ];
        let written = if existing.is_some() {
            // A released or readmitted id, its row locked above.
            tx.execute(
                "UPDATE agents SET token_hash = $2, enrolled_with = $3, enrolled_at = $4,
                     revoked_at = NULL, labels = $5, version = COALESCE($6, version),
                     channel = COALESCE($7, channel)
                 WHERE agent_id = $1",
                &params,
            )
            .await?
        } else {
            // Nothing to lock yet: the unique keys decide. 0 rows: this id
            // (or, by a proposal someone else made at the same moment, this
            // agent token) was enrolled meanwhile; look again.
            tx.execute(
                "INSERT INTO agents (agent_id, token_hash, enrolled_with, enrolled_at, labels,
                     version, channel)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)
                 ON CONFLICT DO NOTHING",
                &params,
            )
            .await?
        };
        if written == 0 {
            continue;
        }
        tx.execute(
            "UPDATE enrollment_tokens SET uses = uses + 1 WHERE id = $1",
            &[&token.id],
        )
        .await?;
        return Ok(Ok(EnrollResponse {
            agent_id: req.agent_id.clone(),
            agent_token: secret,
            already_enrolled: false,
        }));
    }
}

/// The agent a bearer token belongs to, if it is enrolled and not revoked.
/// Every agent request asks this, so the statement is prepared once per
/// connection.
pub async fn agent_for_token(
    c: &deadpool_postgres::Client,
    token: &str,
) -> Result<Option<String>, DbError> {
    let st = c
        .prepare_typed_cached(
            "SELECT agent_id FROM agents WHERE token_hash = $1 AND revoked_at IS NULL",
            &[tokio_postgres::types::Type::TEXT],
        )
        .await?;
    Ok(c.query_opt(&st, &[&tokens::hash(token)])
        .await?
        .map(|r| r.get(0)))
}
