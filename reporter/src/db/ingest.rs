//! Storing a batch of events and keeping the derived state current.
//!
//! Events are inserted with `INSERT OR IGNORE` on (agent, id), so
//! redelivery stores nothing twice, and one agent's ids never shadow
//! another's. From the *new* events the same job derives:
//!
//! - the agent's row: last seen, version, channel, wave, labels and newest
//!   error;
//! - `agent_release`: the agent's state in the rollout of a channel's
//!   release (see [`release_state`]), except that an `update_deferred`
//!   never hides an outcome (healthy, failed, rolled back).
//!
//! **Order.** Newer state is what the reporter *received* later: a later
//! batch over an earlier one, and within a batch a later event over an
//! earlier one (the agent's spool delivers in order). The agent's `ts` is
//! stored and shown, but never decides what is current: a clock ahead (or a
//! forged `ts`) cannot pin state. `agent_release.ts` and `agents.state_ts`
//! are receipt times.
//!
//! **Bounds.** An agent keeps at most [`MAX_RELEASES_PER_AGENT`] rollout
//! rows; the oldest received go first.
//!
//! Thresholds and waves in `details` are ignored: they come only from the
//! verified manifest ([`crate::channels`]). The `details` keys read here are
//! [`flotilla_protocol::api::details`].

use std::collections::BTreeMap;

use bytes::Bytes;
use flotilla_protocol::api::details as keys;
use flotilla_protocol::{Event, EventKind, EventStatus, Severity};
use rusqlite::{params, Connection, OptionalExtension};
use serde_json::{Map, Value};

use super::{to_micros, DbError};
use crate::notify::{Notice, Notifier};

/// What a batch did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IngestOutcome {
    /// Stored for the first time.
    pub new: usize,
    /// Already stored.
    pub duplicates: usize,
    /// Notices were queued ([`crate::notify`]): wake the delivery task.
    pub notices: bool,
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

/// The rollout state an event of `kind` and `status` puts its agent in, if any.
///
/// | event | state |
/// |---|---|
/// | `update_deferred` | waiting |
/// | `update_download`, `update_verify` (any status), `update_install` success | installing |
/// | `update_healthcheck` success | on release |
/// | `update_install` failed, `update_healthcheck` failed, `migration_execution` failed | failed |
/// | `update_rollback` (any status) | rolled back |
pub fn release_state(kind: EventKind, status: EventStatus) -> Option<ReleaseState> {
    use EventKind::*;
    use EventStatus::*;
    Some(match (kind, status) {
        (UpdateDeferred, _) => ReleaseState::Waiting,
        (UpdateDownload | UpdateVerify, _) | (UpdateInstall, Success) => ReleaseState::Installing,
        (UpdateHealthcheck, Success) => ReleaseState::OnRelease,
        (UpdateInstall | UpdateHealthcheck | MigrationExecution, Failed) => ReleaseState::Failed,
        (UpdateRollback, _) => ReleaseState::RolledBack,
        _ => return None,
    })
}

/// The severity stored for an event: what the agent said, except that an
/// `update_rollback` is at least a warning (a successful rollback still
/// means the release failed here, so "warning and worse" must show it).
pub fn stored_severity(kind: EventKind, severity: Severity) -> Severity {
    match kind {
        EventKind::UpdateRollback => severity.max(Severity::Warning),
        _ => severity,
    }
}

/// A text of a [`Batch`]: a span of its request body (most strings need
/// no unescaping), or its own copy.
#[derive(Clone, Debug)]
pub enum Text {
    /// `body[start..end]`.
    Span(u32, u32),
    /// Unescaped, or not from a body.
    Owned(Box<str>),
}

