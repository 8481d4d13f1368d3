//! What was trusted before a change: the roots and the signed manifest of a
//! base revision (git), of the store (what agents were served), or of the
//! work tree, and the rules a change must keep with respect to them.
//!
//! - Roots are append-only: an existing `root/<n>.root.json` never changes
//!   (not a byte), and a new `root/<n+1>.root.json` must chain from root n
//!   (a threshold of root n's root keys and of its own), checked with
//!   [`flotilla_signing::TrustedRoot::update`], the walk agents use. A root
//!   that never verified (a rotation merged before it was signed) was never
//!   trusted, so it may still change until it chains.
//! - `signed/` is generated: a change may only replace
//!   `signed/manifest.json` with an envelope that carries the release
//!   threshold of the (checked) root chain, with a serial above the base's
//!   and at most [`MAX_SERIAL_JUMP`] above it (signers of a release
//!   threshold of 2 or more sign in the pull request).
//! - A serial counts only when its envelope verifies ([`Snapshot::serial`]):
//!   bytes a pull request could have edited say nothing.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::path::Path;

use chrono::{DateTime, Utc};
use flotilla_protocol::trust::{verify_manifest, Refusal, TrustError, VerifiedManifest};
use flotilla_protocol::{Manifest, MANIFEST_PAYLOAD_TYPE};
use flotilla_signing::{Envelope, TrustedRoot};

use crate::git_sources::{self, Revision};
use crate::repo::SIGNED_MANIFEST;
use crate::{Error, Repo, Result, Store};

/// The largest step of the serial `sign` makes, or a change may make,
/// without `--allow-serial-jump`: far more than any real history between a
/// base and its change, far less than the 2^64 that would freeze agents.
pub const MAX_SERIAL_JUMP: u64 = 1000;

/// Said after an expired root.
pub(crate) const ROTATE_HINT: &str = "; rotate it with `flotilla-publisher root rotate`";

/// How many root versions are read from a store at most.
const MAX_ROOTS: u64 = 1024;

/// The roots and the files under `signed/` of one place.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// Where: `the work tree`, `3f2a1c09e1 (merge-base of HEAD and origin/main)`,
    /// `s3://bucket/fleet`.
    pub label: String,
    /// `root/<n>.root.json` bytes by n.
    pub roots: BTreeMap<u64, Vec<u8>>,
    /// Files under `signed/` by path (`signed/manifest.json`, …).
    pub signed: BTreeMap<String, Vec<u8>>,
}

fn root_number(rel: &str) -> Option<u64> {
    rel.strip_prefix("root/")?
        .strip_suffix(".root.json")?
        .parse()
        .ok()
}

