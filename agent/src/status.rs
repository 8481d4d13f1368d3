//! `flotilla-agent status`: what this host runs and where its rollout stands,
//! read from the state dir without taking the pass lock (read-only).

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::config::Config;
use crate::error::Result;
use crate::state::{Blocked, DecisionRecord, Pending, StateDir};
use crate::version::{TARGET, VERSION};
use crate::versions;

/// The status report (`status --json` prints it as JSON).
#[derive(Clone, Debug, Serialize)]
pub struct Status {
    /// The version of this binary.
    pub version: String,
    /// The target it was built for.
    pub target: String,
    /// The agent id (none until the first pass made one).
    pub agent_id: Option<String>,
    /// The configured channel.
    pub channel: String,
    /// The version `install_dir/current` points at.
    pub current: Option<String>,
    /// The committed version.
    pub committed: Option<String>,
    /// An update installed but not yet committed.
    pub pending: Option<Pending>,
    /// A release rolled back from and not retried.
    pub blocked: Option<Blocked>,
    /// The newest decision: target, wave and when the agent's turn comes.
    pub decision: Option<DecisionRecord>,
    /// Highest manifest serial accepted.
    pub manifest_serial: Option<u64>,
    /// Newest trusted root version.
    pub root_version: Option<u64>,
    /// When a manifest was last fetched and verified.
    pub last_check: Option<DateTime<Utc>>,
    /// The newest error.
    pub last_error: Option<String>,
    /// Events waiting in the spool for delivery.
    pub spooled_events: Option<usize>,
    /// The state dir.
    pub state_dir: PathBuf,
}

/// Reads the status.
pub fn status(config: &Config) -> Result<Status> {
    let sd = StateDir::new(&config.state_dir);
    let state = sd.load()?;
    let spooled_events = std::fs::read(sd.root().join("spool/events.jsonl"))
        .ok()
        .map(|b| b.iter().filter(|c| **c == b'\n').count());
    Ok(Status {
        version: VERSION.into(),
        target: TARGET.into(),
        agent_id: sd.agent_id(config.agent_id.as_deref(), false)?,
        channel: config.channel.clone(),
        current: versions::pointed(&config.install_dir, "current"),
        committed: state.committed,
        pending: state.pending,
        blocked: state.blocked,
        decision: state.last_decision,
        manifest_serial: state.highest_serial,
        root_version: state.root_version,
        last_check: state.last_check,
        last_error: state.last_error,
        spooled_events,
        state_dir: config.state_dir.clone(),
    })
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let or = |o: &Option<String>| o.clone().unwrap_or_else(|| "-".into());
        writeln!(f, "version:     {} ({})", self.version, self.target)?;
        writeln!(f, "agent id:    {}", or(&self.agent_id))?;
        writeln!(f, "channel:     {}", self.channel)?;
        writeln!(f, "current:     {}", or(&self.current))?;
        writeln!(f, "committed:   {}", or(&self.committed))?;
        match &self.pending {
            Some(p) => writeln!(
                f,
                "pending:     {} -> {} ({} health attempt(s) left)",
                p.from, p.to, p.attempts_left
            )?,
            None => writeln!(f, "pending:     -")?,
        }
        if let Some(b) = &self.blocked {
            writeln!(
                f,
                "blocked:     {} (serial {}): {}",
                b.version, b.serial, b.reason
            )?;
        }
        match &self.decision {
            Some(d) => {
                writeln!(f, "decision:    {}", d.summary)?;
                if let Some(w) = &d.wave {
                    write!(f, "wave:        {w}")?;
                    if let Some(at) = d.eligible_at {
                        write!(f, ", turn at {at}")?;
                    }
                    writeln!(f)?;
                }
            }
            None => writeln!(f, "decision:    -")?,
        }
        writeln!(
            f,
            "manifest:    serial {}, root v{}, checked {}",
            self.manifest_serial
                .map(|s| s.to_string())
                .unwrap_or_else(|| "-".into()),
            self.root_version
                .map(|s| s.to_string())
                .unwrap_or_else(|| "-".into()),
            self.last_check
                .map(|t| t.to_rfc3339())
                .unwrap_or_else(|| "never".into())
        )?;
        writeln!(f, "last error:  {}", or(&self.last_error))?;
        write!(
            f,
            "spool:       {} event(s) waiting",
            self.spooled_events.unwrap_or(0)
        )
    }
}
