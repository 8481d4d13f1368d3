//! Making events and putting them in the spool.
//!
//! [`Events`] fills in what every event of a pass shares (agent id, the
//! running version as `from_version`, channel, wave, and the
//! `agent_version` detail the reporter reads) and appends each event to the
//! spool durably. A spool that cannot be written (full disk) is logged and
//! does not stop the pass: events are evidence, not a precondition.

use flotilla_protocol::api::details;
use flotilla_protocol::{Event, EventKind, EventStatus, Severity};
use serde_json::{json, Value};

use crate::error::chain;
use crate::spool::Spool;
use crate::version::VERSION;

/// The event sink of one pass.
pub struct Events {
    spool: Option<Spool>,
    agent_id: String,
    /// The channel the agent follows (set on every event).
    pub channel: Option<String>,
    /// The agent's wave in the current rollout, once known.
    pub wave: Option<String>,
    /// Channel facts copied from the verified manifest into `update_*` events.
    pub channel_details: serde_json::Map<String, Value>,
    emitted: Vec<Event>,
}

impl Events {
    /// Events for `agent_id`, written to `spool` (or only kept in memory when
    /// there is no spool, e.g. for `rollback` when the spool cannot open).
    pub fn new(spool: Option<Spool>, agent_id: &str, channel: Option<&str>) -> Self {
        Events {
            spool,
            agent_id: agent_id.to_owned(),
            channel: channel.map(str::to_owned),
            wave: None,
            channel_details: serde_json::Map::new(),
            emitted: Vec::new(),
        }
    }

    /// A new event with the shared fields filled in.
    pub fn event(
        &self,
        kind: EventKind,
        status: EventStatus,
        component: &str,
        message: impl Into<String>,
    ) -> Event {
        let mut e = Event::new(&self.agent_id, kind, status, component, message);
        e.from_version = Some(VERSION.to_owned());
        e.channel = self.channel.clone();
        e.wave = self.wave.clone();
        e.details
            .insert(details::AGENT_VERSION.into(), json!(VERSION));
        if kind.as_str().starts_with("update_") {
            for (k, v) in &self.channel_details {
                e.details.insert(k.clone(), v.clone());
            }
        }
        e
    }

    /// Appends `event` to the spool.
    pub fn emit(&mut self, event: Event) {
        tracing::info!(
            kind = %event.kind,
            status = %event.status,
            to = event.to_version.as_deref().unwrap_or(""),
            "{}",
            event.message
        );
        if let Some(spool) = self.spool.as_mut() {
            if let Err(e) = spool.append(&event) {
                tracing::warn!("event spool: cannot append: {e}");
            }
        }
        self.emitted.push(event);
    }

    /// Shorthand: make and emit.
    pub fn info(
        &mut self,
        kind: EventKind,
        status: EventStatus,
        component: &str,
        message: impl Into<String>,
        to_version: Option<&str>,
    ) {
        let mut e = self.event(kind, status, component, message);
        e.to_version = to_version.map(str::to_owned);
        self.emit(e);
    }

    /// Emits a failure event carrying the error chain.
    pub fn failure(
        &mut self,
        kind: EventKind,
        status: EventStatus,
        component: &str,
        err: &(dyn std::error::Error + 'static),
        to_version: Option<&str>,
    ) {
        let mut e = self.event(kind, status, component, err.to_string());
        e.to_version = to_version.map(str::to_owned);
        e.details
            .insert(details::ERROR_CHAIN.into(), json!(chain(err)));
        if status == EventStatus::Failed && kind == EventKind::UpdateRollback {
            e.severity = Severity::Critical;
        }
        self.emit(e);
    }

    /// Everything emitted by this pass so far.
    pub fn emitted(&self) -> &[Event] {
        &self.emitted
    }

    /// The spool, for event delivery.
    pub fn spool_mut(&mut self) -> Option<&mut Spool> {
        self.spool.as_mut()
    }

    /// The agent id events carry.
    pub fn agent_id(&self) -> &str {
        &self.agent_id
    }
}

/// Facts about the host for `agent_startup` and failure events (see
/// [`crate::sysinfo`]).
pub fn system_info(state_dir: &std::path::Path) -> Value {
    Value::Object(crate::sysinfo::collect(state_dir))
}
