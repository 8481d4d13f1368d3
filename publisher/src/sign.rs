//! `sign`: compile the sources into the manifest and sign it.
//!
//! Sequence (a new signature, [`Mode::New`]):
//! 1. load and validate the sources;
//! 2. walk the root chain; root N must not have expired, and the key must be
//!    one of root N's release keys;
//! 3. refuse a channel that moves below the release in the previous
//!    `signed/manifest.json` unless it sets `allow_downgrade`;
//! 4. serial = previous serial + 1 (1 for the first), so it strictly
//!    increases and agents can refuse replays. The previous serial is the
//!    highest of the envelopes that *verify* (release threshold of their
//!    root chain): the work tree's `signed/manifest.json`, the store's
//!    published copy (`--store`), the base revision (`--base`, default the
//!    merge-base with `origin/main`). Bytes nobody signed (a pull request's
//!    edit) never set it, and a serial more than [`MAX_SERIAL_JUMP`] above
//!    the last verified one elsewhere is refused without `--allow-serial-jump`;
//! 5. compile, wrap in a DSSE envelope, sign, write `signed/manifest.json`.
//!
//! [`Mode::Append`] (the two-person rule for a release threshold of 2 or
//! more) adds a co-signature to the existing envelope after checking that its
//! payload equals the compilation of the current sources (serial and
//! timestamps aside), has not expired, and has a serial at most
//! [`MAX_SERIAL_JUMP`] above the last verified one (the envelope being
//! co-signed does not verify yet, by definition: its serial is bounded, not
//! trusted); what the second person signs is exactly what the first signed.
//!
//! [`Mode::IfNeeded`] (for CI after a merge) signs as `New` only when the
//! signed manifest is missing, drifted from the sources, or expires within
//! the given time; otherwise it changes nothing.

use std::path::Path;

use chrono::{DateTime, Utc};
use flotilla_protocol::{HumanDuration, Manifest, MANIFEST_PAYLOAD_TYPE};
use flotilla_signing::{Envelope, ExpirationEnforcement, PrivateKey, TrustedRoot};

use crate::history::{self, Snapshot, MAX_SERIAL_JUMP};
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

/// Options of one signature.
#[derive(Debug)]
pub struct Options<'a> {
    /// How long the manifest stays valid [default: fleet.toml's].
    pub expires_in: Option<HumanDuration>,
    /// How to sign.
    pub mode: Mode,
    /// What was trusted before, besides the work tree: the store's published
    /// copy, the base revision. Their verified serials bound the new one.
    pub history: &'a [Snapshot],
    /// Sign a serial more than [`MAX_SERIAL_JUMP`] above the last verified one.
    pub allow_serial_jump: bool,
    /// The time expiry is judged at.
    pub now: DateTime<Utc>,
}

/// Signs the repo's sources with `key`.
///
/// The previous serial is taken only from envelopes that carry the release
/// threshold of their root chain ([`Snapshot::verified`]): the work tree's
/// `signed/manifest.json`, and each of `opts.history`. A pull request can
/// edit the bytes of `signed/manifest.json`, not make them verify.
pub fn sign(repo: &Repo, key: &PrivateKey, opts: &Options<'_>) -> Result<Signed> {
    let now = opts.now;
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
    let work = Snapshot::work_tree(repo)?;
    for h in opts.history {
        let problems = history::root_changes(h, &work, "this checkout");
        if !problems.is_empty() {
            return Err(Error::Refused(format!(
                "{}\nrefusing to sign under a root chain that rewrites {}'s",
                problems.join("\n"),
                h.label
            )));
        }
    }
    // The highest verified serial elsewhere, and where.
    let floor = opts
        .history
        .iter()
        .filter_map(|h| h.verified().map(|m| (m, h.label.as_str())))
        .max_by_key(|(m, _)| m.serial);
    let ours = work.verified();
    let previous = repo.signed_manifest()?;
    let jump_check = |serial: u64| -> Result<()> {
        let (base, from) = match &floor {
            Some((m, label)) => (
                m.serial,
                format!("the verified serial {} of {label}", m.serial),
            ),
            None => (
                0,
                "0 (no verified manifest to compare with: give --base REF or --store URL)"
                    .to_owned(),
            ),
        };
        if serial.saturating_sub(base) > MAX_SERIAL_JUMP && !opts.allow_serial_jump {
            return Err(Error::Refused(format!(
                "{SIGNED_MANIFEST}: serial {serial} would jump more than {MAX_SERIAL_JUMP} above {from}; \
                 agents never accept a lower serial after it, so a forged high serial freezes the fleet. \
                 If the jump is intended, add --allow-serial-jump"
            )));
        }
        Ok(())
    };

    let envelope = match (opts.mode, previous) {
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
            jump_check(prev.manifest.serial)?;
            let mut env = prev.envelope;
            env.sign(key).map_err(|e| Error::file(rel, e))?;
            env
        }
        (mode, prev) => {
            if let (Mode::IfNeeded(renew), Some(p)) = (mode, &prev) {
                // Up to date only if it verifies: an edited payload is not.
                if matches!(work.verify_manifest(now), Ok(Some(_)))
                    && verify::drift(&p.manifest, &sources).is_empty()
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
            if prev.is_some() && ours.is_none() && floor.is_none() && !work.partly_signed() {
                return Err(Error::file(
                    rel,
                    "does not verify against the root chain, so its serial cannot be trusted (was it edited?); \
                     restore it from git history, or give --store (the published copy) or --base (a revision where it verified)",
                ));
            }
            let last = [ours.as_ref(), floor.as_ref().map(|(m, _)| m)]
                .into_iter()
                .flatten()
                .max_by_key(|m| m.serial);
            let serial = match last {
                Some(p) => {
                    let d = verify::downgrades(p, &sources);
                    if !d.is_empty() {
                        return Err(Error::Refused(d.join("\n")));
                    }
                    p.serial
                        .checked_add(1)
                        .ok_or_else(|| Error::file(rel, "serial is at its maximum"))?
                }
                None => 1,
            };
            jump_check(serial)?;
            let lifetime = opts.expires_in.unwrap_or(sources.fleet.manifest_expires);
            let manifest = Manifest::compile(&sources, serial, now, now + lifetime.to_chrono());
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
