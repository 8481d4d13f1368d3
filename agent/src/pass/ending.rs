//! [`Ending`]: how a pass ended, what `flotilla-agent run` prints, and the error the
//! pass records in `state.json`.

/// How a pass ended.
#[derive(Clone, Debug, PartialEq)]
pub enum Ending {
    /// Another pass holds the lock.
    Busy,
    /// Running what the manifest says.
    UpToDate {
        /// The release.
        release: String,
        /// Held there by a pin (`pins.toml`), not by the channel.
        pinned: bool,
    },
    /// An update is known but not taken now.
    Deferred {
        /// Why.
        reason: String,
    },
    /// A new version was installed and swapped in; the next start runs it.
    Installed {
        /// The version swapped in.
        version: String,
    },
    /// The running version failed its health check and attempts remain.
    Unhealthy {
        /// Why.
        reason: String,
        /// Attempts left.
        attempts_left: u32,
    },
    /// The pending version was rolled back.
    RolledBack {
        /// The version rolled back from.
        from: String,
        /// The version restored.
        to: String,
    },
    /// The update is pending; the new version's next pass checks it.
    Waiting {
        /// Why nothing else was done.
        reason: String,
    },
    /// The manifest was refused.
    Rejected {
        /// Why.
        reason: String,
    },
    /// Something failed (source unreachable, download, install).
    Failed {
        /// Why.
        reason: String,
    },
}

impl Ending {
    /// A line for the operator.
    pub fn describe(&self) -> String {
        match self {
            Ending::Busy => "another pass is running; nothing done".into(),
            Ending::UpToDate {
                release,
                pinned: true,
            } => format!("pinned to {release}"),
            Ending::UpToDate { release, .. } => format!("up to date ({release})"),
            Ending::Deferred { reason } => format!("update deferred: {reason}"),
            Ending::Installed { version } => {
                format!("installed {version}; the next pass runs it and checks its health")
            }
            Ending::Unhealthy {
                reason,
                attempts_left,
            } => format!("health check failed ({reason}); {attempts_left} attempt(s) left"),
            Ending::RolledBack { from, to } => format!("rolled back from {from} to {to}"),
            Ending::Waiting { reason } => reason.clone(),
            Ending::Rejected { reason } => format!("manifest rejected: {reason}"),
            Ending::Failed { reason } => format!("failed: {reason}"),
        }
    }

    /// The error `state.json` keeps for this pass (`last_error`).
    pub(super) fn error(&self) -> Option<String> {
        match self {
            Ending::Unhealthy { reason, .. }
            | Ending::Rejected { reason }
            | Ending::Failed { reason } => Some(reason.clone()),
            _ => None,
        }
    }
}
