//! Authentication, as extractors.
//!
//! - [`AgentAuth`]: `Authorization: Bearer <agent token>` of an enrolled,
//!   non-revoked agent (looked up by the token's SHA-256).
//! - [`AdminAuth`]: `Authorization: Bearer <admin token>` (`--admin-token-file`).
//! - [`GateAuth`]: either of the two (the gate is read by agents and admins).
//!
//! A missing, unknown or revoked token answers 401 with `WWW-Authenticate: Bearer`.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::http::HeaderMap;

use crate::db::enroll;
use crate::error::AppError;
use crate::state::AppState;
use crate::tokens;

/// The bearer token of a request, if any.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Whether `token` is the admin token.
pub fn is_admin(state: &AppState, token: &str) -> bool {
    state
        .settings
        .admin_token
        .as_ref()
        .is_some_and(|a| tokens::constant_time_eq(a.expose().as_bytes(), token.as_bytes()))
}

async fn agent_of(state: &AppState, token: &str) -> Result<Option<String>, AppError> {
    if !flotilla_protocol::api::is_agent_token_shaped(token) {
        return Ok(None);
    }
    let t = token.to_owned();
    Ok(state
        .reader
        .read_quick(move |c| enroll::agent_for_token(c, &t))
        .await?)
}

/// An authenticated agent.
#[derive(Clone, Debug)]
pub struct AgentAuth {
    /// Its id.
    pub agent_id: String,
}

impl FromRequestParts<AppState> for AgentAuth {
    type Rejection = AppError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        let Some(token) = bearer(&parts.headers) else {
            state.metrics.rejected("unauthorized");
            return Err(AppError::unauthorized("missing bearer token"));
        };
        match agent_of(state, token).await? {
            Some(agent_id) => Ok(AgentAuth { agent_id }),
            None => {
                state.metrics.rejected("unauthorized");
                Err(AppError::unauthorized("unknown or revoked agent token"))
            }
        }
    }
}

/// The admin.
#[derive(Clone, Copy, Debug)]
pub struct AdminAuth;

impl FromRequestParts<AppState> for AdminAuth {
    type Rejection = AppError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        if state.settings.admin_token.is_none() {
            return Err(AppError::unauthorized(
                "no admin token is configured (--admin-token-file)",
            ));
        }
        match bearer(&parts.headers) {
            Some(t) if is_admin(state, t) => Ok(AdminAuth),
            Some(_) => Err(AppError::unauthorized("wrong admin token")),
            None => Err(AppError::unauthorized("missing bearer token")),
        }
    }
}

/// The admin or any enrolled agent.
#[derive(Clone, Debug)]
pub enum GateAuth {
    /// The admin token.
    Admin,
    /// An agent token.
    Agent(String),
}

impl FromRequestParts<AppState> for GateAuth {
    type Rejection = AppError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        let Some(token) = bearer(&parts.headers) else {
            return Err(AppError::unauthorized("missing bearer token"));
        };
        if is_admin(state, token) {
            return Ok(GateAuth::Admin);
        }
        match agent_of(state, token).await? {
            Some(a) => Ok(GateAuth::Agent(a)),
            None => Err(AppError::unauthorized("unknown or revoked token")),
        }
    }
}
