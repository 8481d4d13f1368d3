//! `POST /api/v1/events`: the 400/401/403/413/429 matrix and idempotent redelivery.

mod common;

use common::{both, event, Backend, Server};
use flotilla_protocol::api::{ApiError, EventPage, EventsAccepted, MAX_BATCH_BYTES};
use flotilla_protocol::{EventKind, EventStatus};
use flotilla_reporter::settings::RateLimit;

both!(
    #[tokio::test];
    rejects_invalid_events_naming_the_event_and_field,
    rejects_missing_unknown_and_revoked_tokens_with_401,
    rejects_batches_over_500_events_or_1_mib_with_413,
    rate_limits_a_flooding_agent_with_429_and_retry_after,
    refuses_events_written_for_another_agent,
    redelivered_events_are_counted_as_duplicates_and_stored_once,
    an_agent_cannot_shadow_another_agents_events_by_reusing_their_ids,
);

async fn rejects_invalid_events_naming_the_event_and_field(backend: Backend) {
    let s = Server::on(&backend).await;
    let token = s.enroll("web-01").await;
    let good = serde_json::to_value(event(
        "web-01",
        EventKind::AgentStartup,
        EventStatus::Success,
    ))
    .unwrap();

    let cases: Vec<(serde_json::Value, Option<usize>, &str)> = vec![
        // unknown kind
        (
            {
                let mut e = good.clone();
                e["kind"] = "agent_exploded".into();
                serde_json::json!({"events": [good.clone(), e]})
            },
            Some(1),
            "kind",
        ),
        // a status the kind does not have
        (
            {
                let mut e = good.clone();
                e["status"] = "partial".into();
                serde_json::json!({"events": [e]})
            },
            Some(0),
            "status",
        ),
        // a missing field
        (
            {
                let mut e = good.clone();
                e.as_object_mut().unwrap().remove("message");
                serde_json::json!({"events": [good.clone(), good.clone(), e]})
            },
            Some(2),
            "message",
        ),
        // a message too long
        (
            {
                let mut e = good.clone();
                e["message"] = "x".repeat(9000).into();
                serde_json::json!({"events": [e]})
            },
            Some(0),
            "message",
        ),
        // a bad timestamp
        (
            {
                let mut e = good.clone();
                e["ts"] = "yesterday".into();
                serde_json::json!({"events": [e]})
            },
            Some(0),
            "ts",
        ),
        // not an array
        (serde_json::json!({"events": {}}), None, "events"),
    ];
    for (body, index, field) in cases {
        let r = s
            .http
            .post(s.url("/api/v1/events"))
            .bearer_auth(&token)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{field}");
        let e: ApiError = r.json().await.unwrap();
        assert_eq!(
            (e.event_index, e.field.as_deref()),
            (index, Some(field)),
            "{}",
            e.error
        );
    }
    let r = s
        .http
        .post(s.url("/api/v1/events"))
        .bearer_auth(&token)
        .body("not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // nothing of a refused batch was stored
    let page: EventPage = s.admin_json("/api/v1/agents/web-01/events").await;
    assert!(page.events.is_empty());
    s.stop().await;
}

async fn rejects_missing_unknown_and_revoked_tokens_with_401(backend: Backend) {
    let s = Server::on(&backend).await;
    let token = s.enroll("web-01").await;
    let e = [event(
        "web-01",
        EventKind::AgentStartup,
        EventStatus::Success,
    )];
    let none = s
        .http
        .post(s.url("/api/v1/events"))
        .json(&serde_json::json!({"events": e}))
        .send()
        .await
        .unwrap();
    assert_eq!(none.status(), 401);
    assert_eq!(none.headers()["www-authenticate"], "Bearer");
    assert_eq!(s.post_events(&"0".repeat(64), &e).await.status(), 401);
    assert_eq!(s.post_events("garbage", &e).await.status(), 401);
    // the admin token is not an agent token
    assert_eq!(s.post_events(common::ADMIN, &e).await.status(), 401);
    assert!(s
        .store(|st| async move { st.revoke_agent("web-01".into()).await })
        .await
        .unwrap());
    let r = s.post_events(&token, &e).await;
    assert_eq!(r.status(), 401);
    assert!(r
        .json::<ApiError>()
        .await
        .unwrap()
        .error
        .contains("revoked"));
    s.stop().await;
}

async fn rejects_batches_over_500_events_or_1_mib_with_413(backend: Backend) {
    let s = Server::on(&backend).await;
    let token = s.enroll("web-01").await;
    let many: Vec<_> = (0..501)
        .map(|_| event("web-01", EventKind::AgentStartup, EventStatus::Success))
        .collect();
    let r = s.post_events(&token, &many).await;
    assert_eq!(r.status(), 413);
    assert_eq!(
        r.json::<ApiError>().await.unwrap().field.as_deref(),
        Some("events")
    );
    // 500 is fine
    assert_eq!(s.post_events(&token, &many[..500]).await.status(), 200);

    let mut big = event("web-01", EventKind::AgentStartup, EventStatus::Success);
    big.details.insert("blob".into(), "y".repeat(60_000).into());
    let body: Vec<_> = (0..20)
        .map(|_| {
            let mut b = big.clone();
            b.id = uuid::Uuid::now_v7();
            b
        })
        .collect();
    let json = serde_json::to_vec(&serde_json::json!({"events": body})).unwrap();
    assert!(json.len() > MAX_BATCH_BYTES);
    let r = s
        .http
        .post(s.url("/api/v1/events"))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body(json)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let e: ApiError = r.json().await.unwrap();
    assert!(e.error.contains("bytes"), "{}", e.error);
    s.stop().await;
}

async fn rate_limits_a_flooding_agent_with_429_and_retry_after(backend: Backend) {
    let s = Server::on_with(&backend, |st| {
        st.rate_limit = RateLimit {
            per_second: 0.01,
            burst: 3.0,
        }
    })
    .await;
    let flood = s.enroll("noisy").await;
    let calm = s.enroll("calm").await;
    for _ in 0..3 {
        let e = [event(
            "noisy",
            EventKind::AgentStartup,
            EventStatus::Success,
        )];
        assert_eq!(s.post_events(&flood, &e).await.status(), 200);
    }
    let r = s
        .post_events(
            &flood,
            &[event(
                "noisy",
                EventKind::AgentStartup,
                EventStatus::Success,
            )],
        )
        .await;
    assert_eq!(r.status(), 429);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=100).contains(&retry), "{retry}");
    // another agent is unaffected
    let r = s
        .post_events(
            &calm,
            &[event("calm", EventKind::AgentStartup, EventStatus::Success)],
        )
        .await;
    assert_eq!(r.status(), 200);
    s.stop().await;
}

