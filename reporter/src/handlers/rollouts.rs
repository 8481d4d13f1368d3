//! `GET /api/v1/rollouts`, `/api/v1/rollouts/{channel}/{release}` (admin
//! token) and `GET /api/v1/gate/{channel}/{release}` (admin or agent token).
//! Definitions: [`crate::rollout`].

use axum::extract::{Path, Query, State};
use axum::Json;
use flotilla_protocol::api::{Gate, RolloutHistory, RolloutList, RolloutProgress};
use serde::Deserialize;

use crate::auth::{AdminAuth, GateAuth};
use crate::error::AppError;
use crate::state::AppState;

/// Query of `GET /api/v1/rollouts`.
#[derive(Debug, Default, Deserialize)]
pub struct RolloutQuery {
    /// Only this channel.
    pub channel: Option<String>,
}

/// `GET /api/v1/rollouts`: each channel's current rollout.
pub async fn list(
    _: AdminAuth,
    State(st): State<AppState>,
    Query(q): Query<RolloutQuery>,
) -> Result<Json<RolloutList>, AppError> {
    let mut rollouts = Vec::new();
    for (channel, release) in st.current_rollouts() {
        if q.channel.as_deref().is_some_and(|c| c != channel) {
            continue;
        }
        rollouts.push(st.rollout(&channel, &release).await?);
    }
    Ok(Json(RolloutList { rollouts }))
}

/// Query of `GET /api/v1/rollouts/history`.
#[derive(Debug, Default, Deserialize)]
pub struct HistoryQuery {
    /// Only this channel.
    pub channel: Option<String>,
    /// Rollouts per channel (default 10, at most 100).
    pub limit: Option<u32>,
}

/// `GET /api/v1/rollouts/history`: each channel's rollouts, newest first.
pub async fn history(
    _: AdminAuth,
    State(st): State<AppState>,
    Query(q): Query<HistoryQuery>,
) -> Result<Json<RolloutHistory>, AppError> {
    let channel = q.channel.filter(|c| !c.is_empty());
    let limit = q.limit.unwrap_or(10).clamp(1, 100);
    Ok(Json(
        crate::rollout_history::history(&st, channel, limit).await?,
    ))
}

/// `GET /api/v1/rollouts/{channel}/{release}`.
pub async fn get(
    _: AdminAuth,
    State(st): State<AppState>,
    Path((channel, release)): Path<(String, String)>,
) -> Result<Json<RolloutProgress>, AppError> {
    Ok(Json(st.rollout(&channel, &release).await?))
}

/// `GET /api/v1/gate/{channel}/{release}`.
pub async fn gate(
    _: GateAuth,
    State(st): State<AppState>,
    Path((channel, release)): Path<(String, String)>,
) -> Result<Json<Gate>, AppError> {
    Ok(Json(st.gate(&channel, &release).await?))
}
