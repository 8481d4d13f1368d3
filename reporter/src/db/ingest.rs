//! Storing a batch of events and keeping the derived state current.
//!
//! Events are inserted with `INSERT OR IGNORE` on their id, so redelivery
//! stores nothing twice. From the *new* events the same job derives:
//!
//! - the agent's row: last seen (receipt time), version, channel, wave,
//!   labels and newest error, taken from the newest event (by `ts`) that
//!   is not older than what the row already reflects, so a late, old
//!   event from a spool does not undo newer state;
//! - `agent_release`: the agent's state in the rollout of a channel's
//!   release (see [`release_state`]), newest event wins, except that an
//!   `update_deferred` never hides an outcome (healthy, failed, rolled back);
//! - `channel_settings`: thresholds and waves that agents copy from the
//!   manifest into `details`.
//!
//! The `details` keys read here are [`flotilla_protocol::api::details`].

use std::collections::BTreeMap;

use flotilla_protocol::api::details as keys;
use flotilla_protocol::{Event, EventKind, EventStatus, Severity};
use rusqlite::{params, Connection, OptionalExtension};
use serde_json::Value;

use super::{to_micros, DbError};

/// What a batch did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IngestOutcome {
    /// Stored for the first time.
    pub new: usize,
    /// Already stored.
    pub duplicates: usize,
}

/// An agent's state in one release's rollout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReleaseState {
    /// Deferred: wave not open, gate closed, pinned.
    Waiting,
    /// Downloading, verifying, installed and awaiting the health check, or
    /// retrying after a failed download or verification.
    Installing,
    /// Installed and healthy.
    OnRelease,
    /// The install, the health check or a migration failed.
    Failed,
    /// Rolled back from the release.
    RolledBack,
}

impl ReleaseState {
    /// As stored.
    pub fn as_str(self) -> &'static str {
        match self {
            ReleaseState::Waiting => "waiting",
            ReleaseState::Installing => "installing",
            ReleaseState::OnRelease => "on_release",
            ReleaseState::Failed => "failed",
            ReleaseState::RolledBack => "rolled_back",
        }
    }
    /// From storage.
    pub fn parse(s: &str) -> Option<ReleaseState> {
        Some(match s {
            "waiting" => ReleaseState::Waiting,
            "installing" => ReleaseState::Installing,
            "on_release" => ReleaseState::OnRelease,
            "failed" => ReleaseState::Failed,
            "rolled_back" => ReleaseState::RolledBack,
            _ => return None,
        })
    }
}

/// The rollout state an event puts its agent in, if any.
///
/// | event | state |
/// |---|---|
/// | `update_deferred` | waiting |
/// | `update_download`, `update_verify` (any status), `update_install` success | installing |
/// | `update_healthcheck` success | on release |
/// | `update_install` failed, `update_healthcheck` failed, `migration_execution` failed | failed |
/// | `update_rollback` (any status) | rolled back |
pub fn release_state(e: &Event) -> Option<ReleaseState> {
    use EventKind::*;
    use EventStatus::*;
    Some(match (e.kind, e.status) {
        (UpdateDeferred, _) => ReleaseState::Waiting,
        (UpdateDownload | UpdateVerify, _) | (UpdateInstall, Success) => ReleaseState::Installing,
        (UpdateHealthcheck, Success) => ReleaseState::OnRelease,
        (UpdateInstall | UpdateHealthcheck | MigrationExecution, Failed) => ReleaseState::Failed,
        (UpdateRollback, _) => ReleaseState::RolledBack,
        _ => return None,
    })
}

/// The release an event is about: `details.release`, else `from_version`
/// for a rollback, else `to_version`.
pub fn event_release(e: &Event) -> Option<&str> {
    if let Some(Value::String(r)) = e.details.get(keys::RELEASE) {
        return Some(r);
    }
    if e.kind == EventKind::UpdateRollback {
        return e.from_version.as_deref();
    }
    e.to_version.as_deref()
}

/// The version the agent runs according to this event, if it says.
fn running_version(e: &Event) -> Option<&str> {
    if let Some(Value::String(v)) = e.details.get(keys::AGENT_VERSION) {
        return Some(v);
    }
    match (e.kind, e.status) {
        (EventKind::UpdateHealthcheck, EventStatus::Success)
        | (EventKind::UpdateRollback, EventStatus::Success) => e.to_version.as_deref(),
        _ => None,
    }
}

fn labels_json(e: &Event) -> Option<String> {
    match e.details.get(keys::LABELS) {
        Some(Value::Object(m)) if m.values().all(Value::is_string) => {
            Some(Value::Object(m.clone()).to_string())
        }
        _ => None,
    }
}

#[derive(Default)]
struct Settings {
    max_failure_rate: Option<f64>,
    min_reports: Option<i64>,
    waves: Option<String>,
    ts: i64,
}

fn settings_of(e: &Event) -> Option<Settings> {
    let rate = e
        .details
        .get(keys::MAX_FAILURE_RATE)
        .and_then(Value::as_f64)
        .filter(|r| (0.0..=1.0).contains(r));
    let min = e
        .details
        .get(keys::MIN_REPORTS)
        .and_then(Value::as_u64)
        .map(|m| m.min(i64::MAX as u64) as i64);
    let waves = match e.details.get(keys::WAVES) {
        Some(Value::Array(a)) if !a.is_empty() && a.iter().all(Value::is_string) => {
            Some(Value::Array(a.clone()).to_string())
        }
        _ => None,
    };
    if rate.is_none() && min.is_none() && waves.is_none() {
        return None;
    }
    Some(Settings {
        max_failure_rate: rate,
        min_reports: min,
        waves,
        ts: to_micros(e.ts),
    })
}

