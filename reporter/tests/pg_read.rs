//! PostgreSQL reads, tokens, halts, history, retention and its lease, on a
//! real server: the same rows in SQLite (made by the SQLite functions) and
//! in PostgreSQL (copied by `db copy`) give the same answers from every
//! query; writes made on both stay equal; replicas racing for a halt or a
//! lease get one.

mod common;
#[path = "pg_read/fixture.rs"]
mod fixture;

use flotilla_reporter::db::copy::copy_sqlite_to_pg;
use flotilla_reporter::db::halts::Closed;
use flotilla_reporter::db::{self, pg, to_micros};

async fn pg_db(srv: &common::pg::TestPg, max: usize) -> pg::Pg {
    let url = srv.fresh_database();
    pg::Pg::connect(&url, Some(&srv.password), max)
        .await
        .unwrap()
}

#[tokio::test]
async fn every_query_answers_as_sqlite_does() {
    let Some(srv) = common::pg::server("every_query_answers_as_sqlite_does") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.db");
    let s = fixture::build_sqlite(&path);
    let p = pg_db(&srv, 2).await;
    let report = copy_sqlite_to_pg(&path, &p).await.unwrap();
    assert!(report.table("events").unwrap().new > 200, "{report:?}");
    fixture::assert_same_answers(&s, &p, 10).await;
}

#[tokio::test]
async fn writes_on_both_keep_the_answers_equal() {
    let Some(srv) = common::pg::server("writes_on_both_keep_the_answers_equal") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.db");
    let s = fixture::build_sqlite(&path);
    let p = pg_db(&srv, 2).await;
    copy_sqlite_to_pg(&path, &p).await.unwrap();
    let client = p.client().await.unwrap();
    let c = &**client;
    let now = to_micros(fixture::t0()) + 10_000_000_000;

    // Revocations, readmission, release: the same rows change.
    for id in ["aB", "nobody"] {
        assert_eq!(
            db::tokens::revoke_agent(&s, id).unwrap(),
            pg::tokens::revoke_agent(c, id).await.unwrap()
        );
    }
    assert_eq!(
        db::tokens::readmit_agent(&s, "aB").unwrap(),
        pg::tokens::readmit_agent(c, "aB").await.unwrap()
    );
    assert!(pg::tokens::release_agent(c, "Z9").await.unwrap());
    assert!(db::tokens::release_agent(&s, "Z9").unwrap());
    // Revocation times differ by a few µs between the two calls; make them
    // equal, then compare everything.
    let t = 1_700_000_000_000_000i64;
    s.execute(
        "UPDATE agents SET revoked_at = ?1, blocked_at = CASE WHEN blocked_at IS NULL THEN NULL ELSE ?1 END
         WHERE agent_id IN ('aB', 'Z9')",
        [t],
    )
    .unwrap();
    c.execute(
        "UPDATE agents SET revoked_at = $1::BIGINT, blocked_at = CASE WHEN blocked_at IS NULL THEN NULL ELSE $1::BIGINT END
         WHERE agent_id IN ('aB', 'Z9')",
        &[&t],
    )
    .await
    .unwrap();

    // A token made on PostgreSQL is listed and its secret works; revoking
    // it twice keeps the first time.
    let (info, secret) = pg::tokens::create_read(c, None, "ci").await.unwrap();
    assert!(
        pg::tokens::read_token_active(c, &secret, chrono::Utc::now())
            .await
            .unwrap()
    );
    assert!(pg::tokens::revoke(c, &info.id).await.unwrap());
    let first = pg::tokens::list(c).await.unwrap();
    assert!(pg::tokens::revoke(c, &info.id).await.unwrap());
    assert_eq!(first, pg::tokens::list(c).await.unwrap(), "revoked once");
    assert!(
        !pg::tokens::read_token_active(c, &secret, chrono::Utc::now())
            .await
            .unwrap()
    );
    assert!(!pg::tokens::revoke(c, "no-such-token").await.unwrap());
    c.execute("DELETE FROM enrollment_tokens WHERE id = $1", &[&info.id])
        .await
        .unwrap();

    // Halts: the same ids (the copy moved PostgreSQL's sequence past
    // SQLite's), a second close answers with the first, reopening.
    for (ch, rel) in [("stable", None), ("stable", Some("2.0.0")), ("beta", None)] {
        let a = db::halts::close(&s, ch, rel, "canaries", "ops", now).unwrap();
        let b = pg::halts::close(c, ch, rel, "canaries", "ops", now)
            .await
            .unwrap();
        assert!(matches!(a, Closed::New(_)), "{a:?}");
        assert_eq!(a, b);
        let a2 = db::halts::close(&s, ch, rel, "again", "ops", now + 1).unwrap();
        let b2 = pg::halts::close(c, ch, rel, "again", "ops", now + 1)
            .await
            .unwrap();
        assert!(matches!(a2, Closed::Already(_)), "{a2:?}");
        assert_eq!(a2, b2);
    }
    for id in [1, 3, 1, 99] {
        assert_eq!(
            db::halts::reopen(&s, id, "ops", now + 5).unwrap(),
            pg::halts::reopen(c, id, "ops", now + 5).await.unwrap()
        );
    }
    let a = db::halts::close(&s, "stable", None, "again", "ops", now + 9).unwrap();
    let b = pg::halts::close(c, "stable", None, "again", "ops", now + 9)
        .await
        .unwrap();
    assert!(matches!(a, Closed::New(_)));
    assert_eq!(a, b);
    assert_eq!(
        db::halts::active(&s).unwrap(),
        pg::halts::active(c).await.unwrap()
    );
    assert_eq!(
        db::halts::get(&s, 2).unwrap(),
        pg::halts::get(c, 2).await.unwrap()
    );

    // Rollout history.
    let pairs = |v: &[(&str, &str)]| -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    };
    for (i, set) in [
        pairs(&[("stable", "2.0.0"), ("beta", "2.0.0")]),
        pairs(&[("stable", "2.1.0"), ("beta", "2.0.0")]),
        pairs(&[("stable", "2.2.0")]),
    ]
    .iter()
    .enumerate()
    {
        db::rollout_history::touch(&s, set, now + i as i64).unwrap();
        pg::rollout_history::touch(c, set, now + i as i64)
            .await
            .unwrap();
    }

    // Retention: by age, then by count; the same events go, the counts follow.
    let cutoff = to_micros(fixture::t0()) + 2_000_000_000;
    loop {
        let a = db::prune::older_than(&s, cutoff, 25).unwrap();
        let b = pg::prune::older_than(c, cutoff, 25).await.unwrap();
        assert_eq!(a, b, "older_than");
        if a == 0 {
            break;
        }
    }
    let mut over = db::prune::agents_over(&s, 14).unwrap();
    over.sort();
    assert_eq!(over, pg::prune::agents_over(c, 14).await.unwrap());
    assert!(over.len() > 2, "{over:?}");
    for id in db::prune::agents_over(&s, 14).unwrap() {
        loop {
            let a = db::prune::beyond_count(&s, &id, 14, 4).unwrap();
            let b = pg::prune::beyond_count(c, &id, 14, 4).await.unwrap();
            assert_eq!(a, b, "beyond_count {id}");
            if a == 0 {
                break;
            }
        }
    }
    assert!(db::prune::agents_over(&s, 14).unwrap().is_empty());
    drop(client);
    fixture::assert_same_answers(&s, &p, 1).await;
}

