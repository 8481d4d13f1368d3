//! Request and response bodies of the reporter's HTTP API (`/api/v1/...`),
//! shared by the reporter, the agent and the publisher.
//!
//! The routes, their authentication and status codes, the enrollment rule
//! and the halt gate's definition are documented in the `flotilla-reporter`
//! crate (`reporter/src/lib.rs`). The keys agents may put into an event's
//! `details` for the reporter to read are listed in [`details`].

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::event::Event;
pub use crate::halt::{Halt, HaltList, HaltRequest, ReopenRequest};
pub use crate::host::{CheckIn, HostState};

/// Most events in one `POST /api/v1/events` batch.
pub const MAX_BATCH_EVENTS: usize = 500;
/// Largest `POST /api/v1/events` body, in bytes.
pub const MAX_BATCH_BYTES: usize = 1024 * 1024;

/// `POST /api/v1/enroll` request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EnrollRequest {
    /// The enrollment token (from `flotilla-reporter token create`).
    pub enrollment_token: String,
    /// The agent's id.
    pub agent_id: String,
    /// The agent's labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The version the agent runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The agent's channel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// An agent token the agent made itself (64 lowercase hex digits, 256
    /// random bits), so that a retried enrollment whose answer was lost is
    /// recognised: the agent writes it to its token file *before* enrolling
    /// and sends the same one again. When absent the reporter makes one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_token: Option<String>,
}

/// `POST /api/v1/enroll` response.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EnrollResponse {
    /// The agent's id, as enrolled.
    pub agent_id: String,
    /// The per-agent bearer token; the reporter keeps only its hash.
    pub agent_token: String,
    /// True when the agent was enrolled already with this token (a retried
    /// enrollment); no use of the enrollment token was consumed.
    #[serde(default)]
    pub already_enrolled: bool,
}

/// Length of an agent token: 64 lowercase hex digits (256 bits).
pub const AGENT_TOKEN_HEX_LEN: usize = 64;

/// Whether `token` has the shape of an agent token (64 lowercase hex digits).
pub fn is_agent_token_shaped(token: &str) -> bool {
    token.len() == AGENT_TOKEN_HEX_LEN
        && token
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The API's paths, each segment percent-encoded: the one place that builds
/// them (the agent's gate request, the publisher's client and the demo).
/// Append to a base URL without its trailing `/`.
pub mod paths {
    use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

    /// What stays as it is in a path segment: RFC 3986 unreserved.
    const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');

    fn seg(s: &str) -> impl std::fmt::Display + '_ {
        utf8_percent_encode(s, SEGMENT)
    }

    /// `POST /api/v1/enroll`.
    pub const ENROLL: &str = "/api/v1/enroll";
    /// `POST /api/v1/events`.
    pub const EVENTS: &str = "/api/v1/events";
    /// `GET /api/v1/agents`.
    pub const AGENTS: &str = "/api/v1/agents";
    /// `POST /api/v1/checkin`.
    pub const CHECKIN: &str = "/api/v1/checkin";
    /// `GET`/`POST /api/v1/halts`.
    pub const HALTS: &str = "/api/v1/halts";

    /// `POST /api/v1/halts/{id}/reopen`.
    pub fn halt_reopen(id: i64) -> String {
        format!("/api/v1/halts/{id}/reopen")
    }

    /// `GET /api/v1/gate/{channel}/{release}`.
    pub fn gate(channel: &str, release: &str) -> String {
        format!("/api/v1/gate/{}/{}", seg(channel), seg(release))
    }

    /// `GET /api/v1/rollouts/{channel}/{release}`.
    pub fn rollout(channel: &str, release: &str) -> String {
        format!("/api/v1/rollouts/{}/{}", seg(channel), seg(release))
    }

    /// `GET /api/v1/agents/{id}/events`.
    pub fn agent_events(agent_id: &str) -> String {
        format!("/api/v1/agents/{}/events", seg(agent_id))
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn segments_are_escaped() {
            assert_eq!(
                super::gate("stable", "1.2.0+b1"),
                "/api/v1/gate/stable/1.2.0%2Bb1"
            );
            assert_eq!(
                super::rollout("a b", "../x"),
                "/api/v1/rollouts/a%20b/..%2Fx"
            );
            assert_eq!(
                super::agent_events("host@dc:1"),
                "/api/v1/agents/host%40dc%3A1/events"
            );
        }
    }
}

