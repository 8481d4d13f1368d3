//! The event schema: every step an agent takes, as it reports it.
//!
//! Events are made by the agent (id: UUIDv7, so ids sort by time), kept in
//! its spool until the reporter acknowledges them, and deduplicated by id on
//! the reporter, so redelivery is always safe.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Longest `agent_id`, in bytes.
pub const MAX_AGENT_ID: usize = 128;

/// Whether `s` holds a NUL character, which [`Event::validate`] refuses in
/// every text field.
pub fn has_nul(s: &str) -> bool {
    s.as_bytes().contains(&0)
}

/// The one rule for agent ids, used by the agent's config, enrollment and
/// events alike: 1–[`MAX_AGENT_ID`] bytes of ASCII letters, digits and
/// `.`, `_`, `-`, `:`, `@` (an id appears in URLs and file names, so no
/// `/`, spaces or control characters).
pub fn valid_agent_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_AGENT_ID
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-:@".contains(&b))
}

/// What [`valid_agent_id`] asks for, for error messages.
pub const AGENT_ID_RULE: &str = "1-128 characters of A-Z a-z 0-9 . _ - : @";
/// Longest `message`, in bytes.
pub const MAX_MESSAGE: usize = 8 * 1024;
/// Longest short text field (`component`, versions, channel, wave), in bytes.
pub const MAX_SHORT: usize = 128;
/// Largest `details` object, serialised, in bytes.
pub const MAX_DETAILS: usize = 64 * 1024;

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// The agent started a pass.
    AgentStartup,
    /// The manifest was fetched and checked.
    ManifestCheck,
    /// An update is known but not taken yet (wave not open, gate closed, pinned).
    UpdateDeferred,
    /// An artifact was downloaded.
    UpdateDownload,
    /// An artifact's size and SHA-256 were checked.
    UpdateVerify,
    /// A new version was installed and swapped in.
    UpdateInstall,
    /// A new version's health check ran.
    UpdateHealthcheck,
    /// A version was rolled back.
    UpdateRollback,
    /// Migrations needed by this host were detected.
    MigrationDetection,
    /// Migrations were executed.
    MigrationExecution,
}

impl EventKind {
    /// Every kind, in order.
    pub const ALL: [EventKind; 10] = [
        EventKind::AgentStartup,
        EventKind::ManifestCheck,
        EventKind::UpdateDeferred,
        EventKind::UpdateDownload,
        EventKind::UpdateVerify,
        EventKind::UpdateInstall,
        EventKind::UpdateHealthcheck,
        EventKind::UpdateRollback,
        EventKind::MigrationDetection,
        EventKind::MigrationExecution,
    ];

    /// The statuses this kind may carry.
    pub fn statuses(self) -> &'static [EventStatus] {
        use EventStatus::*;
        match self {
            EventKind::AgentStartup => &[Success, Failed],
            EventKind::ManifestCheck => &[Success, Rejected, Failed],
            EventKind::UpdateDeferred => &[Info],
            EventKind::UpdateDownload
            | EventKind::UpdateVerify
            | EventKind::UpdateInstall
            | EventKind::UpdateHealthcheck
            | EventKind::UpdateRollback => &[Success, Failed],
            EventKind::MigrationDetection => &[Success, NotNeeded, Failed],
            EventKind::MigrationExecution => &[Success, Partial, Failed],
        }
    }

    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::AgentStartup => "agent_startup",
            EventKind::ManifestCheck => "manifest_check",
            EventKind::UpdateDeferred => "update_deferred",
            EventKind::UpdateDownload => "update_download",
            EventKind::UpdateVerify => "update_verify",
            EventKind::UpdateInstall => "update_install",
            EventKind::UpdateHealthcheck => "update_healthcheck",
            EventKind::UpdateRollback => "update_rollback",
            EventKind::MigrationDetection => "migration_detection",
            EventKind::MigrationExecution => "migration_execution",
        }
    }

    /// Whether this is a migration event (styled apart in the history).
    pub fn is_migration(self) -> bool {
        matches!(
            self,
            EventKind::MigrationDetection | EventKind::MigrationExecution
        )
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How it went.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventStatus {
    /// It worked (for `migration_detection`: migrations are needed).
    Success,
    /// It failed.
    Failed,
    /// The manifest was refused (signature, serial, expiry).
    Rejected,
    /// Informational (`update_deferred`).
    Info,
    /// No migration needed.
    NotNeeded,
    /// Some migrations ran, some did not.
    Partial,
}

impl EventStatus {
    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            EventStatus::Success => "success",
            EventStatus::Failed => "failed",
            EventStatus::Rejected => "rejected",
            EventStatus::Info => "info",
            EventStatus::NotNeeded => "not_needed",
            EventStatus::Partial => "partial",
        }
    }
}

