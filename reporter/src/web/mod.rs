//! The web page: server-rendered HTML (maud), a little plain JavaScript
//! (`assets/app.js`: filters that apply themselves, and a 5-second refresh
//! of the page's `<main>` while a rollout runs), behind an admin login.
//!
//! - `/`: fleet overview: agents by version, each channel's rollout with a
//!   bar per wave and its gate, the newest errors; the emergency stop
//!   (`POST /halts`, `POST /halts/{id}/reopen`, [`halts`]).
//! - `/agents`: the agents table with each host's state and why: search by
//!   id, label (`role=db` exactly) or version; filter by state, channel,
//!   wave, version, label; sort by last seen; only those silent a while.
//! - `/agents/{id}`: one agent's history as a timeline; migration events
//!   styled apart; filters by kind and severity; error details (message,
//!   error chain, system info, the rest of `details`) in `<details>`; it
//!   updates itself when the agent reports ([`live`]: the page polls a
//!   few-byte stamp and reloads its `<main>` only when it changes).

pub mod agents;
pub mod assets;
pub mod halts;
pub mod history;
pub mod layout;
pub mod live;
pub mod login;
pub mod overview;
pub mod session;

use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use maud::Markup;

use crate::error::AppError;

/// A page, or an error page.
pub type PageResult = Result<Html<String>, PageError>;

/// An error shown as an HTML page.
pub struct PageError(pub StatusCode, pub String);

impl From<AppError> for PageError {
    fn from(e: AppError) -> Self {
        PageError(e.status, e.body.error)
    }
}

impl From<crate::db::DbError> for PageError {
    fn from(e: crate::db::DbError) -> Self {
        AppError::from(e).into()
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let body = layout::bare(
            "Error",
            maud::html! {
                main.narrow {
                    h1 { "Error " (self.0.as_u16()) }
                    p.error { (self.1) }
                    p { a href="/" { "Back to the overview" } }
                }
            },
        );
        (self.0, Html(body.into_string())).into_response()
    }
}

/// Wraps markup as a response.
pub fn html(m: Markup) -> PageResult {
    Ok(Html(m.into_string()))
}
