//! Verifying a signed manifest against a root chain: the one implementation
//! that agents obey, the reporter's gate reads and the publisher checks.
//!
//! 1. Start from a root already trusted (a shipped anchor, or the newest root
//!    a host accepted before).
//! 2. Walk `root/<n+1>.root.json`, `root/<n+2>.root.json`, … from the same
//!    place: each needs a threshold of the previous root's root keys *and* of
//!    its own ([`TrustedRoot::walk`]).
//! 3. The newest root must not have expired.
//! 4. The manifest envelope needs a threshold of the newest root's release
//!    keys, over the exact payload bytes, with [`MANIFEST_PAYLOAD_TYPE`].
//! 5. The manifest must not have expired.
//!
//! Replay protection (the highest serial a host accepted) is the caller's:
//! only an agent has that history.

use chrono::{DateTime, Utc};
use flotilla_signing::root::WalkError;
use flotilla_signing::{hash_reader, Envelope, ExpirationEnforcement, TrustedRoot};

use crate::{Manifest, MANIFEST_PAYLOAD_TYPE};

/// The manifest file's name in the fleet repo and in error messages.
pub const SIGNED_MANIFEST: &str = "signed/manifest.json";

/// A manifest that passed every check of [`verify_manifest`].
#[derive(Clone, Debug)]
pub struct VerifiedManifest {
    /// The manifest.
    pub manifest: Manifest,
    /// Hex SHA-256 of its payload bytes.
    pub digest: String,
    /// The newest trusted root after the walk.
    pub root: TrustedRoot,
    /// The envelope bytes of the newest root, when the walk advanced past
    /// the root it started from (for the caller to store).
    pub new_root: Option<Vec<u8>>,
}

/// Why [`verify_manifest`] refused, or could not fetch a root.
#[derive(Debug, thiserror::Error)]
pub enum TrustError<E> {
    /// Fetching `root/<version>.root.json` failed (a transport problem, not
    /// a verdict on the metadata).
    #[error("fetching root/{version}.root.json failed")]
    Fetch {
        /// The root version asked for.
        version: u64,
        /// The caller's error.
        #[source]
        source: E,
    },
    /// A document did not verify.
    #[error("{what}: {source}")]
    Rejected {
        /// The file: `root/<n>.root.json` or `signed/manifest.json`.
        what: String,
        /// Why.
        #[source]
        source: Refusal,
    },
}

