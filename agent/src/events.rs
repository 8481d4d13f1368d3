//! Making events and putting them in the spool.
//!
//! [`Events`] fills in what every event of a pass shares (agent id, the
//! running version as `from_version`, channel, wave, and the
//! `agent_version` detail the reporter reads) and appends each event to the
//! spool durably. A spool that cannot be written (full disk) is logged and
//! does not stop the pass: events are evidence, not a precondition.

use std::path::Path;

use chrono::{DateTime, Utc};
use flotilla_protocol::api::details;
use flotilla_protocol::sources::Artifact;
use flotilla_protocol::{redact_urls, Event, EventKind, EventStatus, Severity};
use serde_json::{json, Map, Value};
use url::Url;

use crate::config::Config;
use crate::decide::Plan;
use crate::error::{Error, Result};
use crate::spool::Spool;
use crate::state::Pending;
use crate::trust::Verified;
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
}

impl Events {
    /// Events for `agent_id`, written to `spool` (or only logged when there is
    /// no spool, e.g. when the spool cannot open).
    pub fn new(spool: Option<Spool>, agent_id: &str, channel: Option<&str>) -> Self {
        Events {
            spool,
            agent_id: agent_id.to_owned(),
            channel: channel.map(str::to_owned),
            wave: None,
            channel_details: serde_json::Map::new(),
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
    pub fn emit(&mut self, mut event: Event) {
        // The last line of defence: whatever a constructor put in, no URL
        // leaves the host with its credentials.
        event.message = redact_urls(&event.message).into_owned();
        event.details.values_mut().for_each(redact_value);
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
        let e = self.failure_event(kind, status, component, err, to_version);
        self.emit(e);
    }

    fn failure_event(
        &self,
        kind: EventKind,
        status: EventStatus,
        component: &str,
        err: &(dyn std::error::Error + 'static),
        to_version: Option<&str>,
    ) -> Event {
        let mut e = self.event(kind, status, component, err.to_string());
        e.to_version = to_version.map(str::to_owned);
        e.details
            .insert(details::ERROR_CHAIN.into(), error_chain(err));
        if status == EventStatus::Failed && kind == EventKind::UpdateRollback {
            e.severity = Severity::Critical;
        }
        e
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
pub fn system_info(state_dir: &Path) -> Value {
    Value::Object(crate::sysinfo::collect(state_dir))
}

/// The events of a pass, one constructor per event (kind and status): the
/// one place that knows each one's message, versions and `details` keys
/// (all from [`flotilla_protocol::api::details`]).
impl Events {
    /// `agent_startup` success: the first pass of this version on this host.
    pub(crate) fn agent_started(&mut self, state_dir: &Path, config: &Config) {
        let mut e = self.event(
            EventKind::AgentStartup,
            EventStatus::Success,
            "agent",
            format!("flotilla-agent {VERSION} started"),
        );
        e.details
            .insert(details::SYSTEM.into(), system_info(state_dir));
        e.details
            .insert(details::LABELS.into(), json!(config.labels));
        e.details
            .insert(details::CONFIG_SCHEMA.into(), json!(config.config_schema));
        self.emit(e);
    }

    /// `agent_startup` failure: the config does not load.
    pub(crate) fn config_failed(&mut self, err: &Error) {
        self.failure(
            EventKind::AgentStartup,
            EventStatus::Failed,
            "config",
            err,
            None,
        );
    }

    /// `migration_detection` failure: the migration state cannot be read or
    /// written, so no migration could be considered.
    pub(crate) fn migration_state_failed(
        &mut self,
        err: &crate::migrations::Error,
        system: Map<String, Value>,
    ) {
        let mut e = self.event(
            EventKind::MigrationDetection,
            EventStatus::Failed,
            "migration",
            format!(
                "cannot read or write the migration state: {}",
                flotilla_protocol::chain_text(err)
            ),
        );
        e.to_version = Some(VERSION.into());
        e.details
            .insert(details::ERROR_CHAIN.into(), error_chain(err));
        e.details
            .insert(details::SYSTEM.into(), Value::Object(system));
        self.emit(e);
    }

    /// `migration_execution` failure (critical): a rollback could not
    /// restore the migration backup of `to`.
    pub(crate) fn restore_failed(&mut self, to: &str, err: &crate::migrations::Error) {
        let mut e = self.event(
            EventKind::MigrationExecution,
            EventStatus::Failed,
            "migration",
            format!(
                "restoring the migration backup of {to} failed: {}",
                flotilla_protocol::chain_text(err)
            ),
        );
        e.severity = Severity::Critical;
        e.to_version = Some(to.to_owned());
        e.details
            .insert(details::ERROR_CHAIN.into(), error_chain(err));
        self.emit(e);
    }

    /// `manifest_check` success.
    pub(crate) fn manifest_accepted(&mut self, v: &Verified, origin: &str) {
        let serial = v.manifest.serial;
        let mut e = self.event(
            EventKind::ManifestCheck,
            EventStatus::Success,
            "manifest",
            format!(
                "manifest serial {serial} accepted (root v{})",
                v.root.version()
            ),
        );
        e.details.insert(details::SERIAL.into(), json!(serial));
        e.details
            .insert(details::ROOT_VERSION.into(), json!(v.root.version()));
        e.details.insert(details::ORIGIN.into(), json!(origin));
        e.details
            .insert(details::EXPIRES.into(), json!(v.manifest.expires));
        if let Some(forgot) = v.forgot_serial {
            e.message.push_str(&format!(
                "; forgot serial {forgot} of replaced release keys"
            ));
            e.details
                .insert(details::FORGOT_SERIAL.into(), json!(forgot));
        }
        self.emit(e);
    }

    /// `manifest_check` rejected (the manifest or its root chain was
    /// refused) or failed (the source could not be read).
    /// A source outage ([`Error::is_transient`]) is a warning: the next
    /// pass tries again and nothing changed on the host.
    pub(crate) fn manifest_failed(&mut self, err: &Error) {
        let status = if err.is_rejection() {
            EventStatus::Rejected
        } else {
            EventStatus::Failed
        };
        let mut e = self.failure_event(EventKind::ManifestCheck, status, "manifest", err, None);
        if err.is_transient() {
            e.severity = Severity::Warning;
        }
        self.emit(e);
    }

    /// `update_deferred`: an update is known and not taken now.
    pub(crate) fn deferred(
        &mut self,
        summary: &str,
        target: Option<&semver::Version>,
        eligible_at: Option<DateTime<Utc>>,
        reason: &str,
    ) {
        let mut e = self.event(
            EventKind::UpdateDeferred,
            EventStatus::Info,
            "decide",
            summary,
        );
        e.to_version = target.map(|t| t.to_string());
        if let Some(at) = eligible_at {
            e.details.insert(details::ELIGIBLE_AT.into(), json!(at));
        }
        e.details.insert(details::REASON.into(), json!(reason));
        self.emit(e);
    }

    /// `update_download` and `update_verify` successes: the artifact of
    /// `to` is here and matches the signed manifest.
    pub(crate) fn downloaded(&mut self, to: &str, url: &Url, a: &Artifact, serial: u64) {
        for (kind, msg) in [
            (
                EventKind::UpdateDownload,
                format!("downloaded {to} from {}", redact_urls(url.as_str())),
            ),
            (
                EventKind::UpdateVerify,
                format!(
                    "{to}: size {} and SHA-256 {} match the signed manifest",
                    a.size, a.sha256
                ),
            ),
        ] {
            let mut e = self.event(kind, EventStatus::Success, "download", msg);
            e.to_version = Some(to.to_owned());
            e.details
                .insert(details::URL.into(), json!(redact_urls(url.as_str())));
            e.details.insert(details::SIZE.into(), json!(a.size));
            e.details.insert(details::SHA256.into(), json!(a.sha256));
            e.details.insert(details::SERIAL.into(), json!(serial));
            self.emit(e);
        }
    }

    /// An `update_download`, `update_verify` or `update_install` failure of
    /// the update to `to`.
    pub(crate) fn update_step_failed(&mut self, kind: EventKind, err: &Error, to: &str) {
        self.failure(
            kind,
            EventStatus::Failed,
            kind.as_str().trim_start_matches("update_"),
            err,
            Some(to),
        );
    }

    /// `update_install` success: `to` is swapped in.
    pub(crate) fn installed(&mut self, to: &str, path: &Path, plan: &Plan) {
        let mut e = self.event(
            EventKind::UpdateInstall,
            EventStatus::Success,
            "install",
            format!("installed {to} and swapped it in; its first pass checks its health"),
        );
        e.to_version = Some(to.to_owned());
        e.details.insert(details::PATH.into(), json!(path));
        e.details.insert(details::PINNED.into(), json!(plan.pinned));
        if plan.release != plan.final_release {
            e.details.insert(
                details::STEPPING_STONE_TO.into(),
                json!(plan.final_release.to_string()),
            );
        }
        self.emit(e);
    }

    /// `update_install` failure: the pass that installed `to` was killed
    /// before its swap; the update is retried.
    pub(crate) fn install_interrupted(&mut self, to: &str) {
        let mut e = self.event(
            EventKind::UpdateInstall,
            EventStatus::Failed,
            "install",
            format!("the update to {to} was interrupted before the swap; it is retried"),
        );
        e.to_version = Some(to.to_owned());
        self.emit(e);
    }

    /// `update_healthcheck` success: `p.to` is committed (and what pruning
    /// removed, or why it could not).
    pub(crate) fn committed(&mut self, p: &Pending, pruned: &Result<Vec<String>>) {
        let mut e = self.event(
            EventKind::UpdateHealthcheck,
            EventStatus::Success,
            "health",
            format!("{} is healthy; committed", p.to),
        );
        e.from_version = Some(p.from.clone());
        e.to_version = Some(p.to.clone());
        match pruned {
            Ok(r) => e.details.insert(details::PRUNED.into(), json!(r)),
            Err(err) => e
                .details
                .insert(details::PRUNE_ERROR.into(), json!(err.to_string())),
        };
        self.emit(e);
    }

    /// `update_healthcheck` failure: `p.to` failed its own health check.
    pub(crate) fn unhealthy(&mut self, p: &Pending, err: &Error, attempts_left: u32) {
        let mut e = self.event(
            EventKind::UpdateHealthcheck,
            EventStatus::Failed,
            "health",
            format!("health check of {} failed: {err}", p.to),
        );
        e.from_version = Some(p.from.clone());
        e.to_version = Some(p.to.clone());
        e.details
            .insert(details::ERROR_CHAIN.into(), error_chain(err));
        e.details
            .insert(details::ATTEMPTS_LEFT.into(), json!(attempts_left));
        self.emit(e);
    }

    /// `update_rollback` success: back from `p.to` to `p.from`.
    pub(crate) fn rolled_back(&mut self, p: &Pending, reason: &str) {
        let mut e = self.event(
            EventKind::UpdateRollback,
            EventStatus::Success,
            "rollback",
            format!("rolled back from {} to {}: {reason}", p.to, p.from),
        );
        // The release failed here: "warning and worse" must show it.
        e.severity = Severity::Warning;
        e.from_version = Some(p.to.clone());
        e.to_version = Some(p.from.clone());
        e.wave = p.wave.clone();
        e.details.insert(details::RELEASE.into(), json!(p.to));
        e.details.insert(details::REASON.into(), json!(reason));
        self.emit(e);
    }

    /// `update_rollback` failure (critical): no rollback to `p.from`.
    pub(crate) fn rollback_failed(&mut self, p: &Pending, err: &Error) {
        self.failure(
            EventKind::UpdateRollback,
            EventStatus::Failed,
            "rollback",
            err,
            Some(&p.from),
        );
    }
}

/// Strips URL userinfo from every string in `v`.
fn redact_value(v: &mut Value) {
    match v {
        Value::String(s) => {
            if let std::borrow::Cow::Owned(r) = redact_urls(s) {
                *s = r;
            }
        }
        Value::Array(a) => a.iter_mut().for_each(redact_value),
        Value::Object(o) => o.values_mut().for_each(redact_value),
        _ => {}
    }
}

/// The `error_chain` detail: [`flotilla_protocol::chain`], each message
/// without URL credentials.
fn error_chain(err: &(dyn std::error::Error + 'static)) -> Value {
    json!(flotilla_protocol::chain(err)
        .iter()
        .map(|t| redact_urls(t).into_owned())
        .collect::<Vec<_>>())
}