/// One event, checked and ready to store (see [`Batch`]).
#[derive(Clone, Debug)]
pub struct Row {
    /// The event id.
    pub id: [u8; 16],
    /// `ts`, µs.
    pub ts: i64,
    /// What happened.
    pub kind: EventKind,
    /// How it went.
    pub status: EventStatus,
    /// How bad.
    pub severity: Severity,
    /// Reporting part.
    pub component: Text,
    /// For humans.
    pub message: Text,
    /// Version before.
    pub from_version: Option<Text>,
    /// Version moved to.
    pub to_version: Option<Text>,
    /// Channel.
    pub channel: Option<Text>,
    /// Wave.
    pub wave: Option<Text>,
    /// `details`, as the JSON text to store (an object).
    pub details: Text,
    /// `details.release`, if a string.
    pub release: Option<Text>,
    /// `details.agent_version`, if a string.
    pub agent_version: Option<Text>,
    /// `details` holds `labels`: [`ingest`] reads it from the parsed
    /// `details`.
    pub special: bool,
}

/// The events of one request, checked, with the body their texts point into.
#[derive(Clone, Debug, Default)]
pub struct Batch {
    /// The request body (or empty).
    pub body: Bytes,
    /// The events.
    pub rows: Vec<Row>,
}

impl Batch {
    /// The text `t` stands for.
    pub fn text<'a>(&'a self, t: &'a Text) -> &'a str {
        match t {
            Text::Owned(s) => s,
            // Spans are made from `&str`s borrowed from the body, so they
            // are in bounds and on character boundaries.
            Text::Span(a, b) => std::str::from_utf8(&self.body[*a as usize..*b as usize])
                .expect("a span of a parsed string"),
        }
    }

    pub(crate) fn opt<'a>(&'a self, t: &'a Option<Text>) -> Option<&'a str> {
        t.as_ref().map(|t| self.text(t))
    }

    /// A batch of already parsed events (`details` serialised again).
    pub fn from_events(events: &[Event]) -> Batch {
        let own = |s: &str| Text::Owned(s.into());
        let own_opt = |s: &Option<String>| s.as_deref().map(own);
        let rows = events
            .iter()
            .map(|e| {
                let str_of = |k: &str| match e.details.get(k) {
                    Some(Value::String(s)) => Some(own(s)),
                    _ => None,
                };
                Row {
                    id: *e.id.as_bytes(),
                    ts: to_micros(e.ts),
                    kind: e.kind,
                    status: e.status,
                    severity: e.severity,
                    component: own(&e.component),
                    message: own(&e.message),
                    from_version: own_opt(&e.from_version),
                    to_version: own_opt(&e.to_version),
                    channel: own_opt(&e.channel),
                    wave: own_opt(&e.wave),
                    details: Text::Owned(
                        serde_json::to_string(&e.details)
                            .expect("a map serialises")
                            .into(),
                    ),
                    release: str_of(keys::RELEASE),
                    agent_version: str_of(keys::AGENT_VERSION),
                    special: is_special(&e.details),
                }
            })
            .collect();
        Batch {
            body: Bytes::new(),
            rows,
        }
    }
}

/// The `details` keys that [`ingest`] reads from the parsed object rather
/// than from [`Row`]'s fields.
pub const SPECIAL_KEYS: [&str; 1] = [keys::LABELS];

/// Most `agent_release` rows one agent keeps (rollouts it reported on).
pub const MAX_RELEASES_PER_AGENT: usize = 16;

fn is_special(details: &Map<String, Value>) -> bool {
    SPECIAL_KEYS.iter().any(|k| details.contains_key(*k))
}

/// The release an event is about: `details.release`, else `from_version`
/// for a rollback, else `to_version`.
pub(crate) fn event_release<'a>(b: &'a Batch, r: &'a Row) -> Option<&'a str> {
    if let Some(rel) = b.opt(&r.release) {
        return Some(rel);
    }
    if r.kind == EventKind::UpdateRollback {
        return b.opt(&r.from_version);
    }
    b.opt(&r.to_version)
}

