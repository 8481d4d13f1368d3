//! Two real `flotilla-reporter serve` processes over one PostgreSQL
//! database (issue 14): agents' batches spread across both survive one
//! being SIGKILLed, a token's uses hold under concurrent enrollments on
//! both, the gate and the manual halts answer the same on both, a web
//! login on one is valid on the other, and retention runs on one at a time.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::process::Child;
use std::sync::{Arc, Mutex};

use common::pg::TestPg;
use common::{enroll_request, event, update, wait_until, SignedFleet};
use flotilla_protocol::api::{
    AgentList, EnrollResponse, EventPage, EventsAccepted, Gate, GateState,
};
use flotilla_protocol::{Event, EventKind, EventStatus};
use uuid::Uuid;

/// One `serve` process; SIGKILLed on drop.
struct Replica {
    child: Child,
    url: String,
}

impl Replica {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    fn kill(&mut self) {
        let _ = self.child.kill(); // SIGKILL
        let _ = self.child.wait();
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A fresh database with two replicas over it.
struct Pair {
    srv: TestPg,
    db: String,
    _dir: tempfile::TempDir,
    a: Replica,
    b: Replica,
}

/// No rate limits in the way of the load the tests make from one address.
const UNLIMITED: &str = "rate_limit_per_second = 1000000.0
rate_limit_burst = 1000000.0
enroll_per_minute = 1000000.0
enroll_burst = 1000000.0
";

impl Pair {
    /// Two replicas over a fresh database of `srv`, with `config` (TOML)
    /// added to their config file.
    fn start(srv: TestPg, config: &str) -> Pair {
        let dir = tempfile::tempdir().unwrap();
        let db = srv.fresh_database();
        let admin = dir.path().join("admin.token");
        common::write_admin_token(&admin);
        let cfg = dir.path().join("reporter.toml");
        std::fs::write(&cfg, format!("{UNLIMITED}{config}")).unwrap();
        // Both at once: the schema is migrated once (pg_schema.rs).
        let (a, b) = std::thread::scope(|s| {
            let a = s.spawn(|| spawn(&srv, &db, &admin, &cfg));
            let b = s.spawn(|| spawn(&srv, &db, &admin, &cfg));
            (a.join().unwrap(), b.join().unwrap())
        });
        Pair {
            srv,
            db,
            _dir: dir,
            a,
            b,
        }
    }

    /// `flotilla-reporter ARGS --db URL --db-password-file F`: stdout.
    fn cli(&self, args: &[&str]) -> String {
        let mut all: Vec<&str> = args.to_vec();
        let pw = self.srv.password_file.to_str().unwrap();
        all.extend(["--db", &self.db, "--db-password-file", pw]);
        let ca;
        if let Some(f) = &self.srv.ca_file {
            ca = f.to_str().unwrap().to_owned();
            all.extend(["--db-ca-file", &ca]);
        }
        let (ok, out, err) = common::run_cli(&all);
        assert!(ok, "{args:?}: {err}");
        out
    }

    /// A new enrollment token of `uses` uses.
    fn enrollment_token(&self, uses: &str) -> String {
        self.cli(&["token", "create", "--uses", uses])
            .trim()
            .to_owned()
    }

