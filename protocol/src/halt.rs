//! The emergency stop: an admin closes a channel's halt gate (or one
//! release's on it) by hand, with a reason, and reopens it later
//! (`/api/v1/halts`). A manual halt can only close a gate: reopening it
//! never opens a gate that the failure rate (or a missing manifest) keeps
//! closed.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Longest halt reason, in bytes.
pub const MAX_HALT_REASON_BYTES: usize = 2000;

/// `POST /api/v1/halts` request (admin token).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HaltRequest {
    /// The channel whose gate closes.
    pub channel: String,
    /// Only this release's gate; absent: every release on the channel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<String>,
    /// Why, for the people and agents who will read it (required).
    pub reason: String,
    /// Who asks, for the record (a name); the credential is recorded too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
}

/// `POST /api/v1/halts/{id}/reopen` request (admin token); the body may be
/// empty.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ReopenRequest {
    /// Who reopens, for the record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
}

/// A manual halt, active or reopened.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Halt {
    /// Its id (for reopening).
    pub id: i64,
    /// The channel.
    pub channel: String,
    /// The one release it stops, or every release of the channel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<String>,
    /// Why.
    pub reason: String,
    /// Who closed it ("admin token", "web page", with the name given).
    pub closed_by: String,
    /// When.
    pub closed_at: DateTime<Utc>,
    /// Who reopened it, once reopened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reopened_by: Option<String>,
    /// When it was reopened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reopened_at: Option<DateTime<Utc>>,
}

impl Halt {
    /// Whether it still holds.
    pub fn active(&self) -> bool {
        self.reopened_at.is_none()
    }

    /// Whether it stops `release` on `channel`.
    pub fn covers(&self, channel: &str, release: &str) -> bool {
        self.active()
            && self.channel == channel
            && self.release.as_deref().is_none_or(|r| r == release)
    }

    /// The gate's reason while it holds: "manually halted by X at T: why".
    pub fn gate_reason(&self) -> String {
        format!(
            "manually halted by {} at {}: {}",
            self.closed_by,
            self.closed_at.format("%Y-%m-%d %H:%M UTC"),
            self.reason
        )
    }
}

/// `GET /api/v1/halts` response: active halts first, then the most recent
/// reopened ones.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HaltList {
    /// The halts.
    pub halts: Vec<Halt>,
}
