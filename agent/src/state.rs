//! What the agent remembers between passes, in `state_dir`.
//!
//! ```text
//! state_dir/
//!   lock                 flock'ed by a pass (see crate::lock)
//!   agent_id             the generated agent id, when the config sets none (text, one line)
//!   state.json           State below (JSON; unknown keys are kept on rewrite)
//!   root.json            the newest trusted root envelope (as fetched, DSSE JSON)
//!   manifest.json        the last accepted manifest envelope (as fetched)
//!   http-cache.json      ETag / Last-Modified of manifest.json (HTTP source)
//!   fleet.git/           bare mirror of the fleet repo (git source; fetch only)
//!   downloads/           <sha256>.partial while downloading, <sha256> once verified
//!   spool/               the event spool (crate::spool)
//!   agent.token          the reporter's agent token (written by event delivery)
//! ```
//!
//! Every file is written with [`flotilla_signing::fs::write_atomic`]
//! (temp + fsync + rename + fsync of the directory).

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// `state.json`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// Highest manifest serial this host has accepted (replay protection).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub highest_serial: Option<u64>,
    /// SHA-256 of the manifest payload accepted at `highest_serial`: the same
    /// serial with other content is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub highest_digest: Option<String>,
    /// Version of the newest trusted root (mirrors root.json, for status).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_version: Option<u64>,
    /// When a manifest was last fetched and verified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_check: Option<DateTime<Utc>>,
    /// The git commit the last accepted manifest came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_commit: Option<String>,
    /// The newest error of a pass, cleared by a clean pass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// The version that last emitted `agent_startup`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_version: Option<String>,
    /// The version committed on this host (passed its health check, or the
    /// first version that ran).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub committed: Option<String>,
    /// An update that is installed but not yet committed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<Pending>,
    /// A release that failed its health check here and was rolled back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocked: Option<Blocked>,
    /// The newest decision, for `status`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_decision: Option<DecisionRecord>,
    /// Keys written by other versions of the agent, kept as they are.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// Where an update stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Recorded before `current` is swapped to the new version.
    Swapping,
    /// Recorded before `current` is swapped back to the old version.
    RollingBack,
}

/// An installed, not yet committed update.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    /// The version it replaces (what a rollback restores).
    pub from: String,
    /// The new version.
    pub to: String,
    /// Failed health checks left before a rollback.
    pub attempts_left: u32,
    /// Serial of the manifest that named it.
    pub serial: u64,
    /// When it was installed.
    pub installed_at: DateTime<Utc>,
    /// Where the update stands.
    pub phase: Phase,
    /// The channel and wave it was installed for (for events).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wave: Option<String>,
}

/// A release this host will not install again until a manifest with a
/// newer serial names a different release.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Blocked {
    /// The release.
    pub version: String,
    /// The serial of the manifest it was installed from.
    pub serial: u64,
    /// Why it was rolled back.
    pub reason: String,
    /// When.
    pub at: DateTime<Utc>,
}

/// The newest decision, as `status` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecisionRecord {
    /// What was decided, in words.
    pub summary: String,
    /// The release the agent is heading for, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// The agent's wave in the rollout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wave: Option<String>,
    /// When the agent's turn comes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eligible_at: Option<DateTime<Utc>>,
    /// When it was decided.
    pub at: DateTime<Utc>,
}

/// Paths inside the state dir.
#[derive(Clone, Debug)]
pub struct StateDir {
    root: PathBuf,
}

