//! Outgoing notifications: webhooks told when something needs a person.
//!
//! **What.** A [`Notice`] for: a failure-rate gate that closed or reopened
//! ([`Notifier::observe_gate`], called wherever a gate is computed, and by
//! the [`watch`] loop every `check_every` so no one need ask), a manual
//! halt or resume (the call site's), an `update_rollback` and a failed
//! `migration_execution` (at ingestion, in the ingest transaction), agents
//! that fell silent for `stale_after` and a root or manifest that expires
//! within `expiry_warning` (both by [`watch`]).
//!
//! **Durable.** [`crate::db::notices::insert`] writes one `notify_outbox` row per receiver that
//! wants the kind, in the caller's transaction (a writer job: ingestion only
//! adds rows, it never waits for a receiver). [`deliver`] POSTs them from
//! its own task and deletes a row only after its receiver answered 2xx;
//! otherwise it retries after `retry_min`, doubling up to `retry_max`.
//!
//! **Bounded.** A row is dropped after `max_attempts` attempts, when older
//! than `max_age`, when more than `max_rows` wait (the oldest go), or when
//! its receiver is no longer configured; each drop is logged (warn) and
//! counted in `flotilla_notifications_dropped_total{receiver,reason}`.
//!
//! **Calling it.** Inside a database job: `db::notices::insert(conn,
//! notifier, &notice, now)?`; from a handler: `st.notifier.enqueue(&st.store,
//! notice).await`. Either is one line.

pub mod deliver;
pub mod watch;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use flotilla_protocol::api::{Gate, GateState};
use serde::Serialize;

use crate::db::DbError;
use crate::settings::NotifySettings;
use crate::store::Store;

/// Every notice kind, as receivers' `kinds` name them.
pub const KINDS: [&str; 8] = [
    "gate_closed",
    "gate_reopened",
    "manual_halt",
    "manual_resume",
    "rollback",
    "migration_failed",
    "agents_silent",
    "expiring",
];

/// Agent ids named in one `agents_silent` notice, at most.
pub const MAX_NAMED_AGENTS: u32 = 20;

/// Something a person should hear about. Serialised as the JSON body's
/// fields, beside `kind`, `summary` and `at`.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Notice {
    /// The failure-rate gate of a release closed: agents stop updating.
    GateClosed {
        /// Channel.
        channel: String,
        /// Release.
        release: String,
        /// The gate's reason.
        reason: String,
        /// Failed / reports.
        failure_rate: Option<f64>,
        /// Agents that failed.
        failed: u64,
        /// Agents that reported an outcome.
        reports: u64,
    },
    /// It opened again.
    GateReopened {
        /// Channel.
        channel: String,
        /// Release.
        release: String,
        /// The gate's reason.
        reason: String,
    },
    /// An admin halted a channel (or one release of it).
    ManualHalt {
        /// Channel.
        channel: String,
        /// Release, if only one.
        release: Option<String>,
        /// Who.
        by: String,
        /// Why.
        reason: String,
    },
    /// An admin lifted a manual halt.
    ManualResume {
        /// Channel.
        channel: String,
        /// Release, if only one.
        release: Option<String>,
        /// Who.
        by: String,
    },
    /// An agent rolled back a release.
    Rollback {
        /// The agent.
        agent_id: String,
        /// Its channel.
        channel: Option<String>,
        /// The release rolled back from.
        release: Option<String>,
        /// The event's status (`success`: rolled back; `failed`: the
        /// rollback itself failed).
        status: String,
        /// The event's message.
        message: String,
    },
    /// A migration failed on an agent.
    MigrationFailed {
        /// The agent.
        agent_id: String,
        /// Its channel.
        channel: Option<String>,
        /// The release whose migration failed.
        release: Option<String>,
        /// The event's message.
        message: String,
    },
    /// Agents not heard from for `stale_after`, since the last such notice.
    AgentsSilent {
        /// How many.
        count: u64,
        /// The first of them (at most [`MAX_NAMED_AGENTS`]).
        agents: Vec<String>,
        /// `stale_after`, e.g. `1h`.
        silent_for: String,
    },
    /// The trust root or the manifest expires soon.
    Expiring {
        /// `root` or `manifest`.
        what: String,
        /// Root version or manifest serial.
        version: u64,
        /// When.
        expires: DateTime<Utc>,
    },
}

