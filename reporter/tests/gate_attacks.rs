//! Attacks on the halt gate and the rollout view, performed over HTTP on
//! loopback: agents forging thresholds or rollouts, a manifest copy that
//! does not verify or never ends, and agents filling memory or tables.

mod common;

use common::{both, update, wait_until, Backend, Server, SignedFleet};
use flotilla_protocol::api::{Gate, GateState, RolloutList, SettingsSource};
use flotilla_protocol::{Event, EventKind, EventStatus};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use EventKind::*;
use EventStatus::*;

both!(
    #[tokio::test];
    an_agent_cannot_switch_the_gate_off_with_thresholds_in_details,
    without_a_verified_manifest_every_gate_is_closed_and_says_why,
    one_event_cannot_hijack_the_rollout_or_its_gate_metric,
    a_manifest_url_with_an_endless_body_is_cut_at_the_size_cap,
    agents_cannot_grow_rollout_rows_or_the_page_without_bound,
);

async fn gate(s: &Server, channel: &str, release: &str) -> Gate {
    let g = s
        .admin_get(&format!("/api/v1/gate/{channel}/{release}"))
        .await;
    assert_eq!(g.status(), 200);
    g.json().await.unwrap()
}

async fn overview(s: &Server) -> String {
    let c = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    // the page takes a session; the login form gives one
    let login = c
        .post(s.url("/login"))
        .header("origin", &s.url)
        .form(&[("token", common::ADMIN)])
        .send()
        .await
        .unwrap();
    let cookie = login
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_owned())
        .collect::<Vec<_>>()
        .join("; ");
    let page = c
        .get(s.url("/"))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    page.text().await.unwrap()
}

async fn send(s: &Server, token: &str, e: Event) {
    let r = s.post_events(token, &[e]).await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
}

/// Two canaries fail; a third agent then reports generous thresholds with
/// a clock 23 hours ahead.
async fn switch_off_attempt(s: &Server, honest_thresholds: bool) -> (Gate, Gate) {
    let t1 = s.enroll("canary-1").await;
    let t2 = s.enroll("canary-2").await;
    let t3 = s.enroll("intruder").await;
    for (t, id) in [(&t1, "canary-1"), (&t2, "canary-2")] {
        let mut e = update(id, UpdateHealthcheck, Failed, "2.0.0", "canary");
        if honest_thresholds {
            // what agents copied from their manifest
            e.details.insert("max_failure_rate".into(), 0.5.into());
            e.details.insert("min_reports".into(), 2.into());
        }
        send(s, t, e).await;
    }
    let before = gate(s, "stable", "2.0.0").await;
    let mut e = update("intruder", UpdateHealthcheck, Success, "2.0.0", "canary");
    e.ts += chrono::Duration::hours(23);
    e.details.insert("max_failure_rate".into(), 1.0.into());
    e.details.insert("min_reports".into(), 1_000_000.into());
    e.details
        .insert("waves".into(), serde_json::json!(["everyone"]));
    send(s, &t3, e).await;
    (before, gate(s, "stable", "2.0.0").await)
}

async fn an_agent_cannot_switch_the_gate_off_with_thresholds_in_details(backend: Backend) {
    // with a verified manifest: its thresholds hold
    let dir = tempfile::tempdir().unwrap();
    let fleet = SignedFleet::new(dir.path());
    fleet.publish("2.0.0", 0.5, 2);
    let s = Server::on_with(&backend, |st| fleet.configure(st)).await;
    let (before, g) = switch_off_attempt(&s, false).await;
    assert_eq!(before.state, GateState::Closed, "{}", before.reason);
    assert_eq!(g.state, GateState::Closed, "{}", g.reason);
    assert_eq!(g.settings_source, SettingsSource::Manifest);
    assert_eq!((g.max_failure_rate, g.min_reports), (Some(0.5), Some(2)));
    assert_eq!((g.reports, g.failed), (3, 2));
    s.stop().await;

    // without one, agents' reports decide nothing: it stays closed
    let s = Server::on(&backend).await;
    let (before, g) = switch_off_attempt(&s, true).await;
    assert_eq!(before.state, GateState::Closed, "{}", before.reason);
    assert_eq!(g.state, GateState::Closed, "{}", g.reason);
    assert_eq!((g.max_failure_rate, g.min_reports), (None, None));
    s.stop().await;
}

