//! DSSE envelopes (the in-toto / sigstore signing format).
//!
//! The signature covers the pre-authentication encoding
//! `"DSSEv1" SP len(type) SP type SP len(payload) SP payload` of the exact
//! payload bytes, so nothing is re-serialised before verification: the bytes
//! a verifier parses are the bytes the signers saw.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::keys::{KeyId, PrivateKey, PublicKey};
use crate::{Error, Result};

/// A DSSE envelope: payload type, base64 payload and signatures.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Envelope {
    /// Media type of the payload, e.g. `application/vnd.flotilla.manifest+json`.
    pub payload_type: String,
    /// Standard base64 of the payload bytes.
    pub payload: String,
    /// One signature per signing key.
    pub signatures: Vec<Signature>,
}

/// One signature in an envelope.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signature {
    /// Key id of the signer (hex SHA-256 of the raw public key).
    pub keyid: String,
    /// Standard base64 of the 64-byte Ed25519 signature.
    pub sig: String,
}

/// Why a signature was not counted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IgnoreReason {
    /// The key id is not among the trusted keys.
    UnknownKey,
    /// The signature is not base64 or not 64 bytes.
    Malformed,
    /// The signature does not verify.
    BadSignature,
    /// The same key id signed more than once; only one counts.
    Duplicate,
}

/// A signature that did not count toward any threshold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IgnoredSignature {
    /// The key id as written in the envelope.
    pub keyid: String,
    /// Why it was ignored.
    pub reason: IgnoreReason,
}

impl fmt::Display for IgnoredSignature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let why = match self.reason {
            IgnoreReason::UnknownKey => "unknown key",
            IgnoreReason::Malformed => "malformed signature",
            IgnoreReason::BadSignature => "invalid signature",
            IgnoreReason::Duplicate => "duplicate signature by the same key",
        };
        let short = &self.keyid[..self.keyid.len().min(12)];
        write!(f, "{short}: {why}")
    }
}

/// The outcome of checking an envelope's signatures against a key set.
#[derive(Clone, Debug)]
pub struct Verification {
    /// The exact payload bytes that were signed.
    pub payload: Vec<u8>,
    /// Distinct key ids whose signatures verified.
    pub valid: BTreeSet<KeyId>,
    /// Signatures that were not counted, with the reason.
    pub ignored: Vec<IgnoredSignature>,
}