    /// The replicas, `i` modulo 2.
    fn replica(&self, i: usize) -> &Replica {
        if i % 2 == 0 {
            &self.a
        } else {
            &self.b
        }
    }
}

/// `serve` over `db` with the config file `cfg`.
fn spawn(srv: &TestPg, db: &str, admin: &Path, cfg: &Path) -> Replica {
    let db = common::TestDb::Postgres {
        url: db.to_owned(),
        password_file: srv.password_file.clone(),
        ca_file: srv.ca_file.clone(),
        password: srv.password.clone(),
    };
    let (child, url) = common::spawn_serve(&db, admin, &["--config", cfg.to_str().unwrap()], None);
    Replica { child, url }
}

async fn enroll(http: &reqwest::Client, r: &Replica, token: &str, agent: &str) -> String {
    let resp = http
        .post(r.url("/api/v1/enroll"))
        .json(&enroll_request(token, agent))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201, "{}", resp.text().await.unwrap());
    resp.json::<EnrollResponse>().await.unwrap().agent_token
}

async fn post_events(
    http: &reqwest::Client,
    r: &Replica,
    token: &str,
    events: &[Event],
) -> reqwest::Result<reqwest::Response> {
    http.post(r.url("/api/v1/events"))
        .bearer_auth(token)
        .json(&serde_json::json!({ "events": events }))
        .send()
        .await
}

async fn admin_json<T: serde::de::DeserializeOwned>(
    http: &reqwest::Client,
    r: &Replica,
    path: &str,
) -> T {
    let resp = http
        .get(r.url(path))
        .bearer_auth(common::ADMIN)
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{path}: {}", resp.status());
    resp.json().await.unwrap()
}

/// Every event of `agent` through `r`'s API, page by page.
async fn all_events(http: &reqwest::Client, r: &Replica, agent: &str) -> Vec<Uuid> {
    let mut ids = Vec::new();
    let mut cursor = String::new();
    loop {
        let page: EventPage = admin_json(
            http,
            r,
            &format!("/api/v1/agents/{agent}/events?limit=1000&cursor={cursor}"),
        )
        .await;
        ids.extend(page.events.iter().map(|e| e.id));
        match page.next_cursor {
            Some(c) => cursor = c,
            None => return ids,
        }
    }
}

const AGENTS: usize = 4;
const BATCH: usize = 50;

fn batch(agent: &str) -> Vec<Event> {
    (0..BATCH)
        .map(|i| {
            let mut e = event(agent, EventKind::ManifestCheck, EventStatus::Success);
            e.message = format!("check {i}");
            e
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn batches_over_two_replicas_survive_one_sigkilled() {
    let Some(srv) = common::pg::server("batches_over_two_replicas_survive_one_sigkilled") else {
        return;
    };
    let mut pair = Pair::start(srv, "");
    let http = reqwest::Client::new();
    let token = pair.enrollment_token("unlimited");
    let mut tokens = Vec::new();
    for i in 0..AGENTS {
        tokens.push(enroll(&http, pair.replica(i), &token, &format!("agent-{i}")).await);
    }

    // Each agent posts its batches to A and B in turn until one does not
    // answer; it remembers what was acknowledged and the batch in flight.
    let acked: Arc<Mutex<Vec<Uuid>>> = Arc::default();
    let urls = [pair.a.url.clone(), pair.b.url.clone()];
    let mut clients = Vec::new();
    for (i, token) in tokens.iter().cloned().enumerate() {
        let (http, urls, acked) = (http.clone(), urls.clone(), acked.clone());
        clients.push(tokio::spawn(async move {
            for n in 0.. {
                let events = batch(&format!("agent-{i}"));
                let r = http
                    .post(format!("{}/api/v1/events", urls[(i + n) % 2]))
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
            unreachable!()
        }));
    }
    wait_until("a few thousand events were acknowledged", || async {
        acked.lock().unwrap().len() >= 4_000
    })
    .await;
    pair.b.kill();
    let mut in_flight = Vec::new();
    for c in clients {
        in_flight.push(c.await.unwrap());
    }
    let acked: Vec<Uuid> = acked.lock().unwrap().clone();

    // The agents redeliver what was in flight to the survivor: stored once.
    for (token, events) in &in_flight {
        let r = post_events(&http, &pair.a, token, events).await.unwrap();
        assert_eq!(r.status(), 200);
        let a: EventsAccepted = r.json().await.unwrap();
        assert_eq!(a.new + a.duplicates, BATCH);
    }
    let mut stored: HashMap<Uuid, usize> = HashMap::new();
    for i in 0..AGENTS {
        for id in all_events(&http, &pair.a, &format!("agent-{i}")).await {
            *stored.entry(id).or_default() += 1;
        }
    }
    let lost = acked.iter().filter(|id| !stored.contains_key(id)).count();
    eprintln!(
        "acknowledged {} events over two replicas, {lost} lost",
        acked.len()
    );
    assert_eq!(lost, 0, "acknowledged events lost");
    assert!(stored.values().all(|&n| n == 1), "an event listed twice");
    // every event is stored exactly once: acknowledged before the kill, or
    // in flight (committed or not) and redelivered now
    assert_eq!(stored.len(), acked.len() + in_flight.len() * BATCH);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_enrollments_over_two_replicas_never_exceed_a_tokens_uses() {
    let Some(srv) = common::pg::server("concurrent_enrollments_over_two_replicas") else {
        return;
    };
    let pair = Pair::start(srv, "");
    let token = pair.enrollment_token("50");
    let http = reqwest::Client::new();
    let tasks: Vec<_> = (0..100)
        .map(|i| {
            let (http, url, token) = (http.clone(), pair.replica(i).url.clone(), token.clone());
            tokio::spawn(async move {
                http.post(format!("{url}/api/v1/enroll"))
                    .json(&enroll_request(&token, &format!("agent-{i:03}")))
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16()
            })
        })
        .collect();
    let mut by_status: HashMap<u16, usize> = HashMap::new();
    for t in tasks {
        *by_status.entry(t.await.unwrap()).or_default() += 1;
    }
    assert_eq!(by_status.get(&201), Some(&50), "{by_status:?}");
    assert!(
        by_status
            .keys()
            .all(|s| *s == 201 || (400..500).contains(s)),
        "the others are refused, not failed: {by_status:?}"
    );
    for r in [&pair.a, &pair.b] {
        let list: AgentList = admin_json(&http, r, "/api/v1/agents?limit=1000").await;
        assert_eq!(list.total, 50);
        assert_eq!(list.agents.len(), 50);
    }
}

/// A signed fleet rolling 2.0.0 out on stable (failure rate 0.3 of at
/// least 3 reports), served by two replicas; the fleet's temp dir.
fn fleet_pair(srv: TestPg) -> (Pair, SignedFleet, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let fleet = SignedFleet::new(dir.path());
    fleet.publish("2.0.0", 0.3, 3);
    let config = format!(
        "manifest = {:?}\ntrust_root = {:?}\nmanifest_refresh = \"1s\"\n",
        fleet.manifest_path().display().to_string(),
        fleet.root_path().display().to_string()
    );
    (Pair::start(srv, &config), fleet, dir)
}

async fn gate(http: &reqwest::Client, r: &Replica) -> Gate {
    admin_json(http, r, "/api/v1/gate/stable/2.0.0").await
}

/// Waits until the gate is `state` on both replicas.
async fn gate_on_both(http: &reqwest::Client, pair: &Pair, state: GateState) {
    for r in [&pair.a, &pair.b] {
        wait_until(&format!("the gate is {state:?} on {}", r.url), || async {
            gate(http, r).await.state == state
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gate_closes_on_both_replicas_when_the_canaries_fail() {
    let Some(srv) = common::pg::server("the_gate_closes_on_both_replicas") else {
        return;
    };
    let (pair, _fleet, _dir) = fleet_pair(srv);
    let http = reqwest::Client::new();
    let token = pair.enrollment_token("unlimited");
    for r in [&pair.a, &pair.b] {
        let g = gate(&http, r).await;
        assert_eq!(g.state, GateState::Open, "{}", g.reason);
    }
    use EventKind::*;
    use EventStatus::*;
    let reports = [
        (
            "a1",
            update("a1", UpdateHealthcheck, Failed, "2.0.0", "canary"),
        ),
        (
            "a2",
            update("a2", UpdateRollback, Success, "2.0.0", "canary"),
        ),
        (
            "a3",
            update("a3", UpdateHealthcheck, Success, "2.0.0", "canary"),
        ),
    ];
    for (i, (agent, e)) in reports.into_iter().enumerate() {
        let r = pair.replica(i);
        let t = enroll(&http, r, &token, agent).await;
        let resp = post_events(&http, pair.replica(i + 1), &t, &[e])
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    // 2 of 3 canaries failed, above 0.3: closed, whichever replica answers.
    gate_on_both(&http, &pair, GateState::Closed).await;
    for r in [&pair.a, &pair.b] {
        let g = gate(&http, r).await;
        assert_eq!((g.reports, g.failed), (3, 2), "{}: {}", r.url, g.reason);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manual_halt_made_on_one_replica_closes_the_gate_on_the_other() {
    let Some(srv) = common::pg::server("a_manual_halt_made_on_one_replica") else {
        return;
    };
    let (pair, _fleet, _dir) = fleet_pair(srv);
    let http = reqwest::Client::new();
    gate_on_both(&http, &pair, GateState::Open).await;
    let r = http
        .post(pair.a.url("/api/v1/halts"))
        .bearer_auth(common::ADMIN)
        .json(&serde_json::json!({"channel": "stable", "reason": "2.0.0 corrupts the cache", "by": "alice"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let halt: serde_json::Value = r.json().await.unwrap();
    // B reloads the halts every second and caches gates for two: awaited.
    wait_until("B's gate is closed by A's halt", || async {
        let g = gate(&http, &pair.b).await;
        g.state == GateState::Closed && g.reason.contains("corrupts the cache")
    })
    .await;
    // Lifted on B, open again on A.
    let id = halt["id"].as_i64().expect("the halt's id");
    let r = http
        .post(pair.b.url(&format!("/api/v1/halts/{id}/reopen")))
        .bearer_auth(common::ADMIN)
        .json(&serde_json::json!({"by": "bob"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    gate_on_both(&http, &pair, GateState::Open).await;
}

#[tokio::test]
async fn a_web_login_on_one_replica_is_valid_on_the_other() {
    let Some(srv) = common::pg::server("a_web_login_on_one_replica") else {
        return;
    };
    let pair = Pair::start(srv, "");
    let c = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = c
        .post(pair.a.url("/login"))
        .header("origin", &pair.a.url)
        .form(&[("token", common::ADMIN)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let cookie = r.headers()["set-cookie"].to_str().unwrap();
    let session = cookie.split(';').next().unwrap().to_owned();

    let page = |r: &Replica| c.get(r.url("/agents")).header("cookie", &session).send();
    let r = page(&pair.b).await.unwrap();
    assert_eq!(r.status(), 200, "B knows A's session");
    let html = r.text().await.unwrap();
    let csrf = html
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("a csrf field")
        .to_owned();
    // Logged out on B: A no longer knows the session either.
    let r = c
        .post(pair.b.url("/logout"))
        .header("cookie", &session)
        .header("origin", &pair.b.url)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let r = page(&pair.a).await.unwrap();
    assert_eq!(r.status(), 303, "A refuses the session ended on B");
    assert_eq!(r.headers()["location"], "/login");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_runs_on_one_replica_at_a_time() {
    let Some(srv) = common::pg::server("retention_runs_on_one_replica_at_a_time") else {
        return;
    };
    let pair = Pair::start(srv, "retention_interval = \"1s\"\nretain_per_agent = 5\n");
    let http = reqwest::Client::new();
    let token = pair.enrollment_token("unlimited");
    let agent = enroll(&http, &pair.a, &token, "a1").await;
    for r in [&pair.a, &pair.b] {
        let resp = post_events(&http, r, &agent, &batch("a1")).await.unwrap();
        assert_eq!(resp.status(), 200);
    }
    // Pruned down to the 5 newest.
    wait_until("a1's events are pruned to 5", || async {
        all_events(&http, &pair.b, "a1").await.len() == 5
    })
    .await;

    // The lease names one of the two replicas (host:pid:random), and the
    // same one round after round while it lives.
    let pg = flotilla_reporter::db::pg::Pg::connect(&pair.db, Some(&pair.srv.password), 1)
        .await
        .unwrap();
    let c = pg.client().await.unwrap();
    let holder = || async {
        let rows = c
            .query(
                "SELECT holder FROM leases WHERE name = $1",
                &[&flotilla_reporter::retention::LEASE],
            )
            .await
            .unwrap();
        assert_eq!(rows.len(), 1, "one retention lease row");
        rows[0].get::<_, String>(0)
    };
    let first = holder().await;
    let pid_of = |h: &str| h.split(':').nth(1).unwrap().parse::<u32>().unwrap();
    let pids = [pair.a.child.id(), pair.b.child.id()];
    assert!(
        pids.contains(&pid_of(&first)),
        "{first} is neither of {pids:?}"
    );
    // Two more rounds (the interval is 1 s): more events, pruned again
    // under the same holder.
    let resp = post_events(&http, &pair.b, &agent, &batch("a1"))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    wait_until("a1's events are pruned to 5 again", || async {
        all_events(&http, &pair.a, "a1").await.len() == 5
    })
    .await;
    assert_eq!(holder().await, first, "the lease stayed with its holder");
}