/// What was wrong with a refused document.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// A signature, threshold, version or expiry check failed.
    #[error(transparent)]
    Signing(#[from] flotilla_signing::Error),
    /// The verified payload is not a manifest.
    #[error("payload is not a manifest: {0}")]
    NotAManifest(#[source] serde_json::Error),
    /// The manifest's own expiry passed.
    #[error("manifest serial {serial} expired at {expires}")]
    Expired {
        /// Its serial.
        serial: u64,
        /// When it expired.
        expires: DateTime<Utc>,
    },
}

impl<E> TrustError<E> {
    fn rejected(what: impl Into<String>, source: impl Into<Refusal>) -> Self {
        TrustError::Rejected {
            what: what.into(),
            source: source.into(),
        }
    }
}

/// Walks the root chain from `trusted` with `fetch_root(n)` (the bytes of
/// `root/<n>.root.json`, or `None` when there is no such root), then
/// verifies `envelope` (the bytes of `signed/manifest.json`) against the
/// newest root at `now`.
pub fn verify_manifest<E>(
    trusted: TrustedRoot,
    mut fetch_root: impl FnMut(u64) -> Result<Option<Vec<u8>>, E>,
    envelope: &[u8],
    now: DateTime<Utc>,
) -> Result<VerifiedManifest, TrustError<E>> {
    let mut root = trusted;
    let start = root.version();
    let mut newest_bytes = None;
    let walked = root.walk(|n| -> Result<Option<Envelope>, TrustError<E>> {
        match fetch_root(n).map_err(|source| TrustError::Fetch { version: n, source })? {
            None => Ok(None),
            Some(b) => {
                let env = Envelope::from_json(&b)
                    .map_err(|e| TrustError::rejected(format!("root/{n}.root.json"), e))?;
                newest_bytes = Some(b);
                Ok(Some(env))
            }
        }
    });
    match walked {
        Ok(_) => {}
        Err(WalkError::Fetch(e)) => return Err(e),
        Err(WalkError::Verify(e)) => {
            return Err(TrustError::rejected(
                format!("root/{}.root.json", root.version() + 1),
                e,
            ))
        }
    }
    if root.version() == start {
        newest_bytes = None;
    }
    root.check_expiry(now, ExpirationEnforcement::Safe)
        .map_err(|e| TrustError::rejected(format!("root/{}.root.json", root.version()), e))?;
    let env =
        Envelope::from_json(envelope).map_err(|e| TrustError::rejected(SIGNED_MANIFEST, e))?;
    let verification = root
        .verify_release(&env, MANIFEST_PAYLOAD_TYPE)
        .map_err(|e| TrustError::rejected(SIGNED_MANIFEST, e))?;
    let manifest = Manifest::from_payload(&verification.payload)
        .map_err(|e| TrustError::rejected(SIGNED_MANIFEST, Refusal::NotAManifest(e)))?;
    if manifest.expires <= now {
        return Err(TrustError::rejected(
            SIGNED_MANIFEST,
            Refusal::Expired {
                serial: manifest.serial,
                expires: manifest.expires,
            },
        ));
    }
    let digest = hash_reader(&verification.payload[..])
        .expect("hashing memory cannot fail")
        .sha256;
    Ok(VerifiedManifest {
        manifest,
        digest,
        root,
        new_root: newest_bytes,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use chrono::Duration;
    use flotilla_signing::{PrivateKey, Root, ROOT_PAYLOAD_TYPE};

    use super::*;

    fn root_env(
        version: u64,
        root_key: &PrivateKey,
        signers: &[&PrivateKey],
        release: &PrivateKey,
    ) -> Vec<u8> {
        let root = Root::new(
            version,
            Utc::now() + Duration::days(30),
            &[root_key.public_key()],
            1,
            &[release.public_key()],
            1,
        )
        .unwrap();
        let mut env = Envelope::new(ROOT_PAYLOAD_TYPE, &root.to_payload());
        for k in signers {
            env.sign(k).unwrap();
        }
        env.to_json_pretty().into_bytes()
    }

    fn manifest_env(serial: u64, expires_in: Duration, key: &PrivateKey) -> Vec<u8> {
        let m = Manifest {
            fleet: "prod".into(),
            serial,
            issued: Utc::now(),
            expires: Utc::now() + expires_in,
            artifact_base_urls: vec![],
            reporter_url: None,
            releases: BTreeMap::new(),
            channels: BTreeMap::new(),
            pins: vec![],
        };
        let mut env = Envelope::new(MANIFEST_PAYLOAD_TYPE, &m.to_payload());
        env.sign(key).unwrap();
        env.to_json_pretty().into_bytes()
    }

    type NoFetch = std::convert::Infallible;

    #[test]
    fn walks_rotations_and_verifies_with_the_newest_release_key() {
        let (r1, r2) = (PrivateKey::generate(), PrivateKey::generate());
        let (old, new) = (PrivateKey::generate(), PrivateKey::generate());
        let anchor = TrustedRoot::from_anchor(
            &Envelope::from_json(&root_env(1, &r1, &[&r1], &old)).unwrap(),
        )
        .unwrap();
        let v2 = root_env(2, &r2, &[&r1, &r2], &new);
        let fetch =
            |n: u64| -> Result<Option<Vec<u8>>, NoFetch> { Ok((n == 2).then(|| v2.clone())) };

        let ok = verify_manifest(
            anchor.clone(),
            fetch,
            &manifest_env(7, Duration::days(1), &new),
            Utc::now(),
        )
        .unwrap();
        assert_eq!((ok.manifest.serial, ok.root.version()), (7, 2));
        assert_eq!(ok.new_root.as_deref(), Some(&v2[..]));

        let err = verify_manifest(
            anchor,
            fetch,
            &manifest_env(8, Duration::days(1), &old),
            Utc::now(),
        )
        .unwrap_err();
        assert!(
            matches!(&err, TrustError::Rejected { what, .. } if what == SIGNED_MANIFEST),
            "{err}"
        );
    }

    #[test]
    fn refuses_an_unchained_root_an_expired_manifest_and_reports_fetch_errors() {
        let (r1, evil) = (PrivateKey::generate(), PrivateKey::generate());
        let rel = PrivateKey::generate();
        let anchor = TrustedRoot::from_anchor(
            &Envelope::from_json(&root_env(1, &r1, &[&r1], &rel)).unwrap(),
        )
        .unwrap();
        let forged = root_env(2, &evil, &[&evil], &evil);
        let err = verify_manifest(
            anchor.clone(),
            |n| -> Result<_, NoFetch> { Ok((n == 2).then(|| forged.clone())) },
            &manifest_env(1, Duration::days(1), &evil),
            Utc::now(),
        )
        .unwrap_err();
        assert!(
            matches!(&err, TrustError::Rejected { what, .. } if what == "root/2.root.json"),
            "{err}"
        );

        let none = |_| -> Result<_, NoFetch> { Ok(None) };
        let err = verify_manifest(
            anchor.clone(),
            none,
            &manifest_env(1, Duration::seconds(-1), &rel),
            Utc::now(),
        )
        .unwrap_err();
        assert!(
            matches!(
                &err,
                TrustError::Rejected {
                    source: Refusal::Expired { serial: 1, .. },
                    ..
                }
            ),
            "{err}"
        );

        let err = verify_manifest(
            anchor,
            |n| Err(format!("no route to {n}")),
            &manifest_env(1, Duration::days(1), &rel),
            Utc::now(),
        )
        .unwrap_err();
        assert!(
            matches!(&err, TrustError::Fetch { version: 2, .. }),
            "{err}"
        );
    }
}
