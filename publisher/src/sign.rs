//! `sign`: compile the sources into the manifest and sign it.
//!
//! Sequence (a new signature, [`Mode::New`]):
//! 1. load and validate the sources;
//! 2. walk the root chain; root N must not have expired, and the key must be
//!    one of root N's release keys;
//! 3. refuse a channel that moves below the release in the previous
//!    `signed/manifest.json` unless it sets `allow_downgrade`;
//! 4. serial = previous serial + 1 (1 for the first), so it strictly
//!    increases and agents can refuse replays;
//! 5. compile, wrap in a DSSE envelope, sign, write `signed/manifest.json`.
//!
//! [`Mode::Append`] (the two-person rule for a release threshold of 2 or
//! more) adds a co-signature to the existing envelope after checking that its
//! payload equals the compilation of the current sources (serial and
//! timestamps aside) and has not expired; what the second person signs is
//! exactly what the first signed.
//!
//! [`Mode::IfNeeded`] (for CI after a merge) signs as `New` only when the
//! signed manifest is missing, drifted from the sources, or expires within
//! the given time; otherwise it changes nothing.

use std::path::Path;

use chrono::{DateTime, Utc};
use flotilla_protocol::{HumanDuration, Manifest, MANIFEST_PAYLOAD_TYPE};
use flotilla_signing::{Envelope, ExpirationEnforcement, PrivateKey, TrustedRoot};

use crate::repo::SIGNED_MANIFEST;
use crate::{verify, Error, Repo, Result};

/// How to sign.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// A new manifest with the next serial.
    New,
    /// A co-signature on the existing manifest.
    Append,
    /// `New`, but only if missing, drifted, or expiring within this long.
    IfNeeded(HumanDuration),
}

/// What `sign` did.
#[derive(Clone, Debug)]
pub struct Signed {
    /// The manifest's serial.
    pub serial: u64,
    /// When it expires.
    pub expires: DateTime<Utc>,
    /// False when `IfNeeded` found nothing to do.
    pub changed: bool,
    /// The release role's threshold status: "threshold N met" or "k of N
    /// required signatures".
    pub status: String,
}

/// Signs the repo's sources with `key`.
pub fn sign(
    repo: &Repo,
    key: &PrivateKey,
    expires_in: Option<HumanDuration>,
    mode: Mode,
    now: DateTime<Utc>,
) -> Result<Signed> {
    let rel = Path::new(SIGNED_MANIFEST);
    let sources = repo.load_sources()?;
    let trusted = repo.root_chain()?;
    trusted
        .check_expiry(now, ExpirationEnforcement::Safe)
        .map_err(|e| Error::file(Repo::root_rel(trusted.version()), e))?;
    let release_role = &trusted.root().roles.release;
    if !release_role.keyids.contains(&key.key_id()) {
        return Err(Error::Refused(format!(
            "key {} is not a release key of root v{} ({})",
            key.key_id().short(),
            trusted.version(),
            Repo::root_rel(trusted.version()).display()
        )));
    }
    let previous = repo.signed_manifest()?;

    let envelope = match (mode, previous) {
        (Mode::Append, None) => {
            return Err(Error::file(
                rel,
                "missing: nothing to co-sign; the first signer runs `flotilla-publisher sign` without --append",
            ))
        }
        (Mode::Append, Some(prev)) => {
            let drift = verify::drift(&prev.manifest, &sources);
            if !drift.is_empty() {
                return Err(Error::Refused(format!(
                    "{}\nrefusing to co-sign: the signed manifest is not what the current sources compile to",
                    drift.join("\n")
                )));
            }
            if prev.manifest.expires <= now {
                return Err(Error::file(
                    rel,
                    "expired; sign a new one with `flotilla-publisher sign`",
                ));
            }
            let mut env = prev.envelope;
            env.sign(key).map_err(|e| Error::file(rel, e))?;
            env
        }
        (mode, prev) => {
            if let (Mode::IfNeeded(renew), Some(p)) = (mode, &prev) {
                if verify::drift(&p.manifest, &sources).is_empty()
                    && p.manifest.expires > now + renew.to_chrono()
                {
                    return Ok(Signed {
                        serial: p.manifest.serial,
                        expires: p.manifest.expires,
                        changed: false,
                        status: status(&trusted, &p.envelope),
                    });
                }
            }
            let serial = match &prev {
                Some(p) => {
                    let d = verify::downgrades(&p.manifest, &sources);
                    if !d.is_empty() {
                        return Err(Error::Refused(d.join("\n")));
                    }
                    p.manifest.serial.checked_add(1).ok_or_else(|| {
                        Error::file(rel, "serial is at its maximum")
                    })?
                }
                None => 1,
            };
            let lifetime = expires_in.unwrap_or(sources.fleet.manifest_expires);
            let manifest =
                Manifest::compile(&sources, serial, now, now + lifetime.to_chrono());
            let mut env = Envelope::new(MANIFEST_PAYLOAD_TYPE, &manifest.to_payload());
            env.sign(key)?;
            env
        }
    };
    let manifest =
        Manifest::from_payload(&envelope.payload_bytes()?).map_err(|e| Error::file(rel, e))?;
    repo.write_envelope(rel, &envelope)?;
    Ok(Signed {
        serial: manifest.serial,
        expires: manifest.expires,
        changed: true,
        status: status(&trusted, &envelope),
    })
}

/// "threshold N met" or "k of N required signatures" for the release role.
fn status(trusted: &TrustedRoot, env: &Envelope) -> String {
    let root = trusted.root();
    crate::roots::role_status(&root.roles.release, root, env, MANIFEST_PAYLOAD_TYPE)
}
