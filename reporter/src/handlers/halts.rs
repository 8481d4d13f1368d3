//! `GET /api/v1/halts` (admin or read token), `POST /api/v1/halts` and
//! `POST /api/v1/halts/{id}/reopen` (admin token): the emergency stop,
//! [`crate::halts`].

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use flotilla_protocol::api::{Halt, HaltList, HaltRequest, ReopenRequest};

use crate::auth::AdminAuth;
use crate::error::AppError;
use crate::halts;
use crate::state::AppState;

/// How the API's halts are signed in the record.
pub const CREDENTIAL: &str = "admin token";

/// `GET /api/v1/halts`: active halts, then the 50 newest reopened ones.
pub async fn list(_: AdminAuth, State(st): State<AppState>) -> Result<Json<HaltList>, AppError> {
    let halts = st.store.halts_list(50).await?;
    Ok(Json(HaltList { halts }))
}

/// `POST /api/v1/halts`: 201 with the new halt, 200 with the one that
/// holds the same scope already.
pub async fn create(
    _: AdminAuth,
    State(st): State<AppState>,
    body: Result<Json<HaltRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<Halt>), AppError> {
    let Json(req) = body.map_err(|r| AppError::new(r.status(), r.body_text()))?;
    let (h, new) = halts::close(&st, req, CREDENTIAL).await?;
    let code = if new {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((code, Json(h)))
}

/// `POST /api/v1/halts/{id}/reopen`: the halt, reopened; 404.
pub async fn reopen(
    _: AdminAuth,
    State(st): State<AppState>,
    Path(id): Path<i64>,
    body: Option<Json<ReopenRequest>>,
) -> Result<Json<Halt>, AppError> {
    let by = body.and_then(|Json(r)| r.by);
    Ok(Json(
        halts::reopen(&st, id, by.as_deref(), CREDENTIAL).await?,
    ))
}
