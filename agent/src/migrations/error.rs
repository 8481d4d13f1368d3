//! What can go wrong in a migration run. Every variant names the file (or
//! the migration and version) it is about and keeps its cause as its
//! `source`, so [`flotilla_protocol::chain`] shows the whole story in
//! events and `status`: `migration config-schema-2 to 1.1.0 failed`, then
//! `/etc/flotilla/agent.toml: reporter.fail_open: must be true or false`.

use std::io;
use std::path::{Path, PathBuf};

/// A migration error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading, writing, moving or removing a file or directory failed.
    #[error("{action} {}", path.display())]
    Io {
        /// What was being done (`reading`, `moving … to`, …).
        action: String,
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A config file is not valid TOML.
    #[error("{}: not valid TOML", path.display())]
    Toml {
        /// The file.
        path: PathBuf,
        /// The parser's complaint.
        #[source]
        source: toml_edit::TomlError,
    },
    /// A config value this migration cannot carry over.
    #[error("{}: {field}: {reason}", path.display())]
    Field {
        /// The config file.
        path: PathBuf,
        /// Dotted path of the field.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The config file a migration must edit is not there.
    #[error("{}: config file is missing", path.display())]
    Missing {
        /// Where it should be.
        path: PathBuf,
    },
    /// `migrations.json` cannot be understood.
    #[error("{}: not valid migration state", path.display())]
    State {
        /// The file.
        path: PathBuf,
        /// The parser's complaint.
        #[source]
        source: serde_json::Error,
    },
    /// A migration failed while executing (its backup is then restored).
    #[error("migration {id} to {version} failed")]
    Step {
        /// The migration (the step of the run).
        id: String,
        /// The agent version the run migrates to.
        version: String,
        /// Why.
        #[source]
        source: Box<Error>,
    },
    /// The backup before a run could not be written: nothing was changed.
    #[error("writing the backup {}", path.display())]
    Backup {
        /// The backup dir.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A backup could not be put back.
    #[error("restoring the backup {}", path.display())]
    Restore {
        /// The backup dir.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

/// `Result` with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// A `map_err` for an io error while `action`ing `path`.
    pub fn io(action: impl Into<String>, path: &Path) -> impl FnOnce(io::Error) -> Error {
        let (action, path) = (action.into(), path.to_owned());
        move |source| Error::Io {
            action,
            path,
            source,
        }
    }
}
