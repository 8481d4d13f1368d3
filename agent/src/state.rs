//! What the agent remembers between passes, in `state_dir`.
//!
//! ```text
//! state_dir/
//!   lock                 flock'ed by a pass (see crate::lock)
//!   agent_id             the generated agent id, when the config sets none (text, one line)
//!   state.json           State below (JSON; unknown keys are kept on rewrite)
//!   checked.json         when the newest pass that changed nothing else checked
//!                        the manifest (see StateDir::save_pass)
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
//! (temp + fsync + rename + fsync of the directory), except `checked.json`:
//! it only carries the times of passes that found nothing new, which may be
//! lost in a crash without harm, so an idle pass costs no fsync.

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
    /// What failed (older state files: unknown).
    #[serde(default)]
    pub cause: BlockCause,
    /// When.
    pub at: DateTime<Utc>,
}

/// What made a release fail on this host.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BlockCause {
    /// Its health check failed.
    HealthCheck,
    /// A migration of its config or state failed.
    Migration,
    /// The new binary failed its self-test before the swap.
    SelfTest,
    /// It did not start (the rollback service ran).
    Start,
    /// Not recorded (an interrupted rollback, an older agent).
    #[default]
    Unknown,
}

impl Blocked {
    /// Why the release is not installed again, naming what failed.
    pub fn deferral(&self) -> String {
        let what = match self.cause {
            BlockCause::HealthCheck => "failed its health check here and was rolled back",
            BlockCause::Migration => "failed a migration here and was rolled back",
            BlockCause::SelfTest => "failed its self-test here",
            BlockCause::Start => "failed to start here and was rolled back",
            BlockCause::Unknown => "was rolled back here",
        };
        format!(
            "this release {what} ({}); waiting for a manifest that names another",
            self.reason
        )
    }
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

/// Overwrites `path` from its start with `json`, padded with spaces to at
/// least [`CHECKED_SIZE`] and to the file's length, so the file is never
/// truncated nor renamed over: on ext4 either of those makes the kernel
/// flush the file at once (`auto_da_alloc`), which cost an idle pass about
/// 7 ms. A torn write leaves JSON that does not parse, which
/// [`StateDir::load`] ignores.
fn write_in_place(path: &Path, json: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::{FileExt, OpenOptionsExt};
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)?;
    let len = f.metadata()?.len() as usize;
    let mut bytes = json.to_vec();
    bytes.resize((json.len() + 1).max(CHECKED_SIZE).max(len), b' ');
    if let Some(last) = bytes.last_mut() {
        *last = b'\n';
    }
    f.write_all_at(&bytes, 0)
}

/// `checked.json` is at least this long (one disk sector: written whole).
const CHECKED_SIZE: usize = 512;

/// `checked.json`: when a pass that changed nothing else last checked, and
/// the decision it confirmed.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Checked {
    last_check: DateTime<Utc>,
    /// The summary of the decision whose time `decision_at` refreshes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    decision: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    decision_at: Option<DateTime<Utc>>,
}

impl Checked {
    /// The times to record if `state` differs from `loaded` in them alone.
    fn only_change(loaded: &State, state: &State) -> Option<Checked> {
        let last_check = state.last_check?;
        let mut same = loaded.clone();
        same.last_check = state.last_check;
        if let (Some(d), Some(n)) = (&mut same.last_decision, &state.last_decision) {
            d.at = n.at;
        }
        if same != *state || loaded == state {
            return None;
        }
        Some(Checked {
            last_check,
            decision: state.last_decision.as_ref().map(|d| d.summary.clone()),
            decision_at: state.last_decision.as_ref().map(|d| d.at),
        })
    }