#[tokio::test]
async fn replicas_closing_the_same_gate_make_one_halt() {
    let Some(srv) = common::pg::server("replicas_closing_the_same_gate_make_one_halt") else {
        return;
    };
    let p = pg_db(&srv, 8).await;
    pg::schema::migrate(&p).await.unwrap();
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let p = p.clone();
            tokio::spawn(async move {
                let c = p.client().await.unwrap();
                pg::halts::close(&**c, "stable", Some("2.0.0"), &format!("r{i}"), "ops", i)
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut new = Vec::new();
    let mut already = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            Closed::New(h) => new.push(h),
            Closed::Already(h) => already.push(h),
        }
    }
    assert_eq!(new.len(), 1, "one halt: {new:?}");
    assert!(already.iter().all(|h| *h == new[0]), "{already:?}");
    let c = p.client().await.unwrap();
    assert_eq!(pg::halts::active(&**c).await.unwrap(), new);
}

#[tokio::test]
async fn one_replica_holds_the_retention_lease_until_it_expires() {
    let Some(srv) = common::pg::server("one_replica_holds_the_retention_lease_until_it_expires")
    else {
        return;
    };
    let p = pg_db(&srv, 8).await;
    pg::schema::migrate(&p).await.unwrap();
    let ttl = 60_000_000;
    let now = 1_000_000_000;
    // Eight replicas race for a free lease at once: one gets it.
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let p = p.clone();
            tokio::spawn(async move {
                let c = p.client().await.unwrap();
                let holder = format!("replica-{i}");
                let got = pg::lease::acquire(&**c, pg::prune::LEASE, &holder, ttl, now)
                    .await
                    .unwrap();
                (holder, got)
            })
        })
        .collect();
    let mut winners = Vec::new();
    for t in tasks {
        let (h, got) = t.await.unwrap();
        if got {
            winners.push(h);
        }
    }
    assert_eq!(winners.len(), 1, "{winners:?}");
    let (w, other) = (winners[0].clone(), "replica-other");
    let client = p.client().await.unwrap();
    let c = &**client;
    // The holder renews; another replica is refused until it expires.
    assert!(pg::lease::acquire(c, pg::prune::LEASE, &w, ttl, now + 10)
        .await
        .unwrap());
    assert!(
        !pg::lease::acquire(c, pg::prune::LEASE, other, ttl, now + ttl)
            .await
            .unwrap()
    );
    assert!(
        pg::lease::acquire(c, pg::prune::LEASE, other, ttl, now + 10 + ttl + 1)
            .await
            .unwrap()
    );
    // The old holder lost it; a release by a non-holder does nothing.
    assert!(
        !pg::lease::acquire(c, pg::prune::LEASE, &w, ttl, now + ttl + 20)
            .await
            .unwrap()
    );
    assert!(!pg::lease::release(c, pg::prune::LEASE, &w).await.unwrap());
    assert!(pg::lease::release(c, pg::prune::LEASE, other)
        .await
        .unwrap());
    assert!(
        pg::lease::acquire(c, pg::prune::LEASE, &w, ttl, now + ttl + 30)
            .await
            .unwrap()
    );
    // Another lease name is another lease.
    assert!(pg::lease::acquire(c, "other-job", other, ttl, now)
        .await
        .unwrap());
}