/// Stores `events` of `agent_id` (already validated and checked to be
/// this agent's) and updates the derived state. `now`: receipt time, µs.
pub fn ingest(
    conn: &Connection,
    agent_id: &str,
    events: &[Event],
    now: i64,
) -> Result<IngestOutcome, DbError> {
    let mut insert = conn.prepare_cached(
        "INSERT OR IGNORE INTO events (id, agent_id, ts, kind, status, severity, component,
             message, from_version, to_version, channel, wave, details)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
    )?;
    let mut fresh: Vec<&Event> = Vec::with_capacity(events.len());
    for e in events {
        let details = serde_json::to_string(&e.details).expect("a map serialises");
        let n = insert.execute(params![
            e.id.as_bytes().as_slice(),
            agent_id,
            to_micros(e.ts),
            e.kind.as_str(),
            e.status.as_str(),
            e.severity.as_str(),
            e.component,
            e.message,
            e.from_version,
            e.to_version,
            e.channel,
            e.wave,
            details,
        ])?;
        if n == 1 {
            fresh.push(e);
        }
    }
    let outcome = IngestOutcome {
        new: fresh.len(),
        duplicates: events.len() - fresh.len(),
    };

    let (stored_channel, state_ts, error_ts): (Option<String>, i64, Option<i64>) = conn
        .prepare_cached("SELECT channel, state_ts, last_error_ts FROM agents WHERE agent_id = ?1")?
        .query_row([agent_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?
        .unwrap_or((None, 0, None));

    fresh.sort_by_key(|e| e.ts);
    let (mut version, mut channel, mut wave, mut labels) = (None, None, None, None);
    let mut newest = state_ts;
    let (mut error, mut error_at) = (None, None);
    for e in &fresh {
        let ts = to_micros(e.ts);
        if ts >= state_ts {
            newest = newest.max(ts);
            if let Some(v) = running_version(e) {
                version = Some(v);
            }
            if let Some(c) = &e.channel {
                channel = Some(c.as_str());
            }
            if let Some(w) = &e.wave {
                wave = Some(w.as_str());
            }
            if let Some(l) = labels_json(e) {
                labels = Some(l);
            }
        }
        if e.severity >= Severity::Error && error_ts.is_none_or(|t| ts >= t) {
            error = Some(e.message.as_str());
            error_at = Some(ts);
        }
    }
    conn.prepare_cached(
        "UPDATE agents SET last_seen = ?2, event_count = event_count + ?3,
             version = COALESCE(?4, version), channel = COALESCE(?5, channel),
             wave = COALESCE(?6, wave), labels = COALESCE(?7, labels), state_ts = ?8,
             last_error = COALESCE(?9, last_error), last_error_ts = COALESCE(?10, last_error_ts)
         WHERE agent_id = ?1",
    )?
    .execute(params![
        agent_id,
        now,
        fresh.len() as i64,
        version,
        channel,
        wave,
        labels,
        newest,
        error,
        error_at
    ])?;

    // Rollout state and channel settings, newest event per (channel, release).
    let fallback_channel = channel.map(str::to_owned).or(stored_channel);
    let mut states: BTreeMap<(&str, &str), (&Event, ReleaseState)> = BTreeMap::new();
    let mut settings: BTreeMap<(&str, &str), Settings> = BTreeMap::new();
    for e in &fresh {
        let Some(release) = event_release(e) else {
            continue;
        };
        let Some(ch) = e.channel.as_deref().or(fallback_channel.as_deref()) else {
            continue;
        };
        if let Some(s) = release_state(e) {
            states.insert((ch, release), (e, s));
        }
        if let Some(s) = settings_of(e) {
            settings.insert((ch, release), s);
        }
    }
    if !states.is_empty() {
        let mut up = conn.prepare_cached(
            "INSERT INTO agent_release (channel, release, agent_id, state, wave, ts, message)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT (channel, release, agent_id) DO UPDATE SET
                 state = excluded.state, wave = COALESCE(excluded.wave, agent_release.wave),
                 ts = excluded.ts, message = excluded.message
             WHERE excluded.ts >= agent_release.ts
               AND NOT (excluded.state = 'waiting'
                        AND agent_release.state IN ('on_release', 'failed', 'rolled_back'))",
        )?;
        for ((ch, release), (e, s)) in states {
            up.execute(params![
                ch,
                release,
                agent_id,
                s.as_str(),
                e.wave.as_deref().or(wave),
                to_micros(e.ts),
                e.message
            ])?;
        }
    }
    if !settings.is_empty() {
        let mut up = conn.prepare_cached(
            "INSERT INTO channel_settings (channel, release, max_failure_rate, min_reports, waves, ts)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (channel, release) DO UPDATE SET
                 max_failure_rate = COALESCE(excluded.max_failure_rate, channel_settings.max_failure_rate),
                 min_reports = COALESCE(excluded.min_reports, channel_settings.min_reports),
                 waves = COALESCE(excluded.waves, channel_settings.waves),
                 ts = excluded.ts
             WHERE excluded.ts >= channel_settings.ts",
        )?;
        for ((ch, release), s) in settings {
            up.execute(params![
                ch,
                release,
                s.max_failure_rate,
                s.min_reports,
                s.waves,
                s.ts
            ])?;
        }
    }
    Ok(outcome)
}
