//! Deciding whether fetched metadata may be obeyed (docs/design.md, pass step 4).
//!
//! 1. Start from the newest trusted root: the shipped anchor
//!    (`trust_root` in the config) or the newest root this host accepted
//!    before (`state_dir/root.json`), whichever has the higher version. Each
//!    must carry a threshold of its own root keys.
//! 2. Walk the root chain and verify the manifest against the newest root
//!    ([`flotilla_protocol::trust::verify_manifest`]: chain, thresholds,
//!    expiry; the same function the publisher and the reporter use).
//! 3. Replay protection, which only an agent can do: the manifest's serial
//!    must not be below the highest serial this host accepted (kept in
//!    `state.json`, so it survives restarts), and the same serial is
//!    accepted only with the same payload (its SHA-256 is kept too).
//! 4. Fast-forward recovery (TUF's rule for rotated keys): when the walk
//!    reaches a root in which a key that signed the high-water manifest is
//!    no longer a release key, that high-water mark is forgotten. A
//!    compromised release key that signed a huge serial is recovered from by
//!    rotating it out in a new root; the first manifest of the new keys is
//!    then accepted whatever its serial, and the old key's are refused by
//!    signature.
//!
//! Every refusal is [`Error::Rejected`], naming the document and the reason.

use std::collections::BTreeSet;
use std::path::Path;

use chrono::{DateTime, Utc};
use flotilla_protocol::trust::{verify_manifest, TrustError, SIGNED_MANIFEST};
use flotilla_protocol::{Manifest, MANIFEST_PAYLOAD_TYPE};
use flotilla_signing::{Envelope, KeyId, RoleName, TrustedRoot};

use crate::error::{Error, Result};
use crate::source::ManifestSource;
use crate::state::{State, StateDir};

/// The newest trusted root, and who signed the manifest this host accepted
/// last under it.
pub struct Trusted {
    /// The root.
    pub root: TrustedRoot,
    /// The release keys whose signatures on the last accepted manifest
    /// (`state_dir/manifest.json`) verify under `root`; `None` when there is
    /// no such manifest or it does not verify (then every release key of
    /// `root` counts as a possible signer of the high-water mark).
    pub high_water_signers: Option<BTreeSet<KeyId>>,
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
    /// The high-water serial that was forgotten because the new root
    /// replaced the release keys that signed it (fast-forward recovery).
    pub forgot_serial: Option<u64>,
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
    let high_water_signers = state
        .read_optional(&state.manifest_file())?
        .and_then(|b| Envelope::from_json(&b).ok())
        .and_then(|env| root.verify_release(&env, MANIFEST_PAYLOAD_TYPE).ok())
        .map(|v| v.valid);
    Ok(Trusted {
        root,
        high_water_signers,
    })
}

fn rejected(what: impl Into<String>, reason: impl std::fmt::Display) -> Error {
    Error::Rejected {
        what: what.into(),
        reason: reason.to_string(),
    }
}

/// Walks the root chain of `source` from `trusted` (unless `walk_roots` is
/// false: the snapshot is the one already accepted) and verifies `envelope`
/// (the bytes of `signed/manifest.json`) against the newest root, then
/// against this host's replay history in `state`.
pub fn verify(
    trusted: Trusted,
    source: &mut dyn ManifestSource,
    walk_roots: bool,
    envelope: &[u8],
    now: DateTime<Utc>,
    state: &State,
) -> Result<Verified> {
    let start = trusted.root.clone();
    let fetch_root = |n: u64| -> Result<Option<Vec<u8>>> {
        if walk_roots {
            source.root(n)
        } else {
            Ok(None)
        }
    };
    let v = verify_manifest(trusted.root, fetch_root, envelope, now).map_err(|e| match e {
        TrustError::Fetch { source, .. } => source,
        TrustError::Rejected { what, source } => rejected(what, source),
    })?;
    let mut highest = state.highest_serial;
    let mut forgot_serial = None;
    if let Some(h) = highest {
        if v.root.version() > start.version()
            && release_keys_replaced(&start, trusted.high_water_signers.as_ref(), &v.root)
        {
            tracing::warn!(
                "root v{} no longer lists a release key that signed the highest accepted serial ({h}); forgetting that serial (fast-forward recovery)",
                v.root.version()
            );
            highest = None;
            forgot_serial = Some(h);
        }
    }
    let serial = v.manifest.serial;
    if let Some(highest) = highest {
        if serial < highest {
            return Err(rejected(
                SIGNED_MANIFEST,
                format!(
                    "serial {serial} is below the highest serial this host accepted ({highest}): a replayed or stale manifest"
                ),
            ));
        }
        if serial == highest
            && state
                .highest_digest
                .as_deref()
                .is_some_and(|d| d != v.digest)
        {
            return Err(rejected(
                SIGNED_MANIFEST,
                format!(
                    "serial {serial} was accepted before with other content; a new manifest needs a new serial"
                ),
            ));
        }
    }
    Ok(Verified {
        manifest: v.manifest,
        digest: v.digest,
        root: v.root,
        new_root: v.new_root,
        forgot_serial,
    })
}

/// Whether `new` dropped a release key that signed the high-water manifest
/// (`signers`, or any release key of `old` when they are unknown).
fn release_keys_replaced(
    old: &TrustedRoot,
    signers: Option<&BTreeSet<KeyId>>,
    new: &TrustedRoot,
) -> bool {
    let current = &new.root().role(RoleName::Release).keyids;
    let old_release: BTreeSet<KeyId>;
    let signers = match signers {
        Some(s) => s,
        None => {
            old_release = old
                .root()
                .role(RoleName::Release)
                .keyids
                .iter()
                .cloned()
                .collect();
            &old_release
        }
    };
    signers.iter().any(|k| !current.contains(k))
}