async fn refuses_events_written_for_another_agent(backend: Backend) {
    let s = Server::on(&backend).await;
    let a = s.enroll("web-01").await;
    s.enroll("web-02").await;
    let batch = [
        event("web-01", EventKind::AgentStartup, EventStatus::Success),
        event("web-02", EventKind::UpdateInstall, EventStatus::Failed),
    ];
    let r = s.post_events(&a, &batch).await;
    assert_eq!(r.status(), 403);
    let e: ApiError = r.json().await.unwrap();
    assert_eq!(
        (e.event_index, e.field.as_deref()),
        (Some(1), Some("agent_id"))
    );
    for agent in ["web-01", "web-02"] {
        let page: EventPage = s
            .admin_json(&format!("/api/v1/agents/{agent}/events"))
            .await;
        assert!(page.events.is_empty(), "{agent}: nothing stored");
    }
    s.stop().await;
}

async fn redelivered_events_are_counted_as_duplicates_and_stored_once(backend: Backend) {
    let s = Server::on(&backend).await;
    let token = s.enroll("web-01").await;
    let batch: Vec<_> = (0..10)
        .map(|_| event("web-01", EventKind::ManifestCheck, EventStatus::Success))
        .collect();
    let first: EventsAccepted = s.post_events(&token, &batch).await.json().await.unwrap();
    assert_eq!((first.received, first.new, first.duplicates), (10, 10, 0));
    let again: EventsAccepted = s.post_events(&token, &batch).await.json().await.unwrap();
    assert_eq!((again.received, again.new, again.duplicates), (10, 0, 10));
    // overlapping redelivery, with a duplicate inside the batch too
    let mut mixed = batch[5..].to_vec();
    let extra = event("web-01", EventKind::ManifestCheck, EventStatus::Failed);
    mixed.push(extra.clone());
    mixed.push(extra);
    let third: EventsAccepted = s.post_events(&token, &mixed).await.json().await.unwrap();
    assert_eq!((third.received, third.new, third.duplicates), (7, 1, 6));
    let page: EventPage = s
        .admin_json("/api/v1/agents/web-01/events?limit=1000")
        .await;
    assert_eq!(page.events.len(), 11);
    let agent: flotilla_protocol::api::AgentSummary = s.admin_json("/api/v1/agents/web-01").await;
    assert_eq!(agent.event_count, 11);
    s.stop().await;
}

async fn an_agent_cannot_shadow_another_agents_events_by_reusing_their_ids(backend: Backend) {
    let s = Server::on(&backend).await;
    let victim = s.enroll("web-01").await;
    let spy = s.enroll("spy").await;
    // one event for the fast path, one with a large `details` for the slow one
    let fast = event("web-01", EventKind::UpdateInstall, EventStatus::Failed);
    let mut slow = event("web-01", EventKind::UpdateHealthcheck, EventStatus::Failed);
    slow.details.insert(
        "error_chain".into(),
        serde_json::json!(["x".repeat(flotilla_protocol::event::MAX_DETAILS / 4)]),
    );
    // the spy sends its own events under the victim's ids first
    let shadows: Vec<_> = [&fast, &slow]
        .iter()
        .map(|e| {
            let mut own = event("spy", EventKind::AgentStartup, EventStatus::Success);
            own.id = e.id;
            own
        })
        .collect();
    for e in &shadows {
        let r: EventsAccepted = s
            .post_events(&spy, std::slice::from_ref(e))
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(r.new, 1);
    }
    for e in [&fast, &slow] {
        let r: EventsAccepted = s
            .post_events(&victim, std::slice::from_ref(e))
            .await
            .json()
            .await
            .unwrap();
        assert_eq!((r.new, r.duplicates), (1, 0), "{}", e.kind);
    }
    let page: EventPage = s.admin_json("/api/v1/agents/web-01/events").await;
    assert_eq!(page.events.len(), 2);
    // redelivery by the same agent is still a duplicate
    let r: EventsAccepted = s
        .post_events(&victim, &[fast, slow])
        .await
        .json()
        .await
        .unwrap();
    assert_eq!((r.new, r.duplicates), (0, 2));
    s.stop().await;
}
