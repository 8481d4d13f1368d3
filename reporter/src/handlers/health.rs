//! `GET /healthz` (no token) and `GET /metrics` (admin token).

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::Json;
use flotilla_protocol::api::Health;

use crate::auth::AdminAuth;
use crate::error::AppError;
use crate::metrics::Gauges;
use crate::state::AppState;

/// `GET /healthz`: 200 when the database answers.
pub async fn healthz(State(st): State<AppState>) -> Result<Json<Health>, AppError> {
    let schema_version: u32 = st.store.schema_version().await?;
    Ok(Json(Health {
        status: "ok".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        schema_version,
    }))
}

/// `GET /metrics`.
pub async fn metrics(
    _: AdminAuth,
    State(st): State<AppState>,
) -> Result<impl IntoResponse, AppError> {
    let since = crate::db::now_micros() - st.settings.stale_after.as_micros() as i64;
    let (agents_by_version, (agents_total, agents_reporting), notify_queued) =
        st.store.gauges(since).await?;
    let mut gates = Vec::new();
    for (channel, release) in st.current_rollouts() {
        gates.push(st.gate(&channel, &release).await?);
    }
    let manifest = st.manifest.status();
    let text = st.metrics.render(&Gauges {
        agents_by_version,
        agents_reporting,
        agents_not_reporting: agents_total.saturating_sub(agents_reporting),
        gates,
        manifest_serial: manifest.verified.as_ref().map(|m| m.serial),
        manifest_refused: manifest.error.is_some(),
        manifest_verified_at: manifest.verified_at,
        notify: st.notifier.stats(),
        notify_queued,
    });
    Ok((
        [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        text,
    ))
}
