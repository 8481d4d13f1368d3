//! PostgreSQL writes on a real server: ingest gives SQLite's answers and
//! derived state for the same batches (a differential test), the group
//! writer commits every job once and rolls a failing one back alone and
//! survives a broken connection; enrollment across two "replicas" (two
//! pools) never exceeds a token's uses nor enrolls one id twice; the outbox
//! hands a due row to one replica at a time.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::Utc;
use flotilla_protocol::api::{EnrollRequest, Gate, GateState};
use flotilla_protocol::{Event, EventKind, EventStatus, Severity};
use flotilla_reporter::db::enroll::Refusal;
use flotilla_reporter::db::ingest::{Batch, IngestOutcome};
use flotilla_reporter::db::pg::ingest::{is_events_key_violation, Insert};
use flotilla_reporter::db::pg::writer::PgWriter;
use flotilla_reporter::db::pg::{self, schema, Pg};
use flotilla_reporter::db::tokens::TokenState;
use flotilla_reporter::notify::{Notice, Notifier};
use flotilla_reporter::settings::{NotifySettings, Webhook};

/// A fresh, migrated database on the test server, with a pool of `max`.
async fn fresh(srv: &common::pg::TestPg, max: usize) -> (String, Pg) {
    let url = srv.fresh_database();
    let pg = Pg::connect(&url, Some(&srv.password), max).await.unwrap();
    schema::migrate(&pg).await.unwrap();
    (url, pg)
}

fn notifier(max_rows: u64) -> Notifier {
    let hook = |name: &str, kinds: &[&str]| Webhook {
        name: name.into(),
        url: "http://127.0.0.1:9/hook".into(),
        secret: None,
        format: Default::default(),
        kinds: kinds.iter().map(|k| (*k).to_owned()).collect(),
    };
    Notifier::new(NotifySettings {
        webhooks: vec![hook("all", &[]), hook("rollbacks", &["rollback"])],
        max_rows,
        ..NotifySettings::default()
    })
}

const AGENTS: &[&str] = &["a-1", "a-2", "b-1"];

fn add_agents_sql() -> String {
    AGENTS
        .iter()
        .map(|a| {
            format!(
                "INSERT INTO agents (agent_id, token_hash, enrolled_at, labels)
                 VALUES ('{a}', 'hash-{a}', 1000, '{{}}');"
            )
        })
        .collect()
}

fn ev(agent: &str, kind: EventKind, status: EventStatus, msg: &str) -> Event {
    let mut e = Event::new(agent, kind, status, "updater", msg);
    e.channel = Some("stable".into());
    e
}

/// Batches per agent exercising every derived field: redelivery, an id
/// twice in a batch, versions, waves, labels, errors, a rollback and a
/// failed migration (notices), a deferral after an outcome, and more
/// rollouts than an agent keeps.
fn batches() -> Vec<(String, Batch)> {
    let mut out = Vec::new();
    for (i, agent) in AGENTS.iter().enumerate() {
        let mut first = Vec::new();
        let mut e = ev(agent, EventKind::ManifestCheck, EventStatus::Success, "ok");
        e.details.insert("agent_version".into(), "1.0.0".into());
        e.details.insert(
            "labels".into(),
            serde_json::json!({"site": format!("s{i}"), "rack": "r1"}),
        );
        e.wave = Some("canary".into());
        first.push(e);
        for r in 0..20 {
            let mut d = ev(
                agent,
                EventKind::UpdateDownload,
                EventStatus::Success,
                "downloading",
            );
            d.to_version = Some(format!("rel-{r:02}"));
            first.push(d);
            let mut h = ev(
                agent,
                if r % 3 == 0 {
                    EventKind::UpdateRollback
                } else {
                    EventKind::UpdateHealthcheck
                },
                if r % 5 == 0 {
                    EventStatus::Failed
                } else {
                    EventStatus::Success
                },
                &format!("outcome {r}"),
            );
            h.from_version = Some("1.0.0".into());
            h.to_version = Some(format!("rel-{r:02}"));
            h.details
                .insert("release".into(), format!("rel-{r:02}").into());
            first.push(h);
        }
        let dup = first[3].clone();
        first.push(dup); // an id twice in one batch
        let mut second = vec![first[0].clone(), first[5].clone()]; // redelivered
        let mut w = ev(
            agent,
            EventKind::UpdateDeferred,
            EventStatus::Info,
            "wave not open",
        );
        w.details.insert("release".into(), "rel-19".into());
        w.wave = Some("late".into());
        second.push(w);
        let mut m = ev(
            agent,
            EventKind::MigrationExecution,
            EventStatus::Failed,
            "migration 7 failed",
        );
        m.severity = Severity::Critical;
        m.channel = None;
        m.details.insert("release".into(), "rel-21".into());
        second.push(m);
        let only_dups = vec![first[1].clone(), first[2].clone()];
        out.push((agent.to_string(), Batch::from_events(&first)));
        out.push((agent.to_string(), Batch::from_events(&second)));
        out.push((agent.to_string(), Batch::from_events(&only_dups)));
        // No channel in the whole batch: the stored one is the fallback.
        let mut lone = ev(
            agent,
            EventKind::UpdateHealthcheck,
            EventStatus::Success,
            "healthy",
        );
        lone.channel = None;
        lone.details.insert("release".into(), "rel-30".into());
        out.push((agent.to_string(), Batch::from_events(&[lone])));
    }
    out
}

