//! Errors that name the file and the field they are about.

use std::fmt;
use std::path::PathBuf;

/// An error and its causes, outermost first, leaving out a cause whose text
/// an earlier message already holds (many say "{path}: {source}"). The one
/// flattener: the agent's `error_chain` event details and, joined by
/// [`chain_text`], the agent's, publisher's and reporter's error lines.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> Vec<String> {
    chain_until(e, |_| false)
}

/// [`chain`], ending after the first layer for which `last` holds: one
/// whose text says all its causes would say (the reporter's database
/// error, whose rusqlite cause repeats SQLite's reason in other words).
pub fn chain_until(
    e: &(dyn std::error::Error + 'static),
    last: impl Fn(&(dyn std::error::Error + 'static)) -> bool,
) -> Vec<String> {
    let mut out = vec![e.to_string()];
    let mut cause = if last(e) { None } else { e.source() };
    while let Some(c) = cause {
        let s = c.to_string();
        if !out.iter().any(|t| t.contains(&s)) {
            out.push(s);
        }
        cause = if last(c) { None } else { c.source() };
    }
    out
}

/// [`chain`] on one line, `: `-separated.
pub fn chain_text(e: &(dyn std::error::Error + 'static)) -> String {
    chain(e).join(": ")
}

/// [`chain_until`] on one line, `: `-separated.
pub fn chain_text_until(
    e: &(dyn std::error::Error + 'static),
    last: impl Fn(&(dyn std::error::Error + 'static)) -> bool,
) -> String {
    chain_until(e, last).join(": ")
}

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

#[cfg(test)]
mod chain_tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("{what}")]
    struct Layer {
        what: String,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    }

    #[test]
    fn chain_text_names_each_cause_once() {
        let io = std::io::Error::other("disk full");
        let e = Error::Io {
            file: "keys/release.pem".into(),
            source: io,
        };
        assert_eq!(chain_text(&e), "keys/release.pem: disk full");
        let e = Layer {
            what: "cannot reach http://r:8080".into(),
            source: Some(Box::new(Layer {
                what: "connection refused".into(),
                source: None,
            })),
        };
        assert_eq!(
            chain_text(&e),
            "cannot reach http://r:8080: connection refused"
        );
    }
}
