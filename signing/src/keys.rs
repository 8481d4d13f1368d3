//! Ed25519 keys.
//!
//! Private keys are PKCS#8 PEM files written with mode 0600 and refused when
//! group or others can read them; public keys are SPKI PEM. Keys made by
//! `openssl genpkey -algorithm ed25519` load as they are. A key's id is the
//! lowercase hex SHA-256 of its raw 32-byte public key.

use std::fmt;
use std::path::Path;

use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::{fs, Error, Result};

/// Lowercase hex SHA-256 of a raw Ed25519 public key.
#[derive(
    Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct KeyId(String);

impl KeyId {
    /// The key id of raw public key bytes.
    pub fn of_raw(raw: &[u8; 32]) -> Self {
        KeyId(hex::encode(Sha256::digest(raw)))
    }

    /// Wraps a key id string as found in metadata (not checked).
    pub fn from_string(s: impl Into<String>) -> Self {
        KeyId(s.into())
    }

    /// The hex string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first 12 hex digits, for messages.
    pub fn short(&self) -> &str {
        &self.0[..self.0.len().min(12)]
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An Ed25519 private key. Its `Debug` output never shows the secret.
pub struct PrivateKey {
    inner: SigningKey,
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrivateKey")
            .field("key_id", &self.key_id())
            .finish_non_exhaustive()
    }
}

impl PrivateKey {
    /// A new key from the operating system's random source.
    pub fn generate() -> Self {
        PrivateKey {
            inner: SigningKey::generate(&mut rand_core::OsRng),
        }
    }

    /// Parses a PKCS#8 PEM private key (`-----BEGIN PRIVATE KEY-----`).
    /// Blank lines and spaces around the PEM block are ignored (keys pasted
    /// into CI secrets often gain a trailing newline).
    pub fn from_pkcs8_pem(pem: &str) -> std::result::Result<Self, String> {
        SigningKey::from_pkcs8_pem(&trim_pem(pem))
            .map(|inner| PrivateKey { inner })
            .map_err(|e| e.to_string())
    }

    /// The PKCS#8 PEM encoding.
    pub fn to_pkcs8_pem(&self) -> String {
        self.inner
            .to_pkcs8_pem(LineEnding::LF)
            .expect("encoding an Ed25519 key cannot fail")
            .to_string()
    }

    /// Loads a private key file, refusing one that group or others may
    /// read, and saying so first when it is a public key (`NAME.pub.pem`
    /// given where `NAME.pem` was meant: its mode is not the problem).
    pub fn load(path: &Path) -> Result<Self> {
        let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
        let pem = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        if pem.trim_start().starts_with("-----BEGIN PUBLIC KEY-----") {
            let private = match path.to_string_lossy().strip_suffix(".pub.pem") {
                Some(stem) => format!("{stem}.pem"),
                None => "the .pem beside it, without .pub".into(),
            };
            return Err(Error::PrivateKey {
                path: path.to_owned(),
                reason: format!("it is a public key; sign with the private key ({private})"),
            });
        }
        if let Some(mode) = crate::fs::loose_mode(&meta) {
            return Err(Error::LoosePermissions {
                path: path.to_owned(),
                mode,
            });
        }
        Self::from_pkcs8_pem(&pem).map_err(|reason| Error::PrivateKey {
            path: path.to_owned(),
            reason,
        })
    }

    /// Writes the key to a new file with mode 0600; never overwrites.
    pub fn save(&self, path: &Path) -> Result<()> {
        fs::write_new(path, self.to_pkcs8_pem().as_bytes(), 0o600).map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                Error::AlreadyExists {
                    path: path.to_owned(),
                }
            } else {
                Error::io(path, e)
            }
        })
    }

    /// The matching public key.
    pub fn public_key(&self) -> PublicKey {
        PublicKey {
            inner: self.inner.verifying_key(),
        }
    }

    /// The key id of the public key.
    pub fn key_id(&self) -> KeyId {
        self.public_key().key_id()
    }

    /// Signs `message`; returns the 64-byte signature.
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.inner.sign(message).to_bytes()
    }
}

/// The PEM block with surrounding whitespace removed and one final newline;
/// CRLF line ends become LF.
fn trim_pem(pem: &str) -> String {
    let mut s = pem.trim().replace("\r\n", "\n");
    s.push('\n');
    s
}

/// An Ed25519 public key.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    inner: VerifyingKey,
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.key_id())
    }
}

impl PublicKey {
    /// Parses an SPKI PEM public key (`-----BEGIN PUBLIC KEY-----`).
    /// Surrounding whitespace is ignored, as for private keys.
    pub fn from_spki_pem(pem: &str) -> std::result::Result<Self, String> {
        VerifyingKey::from_public_key_pem(&trim_pem(pem))
            .map(|inner| PublicKey { inner })
            .map_err(|e| e.to_string())
    }

    /// The SPKI PEM encoding.
    pub fn to_spki_pem(&self) -> String {
        self.inner
            .to_public_key_pem(LineEnding::LF)
            .expect("encoding an Ed25519 key cannot fail")
    }

