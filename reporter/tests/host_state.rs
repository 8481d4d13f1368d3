//! Liveness and each host's state: agents check in on every pass
//! (`POST /api/v1/checkin`), so a host whose passes change nothing stays
//! "reporting"; `GET /api/v1/agents` shows and filters by state, channel,
//! wave, version and exact labels.

mod common;

use common::{both, event, wait_until, Backend, Server};
use flotilla_protocol::api::{AgentList, AgentSummary, ApiError, HostState};
use flotilla_protocol::{EventKind, EventStatus};
use serde_json::{json, Value};

both!(
    #[tokio::test];
    an_agent_whose_passes_change_nothing_stays_reporting,
    check_ins_are_refused_with_the_field_named,
    agents_filter_by_state_channel_wave_version_and_exact_labels,
);

async fn checkin(s: &Server, token: &str, body: Value) -> reqwest::Response {
    s.checkin(token, body).await
}

async fn agent(s: &Server, id: &str) -> AgentSummary {
    s.admin_json(&format!("/api/v1/agents/{id}")).await
}

async fn ids(s: &Server, query: &str) -> Vec<String> {
    let l: AgentList = s
        .admin_json(&format!("/api/v1/agents?sort=agent_id&{query}"))
        .await;
    assert_eq!(l.total as usize, l.agents.len(), "{query}: total");
    l.agents.into_iter().map(|a| a.agent_id).collect()
}

async fn an_agent_whose_passes_change_nothing_stays_reporting(backend: Backend) {
    let s = Server::on_with(&backend, |st| {
        st.stale_after = std::time::Duration::from_secs(3600)
    })
    .await;
    let t = s.enroll("quiet-01").await;
    // Enrolled, never heard from: not reporting.
    assert_eq!(
        agent(&s, "quiet-01").await.state,
        Some(HostState::NotReporting)
    );

    let waiting = json!({"state": "waiting", "reason": "wave all opens at 14:00",
        "release": "2.0.0", "wave": "all", "until": "2030-01-01T14:00:00Z", "version": "1.0.0"});
    assert_eq!(checkin(&s, &t, waiting.clone()).await.status(), 202);
    wait_until("the check-in is written", || async {
        agent(&s, "quiet-01").await.state == Some(HostState::Waiting)
    })
    .await;
    let a = agent(&s, "quiet-01").await;
    assert_eq!(a.reason.as_deref(), Some("wave all opens at 14:00"));
    assert_eq!(a.state_release.as_deref(), Some("2.0.0"));
    assert_eq!(a.wave.as_deref(), Some("all"));
    assert_eq!(a.until.unwrap().to_rfc3339(), "2030-01-01T14:00:00+00:00");
    let first = a.last_seen.expect("seen");
    assert_eq!(a.event_count, 0, "a check-in is not an event");

    // The next pass: nothing changed, but it was seen again.
    assert_eq!(checkin(&s, &t, waiting).await.status(), 202);
    wait_until("last_seen advances", || async {
        agent(&s, "quiet-01").await.last_seen.unwrap() > first
    })
    .await;
    let reporting: AgentList = s.admin_json("/api/v1/agents?not_seen_for=1h").await;
    assert_eq!(reporting.total, 0, "nobody is silent");
    s.stop().await;
}

async fn check_ins_are_refused_with_the_field_named(backend: Backend) {
    let s = Server::on(&backend).await;
    let t = s.enroll("a-01").await;
    for (body, field) in [
        (json!({"state": "not_reporting"}), Some("state")),
        (
            json!({"state": "waiting", "wave": "w".repeat(300)}),
            Some("wave"),
        ),
        (
            json!({"state": "waiting", "reason": "r".repeat(5000)}),
            Some("reason"),
        ),
    ] {
        let r = checkin(&s, &t, body).await;
        assert_eq!(r.status(), 400);
        let e: ApiError = r.json().await.unwrap();
        assert_eq!(e.field.as_deref(), field, "{}", e.error);
    }
    let r = checkin(&s, &t, json!({"state": "sleeping"})).await;
    assert_eq!(r.status(), 422, "an unknown state");
    assert_eq!(
        checkin(&s, "0".repeat(64).as_str(), json!({"state": "held"}))
            .await
            .status(),
        401
    );
    assert_eq!(
        checkin(&s, common::ADMIN, json!({"state": "held"}))
            .await
            .status(),
        401
    );
    s.stop().await;
}

