//! The PostgreSQL schema on a real server: replicas starting at once
//! migrate it once, a newer schema is refused, and a wrong password is an
//! error that names the database but never the password.

mod common;

use flotilla_reporter::db::pg::{schema, Pg};

#[tokio::test]
async fn replicas_starting_at_once_migrate_once() {
    let Some(srv) = common::pg::server("replicas_starting_at_once_migrate_once") else {
        return;
    };
    let url = srv.fresh_database();
    let tasks: Vec<_> = (0..6)
        .map(|_| {
            let (url, pw) = (url.clone(), srv.password.clone());
            tokio::spawn(async move {
                let pg = Pg::connect(&url, Some(&pw), 2).await.unwrap();
                schema::migrate(&pg).await
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let pg = Pg::connect(&url, Some(&srv.password), 1).await.unwrap();
    let c = pg.client().await.unwrap();
    let rows = c
        .query("SELECT version FROM flotilla_schema", &[])
        .await
        .unwrap();
    assert_eq!(rows.len(), 1, "one version row");
    assert_eq!(rows[0].get::<_, i32>(0) as u32, schema::VERSION);
    // Every table of the schema is there.
    for table in [
        "enrollment_tokens",
        "agents",
        "events",
        "agent_release",
        "notify_outbox",
        "notify_state",
        "halts",
        "rollout_history",
        "web_sessions",
        "leases",
    ] {
        let n: i64 = c
            .query_one(
                "SELECT count(*) FROM information_schema.tables WHERE table_name = $1",
                &[&table],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, 1, "table {table}");
    }
}

#[tokio::test]
async fn a_newer_schema_is_refused() {
    let Some(srv) = common::pg::server("a_newer_schema_is_refused") else {
        return;
    };
    let url = srv.fresh_database();
    let pg = Pg::connect(&url, Some(&srv.password), 1).await.unwrap();
    schema::migrate(&pg).await.unwrap();
    let newer = schema::VERSION as i32 + 1;
    pg.client()
        .await
        .unwrap()
        .execute("UPDATE flotilla_schema SET version = $1", &[&newer])
        .await
        .unwrap();
    let e = schema::migrate(&pg).await.unwrap_err().to_string();
    assert!(
        e.contains(&format!("schema version {newer} is newer")),
        "{e}"
    );
    assert!(e.contains(&url), "names the database: {e}");
}

#[tokio::test]
async fn a_wrong_password_names_the_database_not_the_password() {
    let Some(srv) = common::pg::server("a_wrong_password_names_the_database_not_the_password")
    else {
        return;
    };
    let Err(e) = Pg::connect(&srv.url, Some("not-the-password"), 1).await else {
        panic!("connected with a wrong password");
    };
    let e = flotilla_reporter::error::error_text(&e);
    assert!(e.contains(&srv.url), "names the database: {e}");
    assert!(
        e.contains("password authentication failed"),
        "says why: {e}"
    );
    assert!(!e.contains("not-the-password"), "{e}");
}
