//! Every route, in one place.
//!
//! | route | auth | |
//! |---|---|---|
//! | `POST /api/v1/enroll` | enrollment token in the body | [`crate::handlers::enroll`] |
//! | `POST /api/v1/events` | agent token | [`crate::handlers::events`] |
//! | `POST /api/v1/checkin` | agent token | [`crate::handlers::checkin`] |
//! | `GET /api/v1/halts` | admin or read token | [`crate::handlers::halts`] |
//! | `POST /api/v1/halts`, `/api/v1/halts/{id}/reopen` | admin token | [`crate::handlers::halts`] |
//! | `GET /api/v1/agents`, `/api/v1/agents/{id}`, `/api/v1/agents/{id}/events` | admin or read token | [`crate::handlers::agents`] |
//! | `GET /api/v1/rollouts`, `/api/v1/rollouts/history`, `/api/v1/rollouts/{channel}/{release}` | admin or read token | [`crate::handlers::rollouts`] |
//! | `GET /api/v1/gate/{channel}/{release}` | admin, read or agent token | [`crate::handlers::rollouts::gate`] |
//! | `GET /metrics` | admin or read token | [`crate::handlers::health::metrics`] |
//! | `GET /healthz` | none | [`crate::handlers::health::healthz`] |
//! | `GET /`, `/agents`, `/agents/{id}`; `GET`/`POST /login`; `POST /logout`, `/halts`, `/halts/{id}/reopen` | session cookie | [`crate::web`] |
//!
//! Every response carries `X-Content-Type-Options`, `Referrer-Policy` and a
//! strict `Content-Security-Policy` (scripts and styles from this origin
//! only); each request runs in a span named by its matched route and is
//! counted in the latency histogram. A request not answered within
//! `request_timeout` (its body included) gets 408.
//!
//! The read routes (a `read` token may use them, see [`crate::auth`]) are
//! the ones wrapped in `read_only` below; every other route refuses a
//! read token with 403.

use std::time::Instant;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::header::{HeaderName, HeaderValue};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use flotilla_protocol::api::MAX_BATCH_BYTES;
use tracing::Instrument;

use crate::auth::ReadRoute;
use crate::error::AppError;
use crate::handlers::{agents, checkin, enroll, events, halts, health, rollouts};
use crate::state::AppState;
use crate::web;

/// Largest enrollment request.
const MAX_ENROLL_BYTES: usize = 64 * 1024;

/// The application.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route(
            "/api/v1/enroll",
            post(enroll::post).layer(DefaultBodyLimit::max(MAX_ENROLL_BYTES)),
        )
        .route(
            "/api/v1/events",
            post(events::post).layer(DefaultBodyLimit::max(MAX_BATCH_BYTES)),
        )
        .route(
            "/api/v1/checkin",
            post(checkin::post).layer(DefaultBodyLimit::max(checkin::MAX_CHECKIN_BYTES)),
        )
        .route(
            "/api/v1/halts/{id}/reopen",
            post(halts::reopen).layer(DefaultBodyLimit::max(16 * 1024)),
        )
        .merge(read_only(
            Router::new()
                .route("/api/v1/agents", get(agents::list_agents))
                .route("/api/v1/agents/{id}", get(agents::get_agent))
                .route("/api/v1/agents/{id}/events", get(agents::agent_events))
                .route("/api/v1/rollouts", get(rollouts::list))
                .route("/api/v1/rollouts/history", get(rollouts::history))
                .route("/api/v1/rollouts/{channel}/{release}", get(rollouts::get))
                .route("/api/v1/gate/{channel}/{release}", get(rollouts::gate))
                .route(
                    "/api/v1/halts",
                    get(halts::list)
                        .post(halts::create)
                        .layer(DefaultBodyLimit::max(16 * 1024)),
                )
                .route("/metrics", get(health::metrics)),
        ))
        .route("/healthz", get(health::healthz))
        .route("/", get(web::overview::page))
        .route(
            "/login",
            get(web::login::form)
                .post(web::login::submit)
                .layer(DefaultBodyLimit::max(16 * 1024)),
        )
        .route(
            "/logout",
            post(web::login::logout).layer(DefaultBodyLimit::max(16 * 1024)),
        )
        .route(
            "/halts",
            post(web::halts::close).layer(DefaultBodyLimit::max(16 * 1024)),
        )
        .route(
            "/halts/{id}/reopen",
            post(web::halts::reopen).layer(DefaultBodyLimit::max(16 * 1024)),
        )
        .route("/agents", get(web::agents::page))
        .route("/agents/{id}", get(web::history::page))
        .route("/agents/{id}/stamp", get(web::live::stamp))
        .route("/static/app.css", get(web::assets::css))
        .route("/static/app.js", get(web::assets::js))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), track))
        .with_state(state)
}

/// Marks every route of `r` as one a `read` token may GET.
fn read_only(r: Router<AppState>) -> Router<AppState> {
    r.route_layer(axum::Extension(ReadRoute))
}

async fn not_found() -> AppError {
    AppError::not_found("no such route")
}

async fn track(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = req.method().clone();
    let span = tracing::info_span!("request", %method, route = %route);
    let start = Instant::now();
    let mut resp =
        match tokio::time::timeout(st.settings.request_timeout, next.run(req).instrument(span))
            .await
        {
            Ok(r) => r,
            Err(_) => {
                st.metrics.rejected("timeout");
                AppError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    format!(
                        "the request was not received and answered within {}",
                        humantime::format_duration(st.settings.request_timeout)
                    ),
                )
                .into_response()
            }
        };
    st.metrics.request(
        &route,
        method.as_str(),
        resp.status().as_u16(),
        start.elapsed(),
    );
    let h = resp.headers_mut();
    for (name, value) in [
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "same-origin"),
        ("x-frame-options", "DENY"),
        (
            "content-security-policy",
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    ] {
        h.insert(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
    }
    resp
}
