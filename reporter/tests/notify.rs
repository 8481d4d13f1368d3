//! Webhook notifications against a real receiver on loopback: signed
//! delivery, a receiver that is down or answers 500, the bounds, and the
//! watcher's notices (gate closed and reopened, agents gone silent, a
//! manifest about to expire).

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use common::{both, update, wait_until, Backend, Server, SignedFleet};
use flotilla_protocol::{EventKind, EventStatus};
use flotilla_reporter::notify::deliver::sign;
use flotilla_reporter::settings::{NotifySettings, Secret, Webhook, WebhookFormat};
use serde_json::Value;

both!(
    #[tokio::test];
    delivers_rollbacks_and_failed_migrations_signed_and_in_slack_form,
    a_receiver_that_is_down_gets_the_notice_when_it_comes_back,
    a_500_is_retried_until_the_receiver_takes_it,
    the_outbox_is_bounded_and_drops_are_counted,
    the_watcher_tells_of_gates_silent_agents_and_expiry,
);

const SECRET: &str = "webhook-secret-for-tests-0123";

/// A webhook receiver: records every request, answers `status`.
#[derive(Clone)]
struct Receiver {
    addr: SocketAddr,
    got: Arc<Mutex<Vec<(HeaderMap, Bytes)>>>,
    status: Arc<AtomicU16>,
}

impl Receiver {
    async fn start() -> Receiver {
        Receiver::on(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap())
    }

    fn on(listener: tokio::net::TcpListener) -> Receiver {
        let addr = listener.local_addr().unwrap();
        let got = Arc::new(Mutex::new(Vec::new()));
        let status = Arc::new(AtomicU16::new(200));
        let (g, st) = (got.clone(), status.clone());
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: HeaderMap, body: Bytes| {
                let (g, st) = (g.clone(), st.clone());
                async move {
                    g.lock().unwrap().push((headers, body));
                    StatusCode::from_u16(st.load(Ordering::SeqCst)).unwrap()
                }
            }),
        );
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Receiver { addr, got, status }
    }

    fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    fn bodies(&self) -> Vec<Value> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .map(|(_, b)| serde_json::from_slice(b).unwrap())
            .collect()
    }

    fn count(&self) -> usize {
        self.got.lock().unwrap().len()
    }

    fn kinds(&self) -> Vec<String> {
        self.bodies()
            .iter()
            .filter_map(|b| b["kind"].as_str().map(str::to_owned))
            .collect()
    }
}

fn hook(name: &str, url: &str, format: WebhookFormat, kinds: &[&str]) -> Webhook {
    Webhook {
        name: name.into(),
        url: url.into(),
        secret: Some(Secret::new(SECRET)),
        format,
        kinds: kinds.iter().map(|k| (*k).to_owned()).collect(),
    }
}

fn fast(webhooks: Vec<Webhook>) -> NotifySettings {
    NotifySettings {
        webhooks,
        retry_min: Duration::from_millis(50),
        retry_max: Duration::from_millis(200),
        timeout: Duration::from_secs(5),
        check_every: Duration::from_millis(100),
        ..NotifySettings::default()
    }
}

async fn queued(s: &Server) -> Vec<(String, u32)> {
    s.db.rows("SELECT kind, CAST(attempts AS TEXT) FROM notify_outbox ORDER BY id")
        .await
        .into_iter()
        .map(|r| (r[0].clone(), r[1].parse().unwrap()))
        .collect()
}

async fn metrics(s: &Server) -> String {
    s.admin_get("/metrics").await.text().await.unwrap()
}

async fn rollback(s: &Server, token: &str, agent: &str, n: usize) {
    let events: Vec<_> = (0..n)
        .map(|_| {
            update(
                agent,
                EventKind::UpdateRollback,
                EventStatus::Success,
                "2.0.0",
                "canary",
            )
        })
        .collect();
    assert_eq!(s.post_events(token, &events).await.status(), 200);
}

