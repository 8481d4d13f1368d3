//! Root metadata: who may sign roots and releases, and how many must agree.
//!
//! `root/N.root.json` is a DSSE envelope (payload type [`ROOT_PAYLOAD_TYPE`])
//! of a [`Root`]. An agent ships with one trusted root and walks the chain:
//!
//! 1. Load the shipped root: it must carry a threshold of its own root keys
//!    ([`TrustedRoot::from_anchor`]).
//! 2. For N+1, N+2, … while `root/<n>.root.json` exists: version must be
//!    exactly trusted + 1, and the envelope must carry a threshold of the
//!    *trusted* root's root keys and a threshold of its *own* root keys
//!    ([`TrustedRoot::update`]). Versions never decrease.
//! 3. Only then check expiry of the newest root ([`TrustedRoot::check_expiry`]);
//!    an intermediate root that has expired since does not stop the walk, as in
//!    TUF, so a host that was off for a year can still catch up.
//! 4. Verify release metadata with the newest root's `release` role.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::dsse::{Envelope, Verification};
use crate::keys::{KeyId, PublicKey};
use crate::{Error, Result};

/// DSSE payload type of root metadata.
pub const ROOT_PAYLOAD_TYPE: &str = "application/vnd.flotilla.root+json";

/// How many root versions one walk may advance; a guard against a store that
/// serves an endless chain.
pub const MAX_ROOT_STEPS: u64 = 1024;

/// Root metadata (the signed payload of `root/N.root.json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Root {
    /// Always `"root"`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Version, from 1, increasing by one per rotation.
    pub version: u64,
    /// When this root stops being trusted.
    pub expires: DateTime<Utc>,
    /// Public keys by key id.
    pub keys: BTreeMap<KeyId, KeyEntry>,
    /// The `root` and `release` roles.
    pub roles: Roles,
}

/// A public key in root metadata.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyEntry {
    /// Always `"ed25519"`.
    pub keytype: String,
    /// Raw 32-byte public key, lowercase hex.
    pub public: String,
}

/// The roles a root defines.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Roles {
    /// Signs root rotations.
    pub root: Role,
    /// Signs the compiled manifest.
    pub release: Role,
}

/// Which role.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RoleName {
    /// The root role.
    Root,
    /// The release role.
    Release,
}

impl std::fmt::Display for RoleName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RoleName::Root => "root",
            RoleName::Release => "release",
        })
    }
}

/// Key ids allowed to sign for a role, and how many must.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Role {
    /// Key ids.
    pub keyids: Vec<KeyId>,
    /// Number of distinct key ids that must sign.
    pub threshold: u32,
}

impl Role {
    /// The one threshold function: counts *distinct* key ids of this role
    /// among the valid signatures. Every role and every caller uses it.
    pub fn check(&self, label: &str, verification: &Verification) -> Result<()> {
        let role_keys: BTreeSet<&KeyId> = self.keyids.iter().collect();
        let valid = verification
            .valid
            .iter()
            .filter(|k| role_keys.contains(k))
            .count();
        if self.threshold >= 1 && valid >= self.threshold as usize {
            Ok(())
        } else {
            Err(Error::Threshold {
                role: label.to_owned(),
                valid,
                threshold: self.threshold,
                ignored: verification.ignored.clone(),
            })
        }
    }
}

/// Whether expiry is enforced. Only tools that inspect old metadata use
/// [`ExpirationEnforcement::Unsafe`]; agents always use `Safe`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExpirationEnforcement {
    /// Expired metadata is rejected.
    Safe,
    /// Expired metadata is accepted (inspection only; never for installing).
    Unsafe,
}

impl Root {
    /// A new root, not yet signed.
    pub fn new(
        version: u64,
        expires: DateTime<Utc>,
        root_keys: &[PublicKey],
        root_threshold: u32,
        release_keys: &[PublicKey],
        release_threshold: u32,
    ) -> Result<Self> {
        let mut keys = BTreeMap::new();
        for k in root_keys.iter().chain(release_keys) {
            keys.insert(
                k.key_id(),
                KeyEntry {
                    keytype: "ed25519".into(),
                    public: k.to_hex(),
                },
            );
        }
        let ids = |ks: &[PublicKey]| {
            let set: BTreeSet<KeyId> = ks.iter().map(|k| k.key_id()).collect();
            set.into_iter().collect()
        };
        let root = Root {
            kind: "root".into(),
            version,
            expires,
            keys,
            roles: Roles {
                root: Role {
                    keyids: ids(root_keys),
                    threshold: root_threshold,
                },
                release: Role {
                    keyids: ids(release_keys),
                    threshold: release_threshold,
                },
            },
        };
        root.validate()?;
        Ok(root)
    }

    /// Parses root JSON and checks its internal consistency.
    pub fn from_json(bytes: &[u8]) -> Result<Self> {
        let root: Root = serde_json::from_slice(bytes).map_err(|e| Error::InvalidRoot {
            version: 0,
            reason: e.to_string(),
        })?;
        root.validate()?;
        Ok(root)
    }