    /// Loads a public key file. A private key file is accepted too (its public half is used).
    pub fn load(path: &Path) -> Result<Self> {
        let pem = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        if pem.contains("PRIVATE KEY") {
            return PrivateKey::load(path).map(|k| k.public_key());
        }
        Self::from_spki_pem(&pem).map_err(|reason| Error::PublicKey {
            what: path.display().to_string(),
            reason,
        })
    }

    /// Writes the key as SPKI PEM (mode 0644), replacing an existing file.
    pub fn save(&self, path: &Path) -> Result<()> {
        fs::write_atomic(path, self.to_spki_pem().as_bytes(), 0o644).map_err(|e| Error::io(path, e))
    }

    /// Parses the raw 32-byte key from hex, as stored in root metadata.
    pub fn from_hex(hex_str: &str) -> std::result::Result<Self, String> {
        let bytes = hex::decode(hex_str).map_err(|e| format!("not hex: {e}"))?;
        let raw: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| format!("expected 32 bytes, found {}", bytes.len()))?;
        VerifyingKey::from_bytes(&raw)
            .map(|inner| PublicKey { inner })
            .map_err(|e| e.to_string())
    }

    /// The raw key as lowercase hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.inner.as_bytes())
    }

    /// The key id.
    pub fn key_id(&self) -> KeyId {
        KeyId::of_raw(self.inner.as_bytes())
    }

    /// Verifies a signature strictly (no malleable or small-order encodings).
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        let Ok(sig) = ed25519_dalek::Signature::from_slice(signature) else {
            return false;
        };
        self.inner.verify_strict(message, &sig).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn pem_round_trip_and_key_id() {
        let k = PrivateKey::generate();
        let k2 = PrivateKey::from_pkcs8_pem(&k.to_pkcs8_pem()).unwrap();
        assert_eq!(k.key_id(), k2.key_id());
        let p = PublicKey::from_spki_pem(&k.public_key().to_spki_pem()).unwrap();
        assert_eq!(p, k.public_key());
        assert_eq!(p.key_id().as_str().len(), 64);
        assert_eq!(PublicKey::from_hex(&p.to_hex()).unwrap(), p);
        let sig = k.sign(b"msg");
        assert!(p.verify(b"msg", &sig));
        assert!(!p.verify(b"msh", &sig));
        assert!(!p.verify(b"msg", &sig[..63]));
    }

    #[test]
    fn pem_with_surrounding_whitespace_loads() {
        let k = PrivateKey::generate();
        let padded = format!("\n{}\n\n", k.to_pkcs8_pem());
        assert_eq!(
            PrivateKey::from_pkcs8_pem(&padded).unwrap().key_id(),
            k.key_id()
        );
        let crlf = k.to_pkcs8_pem().replace('\n', "\r\n");
        assert_eq!(
            PrivateKey::from_pkcs8_pem(&crlf).unwrap().key_id(),
            k.key_id()
        );
        let p = format!("{}\n\n", k.public_key().to_spki_pem());
        assert_eq!(PublicKey::from_spki_pem(&p).unwrap(), k.public_key());
    }

    #[test]
    fn save_is_0600_and_load_refuses_loose_permissions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("release.pem");
        let k = PrivateKey::generate();
        k.save(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(PrivateKey::load(&path).unwrap().key_id(), k.key_id());
        assert!(matches!(k.save(&path), Err(Error::AlreadyExists { .. })));

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = PrivateKey::load(&path).unwrap_err();
        assert!(matches!(err, Error::LoosePermissions { mode: 0o644, .. }));
        let msg = err.to_string();
        assert!(msg.contains("release.pem"), "{msg}");
        assert!(msg.contains("chmod 600"), "{msg}");
    }

    #[test]
    fn garbage_key_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.pem");
        crate::fs::write_atomic(
            &path,
            b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
            0o600,
        )
        .unwrap();
        let err = PrivateKey::load(&path).unwrap_err().to_string();
        assert!(err.contains("bad.pem"), "{err}");
    }

    #[test]
    fn loads_openssl_generated_keys() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("k.pem");
        let pubkey = dir.path().join("k.pub.pem");
        let ok = std::process::Command::new("openssl")
            .args(["genpkey", "-algorithm", "ed25519", "-out"])
            .arg(&key)
            .status();
        let Ok(status) = ok else {
            panic!("openssl is required for this test");
        };
        assert!(status.success());
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(std::process::Command::new("openssl")
            .args(["pkey", "-pubout", "-in"])
            .arg(&key)
            .arg("-out")
            .arg(&pubkey)
            .status()
            .unwrap()
            .success());
        let k = PrivateKey::load(&key).unwrap();
        let p = PublicKey::load(&pubkey).unwrap();
        assert_eq!(k.public_key(), p);
        // openssl agrees with our signature
        let msg = dir.path().join("msg");
        std::fs::write(&msg, b"hello").unwrap();
        let sig = dir.path().join("sig");
        std::fs::write(&sig, k.sign(b"hello")).unwrap();
        let out = std::process::Command::new("openssl")
            .args(["pkeyutl", "-verify", "-rawin", "-pubin", "-inkey"])
            .arg(&pubkey)
            .arg("-in")
            .arg(&msg)
            .arg("-sigfile")
            .arg(&sig)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}
