//! What each host is doing about updates, as the agent reports it on every
//! pass (`POST /api/v1/checkin`) and the reporter shows it
//! ([`crate::api::AgentSummary::state`]).

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Longest `reason` of a check-in, in bytes.
pub const MAX_REASON_BYTES: usize = 1024;
/// Longest `release`, `wave`, `version` or `channel` of a check-in, in bytes.
pub const MAX_NAME_BYTES: usize = 128;

/// A host's state, from its latest pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum HostState {
    /// Running the release its channel rolls out.
    OnRelease,
    /// Downloading, installing or checking the health of a new release.
    Updating,
    /// Its wave (or its turn within it) has not opened yet: until `until`.
    Waiting,
    /// The reporter's halt gate is closed (the failure rate or an
    /// operator's emergency stop), or could not be asked.
    Held,
    /// Its channel is paused.
    Paused,
    /// A pin holds it on a release.
    Pinned,
    /// A release was rolled back here; it waits for another one.
    RolledBack,
    /// It cannot go on by itself: the manifest is refused or unreachable, no
    /// artifact for its target, a refused downgrade, no stepping stone.
    Blocked,
    /// Not heard from within the reporter's `stale_after` (the reporter
    /// sets this; agents never send it).
    NotReporting,
}

impl HostState {
    /// Every state, in the order the page lists them.
    pub const ALL: [HostState; 9] = [
        HostState::OnRelease,
        HostState::Updating,
        HostState::Waiting,
        HostState::Held,
        HostState::Paused,
        HostState::Pinned,
        HostState::RolledBack,
        HostState::Blocked,
        HostState::NotReporting,
    ];

    /// The wire name (`on_release`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            HostState::OnRelease => "on_release",
            HostState::Updating => "updating",
            HostState::Waiting => "waiting",
            HostState::Held => "held",
            HostState::Paused => "paused",
            HostState::Pinned => "pinned",
            HostState::RolledBack => "rolled_back",
            HostState::Blocked => "blocked",
            HostState::NotReporting => "not_reporting",
        }
    }

    /// The inverse of [`HostState::as_str`].
    pub fn parse(s: &str) -> Option<HostState> {
        HostState::ALL.into_iter().find(|h| h.as_str() == s)
    }

    /// For people: "waiting for its wave", "held by the gate", …
    pub fn label(self) -> &'static str {
        match self {
            HostState::OnRelease => "on release",
            HostState::Updating => "updating",
            HostState::Waiting => "waiting for its wave",
            HostState::Held => "held by the gate",
            HostState::Paused => "paused",
            HostState::Pinned => "pinned",
            HostState::RolledBack => "rolled back",
            HostState::Blocked => "blocked",
            HostState::NotReporting => "not reporting",
        }
    }
}

impl fmt::Display for HostState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `POST /api/v1/checkin` request (bearer: the agent token): what the
/// agent's pass decided. Sent at the end of every pass; answered 202 at
/// once, stored within a second or so (check-ins are coalesced, so a
/// check-in is liveness, not an event: nothing of it is kept but the
/// latest).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckIn {
    /// The host's state.
    pub state: HostState,
    /// Why, for people ("the halt gate is closed: failure rate 66.7%").
    #[serde(default)]
    pub reason: String,
    /// The release the state is about (the target, or the one running).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<String>,
    /// The agent's wave for that release.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wave: Option<String>,
    /// Until when it waits (its wave's turn), if it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<DateTime<Utc>>,
    /// The version it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The channel it follows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
}

impl CheckIn {
    /// The first field that is out of bounds, and why.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if self.state == HostState::NotReporting {
            return Err((
                "state",
                "not_reporting is the reporter's to say, not an agent's".into(),
            ));
        }
        if self.reason.len() > MAX_REASON_BYTES {
            return Err((
                "reason",
                format!(
                    "at most {MAX_REASON_BYTES} bytes, got {}",
                    self.reason.len()
                ),
            ));
        }
        if crate::event::has_nul(&self.reason) {
            // PostgreSQL's text cannot hold it: one agent's check-in would
            // fail the write of every check-in written with it.
            return Err(("reason", "holds a NUL character (U+0000)".into()));
        }
        for (field, v) in [
            ("release", &self.release),
            ("wave", &self.wave),
            ("version", &self.version),
            ("channel", &self.channel),
        ] {
            if let Some(v) = v {
                if v.len() > MAX_NAME_BYTES || v.chars().any(char::is_control) {
                    return Err((
                        field,
                        format!("at most {MAX_NAME_BYTES} bytes without control characters"),
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reason_with_a_nul_character_is_refused() {
        let c: CheckIn = serde_json::from_value(serde_json::json!({
            "state": "on_release",
            "reason": "up to date\u{0}",
        }))
        .unwrap();
        assert_eq!(c.check().unwrap_err().0, "reason");
    }

    #[test]
    fn names_round_trip_and_match_serde() {
        for s in HostState::ALL {
            assert_eq!(HostState::parse(s.as_str()), Some(s));
            assert_eq!(
                serde_json::to_value(s).unwrap(),
                serde_json::Value::String(s.as_str().into())
            );
        }
    }

    #[test]
    fn check_names_the_field() {
        let mut c = CheckIn {
            state: HostState::Waiting,
            reason: "x".into(),
            release: Some("1.2.0".into()),
            wave: None,
            until: None,
            version: None,
            channel: None,
        };
        assert!(c.check().is_ok());
        c.wave = Some("w".repeat(200));
        assert_eq!(c.check().unwrap_err().0, "wave");
        c.wave = None;
        c.state = HostState::NotReporting;
        assert_eq!(c.check().unwrap_err().0, "state");
    }
}
