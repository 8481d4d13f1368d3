//! `flotilla-agent self-test`: what a new binary must pass before it is
//! swapped in. It prints one JSON line (`SelfTestReport`, in `versions`) that the
//! installing (old) agent reads: the version must be exactly the one the
//! manifest names.
//!
//! Checks: the version is a semantic version; SHA-256 and Ed25519 work (known
//! vector, sign + verify); the host's config parses with this binary (so a
//! version that cannot read the host's config never goes live).

use std::path::Path;

use flotilla_signing::{Envelope, PrivateKey};

use crate::config::Config;
use crate::version::{TARGET, VERSION};
use crate::versions::SelfTestReport;

/// Runs the checks.
pub fn run(config_path: Option<&Path>) -> SelfTestReport {
    let mut problems = Vec::new();
    if semver::Version::parse(VERSION).is_err() {
        problems.push(format!("version {VERSION:?} is not a semantic version"));
    }
    let abc = flotilla_signing::hash_reader(&b"abc"[..]).map(|s| s.sha256);
    if abc.as_deref().ok()
        != Some("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
    {
        problems.push("SHA-256 gives a wrong digest for a known vector".into());
    }
    let key = PrivateKey::generate();
    let mut env = Envelope::new("application/vnd.flotilla.self-test", b"self-test");
    let mut keys = std::collections::BTreeMap::new();
    keys.insert(key.key_id(), key.public_key());
    let signed = env
        .sign(&key)
        .and_then(|()| env.verify("application/vnd.flotilla.self-test", &keys));
    if !signed.is_ok_and(|v| v.valid.len() == 1) {
        problems.push("Ed25519 sign + verify failed".into());
    }
    if let Some(p) = config_path {
        if p.exists() {
            if let Err(e) = Config::load(p) {
                problems.push(format!("config: {e}"));
            }
        }
    }
    SelfTestReport {
        version: VERSION.into(),
        target: TARGET.into(),
        ok: problems.is_empty(),
        problems,
    }
}
