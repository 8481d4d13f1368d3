//! The error type of the signing crate: every variant names the file, key id or
//! root version it is about.

use std::path::PathBuf;

use crate::dsse::IgnoredSignature;

/// Errors from loading keys, checking signatures and walking roots.
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
    /// A private key file could not be parsed.
    #[error("{}: not an Ed25519 private key in PKCS#8 PEM form: {reason}", path.display())]
    PrivateKey {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        reason: String,
    },
    /// A public key could not be parsed.
    #[error("{what}: not an Ed25519 public key: {reason}")]
    PublicKey {
        /// The file, or the root entry, holding the key.
        what: String,
        /// What the parser said.
        reason: String,
    },
    /// A private key file is readable or writable by group or others.
    #[error("{}: private key file {}", path.display(), crate::fs::loose_mode_advice(path, *mode))]
    LoosePermissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A file that must not be overwritten already exists.
    #[error("{}: already exists; refusing to overwrite it", path.display())]
    AlreadyExists {
        /// The file.
        path: PathBuf,
    },
    /// An envelope is not valid DSSE JSON or its payload is not base64.
    #[error("malformed DSSE envelope: {reason}")]
    MalformedEnvelope {
        /// What is wrong.
        reason: String,
    },
    /// The envelope carries a different payload type than the caller expects.
    #[error("payload type is {found:?}, expected {expected:?}")]
    PayloadType {
        /// What the caller expects.
        expected: String,
        /// What the envelope says.
        found: String,
    },
    /// The same key already signed this envelope.
    #[error("envelope is already signed by key {keyid}")]
    AlreadySigned {
        /// The key id.
        keyid: String,
    },
    /// Fewer distinct trusted keys signed than the role requires.
    #[error(
        "{role} role threshold not met: {valid} of {threshold} required signatures are valid{}",
        describe_ignored(ignored)
    )]
    Threshold {
        /// Which role (and which root version) was checked.
        role: String,
        /// Distinct valid signatures from the role's keys.
        valid: usize,
        /// The role's threshold.
        threshold: u32,
        /// Signatures that were not counted, and why.
        ignored: Vec<IgnoredSignature>,
    },
    /// Root metadata is inconsistent (bad key id, threshold above key count, ...).
    #[error("root metadata (version {version}): {reason}")]
    InvalidRoot {
        /// The root's version, 0 if it could not be read.
        version: u64,
        /// What is wrong.
        reason: String,
    },
    /// A root rotation does not go to exactly the next version.
    #[error("root version {found} cannot follow trusted root version {trusted}: versions must increase by exactly one")]
    RootVersion {
        /// The trusted version.
        trusted: u64,
        /// The offered version.
        found: u64,
    },
    /// The newest trusted root has expired.
    #[error("root version {version} expired at {expires}")]
    Expired {
        /// The root's version.
        version: u64,
        /// When it expired.
        expires: chrono::DateTime<chrono::Utc>,
    },
}

fn describe_ignored(ignored: &[IgnoredSignature]) -> String {
    if ignored.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = ignored.iter().map(|i| i.to_string()).collect();
    format!(" (not counted: {})", parts.join("; "))
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
