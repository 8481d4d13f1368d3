//! `publish`: upload the signed metadata for agents that pull over HTTP.
//!
//! Sequence:
//! 1. run the full [`crate::verify`] (sources, root chain, release threshold,
//!    expiry, no drift); anything wrong and nothing is uploaded;
//! 2. read the store's current `manifest.json`: a higher serial there means
//!    this checkout is stale (refused); the same serial with a different
//!    payload means two manifests were signed with one serial (refused);
//! 3. upload `root/1.root.json` … `root/N.root.json`, then `manifest.json`,
//!    byte for byte as in the repo. Roots go first, so an agent that sees the
//!    new manifest can always find the root that signs it.
//!
//! Layout: see [`crate::store`] (`<store>/manifest.json`,
//! `<store>/root/<N>.root.json`).

use chrono::{DateTime, Utc};
use flotilla_protocol::Manifest;
use flotilla_signing::Envelope;

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
    if let Some(bytes) = store.get_bytes(STORE_MANIFEST)? {
        let theirs = Envelope::from_json(&bytes)
            .ok()
            .and_then(|e| e.payload_bytes().ok())
            .and_then(|p| Manifest::from_payload(&p).ok().map(|m| (p, m)));
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
    for n in 1..=newest {
        let rel = Repo::root_rel(n);
        let bytes = std::fs::read(repo.path(&rel)).map_err(|e| Error::io(&rel, e))?;
        store.put_bytes(&rel.to_string_lossy(), bytes)?;
    }
    let bytes =
        std::fs::read(repo.path(SIGNED_MANIFEST)).map_err(|e| Error::io(SIGNED_MANIFEST, e))?;
    store.put_bytes(STORE_MANIFEST, bytes)?;
    Ok(Published {
        serial: signed.manifest.serial,
        roots: newest,
        manifest_url: store.display(STORE_MANIFEST),
    })
}
