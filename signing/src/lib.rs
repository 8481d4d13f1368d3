//! Flotilla's trust core.
//!
//! Everything an agent installs is trusted because of what this crate checks,
//! never because of where the bytes came from:
//!
//! - [`keys`]: Ed25519 keys in PKCS#8 / SPKI PEM, key ids (hex SHA-256 of the raw public key).
//! - [`dsse`]: DSSE envelopes that sign exact payload bytes over the pre-authentication encoding.
//! - [`root`]: root metadata with `root` and `release` roles, thresholds, rotation and expiry.
//! - [`hash`]: streaming SHA-256 + size over any reader or writer.
//! - [`fs`]: crash-safe file writes (temp + fsync + rename + fsync of the directory).
//! - [`secret`]: random bearer secrets (agent and reporter tokens).
//!
//! One function, [`root::Role::check`], counts distinct valid key ids toward a
//! threshold; every role and every caller uses it.
#![deny(missing_docs)]

pub mod dsse;
mod error;
pub mod fs;
pub mod hash;
pub mod keys;
pub mod root;
pub mod secret;

pub use dsse::{Envelope, IgnoreReason, IgnoredSignature, Verification};
pub use error::Error;
pub use hash::{hash_reader, HashSummary, HashingWriter, StreamingHasher};
pub use keys::{KeyId, PrivateKey, PublicKey};
pub use root::{ExpirationEnforcement, Role, RoleName, Root, TrustedRoot, ROOT_PAYLOAD_TYPE};
pub use secret::random_hex256;

/// Result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
