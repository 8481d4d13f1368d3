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
//!
//! TLS follows the URL's `sslmode`, as libpq's: `disable`; `prefer` (the
//! default: TLS when the server offers it); `require` (TLS or no
//! connection). Whenever TLS is used the server's certificate is verified
//! (rustls), against `ca_file` when given (the `sslrootcert` of libpq),
//! else the system's roots: a certificate that does not verify is an error,
//! never a silent downgrade.

pub mod checkin;
pub mod enroll;
pub mod halts;
pub mod ingest;
pub mod lease;
pub mod notices;
pub mod outbox;
pub mod prune;
pub mod queries;
pub mod rollout_history;
pub mod schema;
pub mod sessions;
pub mod tokens;
pub mod writer;

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use tokio_postgres_rustls::MakeRustlsConnect;

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

/// How to connect, beyond the URL.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// The password (from a file or `PGPASSWORD`; never the URL).
    pub password: Option<String>,
    /// Connections kept open, at most.
    pub max_connections: usize,
    /// The CA certificates (PEM) the server's certificate must chain to;
    /// `None`: the system's.
    pub ca_file: Option<PathBuf>,
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
        Pg::connect_with(
            url,
            &Options {
                password: password.map(str::to_owned),
                max_connections,
                ca_file: None,
            },
        )
        .await
    }

    /// [`Pg::connect`] with every option.
    pub async fn connect_with(url: &str, opts: &Options) -> Result<Pg, Error> {
        let (password, max_connections) = (opts.password.as_deref(), opts.max_connections);
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
        let tls = MakeRustlsConnect::new(tls_config(opts.ca_file.as_deref(), &target)?);
        let manager = Manager::from_config(
            config,
            tls,
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

/// The TLS client settings: the roots the server's certificate must chain
/// to, ring's algorithms, TLS 1.2 and 1.3.
fn tls_config(ca_file: Option<&Path>, target: &str) -> Result<rustls::ClientConfig, Error> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let io_err = |e: rustls::pki_types::pem::Error| Error::Config {
                path: path.to_owned(),
                reason: format!("not a PEM file of CA certificates: {e}"),
            };
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(io_err)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(io_err)?;
            if certs.is_empty() {
                return Err(Error::Config {
                    path: path.to_owned(),
                    reason: "holds no certificate (want PEM `BEGIN CERTIFICATE` blocks)".into(),
                });
            }
            for c in certs {
                roots.add(c).map_err(|e| Error::Config {
                    path: path.to_owned(),
                    reason: format!("a certificate that cannot be a root: {e}"),
                })?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for e in &found.errors {
                tracing::warn!(error = %e, "reading the system's CA certificates");
            }
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                tracing::warn!(
                    database = target,
                    "no system CA certificates: a TLS connection to the database cannot be \
                     verified (give `db_ca_file`)"
                );
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Config {
            path: target.into(),
            reason: format!("TLS: {e}"),
        })?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config)
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
