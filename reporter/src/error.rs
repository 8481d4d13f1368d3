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
    #[error("database {}: {}", path.display(), sqlite_reason(source, path))]
    Db {
        /// The database file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: rusqlite::Error,
    },
    /// The PostgreSQL database failed.
    #[error("database {target}: {}", pg_reason(source))]
    Postgres {
        /// The database's URL, without a password.
        target: String,
        /// The cause.
        #[source]
        source: crate::db::DbError,
    },
    /// A command other than `serve` and `init` was pointed at a database
    /// that does not exist (a typo'd `--db` must not create a new one).
    #[error(
        "database {} does not exist; give the reporter's database with --db (or the `db` of \
         --config), or create it with `flotilla-reporter init --db {}`",
        path.display(),
        path.display()
    )]
    NoDatabase {
        /// The path given.
        path: PathBuf,
    },
    /// A file that is never overwritten unless asked (a backup) exists.
    #[error("{} exists; not replacing it (--force does)", path.display())]
    Exists {
        /// The file.
        path: PathBuf,
    },
    /// The database schema is newer than this binary knows.
    #[error(
        "database {}: schema version {found} is newer than this reporter's {known}; \
         migrations are forward-only: run the newer flotilla-reporter that wrote it \
         (or restore a backup made before the upgrade)",
        path.display()
    )]
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

/// PostgreSQL's reason, with the server's message and detail (tokio-postgres
/// shows only "db error" for an error the server sent).
fn pg_reason(e: &crate::db::DbError) -> String {
    use std::error::Error as _;
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let s = c.to_string();
        if !text.contains(&s) {
            text = format!("{text}: {s}");
        }
        cause = c.source();
    }
    text
}

/// SQLite's reason, once: rusqlite shows `sqlite3_errmsg` (with the path
/// appended when opening failed), and its source repeats the code's
/// description ("Error code 14: Unable to open the database file"), so
/// [`error_text`] ends the line at an [`Error::Db`].
fn sqlite_reason(e: &rusqlite::Error, path: &std::path::Path) -> String {
    let s = e.to_string();
    match s.strip_suffix(&format!(": {}", path.display())) {
        Some(short) => short.to_owned(),
        None => s,
    }
}

/// An error and its causes on one line, each once
/// ([`flotilla_protocol::chain_text`]), ending at the reporter's
/// [`Error::Db`] or [`Error::Postgres`], whose text already holds the
/// database's reason. The binary
/// prints every error through this.
pub fn error_text(e: &(dyn std::error::Error + 'static)) -> String {
    flotilla_protocol::chain_text_until(e, |layer| {
        matches!(
            layer.downcast_ref::<Error>(),
            Some(Error::Db { .. } | Error::Postgres { .. })
        )
    })
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
            // The writer logged the cause; the client needs only to retry.
            crate::db::DbError::Transaction(_) => AppError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the database did not commit this write (see the reporter's log); send it again",
            )
            .retry_after(1),
            other => AppError::internal(other),
        }
    }
}
