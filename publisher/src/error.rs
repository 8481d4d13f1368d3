//! The library's error type: every variant names the file, store URL or key
//! it is about, so a message alone tells the operator where to look.

use std::path::PathBuf;

pub use flotilla_protocol::chain_text;

/// Errors of the publisher library.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A file of the fleet repo (or a key file) is wrong.
    #[error("{}: {reason}", path.display())]
    File {
        /// The file, relative to the repo where it is in the repo.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Keys, envelopes or roots (the message names the key file or root).
    #[error(transparent)]
    Signing(#[from] flotilla_signing::Error),
    /// The repo's sources do not validate: one line per problem, each naming
    /// its file and field.
    #[error("{0}")]
    Sources(#[from] flotilla_protocol::Problems),
    /// Talking to the store failed.
    #[error("{url}: {source}")]
    Store {
        /// The store URL, with the object's key where there is one.
        url: String,
        /// The cause.
        #[source]
        source: object_store::Error,
    },
    /// The operation was refused to protect the fleet (an object that would
    /// be overwritten, a serial that would go backwards, a downgrade, ...).
    #[error("{0}")]
    Refused(String),
    /// A command-line value is not usable.
    #[error("{0}")]
    Usage(String),
    /// Running `git` failed.
    #[error("git: {0}")]
    Git(String),
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn file(path: impl Into<PathBuf>, reason: impl std::fmt::Display) -> Self {
        Error::File {
            path: path.into(),
            reason: reason.to_string(),
        }
    }
}

/// Result type of the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<flotilla_protocol::Error> for Error {
    fn from(e: flotilla_protocol::Error) -> Self {
        Error::Sources(flotilla_protocol::Problems::from(e))
    }
}
