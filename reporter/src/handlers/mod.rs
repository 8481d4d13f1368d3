//! HTTP handlers, one file per resource. Routes are in [`crate::router`].

pub mod agents;
pub mod checkin;
pub mod enroll;
pub mod events;
pub mod halts;
pub mod health;
pub mod rollouts;

use axum::http::StatusCode;

use crate::error::AppError;
use crate::state::AppState;

/// The per-agent request limit (`rate_limit_*`), shared by events and
/// check-ins: 429 with `Retry-After` beyond it, counted as `rate_limited`.
pub(crate) fn limit_agent(st: &AppState, agent_id: &str) -> Result<(), AppError> {
    st.limiter.check(agent_id).map_err(|wait| {
        st.metrics.rejected("rate_limited");
        AppError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too many requests from this agent; retry later",
        )
        .retry_after(wait.as_secs_f64().ceil() as u64)
    })
}

/// Splits a comma-separated filter value; `None` and `""` give nothing.
pub(crate) fn list(v: &Option<String>) -> Vec<String> {
    v.as_deref()
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Parses an RFC 3339 time given as a query parameter, in µs.
pub(crate) fn time_param(field: &str, v: &Option<String>) -> Result<Option<i64>, AppError> {
    match v.as_deref().filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(s) => chrono::DateTime::parse_from_rfc3339(s)
            .map(|t| Some(t.timestamp_micros()))
            .map_err(|e| {
                AppError::bad_request(format!("{field}: {s:?} is not an RFC 3339 time: {e}"))
                    .at(None, Some(field))
            }),
    }
}