impl Snapshot {
    /// The work tree of `repo`.
    pub fn work_tree(repo: &Repo) -> Result<Snapshot> {
        let mut s = Snapshot {
            label: "the work tree".into(),
            ..Snapshot::default()
        };
        for n in repo.root_versions()? {
            let rel = Repo::root_rel(n);
            let bytes = std::fs::read(repo.path(&rel)).map_err(|e| Error::io(&rel, e))?;
            s.roots.insert(n, bytes);
        }
        let dir = repo.path("signed");
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => Some(e),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(Error::io("signed", e)),
        };
        for entry in entries.into_iter().flatten() {
            let entry = entry.map_err(|e| Error::io("signed", e))?;
            let rel = format!("signed/{}", entry.file_name().to_string_lossy());
            // A directory (or unreadable file) under signed/ is recorded as
            // empty: still a change, said by name.
            let bytes: Vec<u8> = std::fs::read(entry.path()).unwrap_or_default();
            s.signed.insert(rel, bytes);
        }
        Ok(s)
    }

    /// The fleet repo at `dir` as of `rev`.
    pub fn at_revision(dir: &Path, rev: &Revision) -> Result<Snapshot> {
        let mut s = Snapshot {
            label: rev.describe(),
            ..Snapshot::default()
        };
        for (rel, bytes) in git_sources::files_at(dir, rev, &["root", "signed"], |_| true)? {
            if let Some(n) = root_number(&rel) {
                s.roots.insert(n, bytes);
            } else if rel.starts_with("signed/") {
                s.signed.insert(rel, bytes);
            }
        }
        Ok(s)
    }

    /// What `publish` put in `store`: its roots and its `manifest.json` (as
    /// `signed/manifest.json`).
    pub fn in_store(store: &Store) -> Result<Snapshot> {
        let mut s = Snapshot {
            label: store.display("").trim_end_matches('/').to_owned(),
            ..Snapshot::default()
        };
        for n in 1..=MAX_ROOTS {
            match store.get_bytes(&Repo::root_rel(n).to_string_lossy())? {
                Some(b) => s.roots.insert(n, b.to_vec()),
                None => break,
            };
        }
        if let Some(b) = store.get_bytes(crate::publish::STORE_MANIFEST)? {
            s.signed.insert(SIGNED_MANIFEST.into(), b.to_vec());
        }
        Ok(s)
    }

    /// The bytes of `signed/manifest.json`, if any.
    pub fn manifest_bytes(&self) -> Option<&[u8]> {
        self.signed.get(SIGNED_MANIFEST).map(Vec::as_slice)
    }

    /// Walks root 1 → N with [`TrustedRoot::from_anchor`] and
    /// [`TrustedRoot::update`] (the steps agents take); every step's trusted
    /// root, oldest first. An error names the root file that does not
    /// verify. Expiry is not checked here. This is the publisher's one walk:
    /// [`Repo::root_chain`] is its last step.
    pub fn chain(&self) -> Result<Vec<TrustedRoot>> {
        match self.chain_prefix() {
            (chain, None) => Ok(chain),
            (_, Some(e)) => Err(e),
        }
    }

    /// The roots that verify, from root 1 up to the first that does not,
    /// and why that one does not.
    fn chain_prefix(&self) -> (Vec<TrustedRoot>, Option<Error>) {
        let mut out: Vec<TrustedRoot> = Vec::new();
        for (i, (n, bytes)) in self.roots.iter().enumerate() {
            let rel = Repo::root_rel(*n);
            let want = i as u64 + 1;
            if *n != want {
                let e = Error::file(
                    Repo::root_rel(want),
                    format!(
                        "missing, but {} exists: root versions go 1, 2, 3, …",
                        rel.display()
                    ),
                );
                return (out, Some(e));
            }
            let next = Envelope::from_json(bytes).and_then(|env| match out.last() {
                None => TrustedRoot::from_anchor(&env),
                Some(t) => {
                    let mut t = t.clone();
                    t.update(&env).map(|()| t)
                }
            });
            match next {
                Ok(t) => out.push(t),
                Err(e) => return (out, Some(Error::file(&rel, e))),
            }
        }
        (out, None)
    }

    /// Verifies `signed/manifest.json` as an agent that ships this
    /// snapshot's `root/1.root.json` would, at `now`:
    /// [`flotilla_protocol::trust::verify_manifest`] (walk, thresholds,
    /// expiry). `Ok(None)` when there is no manifest; an error is one line
    /// naming the file.
    pub fn verify_manifest(&self, now: DateTime<Utc>) -> Result<Option<VerifiedManifest>> {
        let chain = self.chain()?;
        let (Some(anchor), Some(bytes)) = (chain.first(), self.manifest_bytes()) else {
            return match chain.is_empty() {
                true => Err(Repo::no_root()),
                false => Ok(None),
            };
        };
        verify_manifest(
            anchor.clone(),
            |n| Ok::<_, Infallible>(self.roots.get(&n).cloned()),
            bytes,
            now,
        )
        .map(Some)
        .map_err(|e| match e {
            TrustError::Fetch { source, .. } => match source {},
            TrustError::Rejected { what, source } => {
                let hint = match &source {
                    Refusal::Expired { .. } => "; re-sign with `flotilla-publisher sign`",
                    Refusal::Signing(flotilla_signing::Error::Expired { .. }) => ROTATE_HINT,
                    _ => "",
                };
                Error::file(what, format!("{source}{hint}"))
            }
        })
    }

    /// The serial of `signed/manifest.json` if it carries the release
    /// threshold of a root of this snapshot's chain (the newest first: the
    /// manifest before a key rotation was signed by the old keys). Expiry
    /// does not matter: an expired manifest was still served with that
    /// serial. `None` when missing, unverifiable, or the chain is broken.
    pub fn serial(&self) -> Option<u64> {
        self.verified().map(|m| m.serial)
    }

    /// The manifest of [`Snapshot::serial`].
    pub fn verified(&self) -> Option<Manifest> {
        let chain = self.chain().ok()?;
        verified_manifest(&chain, self.manifest_bytes()?)
    }

    /// Whether `signed/manifest.json` carries at least one valid signature
    /// of the newest root's release keys (a co-signing flow under way).
    pub fn partly_signed(&self) -> bool {
        let (Ok(chain), Some(bytes)) = (self.chain(), self.manifest_bytes()) else {
            return false;
        };
        let (Some(newest), Ok(env)) = (chain.last(), Envelope::from_json(bytes)) else {
            return false;
        };
        match newest.verify_release(&env, MANIFEST_PAYLOAD_TYPE) {
            Ok(_) => true,
            Err(flotilla_signing::Error::Threshold { valid, .. }) => valid > 0,
            Err(_) => false,
        }
    }
}

/// The manifest in envelope `bytes` if it carries the release threshold of
/// a root of `chain` (newest first).
pub fn verified_manifest(chain: &[TrustedRoot], bytes: &[u8]) -> Option<Manifest> {
    let env = Envelope::from_json(bytes).ok()?;
    chain.iter().rev().find_map(|t| {
        let v = t.verify_release(&env, MANIFEST_PAYLOAD_TYPE).ok()?;
        Manifest::from_payload(&v.payload).ok()
    })
}

