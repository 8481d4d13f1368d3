//! Retention prunes events by age and by count per agent.

mod common;

use chrono::{Duration, Utc};
use common::{both, event, wait_until, Backend, Server};
use flotilla_protocol::api::{AgentSummary, EventPage};
use flotilla_protocol::{EventKind, EventStatus};

both!(
    #[tokio::test];
    prunes_events_older_than_retain_days_and_beyond_retain_per_agent,
);

async fn prunes_events_older_than_retain_days_and_beyond_retain_per_agent(backend: Backend) {
    let s = Server::on_with(&backend, |st| {
        st.retain_days = 30;
        st.retain_per_agent = 5;
        st.retention_interval = std::time::Duration::from_millis(50);
    })
    .await;
    let busy = s.enroll("busy").await;
    let old = s.enroll("old").await;
    let now = Utc::now();
    let batch: Vec<_> = (0..20)
        .map(|i| {
            let mut e = event("busy", EventKind::ManifestCheck, EventStatus::Success);
            e.ts = now - Duration::seconds(100 - i);
            e.message = format!("check {i}");
            e
        })
        .collect();
    s.post_events(&busy, &batch).await;
    let stale: Vec<_> = (0..3)
        .map(|i| {
            let mut e = event("old", EventKind::AgentStartup, EventStatus::Success);
            e.ts = now - Duration::days(40) + Duration::seconds(i);
            e
        })
        .collect();
    let mut fresh = event("old", EventKind::AgentStartup, EventStatus::Success);
    fresh.message = "recent".into();
    s.post_events(&old, &[stale, vec![fresh]].concat()).await;

    wait_until("retention pruned both agents", || async {
        let b: AgentSummary = s.admin_json("/api/v1/agents/busy").await;
        let o: AgentSummary = s.admin_json("/api/v1/agents/old").await;
        b.event_count == 5 && o.event_count == 1
    })
    .await;
    let page: EventPage = s.admin_json("/api/v1/agents/busy/events").await;
    let kept: Vec<&str> = page.events.iter().map(|e| e.message.as_str()).collect();
    assert_eq!(
        kept,
        ["check 19", "check 18", "check 17", "check 16", "check 15"]
    );
    let page: EventPage = s.admin_json("/api/v1/agents/old/events").await;
    assert_eq!(page.events.len(), 1);
    assert_eq!(page.events[0].message, "recent");
    let rows = s.db.scalar("SELECT count(*) FROM events").await;
    assert_eq!(rows, 6);
    s.stop().await;
}
