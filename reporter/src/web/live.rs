//! `GET /agents/{id}/stamp`: a few bytes that change whenever the agent's
//! page would (a new event, a check-in), so the open page polls this
//! instead of itself and reloads only on a change (`assets/app.js`).

use axum::extract::{Path, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use flotilla_protocol::api::AgentSummary;

use super::overview::urlenc;
use super::session::WebSession;
use crate::state::AppState;

/// The stamp route of agent `id`.
pub fn stamp_url(id: &str) -> String {
    format!("/agents/{}/stamp", urlenc(id))
}

/// What changes when the agent's page would: its event count, when it
/// was last seen, its newest error and its check-in.
pub fn stamp_of(a: &AgentSummary) -> String {
    let t = |v: Option<chrono::DateTime<chrono::Utc>>| v.map(|t| t.timestamp_micros()).unwrap_or(0);
    format!(
        "{}.{}.{}.{}",
        a.event_count,
        t(a.last_seen),
        t(a.last_error_at),
        t(a.checked_in_at)
    )
}

/// The handler: the stamp as text, 404 for an unknown agent.
pub async fn stamp(_: WebSession, State(st): State<AppState>, Path(id): Path<String>) -> Response {
    let stale = st.stale_before();
    match st.store.agent(id, stale).await {
        Ok(Some(a)) => (
            [(CONTENT_TYPE, "text/plain"), (CACHE_CONTROL, "no-store")],
            stamp_of(&a),
        )
            .into_response(),
        Ok(None) => StatusCode::NOT_FOUND.into_response(),
        Err(e) => crate::error::AppError::from(e).into_response(),
    }
}
