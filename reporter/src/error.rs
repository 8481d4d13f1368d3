//! Errors: the library's [`Error`], and [`AppError`], the one type every
//! HTTP handler returns, answered as JSON [`ApiError`].

use std::path::PathBuf;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use flotilla_protocol::api::ApiError;

/// What can go wrong in the reporter's library.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A config file or value is not acceptable.
    #[error("{}: {reason}", path.display())]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The database failed.
    #[error("database {}: {source}", path.display())]
    Db {
        /// The database file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: rusqlite::Error,
    },
    /// The database schema is newer than this binary knows.
    #[error("database {}: schema version {found} is newer than this reporter's {known}", path.display())]
    SchemaTooNew {
        /// The database file.
        path: PathBuf,
        /// Its version.
        found: u32,
        /// Ours.
        known: u32,
    },
    /// An enrollment token or agent named on the command line does not exist.
    #[error("{what} {id} not found")]
    NotFound {
        /// "enrollment token" or "agent".
        what: &'static str,
        /// Its id.
        id: String,
    },
    /// `--manifest` / `--trust-root` cannot be used as given.
    #[error("{0}")]
    Manifest(String),
    /// Listening or serving failed.
    #[error("serving on {addr}: {source}")]
    Serve {
        /// The address.
        addr: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// An error answered to an HTTP client.
#[derive(Debug)]
pub struct AppError {
    /// The status code.
    pub status: StatusCode,
    /// The JSON body.
    pub body: ApiError,
    /// Seconds for `Retry-After` (429, 503).
    pub retry_after: Option<u64>,
}

impl AppError {
    /// An error with a status and a message.
    pub fn new(status: StatusCode, error: impl Into<String>) -> AppError {
        AppError {
            status,
            body: ApiError {
                error: error.into(),
                event_index: None,
                field: None,
            },
            retry_after: None,
        }
    }
    /// 400.
    pub fn bad_request(error: impl Into<String>) -> AppError {
        AppError::new(StatusCode::BAD_REQUEST, error)
    }
    /// 401.
    pub fn unauthorized(error: impl Into<String>) -> AppError {
        AppError::new(StatusCode::UNAUTHORIZED, error)
    }
    /// 403.
    pub fn forbidden(error: impl Into<String>) -> AppError {
        AppError::new(StatusCode::FORBIDDEN, error)
    }
    /// 404.
    pub fn not_found(error: impl Into<String>) -> AppError {
        AppError::new(StatusCode::NOT_FOUND, error)
    }
    /// 413.
    pub fn too_large(error: impl Into<String>) -> AppError {
        AppError::new(StatusCode::PAYLOAD_TOO_LARGE, error)
    }
    /// 500, logged; the client sees no detail.
    pub fn internal(e: impl std::fmt::Display) -> AppError {
        tracing::error!(error = %e, "internal error");
        AppError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
    }
    /// Names the event and field to blame.
    pub fn at(mut self, event_index: Option<usize>, field: Option<&str>) -> AppError {
        self.body.event_index = event_index;
        self.body.field = field.map(str::to_owned);
        self
    }
    /// Adds `Retry-After`.
    pub fn retry_after(mut self, secs: u64) -> AppError {
        self.retry_after = Some(secs.max(1));
        self
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let mut resp = (self.status, Json(self.body)).into_response();
        if let Some(secs) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

impl From<crate::db::DbError> for AppError {
    fn from(e: crate::db::DbError) -> Self {
        match e {
            crate::db::DbError::Busy => AppError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the reporter is shutting down or overloaded",
            )
            .retry_after(5),
            other => AppError::internal(other),
        }
    }
}
