//! Enrollment rules: token states, idempotent retries, no take-over.

mod common;

use common::{both, enroll_request, Backend, Server};
use flotilla_protocol::api::{ApiError, EnrollResponse};
use flotilla_protocol::{EventKind, EventStatus};

both!(
    #[tokio::test];
    enrolls_with_an_active_token_and_counts_its_uses,
    refuses_unknown_expired_used_up_and_revoked_tokens,
    refuses_to_let_another_enrollment_take_over_an_agent_id,
    retried_enrollment_with_the_agents_own_token_is_idempotent,
    released_agent_gets_401_and_may_enroll_again_with_a_new_token,
);

async fn enrolls_with_an_active_token_and_counts_its_uses(backend: Backend) {
    let s = Server::on(&backend).await;
    let (id, token) = s.enrollment_token(Some(2)).await;
    let mut agent_tokens = Vec::new();
    for agent in ["web-01", "web-02"] {
        let r = s.enroll_raw(&enroll_request(&token, agent)).await;
        assert_eq!(r.status(), 201);
        let body: EnrollResponse = r.json().await.unwrap();
        assert!(flotilla_protocol::api::is_agent_token_shaped(
            &body.agent_token
        ));
        assert!(!body.already_enrolled);
        agent_tokens.push(body.agent_token);
    }
    let r = s.enroll_raw(&enroll_request(&token, "web-03")).await;
    assert_eq!(r.status(), 401);
    assert!(r
        .json::<ApiError>()
        .await
        .unwrap()
        .error
        .contains("used up"));
    let list = s.tokens().await;
    let t = list.iter().find(|t| t.id == id).unwrap();
    assert_eq!(t.uses, 2);
    assert_eq!(
        t.state(chrono::Utc::now()),
        flotilla_reporter::db::tokens::TokenState::UsedUp
    );
    // agent tokens are stored only as hashes
    let hashed =
        s.db.scalar("SELECT count(*) FROM agents WHERE token_hash IS NOT NULL")
            .await;
    assert_eq!(hashed, 2);
    let plain =
        s.db.scalar(&format!(
            "SELECT count(*) FROM agents WHERE token_hash IN ('{}', '{}')",
            agent_tokens[0], agent_tokens[1]
        ))
        .await;
    assert_eq!(plain, 0);
    s.stop().await;
}

async fn refuses_unknown_expired_used_up_and_revoked_tokens(backend: Backend) {
    let s = Server::on(&backend).await;
    let expect = |r: reqwest::Response, word: &'static str| async move {
        assert_eq!(r.status(), 401);
        let e: ApiError = r.json().await.unwrap();
        assert!(e.error.contains(word), "{} lacks {word}", e.error);
    };
    expect(
        s.enroll_raw(&enroll_request("flotilla-enroll-nope", "a1"))
            .await,
        "unknown",
    )
    .await;

    let (id, token) = s.enrollment_token(None).await;
    // token ids are generated hex, safe inline
    s.db.execute(&format!(
        "UPDATE enrollment_tokens SET expires_at = 1 WHERE id = '{id}'"
    ))
    .await;
    expect(s.enroll_raw(&enroll_request(&token, "a1")).await, "expired").await;

    let (_, once) = s.enrollment_token(Some(1)).await;
    assert_eq!(
        s.enroll_raw(&enroll_request(&once, "a2")).await.status(),
        201
    );
    expect(s.enroll_raw(&enroll_request(&once, "a3")).await, "used up").await;

    let (id, token) = s.enrollment_token(None).await;
    assert!(s
        .store(|st| async move { st.token_revoke(id).await })
        .await
        .unwrap());
    expect(s.enroll_raw(&enroll_request(&token, "a4")).await, "revoked").await;

    // `token list` shows the real state of each
    let now = chrono::Utc::now();
    let states: Vec<String> = s
        .tokens()
        .await
        .iter()
        .map(|t| t.state(now).to_string())
        .collect();
    let mut sorted = states.clone();
    sorted.sort();
    assert_eq!(sorted, ["expired", "revoked", "used up"]);
    s.stop().await;
}

async fn refuses_to_let_another_enrollment_take_over_an_agent_id(backend: Backend) {
    let s = Server::on(&backend).await;
    let first = s.enroll("web-01").await;
    let (_, other) = s.enrollment_token(None).await;
    let r = s.enroll_raw(&enroll_request(&other, "web-01")).await;
    assert_eq!(r.status(), 409);
    let e: ApiError = r.json().await.unwrap();
    assert_eq!(e.field.as_deref(), Some("agent_id"));
    assert!(e.error.contains("agent release"));
    // a wrong proof is no better
    let mut req = enroll_request(&other, "web-01");
    req.agent_token = Some("ab".repeat(32));
    assert_eq!(s.enroll_raw(&req).await.status(), 409);
    // the original token still works
    let ok = s
        .post_events(
            &first,
            &[common::event(
                "web-01",
                EventKind::AgentStartup,
                EventStatus::Success,
            )],
        )
        .await;
    assert_eq!(ok.status(), 200);
    s.stop().await;
}

async fn retried_enrollment_with_the_agents_own_token_is_idempotent(backend: Backend) {
    let s = Server::on(&backend).await;
    let (id, once) = s.enrollment_token(Some(1)).await;
    let mine = "c0".repeat(32);
    let mut req = enroll_request(&once, "db-01");
    req.agent_token = Some(mine.clone());
    let r = s.enroll_raw(&req).await;
    assert_eq!(r.status(), 201);
    assert_eq!(r.json::<EnrollResponse>().await.unwrap().agent_token, mine);
    // the answer was "lost": the same request again, with the token now used up
    let r = s.enroll_raw(&req).await;
    assert_eq!(r.status(), 200);
    let body: EnrollResponse = r.json().await.unwrap();
    assert_eq!(body.agent_token, mine);
    assert!(body.already_enrolled);
    let t = s.tokens().await;
    assert_eq!(t.iter().find(|t| t.id == id).unwrap().uses, 1);
    // malformed proposals are refused
    req.agent_token = Some("short".into());
    let r = s.enroll_raw(&req).await;
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.json::<ApiError>().await.unwrap().field.as_deref(),
        Some("agent_token")
    );
    s.stop().await;
}

async fn released_agent_gets_401_and_may_enroll_again_with_a_new_token(backend: Backend) {
    let s = Server::on(&backend).await;
    let old = s.enroll("web-07").await;
    assert!(s
        .store(|st| async move { st.release_agent("web-07".into()).await })
        .await
        .unwrap());
    let e = common::event("web-07", EventKind::AgentStartup, EventStatus::Success);
    assert_eq!(
        s.post_events(&old, std::slice::from_ref(&e)).await.status(),
        401
    );
    // the revoked token can never come back
    let (_, token) = s.enrollment_token(None).await;
    let mut req = enroll_request(&token, "web-07");
    req.agent_token = Some(old.clone());
    assert_eq!(s.enroll_raw(&req).await.status(), 409);
    req.agent_token = None;
    let r = s.enroll_raw(&req).await;
    assert_eq!(r.status(), 201);
    let new = r.json::<EnrollResponse>().await.unwrap().agent_token;
    assert_ne!(new, old);
    assert_eq!(s.post_events(&new, &[e]).await.status(), 200);
    assert_eq!(s.post_events(&old, &[]).await.status(), 401);
    s.stop().await;
}
