//! `POST /halts` and `POST /halts/{id}/reopen`: the emergency stop from the
//! overview page ([`crate::halts`]); CSRF-checked, then back to the
//! overview.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use flotilla_protocol::api::HaltRequest;
use serde::Deserialize;

use super::session::{self, WebSession};
use super::PageError;
use crate::halts;
use crate::state::AppState;

/// How the page's halts are signed in the record.
pub const CREDENTIAL: &str = "web page";

/// The emergency stop form.
#[derive(Deserialize)]
pub struct CloseForm {
    csrf: String,
    channel: String,
    #[serde(default)]
    release: String,
    reason: String,
    #[serde(default)]
    by: String,
}

/// The reopen form.
#[derive(Deserialize)]
pub struct ReopenForm {
    csrf: String,
    #[serde(default)]
    by: String,
}

fn checked(s: &WebSession, headers: &HeaderMap, csrf: &str) -> Result<(), PageError> {
    if session::same_origin(headers)
        && crate::tokens::constant_time_eq(s.csrf.as_bytes(), csrf.as_bytes())
    {
        Ok(())
    } else {
        Err(PageError(StatusCode::FORBIDDEN, "CSRF check failed".into()))
    }
}

fn some(s: String) -> Option<String> {
    let t = s.trim();
    (!t.is_empty()).then(|| t.to_owned())
}

/// Closes a gate.
pub async fn close(
    s: WebSession,
    State(st): State<AppState>,
    headers: HeaderMap,
    Form(f): Form<CloseForm>,
) -> Result<Response, PageError> {
    checked(&s, &headers, &f.csrf)?;
    let req = HaltRequest {
        channel: f.channel,
        release: some(f.release),
        reason: f.reason,
        by: some(f.by),
    };
    halts::close(&st, req, CREDENTIAL).await?;
    Ok(Redirect::to("/").into_response())
}

/// Reopens a halt.
pub async fn reopen(
    s: WebSession,
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    Form(f): Form<ReopenForm>,
) -> Result<Response, PageError> {
    checked(&s, &headers, &f.csrf)?;
    halts::reopen(&st, id, some(f.by).as_deref(), CREDENTIAL).await?;
    Ok(Redirect::to("/").into_response())
}