async fn delivers_rollbacks_and_failed_migrations_signed_and_in_slack_form(backend: Backend) {
    let rx = Receiver::start().await;
    let url = rx.url();
    let s = Server::on_with(&backend, |st| {
        st.notify = fast(vec![
            hook("ops", &url, WebhookFormat::Json, &[]),
            hook("chat", &url, WebhookFormat::Slack, &["rollback"]),
        ])
    })
    .await;
    let token = s.enroll("a1").await;
    let mut migration = update(
        "a1",
        EventKind::MigrationExecution,
        EventStatus::Failed,
        "2.0.0",
        "canary",
    );
    migration.message = "migration 0003_users.sql failed: disk full".into();
    let ok = update(
        "a1",
        EventKind::UpdateHealthcheck,
        EventStatus::Success,
        "1.0.0",
        "canary",
    );
    assert_eq!(s.post_events(&token, &[ok, migration]).await.status(), 200);
    rollback(&s, &token, "a1", 1).await;
    wait_until("three requests arrived", || async { rx.count() >= 3 }).await;
    wait_until("the outbox is empty", || async {
        queued(&s).await.is_empty()
    })
    .await;

    let got = rx.got.lock().unwrap().clone();
    assert_eq!(got.len(), 3, "a healthy update is no news");
    for (headers, body) in &got {
        let sig = headers["x-flotilla-signature"].to_str().unwrap();
        let t: i64 = sig
            .strip_prefix("t=")
            .and_then(|r| r.split(',').next())
            .unwrap()
            .parse()
            .unwrap();
        assert!((chrono::Utc::now().timestamp() - t).abs() < 300);
        assert_eq!(sig, sign(SECRET, t, body), "the signature verifies");
        assert_ne!(
            sig,
            sign("another-secret-0123456789", t, body),
            "and only with the secret"
        );
        assert!(headers.contains_key("x-flotilla-delivery"));
    }
    let bodies = rx.bodies();
    let json: Vec<&Value> = bodies.iter().filter(|b| b.get("kind").is_some()).collect();
    let slack: Vec<&Value> = bodies.iter().filter(|b| b.get("text").is_some()).collect();
    assert_eq!((json.len(), slack.len()), (2, 1), "{bodies:?}");
    let m = json
        .iter()
        .find(|b| b["kind"] == "migration_failed")
        .unwrap();
    assert_eq!(
        (&m["agent_id"], &m["release"], &m["channel"]),
        (&"a1".into(), &"2.0.0".into(), &"stable".into())
    );
    assert!(m["summary"].as_str().unwrap().contains("disk full"), "{m}");
    let r = json.iter().find(|b| b["kind"] == "rollback").unwrap();
    assert_eq!(r["release"], "2.0.0", "the release rolled back from");
    assert!(
        slack[0]["text"]
            .as_str()
            .unwrap()
            .contains("a1 rolled back"),
        "{}",
        slack[0]
    );
    let text = metrics(&s).await;
    assert!(
        text.contains("flotilla_notifications_sent_total{receiver=\"ops\"} 2"),
        "{text}"
    );
    s.stop().await;
}

async fn a_receiver_that_is_down_gets_the_notice_when_it_comes_back(backend: Backend) {
    // A port with nothing listening (yet).
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let url = format!("http://{addr}/hook");
    let s = Server::on_with(&backend, |st| {
        st.notify = fast(vec![hook("ops", &url, WebhookFormat::Json, &[])])
    })
    .await;
    let token = s.enroll("a1").await;
    rollback(&s, &token, "a1", 1).await;
    wait_until("the notice was tried three times", || async {
        queued(&s).await.first().is_some_and(|(_, n)| *n >= 3)
    })
    .await;
    assert_eq!(queued(&s).await.len(), 1, "kept while the receiver is down");

    let rx = Receiver::on(tokio::net::TcpListener::bind(addr).await.unwrap());
    wait_until("the receiver got it", || async { rx.count() == 1 }).await;
    wait_until("the outbox is empty", || async {
        queued(&s).await.is_empty()
    })
    .await;
    assert_eq!(rx.kinds(), ["rollback"]);
    let text = metrics(&s).await;
    assert!(
        text.contains("flotilla_notifications_sent_total{receiver=\"ops\"} 1"),
        "{text}"
    );
    assert!(text.contains("flotilla_notifications_queued 0"), "{text}");
    s.stop().await;
}

async fn a_500_is_retried_until_the_receiver_takes_it(backend: Backend) {
    let rx = Receiver::start().await;
    rx.status.store(500, Ordering::SeqCst);
    let url = rx.url();
    let s = Server::on_with(&backend, |st| {
        st.notify = fast(vec![hook("ops", &url, WebhookFormat::Json, &[])])
    })
    .await;
    let token = s.enroll("a1").await;
    rollback(&s, &token, "a1", 1).await;
    wait_until("two attempts answered 500", || async { rx.count() >= 2 }).await;
    assert_eq!(queued(&s).await.len(), 1, "a 500 is not a delivery");
    rx.status.store(204, Ordering::SeqCst);
    wait_until("the outbox is empty", || async {
        queued(&s).await.is_empty()
    })
    .await;
    let delivery = |i: usize| rx.got.lock().unwrap()[i].0["x-flotilla-delivery"].clone();
    assert_eq!(delivery(0), delivery(1), "a retry is the same delivery");
    s.stop().await;
}

