//! Request and response bodies of the reporter's HTTP API (`/api/v1/...`),
//! shared by the reporter, the agent and the publisher.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::event::Event;

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
}

/// `POST /api/v1/enroll` response.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EnrollResponse {
    /// The agent's id, as enrolled.
    pub agent_id: String,
    /// The per-agent bearer token; the reporter keeps only its hash.
    pub agent_token: String,
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
    /// Why the gate is in this state, for humans.
    pub reason: String,
}

/// One wave's progress in `GET /api/v1/rollouts/{channel}/{release}`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaveProgress {
    /// The wave's name.
    pub wave: String,
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
    /// Not yet eligible or deferred.
    pub waiting: u64,
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
}

/// One agent in `GET /api/v1/agents`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
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
}