/// What `head` changed of `base`'s roots: removed or changed roots, and new
/// ones that do not chain. One line per problem, naming the file. A root of
/// the base that did not verify there (a rotation still being signed) was
/// never trusted by anyone: it may still change, and is checked as new.
pub fn root_changes(base: &Snapshot, head: &Snapshot, verb: &str) -> Vec<String> {
    let (trusted_chain, _) = base.chain_prefix();
    let k = trusted_chain.len() as u64;
    let mut problems = Vec::new();
    for (n, old) in base.roots.range(..=k) {
        match head.roots.get(n) {
            None => problems.push(format!(
                "root/{n}.root.json: {verb} removes it ({} has it); roots are append-only",
                base.label
            )),
            Some(new) if new != old => problems.push(format!(
                "root/{n}.root.json: {verb} changes it ({} has other bytes); roots are append-only: \
                 a key change is a new root (`flotilla-publisher root rotate`), signed by the old root keys",
                base.label
            )),
            Some(_) => {}
        }
    }
    if !problems.is_empty() {
        return problems;
    }
    let mut trusted = trusted_chain.last().cloned();
    for (n, bytes) in head.roots.range(k + 1..) {
        let rel = format!("root/{n}.root.json");
        let stepped = Envelope::from_json(bytes).and_then(|env| {
            Ok(match trusted.take() {
                None => TrustedRoot::from_anchor(&env)?,
                Some(mut t) => {
                    t.update(&env)?;
                    t
                }
            })
        });
        match stepped {
            Ok(t) => trusted = Some(t),
            Err(e) => {
                let what = match base.roots.contains_key(n) {
                    true => "keeps it, and it still does not chain",
                    false => "adds it, but it does not chain",
                };
                problems.push(format!(
                    "{rel}: {verb} {what} from {}: {e}",
                    if *n == 1 {
                        "itself (root 1 needs a threshold of its own root keys)".to_owned()
                    } else {
                        format!("root/{}.root.json", n - 1)
                    }
                ));
                break;
            }
        }
    }
    problems
}

/// What `head` changed under `signed/` compared with `base`. The one change
/// allowed is a `signed/manifest.json` that carries the release threshold of
/// `head`'s root chain with a serial above `base`'s, at most
/// [`MAX_SERIAL_JUMP`] higher (co-signers sign in the pull request).
pub fn signed_changes(base: &Snapshot, head: &Snapshot, verb: &str) -> Vec<String> {
    let restore = format!(
        "generated files are CI's to write: restore them with `git checkout {} -- signed/`",
        base.label.split(' ').next().unwrap_or("BASE")
    );
    let mut problems = Vec::new();
    let names: std::collections::BTreeSet<&String> =
        base.signed.keys().chain(head.signed.keys()).collect();
    for name in names {
        let (old, new) = (base.signed.get(name), head.signed.get(name));
        if old == new {
            continue;
        }
        let why = match (name.as_str(), new) {
            (SIGNED_MANIFEST, Some(bytes)) => match manifest_change_refusal(base, head, bytes) {
                None => continue,
                Some(why) => why,
            },
            (_, None) => "removes it".to_owned(),
            _ => "changes it".to_owned(),
        };
        problems.push(format!("{name}: {verb} {why}; {restore}"));
    }
    problems
}

/// Why a changed `signed/manifest.json` is refused, or `None`.
fn manifest_change_refusal(base: &Snapshot, head: &Snapshot, bytes: &[u8]) -> Option<String> {
    let chain = match head.chain() {
        Ok(c) if !c.is_empty() => c,
        _ => return Some("changes it, and the root chain does not verify".into()),
    };
    let newest = chain.last().expect("not empty");
    let verified = Envelope::from_json(bytes)
        .map_err(Error::from)
        .and_then(|env| Ok(newest.verify_release(&env, MANIFEST_PAYLOAD_TYPE)?))
        .and_then(|v| {
            Manifest::from_payload(&v.payload).map_err(|e| {
                Error::file(SIGNED_MANIFEST, format!("payload is not a manifest: {e}"))
            })
        });
    let m = match verified {
        Ok(m) => m,
        Err(e) => return Some(format!("changes it, but it does not verify ({e})")),
    };
    let floor = base.serial().unwrap_or(0);
    if m.serial <= floor {
        return Some(format!(
            "changes it to serial {}, not above {}'s {floor}",
            m.serial, base.label
        ));
    }
    if m.serial - floor > MAX_SERIAL_JUMP {
        return Some(format!(
            "changes it to serial {}, a jump of more than {MAX_SERIAL_JUMP} over {}'s {floor}",
            m.serial, base.label
        ));
    }
    None
}