/// A table to compare: name, columns, order.
type Table = (&'static str, Vec<(&'static str, Col)>, &'static str);

#[derive(Clone, Copy)]
enum Col {
    Int,
    Text,
    Bytes,
}

/// Every row of `table` (columns `cols`, in `order`) as strings, from both.
fn sqlite_rows(
    conn: &rusqlite::Connection,
    table: &str,
    cols: &[(&str, Col)],
    order: &str,
) -> Vec<Vec<String>> {
    let names: Vec<&str> = cols.iter().map(|c| c.0).collect();
    let sql = format!("SELECT {} FROM {table} ORDER BY {order}", names.join(", "));
    let mut st = conn.prepare(&sql).unwrap();
    st.query_map([], |r| {
        Ok(cols
            .iter()
            .enumerate()
            .map(|(i, (_, t))| match t {
                Col::Int => format!("{:?}", r.get::<_, Option<i64>>(i).unwrap()),
                Col::Text => format!("{:?}", r.get::<_, Option<String>>(i).unwrap()),
                Col::Bytes => format!("{:?}", r.get::<_, Option<Vec<u8>>>(i).unwrap()),
            })
            .collect())
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

async fn pg_rows(
    c: &tokio_postgres::Client,
    table: &str,
    cols: &[(&str, Col)],
    order: &str,
) -> Vec<Vec<String>> {
    let names: Vec<&str> = cols.iter().map(|c| c.0).collect();
    let sql = format!("SELECT {} FROM {table} ORDER BY {order}", names.join(", "));
    c.query(&sql, &[])
        .await
        .unwrap()
        .iter()
        .map(|r| {
            cols.iter()
                .enumerate()
                .map(|(i, (_, t))| match t {
                    Col::Int => format!("{:?}", r.get::<_, Option<i64>>(i)),
                    Col::Text => format!("{:?}", r.get::<_, Option<String>>(i)),
                    Col::Bytes => format!("{:?}", r.get::<_, Option<Vec<u8>>>(i)),
                })
                .collect()
        })
        .collect()
}

#[tokio::test]
async fn ingest_gives_sqlites_answers_and_derived_state() {
    let Some(srv) = common::pg::server("ingest_gives_sqlites_answers_and_derived_state") else {
        return;
    };
    let (_, pg) = fresh(&srv, 2).await;
    let dir = tempfile::tempdir().unwrap();
    let lite =
        flotilla_reporter::db::open_writer(&dir.path().join("r.db"), Default::default()).unwrap();
    lite.execute_batch(&add_agents_sql()).unwrap();
    let mut client = pg.client().await.unwrap();
    client.batch_execute(&add_agents_sql()).await.unwrap();

    let n = notifier(40);
    let mut now = 5_000_000;
    let (mut lite_out, mut pg_out) = (Vec::new(), Vec::new());
    for (k, (agent, batch)) in batches().into_iter().enumerate() {
        now += 1_000;
        // Both ways of inserting give the same rows and answers.
        let insert = if k % 2 == 0 {
            Insert::Copy
        } else {
            Insert::Guarded
        };
        let tx = lite.unchecked_transaction().unwrap();
        lite_out.push(flotilla_reporter::db::ingest::ingest(&tx, &agent, &batch, now, &n).unwrap());
        tx.commit().unwrap();
        let tx = client.transaction().await.unwrap();
        pg_out.push(
            pg::ingest::ingest(&tx, &agent, &batch, now, &n, insert)
                .await
                .unwrap(),
        );
        tx.commit().await.unwrap();
    }
    assert_eq!(pg_out, lite_out, "outcomes");
    // The batches did what they are for.
    assert_eq!(lite_out[0].duplicates, 1, "an id twice in one batch");
    assert_eq!(lite_out[1].duplicates, 2, "redelivered");
    assert_eq!(lite_out[2].new, 0, "only redelivery");
    assert!(lite_out.iter().any(|o| o.notices));
    let rel30: i64 = client
        .query_one(
            "SELECT count(*) FROM agent_release WHERE release = 'rel-30' AND channel = 'stable'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(rel30, AGENTS.len() as i64, "the stored channel as fallback");

    use Col::*;
    let tables: [Table; 4] = [
        (
            "agents",
            vec![
                ("agent_id", Text),
                ("labels", Text),
                ("version", Text),
                ("channel", Text),
                ("wave", Text),
                ("state_ts", Int),
                ("last_seen", Int),
                ("last_error", Text),
                ("last_error_ts", Int),
                ("event_count", Int),
            ],
            "agent_id",
        ),
        (
            "events",
            vec![
                ("seq", Int),
                ("id", Bytes),
                ("agent_id", Text),
                ("ts", Int),
                ("kind", Text),
                ("status", Text),
                ("severity", Text),
                ("component", Text),
                ("message", Text),
                ("from_version", Text),
                ("to_version", Text),
                ("channel", Text),
                ("wave", Text),
                ("details", Text),
            ],
            "seq",
        ),
        (
            "agent_release",
            vec![
                ("channel", Text),
                ("release", Text),
                ("agent_id", Text),
                ("state", Text),
                ("wave", Text),
                ("ts", Int),
                ("message", Text),
            ],
            "agent_id, channel, release",
        ),
        (
            "notify_outbox",
            vec![
                ("id", Int),
                ("receiver", Text),
                ("kind", Text),
                ("body", Text),
                ("created_at", Int),
                ("next_at", Int),
                ("attempts", Int),
            ],
            "id",
        ),
    ];
    for (table, cols, order) in &tables {
        let want = sqlite_rows(&lite, table, cols, order);
        let got = pg_rows(&client, table, cols, order).await;
        assert!(!want.is_empty(), "{table}: rows to compare");
        assert_eq!(got, want, "{table}");
    }
    // The bound held, and the outbox was trimmed to max_rows.
    let per_agent: i64 = client
        .query_one(
            "SELECT max(n) FROM (SELECT count(*) AS n FROM agent_release GROUP BY agent_id) x",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        per_agent,
        flotilla_reporter::db::ingest::MAX_RELEASES_PER_AGENT as i64
    );
    assert_eq!(pg::outbox::count(&**client).await.unwrap(), 40);
}

/// Two replicas storing the same new events at once: the COPY of
/// the one that commits second fails on the events' key, and only then
/// (the writer's cue to run it again guarded); guarded, it stores nothing
/// twice and says they were duplicates.
#[tokio::test]
async fn a_copy_that_meets_a_racing_replica_fails_on_the_events_key() {
    let Some(srv) =
        common::pg::server("a_copy_that_meets_a_racing_replica_fails_on_the_events_key")
    else {
        return;
    };
    let (_, pg) = fresh(&srv, 4).await;
    let mut one = pg.client().await.unwrap();
    let mut two = pg.client().await.unwrap();
    one.batch_execute(&add_agents_sql()).await.unwrap();
    let n = Notifier::default();
    let batch = small_batch("a-1", 5, "raced");
    let tx1 = one.transaction().await.unwrap();
    let first = pg::ingest::ingest(&tx1, "a-1", &batch, 1, &n, Insert::Copy)
        .await
        .unwrap();
    assert_eq!((first.new, first.duplicates), (5, 0));
    // The second sees none of them stored yet, so it inserts them too and
    // waits on the first's uncommitted keys.
    let second = {
        let (batch, n) = (batch.clone(), n.clone());
        tokio::spawn(async move {
            let tx2 = two.transaction().await.unwrap();
            let r = pg::ingest::ingest(&tx2, "a-1", &batch, 2, &n, Insert::Copy).await;
            let e = r.expect_err("the COPY should fail");
            assert!(is_events_key_violation(&e), "{e}");
            tx2.rollback().await.unwrap();
            let tx2 = two.transaction().await.unwrap();
            let again = pg::ingest::ingest(&tx2, "a-1", &batch, 3, &n, Insert::Guarded)
                .await
                .unwrap();
            tx2.commit().await.unwrap();
            again
        })
    };
    // Until the second waits on the first's lock.
    let admin = pg.client().await.unwrap();
    loop {
        let waiting: i64 = admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity
                 WHERE datname = current_database() AND wait_event_type = 'Lock'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if waiting > 0 || second.is_finished() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tx1.commit().await.unwrap();
    let again = second.await.unwrap();
    assert_eq!((again.new, again.duplicates), (0, 5));
    assert_eq!(event_count(&pg).await, 5, "stored once");
    // Another constraint's violation is not mistaken for it.
    let e = admin
        .execute(
            "INSERT INTO agents (agent_id, enrolled_at) VALUES ('a-1', 0)",
            &[],
        )
        .await
        .unwrap_err();
    assert!(!is_events_key_violation(
        &flotilla_reporter::db::DbError::from(e)
    ));
}

fn small_batch(agent: &str, n: usize, msg: &str) -> Batch {
    let events: Vec<Event> = (0..n)
        .map(|i| {
            ev(
                agent,
                EventKind::ManifestCheck,
                EventStatus::Success,
                &format!("{msg} {i}"),
            )
        })
        .collect();
    Batch::from_events(&events)
}

/// One `COPY` for several batches of one transaction: an id stored
/// before, twice in a batch, or in an earlier batch of the same agent is
/// left out; the same id from another agent is that agent's own event; the
/// rows go in batch order, batch after batch.
#[tokio::test]
async fn one_copy_for_a_transactions_batches_leaves_out_what_is_stored_or_seen() {
    let Some(srv) =
        common::pg::server("one_copy_for_a_transactions_batches_leaves_out_what_is_stored_or_seen")
    else {
        return;
    };
    let (_, pg) = fresh(&srv, 2).await;
    let mut c = pg.client().await.unwrap();
    c.batch_execute(&add_agents_sql()).await.unwrap();
    let evs = |agent: &str, n: usize| -> Vec<Event> {
        (0..n)
            .map(|i| {
                ev(
                    agent,
                    EventKind::ManifestCheck,
                    EventStatus::Success,
                    &format!("{agent} {i}"),
                )
            })
            .collect()
    };
    let a = evs("a-1", 6);
    let n = Notifier::default();
    let tx = c.transaction().await.unwrap();
    let stored = Batch::from_events(&a[..2]);
    let o = pg::ingest::ingest(&tx, "a-1", &stored, 1, &n, Insert::Copy)
        .await
        .unwrap();
    assert_eq!((o.new, o.duplicates), (2, 0));
    tx.commit().await.unwrap();

    // a-1: [0 stored, 2, 3, 2 again]; a-2: a-1's ids 2 and 4 as its own;
    // a-1 again: [3 from the first batch, 4, 5].
    let first = Batch::from_events(&[a[0].clone(), a[2].clone(), a[3].clone(), a[2].clone()]);
    let mut theirs = vec![a[2].clone(), a[4].clone()];
    for e in &mut theirs {
        e.agent_id = "a-2".into();
    }
    let other = Batch::from_events(&theirs);
    let last = Batch::from_events(&[a[3].clone(), a[4].clone(), a[5].clone()]);
    let tx = c.transaction().await.unwrap();
    let fresh = pg::ingest::copy_new(&tx, &[("a-1", &first), ("a-2", &other), ("a-1", &last)])
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(fresh, vec![vec![1, 2], vec![0, 1], vec![1, 2]]);
    let rows: Vec<(String, Vec<u8>)> = c
        .query("SELECT agent_id, id FROM events ORDER BY seq", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let id = |e: &Event| e.id.as_bytes().to_vec();
    let want: Vec<(String, Vec<u8>)> = [
        ("a-1", &a[0]),
        ("a-1", &a[1]),
        ("a-1", &a[2]),
        ("a-1", &a[3]),
        ("a-2", &a[2]),
        ("a-2", &a[4]),
        ("a-1", &a[4]),
        ("a-1", &a[5]),
    ]
    .iter()
    .map(|(agent, e)| (agent.to_string(), id(e)))
    .collect();
    assert_eq!(rows, want);
    // Nothing left to store: no COPY, every row answered as stored.
    let tx = c.transaction().await.unwrap();
    let fresh = pg::ingest::copy_new(&tx, &[("a-1", &last), ("a-2", &other)])
        .await
        .unwrap();
    assert_eq!(fresh, vec![Vec::<usize>::new(), Vec::new()]);
}

async fn event_count(pg: &Pg) -> i64 {
    pg.client()
        .await
        .unwrap()
        .query_one("SELECT count(*) FROM events", &[])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn the_writer_commits_every_job_once_and_a_failing_one_alone() {
    let Some(srv) = common::pg::server("the_writer_commits_every_job_once_and_a_failing_one_alone")
    else {
        return;
    };
    let (_, pg) = fresh(&srv, 3).await;
    pg.client()
        .await
        .unwrap()
        .batch_execute(&add_agents_sql())
        .await
        .unwrap();
    let w = PgWriter::start(pg.clone(), 2);
    let n = Notifier::default();
    let mut tasks = tokio::task::JoinSet::new();
    let mut batches = Vec::new();
    for i in 0..300 {
        let agent = AGENTS[i % AGENTS.len()];
        // Every 25th job fails on PostgreSQL (text may not hold NUL).
        let msg = if i % 25 == 7 { "bad\0" } else { "fine" };
        let batch = small_batch(agent, 10, msg);
        batches.push((agent, batch.clone()));
        let (w, n) = (w.clone(), n.clone());
        tasks.spawn(async move { (i, w.ingest(agent, batch, 1_000 + i as i64, n).await) });
    }
    let mut ok = 0;
    while let Some(t) = tasks.join_next().await {
        let (i, r) = t.unwrap();
        if i % 25 == 7 {
            assert!(r.is_err(), "job {i} should fail");
        } else {
            assert_eq!(
                r.unwrap(),
                IngestOutcome {
                    new: 10,
                    duplicates: 0,
                    notices: false
                }
            );
            ok += 1;
        }
    }
    assert_eq!(ok, 288);
    assert_eq!(
        event_count(&pg).await,
        2880,
        "every acknowledged event, once"
    );
    let counted: i64 = pg
        .client()
        .await
        .unwrap()
        .query_one("SELECT sum(event_count)::bigint FROM agents", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(counted, 2880);
    // Redelivery through the writer stores nothing again.
    let (agent, batch) = batches[0].clone();
    let again = w.ingest(agent, batch, 9_999, n.clone()).await.unwrap();
    assert_eq!((again.new, again.duplicates), (0, 10));
    assert_eq!(event_count(&pg).await, 2880);

    // A broken connection: the jobs in hand fail, the next ones run on a
    // new connection.
    let db = pg.target().rsplit('/').next().unwrap().to_owned();
    let admin = Pg::connect(&srv.url, Some(&srv.password), 1).await.unwrap();
    let admin = admin.client().await.unwrap();
    admin
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
            &[&db],
        )
        .await
        .unwrap();
    // Until every connection of the pool is gone.
    loop {
        let n: i64 = admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = $1",
                &[&db],
            )
            .await
            .unwrap()
            .get(0);
        if n == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut after = Vec::new();
    for i in 0..3 {
        after.push(
            w.ingest(
                "a-1",
                small_batch("a-1", 5, &format!("after {i}")),
                20_000,
                n.clone(),
            )
            .await
            .map_err(|e| e.to_string()),
        );
    }
    // The first may have met the broken connection: rolled back, and the
    // error says so (the client is told to send it again).
    if let Err(e) = &after[0] {
        assert!(
            e.starts_with("the write's transaction was rolled back: "),
            "{e}"
        );
    }
    let after: Vec<bool> = after.iter().map(Result::is_ok).collect();
    assert!(after[1] && after[2], "the writer reconnected: {after:?}");
    let stored = after.iter().filter(|ok| **ok).count() as i64 * 5;
    assert_eq!(
        event_count(&pg).await,
        2880 + stored,
        "acknowledged = stored"
    );
}

async fn add_token(pg: &Pg, secret: &str, max_uses: Option<i64>, extra: &str) {
    let hash = flotilla_reporter::tokens::hash(secret);
    let c = pg.client().await.unwrap();
    c.execute(
        &format!(
            "INSERT INTO enrollment_tokens (id, hash, created_at, max_uses) VALUES ($1, $2, 0, $3);
             {extra}"
        ),
        &[&format!("id-{secret}"), &hash, &max_uses],
    )
    .await
    .unwrap();
}

fn req(token: &str, agent: &str) -> EnrollRequest {
    serde_json::from_value(serde_json::json!({
        "enrollment_token": token,
        "agent_id": agent,
        "labels": {"site": "x"},
    }))
    .unwrap()
}

async fn enroll(
    pg: &Pg,
    r: &EnrollRequest,
    proof: Option<&str>,
) -> Result<flotilla_protocol::api::EnrollResponse, Refusal> {
    let mut c = pg.client().await.unwrap();
    let tx = c.transaction().await.unwrap();
    let out = pg::enroll::enroll(&tx, r, proof, Utc::now()).await.unwrap();
    tx.commit().await.unwrap();
    out
}

#[tokio::test]
async fn two_replicas_enrolling_at_once_respect_uses_and_ids() {
    let Some(srv) = common::pg::server("two_replicas_enrolling_at_once_respect_uses_and_ids")
    else {
        return;
    };
    let (url, one) = fresh(&srv, 8).await;
    let two = Pg::connect(&url, Some(&srv.password), 8).await.unwrap();
    add_token(&one, "fifty", Some(50), "").await;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..100 {
        let pg = if i % 2 == 0 { one.clone() } else { two.clone() };
        tasks.spawn(async move { enroll(&pg, &req("fifty", &format!("host-{i:03}")), None).await });
    }
    let (mut ok, mut used_up) = (0, 0);
    while let Some(t) = tasks.join_next().await {
        match t.unwrap() {
            Ok(r) => {
                assert!(!r.already_enrolled);
                ok += 1;
            }
            Err(Refusal::Token(TokenState::UsedUp)) => used_up += 1,
            Err(other) => panic!("unexpected refusal {other:?}"),
        }
    }
    assert_eq!((ok, used_up), (50, 50));
    let c = one.client().await.unwrap();
    let agents: i64 = c
        .query_one("SELECT count(*) FROM agents", &[])
        .await
        .unwrap()
        .get(0);
    let uses: i64 = c
        .query_one("SELECT uses FROM enrollment_tokens", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!((agents, uses), (50, 50));

    // One id from both replicas at once, with different tokens: one wins,
    // the other is told the id is taken.
    add_token(&one, "open-a", None, "").await;
    add_token(&one, "open-b", None, "").await;
    for i in 0..20 {
        let id = format!("twin-{i}");
        let (ra, rb) = (req("open-a", &id), req("open-b", &id));
        let (a, b) = tokio::join!(enroll(&one, &ra, None), enroll(&two, &rb, None));
        let winners = [&a, &b].iter().filter(|r| r.is_ok()).count();
        assert_eq!(winners, 1, "{id}: {a:?} {b:?}");
        let loser = if a.is_ok() { &b } else { &a };
        assert_eq!(loser.as_ref().unwrap_err(), &Refusal::Taken, "{id}");
    }
    let uses: Vec<i64> = c
        .query(
            "SELECT uses FROM enrollment_tokens WHERE max_uses IS NULL",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(uses.iter().sum::<i64>(), 20, "one use per id");
}

#[tokio::test]
async fn enrollment_answers_as_sqlite_does() {
    let Some(srv) = common::pg::server("enrollment_answers_as_sqlite_does") else {
        return;
    };
    let (_, pg) = fresh(&srv, 2).await;
    let dir = tempfile::tempdir().unwrap();
    let lite =
        flotilla_reporter::db::open_writer(&dir.path().join("r.db"), Default::default()).unwrap();
    let tokens_sql = |h: &dyn Fn(&str) -> String| {
        format!(
            "INSERT INTO enrollment_tokens (id, hash, created_at, max_uses) VALUES ('one', '{}', 0, 1);
             INSERT INTO enrollment_tokens (id, hash, created_at, expires_at) VALUES ('old', '{}', 0, 1);
             INSERT INTO enrollment_tokens (id, hash, created_at, revoked_at) VALUES ('rev', '{}', 0, 1);
             INSERT INTO enrollment_tokens (id, hash, created_at, scope) VALUES ('rd', '{}', 0, 'read');
             INSERT INTO enrollment_tokens (id, hash, created_at) VALUES ('many', '{}', 0);",
            h("one"),
            h("old"),
            h("rev"),
            h("rd"),
            h("many")
        )
    };
    let sql = tokens_sql(&|s| flotilla_reporter::tokens::hash(s));
    lite.execute_batch(&sql).unwrap();
    pg.client()
        .await
        .unwrap()
        .batch_execute(&sql)
        .await
        .unwrap();
    let now = Utc::now();
    // (token, agent, proof) in order; each answer compared.
    let steps: &[(&str, &str, Option<&str>)] = &[
        ("nope", "h1", None),
        ("rd", "h1", None),
        ("old", "h1", None),
        ("rev", "h1", None),
        ("one", "h1", Some("agent-token-h1")),
        ("one", "h2", None),                    // used up
        ("one", "h1", Some("agent-token-h1")),  // re-enrollment with proof
        ("many", "h1", None),                   // taken
        ("many", "h1", Some("wrong")),          // taken
        ("rev", "h1", Some("agent-token-h1")),  // revoked token, even with proof
        ("many", "h3", Some("agent-token-h1")), // another agent's token
        ("many", "h4", Some("agent-token-h4")),
    ];
    for (i, (token, agent, proof)) in steps.iter().enumerate() {
        let r = req(token, agent);
        let tx = lite.unchecked_transaction().unwrap();
        let want = flotilla_reporter::db::enroll::enroll(&tx, &r, *proof, now).unwrap();
        tx.commit().unwrap();
        let mut c = pg.client().await.unwrap();
        let tx = c.transaction().await.unwrap();
        let got = pg::enroll::enroll(&tx, &r, *proof, now).await.unwrap();
        tx.commit().await.unwrap();
        match (&want, &got) {
            (Ok(w), Ok(g)) => {
                assert_eq!(w.already_enrolled, g.already_enrolled, "step {i}");
                if proof.is_some() {
                    assert_eq!(w.agent_token, g.agent_token, "step {i}");
                }
            }
            _ => assert_eq!(
                want.as_ref().err(),
                got.as_ref().err(),
                "step {i}: {want:?} vs {got:?}"
            ),
        }
    }
    // Blocked ids stay out on both.
    lite.execute_batch("UPDATE agents SET blocked_at = 1 WHERE agent_id = 'h4'")
        .unwrap();
    let c = pg.client().await.unwrap();
    c.batch_execute("UPDATE agents SET blocked_at = 1 WHERE agent_id = 'h4'")
        .await
        .unwrap();
    let r = req("many", "h4");
    assert_eq!(
        enroll(&pg, &r, Some("agent-token-h4")).await.unwrap_err(),
        Refusal::Blocked
    );
    assert_eq!(
        pg::enroll::agent_for_token(&c, "agent-token-h1")
            .await
            .unwrap()
            .as_deref(),
        Some("h1")
    );
    assert_eq!(pg::enroll::agent_for_token(&c, "nope").await.unwrap(), None);
}

#[tokio::test]
async fn a_due_row_goes_to_one_replica_and_a_gate_change_is_told_once() {
    let Some(srv) =
        common::pg::server("a_due_row_goes_to_one_replica_and_a_gate_change_is_told_once")
    else {
        return;
    };
    let (url, one) = fresh(&srv, 2).await;
    let two = Pg::connect(&url, Some(&srv.password), 2).await.unwrap();
    let n = notifier(10_000);
    {
        let c = one.client().await.unwrap();
        for i in 0..200 {
            let notice = Notice::Rollback {
                agent_id: format!("h{i}"),
                channel: None,
                release: None,
                status: "success".into(),
                message: "m".into(),
            };
            assert!(pg::outbox::queue(&**c, &n, &notice, 100 + i).await.unwrap());
        }
    }
    // Two receivers want rollbacks: 400 rows. Both replicas take turns
    // asking for 25 at a time until nothing is due.
    let take = |pg: Pg| async move {
        let mut got = Vec::new();
        loop {
            let c = pg.client().await.unwrap();
            let rows = pg::outbox::due(&**c, 1_000, 25).await.unwrap();
            if rows.is_empty() {
                return got;
            }
            assert!(rows.windows(2).all(|w| w[0].id < w[1].id), "oldest first");
            got.extend(rows.into_iter().map(|q| q.id));
        }
    };
    let (a, b) = tokio::join!(take(one.clone()), take(two.clone()));
    let (sa, sb): (BTreeSet<i64>, BTreeSet<i64>) =
        (a.iter().copied().collect(), b.iter().copied().collect());
    assert_eq!(sa.len() + sb.len(), 400, "each row handed out once");
    assert!(sa.is_disjoint(&sb));
    // Claimed: not due again until the claim runs out, then due again.
    let c = one.client().await.unwrap();
    assert!(pg::outbox::due(&**c, 1_000, 25).await.unwrap().is_empty());
    let later = 1_000 + pg::outbox::CLAIM;
    assert_eq!(pg::outbox::due(&**c, later, 500).await.unwrap().len(), 400);

    // A gate closing seen by both replicas at once: one notice per receiver.
    let before = pg::outbox::count(&**c).await.unwrap();
    let gate: Gate = serde_json::from_value(serde_json::json!({
        "channel": "stable", "release": "r1", "state": "closed", "reports": 10, "failed": 5,
        "reason": "too many failures"
    }))
    .unwrap();
    assert_eq!(gate.state, GateState::Closed);
    let record = |pg: Pg, g: Gate, n: Notifier| async move {
        let mut c = pg.client().await.unwrap();
        let tx = c.transaction().await.unwrap();
        let told = pg::outbox::record_gate(&*tx, &n, &g, 5_000).await.unwrap();
        tx.commit().await.unwrap();
        told
    };
    let (x, y) = tokio::join!(
        record(one.clone(), gate.clone(), n.clone()),
        record(two.clone(), gate.clone(), n.clone())
    );
    assert!(x ^ y, "told once: {x} {y}");
    // Only "all" wants gate_closed.
    assert_eq!(pg::outbox::count(&**c).await.unwrap(), before + 1);
}

#[tokio::test]
async fn two_replicas_writing_the_same_agents_store_each_event_once() {
    let Some(srv) =
        common::pg::server("two_replicas_writing_the_same_agents_store_each_event_once")
    else {
        return;
    };
    let (url, one) = fresh(&srv, 2).await;
    let two = Pg::connect(&url, Some(&srv.password), 2).await.unwrap();
    one.client()
        .await
        .unwrap()
        .batch_execute(&add_agents_sql())
        .await
        .unwrap();
    let writers = [
        PgWriter::start(one.clone(), 1),
        PgWriter::start(two.clone(), 1),
    ];
    let n = Notifier::default();
    // Every batch goes to both replicas at once (an agent retrying on the
    // other after a timeout), and each writer's transactions span all agents.
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..120 {
        let agent = AGENTS[i % AGENTS.len()];
        let batch = small_batch(agent, 8, &format!("batch {i}"));
        for w in &writers {
            let (w, n, batch) = (w.clone(), n.clone(), batch.clone());
            tasks.spawn(async move { w.ingest(agent, batch, 1_000 + i as i64, n).await });
        }
    }
    let (mut new, mut dups) = (0, 0);
    while let Some(t) = tasks.join_next().await {
        let o = t.unwrap().expect("every job commits");
        new += o.new;
        dups += o.duplicates;
    }
    assert_eq!(
        (new, dups),
        (960, 960),
        "each event new on one replica only"
    );
    assert_eq!(event_count(&one).await, 960);
    let counted: i64 = one
        .client()
        .await
        .unwrap()
        .query_one("SELECT sum(event_count)::bigint FROM agents", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(counted, 960, "event_count counts each event once");
}

#[tokio::test]
async fn checkins_give_sqlites_state() {
    let Some(srv) = common::pg::server("checkins_give_sqlites_state") else {
        return;
    };
    let (_, pg) = fresh(&srv, 3).await;
    let dir = tempfile::tempdir().unwrap();
    let lite =
        flotilla_reporter::db::open_writer(&dir.path().join("r.db"), Default::default()).unwrap();
    let setup = format!(
        "{}UPDATE agents SET last_seen = 9000 WHERE agent_id = 'a-2';
         UPDATE agents SET revoked_at = 5 WHERE agent_id = 'b-1';",
        add_agents_sql()
    );
    lite.execute_batch(&setup).unwrap();
    pg.client()
        .await
        .unwrap()
        .batch_execute(&setup)
        .await
        .unwrap();
    let ck = |at: i64, v: serde_json::Value| flotilla_reporter::checkin::Received {
        checkin: serde_json::from_value(v).unwrap(),
        at,
    };
    let rows = vec![
        (
            "a-1".to_owned(),
            ck(
                5000,
                serde_json::json!({"state": "waiting", "reason": "wave", "wave": "w2"}),
            ),
        ),
        (
            "a-2".to_owned(),
            ck(
                6000,
                serde_json::json!({"state": "held", "release": "r9",
                                   "until": "2026-01-01T00:00:00Z", "version": "2.0"}),
            ),
        ),
        (
            "b-1".to_owned(),
            ck(7000, serde_json::json!({"state": "paused"})),
        ),
        (
            "nobody".to_owned(),
            ck(7000, serde_json::json!({"state": "paused"})),
        ),
        (
            "a-1".to_owned(),
            ck(
                4000,
                serde_json::json!({"state": "on_release", "channel": "beta"}),
            ),
        ),
    ];
    flotilla_reporter::db::checkin::apply(&lite, &rows).unwrap();
    let w = PgWriter::start(pg.clone(), 2);
    w.checkin(rows).await.unwrap();
    use Col::*;
    let cols = [
        ("agent_id", Text),
        ("last_seen", Int),
        ("checkin_ts", Int),
        ("host_state", Text),
        ("host_reason", Text),
        ("host_release", Text),
        ("host_until", Int),
        ("wave", Text),
        ("version", Text),
        ("channel", Text),
    ];
    let want = sqlite_rows(&lite, "agents", &cols, "agent_id");
    let c = pg.client().await.unwrap();
    assert_eq!(pg_rows(&c, "agents", &cols, "agent_id").await, want);
    assert!(
        want[0].contains(&"Some(\"on_release\")".to_owned()),
        "{want:?}"
    );
}
