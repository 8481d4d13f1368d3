//! Deciding whether fetched metadata may be obeyed (DESIGN.md, pass step 4).
//!
//! 1. Start from the newest trusted root: the shipped anchor
//!    (`trust_root` in the config) or the newest root this host accepted
//!    before (`state_dir/root.json`), whichever has the higher version. Each
//!    must carry a threshold of its own root keys.
//! 2. Walk `root/<n+1>.root.json`, `root/<n+2>.root.json`, … from the same
//!    snapshot: each needs a threshold of the previous root's root keys *and*
//!    of its own ([`TrustedRoot::walk`]).
//! 3. The newest root must not have expired.
//! 4. The manifest envelope needs a threshold of the newest root's release
//!    keys, over the exact payload bytes, with the manifest payload type.
//! 5. The manifest must not have expired, and its serial must not be below
//!    the highest serial this host accepted (kept in `state.json`, so replay
//!    protection survives restarts). The same serial is accepted only with
//!    the same payload (its SHA-256 is kept too).
//!
//! Every refusal is [`Error::Rejected`], naming the document and the reason.

use std::path::Path;

use chrono::{DateTime, Utc};
use flotilla_protocol::{Manifest, MANIFEST_PAYLOAD_TYPE};
use flotilla_signing::root::WalkError;
use flotilla_signing::{hash_reader, Envelope, ExpirationEnforcement, TrustedRoot};

use crate::error::{Error, Result};
use crate::source::ManifestSource;
use crate::state::{State, StateDir};

/// The newest trusted root and where it came from.
pub struct Trusted {
    /// The root.
    pub root: TrustedRoot,
}

/// A manifest that passed every check.
pub struct Verified {
    /// The manifest.
    pub manifest: Manifest,
    /// SHA-256 of its payload.
    pub digest: String,
    /// The newest trusted root after the walk.
    pub root: TrustedRoot,
    /// The envelope of the newest root if the walk advanced (to store).
    pub new_root: Option<Vec<u8>>,
}

/// Loads the newest trusted root: the anchor or the stored one.
pub fn load_root(anchor_path: &Path, state: &StateDir) -> Result<Trusted> {
    let bytes = std::fs::read(anchor_path).map_err(|e| Error::TrustRoot {
        path: anchor_path.to_owned(),
        source: flotilla_signing::Error::Io {
            path: anchor_path.to_owned(),
            source: e,
        },
    })?;
    let anchor = Envelope::from_json(&bytes)
        .and_then(|env| TrustedRoot::from_anchor(&env))
        .map_err(|source| Error::TrustRoot {
            path: anchor_path.to_owned(),
            source,
        })?;
    let stored_path = state.root_file();
    let stored = match state.read_optional(&stored_path)? {
        None => None,
        Some(b) => match Envelope::from_json(&b).and_then(|env| TrustedRoot::from_anchor(&env)) {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::warn!(
                    "{}: ignoring the stored root ({e}); walking from the anchor",
                    stored_path.display()
                );
                None
            }
        },
    };
    let root = match stored {
        Some(s) if s.version() > anchor.version() => s,
        _ => anchor,
    };
    Ok(Trusted { root })
}

fn rejected(what: impl Into<String>, reason: impl std::fmt::Display) -> Error {
    Error::Rejected {
        what: what.into(),
        reason: reason.to_string(),
    }
}

/// Walks the root chain of `source` from `trusted` and verifies `envelope`
/// (the bytes of `signed/manifest.json`) against the newest root.
pub fn verify(
    trusted: Trusted,
    source: &mut dyn ManifestSource,
    walk_roots: bool,
    envelope: &[u8],
    now: DateTime<Utc>,
    state: &State,
) -> Result<Verified> {
    let mut root = trusted.root;
    let mut newest_bytes = None;
    if walk_roots {
        let start = root.version();
        let walked = root.walk(|n| -> Result<Option<Envelope>> {
            match source.root(n)? {
                None => Ok(None),
                Some(b) => {
                    let env = Envelope::from_json(&b)
                        .map_err(|e| rejected(format!("root/{n}.root.json"), e))?;
                    newest_bytes = Some(b);
                    Ok(Some(env))
                }
            }
        });
        match walked {
            Ok(_) => {}
            Err(WalkError::Fetch(e)) => return Err(e),
            Err(WalkError::Verify(e)) => {
                return Err(rejected(
                    format!("root/{}.root.json", root.version() + 1),
                    e,
                ))
            }
        }
        if root.version() == start {
            newest_bytes = None;
        }
    }
    root.check_expiry(now, ExpirationEnforcement::Safe)
        .map_err(|e| rejected(format!("root/{}.root.json", root.version()), e))?;
    const WHAT: &str = "signed/manifest.json";
    let env = Envelope::from_json(envelope).map_err(|e| rejected(WHAT, e))?;
    let verification = root
        .verify_release(&env, MANIFEST_PAYLOAD_TYPE)
        .map_err(|e| rejected(WHAT, e))?;
    let manifest = Manifest::from_payload(&verification.payload)
        .map_err(|e| rejected(WHAT, format!("payload is not a manifest: {e}")))?;
    if manifest.expires <= now {
        return Err(rejected(
            WHAT,
            format!(
                "manifest serial {} expired at {}",
                manifest.serial, manifest.expires
            ),
        ));
    }
    let digest = hash_reader(&verification.payload[..])
        .expect("hashing memory cannot fail")
        .sha256;
    if let Some(highest) = state.highest_serial {
        if manifest.serial < highest {
            return Err(rejected(
                WHAT,
                format!(
                    "serial {} is below the highest serial this host accepted ({highest}): a replayed or stale manifest",
                    manifest.serial
                ),
            ));
        }
        if manifest.serial == highest
            && state.highest_digest.as_deref().is_some_and(|d| d != digest)
        {
            return Err(rejected(
                WHAT,
                format!(
                    "serial {} was accepted before with other content; a new manifest needs a new serial",
                    manifest.serial
                ),
            ));
        }
    }
    Ok(Verified {
        manifest,
        digest,
        root,
        new_root: newest_bytes,
    })
}
