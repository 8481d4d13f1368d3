//! `POST /api/v1/checkin` (agent token): see [`crate::checkin`].
//!
//! In order: the agent token (401), the agent's rate limit (429, shared
//! with its event batches), the JSON (400), the fields' bounds (400 naming
//! the field). Answers 202 Accepted without waiting for the database; 503
//! when too many check-ins wait (the agent tries again next pass).

use axum::extract::rejection::JsonRejection;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use flotilla_protocol::api::CheckIn;

use crate::auth::AgentAuth;
use crate::error::AppError;
use crate::state::AppState;

/// Largest check-in body.
pub const MAX_CHECKIN_BYTES: usize = 8 * 1024;

/// The handler.
pub async fn post(
    State(st): State<AppState>,
    agent: AgentAuth,
    body: Result<Json<CheckIn>, JsonRejection>,
) -> Result<StatusCode, AppError> {
    super::limit_agent(&st, &agent.agent_id)?;
    let Json(c) = body.map_err(|r| {
        st.metrics.rejected("invalid");
        AppError::new(r.status(), format!("check-in: {}", r.body_text()))
    })?;
    if let Err((field, why)) = c.check() {
        st.metrics.rejected("invalid");
        return Err(
            AppError::bad_request(format!("check-in: {field}: {why}")).at(None, Some(field))
        );
    }
    if !st
        .checkins
        .record(&agent.agent_id, c, crate::db::now_micros())
    {
        return Err(AppError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many check-ins wait to be written; the next pass checks in again",
        )
        .retry_after(1));
    }
    Ok(StatusCode::ACCEPTED)
}
