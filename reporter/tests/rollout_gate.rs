//! Rollout progress and the halt gate: opening, closing, and where the
//! channel's thresholds come from (the verified manifest; attacks on that
//! are in `gate_attacks.rs`).

mod common;

use common::{both, update, Backend, Server, SignedFleet};
use flotilla_protocol::api::{Gate, GateState, RolloutList, RolloutProgress, SettingsSource};
use flotilla_protocol::{Event, EventKind, EventStatus};

both!(
    #[tokio::test];
    gate_closes_above_the_failure_rate_and_opens_again_when_agents_recover,
    gate_takes_thresholds_and_waves_from_the_verified_manifest,
    finished_rollouts_are_kept_per_channel,
    each_wave_says_its_target_when_it_opens_and_why_agents_wait,
);

fn with_thresholds(mut e: Event, max: f64, min: u32) -> Event {
    e.details.insert("max_failure_rate".into(), max.into());
    e.details.insert("min_reports".into(), min.into());
    e.details
        .insert("waves".into(), serde_json::json!(["canary", "all"]));
    e.details.insert("agent_version".into(), "1.0.0".into());
    e
}

async fn gate(s: &Server, token: &str) -> Gate {
    let r = s
        .http
        .get(s.url("/api/v1/gate/stable/2.0.0"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

async fn gate_closes_above_the_failure_rate_and_opens_again_when_agents_recover(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let fleet = SignedFleet::new(dir.path());
    fleet.publish("2.0.0", 0.3, 3);
    let s = Server::on_with(&backend, |st| fleet.configure(st)).await;
    let mut tokens = Vec::new();
    for i in 1..=5 {
        tokens.push(s.enroll(&format!("a{i}")).await);
    }
    let send = |i: usize, e: Event| {
        let s = &s;
        let t = tokens[i - 1].clone();
        async move {
            let r = s.post_events(&t, &[e]).await;
            assert_eq!(r.status(), 200);
        }
    };
    // nothing reported yet: open
    let g = gate(&s, common::ADMIN).await;
    assert_eq!(
        (g.state, g.settings_source),
        (GateState::Open, SettingsSource::Manifest)
    );

    use EventKind::*;
    use EventStatus::*;
    send(
        1,
        with_thresholds(
            update("a1", UpdateHealthcheck, Success, "2.0.0", "canary"),
            0.3,
            3,
        ),
    )
    .await;
    send(
        2,
        with_thresholds(
            update("a2", UpdateHealthcheck, Failed, "2.0.0", "canary"),
            0.3,
            3,
        ),
    )
    .await;
    let g = gate(&s, &tokens[4]).await; // agents may read the gate
    assert_eq!(g.settings_source, SettingsSource::Manifest);
    assert_eq!(
        (g.state, g.reports, g.failed),
        (GateState::Open, 2, 1),
        "{}",
        g.reason
    );
    assert!(g.reason.contains("of 3 reports"), "{}", g.reason);

    send(
        3,
        with_thresholds(
            update("a3", UpdateRollback, Success, "2.0.0", "all"),
            0.3,
            3,
        ),
    )
    .await;
    let g = gate(&s, &tokens[0]).await;
    assert_eq!(
        (g.state, g.reports, g.failed),
        (GateState::Closed, 3, 2),
        "{}",
        g.reason
    );
    assert_eq!(g.max_failure_rate, Some(0.3));

    // a deferral after the failure does not hide it
    send(3, update("a3", UpdateDeferred, Info, "2.0.0", "all")).await;
    assert_eq!(gate(&s, common::ADMIN).await.state, GateState::Closed);

    // a4 waits for its wave; a5 never reported
    let mut deferred = update("a4", UpdateDeferred, Info, "2.0.0", "all");
    deferred.wave = None;
    send(4, deferred).await;

    // progress per wave
    let p: RolloutProgress = s.admin_json("/api/v1/rollouts/stable/2.0.0").await;
    let names: Vec<&str> = p.waves.iter().map(|w| w.wave.as_str()).collect();
    assert_eq!(
        names,
        ["canary", "all"],
        "a4, a5 placed by the wave function"
    );
    assert_eq!((p.waves[0].on_release, p.waves[0].failed), (1, 1));
    assert_eq!(p.waves[1].rolled_back, 1);
    assert_eq!(p.agents, 5);
    let sum =
        |f: fn(&flotilla_protocol::api::WaveProgress) -> u64| p.waves.iter().map(f).sum::<u64>();
    assert_eq!((sum(|w| w.waiting), sum(|w| w.not_reporting)), (1, 1));
    assert!(p.active);
    let list: RolloutList = s.admin_json("/api/v1/rollouts").await;
    assert_eq!(list.rollouts.len(), 1);
    assert_eq!(list.rollouts[0].release, "2.0.0");

    // the failed agents retry and get healthy: the gate opens again
    send(
        2,
        update("a2", UpdateHealthcheck, Success, "2.0.0", "canary"),
    )
    .await;
    send(3, update("a3", UpdateInstall, Success, "2.0.0", "all")).await;
    send(3, update("a3", UpdateHealthcheck, Success, "2.0.0", "all")).await;
    let g = gate(&s, common::ADMIN).await;
    assert_eq!(
        (g.state, g.reports, g.failed),
        (GateState::Open, 3, 0),
        "{}",
        g.reason
    );

    // no token, wrong token: 401; the rollout itself is admin-only
    let r = s
        .http
        .get(s.url("/api/v1/gate/stable/2.0.0"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = s
        .http
        .get(s.url("/api/v1/rollouts/stable/2.0.0"))
        .bearer_auth(&tokens[0])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    s.stop().await;
}

async fn gate_takes_thresholds_and_waves_from_the_verified_manifest(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let fleet = SignedFleet::new(dir.path());
    fleet.publish("2.0.0", 0.5, 2);
    let s = Server::on_with(&backend, |st| fleet.configure(st)).await;
    let mut tokens = Vec::new();
    for i in 0..20 {
        tokens.push(s.enroll(&format!("h{i:02}")).await);
    }
    // agents report thresholds that disagree: the manifest wins
    use EventKind::*;
    use EventStatus::*;
    let mut e = with_thresholds(
        update("h00", UpdateHealthcheck, Failed, "2.0.0", "canary"),
        0.9,
        100,
    );
    e.wave = None;
    s.post_events(&tokens[0], &[e]).await;
    let g = gate(&s, common::ADMIN).await;
    assert_eq!(g.settings_source, SettingsSource::Manifest);
    assert_eq!((g.max_failure_rate, g.min_reports), (Some(0.5), Some(2)));
    assert_eq!(g.state, GateState::Open, "1 of 2 reports");
    let mut e = update("h01", UpdateHealthcheck, Failed, "2.0.0", "canary");
    e.wave = None;
    s.post_events(&tokens[1], &[e]).await;
    assert_eq!(gate(&s, common::ADMIN).await.state, GateState::Closed);

    // waves come from the manifest, each agent placed by the wave function
    let p: RolloutProgress = s.admin_json("/api/v1/rollouts/stable/2.0.0").await;
    let names: Vec<&str> = p.waves.iter().map(|w| w.wave.as_str()).collect();
    assert_eq!(names, ["canary", "all"]);
    assert_eq!(p.agents, 20);
    assert_eq!(p.waves[0].agents + p.waves[1].agents, 20);
    let canary_expected = (0..20)
        .filter(|i| flotilla_protocol::wave::bucket("stable", "2.0.0", &format!("h{i:02}")) < 5000)
        .count() as u64;
    assert_eq!(p.waves[0].agents, canary_expected);
    s.stop().await;
}

async fn finished_rollouts_are_kept_per_channel(backend: Backend) {
    use flotilla_protocol::api::RolloutHistory;
    let dir = tempfile::tempdir().unwrap();
    let fleet = SignedFleet::new(dir.path());
    fleet.publish("2.0.0", 0.5, 2);
    let s = Server::on_with(&backend, |st| fleet.configure(st)).await;
    let t = s.enroll("a1").await;
    let mut ok = update(
        "a1",
        EventKind::UpdateHealthcheck,
        EventStatus::Success,
        "2.0.0",
        "canary",
    );
    ok.details.insert("agent_version".into(), "2.0.0".into());
    assert_eq!(s.post_events(&t, &[ok]).await.status(), 200);
    common::wait_until("2.0.0 is recorded", || async {
        let h: RolloutHistory = s.admin_json("/api/v1/rollouts/history").await;
        h.rollouts
            .iter()
            .any(|r| r.progress.release == "2.0.0" && r.current)
    })
    .await;
    // The manifest moves stable on to 3.0.0: 2.0.0 stays, finished.
    fleet.publish("3.0.0", 0.5, 2);
    common::wait_until("3.0.0 is recorded", || async {
        let h: RolloutHistory = s
            .admin_json("/api/v1/rollouts/history?channel=stable")
            .await;
        h.rollouts.len() == 2 && h.rollouts[0].progress.release == "3.0.0"
    })
    .await;
    let h: RolloutHistory = s
        .admin_json("/api/v1/rollouts/history?channel=stable")
        .await;
    let old = &h.rollouts[1];
    assert_eq!(old.progress.release, "2.0.0");
    assert!(!old.current && h.rollouts[0].current);
    assert_eq!(
        old.progress.waves.iter().map(|w| w.on_release).sum::<u64>(),
        1,
        "its outcome is kept"
    );
    s.stop().await;
}

async fn each_wave_says_its_target_when_it_opens_and_why_agents_wait(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let fleet = SignedFleet::new(dir.path());
    fleet.publish("2.0.0", 0.3, 1);
    let s = Server::on_with(&backend, |st| fleet.configure(st)).await;
    // Two agents check in: one waits for its wave, one is held by the gate.
    for (id, state) in [("w1", "waiting"), ("h1", "held")] {
        let t = s.enroll(id).await;
        let r = s
            .checkin(&t, serde_json::json!({"state": state, "release": "2.0.0", "wave": "all", "channel": "stable"}))
            .await;
        assert_eq!(r.status(), 202);
    }
    common::wait_until("the check-ins are written", || async {
        let p: RolloutProgress = s.admin_json("/api/v1/rollouts/stable/2.0.0").await;
        p.waves
            .iter()
            .map(|w| w.held + w.wave_not_open)
            .sum::<u64>()
            == 2
    })
    .await;
    let p: RolloutProgress = s.admin_json("/api/v1/rollouts/stable/2.0.0").await;
    let canary = &p.waves[0];
    assert_eq!(
        (canary.wave.as_str(), canary.percent),
        ("canary", Some(50.0))
    );
    assert_eq!(
        canary.opens_at.unwrap().to_rfc3339(),
        "2026-01-01T00:00:00+00:00"
    );
    let all = &p.waves[1];
    assert_eq!(all.percent, Some(100.0));
    assert_eq!(
        all.opens_at.unwrap().to_rfc3339(),
        "2026-01-02T00:00:00+00:00",
        "a day after the start"
    );
    assert_eq!((all.waiting, all.wave_not_open, all.held), (2, 1, 1));
    s.stop().await;
}