/// Keys of an event's `details` object that the reporter reads.
///
/// All are optional; other keys are stored and shown but not interpreted.
/// Values of the wrong type are ignored (the event is still accepted).
pub mod details {
    /// String: the version of the agent binary that reports the event.
    /// Send it on every event; it is how the reporter knows which version
    /// an agent runs (agents by version, "on release").
    pub const AGENT_VERSION: &str = "agent_version";
    /// String: the release the event is about, when it differs from the
    /// default: `to_version` for every kind except `update_rollback`, where
    /// it is `from_version` (the release rolled back *from*; `to_version` is
    /// the version restored).
    pub const RELEASE: &str = "release";
    /// Number in 0.0–1.0: the channel's `max_failure_rate`, copied from the
    /// verified manifest; send it on `update_*` events.
    pub const MAX_FAILURE_RATE: &str = "max_failure_rate";
    /// Integer: the channel's `min_reports`, copied like `max_failure_rate`.
    pub const MIN_REPORTS: &str = "min_reports";
    /// Array of strings: the channel's wave names in order, so that the
    /// reporter can show waves no agent reported from yet.
    pub const WAVES: &str = "waves";
    /// Object of string values: the agent's labels, replacing the ones given
    /// at enrollment (send on `agent_startup` when the config changed).
    pub const LABELS: &str = "labels";
    /// Array of strings: the error chain, outermost first; shown expanded
    /// under the event's message in the web page.
    pub const ERROR_CHAIN: &str = "error_chain";
    /// Object: system information (os, kernel, arch, hostname, free disk…);
    /// shown in the web page.
    pub const SYSTEM: &str = "system";

    // Keys the agent sends for people and tools reading its events; the
    // reporter stores and shows them without interpreting them.

    /// Integer: failed health checks the pending update has left.
    pub const ATTEMPTS_LEFT: &str = "attempts_left";
    /// String: why (a deferral, a rollback).
    pub const REASON: &str = "reason";
    /// Integer: the manifest serial an event is about.
    pub const SERIAL: &str = "serial";
    /// Integer: the root version a manifest was verified with.
    pub const ROOT_VERSION: &str = "root_version";
    /// String: where an accepted manifest came from (`unchanged` when the
    /// source answered that the cached copy is current).
    pub const ORIGIN: &str = "origin";
    /// Integer: on an accepted `manifest_check`, the highest serial this
    /// agent had accepted and forgot because the new root replaced the
    /// release keys that signed it (fast-forward recovery after a key
    /// compromise).
    pub const FORGOT_SERIAL: &str = "forgot_serial";
    /// String (RFC 3339): when the accepted manifest expires.
    pub const EXPIRES: &str = "expires";
    /// String (RFC 3339): when a deferred update's wave opens for this agent.
    pub const ELIGIBLE_AT: &str = "eligible_at";
    /// String: the artifact's URL.
    pub const URL: &str = "url";
    /// Integer: the artifact's size in bytes.
    pub const SIZE: &str = "size";
    /// String: the artifact's SHA-256, hex.
    pub const SHA256: &str = "sha256";
    /// String: the installed binary's path.
    pub const PATH: &str = "path";
    /// Bool: the release was installed because the agent's config pins it.
    pub const PINNED: &str = "pinned";
    /// String: the release a stepping stone leads to.
    pub const STEPPING_STONE_TO: &str = "stepping_stone_to";
    /// Array of strings: versions pruned after a commit.
    pub const PRUNED: &str = "pruned";
    /// String: why pruning after a commit failed.
    pub const PRUNE_ERROR: &str = "prune_error";
    /// Integer, or object `{found, current}` on migration events: the
    /// config's schema version.
    pub const CONFIG_SCHEMA: &str = "config_schema";
    /// Array of strings: the migration ids an event is about.
    pub const MIGRATION_IDS: &str = "migration_ids";
    /// String: the migration that failed.
    pub const FAILED_MIGRATION: &str = "failed_migration";
    /// String: the migration run's backup directory.
    pub const BACKUP: &str = "backup";
    /// Bool: whether the migration backup was restored after a failure.
    pub const RESTORED: &str = "restored";
    /// Array of strings: the error chain of restoring a migration backup,
    /// outermost first (when `restored` is false).
    pub const RESTORE_ERROR_CHAIN: &str = "restore_error_chain";
    /// Array of strings: the paths a migration run backed up.
    pub const PATHS: &str = "paths";
    /// Array of `{migration, error_chain}`: failed migration detections.
    pub const ERRORS: &str = "errors";
    /// Integer: failed migration runs of this version.
    pub const ATTEMPTS: &str = "attempts";
    /// Bool: the migration retries of this version are used up.
    pub const RETRIES_EXHAUSTED: &str = "retries_exhausted";
    /// String: the migration a detection error belongs to (in `errors`).
    pub const MIGRATION: &str = "migration";
}

