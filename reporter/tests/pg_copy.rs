//! `flotilla-reporter db copy` on a real server, through the binary: a
//! SQLite database with tokens, agents and events moves to PostgreSQL with
//! its event `seq` values; a second copy changes nothing; one after the
//! old reporter went on brings the new events and the changed agents; new
//! rows take ids past the copied ones; the copy answers every query as the
//! SQLite file did; a password in the URL, a URL that is no PostgreSQL URL
//! and a missing SQLite file are refused before any row is written.

mod common;
#[path = "pg_read/fixture.rs"]
mod fixture;

use std::process::{Command, Output};

use flotilla_reporter::db::pg;

fn copy(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_flotilla-reporter"));
    cmd.args(["db", "copy"]).args(args).env_remove("PGPASSWORD");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[tokio::test]
async fn a_copy_keeps_the_past_and_a_second_copy_adds_nothing() {
    let Some(srv) = common::pg::server("a_copy_keeps_the_past_and_a_second_copy_adds_nothing")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.db");
    let s = fixture::build_sqlite(&path);
    let url = srv.fresh_database();
    let from = path.to_str().unwrap();
    let pw_file = srv.password_file.to_str().unwrap();

    let first = copy(
        &["--from", from, "--to", &url, "--db-password-file", pw_file],
        &[],
    );
    assert!(first.status.success(), "{}", stderr(&first));
    let events: i64 = s
        .query_row("SELECT count(*) FROM events", [], |r| r.get(0))
        .unwrap();
    let err = stderr(&first);
    assert!(
        err.contains(&format!("events: {events} rows, {events} new, 0 changed")),
        "{err}"
    );
    assert!(
        err.contains("enrollment_tokens: 3 rows, 3 new, 0 changed"),
        "{err}"
    );

    // Again, the password from PGPASSWORD this time: nothing new.
    let second = copy(
        &["--from", from, "--to", &url],
        &[("PGPASSWORD", &srv.password)],
    );
    assert!(second.status.success(), "{}", stderr(&second));
    let err = stderr(&second);
    assert!(
        err.contains(&format!("events: {events} rows, 0 new, 0 changed")),
        "{err}"
    );
    let tables: Vec<&str> = err.lines().filter(|l| l.starts_with("  ")).collect();
    assert_eq!(tables.len(), 9, "every table: {err}");
    for line in tables.iter().chain(err.lines().last().as_ref()) {
        assert!(line.ends_with(" 0 new, 0 changed"), "{line}");
    }

    // The old reporter goes on: an agent is revoked, another reports.
    flotilla_reporter::db::tokens::revoke_agent(&s, "aB").unwrap();
    let mut e = flotilla_protocol::Event::new(
        "web-02",
        flotilla_protocol::EventKind::ManifestCheck,
        flotilla_protocol::EventStatus::Failed,
        "test",
        "late",
    );
    e.ts = fixture::t0() + chrono::Duration::seconds(9000);
    flotilla_reporter::db::ingest::ingest(
        &s,
        "web-02",
        &flotilla_reporter::db::ingest::Batch::from_events(std::slice::from_ref(&e)),
        flotilla_reporter::db::to_micros(e.ts),
        &flotilla_reporter::notify::Notifier::default(),
    )
    .unwrap();
    let third = copy(
        &["--from", from, "--to", &url, "--db-password-file", pw_file],
        &[],
    );
    assert!(third.status.success(), "{}", stderr(&third));
    let err = stderr(&third);
    let events = events + 1;
    assert!(
        err.contains(&format!("events: {events} rows, 1 new, 0 changed")),
        "{err}"
    );
    assert!(err.contains("agents: 8 rows, 0 new, 2 changed"), "{err}");

    let p = pg::Pg::connect(&url, Some(&srv.password), 1).await.unwrap();
    let c = p.client().await.unwrap();
    // The same seq values, and the next event takes one past them.
    let seqs = |sql: &str| -> Vec<i64> {
        let mut st = s.prepare(sql).unwrap();
        st.query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    let sqlite_seqs = seqs("SELECT seq FROM events ORDER BY seq");
    let pg_seqs: Vec<i64> = c
        .query("SELECT seq FROM events ORDER BY seq", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(sqlite_seqs, pg_seqs);
    let next: i64 = c
        .query_one(
            "INSERT INTO events (id, agent_id, ts, kind, status, severity, component, message, details)
             VALUES ('\\x00', 'aB', 0, 'manifest_check', 'success', 'info', 'c', 'm', '{}')
             RETURNING seq",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(next, sqlite_seqs.last().unwrap() + 1);
    c.execute("DELETE FROM events WHERE seq = $1", &[&next])
        .await
        .unwrap();
    drop(c);
    fixture::assert_same_answers(&s, &p, 10).await;
}

#[tokio::test]
async fn a_password_in_the_url_or_a_wrong_target_is_refused() {
    let Some(srv) = common::pg::server("a_password_in_the_url_or_a_wrong_target_is_refused") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.db");
    fixture::build_sqlite(&path);
    let url = srv.fresh_database();
    let with_pw = url.replacen("flotilla@", &format!("flotilla:{}@", srv.password), 1);
    let o = copy(&["--from", path.to_str().unwrap(), "--to", &with_pw], &[]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(err.contains("holds a password"), "{err}");
    assert!(!err.contains(&srv.password), "never shown: {err}");

    let o = copy(
        &["--from", path.to_str().unwrap(), "--to", "/tmp/other.db"],
        &[],
    );
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("is not a PostgreSQL URL"),
        "{}",
        stderr(&o)
    );

    let missing = dir.path().join("missing.db");
    let o = copy(
        &["--from", missing.to_str().unwrap(), "--to", &url],
        &[("PGPASSWORD", &srv.password)],
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("does not exist"), "{}", stderr(&o));
    assert!(!missing.exists(), "no empty database made");

    // Nothing was written by the refused copies but the schema.
    let p = pg::Pg::connect(&url, Some(&srv.password), 1).await.unwrap();
    let c = p.client().await.unwrap();
    let n: i64 = c
        .query_one("SELECT count(*) FROM agents", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
}
