//! The read API: agents with filters, one agent's events with filters and
//! cursor paging, metrics and health.

mod common;

use chrono::{Duration, Utc};
use common::{both, event, Backend, Server};
use flotilla_protocol::api::{AgentList, AgentSummary, EventPage, Health};
use flotilla_protocol::{EventKind, EventStatus, Severity};

both!(
    #[tokio::test];
    lists_agents_with_search_filters_and_sorting,
    pages_an_agents_events_with_filters_and_a_cursor,
    serves_metrics_to_the_admin_and_health_to_anyone,
);

async fn lists_agents_with_search_filters_and_sorting(backend: Backend) {
    let s = Server::on(&backend).await;
    let a = s.enroll("web-01").await;
    let _b = s.enroll("db-01").await;
    let mut e = event("web-01", EventKind::UpdateHealthcheck, EventStatus::Success);
    e.to_version = Some("2.0.0".into());
    e.details.insert(
        "labels".into(),
        serde_json::json!({"role": "web", "site": "ams1"}),
    );
    let mut err = event("web-01", EventKind::UpdateDownload, EventStatus::Failed);
    err.ts = e.ts + Duration::seconds(1);
    err.message = "connection reset".into();
    s.post_events(&a, &[e, err]).await;

    let all: AgentList = s.admin_json("/api/v1/agents").await;
    assert_eq!(all.total, 2);
    assert_eq!(all.agents[0].agent_id, "web-01", "last seen first");
    let web = &all.agents[0];
    assert_eq!(web.version.as_deref(), Some("2.0.0"));
    assert_eq!(web.labels["site"], "ams1");
    assert_eq!(web.last_error.as_deref(), Some("connection reset"));
    assert_eq!(web.channel.as_deref(), Some("stable"));

    let by_label: AgentList = s.admin_json("/api/v1/agents?q=ams1").await;
    assert_eq!(by_label.total, 1);
    let by_version: AgentList = s.admin_json("/api/v1/agents?version=1.0.0").await;
    assert_eq!(by_version.agents[0].agent_id, "db-01");
    let silent: AgentList = s.admin_json("/api/v1/agents?not_seen_for=1h").await;
    assert_eq!(silent.agents.len(), 1, "db-01 never reported");
    assert_eq!(silent.agents[0].agent_id, "db-01");
    let sorted: AgentList = s.admin_json("/api/v1/agents?sort=agent_id").await;
    assert_eq!(sorted.agents[0].agent_id, "db-01");
    assert_eq!(
        s.admin_get("/api/v1/agents?sort=sideways").await.status(),
        400
    );
    assert_eq!(s.admin_get("/api/v1/agents/nobody").await.status(), 404);
    let one: AgentSummary = s.admin_json("/api/v1/agents/web-01").await;
    assert_eq!(one.event_count, 2);
    // reads need the admin token
    let r = s
        .http
        .get(s.url("/api/v1/agents"))
        .bearer_auth(&a)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    s.stop().await;
}

async fn pages_an_agents_events_with_filters_and_a_cursor(backend: Backend) {
    let s = Server::on(&backend).await;
    let t = s.enroll("web-01").await;
    let start = Utc::now() - Duration::hours(1);
    let mut batch = Vec::new();
    for i in 0..250 {
        let (kind, status) = match i % 5 {
            0 => (EventKind::MigrationExecution, EventStatus::Failed),
            1 => (EventKind::MigrationDetection, EventStatus::Success),
            2 => (EventKind::UpdateInstall, EventStatus::Success),
            _ => (EventKind::ManifestCheck, EventStatus::Success),
        };
        let mut e = event("web-01", kind, status);
        e.ts = start + Duration::seconds(i);
        batch.push(e);
    }
    for chunk in batch.chunks(100) {
        assert_eq!(s.post_events(&t, chunk).await.status(), 200);
    }
    // three pages of 100, 100, 50, newest first, nothing repeated
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/v1/agents/web-01/events?limit=100&cursor={c}"),
            None => "/api/v1/agents/web-01/events?limit=100".into(),
        };
        let page: EventPage = s.admin_json(&path).await;
        seen.extend(page.events.iter().map(|e| (e.ts, e.id)));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(seen.len(), 250);
    assert!(
        seen.windows(2).all(|w| w[0].0 > w[1].0),
        "newest first, no repeats"
    );

    let mig: EventPage = s
        .admin_json("/api/v1/agents/web-01/events?kind=migration&limit=1000")
        .await;
    assert_eq!(mig.events.len(), 100);
    assert!(mig.events.iter().all(|e| e.kind.is_migration()));
    let errors: EventPage = s
        .admin_json("/api/v1/agents/web-01/events?severity=error,critical&limit=1000")
        .await;
    assert_eq!(errors.events.len(), 50);
    assert!(errors.events.iter().all(|e| e.severity == Severity::Error));
    let failed: EventPage = s
        .admin_json(
            "/api/v1/agents/web-01/events?kind=migration_execution&status=failed&limit=1000",
        )
        .await;
    assert_eq!(failed.events.len(), 50);
    let since = (start + Duration::seconds(200)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let until = (start + Duration::seconds(210)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let window: EventPage = s
        .admin_json(&format!(
            "/api/v1/agents/web-01/events?since={since}&until={until}"
        ))
        .await;
    assert_eq!(window.events.len(), 10);
    let r = s
        .admin_get("/api/v1/agents/web-01/events?kind=nonsense")
        .await;
    assert_eq!(r.status(), 400);
    let r = s.admin_get("/api/v1/agents/web-01/events?cursor=zzz").await;
    assert_eq!(r.status(), 400);
    s.stop().await;
}

async fn serves_metrics_to_the_admin_and_health_to_anyone(backend: Backend) {
    let s = Server::on(&backend).await;
    let t = s.enroll("web-01").await;
    let mut e = event("web-01", EventKind::AgentStartup, EventStatus::Success);
    e.details.insert("agent_version".into(), "1.2.3".into());
    s.post_events(&t, std::slice::from_ref(&e)).await;
    s.post_events(&t, &[e]).await;
    s.post_events("nope", &[]).await;
    let h: Health = s
        .http
        .get(s.url("/healthz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(h.status, "ok");
    assert_eq!(h.schema_version, backend.schema_version());
    assert_eq!(
        s.http.get(s.url("/metrics")).send().await.unwrap().status(),
        401
    );
    let text = s.admin_get("/metrics").await.text().await.unwrap();
    for want in [
        "flotilla_events_ingested_total 1",
        "flotilla_events_duplicate_total 1",
        "flotilla_events_rejected_total{reason=\"unauthorized\"} 1",
        "flotilla_agents{version=\"1.2.3\"} 1",
        "flotilla_http_request_duration_seconds_bucket{route=\"/api/v1/events\",method=\"POST\",le=\"+Inf\"} 3",
    ] {
        assert!(text.contains(want), "metrics lack {want}:\n{text}");
    }
    s.stop().await;
}