impl Notice {
    /// Its kind (one of [`KINDS`]).
    pub fn kind(&self) -> &'static str {
        match self {
            Notice::GateClosed { .. } => "gate_closed",
            Notice::GateReopened { .. } => "gate_reopened",
            Notice::ManualHalt { .. } => "manual_halt",
            Notice::ManualResume { .. } => "manual_resume",
            Notice::Rollback { .. } => "rollback",
            Notice::MigrationFailed { .. } => "migration_failed",
            Notice::AgentsSilent { .. } => "agents_silent",
            Notice::Expiring { .. } => "expiring",
        }
    }

    /// One line for people (the Slack text).
    pub fn summary(&self) -> String {
        let rel = |c: &str, r: &Option<String>| match r {
            Some(r) => format!("{c} {r}"),
            None => c.to_owned(),
        };
        let on = |c: &Option<String>, r: &Option<String>| match (c, r) {
            (Some(c), r) => format!(" ({})", rel(c, r)),
            (None, Some(r)) => format!(" ({r})"),
            (None, None) => String::new(),
        };
        match self {
            Notice::GateClosed {
                channel,
                release,
                reason,
                ..
            } => format!("Gate closed on {channel} {release}: {reason}. Agents stop updating."),
            Notice::GateReopened {
                channel,
                release,
                reason,
            } => format!("Gate reopened on {channel} {release}: {reason}."),
            Notice::ManualHalt {
                channel,
                release,
                by,
                reason,
            } => format!("{by} halted {}: {reason}", rel(channel, release)),
            Notice::ManualResume {
                channel,
                release,
                by,
            } => format!("{by} lifted the halt of {}", rel(channel, release)),
            Notice::Rollback {
                agent_id,
                channel,
                release,
                status,
                message,
            } => {
                let what = if status == "failed" {
                    "failed to roll back"
                } else {
                    "rolled back"
                };
                format!("{agent_id} {what}{}: {message}", on(channel, release))
            }
            Notice::MigrationFailed {
                agent_id,
                channel,
                release,
                message,
            } => format!(
                "A migration failed on {agent_id}{}: {message}",
                on(channel, release)
            ),
            Notice::AgentsSilent {
                count,
                agents,
                silent_for,
            } => {
                let more = count.saturating_sub(agents.len() as u64);
                let tail = if more > 0 {
                    format!(" and {more} more")
                } else {
                    String::new()
                };
                format!(
                    "{count} agent(s) stopped reporting (silent for {silent_for}): {}{tail}",
                    agents.join(", ")
                )
            }
            Notice::Expiring {
                what,
                version,
                expires,
            } => {
                let n = if what == "root" { "version" } else { "serial" };
                format!(
                    "The {what} ({n} {version}) expires at {}: sign a new one before then, \
                     or agents refuse it",
                    expires.format("%Y-%m-%d %H:%M UTC")
                )
            }
        }
    }

    /// The JSON body: the notice's fields, `kind`, `summary` and `at`.
    pub fn body(&self, at: DateTime<Utc>) -> String {
        let mut v = serde_json::to_value(self).expect("a notice serialises");
        if let Some(o) = v.as_object_mut() {
            o.insert("summary".into(), self.summary().into());
            o.insert("at".into(), at.to_rfc3339().into());
        }
        v.to_string()
    }
}

