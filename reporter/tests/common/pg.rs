//! The throwaway PostgreSQL server `scripts/test` starts
//! (`scripts/pg-server`), and a fresh database on it per test.
//!
//! Without `FLOTILLA_TEST_PG_URL` a PostgreSQL test says so and passes
//! (a plain `cargo test` on a machine without the server), unless
//! `FLOTILLA_REQUIRE_PG` is set, as `scripts/test` (and so CI) sets it:
//! then a missing server fails the test.

use std::path::PathBuf;

/// The test server.
#[derive(Clone, Debug)]
pub struct TestPg {
    /// `postgres://flotilla@127.0.0.1:PORT/postgres?sslmode=disable` (no
    /// password).
    pub url: String,
    /// The CA of the server's TLS certificate, if it has TLS on.
    pub ca_file: Option<PathBuf>,
    /// The file holding the password (0600).
    pub password_file: PathBuf,
    /// The password.
    pub password: String,
}

/// The test server, or `None` (after saying why) when there is none and
/// none is required.
pub fn server(test: &str) -> Option<TestPg> {
    match std::env::var("FLOTILLA_TEST_PG_URL") {
        Ok(url) => {
            let password_file = PathBuf::from(
                std::env::var("FLOTILLA_TEST_PG_PASSWORD_FILE")
                    .expect("FLOTILLA_TEST_PG_PASSWORD_FILE with FLOTILLA_TEST_PG_URL"),
            );
            let password = std::fs::read_to_string(&password_file)
                .unwrap()
                .trim()
                .to_owned();
            Some(TestPg {
                url,
                ca_file: std::env::var_os("FLOTILLA_TEST_PG_CA_FILE").map(PathBuf::from),
                password_file,
                password,
            })
        }
        Err(_) if std::env::var_os("FLOTILLA_REQUIRE_PG").is_some() => {
            panic!("{test}: FLOTILLA_REQUIRE_PG is set but FLOTILLA_TEST_PG_URL is not")
        }
        Err(_) => {
            eprintln!(
                "{test}: SKIPPED, no PostgreSQL server (run through `bash scripts/test`, \
                 which starts one)"
            );
            None
        }
    }
}

impl TestPg {
    /// Creates an empty database of its own for one test; its URL.
    pub fn fresh_database(&self) -> String {
        let name = format!("t_{}", uuid::Uuid::new_v4().simple());
        self.execute(&format!("CREATE DATABASE {name}"));
        self.url_of(&name)
    }

    /// The server's URL for database `name`, with the same query (sslmode).
    pub fn url_of(&self, name: &str) -> String {
        let (path, query) = match self.url.split_once('?') {
            Some((p, q)) => (p, format!("?{q}")),
            None => (self.url.as_str(), String::new()),
        };
        match path.rsplit_once('/') {
            Some((base, _)) => format!("{base}/{name}{query}"),
            None => panic!("{}: no database name", self.url),
        }
    }

    /// Runs `sql` on the server's `postgres` database.
    pub fn execute(&self, sql: &str) {
        let (url, password, sql) = (self.url.clone(), self.password.clone(), sql.to_owned());
        // A thread of its own, so this works inside and outside a runtime.
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let mut config: tokio_postgres::Config = url.parse().unwrap();
                config.password(password);
                let (client, conn) = config.connect(tokio_postgres::NoTls).await.unwrap();
                tokio::spawn(conn);
                client.batch_execute(&sql).await.unwrap();
            })
        })
        .join()
        .unwrap();
    }
}
