//! The agent library's error type. Every variant names the file, URL, field
//! or version it is about, so the message alone tells an operator where to look.
//! URLs are shown without their credentials ([`flotilla_protocol::redact_urls`]),
//! here and in [`chain`]: an error's text goes to events, `status` and logs.

use std::path::PathBuf;

use flotilla_protocol::redact_urls as r;

/// What went wrong in a pass or a subcommand.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The config file is missing, unparsable or has an invalid field.
    #[error("{}: {}{reason}", path.display(), field.as_ref().map(|f| format!("{f}: ")).unwrap_or_default())]
    Config {
        /// The config file.
        path: PathBuf,
        /// Dotted path of the offending field, when one is to blame.
        field: Option<String>,
        /// What is wrong.
        reason: String,
    },
    /// Reading or writing a local file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A state file exists but cannot be understood.
    #[error("{}: corrupt state: {reason}", path.display())]
    State {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A migration this version needs failed (the backup was restored).
    #[error("migration failed: {reason}")]
    Migration {
        /// What failed, with the error chain.
        reason: String,
    },
    /// Another pass holds the state-dir lock.
    #[error("{}: another pass is running", path.display())]
    Busy {
        /// The lock file.
        path: PathBuf,
    },
    /// The shipped trust root (or the newest stored one) does not verify.
    #[error("trust root {}: {source}", path.display())]
    TrustRoot {
        /// The root file.
        path: PathBuf,
        /// Why it does not verify.
        #[source]
        source: flotilla_signing::Error,
    },
    /// The fleet source could not be reached or read (transient: retried on
    /// a later pass).
    #[error("fetching {}: {}", r(url), r(reason))]
    Fetch {
        /// What was fetched.
        url: String,
        /// Why it failed.
        reason: String,
    },
    /// Signed metadata was fetched but refused: signatures, thresholds,
    /// root chain, expiry, serial. Never transient.
    #[error("{what} rejected: {reason}")]
    Rejected {
        /// Which document (`signed/manifest.json`, `root/3.root.json`, …).
        what: String,
        /// Why.
        reason: String,
    },
    /// A download failed in transport (connect, stall, short body). The
    /// partial file is kept, and the next pass resumes it.
    #[error("downloading {}: {}", r(url), r(reason))]
    Download {
        /// The artifact URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// The server sent more bytes than the signed size.
    #[error(
        "downloading {}: body exceeds the signed size of {limit} bytes; transfer cut off",
        r(url)
    )]
    TooLarge {
        /// The artifact URL.
        url: String,
        /// The signed size.
        limit: u64,
    },
    /// The downloaded artifact does not hash to the signed SHA-256.
    #[error(
        "{}: SHA-256 mismatch: expected {expected}, calculated {calculated}",
        r(url)
    )]
    HashMismatch {
        /// The artifact URL.
        url: String,
        /// The signed digest.
        expected: String,
        /// The digest of what arrived.
        calculated: String,
    },
    /// An artifact path or URL would leave the artifact base URL.
    #[error(
        "artifact path {path:?} escapes the artifact base URL {}: {}",
        r(base),
        r(reason)
    )]
    PathEscapes {
        /// The signed relative path.
        path: String,
        /// The base URL.
        base: String,
        /// Why it is refused.
        reason: String,
    },
    /// The new binary's self-test failed or reported the wrong version.
    #[error("self-test of {}: {reason}", binary.display())]
    SelfTest {
        /// The binary.
        binary: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// Installing, swapping or pruning a version failed.
    #[error("install {}: {reason}", path.display())]
    Install {
        /// The path involved.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The git source failed (transport or repository).
    #[error("git {}: {}", r(url), r(message))]
    Git {
        /// The remote URL.
        url: String,
        /// libgit2's message.
        message: String,
        /// Whether it looks like a transport problem (retried later).
        transient: bool,
    },
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// Signed data was refused (as opposed to not fetched).
    pub fn is_rejection(&self) -> bool {
        matches!(self, Error::Rejected { .. } | Error::TrustRoot { .. })
    }

    /// A network or source outage that a later pass may not see: it does not
    /// by itself count against a new version's health.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Fetch { .. } | Error::Download { .. } => true,
            Error::Git { transient, .. } => *transient,
            _ => false,
        }
    }
}

/// An error and its causes, outermost first (the `error_chain` event detail).
pub fn chain(e: &(dyn std::error::Error + 'static)) -> Vec<String> {
    let mut out = vec![r(&e.to_string()).into_owned()];
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = r(&s.to_string()).into_owned();
        if out.last() != Some(&text) {
            out.push(text);
        }
        cur = s.source();
    }
    out
}

/// Result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