/// `POST /api/v1/events` request (bearer: the agent token).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EventBatch {
    /// At most [`MAX_BATCH_EVENTS`] events, all of the authenticated agent.
    pub events: Vec<Event>,
}

/// `POST /api/v1/events` response, sent once the batch is durable.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventsAccepted {
    /// Events in the batch.
    pub received: usize,
    /// Events stored for the first time.
    pub new: usize,
    /// Events already stored (redelivery).
    pub duplicates: usize,
}

/// The body of every 4xx/5xx answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    /// What is wrong, for humans.
    pub error: String,
    /// Index of the offending event in the batch, if one is to blame.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_index: Option<usize>,
    /// The offending field, if one is to blame.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// State of a halt gate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GateState {
    /// Agents may install.
    Open,
    /// The failure rate is above the channel's threshold: agents wait.
    Closed,
}

/// Where the reporter learnt a channel's halt thresholds and waves.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SettingsSource {
    /// The copy of the signed manifest given with `--manifest`.
    Manifest,
    /// `details` of events that agents reported for the channel and release.
    Agents,
    /// Neither: no threshold is known, the gate stays open.
    #[default]
    Unknown,
}

/// `GET /api/v1/gate/{channel}/{release}` response.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Gate {
    /// The channel.
    pub channel: String,
    /// The release.
    pub release: String,
    /// Open or closed.
    pub state: GateState,
    /// Agents that reported an outcome (installed-and-healthy or failed).
    pub reports: u64,
    /// Of which failed (health check, migration, rollback).
    pub failed: u64,
    /// `failed / reports`, if any reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_rate: Option<f64>,
    /// The channel's threshold, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_failure_rate: Option<f64>,
    /// The channel's minimum reports, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_reports: Option<u32>,
    /// Where `max_failure_rate` and `min_reports` came from.
    #[serde(default)]
    pub settings_source: SettingsSource,
    /// Why the gate is in this state, for humans.
    pub reason: String,
    /// The operator's emergency stop that holds this gate closed, if one
    /// does (the reason then starts with "manually halted by").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub halt: Option<Halt>,
}

/// One wave's progress in `GET /api/v1/rollouts/{channel}/{release}`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WaveProgress {
    /// The wave's name.
    pub wave: String,
    /// Its target: the cumulative share of the channel's agents, percent
    /// (from the verified manifest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<f64>,
    /// When it opens (or opened): the channel's start plus its `after`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opens_at: Option<DateTime<Utc>>,
    /// When its last agent's turn comes: `opens_at` plus its `spread`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spread_until: Option<DateTime<Utc>>,
    /// Agents of the wave known to the reporter.
    pub agents: u64,
    /// Running the release and healthy.
    pub on_release: u64,
    /// Downloading or installing the release.
    pub installing: u64,
    /// Failed to move to the release.
    pub failed: u64,
    /// Rolled back from the release.
    pub rolled_back: u64,
    /// Not yet eligible or deferred: `wave_not_open` + `held` + any other.
    pub waiting: u64,
    /// Of `waiting`: their turn in the wave has not come yet.
    #[serde(default)]
    pub wave_not_open: u64,
    /// Of `waiting`: their turn came, but the halt gate holds them.
    #[serde(default)]
    pub held: u64,
    /// Not heard from for a while.
    pub not_reporting: u64,
}

/// `GET /api/v1/rollouts/{channel}/{release}` response.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RolloutProgress {
    /// The channel.
    pub channel: String,
    /// The release.
    pub release: String,
    /// Per wave, in order.
    pub waves: Vec<WaveProgress>,
    /// Failure rate over all waves, if any reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_rate: Option<f64>,
    /// The halt gate.
    pub gate: Gate,
    /// Agents counted over all waves.
    #[serde(default)]
    pub agents: u64,
    /// True while some agent of the channel is still waiting for or
    /// installing the release (the web page refreshes itself meanwhile).
    #[serde(default)]
    pub active: bool,
}

/// Where a rollout stands, for people ([`RolloutProgress::phase`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RolloutPhase {
    /// Agents are waiting for their waves or installing.
    RollingOut,
    /// The gate is closed while agents have yet to move: they wait.
    Halted,
    /// Nothing moves any more: every agent is on the release, failed,
    /// rolled back or not reporting.
    Settled,
}

impl RolloutPhase {
    /// "rolling out", "halted", "settled".
    pub fn label(self) -> &'static str {
        match self {
            RolloutPhase::RollingOut => "rolling out",
            RolloutPhase::Halted => "halted",
            RolloutPhase::Settled => "settled",
        }
    }
}