async fn without_a_verified_manifest_every_gate_is_closed_and_says_why(backend: Backend) {
    // no --manifest at all
    let s = Server::on(&backend).await;
    let t = s.enroll("a1").await;
    let mut e = update("a1", UpdateHealthcheck, Success, "2.0.0", "canary");
    e.details.insert("max_failure_rate".into(), 1.0.into());
    send(&s, &t, e).await;
    let g = gate(&s, "stable", "2.0.0").await;
    assert_eq!(g.state, GateState::Closed, "{}", g.reason);
    assert_eq!(g.settings_source, SettingsSource::Unknown);
    assert!(g.reason.contains("--trust-root"), "{}", g.reason);
    let list: RolloutList = s.admin_json("/api/v1/rollouts").await;
    assert!(list.rollouts.is_empty(), "agents name no rollout");
    assert!(overview(&s).await.contains("no verified manifest"));
    s.stop().await;

    // a manifest signed by a key the root does not list is not used
    let dir = tempfile::tempdir().unwrap();
    let fleet = SignedFleet::new(dir.path());
    let stranger = flotilla_signing::PrivateKey::generate();
    std::fs::write(
        fleet.manifest_path(),
        fleet.envelope(&stranger, "2.0.0", 1.0, 1),
    )
    .unwrap();
    let s = Server::on_with(&backend, |st| fleet.configure(st)).await;
    let g = gate(&s, "stable", "2.0.0").await;
    assert_eq!(g.state, GateState::Closed, "{}", g.reason);
    assert!(
        g.reason.contains("no verified manifest yet"),
        "{}",
        g.reason
    );
    assert!(g.reason.contains("signed/manifest.json"), "{}", g.reason);

    // once a good one verifies the gate follows it; a bad copy after that
    // is refused, shown, and the last verified one kept
    fleet.publish("2.0.0", 0.5, 1);
    wait_until("the signed manifest is verified", || async {
        gate(&s, "stable", "2.0.0").await.state == GateState::Open
    })
    .await;
    std::fs::write(
        fleet.manifest_path(),
        fleet.envelope(&stranger, "3.0.0", 1.0, 1),
    )
    .unwrap();
    wait_until("the page shows the refusal", || async {
        overview(&s).await.contains("manifest-refused")
    })
    .await;
    let g = gate(&s, "stable", "2.0.0").await;
    assert_eq!((g.state, g.max_failure_rate), (GateState::Open, Some(0.5)));
    assert_eq!(
        gate(&s, "stable", "3.0.0").await.state,
        GateState::Closed,
        "a release only the refused copy names"
    );
    let metrics = s.admin_get("/metrics").await.text().await.unwrap();
    assert!(metrics.contains("flotilla_manifest_refused 1"), "{metrics}");
    s.stop().await;
}

async fn one_event_cannot_hijack_the_rollout_or_its_gate_metric(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let fleet = SignedFleet::new(dir.path());
    fleet.publish("2.0.0", 0.5, 1);
    let s = Server::on_with(&backend, |st| fleet.configure(st)).await;
    let t = s.enroll("web-01").await;
    let mut e = update("web-01", UpdateHealthcheck, Success, "99.0.0", "canary");
    e.ts += chrono::Duration::hours(23);
    send(&s, &t, e).await;
    // the agent's next, honest report is current, whatever its clock said
    send(
        &s,
        &t,
        update("web-01", UpdateHealthcheck, Success, "2.0.0", "canary"),
    )
    .await;

    let list: RolloutList = s.admin_json("/api/v1/rollouts").await;
    let shown: Vec<(&str, &str)> = list
        .rollouts
        .iter()
        .map(|r| (r.channel.as_str(), r.release.as_str()))
        .collect();
    assert_eq!(shown, [("stable", "2.0.0")]);
    let metrics = s.admin_get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("flotilla_gate_closed{channel=\"stable\",release=\"2.0.0\"} 0"),
        "{metrics}"
    );
    assert!(!metrics.contains("99.0.0"), "{metrics}");
    let page = overview(&s).await;
    assert!(page.contains("2.0.0") && !page.contains("99.0.0"));
    let agent: flotilla_protocol::api::AgentSummary = s.admin_json("/api/v1/agents/web-01").await;
    assert_eq!(agent.version.as_deref(), Some("2.0.0"));
    s.stop().await;
}

