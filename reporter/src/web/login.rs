//! `GET /login`, `POST /login`, `POST /logout`.

use axum::extract::State;
use axum::http::header::SET_COOKIE;
use axum::http::{Extensions, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::Form;
use maud::html;
use serde::Deserialize;

use super::layout;
use super::session::{self, clear_cookie};
use crate::auth::{self, is_admin};
use crate::state::AppState;

fn login_page(st: &AppState, error: Option<&str>) -> Html<String> {
    let configured = st.settings.admin_token.is_some();
    Html(
        layout::bare(
            "Log in",
            html! {
                main.narrow.login {
                    h1 { "⚓ Flotilla reporter" }
                    @if !configured {
                        p.error { "No admin token is configured: start the reporter with --admin-token-file." }
                    }
                    @if let Some(e) = error { p.error #login-error { (e) } }
                    form method="post" action="/login" {
                        label for="token" { "Admin token" }
                        input #token type="password" name="token" autocomplete="current-password" required autofocus;
                        button #login type="submit" { "Log in" }
                    }
                }
            },
        )
        .into_string(),
    )
}

/// The login form.
pub async fn form(State(st): State<AppState>) -> Html<String> {
    login_page(&st, None)
}

/// The login form's fields.
#[derive(Deserialize)]
pub struct LoginForm {
    token: String,
}

/// Checks the admin token and starts a session. Wrong tokens are counted
/// per client address ([`crate::auth::check_failures`]): one address's
/// guesses never lock out the admin logging in from another.
pub async fn submit(
    State(st): State<AppState>,
    headers: HeaderMap,
    ext: Extensions,
    Form(f): Form<LoginForm>,
) -> Response {
    if !session::same_origin(&headers) {
        return (
            StatusCode::FORBIDDEN,
            login_page(&st, Some("Cross-site login refused.")),
        )
            .into_response();
    }
    let ip = auth::client_ip(&st, &headers, &ext);
    if auth::check_failures(&st, ip).is_err() {
        return (
            StatusCode::TOO_MANY_REQUESTS,
            login_page(&st, Some("Too many attempts; wait a moment.")),
        )
            .into_response();
    }
    let token = f.token.trim();
    if !is_admin(&st, token) {
        let t = token.to_owned();
        let now = chrono::Utc::now();
        let read = token.starts_with(crate::tokens::READ_PREFIX)
            && st.store.read_token_active(t, now).await.unwrap_or(false);
        if read {
            return (
                StatusCode::FORBIDDEN,
                login_page(
                    &st,
                    Some("A read token cannot log in; use the admin token."),
                ),
            )
                .into_response();
        }
        auth::count_failure(&st, ip);
        tracing::warn!(%ip, "failed web login");
        return (
            StatusCode::UNAUTHORIZED,
            login_page(&st, Some("Wrong admin token.")),
        )
            .into_response();
    }
    let id = match st.sessions.create(&st.store).await {
        Ok(id) => id,
        Err(e) => return crate::error::AppError::from(e).into_response(),
    };
    let cookie = st.sessions.cookie(&id, st.settings.cookie_secure);
    ([(SET_COOKIE, cookie)], Redirect::to("/")).into_response()
}

/// The logout form's fields.
#[derive(Deserialize)]
pub struct LogoutForm {
    csrf: String,
}

/// Ends the session (CSRF-checked).
pub async fn logout(
    State(st): State<AppState>,
    headers: HeaderMap,
    Form(f): Form<LogoutForm>,
) -> Response {
    let s = match session::cookie_value(&headers) {
        Some(c) => st.sessions.get(&st.store, &c).await,
        None => Ok(None),
    };
    let s = match s {
        Ok(Some(s)) => s,
        Ok(None) => return Redirect::to("/login").into_response(),
        Err(e) => return crate::error::AppError::from(e).into_response(),
    };
    if !session::same_origin(&headers)
        || !crate::tokens::constant_time_eq(s.csrf.as_bytes(), f.csrf.as_bytes())
    {
        return (StatusCode::FORBIDDEN, "CSRF check failed").into_response();
    }
    if let Err(e) = st.sessions.remove(&st.store, &s.id).await {
        return crate::error::AppError::from(e).into_response();
    }
    ([(SET_COOKIE, clear_cookie())], Redirect::to("/login")).into_response()
}