impl RolloutProgress {
    /// Halted when the gate is closed and some agent is not on the release
    /// yet; else rolling out while agents wait or install; else settled.
    pub fn phase(&self) -> RolloutPhase {
        let behind = self.waves.iter().any(|w| w.on_release < w.agents);
        if self.gate.state == GateState::Closed && behind {
            RolloutPhase::Halted
        } else if self.active {
            RolloutPhase::RollingOut
        } else {
            RolloutPhase::Settled
        }
    }

    /// What an operator can do about a halted rollout, one line each (none
    /// unless [`RolloutPhase::Halted`]).
    pub fn options(&self) -> Vec<String> {
        if self.phase() != RolloutPhase::Halted {
            return Vec::new();
        }
        let c = &self.channel;
        let mut v = Vec::new();
        if let Some(h) = &self.gate.halt {
            v.push(format!(
                "once it is safe, reopen the manual halt: the overview page, or POST /api/v1/halts/{}/reopen",
                h.id
            ));
        }
        v.push(
            "read why on the failed and rolled-back hosts' pages (agents list, state rolled back)"
                .to_owned(),
        );
        v.push(format!(
            "stop the waves in the signed manifest: flotilla-publisher rollout pause --channel {c}, then sign and publish"
        ));
        v.push(
            "hold hosts where they are: flotilla-publisher pin add --agent ID --release VERSION"
                .to_owned(),
        );
        v.push(format!(
            "ship a fix: flotilla-publisher release add --version NEXT ..., then rollout set --channel {c} --release NEXT"
        ));
        v
    }
}

/// `GET /api/v1/rollouts` response: the current rollout of every known
/// channel (or of the one named by `?channel=`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RolloutList {
    /// One per channel, by channel name.
    pub rollouts: Vec<RolloutProgress>,
}

/// One rollout in `GET /api/v1/rollouts/history`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PastRollout {
    /// Whether the verified manifest still rolls it out.
    pub current: bool,
    /// When the reporter first saw the manifest roll it out on the channel.
    pub first_seen: DateTime<Utc>,
    /// When it last saw that.
    pub last_seen: DateTime<Utc>,
    /// Its progress as it stands (channel and release inside).
    pub progress: RolloutProgress,
}

/// `GET /api/v1/rollouts/history` response: each channel's rollouts, newest
/// first, finished ones kept.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RolloutHistory {
    /// By channel, newest first.
    pub rollouts: Vec<PastRollout>,
}

/// `GET /api/v1/agents` response.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AgentList {
    /// Agents matching the filters, at most `limit`.
    pub agents: Vec<AgentSummary>,
    /// How many agents match the filters in all.
    pub total: u64,
}

/// `GET /api/v1/agents/{id}/events` response, newest first.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EventPage {
    /// Events matching the filters, newest first.
    pub events: Vec<Event>,
    /// Pass as `?cursor=` for the next (older) page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// `GET /healthz` response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// `"ok"` when the database answers.
    pub status: String,
    /// The reporter's version.
    pub version: String,
    /// The database schema version.
    pub schema_version: u32,
}

/// One agent in `GET /api/v1/agents`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AgentSummary {
    /// The agent's id.
    pub agent_id: String,
    /// The version it last reported running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Its channel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// Its wave in the current rollout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wave: Option<String>,
    /// Its labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// When it was last heard from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<DateTime<Utc>>,
    /// Its newest error message, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// When the newest error happened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error_at: Option<DateTime<Utc>>,
    /// When it enrolled (last time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enrolled_at: Option<DateTime<Utc>>,
    /// Whether its token was revoked (`flotilla-reporter agent revoke`).
    #[serde(default)]
    pub revoked: bool,
    /// Events of this agent the reporter keeps.
    #[serde(default)]
    pub event_count: u64,
    /// Its state: from its latest check-in, or `not_reporting` when not
    /// heard from within `stale_after`; absent when it never checked in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<HostState>,
    /// Why, from its latest check-in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The release its state is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_release: Option<String>,
    /// Until when it waits for its wave.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<DateTime<Utc>>,
    /// When it last checked in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checked_in_at: Option<DateTime<Utc>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_token_shape() {
        assert!(is_agent_token_shaped(&"0a".repeat(32)));
        assert!(!is_agent_token_shaped(&"0A".repeat(32)));
        assert!(!is_agent_token_shaped(&"0a".repeat(31)));
        assert!(!is_agent_token_shaped(&"zz".repeat(32)));
    }

    #[test]
    fn old_bodies_still_parse() {
        let r: EnrollResponse =
            serde_json::from_str(r#"{"agent_id":"a","agent_token":"t"}"#).unwrap();
        assert!(!r.already_enrolled);
        let a: AgentSummary = serde_json::from_str(r#"{"agent_id":"a"}"#).unwrap();
        assert!(!a.revoked);
    }
}
