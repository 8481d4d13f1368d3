//! `publish`: upload the signed metadata for agents that pull over HTTP.
//!
//! Sequence:
//! 1. run the full [`crate::verify`] (sources, root chain, release threshold,
//!    expiry, no drift); anything wrong and nothing is uploaded;
//! 2. the store's roots are a prefix of the repo's, byte for byte: a
//!    published root never changes (hosts installed from it trust it), and
//!    new ones chain ([`history::root_changes`]);
//! 3. the manifest verifies ([`Snapshot::verify_manifest`], as agents do) walking from
//!    the store's `root/1.root.json` through its roots and then the repo's
//!    newer ones;
//! 4. read the store's current `manifest.json`: if the newest root's release
//!    keys signed it, a higher serial there means this checkout is stale
//!    (refused), and the same serial with a different payload means two
//!    manifests were signed with one serial (refused);
//! 5. upload the roots the store does not have yet, then `manifest.json`,
//!    byte for byte as in the repo. Roots go first, so an agent that sees the
//!    new manifest can always find the root that signs it.
//!
//! Layout: see [`crate::store`] (`<store>/manifest.json`,
//! `<store>/root/<N>.root.json`).

use chrono::{DateTime, Utc};
use flotilla_protocol::{Manifest, MANIFEST_PAYLOAD_TYPE};
use flotilla_signing::Envelope;

use crate::history::{self, Snapshot};
use crate::repo::SIGNED_MANIFEST;
use crate::verify::{self, Options, Scope};
use crate::{Error, Repo, Result, Store};

/// Object key of the manifest under the store URL.
pub const STORE_MANIFEST: &str = "manifest.json";

/// What `publish` did.
#[derive(Clone, Debug)]
pub struct Published {
    /// Serial of the published manifest.
    pub serial: u64,
    /// Number of root versions uploaded.
    pub roots: u64,
    /// URL of the manifest object.
    pub manifest_url: String,
}

/// Publishes the repo's roots and signed manifest to `store`.
pub fn publish(repo: &Repo, store: &Store, now: DateTime<Utc>) -> Result<Published> {
    let problems = verify::verify(
        repo,
        &Options {
            scope: Scope::Full,
            artifacts: None,
            base: None,
            now,
        },
    );
    if !problems.is_empty() {
        return Err(Error::Refused(format!(
            "{}\nrefusing to publish: the repo does not verify",
            problems.join("\n")
        )));
    }
    let signed = repo
        .signed_manifest()?
        .ok_or_else(|| Error::file(SIGNED_MANIFEST, "missing"))?;
    let ours = Snapshot::work_tree(repo)?;
    let published = Snapshot::in_store(store)?;
    // Published roots never change: agents installed from them trust them.
    let rewrites = history::root_changes(&published, &ours, "this checkout");
    if !rewrites.is_empty() {
        return Err(Error::Refused(format!(
            "{}\nrefusing to publish: {} has published these roots, and hosts trust them",
            rewrites.join("\n"),
            published.label
        )));
    }
    // The manifest must verify against the published chain (root 1 and on
    // are the store's bytes, checked above, then this checkout's newer
    // roots), walked as agents walk it.
    let verified = ours
        .verify_manifest(now)
        .and_then(|v| v.ok_or_else(|| Error::file(SIGNED_MANIFEST, "missing")))
        .map_err(|e| {
            Error::Refused(format!(
                "{e}\nrefusing to publish: it does not verify against the root chain published in {}",
                published.label
            ))
        })?;
    // The published manifest's serial binds us if the current release keys
    // signed it. One the newest root's release keys did not sign (the keys
    // were rotated away, as after a compromise) has no serial to respect:
    // agents forget it too when they take the new root.
    if let Some(bytes) = published.manifest_bytes() {
        let theirs = Envelope::from_json(bytes)
            .ok()
            .and_then(|e| verified.root.verify_release(&e, MANIFEST_PAYLOAD_TYPE).ok())
            .and_then(|v| {
                Manifest::from_payload(&v.payload)
                    .ok()
                    .map(|m| (v.payload, m))
            });
        if let Some((payload, m)) = theirs {
            let ours = &signed.manifest;
            if m.serial > ours.serial {
                return Err(Error::Refused(format!(
                    "{} has serial {}, newer than {SIGNED_MANIFEST}'s {}: this checkout is stale; pull the fleet repo",
                    store.display(STORE_MANIFEST),
                    m.serial,
                    ours.serial
                )));
            }
            if m.serial == ours.serial && payload != signed.envelope.payload_bytes()? {
                return Err(Error::Refused(format!(
                    "{} has serial {} with a different payload: two manifests were signed with the same serial; sign again",
                    store.display(STORE_MANIFEST),
                    m.serial
                )));
            }
        }
    }
    let newest = repo.newest_root()?;
    for (n, bytes) in &ours.roots {
        if published.roots.contains_key(n) {
            continue; // the same bytes, checked above
        }
        store.put_bytes(&Repo::root_rel(*n).to_string_lossy(), bytes.clone())?;
    }
    let envelope_bytes = ours
        .manifest_bytes()
        .expect("verified, so present")
        .to_vec();
    store.put_bytes(STORE_MANIFEST, envelope_bytes)?;
    Ok(Published {
        serial: signed.manifest.serial,
        roots: newest,
        manifest_url: store.display(STORE_MANIFEST),
    })
}
