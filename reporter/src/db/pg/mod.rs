//! PostgreSQL: the backend for several stateless reporter replicas over one
//! database the operator already runs. SQLite ([`crate::db`]) stays the
//! embedded default.
//!
//! - [`schema`]: versioned migrations, applied by one replica at a time.
//! - The SQL of each job lives in a module named like its SQLite twin, with
//!   functions of the same names and arguments over a
//!   `tokio_postgres::GenericClient` (a pooled client or a transaction), so
//!   the storage layer calls one or the other.
//!
//! A URL given to the reporter never carries the password (it would show
//! in `ps` and in logs): the password comes from a file or `PGPASSWORD`.

pub mod checkin;
pub mod enroll;
pub mod halts;
pub mod ingest;
pub mod lease;
pub mod outbox;
pub mod prune;
pub mod queries;
pub mod rollout_history;
pub mod schema;
pub mod tokens;
pub mod writer;

use std::str::FromStr;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::NoTls;

use super::DbError;
use crate::Error;

/// Whether `db` names a PostgreSQL database rather than a SQLite file.
pub fn is_url(db: &str) -> bool {
    db.starts_with("postgres://") || db.starts_with("postgresql://")
}

/// A pool of connections to one PostgreSQL database; cheap to clone.
#[derive(Clone)]
pub struct Pg {
    pool: Pool,
    target: String,
}

impl Pg {
    /// Connects to `url` (which must not hold a password) with `password`,
    /// keeping up to `max_connections` open, and checks that the server
    /// answers. Does not migrate: see [`schema::migrate`].
    pub async fn connect(
        url: &str,
        password: Option<&str>,
        max_connections: usize,
    ) -> Result<Pg, Error> {
        let target = redact(url);
        let config_err = |reason: String| Error::Config {
            path: target.clone().into(),
            reason,
        };
        let mut config = tokio_postgres::Config::from_str(url)
            .map_err(|e| config_err(format!("not a PostgreSQL URL: {e}")))?;
        if config.get_password().is_some() {
            return Err(config_err(
                "the URL holds a password, which would show in the process list and in logs; \
                 remove it and give it with `db_password_file` in the config, or PGPASSWORD"
                    .into(),
            ));
        }
        if let Some(p) = password {
            config.password(p);
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        config.application_name("flotilla-reporter");
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(max_connections.max(1))
            .wait_timeout(Some(Duration::from_secs(30)))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|e| config_err(format!("cannot build the connection pool: {e}")))?;
        let pg = Pg { pool, target };
        let client = pg.client().await.map_err(|e| pg.error(e))?;
        client
            .simple_query("SELECT 1")
            .await
            .map_err(|e| pg.error(e.into()))?;
        Ok(pg)
    }

    /// A pooled connection (it derefs to `tokio_postgres::Client`).
    pub async fn client(&self) -> Result<deadpool_postgres::Client, DbError> {
        Ok(self.pool.get().await?)
    }

    /// The database, for messages: the URL without any password.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// `e`, as the library's error naming this database.
    pub fn error(&self, e: DbError) -> Error {
        Error::Postgres {
            target: self.target.clone(),
            source: e,
        }
    }
}

/// `url` without a password, for messages.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (auth, host) = match rest.split_once('@') {
        Some((auth, host)) => (Some(auth), host),
        None => (None, rest),
    };
    match auth {
        Some(auth) => {
            let user = auth.split(':').next().unwrap_or("");
            format!("{scheme}://{user}@{host}")
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_told_from_paths_and_passwords_never_shown() {
        assert!(is_url("postgres://db.example/flotilla"));
        assert!(is_url("postgresql://u@h/d"));
        assert!(!is_url("./flotilla-reporter.db"));
        assert!(!is_url("/var/lib/postgres.db"));
        assert_eq!(
            redact("postgres://u:secret@h:5432/d"),
            "postgres://u@h:5432/d"
        );
        assert_eq!(redact("postgres://h/d"), "postgres://h/d");
    }

    #[tokio::test]
    async fn a_url_with_a_password_is_refused() {
        let Err(e) = Pg::connect("postgres://u:secret@127.0.0.1:9/d", None, 1).await else {
            panic!("connected");
        };
        let msg = e.to_string();
        assert!(msg.contains("holds a password"), "{msg}");
        assert!(!msg.contains("secret"), "{msg}");
    }
}
