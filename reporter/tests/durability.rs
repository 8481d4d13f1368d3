//! A reporter killed with SIGKILL while agents post batches loses no
//! acknowledged event, and redelivery after the restart doubles nothing.

mod common;

use std::collections::HashSet;
use std::path::Path;
use std::process::Child;
use std::sync::{Arc, Mutex};

use common::{both, enroll_request, event, wait_until, Backend, TestDb};
use flotilla_protocol::api::{EnrollResponse, EventsAccepted};
use flotilla_protocol::{Event, EventKind, EventStatus};
use uuid::Uuid;

const AGENTS: usize = 4;
const BATCH: usize = 50;

fn spawn(db: &TestDb, admin: &Path) -> (Child, String) {
    common::spawn_serve(db, admin, &[], None)
}

fn batch(agent: &str) -> Vec<Event> {
    (0..BATCH)
        .map(|i| {
            let mut e = event(agent, EventKind::ManifestCheck, EventStatus::Success);
            e.message = format!("check {i}");
            e
        })
        .collect()
}

both!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)];
    sigkilled_reporter_loses_no_acknowledged_event,
);

async fn sigkilled_reporter_loses_no_acknowledged_event(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let db = backend.fresh(dir.path());
    let admin = dir.path().join("admin.token");
    common::write_admin_token(&admin);
    let (_, enrollment) = db
        .with_store(|st| async move { st.token_create(None, None, String::new()).await })
        .await
        .unwrap();

    let (mut child, url) = spawn(&db, &admin);
    let http = reqwest::Client::new();
    let mut tokens = Vec::new();
    for i in 0..AGENTS {
        let r = http
            .post(format!("{url}/api/v1/enroll"))
            .json(&enroll_request(&enrollment, &format!("agent-{i}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        tokens.push(r.json::<EnrollResponse>().await.unwrap().agent_token);
    }

    // Each agent posts batches in a loop until the reporter stops answering;
    // it remembers what was acknowledged and the batch in flight.
    let acked: Arc<Mutex<Vec<Uuid>>> = Arc::default();
    let mut clients = Vec::new();
    for (i, token) in tokens.iter().cloned().enumerate() {
        let (http, url, acked) = (http.clone(), url.clone(), acked.clone());
        clients.push(tokio::spawn(async move {
            loop {
                let events = batch(&format!("agent-{i}"));
                let r = http
                    .post(format!("{url}/api/v1/events"))
                    .bearer_auth(&token)
                    .json(&serde_json::json!({ "events": events }))
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status() == 200 => match r.json::<EventsAccepted>().await {
                        Ok(a) => {
                            assert_eq!(a.new, BATCH);
                            acked.lock().unwrap().extend(events.iter().map(|e| e.id));
                        }
                        Err(_) => return (token, events),
                    },
                    Ok(r) => panic!("unexpected {}", r.status()),
                    Err(_) => return (token, events),
                }
            }
        }));
    }
    wait_until("a few thousand events were acknowledged", || async {
        acked.lock().unwrap().len() >= 4_000
    })
    .await;
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let mut in_flight = Vec::new();
    for c in clients {
        in_flight.push(c.await.unwrap());
    }
    let acked: HashSet<Uuid> = acked.lock().unwrap().iter().copied().collect();

    // Restart on the same database: every acknowledged event is there.
    let (mut child, url) = spawn(&db, &admin);
    let stored: HashSet<Uuid> = db.event_ids().await.into_iter().collect();
    let lost = acked.difference(&stored).count();
    eprintln!(
        "{}: acknowledged {} events, {} stored after SIGKILL, {} lost",
        db.name(),
        acked.len(),
        stored.len(),
        lost
    );
    assert_eq!(lost, 0, "acknowledged events lost");

    // The agents redeliver what was in flight: stored once, never twice.
    let mut redelivered_new = 0;
    for (token, events) in &in_flight {
        let r = http
            .post(format!("{url}/api/v1/events"))
            .bearer_auth(token)
            .json(&serde_json::json!({ "events": events }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let a: EventsAccepted = r.json().await.unwrap();
        assert_eq!(a.new + a.duplicates, BATCH);
        redelivered_new += a.new;
    }
    let total = db.scalar("SELECT count(*) FROM events").await;
    assert_eq!(total as usize, stored.len() + redelivered_new);
    // every event is stored exactly once: acknowledged before the kill, or
    // in flight (committed or not) and redelivered now
    assert_eq!(total as usize, acked.len() + in_flight.len() * BATCH);
    child.kill().unwrap();
    child.wait().unwrap();
}
