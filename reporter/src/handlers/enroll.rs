//! `POST /api/v1/enroll`: an enrollment token buys an agent token. The rule
//! is in [`crate::db::enroll`].

use axum::extract::rejection::JsonRejection;
use axum::extract::State;
use axum::http::StatusCode;
use axum::http::{Extensions, HeaderMap};
use axum::Json;
use flotilla_protocol::api::{is_agent_token_shaped, EnrollRequest, EnrollResponse};
use flotilla_protocol::event::{valid_agent_id, AGENT_ID_RULE};

use crate::db::enroll::Refusal;
use crate::db::tokens::TokenState;
use crate::error::AppError;
use crate::state::AppState;

/// Most labels an agent may have.
pub const MAX_LABELS: usize = 64;

fn check(req: &EnrollRequest) -> Result<(), AppError> {
    let bad = |field: &str, msg: String| Err(AppError::bad_request(msg).at(None, Some(field)));
    if !valid_agent_id(&req.agent_id) {
        return bad("agent_id", format!("agent_id must be {AGENT_ID_RULE}"));
    }
    if req.labels.len() > MAX_LABELS
        || req
            .labels
            .iter()
            .any(|(k, v)| k.is_empty() || k.len() > 128 || v.len() > 256)
    {
        return bad(
            "labels",
            format!("at most {MAX_LABELS} labels, keys 1-128 bytes, values up to 256 bytes"),
        );
    }
    for (field, v) in [("version", &req.version), ("channel", &req.channel)] {
        if v.as_ref().is_some_and(|s| s.len() > 128) {
            return bad(field, format!("{field}: at most 128 bytes"));
        }
    }
    if let Some(t) = &req.agent_token {
        if !is_agent_token_shaped(t) {
            return bad(
                "agent_token",
                "agent_token must be 64 lowercase hex digits (256 random bits)".into(),
            );
        }
    }
    Ok(())
}

/// The handler.
pub async fn post(
    State(st): State<AppState>,
    headers: HeaderMap,
    ext: Extensions,
    body: Result<Json<EnrollRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<EnrollResponse>), AppError> {
    // Every attempt counts, per client address: enrolling a crowd of fake
    // agents, or guessing tokens, takes time.
    let ip = crate::auth::client_ip(&st, &headers, &ext);
    if let Err(wait) = st.enroll_limiter.check(&crate::auth::limit_key(ip)) {
        st.metrics.enrollment("rate_limited");
        return Err(AppError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too many enrollments from this address; wait and retry",
        )
        .retry_after(wait.as_secs().max(1)));
    }
    let Json(req) = body.map_err(|r| AppError::new(r.status(), r.body_text()))?;
    check(&req)?;
    let proof = req.agent_token.clone().or_else(|| {
        crate::auth::bearer(&headers)
            .filter(|t| is_agent_token_shaped(t))
            .map(str::to_owned)
    });
    let now = chrono::Utc::now();
    let agent_id = req.agent_id.clone();
    let result = st.store.enroll(req, proof, now).await?;
    match result {
        Ok(resp) => {
            let code = if resp.already_enrolled {
                st.metrics.enrollment("repeated");
                StatusCode::OK
            } else {
                st.metrics.enrollment("enrolled");
                tracing::info!(agent_id, "agent enrolled");
                StatusCode::CREATED
            };
            Ok((code, Json(resp)))
        }
        Err(refusal) => {
            st.metrics.enrollment("refused");
            Err(match refusal {
                Refusal::UnknownToken => AppError::unauthorized("unknown enrollment token"),
                Refusal::Token(TokenState::Expired) => {
                    AppError::unauthorized("the enrollment token has expired")
                }
                Refusal::Token(TokenState::UsedUp) => {
                    AppError::unauthorized("the enrollment token is used up")
                }
                Refusal::Token(_) => AppError::unauthorized("the enrollment token was revoked"),
                Refusal::Taken => AppError::new(
                    StatusCode::CONFLICT,
                    format!(
                        "agent {agent_id} is enrolled already; to enroll it anew an admin must \
                         first run `flotilla-reporter agent release {agent_id}`"
                    ),
                )
                .at(None, Some("agent_id")),
                Refusal::Blocked => AppError::new(
                    StatusCode::FORBIDDEN,
                    format!(
                        "agent {agent_id} was revoked by an admin; it may enroll again only \
                         after `flotilla-reporter agent readmit {agent_id}`"
                    ),
                )
                .at(None, Some("agent_id")),
                Refusal::ReadToken => AppError::new(
                    StatusCode::FORBIDDEN,
                    "a read token cannot enroll agents; use an enrollment token \
                     (`flotilla-reporter token create`)",
                )
                .at(None, Some("enrollment_token")),
                Refusal::AgentTokenUnusable => AppError::new(
                    StatusCode::CONFLICT,
                    "this agent token was revoked or is in use; make a new one",
                )
                .at(None, Some("agent_token")),
            })
        }
    }
}
