//! The agent library's error type. Every variant names the file, URL, field
//! or version it is about, so the message alone tells an operator where to look.
//! URLs are shown without their credentials ([`flotilla_protocol::redact_urls`]):
//! an error's text goes to events, `status` and logs.

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
    /// A migration this version needs failed (its backup restored, or the
    /// reason says that restoring failed too);
    /// `reason` names the migration, the version, the file and the cause.
    #[error("{reason}")]
    Migration {
        /// What failed, with the error chain.
        reason: String,
    },
    /// The migration state (`migrations.json`) cannot be read or written,
    /// so no migration could be considered.
    #[error("migration state: {source}")]
    MigrationState {
        /// Why (the file is named).
        #[source]
        source: std::sync::Arc<crate::migrations::Error>,
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
    /// The fleet source could not be reached or read (retried on a later
    /// pass).
    #[error("fetching {}: {}", r(url), r(&source.to_string()))]
    Fetch {
        /// What was fetched.
        url: String,
        /// Why it failed.
        #[source]
        source: Transfer,
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
    /// A download failed in transport (connect, stall, short body). A
    /// partial file is kept (`kept`), and the next pass resumes it.
    #[error(
        "downloading {}: {}{}",
        r(url),
        r(&source.to_string()),
        if *kept { "; the partial file is kept and resumed on the next pass" } else { "" }
    )]
    Download {
        /// The artifact URL.
        url: String,
        /// Why.
        #[source]
        source: Transfer,
        /// Whether a partial file was kept for the next pass.
        kept: bool,
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
    #[error("git {}: {}", r(url), r(source.message()))]
    Git {
        /// The remote URL.
        url: String,
        /// libgit2's error.
        #[source]
        source: git2::Error,
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

    /// A network or source outage that a later pass may not see (as
    /// opposed to an answer that will not change by itself: a missing or
    /// oversized document, a refused credential). Decided from the cause's
    /// type: git2's class and code, ureq's transport kind or status.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Fetch { source, .. } | Error::Download { source, .. } => source.is_transient(),
            Error::Git { source, .. } => git_transient(source),
            _ => false,
        }
    }
}

fn git_transient(e: &git2::Error) -> bool {
    use git2::{ErrorClass as C, ErrorCode};
    matches!(e.class(), C::Net | C::Http | C::Ssl | C::Os | C::Ssh)
        && !matches!(e.code(), ErrorCode::Auth | ErrorCode::Certificate)
}

/// Why a transfer failed, with its cause kept ([`Error::Fetch`],
/// [`Error::Download`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Transfer {
    /// The request failed (DNS, connect, TLS, protocol) or the server
    /// answered with an error status.
    #[error("{}", crate::http::describe(.0))]
    Http(#[source] Box<ureq::Error>),
    /// Reading the body failed.
    #[error("reading the body: {0}")]
    Body(#[source] std::io::Error),
    /// No data for `update.stall_timeout`.
    #[error("stalled: no data for the stall timeout ({0})")]
    Stalled(#[source] std::io::Error),
    /// The transfer averaged less than `update.min_rate`.
    #[error(transparent)]
    TooSlow(#[from] crate::http::TooSlow),
    /// The body ended before the signed size.
    #[error("body ended after {got} of {want} bytes")]
    Short {
        /// Bytes received in all.
        got: u64,
        /// The signed size.
        want: u64,
    },
    /// A local (`file://`) artifact could not be read.
    #[error("{}: {source}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The answer is not the one asked for, and will not change by itself:
    /// not found, an unexpected status, a document over the size cap.
    #[error("{0}")]
    Refused(String),
}

impl Transfer {
    /// A body read that failed: [`Transfer::TooSlow`] when a rate guard
    /// said so, [`Transfer::Stalled`] on a read timeout.
    pub(crate) fn body(e: std::io::Error) -> Transfer {
        match crate::http::too_slow(&e) {
            Some(slow) => Transfer::TooSlow(slow),
            None if crate::http::is_timeout(&e) => Transfer::Stalled(e),
            None => Transfer::Body(e),
        }
    }

    /// See [`Error::is_transient`].
    pub fn is_transient(&self) -> bool {
        use ureq::ErrorKind as K;
        match self {
            Transfer::Http(e) => match &**e {
                ureq::Error::Status(code, _) => *code >= 500 || matches!(code, 408 | 429),
                ureq::Error::Transport(t) => matches!(
                    t.kind(),
                    K::Dns | K::ConnectionFailed | K::Io | K::ProxyConnect | K::BadStatus
                ),
            },
            Transfer::Body(_)
            | Transfer::Stalled(_)
            | Transfer::TooSlow(_)
            | Transfer::Short { .. } => true,
            Transfer::File { .. } | Transfer::Refused(_) => false,
        }
    }
}

/// Result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    fn fetch(source: Transfer) -> Error {
        Error::Fetch {
            url: "https://deploy:s3cret@example.invalid/fleet/manifest.json".into(),
            source,
        }
    }

    #[test]
    fn transient_is_decided_from_the_cause_type_and_the_cause_is_kept() {
        // ureq: a refused connection (loopback port with no listener) is an
        // outage; an error status is one only when the server says so.
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let refused = ureq::get(&format!("http://{closed}/")).call().unwrap_err();
        let e = fetch(Transfer::Http(Box::new(refused)));
        assert!(e.is_transient(), "{e}");
        let source = std::error::Error::source(&e).expect("the cause is kept");
        assert!(source.downcast_ref::<Transfer>().is_some());
        assert!(!e.to_string().contains("s3cret"), "{e}");
        let status = |code| {
            fetch(Transfer::Http(Box::new(ureq::Error::Status(
                code,
                ureq::Response::new(code, "x", "").unwrap(),
            ))))
        };
        assert!(status(503).is_transient() && status(429).is_transient());
        assert!(!status(404).is_transient() && !status(401).is_transient());
        assert!(!fetch(Transfer::Refused("larger than 16 bytes".into())).is_transient());
        let slow = crate::http::TooSlow {
            bytes: 1,
            secs: 2.0,
            min: 1000,
        };
        assert!(fetch(slow.into()).is_transient());

        // git2: by class and code, not by message.
        let git = |code, class| Error::Git {
            url: "git://example.invalid/fleet".into(),
            source: git2::Error::new(code, class, "failed to connect: timed out"),
        };
        use git2::{ErrorClass as C, ErrorCode as K};
        assert!(git(K::GenericError, C::Net).is_transient());
        assert!(!git(K::Auth, C::Http).is_transient());
        assert!(!git(K::NotFound, C::Reference).is_transient());
        // The chain shows libgit2's error itself, with its class.
        let chain = flotilla_protocol::chain(&git(K::GenericError, C::Os));
        assert_eq!(
            chain[0],
            "git git://example.invalid/fleet: failed to connect: timed out"
        );
        assert!(chain[1].contains("class=Os"), "{chain:?}");
    }
}