impl fmt::Display for EventStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How bad it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Normal operation.
    Info,
    /// Needs a look, nothing broke.
    Warning,
    /// A step failed; the host kept or restored a working state.
    Error,
    /// The host may not be working.
    Critical,
}

impl Severity {
    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
            Severity::Critical => "critical",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// UUIDv7 made by the agent; the reporter deduplicates by it.
    pub id: Uuid,
    /// The agent that reports it.
    pub agent_id: String,
    /// When it happened.
    pub ts: DateTime<Utc>,
    /// What happened.
    pub kind: EventKind,
    /// How it went.
    pub status: EventStatus,
    /// How bad it is.
    pub severity: Severity,
    /// The part of the agent that reports, e.g. `download`, `migration`.
    pub component: String,
    /// One line for humans.
    pub message: String,
    /// The version running before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_version: Option<String>,
    /// The version being moved to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_version: Option<String>,
    /// The agent's channel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// The agent's wave in the current rollout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wave: Option<String>,
    /// Structured context: system info, error chain, paths, migration ids.
    #[serde(default)]
    pub details: serde_json::Map<String, serde_json::Value>,
}

/// A field of an event that is not acceptable.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct EventError {
    /// The field.
    pub field: &'static str,
    /// What is wrong.
    pub reason: String,
}

impl Event {
    /// A new event with a fresh UUIDv7, the current time and the severity
    /// its status implies (failed and rejected: error; otherwise info).
    pub fn new(
        agent_id: &str,
        kind: EventKind,
        status: EventStatus,
        component: &str,
        message: impl Into<String>,
    ) -> Event {
        let severity = match status {
            EventStatus::Failed | EventStatus::Rejected => Severity::Error,
            EventStatus::Partial => Severity::Warning,
            _ => Severity::Info,
        };
        Event {
            id: Uuid::now_v7(),
            agent_id: agent_id.to_owned(),
            ts: Utc::now(),
            kind,
            status,
            severity,
            component: component.to_owned(),
            message: message.into(),
            from_version: None,
            to_version: None,
            channel: None,
            wave: None,
            details: serde_json::Map::new(),
        }
    }