/// The version the agent runs according to this event, if it says.
pub(crate) fn running_version<'a>(b: &'a Batch, r: &'a Row) -> Option<&'a str> {
    if let Some(v) = b.opt(&r.agent_version) {
        return Some(v);
    }
    match (r.kind, r.status) {
        (EventKind::UpdateHealthcheck, EventStatus::Success)
        | (EventKind::UpdateRollback, EventStatus::Success) => b.opt(&r.to_version),
        _ => None,
    }
}

pub(crate) fn labels_json(details: &Map<String, Value>) -> Option<String> {
    match details.get(keys::LABELS) {
        Some(Value::Object(m)) if m.values().all(Value::is_string) => {
            Some(Value::Object(m.clone()).to_string())
        }
        _ => None,
    }
}

/// What a batch's new events change in their agent's row, in batch
/// (receipt) order: each of version, channel, wave and labels is the last
/// one given, the error the last one of severity error or worse. `None`
/// keeps the stored value.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct AgentChange<'a> {
    pub version: Option<&'a str>,
    pub channel: Option<&'a str>,
    pub wave: Option<&'a str>,
    /// As stored: JSON text.
    pub labels: Option<String>,
    pub error: Option<&'a str>,
    /// The failing event's time, never later than receipt (`now`), µs.
    pub error_at: Option<i64>,
}