impl StateDir {
    /// The state dir at `root`.
    pub fn new(root: &Path) -> Self {
        StateDir {
            root: root.to_owned(),
        }
    }
    /// The directory.
    pub fn root(&self) -> &Path {
        &self.root
    }
    /// Creates it (mode 0700) if missing.
    pub fn create(&self) -> Result<()> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.root)
            .map_err(|e| Error::io(&self.root, e))
    }
    /// `state.json`.
    pub fn state_file(&self) -> PathBuf {
        self.root.join("state.json")
    }
    /// `root.json`.
    pub fn root_file(&self) -> PathBuf {
        self.root.join("root.json")
    }
    /// `manifest.json`.
    pub fn manifest_file(&self) -> PathBuf {
        self.root.join("manifest.json")
    }
    /// `http-cache.json`.
    pub fn http_cache_file(&self) -> PathBuf {
        self.root.join("http-cache.json")
    }
    /// `agent_id`.
    pub fn agent_id_file(&self) -> PathBuf {
        self.root.join("agent_id")
    }
    /// `agent.token`.
    pub fn agent_token_file(&self) -> PathBuf {
        self.root.join("agent.token")
    }
    /// `fleet.git`.
    pub fn git_dir(&self) -> PathBuf {
        self.root.join("fleet.git")
    }
    /// `downloads/`.
    pub fn downloads(&self) -> PathBuf {
        self.root.join("downloads")
    }
    /// `lock`.
    pub fn lock_file(&self) -> PathBuf {
        self.root.join("lock")
    }

    /// Reads `state.json` (a missing file is an empty state).
    pub fn load(&self) -> Result<State> {
        let path = self.state_file();
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| Error::State {
                path,
                reason: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
            Err(e) => Err(Error::io(path, e)),
        }
    }

    /// Writes `state.json` atomically.
    pub fn save(&self, state: &State) -> Result<()> {
        let path = self.state_file();
        let mut bytes = serde_json::to_vec_pretty(state).expect("state serialises");
        bytes.push(b'\n');
        flotilla_signing::fs::write_atomic(&path, &bytes, 0o600).map_err(|e| Error::io(path, e))
    }

    /// Writes a file in the state dir atomically.
    pub fn write(&self, path: &Path, bytes: &[u8]) -> Result<()> {
        flotilla_signing::fs::write_atomic(path, bytes, 0o600).map_err(|e| Error::io(path, e))
    }

    /// Reads an optional file.
    pub fn read_optional(&self, path: &Path) -> Result<Option<Vec<u8>>> {
        match std::fs::read(path) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(path, e)),
        }
    }

    /// The agent id the config names, or the one generated once and kept in
    /// `agent_id` (made now if `create`).
    pub fn agent_id(&self, configured: Option<&str>, create: bool) -> Result<Option<String>> {
        if let Some(id) = configured {
            return Ok(Some(id.to_owned()));
        }
        let path = self.agent_id_file();
        if let Some(b) = self.read_optional(&path)? {
            let id = String::from_utf8_lossy(&b).trim().to_owned();
            if !id.is_empty() {
                return Ok(Some(id));
            }
        }
        if !create {
            return Ok(None);
        }
        let id = uuid::Uuid::new_v4().to_string();
        self.write(&path, format!("{id}\n").as_bytes())?;
        Ok(Some(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_roundtrips_and_keeps_unknown_keys() {
        let dir = tempfile::tempdir().unwrap();
        let sd = StateDir::new(dir.path());
        assert_eq!(sd.load().unwrap(), State::default());
        std::fs::write(
            sd.state_file(),
            br#"{"highest_serial": 4, "future": {"x": 1}}"#,
        )
        .unwrap();
        let mut s = sd.load().unwrap();
        assert_eq!(s.highest_serial, Some(4));
        s.committed = Some("1.0.0".into());
        sd.save(&s).unwrap();
        let text = std::fs::read_to_string(sd.state_file()).unwrap();
        assert!(text.contains("future") && text.contains("1.0.0"), "{text}");
    }

    #[test]
    fn agent_id_is_made_once() {
        let dir = tempfile::tempdir().unwrap();
        let sd = StateDir::new(dir.path());
        assert_eq!(sd.agent_id(None, false).unwrap(), None);
        let a = sd.agent_id(None, true).unwrap().unwrap();
        assert_eq!(sd.agent_id(None, true).unwrap().unwrap(), a);
        assert_eq!(
            sd.agent_id(Some("web-01"), true).unwrap().unwrap(),
            "web-01"
        );
    }
}
