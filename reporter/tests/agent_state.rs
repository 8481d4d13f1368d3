//! The agent's row follows what the reporter received last, never the
//! agent's clock: an agent delivers its spool in order, and a clock ahead
//! (or a forged `ts`) must not pin its state.

mod common;

use chrono::Duration;
use common::{both, event, Backend, Server};
use flotilla_protocol::api::AgentSummary;
use flotilla_protocol::{EventKind, EventStatus};

both!(
    #[tokio::test];
    the_agent_row_follows_receipt_order_not_the_agents_clock,
);

async fn the_agent_row_follows_receipt_order_not_the_agents_clock(backend: Backend) {
    let s = Server::on(&backend).await;
    let t = s.enroll("web-01").await;
    // a clock 23 hours ahead
    let mut ahead = event("web-01", EventKind::AgentStartup, EventStatus::Success);
    ahead.ts += Duration::hours(23);
    ahead
        .details
        .insert("agent_version".into(), "99.0.0".into());
    ahead.wave = Some("canary".into());
    let mut ahead_err = event("web-01", EventKind::UpdateDownload, EventStatus::Failed);
    ahead_err.ts = ahead.ts;
    ahead_err.message = "error from the future".into();
    s.post_events(&t, &[ahead, ahead_err]).await;

    // then the clock is right again: what came later is current
    let mut now = event("web-01", EventKind::AgentStartup, EventStatus::Success);
    now.details.insert("agent_version".into(), "2.0.0".into());
    now.wave = Some("early".into());
    let mut now_err = event("web-01", EventKind::ManifestCheck, EventStatus::Failed);
    now_err.message = "newest error".into();
    s.post_events(&t, &[now.clone(), now_err]).await;

    let a: AgentSummary = s.admin_json("/api/v1/agents/web-01").await;
    assert_eq!(a.version.as_deref(), Some("2.0.0"));
    assert_eq!(a.wave.as_deref(), Some("early"));
    assert_eq!(a.last_error.as_deref(), Some("newest error"));
    assert!(
        a.last_error_at.unwrap() <= chrono::Utc::now(),
        "an error's time is never later than its receipt"
    );
    assert_eq!(a.event_count, 4);
    assert!(a.last_seen.unwrap() >= now.ts);
    s.stop().await;
}