    /// The canonical JSON payload bytes that get signed.
    pub fn to_payload(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).expect("root serialises");
        v.push(b'\n');
        v
    }

    /// Checks key ids, key types, role membership and thresholds.
    pub fn validate(&self) -> Result<()> {
        let bad = |reason: String| Error::InvalidRoot {
            version: self.version,
            reason,
        };
        if self.kind != "root" {
            return Err(bad(format!("type is {:?}, expected \"root\"", self.kind)));
        }
        if self.version == 0 {
            return Err(bad("version starts at 1".into()));
        }
        for (id, entry) in &self.keys {
            if entry.keytype != "ed25519" {
                return Err(bad(format!(
                    "key {id}: keytype {:?} is not ed25519",
                    entry.keytype
                )));
            }
            let key =
                PublicKey::from_hex(&entry.public).map_err(|e| bad(format!("key {id}: {e}")))?;
            if &key.key_id() != id {
                return Err(bad(format!(
                    "key id {id} does not match its public key (expected {})",
                    key.key_id()
                )));
            }
        }
        for (name, role) in [("root", &self.roles.root), ("release", &self.roles.release)] {
            let distinct: BTreeSet<&KeyId> = role.keyids.iter().collect();
            if role.threshold == 0 {
                return Err(bad(format!("roles.{name}.threshold must be at least 1")));
            }
            if distinct.len() < role.threshold as usize {
                return Err(bad(format!(
                    "roles.{name}.threshold is {} but the role has only {} distinct key(s)",
                    role.threshold,
                    distinct.len()
                )));
            }
            if let Some(missing) = role.keyids.iter().find(|k| !self.keys.contains_key(*k)) {
                return Err(bad(format!(
                    "roles.{name} names key {missing}, which is not in keys"
                )));
            }
        }
        Ok(())
    }

    /// The role's definition.
    pub fn role(&self, name: RoleName) -> &Role {
        match name {
            RoleName::Root => &self.roles.root,
            RoleName::Release => &self.roles.release,
        }
    }

    /// All keys, parsed.
    pub fn public_keys(&self) -> BTreeMap<KeyId, PublicKey> {
        self.keys
            .iter()
            .filter_map(|(id, e)| PublicKey::from_hex(&e.public).ok().map(|k| (id.clone(), k)))
            .collect()
    }

    /// Verifies `envelope` for `role` of this root: payload type, then the
    /// role's threshold of distinct valid signatures.
    pub fn verify_role(
        &self,
        role: RoleName,
        envelope: &Envelope,
        payload_type: &str,
    ) -> Result<Verification> {
        let v = envelope.verify(payload_type, &self.public_keys())?;
        self.role(role)
            .check(&format!("{role} (root v{})", self.version), &v)?;
        Ok(v)
    }
}

/// A root that has been verified, and the walk to newer ones.
#[derive(Clone, Debug)]
pub struct TrustedRoot {
    root: Root,
}

impl TrustedRoot {
    /// Trusts a shipped root envelope: it must carry a threshold of its own
    /// root keys (which catches a corrupted or hand-edited file).
    pub fn from_anchor(envelope: &Envelope) -> Result<Self> {
        let payload = envelope.payload_bytes()?;
        let root = Root::from_json(&payload)?;
        root.verify_role(RoleName::Root, envelope, ROOT_PAYLOAD_TYPE)?;
        Ok(TrustedRoot { root })
    }

    /// The current trusted root.
    pub fn root(&self) -> &Root {
        &self.root
    }

    /// The current trusted version.
    pub fn version(&self) -> u64 {
        self.root.version
    }

    /// Steps to the next root: exactly version + 1, signed by a threshold of
    /// the current root keys and a threshold of its own root keys.
    pub fn update(&mut self, next: &Envelope) -> Result<()> {
        let payload = next.payload_bytes()?;
        let new = Root::from_json(&payload)?;
        if new.version != self.root.version + 1 {
            return Err(Error::RootVersion {
                trusted: self.root.version,
                found: new.version,
            });
        }
        self.root
            .verify_role(RoleName::Root, next, ROOT_PAYLOAD_TYPE)
            .map_err(|e| {
                relabel(
                    e,
                    &format!(
                        "root v{} signed by trusted root v{}",
                        new.version, self.root.version
                    ),
                )
            })?;
        new.verify_role(RoleName::Root, next, ROOT_PAYLOAD_TYPE)
            .map_err(|e| {
                relabel(
                    e,
                    &format!("root v{} signed by its own root keys", new.version),
                )
            })?;
        self.root = new;
        Ok(())
    }