    /// Checks what a reporter refuses: a status that is not one of the
    /// kind's, a bad agent id, texts beyond their sizes or holding a NUL
    /// character (PostgreSQL's `text` cannot store one, so no backend
    /// takes it), `details` beyond [`MAX_DETAILS`].
    pub fn validate(&self) -> Result<(), EventError> {
        let err = |field, reason: String| Err(EventError { field, reason });
        if !self.kind.statuses().contains(&self.status) {
            let allowed: Vec<&str> = self.kind.statuses().iter().map(|s| s.as_str()).collect();
            return err(
                "status",
                format!(
                    "{} is not a status of {} (allowed: {})",
                    self.status,
                    self.kind,
                    allowed.join(", ")
                ),
            );
        }
        if !valid_agent_id(&self.agent_id) {
            return err("agent_id", format!("must be {AGENT_ID_RULE}"));
        }
        if self.message.len() > MAX_MESSAGE {
            return err(
                "message",
                format!("is {} bytes, at most {MAX_MESSAGE}", self.message.len()),
            );
        }
        if self.component.len() > MAX_SHORT {
            return err("component", format!("at most {MAX_SHORT} bytes"));
        }
        for (field, v) in [
            ("from_version", &self.from_version),
            ("to_version", &self.to_version),
            ("channel", &self.channel),
            ("wave", &self.wave),
        ] {
            if v.as_ref().is_some_and(|s| s.len() > MAX_SHORT) {
                return err(field, format!("at most {MAX_SHORT} bytes"));
            }
        }
        for (field, v) in [
            ("message", Some(&self.message)),
            ("component", Some(&self.component)),
            ("from_version", self.from_version.as_ref()),
            ("to_version", self.to_version.as_ref()),
            ("channel", self.channel.as_ref()),
            ("wave", self.wave.as_ref()),
        ] {
            if v.is_some_and(|s| has_nul(s)) {
                return err(
                    field,
                    "holds a NUL character (U+0000), which is not text to a database".into(),
                );
            }
        }
        let details = serde_json::to_vec(&self.details)
            .map(|v| v.len())
            .unwrap_or(usize::MAX);
        if details > MAX_DETAILS {
            return err(
                "details",
                format!("is {details} bytes serialised, at most {MAX_DETAILS}"),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_agent_id_rule() {
        for ok in [
            "web-01",
            "db_2.prod",
            "host@dc:1",
            &"a".repeat(MAX_AGENT_ID),
        ] {
            assert!(valid_agent_id(ok), "{ok}");
        }
        for bad in [
            "",
            "web/01",
            "web 01",
            "web\n01",
            "h\u{e9}te",
            &"a".repeat(MAX_AGENT_ID + 1),
        ] {
            assert!(!valid_agent_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn a_nul_character_in_any_text_is_refused_naming_the_field() {
        let base = Event::new(
            "web-01",
            EventKind::ManifestCheck,
            EventStatus::Success,
            "agent",
            "ok",
        );
        assert!(base.validate().is_ok());
        type Spoil = fn(&mut Event);
        let cases: [(&str, Spoil); 4] = [
            ("message", |e| e.message = "a\0b".into()),
            ("component", |e| e.component = "\0".into()),
            ("channel", |e| e.channel = Some("st\0able".into())),
            ("to_version", |e| e.to_version = Some("1.0\0".into())),
        ];
        for (field, spoil) in cases {
            let mut e = base.clone();
            spoil(&mut e);
            let err = e.validate().unwrap_err();
            assert_eq!(err.field, field);
            assert!(err.reason.contains("NUL"), "{}", err.reason);
        }
    }

    #[test]
    fn json_shape_and_validation() {
        let mut e = Event::new(
            "web-01",
            EventKind::MigrationExecution,
            EventStatus::Failed,
            "migration",
            "step 2 failed",
        );
        e.details
            .insert("migration_ids".into(), serde_json::json!(["config-v2"]));
        let v: serde_json::Value = serde_json::to_value(&e).unwrap();
        assert_eq!(v["kind"], "migration_execution");
        assert_eq!(v["status"], "failed");
        assert_eq!(v["severity"], "error");
        assert_eq!(e.id.get_version_num(), 7);
        assert!(e.validate().is_ok());
        let back: Event = serde_json::from_value(v).unwrap();
        assert_eq!(back, e);

        e.status = EventStatus::NotNeeded;
        assert_eq!(e.validate().unwrap_err().field, "status");
        e.status = EventStatus::Partial;
        e.message = "x".repeat(MAX_MESSAGE + 1);
        assert_eq!(e.validate().unwrap_err().field, "message");
    }

    #[test]
    fn unknown_kind_is_an_error() {
        let e = Event::new(
            "a",
            EventKind::AgentStartup,
            EventStatus::Success,
            "agent",
            "hi",
        );
        let mut v = serde_json::to_value(&e).unwrap();
        v["kind"] = "agent_exploded".into();
        let err = serde_json::from_value::<Event>(v).unwrap_err().to_string();
        assert!(err.contains("agent_exploded"), "{err}");
    }
}
