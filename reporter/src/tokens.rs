//! Secrets: enrollment tokens, agent tokens, session ids.
//!
//! Every secret is 256 random bits from the OS generator, shown once, and
//! stored only as its SHA-256 (lowercase hex). Comparisons of a presented
//! secret happen on its hash, looked up by equality, so nothing secret is
//! compared byte by byte.

use rand::RngCore;
use sha2::{Digest, Sha256};

/// Prefix of enrollment tokens, so that they are recognisable in files.
pub const ENROLLMENT_PREFIX: &str = "flotilla-enroll-";

/// Prefix of `read` tokens (`token create --scope read`).
pub const READ_PREFIX: &str = "flotilla-read-";

pub use flotilla_signing::random_hex256;

/// A short random id (8 hex digits) for listing and revoking tokens.
pub fn random_id() -> String {
    let mut b = [0u8; 4];
    rand::rngs::OsRng.fill_bytes(&mut b);
    hex::encode(b)
}

/// A new enrollment token: the prefix and 256 random bits.
pub fn new_enrollment_token() -> String {
    format!("{ENROLLMENT_PREFIX}{}", random_hex256())
}

/// A new `read` token: the prefix and 256 random bits.
pub fn new_read_token() -> String {
    format!("{READ_PREFIX}{}", random_hex256())
}

/// SHA-256 of a secret, lowercase hex: what the database keeps.
pub fn hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.trim().as_bytes()))
}

/// Constant-time equality of two byte strings of any length.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let (ha, hb) = (Sha256::digest(a), Sha256::digest(b));
    ha.iter()
        .zip(hb.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        let t = new_enrollment_token();
        assert!(t.starts_with(ENROLLMENT_PREFIX));
        assert!(flotilla_protocol::api::is_agent_token_shaped(
            &random_hex256()
        ));
        assert_eq!(hash("x").len(), 64);
        assert_eq!(hash(" x\n"), hash("x"));
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
    }
}
