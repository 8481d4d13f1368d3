//! Errors that name the file and the field they are about.

use std::fmt;
use std::path::PathBuf;

/// A problem with one file of the fleet repo, or with a manifest or event.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The file could not be read.
    #[error("{}: {source}", file.display())]
    Io {
        /// The file.
        file: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML/JSON for its type (includes unknown fields).
    #[error("{}: {reason}", file.display())]
    Parse {
        /// The file.
        file: PathBuf,
        /// What the parser said, with line and column where known.
        reason: String,
    },
    /// A field has a value that is not allowed.
    #[error("{}: {field}: {reason}", file.display())]
    Invalid {
        /// The file.
        file: PathBuf,
        /// Dotted path of the field, e.g. `waves[1].percent`.
        field: String,
        /// What is wrong.
        reason: String,
    },
}

impl Error {
    pub(crate) fn invalid(
        file: impl Into<PathBuf>,
        field: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        Error::Invalid {
            file: file.into(),
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// Every problem found in a set of files, one per line when displayed.
#[derive(Debug, Default)]
pub struct Problems(pub Vec<Error>);

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Problems {}

impl From<Error> for Problems {
    fn from(e: Error) -> Self {
        Problems(vec![e])
    }
}