    /// Brings `state` (from `state.json`) up to these times where they are
    /// newer and, for the decision, about the same decision.
    fn apply(self, state: &mut State) {
        if state.last_check.is_none_or(|t| t < self.last_check) {
            state.last_check = Some(self.last_check);
        }
        if let (Some(d), Some(summary), Some(at)) =
            (&mut state.last_decision, self.decision, self.decision_at)
        {
            if d.summary == summary && d.at < at {
                d.at = at;
            }
        }
    }
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
    /// `checked.json`.
    pub fn checked_file(&self) -> PathBuf {
        self.root.join("checked.json")
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

    /// Reads `state.json` (a missing file is an empty state), with the
    /// times of later idle passes from `checked.json`.
    pub fn load(&self) -> Result<State> {
        let path = self.state_file();
        let mut state = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| Error::State {
                path,
                reason: e.to_string(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => State::default(),
            Err(e) => return Err(Error::io(path, e)),
        };
        // Unreadable or torn (it is written without fsync): ignored.
        let checked = std::fs::read(self.checked_file())
            .ok()
            .and_then(|b| serde_json::from_slice::<Checked>(&b).ok());
        if let Some(c) = checked {
            c.apply(&mut state);
        }
        Ok(state)
    }

    /// Saves the state at the end of a pass that started from `loaded`. A
    /// pass that changed nothing but when it checked (the idle pass: the
    /// manifest answered 304, nothing to do) writes only `checked.json`,
    /// without fsync: losing it in a crash loses a timestamp, never a
    /// serial, a pending update or a decision. Anything else is saved to
    /// `state.json` durably.
    pub fn save_pass(&self, loaded: &State, state: &State) -> Result<()> {
        match Checked::only_change(loaded, state) {
            Some(c) => {
                let path = self.checked_file();
                write_in_place(&path, &serde_json::to_vec(&c).expect("checked serialises"))
                    .map_err(|e| Error::io(path, e))
            }
            None if loaded == state => Ok(()),
            None => self.save(state),
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
    fn an_idle_pass_writes_only_checked_json() {
        let dir = tempfile::tempdir().unwrap();
        let sd = StateDir::new(dir.path());
        let t = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        let decision = |summary: &str, at| DecisionRecord {
            summary: summary.into(),
            target: Some("1.0.0".into()),
            wave: None,
            eligible_at: None,
            at,
        };
        let mut s = State {
            highest_serial: Some(3),
            last_check: Some(t("2026-01-01T00:00:00Z")),
            last_decision: Some(decision("up to date (1.0.0)", t("2026-01-01T00:00:00Z"))),
            ..State::default()
        };
        sd.save(&s).unwrap();
        let durable = std::fs::read(sd.state_file()).unwrap();
        let loaded = sd.load().unwrap();
        assert_eq!(loaded, s);
        // Only the times change: state.json stays as it was.
        s.last_check = Some(t("2026-01-01T00:15:00Z"));
        s.last_decision.as_mut().unwrap().at = t("2026-01-01T00:15:00Z");
        sd.save_pass(&loaded, &s).unwrap();
        assert_eq!(std::fs::read(sd.state_file()).unwrap(), durable);
        assert_eq!(sd.load().unwrap(), s);
        // Anything else goes to state.json.
        let loaded = sd.load().unwrap();
        s.last_check = Some(t("2026-01-01T00:30:00Z"));
        s.last_decision = Some(decision("update deferred", t("2026-01-01T00:30:00Z")));
        sd.save_pass(&loaded, &s).unwrap();
        assert_ne!(std::fs::read(sd.state_file()).unwrap(), durable);
        assert_eq!(sd.load().unwrap(), s);
        // An older or torn checked.json never overrides state.json.
        assert_eq!(std::fs::metadata(sd.checked_file()).unwrap().len(), 512);
        std::fs::write(sd.checked_file(), b"{\"last_ch").unwrap();
        assert_eq!(sd.load().unwrap(), s);
        std::fs::write(
            sd.checked_file(),
            br#"{"last_check":"2026-01-01T00:20:00Z","decision":"up to date (1.0.0)","decision_at":"2026-01-01T00:20:00Z"}"#,
        )
        .unwrap();
        assert_eq!(sd.load().unwrap(), s);
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
