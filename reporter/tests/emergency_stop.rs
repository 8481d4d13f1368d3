//! The emergency stop over HTTP on loopback: an admin closes a channel's
//! gate (or one release's) with a reason, agents' gate checks say who
//! halted it and why, it is kept across a restart and reopened; a reopen
//! never opens a gate the failure rate closed; read tokens and agents
//! cannot halt.

mod common;

use common::{both, update, Backend, Server, SignedFleet};
use flotilla_protocol::api::{ApiError, Gate, GateState, Halt, HaltList, RolloutList};
use flotilla_protocol::{EventKind, EventStatus};
use serde_json::{json, Value};

both!(
    #[tokio::test];
    an_admin_halts_a_channel_agents_obey_and_it_reopens,
    reopening_never_opens_a_gate_the_failure_rate_closed,
    only_the_admin_halts_and_bad_requests_name_the_field,
);

async fn post(s: &Server, token: &str, path: &str, body: Value) -> reqwest::Response {
    s.http
        .post(s.url(path))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn gate(s: &Server, token: &str, release: &str) -> Gate {
    let r = s
        .http
        .get(s.url(&format!("/api/v1/gate/stable/{release}")))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

async fn an_admin_halts_a_channel_agents_obey_and_it_reopens(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let fleet = SignedFleet::new(dir.path());
    fleet.publish("2.0.0", 0.5, 2);
    let db = backend.fresh(dir.path());
    let s = Server::on_db(&db, |st| fleet.configure(st)).await;
    let agent = s.enroll("a1").await;
    assert_eq!(gate(&s, &agent, "2.0.0").await.state, GateState::Open);

    let r = post(
        &s,
        common::ADMIN,
        "/api/v1/halts",
        json!({"channel": "stable", "reason": "2.0.0 corrupts the cache", "by": "alice"}),
    )
    .await;
    assert_eq!(r.status(), 201);
    let h: Halt = r.json().await.unwrap();
    assert_eq!(h.closed_by, "alice (admin token)");
    assert!(h.active() && h.release.is_none());

    // The agent's gate check: closed, saying who and why.
    let g = gate(&s, &agent, "2.0.0").await;
    assert_eq!(g.state, GateState::Closed);
    assert!(
        g.reason
            .starts_with("manually halted by alice (admin token) at ")
            && g.reason.ends_with(": 2.0.0 corrupts the cache"),
        "{}",
        g.reason
    );
    assert_eq!(g.halt.as_ref().map(|h| h.id), Some(h.id));
    // ... the rollout (what `flotilla-publisher status` reads) too.
    let l: RolloutList = s.admin_json("/api/v1/rollouts").await;
    assert_eq!(
        l.rollouts[0].gate.halt.as_ref().unwrap().reason,
        "2.0.0 corrupts the cache"
    );
    // Halting the same scope again gives the same halt.
    let r = post(
        &s,
        common::ADMIN,
        "/api/v1/halts",
        json!({"channel": "stable", "reason": "again"}),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Halt>().await.unwrap().id, h.id);

    // Kept across a restart.
    s.stop().await;
    let s = Server::on_db(&db, |st| fleet.configure(st)).await;
    assert_eq!(gate(&s, &agent, "2.0.0").await.state, GateState::Closed);

    // Reopened: open again, and the record says who reopened it.
    let r = post(
        &s,
        common::ADMIN,
        &format!("/api/v1/halts/{}/reopen", h.id),
        json!({"by": "bob"}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let reopened: Halt = r.json().await.unwrap();
    assert_eq!(reopened.reopened_by.as_deref(), Some("bob (admin token)"));
    let g = gate(&s, &agent, "2.0.0").await;
    assert_eq!((g.state, g.halt), (GateState::Open, None), "{}", g.reason);
    let list: HaltList = s.admin_json("/api/v1/halts").await;
    assert_eq!(list.halts.len(), 1);
    assert!(!list.halts[0].active());
    assert_eq!(
        post(&s, common::ADMIN, "/api/v1/halts/999/reopen", json!({}))
            .await
            .status(),
        404
    );

    // One release only.
    let r = post(
        &s,
        common::ADMIN,
        "/api/v1/halts",
        json!({"channel": "stable", "release": "2.0.0", "reason": "just this one"}),
    )
    .await;
    assert_eq!(r.status(), 201);
    assert_eq!(gate(&s, &agent, "2.0.0").await.state, GateState::Closed);
    s.stop().await;
}

async fn reopening_never_opens_a_gate_the_failure_rate_closed(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let fleet = SignedFleet::new(dir.path());
    fleet.publish("2.0.0", 0.3, 2);
    let s = Server::on_with(&backend, |st| fleet.configure(st)).await;
    let r = post(
        &s,
        common::ADMIN,
        "/api/v1/halts",
        json!({"channel": "stable", "reason": "looks bad"}),
    )
    .await;
    let h: Halt = r.json().await.unwrap();
    use EventKind::*;
    use EventStatus::*;
    for (id, status) in [("a1", Failed), ("a2", Failed), ("a3", Success)] {
        let t = s.enroll(id).await;
        let r = s
            .post_events(
                &t,
                &[update(id, UpdateHealthcheck, status, "2.0.0", "canary")],
            )
            .await;
        assert_eq!(r.status(), 200);
    }
    let g = gate(&s, common::ADMIN, "2.0.0").await;
    assert_eq!(g.state, GateState::Closed);
    assert!(
        g.reason.contains("manually halted") && g.reason.contains("failure rate 66.7%"),
        "{}",
        g.reason
    );
    post(
        &s,
        common::ADMIN,
        &format!("/api/v1/halts/{}/reopen", h.id),
        json!({}),
    )
    .await;
    let g = gate(&s, common::ADMIN, "2.0.0").await;
    assert_eq!(
        g.state,
        GateState::Closed,
        "the failure rate still closes it"
    );
    assert!(
        g.halt.is_none() && g.reason.starts_with("failure rate 66.7%"),
        "{}",
        g.reason
    );
    s.stop().await;
}

async fn only_the_admin_halts_and_bad_requests_name_the_field(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let fleet = SignedFleet::new(dir.path());
    fleet.publish("2.0.0", 0.5, 2);
    let s = Server::on_with(&backend, |st| fleet.configure(st)).await;
    let (_, read) = s
        .store(|st| async move { st.token_create_read(None, "dashboards".into()).await })
        .await
        .unwrap();
    let agent = s.enroll("a1").await;
    let body = json!({"channel": "stable", "reason": "x"});
    assert_eq!(
        post(&s, &read, "/api/v1/halts", body.clone())
            .await
            .status(),
        403
    );
    assert_eq!(
        post(&s, &agent, "/api/v1/halts", body.clone())
            .await
            .status(),
        401
    );
    let r = post(&s, common::ADMIN, "/api/v1/halts", body).await;
    let h: Halt = r.json().await.unwrap();
    let reopen = format!("/api/v1/halts/{}/reopen", h.id);
    assert_eq!(post(&s, &read, &reopen, json!({})).await.status(), 403);
    assert_eq!(post(&s, &agent, &reopen, json!({})).await.status(), 401);
    // a read token may list them
    let r = s
        .http
        .get(s.url("/api/v1/halts"))
        .bearer_auth(&read)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.json::<HaltList>().await.unwrap().halts[0].active(),
        "still halted"
    );

    for (body, field) in [
        (json!({"channel": "stable", "reason": "  "}), "reason"),
        (json!({"channel": "stabel", "reason": "typo"}), "channel"),
        (
            json!({"channel": "stable", "release": "", "reason": "r"}),
            "release",
        ),
    ] {
        let r = post(&s, common::ADMIN, "/api/v1/halts", body).await;
        assert_eq!(r.status(), 400);
        let e: ApiError = r.json().await.unwrap();
        assert_eq!(e.field.as_deref(), Some(field), "{}", e.error);
    }
    s.stop().await;
}
