//! The agent's row follows its newest events, not the order of delivery.

mod common;

use chrono::Duration;
use common::{event, Server};
use flotilla_protocol::api::AgentSummary;
use flotilla_protocol::{EventKind, EventStatus, Severity};

#[tokio::test]
async fn late_delivered_old_events_do_not_undo_newer_state() {
    let s = Server::start().await;
    let t = s.enroll("web-01").await;
    let mut new = event("web-01", EventKind::AgentStartup, EventStatus::Success);
    new.details.insert("agent_version".into(), "2.0.0".into());
    new.wave = Some("early".into());
    let mut new_err = event("web-01", EventKind::UpdateDownload, EventStatus::Failed);
    new_err.message = "newest error".into();
    new_err.ts = new.ts;
    s.post_events(&t, &[new.clone(), new_err]).await;

    // a spool that was offline delivers older events afterwards
    let mut old = event("web-01", EventKind::AgentStartup, EventStatus::Success);
    old.ts = new.ts - Duration::hours(1);
    old.details.insert("agent_version".into(), "1.0.0".into());
    old.wave = Some("canary".into());
    let mut old_err = event("web-01", EventKind::ManifestCheck, EventStatus::Failed);
    old_err.ts = old.ts;
    old_err.severity = Severity::Critical;
    old_err.message = "old error".into();
    s.post_events(&t, &[old, old_err]).await;

    let a: AgentSummary = s.admin_json("/api/v1/agents/web-01").await;
    assert_eq!(a.version.as_deref(), Some("2.0.0"));
    assert_eq!(a.wave.as_deref(), Some("early"));
    assert_eq!(a.last_error.as_deref(), Some("newest error"));
    assert_eq!(a.event_count, 4);
    assert!(a.last_seen.unwrap() >= new.ts);
    s.stop().await;
}