    /// Walks `fetch(n)` for n = version + 1, version + 2, … until it returns
    /// `None`, applying [`TrustedRoot::update`] to each. Returns how many
    /// steps were taken. Expiry is not checked here; call
    /// [`TrustedRoot::check_expiry`] afterwards.
    pub fn walk<E>(
        &mut self,
        mut fetch: impl FnMut(u64) -> std::result::Result<Option<Envelope>, E>,
    ) -> std::result::Result<u64, WalkError<E>> {
        let mut steps = 0;
        while steps < MAX_ROOT_STEPS {
            let next = self.root.version + 1;
            match fetch(next).map_err(WalkError::Fetch)? {
                None => return Ok(steps),
                Some(env) => self.update(&env).map_err(WalkError::Verify)?,
            }
            steps += 1;
        }
        Ok(steps)
    }

    /// Fails if the current root has expired at `now` (unless `Unsafe`).
    pub fn check_expiry(
        &self,
        now: DateTime<Utc>,
        enforcement: ExpirationEnforcement,
    ) -> Result<()> {
        if enforcement == ExpirationEnforcement::Safe && self.root.expires <= now {
            return Err(Error::Expired {
                version: self.root.version,
                expires: self.root.expires,
            });
        }
        Ok(())
    }

    /// Verifies release metadata (the manifest) with the release role.
    pub fn verify_release(&self, envelope: &Envelope, payload_type: &str) -> Result<Verification> {
        self.root
            .verify_role(RoleName::Release, envelope, payload_type)
    }
}

/// An error from [`TrustedRoot::walk`]: fetching failed, or a root did not verify.
#[derive(Debug, thiserror::Error)]
pub enum WalkError<E> {
    /// The fetch callback failed.
    #[error("fetching the next root failed: {0}")]
    Fetch(E),
    /// A fetched root was rejected.
    #[error(transparent)]
    Verify(Error),
}

fn relabel(e: Error, role: &str) -> Error {
    match e {
        Error::Threshold {
            valid,
            threshold,
            ignored,
            ..
        } => Error::Threshold {
            role: role.to_owned(),
            valid,
            threshold,
            ignored,
        },
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PrivateKey;
    use chrono::Duration;

    fn keys(n: usize) -> Vec<PrivateKey> {
        (0..n).map(|_| PrivateKey::generate()).collect()
    }
    fn pubs(ks: &[PrivateKey]) -> Vec<PublicKey> {
        ks.iter().map(|k| k.public_key()).collect()
    }
    fn signed(root: &Root, signers: &[&PrivateKey]) -> Envelope {
        let mut env = Envelope::new(ROOT_PAYLOAD_TYPE, &root.to_payload());
        for k in signers {
            env.sign(k).unwrap();
        }
        env
    }

    #[test]
    fn validate_rejects_bad_thresholds_and_ids() {
        let rk = keys(2);
        let exp = Utc::now() + Duration::days(1);
        assert!(Root::new(1, exp, &pubs(&rk), 3, &pubs(&rk), 1).is_err());
        assert!(Root::new(1, exp, &pubs(&rk), 0, &pubs(&rk), 1).is_err());
        let mut r = Root::new(1, exp, &pubs(&rk), 2, &pubs(&rk), 1).unwrap();
        let (id, entry) = r.keys.pop_first().unwrap();
        r.keys.insert(KeyId::from_string("00".repeat(32)), entry);
        let err = r.validate().unwrap_err().to_string();
        assert!(
            err.contains("does not match") || err.contains(id.as_str()),
            "{err}"
        );
    }

    #[test]
    fn anchor_needs_own_threshold() {
        let rk = keys(2);
        let exp = Utc::now() + Duration::days(1);
        let r = Root::new(1, exp, &pubs(&rk), 2, &pubs(&rk), 1).unwrap();
        assert!(TrustedRoot::from_anchor(&signed(&r, &[&rk[0]])).is_err());
        assert!(TrustedRoot::from_anchor(&signed(&r, &[&rk[0], &rk[1]])).is_ok());
    }

    #[test]
    fn walk_stops_at_missing_and_rejects_skips() {
        let k1 = keys(1);
        let k2 = keys(1);
        let exp = Utc::now() + Duration::days(1);
        let r1 = Root::new(1, exp, &pubs(&k1), 1, &pubs(&k1), 1).unwrap();
        let r2 = Root::new(2, exp, &pubs(&k2), 1, &pubs(&k2), 1).unwrap();
        let r3 = Root::new(3, exp, &pubs(&k2), 1, &pubs(&k2), 1).unwrap();
        let mut t = TrustedRoot::from_anchor(&signed(&r1, &[&k1[0]])).unwrap();
        // a skip 1 -> 3 is refused
        let err = t.update(&signed(&r3, &[&k1[0], &k2[0]])).unwrap_err();
        assert!(matches!(
            err,
            Error::RootVersion {
                trusted: 1,
                found: 3
            }
        ));
        let chain = [signed(&r2, &[&k1[0], &k2[0]]), signed(&r3, &[&k2[0]])];
        let steps = t
            .walk(|n| Ok::<_, ()>(chain.get(n as usize - 2).cloned()))
            .unwrap();
        assert_eq!(steps, 2);
        assert_eq!(t.version(), 3);
        // going back to 2 is refused
        assert!(matches!(
            t.update(&chain[0]),
            Err(Error::RootVersion { .. })
        ));
    }
}