async fn the_outbox_is_bounded_and_drops_are_counted(backend: Backend) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    drop(listener);
    let s = Server::on_with(&backend, |st| {
        st.notify = NotifySettings {
            max_rows: 2,
            max_attempts: 2,
            ..fast(vec![hook("ops", &url, WebhookFormat::Json, &[])])
        }
    })
    .await;
    let token = s.enroll("a1").await;
    rollback(&s, &token, "a1", 3).await;
    assert!(queued(&s).await.len() <= 2, "at most max_rows wait");
    wait_until("both kept notices were given up", || async {
        queued(&s).await.is_empty()
    })
    .await;
    let text = metrics(&s).await;
    for line in [
        "flotilla_notifications_dropped_total{receiver=\"ops\",reason=\"max_rows\"} 1",
        "flotilla_notifications_dropped_total{receiver=\"ops\",reason=\"max_attempts\"} 2",
        "flotilla_notifications_failed_total{receiver=\"ops\"} 4",
    ] {
        assert!(text.contains(line), "{line} in {text}");
    }
    s.stop().await;

    // Too old: dropped even though attempts remain.
    let s = Server::on_with(&backend, |st| {
        st.notify = NotifySettings {
            max_age: Duration::from_millis(300),
            ..fast(vec![hook("ops", &url, WebhookFormat::Json, &[])])
        }
    })
    .await;
    let token = s.enroll("a1").await;
    rollback(&s, &token, "a1", 1).await;
    wait_until("the old notice was dropped", || async {
        queued(&s).await.is_empty()
    })
    .await;
    let text = metrics(&s).await;
    assert!(
        text.contains(
            "flotilla_notifications_dropped_total{receiver=\"ops\",reason=\"max_age\"} 1"
        ),
        "{text}"
    );
    s.stop().await;
}

async fn the_watcher_tells_of_gates_silent_agents_and_expiry(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let fleet = SignedFleet::new(dir.path());
    // Expires in 7 days; the warning starts 30 days ahead.
    fleet.publish("2.0.0", 0.5, 1);
    let rx = Receiver::start().await;
    let url = rx.url();
    let s = Server::on_with(&backend, |st| {
        fleet.configure(st);
        st.stale_after = Duration::from_secs(2);
        st.notify = NotifySettings {
            expiry_warning: Duration::from_secs(30 * 86_400),
            ..fast(vec![hook(
                "ops",
                &url,
                WebhookFormat::Json,
                &["gate_closed", "gate_reopened", "agents_silent", "expiring"],
            )])
        };
    })
    .await;
    let mut tokens = Vec::new();
    for a in ["a1", "a2", "a3"] {
        tokens.push(s.enroll(a).await);
    }
    let health =
        |a: &str, status| update(a, EventKind::UpdateHealthcheck, status, "2.0.0", "canary");
    let post = |i: usize, e| {
        let (s, t) = (&s, tokens[i].clone());
        async move { assert_eq!(s.post_events(&t, &[e]).await.status(), 200) }
    };
    post(0, health("a1", EventStatus::Failed)).await;
    // No one asks for the gate: the watcher notices by itself.
    wait_until("gate_closed arrived", || async {
        rx.kinds().contains(&"gate_closed".to_owned())
    })
    .await;
    post(1, health("a2", EventStatus::Success)).await;
    post(2, health("a3", EventStatus::Success)).await;
    wait_until("gate_reopened arrived", || async {
        rx.kinds().contains(&"gate_reopened".to_owned())
    })
    .await;
    wait_until("agents_silent arrived", || async {
        rx.kinds().contains(&"agents_silent".to_owned())
    })
    .await;
    let bodies = rx.bodies();
    let closed = bodies.iter().find(|b| b["kind"] == "gate_closed").unwrap();
    assert_eq!(
        (&closed["channel"], &closed["release"]),
        (&"stable".into(), &"2.0.0".into())
    );
    assert!(
        closed["reason"].as_str().unwrap().contains("100.0%"),
        "{closed}"
    );
    let silent: Vec<&Value> = bodies
        .iter()
        .filter(|b| b["kind"] == "agents_silent")
        .collect();
    let named: Vec<&str> = silent
        .iter()
        .flat_map(|b| b["agents"].as_array().unwrap())
        .map(|a| a.as_str().unwrap())
        .collect();
    assert!(named.contains(&"a1"), "{silent:?}");
    let expiring: Vec<&Value> = bodies.iter().filter(|b| b["kind"] == "expiring").collect();
    assert_eq!(
        expiring.len(),
        1,
        "once per serial, though checked many times"
    );
    assert_eq!(
        (&expiring[0]["what"], &expiring[0]["version"]),
        (&"manifest".into(), &1.into())
    );
    let kinds = rx.kinds();
    assert_eq!(
        kinds.iter().filter(|k| *k == "gate_closed").count(),
        1,
        "one notice per change: {kinds:?}"
    );
    s.stop().await;
}
