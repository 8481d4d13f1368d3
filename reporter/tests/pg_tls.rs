//! TLS to PostgreSQL: whenever the connection is encrypted the server's
//! certificate is verified (against `db_ca_file`, else the system's roots);
//! one that does not verify is refused, never accepted or downgraded.
//! The test server (`scripts/pg-server`) has TLS on with a certificate for
//! 127.0.0.1 from a CA made for the run.

mod common;

use flotilla_reporter::db::pg::{Options, Pg};

fn with_sslmode(url: &str, mode: Option<&str>) -> String {
    let base = url.split_once('?').map_or(url, |(b, _)| b);
    match mode {
        Some(m) => format!("{base}?sslmode={m}"),
        None => base.to_owned(),
    }
}

async fn encrypted(pg: &Pg) -> bool {
    pg.client()
        .await
        .unwrap()
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn tls_is_verified_against_the_ca_file_and_refused_without_it() {
    let Some(srv) =
        common::pg::server("tls_is_verified_against_the_ca_file_and_refused_without_it")
    else {
        return;
    };
    let Some(ca) = srv.ca_file.clone() else {
        panic!("the test server has TLS on (FLOTILLA_TEST_PG_CA_FILE)");
    };
    let opts = |ca_file| Options {
        password: Some(srv.password.clone()),
        max_connections: 1,
        ca_file,
    };

    let pg = Pg::connect_with(
        &with_sslmode(&srv.url, Some("require")),
        &opts(Some(ca.clone())),
    )
    .await
    .unwrap();
    assert!(encrypted(&pg).await, "sslmode=require with the CA: TLS");
    // `prefer`, the default, encrypts when the server offers it.
    let pg = Pg::connect_with(&with_sslmode(&srv.url, None), &opts(Some(ca.clone())))
        .await
        .unwrap();
    assert!(encrypted(&pg).await, "the default: TLS when offered");

    // Without the CA the certificate does not verify: refused, both when
    // TLS is required and when it is only preferred.
    for mode in [Some("require"), None] {
        let Err(e) = Pg::connect_with(&with_sslmode(&srv.url, mode), &opts(None)).await else {
            panic!("sslmode={mode:?}: connected to a server whose certificate does not verify");
        };
        let e = flotilla_reporter::error::error_text(&e);
        assert!(e.contains("certificate"), "sslmode={mode:?}: says why: {e}");
    }

    // Only `disable` talks in the clear.
    let pg = Pg::connect_with(&with_sslmode(&srv.url, Some("disable")), &opts(None))
        .await
        .unwrap();
    assert!(!encrypted(&pg).await);
}

#[tokio::test]
async fn a_ca_file_that_is_not_pem_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("ca.crt");
    std::fs::write(&bad, "not a certificate\n").unwrap();
    let Err(e) = Pg::connect_with(
        "postgres://u@127.0.0.1:9/d",
        &Options {
            password: None,
            max_connections: 1,
            ca_file: Some(bad.clone()),
        },
    )
    .await
    else {
        panic!("connected");
    };
    let e = e.to_string();
    assert!(
        e.contains(&bad.display().to_string()),
        "names the file: {e}"
    );
    assert!(e.contains("no certificate"), "{e}");
}