async fn agents_filter_by_state_channel_wave_version_and_exact_labels(backend: Backend) {
    let s = Server::on(&backend).await;
    let fleet = [
        (
            "db-01",
            json!({"role": "db", "site": "ams1"}),
            "held",
            "canary",
            "1.0.0",
        ),
        (
            "db-02",
            json!({"role": "db", "site": "fra1"}),
            "waiting",
            "all",
            "1.0.0",
        ),
        (
            "dbx-01",
            json!({"role": "dbx", "site": "ams1"}),
            "on_release",
            "canary",
            "2.0.0",
        ),
        (
            "web-01",
            json!({"role": "web", "note": "role=db"}),
            "rolled_back",
            "all",
            "1.0.0",
        ),
    ];
    for (id, labels, state, wave, version) in &fleet {
        let t = s.enroll(id).await;
        let mut e = event(id, EventKind::AgentStartup, EventStatus::Success);
        e.details.insert("labels".into(), labels.clone());
        assert_eq!(s.post_events(&t, &[e]).await.status(), 200);
        let r = checkin(
            &s,
            &t,
            json!({"state": state, "reason": format!("{id} is {state}"), "wave": wave,
                   "version": version, "channel": "stable"}),
        )
        .await;
        assert_eq!(r.status(), 202);
    }
    let silent = s.enroll("silent-01").await;
    drop(silent);
    wait_until("every check-in is written", || async {
        ids(&s, "state=held,waiting,on_release,rolled_back")
            .await
            .len()
            == 4
    })
    .await;

    // Exact labels: `role=db` is not `role=dbx`, nor a value containing it.
    assert_eq!(ids(&s, "label=role=db").await, ["db-01", "db-02"]);
    assert_eq!(ids(&s, "label=role=db&label=site=ams1").await, ["db-01"]);
    assert_eq!(
        ids(&s, "q=role%3Ddb").await,
        ["db-01", "db-02"],
        "the search box too"
    );
    assert_eq!(
        ids(&s, "q=ams1").await,
        ["db-01", "dbx-01"],
        "a substring of a value"
    );
    assert_eq!(
        ids(&s, "q=%22role%22").await,
        Vec::<String>::new(),
        "not the JSON text"
    );
    // States, one or several; not_reporting is computed by the reporter.
    assert_eq!(ids(&s, "state=held").await, ["db-01"]);
    assert_eq!(
        ids(&s, "state=rolled_back,not_reporting").await,
        ["silent-01", "web-01"]
    );
    // Channel, wave and version.
    assert_eq!(ids(&s, "wave=canary").await, ["db-01", "dbx-01"]);
    assert_eq!(ids(&s, "version=2.0.0").await, ["dbx-01"]);
    assert_eq!(
        ids(&s, "channel=stable&wave=all&state=waiting").await,
        ["db-02"]
    );
    let l: AgentList = s.admin_json("/api/v1/agents?state=held").await;
    assert_eq!(l.agents[0].reason.as_deref(), Some("db-01 is held"));

    for (q, field) in [("state=asleep", "state"), ("label=role", "label")] {
        let r = s.admin_get(&format!("/api/v1/agents?{q}")).await;
        assert_eq!(r.status(), 400, "{q}");
        let e: ApiError = r.json().await.unwrap();
        assert_eq!(e.field.as_deref(), Some(field), "{}", e.error);
    }
    s.stop().await;
}