/// The DSSE pre-authentication encoding.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + payload_type.len() + 32);
    out.extend_from_slice(b"DSSEv1 ");
    out.extend_from_slice(payload_type.len().to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(payload_type.as_bytes());
    out.push(b' ');
    out.extend_from_slice(payload.len().to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(payload);
    out
}

impl Envelope {
    /// An unsigned envelope around `payload`.
    pub fn new(payload_type: &str, payload: &[u8]) -> Self {
        Envelope {
            payload_type: payload_type.to_owned(),
            payload: STANDARD.encode(payload),
            signatures: Vec::new(),
        }
    }

    /// Parses envelope JSON.
    pub fn from_json(bytes: &[u8]) -> Result<Self> {
        let env: Envelope =
            serde_json::from_slice(bytes).map_err(|e| Error::MalformedEnvelope {
                reason: e.to_string(),
            })?;
        env.payload_bytes()?;
        Ok(env)
    }

    /// Pretty JSON with a trailing newline, as written to `signed/` and `root/`.
    pub fn to_json_pretty(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).expect("envelope serialises");
        s.push('\n');
        s
    }

    /// The decoded payload bytes (not verified).
    pub fn payload_bytes(&self) -> Result<Vec<u8>> {
        STANDARD
            .decode(&self.payload)
            .map_err(|e| Error::MalformedEnvelope {
                reason: format!("payload is not standard base64: {e}"),
            })
    }

    /// Adds a signature by `key`. Refuses a key that already signed.
    pub fn sign(&mut self, key: &PrivateKey) -> Result<()> {
        let keyid = key.key_id();
        if self.signatures.iter().any(|s| s.keyid == keyid.as_str()) {
            return Err(Error::AlreadySigned {
                keyid: keyid.to_string(),
            });
        }
        let payload = self.payload_bytes()?;
        let sig = key.sign(&pae(&self.payload_type, &payload));
        self.signatures.push(Signature {
            keyid: keyid.to_string(),
            sig: STANDARD.encode(sig),
        });
        Ok(())
    }

    /// Checks the payload type and every signature against `keys`.
    ///
    /// Signatures by unknown keys, malformed ones and duplicates are not
    /// errors: they are listed in [`Verification::ignored`] and never count.
    /// Whether enough valid ones are present is the job of
    /// [`crate::Role::check`].
    pub fn verify(
        &self,
        expected_type: &str,
        keys: &BTreeMap<KeyId, PublicKey>,
    ) -> Result<Verification> {
        if self.payload_type != expected_type {
            return Err(Error::PayloadType {
                expected: expected_type.to_owned(),
                found: self.payload_type.clone(),
            });
        }
        let payload = self.payload_bytes()?;
        let message = pae(&self.payload_type, &payload);
        let mut valid = BTreeSet::new();
        let mut seen = BTreeSet::new();
        let mut ignored = Vec::new();
        for s in &self.signatures {
            let ignore = |reason| IgnoredSignature {
                keyid: s.keyid.clone(),
                reason,
            };
            let keyid = KeyId::from_string(s.keyid.clone());
            if !seen.insert(keyid.clone()) {
                ignored.push(ignore(IgnoreReason::Duplicate));
                continue;
            }
            let Some(key) = keys.get(&keyid) else {
                ignored.push(ignore(IgnoreReason::UnknownKey));
                continue;
            };
            let Ok(sig) = STANDARD.decode(&s.sig) else {
                ignored.push(ignore(IgnoreReason::Malformed));
                continue;
            };
            if sig.len() != 64 {
                ignored.push(ignore(IgnoreReason::Malformed));
            } else if key.verify(&message, &sig) {
                valid.insert(keyid);
            } else {
                ignored.push(ignore(IgnoreReason::BadSignature));
            }
        }
        Ok(Verification {
            payload,
            valid,
            ignored,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keyset(keys: &[&PrivateKey]) -> BTreeMap<KeyId, PublicKey> {
        keys.iter().map(|k| (k.key_id(), k.public_key())).collect()
    }

    #[test]
    fn pae_matches_spec_example() {
        // From the DSSE protocol document.
        assert_eq!(
            pae("http://example.com/HelloWorld", b"hello world"),
            b"DSSEv1 29 http://example.com/HelloWorld 11 hello world".to_vec()
        );
    }

    #[test]
    fn sign_verify_and_ignored_reasons() {
        let a = PrivateKey::generate();
        let b = PrivateKey::generate();
        let stranger = PrivateKey::generate();
        let mut env = Envelope::new("t", b"{\"x\":1}");
        env.sign(&a).unwrap();
        assert!(matches!(env.sign(&a), Err(Error::AlreadySigned { .. })));
        env.sign(&stranger).unwrap();
        env.signatures.push(env.signatures[0].clone()); // duplicate of a
        env.signatures.push(Signature {
            keyid: b.key_id().to_string(),
            sig: "!!notbase64".into(),
        });
        let v = env.verify("t", &keyset(&[&a, &b])).unwrap();
        assert_eq!(v.payload, b"{\"x\":1}");
        assert_eq!(v.valid.len(), 1);
        assert!(v.valid.contains(&a.key_id()));
        let reasons: Vec<_> = v.ignored.iter().map(|i| i.reason.clone()).collect();
        assert_eq!(
            reasons,
            vec![
                IgnoreReason::UnknownKey,
                IgnoreReason::Duplicate,
                IgnoreReason::Malformed
            ]
        );
    }

    #[test]
    fn tampered_payload_or_type_fails() {
        let a = PrivateKey::generate();
        let mut env = Envelope::new("t", b"one");
        env.sign(&a).unwrap();
        let mut tampered = env.clone();
        tampered.payload = STANDARD.encode(b"two");
        let v = tampered.verify("t", &keyset(&[&a])).unwrap();
        assert!(v.valid.is_empty());
        assert_eq!(v.ignored[0].reason, IgnoreReason::BadSignature);
        assert!(matches!(
            env.verify("other", &keyset(&[&a])),
            Err(Error::PayloadType { .. })
        ));
    }

    #[test]
    fn json_round_trip_and_garbage() {
        let a = PrivateKey::generate();
        let mut env = Envelope::new("t", b"p");
        env.sign(&a).unwrap();
        let back = Envelope::from_json(env.to_json_pretty().as_bytes()).unwrap();
        assert_eq!(back, env);
        assert!(Envelope::from_json(b"{not json").is_err());
        assert!(
            Envelope::from_json(br#"{"payloadType":"t","payload":"%%%","signatures":[]}"#).is_err()
        );
    }
}
