//! Root metadata in the repo: `root init`, `root sign`, `root rotate`.
//!
//! A rotation is a pull request that adds `root/<N+1>.root.json` as an
//! unsigned envelope (`root rotate`); holders of the old root keys *and* of
//! the new ones each run `root sign` on it until both thresholds are met
//! (`verify` says which are missing). Agents walk N → N+1 with
//! [`flotilla_signing::TrustedRoot::update`], which checks exactly that.

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use flotilla_signing::{Envelope, PrivateKey, PublicKey, Role, Root, ROOT_PAYLOAD_TYPE};

use crate::{Error, Repo, Result};

/// Keys and threshold of one role, as given on the command line.
#[derive(Clone, Debug)]
pub struct RoleSpec {
    /// The role's public keys.
    pub keys: Vec<PublicKey>,
    /// How many must sign; `None` means "as before" (rotate) or 1 (init).
    pub threshold: Option<u32>,
}

/// Writes `root/1.root.json`, unsigned. Refuses if any root exists.
pub fn init(
    repo: &Repo,
    root: &RoleSpec,
    release: &RoleSpec,
    expires: DateTime<Utc>,
) -> Result<PathBuf> {
    if let Some(n) = repo.root_versions()?.last() {
        return Err(Error::file(
            Repo::root_rel(*n),
            "already exists; change keys with `flotilla-publisher root rotate`",
        ));
    }
    let new = Root::new(
        1,
        expires,
        &root.keys,
        root.threshold.unwrap_or(1),
        &release.keys,
        release.threshold.unwrap_or(1),
    )?;
    let rel = Repo::root_rel(1);
    repo.write_envelope(&rel, &Envelope::new(ROOT_PAYLOAD_TYPE, &new.to_payload()))?;
    Ok(rel)
}

/// Writes `root/<N+1>.root.json`, unsigned, for the holders of root N's root
/// keys and of the new root keys to sign. Roles not given keep their keys;
/// thresholds not given keep theirs (capped at the number of keys).
/// Refuses unless root 1..N verifies, so rotations are signed in order.
pub fn rotate(
    repo: &Repo,
    root: Option<&RoleSpec>,
    release: Option<&RoleSpec>,
    expires: DateTime<Utc>,
) -> Result<PathBuf> {
    let newest = repo.newest_root()?;
    let trusted = repo.root_chain().map_err(|e| {
        Error::Refused(format!(
            "{e}\nroot v{newest} must verify before it can be rotated (sign it with `flotilla-publisher root sign`)"
        ))
    })?;
    let current = trusted.root();
    let keys = current.public_keys();
    let resolve = |spec: Option<&RoleSpec>, role: &Role| -> (Vec<PublicKey>, u32) {
        let ks: Vec<PublicKey> = match spec {
            Some(s) if !s.keys.is_empty() => s.keys.clone(),
            _ => role
                .keyids
                .iter()
                .filter_map(|id| keys.get(id).cloned())
                .collect(),
        };
        let t = spec
            .and_then(|s| s.threshold)
            .unwrap_or_else(|| role.threshold.min(ks.len().max(1) as u32));
        (ks, t)
    };
    let (rk, rt) = resolve(root, &current.roles.root);
    let (lk, lt) = resolve(release, &current.roles.release);
    let next = Root::new(current.version + 1, expires, &rk, rt, &lk, lt)?;
    let rel = Repo::root_rel(next.version);
    repo.write_envelope(&rel, &Envelope::new(ROOT_PAYLOAD_TYPE, &next.to_payload()))?;
    Ok(rel)
}

/// How far a root envelope is from verifying.
#[derive(Clone, Debug)]
pub struct RootStatus {
    /// The root's file.
    pub file: PathBuf,
    /// "met" or "k of n" for its own root role.
    pub own: String,
    /// Same for the previous root's root role (rotations only).
    pub previous: Option<String>,
}

/// Adds a signature by `key` to `root/<version>.root.json` (default: the
/// newest). The key must be a root key of that root or of the one before.
pub fn sign(repo: &Repo, key: &PrivateKey, version: Option<u64>) -> Result<RootStatus> {
    let n = match version {
        Some(n) => n,
        None => repo.newest_root()?,
    };
    let rel = Repo::root_rel(n);
    let mut env = repo.read_envelope(&rel)?;
    let this = parse_root(repo, n)?;
    let prev = if n > 1 {
        Some(parse_root(repo, n - 1)?)
    } else {
        None
    };
    let id = key.key_id();
    let eligible = this.roles.root.keyids.contains(&id)
        || prev
            .as_ref()
            .is_some_and(|p| p.roles.root.keyids.contains(&id));
    if !eligible {
        return Err(Error::Refused(format!(
            "{}: key {} is not a root key of root v{n}{}",
            rel.display(),
            id.short(),
            if n > 1 {
                format!(" or v{}", n - 1)
            } else {
                String::new()
            }
        )));
    }
    env.sign(key).map_err(|e| Error::file(&rel, e))?;
    repo.write_envelope(&rel, &env)?;
    Ok(RootStatus {
        own: role_status(&this.roles.root, &this, &env, ROOT_PAYLOAD_TYPE),
        previous: prev
            .as_ref()
            .map(|p| role_status(&p.roles.root, p, &env, ROOT_PAYLOAD_TYPE)),
        file: rel,
    })
}

fn parse_root(repo: &Repo, n: u64) -> Result<Root> {
    let rel = Repo::root_rel(n);
    let env = repo.read_envelope(&rel)?;
    let payload = env.payload_bytes().map_err(|e| Error::file(&rel, e))?;
    Root::from_json(&payload).map_err(|e| Error::file(&rel, e))
}

/// "threshold N met" or "k of N required signatures" for `role` of `root`
/// over `env`, counted by the one threshold function ([`Role::check`]).
pub(crate) fn role_status(role: &Role, root: &Root, env: &Envelope, payload_type: &str) -> String {
    match env
        .verify(payload_type, &root.public_keys())
        .map_err(Error::from)
        .and_then(|v| Ok(role.check("root", &v)?))
    {
        Ok(()) => format!("threshold {} met", role.threshold),
        Err(Error::Signing(flotilla_signing::Error::Threshold {
            valid, threshold, ..
        })) => format!("{valid} of {threshold} required signatures"),
        Err(e) => e.to_string(),
    }
}