/// The [`AgentChange`] of `fresh` (the new events of `b`); `now`: receipt
/// time, µs. `details` is parsed only for the events that carry labels.
pub(crate) fn agent_change<'a>(b: &'a Batch, fresh: &[&'a Row], now: i64) -> AgentChange<'a> {
    let mut c = AgentChange::default();
    for r in fresh {
        if let Some(v) = running_version(b, r) {
            c.version = Some(v);
        }
        if let Some(ch) = b.opt(&r.channel) {
            c.channel = Some(ch);
        }
        if let Some(w) = b.opt(&r.wave) {
            c.wave = Some(w);
        }
        if r.special {
            let details = serde_json::from_str::<Map<String, Value>>(b.text(&r.details)).ok();
            if let Some(l) = details.as_ref().and_then(labels_json) {
                c.labels = Some(l);
            }
        }
        if r.severity >= Severity::Error {
            c.error = Some(b.text(&r.message));
            // shown as the agent's time, but never later than receipt
            c.error_at = Some(r.ts.min(now));
        }
    }
    c
}

/// Stores the events of `batch` (already validated and checked to be
/// `agent_id`'s) and updates the derived state; queues a notice for each
/// new rollback and failed migration. `now`: receipt time, µs.
pub fn ingest(
    conn: &Connection,
    agent_id: &str,
    batch: &Batch,
    now: i64,
    notifier: &Notifier,
) -> Result<IngestOutcome, DbError> {
    let b = batch;
    let mut insert = conn.prepare_cached(
        "INSERT OR IGNORE INTO events (id, agent_id, ts, kind, status, severity, component,
             message, from_version, to_version, channel, wave, details)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
    )?;
    let mut fresh: Vec<&Row> = Vec::with_capacity(b.rows.len());
    for r in &b.rows {
        let n = insert.execute(params![
            r.id.as_slice(),
            agent_id,
            r.ts,
            r.kind.as_str(),
            r.status.as_str(),
            stored_severity(r.kind, r.severity).as_str(),
            b.text(&r.component),
            b.text(&r.message),
            b.opt(&r.from_version),
            b.opt(&r.to_version),
            b.opt(&r.channel),
            b.opt(&r.wave),
            b.text(&r.details),
        ])?;
        if n == 1 {
            fresh.push(r);
        }
    }
    let mut outcome = IngestOutcome {
        new: fresh.len(),
        duplicates: b.rows.len() - fresh.len(),
        notices: false,
    };
    if fresh.is_empty() {
        // Only redelivery: the agent was heard from, nothing else changed.
        conn.prepare_cached("UPDATE agents SET last_seen = ?2 WHERE agent_id = ?1")?
            .execute(params![agent_id, now])?;
        return Ok(outcome);
    }

    let stored_channel: Option<String> = conn
        .prepare_cached("SELECT channel FROM agents WHERE agent_id = ?1")?
        .query_row([agent_id], |r| r.get(0))
        .optional()?
        .flatten();

    // Batch order is receipt order (see the module doc).
    let AgentChange {
        version,
        channel,
        wave,
        labels,
        error,
        error_at,
    } = agent_change(b, &fresh, now);
    conn.prepare_cached(
        "UPDATE agents SET last_seen = ?2, event_count = event_count + ?3,
             version = COALESCE(?4, version), channel = COALESCE(?5, channel),
             wave = COALESCE(?6, wave), labels = COALESCE(?7, labels), state_ts = ?2,
             last_error = COALESCE(?8, last_error), last_error_ts = COALESCE(?9, last_error_ts)
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
        error,
        error_at
    ])?;

    // Rollout state, the last event of the batch per (channel, release).
    let fallback_channel = channel.map(str::to_owned).or(stored_channel);
    let mut states: BTreeMap<(&str, &str), (&Row, ReleaseState)> = BTreeMap::new();
    for r in &fresh {
        let Some(release) = event_release(b, r) else {
            continue;
        };
        let Some(ch) = b.opt(&r.channel).or(fallback_channel.as_deref()) else {
            continue;
        };
        if let Some(s) = release_state(r.kind, r.status) {
            states.insert((ch, release), (r, s));
        }
    }
    if !states.is_empty() {
        let mut up = conn.prepare_cached(
            "INSERT INTO agent_release (channel, release, agent_id, state, wave, ts, message)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT (channel, release, agent_id) DO UPDATE SET
                 state = CASE WHEN excluded.state = 'waiting'
                                   AND agent_release.state IN ('on_release', 'failed', 'rolled_back')
                              THEN agent_release.state ELSE excluded.state END,
                 wave = COALESCE(excluded.wave, agent_release.wave),
                 ts = max(excluded.ts, agent_release.ts),
                 message = CASE WHEN excluded.state = 'waiting'
                                     AND agent_release.state IN ('on_release', 'failed', 'rolled_back')
                                THEN agent_release.message ELSE excluded.message END",
        )?;
        for ((ch, release), (r, s)) in states {
            up.execute(params![
                ch,
                release,
                agent_id,
                s.as_str(),
                b.opt(&r.wave).or(wave),
                now,
                b.text(&r.message)
            ])?;
        }
        // The agent's oldest rollout rows beyond the bound go.
        conn.prepare_cached(
            "DELETE FROM agent_release WHERE agent_id = ?1 AND (channel, release) IN (
                 SELECT channel, release FROM agent_release WHERE agent_id = ?1
                 ORDER BY ts DESC, channel DESC, release DESC LIMIT -1 OFFSET ?2)",
        )?
        .execute(params![agent_id, MAX_RELEASES_PER_AGENT as i64])?;
    }
    for r in &fresh {
        let notice = match (r.kind, r.status) {
            (EventKind::UpdateRollback, status) if notifier.wants("rollback") => Notice::Rollback {
                agent_id: agent_id.to_owned(),
                channel: b
                    .opt(&r.channel)
                    .or(fallback_channel.as_deref())
                    .map(Into::into),
                release: event_release(b, r).map(Into::into),
                status: status.as_str().to_owned(),
                message: b.text(&r.message).to_owned(),
            },
            (EventKind::MigrationExecution, EventStatus::Failed)
                if notifier.wants("migration_failed") =>
            {
                Notice::MigrationFailed {
                    agent_id: agent_id.to_owned(),
                    channel: b
                        .opt(&r.channel)
                        .or(fallback_channel.as_deref())
                        .map(Into::into),
                    release: event_release(b, r).map(Into::into),
                    message: b.text(&r.message).to_owned(),
                }
            }
            _ => continue,
        };
        outcome.notices |= super::notices::insert(conn, notifier, &notice, now)?;
    }
    Ok(outcome)
}