/// An HTTP server on loopback answering every request with a chunked body
/// that never ends.
async fn endless_server() -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/fleet/manifest.json", l.local_addr().unwrap());
    tokio::spawn(async move {
        loop {
            let Ok((mut c, _)) = l.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = c.read(&mut buf).await;
                let head = "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n";
                if c.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let chunk = format!("{:x}\r\n{}\r\n", 1 << 16, "{".repeat(1 << 16));
                while c.write_all(chunk.as_bytes()).await.is_ok() {}
            });
        }
    });
    url
}

async fn a_manifest_url_with_an_endless_body_is_cut_at_the_size_cap(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let fleet = SignedFleet::new(dir.path());
    let url = endless_server().await;
    let s = Server::on_with(&backend, |st| {
        fleet.configure(st);
        st.manifest = Some(url.clone());
    })
    .await;
    // the first read happens before the server answers
    let g = gate(&s, "stable", "2.0.0").await;
    assert_eq!(g.state, GateState::Closed);
    assert!(
        g.reason
            .contains(&format!("larger than {} bytes", 16 * 1024 * 1024)),
        "{}",
        g.reason
    );
    s.stop().await;
}

async fn agents_cannot_grow_rollout_rows_or_the_page_without_bound(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let fleet = SignedFleet::new(dir.path());
    fleet.publish("2.0.0", 0.5, 1);
    let s = Server::on_with(&backend, |st| fleet.configure(st)).await;
    let t = s.enroll("web-01").await;
    for batch in 0..10 {
        let events: Vec<Event> = (0..500)
            .map(|i| {
                let mut e = update(
                    "web-01",
                    UpdateDeferred,
                    Info,
                    &format!("{batch}.{i}.0"),
                    "canary",
                );
                e.channel = Some(format!("ch-{batch}-{i}"));
                e
            })
            .collect();
        let r = s.post_events(&t, &events).await;
        assert_eq!(r.status(), 200);
    }
    let rows = s.db.scalar("SELECT count(*) FROM agent_release").await;
    assert!(rows <= 16, "{rows} rollout rows for one agent");
    let page = overview(&s).await;
    assert!(page.len() < 100_000, "the page is {} bytes", page.len());
    assert!(!page.contains("ch-0-0"));
    s.stop().await;
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn gate_lookups_of_unknown_names_are_not_kept_in_memory() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("admin.token");
    common::write_admin_token(&token);
    let (mut child, url) = common::spawn_serve(
        &common::TestDb::Sqlite(dir.path().join("r.db")),
        &token,
        &[],
        None,
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let http = reqwest::Client::new();
    let lookups = |n: usize| {
        let http = http.clone();
        let url = url.clone();
        async move {
            for i in 0..n {
                let name = format!("{i}{}", "x".repeat(20_000));
                let r = http
                    .get(format!("{url}/api/v1/gate/{name}/{name}"))
                    .bearer_auth(common::ADMIN)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
            }
        }
    };
    rt.block_on(lookups(50));
    let before = rss_kib(child.id());
    rt.block_on(lookups(1000));
    let grown = rss_kib(child.id()).saturating_sub(before);
    let _ = child.kill();
    let _ = child.wait();
    // kept, 1,000 gates of 40 KB names are 80 MB and more
    assert!(grown < 30 * 1024, "RSS grew by {grown} KiB");
}

#[test]
fn the_trust_root_is_required_with_a_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let fleet = SignedFleet::new(dir.path());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_flotilla-reporter"))
        .arg("serve")
        .arg("--db")
        .arg(dir.path().join("r.db"))
        .arg("--manifest")
        .arg(fleet.manifest_path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--trust-root"), "{err}");
}