#[derive(Default)]
struct Counters {
    sent: BTreeMap<String, u64>,
    failed: BTreeMap<String, u64>,
    dropped: BTreeMap<(String, &'static str), u64>,
}

/// What `/metrics` shows of the notifier.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    /// Delivered (2xx), per receiver.
    pub sent: Vec<(String, u64)>,
    /// Attempts that failed, per receiver.
    pub failed: Vec<(String, u64)>,
    /// Dropped, per receiver and reason.
    pub dropped: Vec<(String, &'static str, u64)>,
}

/// The receivers, the delivery task's wake-up and the counters; cheap to
/// clone.
#[derive(Clone, Default)]
pub struct Notifier(Arc<NotifierInner>);

#[derive(Default)]
struct NotifierInner {
    settings: NotifySettings,
    wake: tokio::sync::Notify,
    counters: Mutex<Counters>,
    gates: Mutex<HashMap<(String, String), GateState>>,
}

impl Notifier {
    /// A notifier for `settings`.
    pub fn new(settings: NotifySettings) -> Notifier {
        Notifier(Arc::new(NotifierInner {
            settings,
            ..NotifierInner::default()
        }))
    }

    /// The settings.
    pub fn settings(&self) -> &NotifySettings {
        &self.0.settings
    }

    /// Whether some receiver wants `kind` (else nothing need be built).
    pub fn wants(&self, kind: &str) -> bool {
        self.0
            .settings
            .webhooks
            .iter()
            .any(|w| w.kinds.is_empty() || w.kinds.iter().any(|k| k == kind))
    }

    /// Tells the delivery task that rows were queued (after the commit).
    pub fn wake(&self) {
        self.0.wake.notify_one();
    }

    /// Queues `notice` in the store and wakes the delivery task.
    pub async fn enqueue(&self, store: &Store, notice: Notice) -> Result<(), DbError> {
        if !self.wants(notice.kind()) {
            return Ok(());
        }
        let n = self.clone();
        let now = crate::db::now_micros();
        store.notify_insert(n, notice, now).await?;
        self.wake();
        Ok(())
    }

    /// Records a freshly computed gate of a pair the verified manifest
    /// names; a change from the state last seen (kept in `notify_state`
    /// across restarts) queues `gate_closed` or `gate_reopened`. Cheap when
    /// nothing changed; the check runs as a writer job of its own.
    pub fn observe_gate(&self, store: &Store, g: &Gate) {
        if !self.wants("gate_closed") && !self.wants("gate_reopened") {
            return;
        }
        let key = (g.channel.clone(), g.release.clone());
        {
            let mut seen = self.0.gates.lock().expect("gates");
            if seen.get(&key) == Some(&g.state) {
                return;
            }
            if seen.len() >= 1024 && !seen.contains_key(&key) {
                seen.clear();
            }
            seen.insert(key, g.state);
        }
        let (n, g, store) = (self.clone(), g.clone(), store.clone());
        tokio::spawn(async move {
            let now = crate::db::now_micros();
            match store.notify_record_gate(n.clone(), g, now).await {
                Ok(true) => n.wake(),
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "recording a gate change failed");
                    // Look again next time.
                    n.0.gates.lock().expect("gates").clear();
                }
            }
        });
    }

    fn count(&self, f: impl FnOnce(&mut Counters)) {
        f(&mut self.0.counters.lock().expect("counters"));
    }

    /// Counts a drop and logs it.
    pub fn dropped(&self, receiver: &str, reason: &'static str) {
        tracing::warn!(receiver, reason, "a notification was dropped undelivered");
        self.count(|c| *c.dropped.entry((receiver.to_owned(), reason)).or_default() += 1);
    }

    /// The counters so far.
    pub fn stats(&self) -> Stats {
        let c = self.0.counters.lock().expect("counters");
        Stats {
            sent: c.sent.iter().map(|(k, v)| (k.clone(), *v)).collect(),
            failed: c.failed.iter().map(|(k, v)| (k.clone(), *v)).collect(),
            dropped: c
                .dropped
                .iter()
                .map(|((r, why), v)| (r.clone(), *why, *v))
                .collect(),
        }
    }
}
