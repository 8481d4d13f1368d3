//! `state_dir/migrations.json`: what ran, what is running, what failed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::error::{Error, Result};

/// File name under the state dir.
pub const FILE: &str = "migrations.json";

/// A completed migration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Completed {
    /// When.
    pub at: DateTime<Utc>,
    /// By which agent version.
    pub by_version: String,
}

/// A run that has started and not finished (a crash leaves it set).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InProgress {
    /// Its backup, relative to the state dir.
    pub backup: PathBuf,
    /// Version before.
    pub from_version: Option<String>,
    /// Version running the migrations.
    pub to_version: String,
    /// When it started.
    pub started: DateTime<Utc>,
    /// Ids completed so far in this run.
    pub completed: Vec<String>,
}

/// The last finished run, kept so a rollback of its version can restore it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastRun {
    /// Its backup, relative to the state dir.
    pub backup: PathBuf,
    /// Version that ran it.
    pub to_version: String,
    /// Ids it completed.
    pub completed: Vec<String>,
    /// False when the run failed and restoring its backup failed too: the
    /// host is half-migrated, and a rollback of `to_version` must try the
    /// restore again.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub restored: bool,
    /// Why the restore failed (error chain, outermost first).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub restore_error: Vec<String>,
}

fn yes() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

impl From<&InProgress> for LastRun {
    fn from(ip: &InProgress) -> Self {
        LastRun {
            backup: ip.backup.clone(),
            to_version: ip.to_version.clone(),
            completed: ip.completed.clone(),
            restored: true,
            restore_error: Vec::new(),
        }
    }
}

/// The whole file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigrationState {
    /// Completed migrations by id; they never run again.
    #[serde(default)]
    pub completed: BTreeMap<String, Completed>,
    /// Failed runs per agent version.
    #[serde(default)]
    pub attempts: BTreeMap<String, u32>,
    /// Versions whose exhausted retries were already reported.
    #[serde(default)]
    pub exhausted_reported: Vec<String>,
    /// A run that has not finished.
    #[serde(default)]
    pub in_progress: Option<InProgress>,
    /// The last finished run.
    #[serde(default)]
    pub last_run: Option<LastRun>,
}

impl MigrationState {
    /// Loads the state; a missing file is an empty state.
    pub fn load(state_dir: &Path) -> Result<Self> {
        let path = state_dir.join(FILE);
        match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|source| Error::State { path, source }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(Error::io("reading", &path)(e)),
        }
    }

    /// Saves atomically.
    pub fn save(&self, state_dir: &Path) -> Result<()> {
        let path = state_dir.join(FILE);
        std::fs::create_dir_all(state_dir).map_err(Error::io("creating", state_dir))?;
        let bytes = serde_json::to_vec_pretty(self).expect("the migration state serialises");
        flotilla_signing::fs::write_atomic(&path, &bytes, 0o600)
            .map_err(Error::io("writing", &path))
    }
}
