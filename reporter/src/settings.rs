//! The reporter's settings: defaults, then a TOML file (`--config`), then
//! flags. `Debug` never shows the admin token.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use flotilla_protocol::HumanDuration;
use serde::Deserialize;

use crate::Error;

/// How far an acknowledged batch must have travelled before its answer goes
/// out. Either way the answer is sent only after the SQLite commit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Durability {
    /// WAL with `synchronous = FULL`: each commit fsyncs the WAL, so an
    /// acknowledged event survives a power loss or kernel crash too. Many
    /// requests share one commit, so the fsync is paid once per commit, but
    /// every byte of it must reach the disk before the answer: on a slow
    /// disk this halves ingestion (see the benchmarks).
    PowerLoss,
    /// The default. WAL with `synchronous = NORMAL`: a commit is written
    /// into the WAL (the OS page cache) before it is acknowledged, so it
    /// survives the reporter being killed (SIGKILL, OOM, panic, restart) —
    /// the durability test proves it — but the last moments before a power
    /// loss or kernel crash may be lost (the WAL is fsynced at checkpoints,
    /// every quarter second). Reports are telemetry the agents resend only
    /// until acknowledged, so this is the trade most fleets want.
    #[default]
    ProcessCrash,
}

/// A secret string whose `Debug` and `Display` are redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret (surrounding whitespace removed).
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into().trim().to_owned())
    }
    /// The secret itself; keep it out of logs.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

/// Per-agent limit on `POST /api/v1/events` requests (a token bucket).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RateLimit {
    /// Requests per second refilled.
    pub per_second: f64,
    /// Bucket size: requests an agent may make at once.
    pub burst: f64,
}

/// The database: a SQLite file or a PostgreSQL URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DbTarget {
    /// A SQLite file (created with mode 0600 when missing).
    Sqlite(PathBuf),
    /// A PostgreSQL database: a `postgres://` or `postgresql://` URL without
    /// a password, which comes from `password_file` (the config's
    /// `db_password_file`, `--db-password-file`) or else `PGPASSWORD`.
    Postgres {
        /// The URL.
        url: String,
        /// A file holding the password (group and others may not read it).
        password_file: Option<PathBuf>,
    },
}

impl From<PathBuf> for DbTarget {
    fn from(p: PathBuf) -> DbTarget {
        DbTarget::Sqlite(p)
    }
}

impl DbTarget {
    /// What `--db` or the config's `db` says: a PostgreSQL URL
    /// ([`crate::db::pg::is_url`]), else a SQLite path.
    pub fn parse(db: &str) -> DbTarget {
        if crate::db::pg::is_url(db) {
            DbTarget::Postgres {
                url: db.to_owned(),
                password_file: None,
            }
        } else {
            DbTarget::Sqlite(PathBuf::from(db))
        }
    }

    /// The SQLite file, if that is the target.
    pub fn sqlite_path(&self) -> Option<&Path> {
        match self {
            DbTarget::Sqlite(p) => Some(p),
            DbTarget::Postgres { .. } => None,
        }
    }

    /// The PostgreSQL password: the password file's (refused when group or
    /// others can read it), else `PGPASSWORD`, else none. SQLite has none.
    pub fn password(&self) -> Result<Option<Secret>, Error> {
        match self {
            DbTarget::Sqlite(_) => Ok(None),
            DbTarget::Postgres {
                password_file: Some(p),
                ..
            } => read_private(p, "the database password").map(Some),
            DbTarget::Postgres { .. } => Ok(std::env::var("PGPASSWORD")
                .ok()
                .filter(|v| !v.is_empty())
                .map(Secret::new)),
        }
    }
}

impl std::fmt::Display for DbTarget {
    /// The path, or the URL as [`crate::db::pg::redact`] shows it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DbTarget::Sqlite(p) => write!(f, "{}", p.display()),
            DbTarget::Postgres { url, .. } => f.write_str(&crate::db::pg::redact(url)),
        }
    }
}

/// Everything `serve` needs.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The database: a SQLite file or a PostgreSQL URL.
    pub db: DbTarget,
    /// Where to listen.
    pub listen: SocketAddr,
    /// The admin token (reads, web login, metrics). Without it only the
    /// agent endpoints, the gate and `/healthz` answer.
    pub admin_token: Option<Secret>,
    /// The signed manifest (path or http(s) URL): the channels' releases,
    /// thresholds and waves, once verified against `trust_root`.
    pub manifest: Option<String>,
    /// How often the manifest is read again.
    pub manifest_refresh: Duration,
    /// The root the manifest's root chain is walked from (`root/1.root.json`,
    /// as shipped to agents). Required with `manifest`.
    pub trust_root: Option<PathBuf>,
    /// Events older than this many days are pruned.
    pub retain_days: u32,
    /// At most this many events are kept per agent.
    pub retain_per_agent: u64,
    /// How often retention runs.
    pub retention_interval: Duration,
    /// What an acknowledgement guarantees.
    pub durability: Durability,
    /// Per-agent event ingestion limit.
    pub rate_limit: RateLimit,
    /// An agent not heard from for this long is "not reporting".
    pub stale_after: Duration,
    /// Read-only SQLite connections for queries.
    pub read_connections: usize,
    /// PostgreSQL: connections each reporter keeps open at most (queries,
    /// writes and the ingest writer's own).
    pub db_max_connections: usize,
    /// PostgreSQL: the ingest writer's shards, each committing on a
    /// connection of its own ([`crate::db::pg::writer`]); fewer than
    /// `db_max_connections`.
    pub db_writers: usize,
    /// PostgreSQL: the CA certificates (PEM) the server's TLS certificate
    /// must chain to; `None`: the system's roots.
    pub db_ca_file: Option<PathBuf>,
    /// How long a computed gate or rollout is reused.
    pub rollout_cache: Duration,
    /// Lifetime of a web session.
    pub session_ttl: Duration,
    /// Mark the session cookie `Secure` (serve behind HTTPS). Defaults to
    /// true when `public_url` is `https://…`.
    pub cookie_secure: bool,
    // Access limits (issue 16).
    /// The URL clients use to reach the reporter (behind its TLS proxy).
    pub public_url: Option<String>,
    /// Reverse proxies whose `X-Forwarded-For` names the client; empty: the
    /// peer address is the client (see [`crate::auth::client_ip`]).
    pub trusted_proxies: Vec<IpAddr>,
    /// Enrollment requests per client address.
    pub enroll_rate_limit: RateLimit,
    /// Failed authentications (bearer or web login) per client address.
    pub auth_failure_limit: RateLimit,
    /// Connections served at once; more wait in the listen backlog.
    pub max_connections: usize,
    /// A connection that sends no complete request head within this is
    /// closed (a new connection, or an idle kept-alive one).
    pub header_read_timeout: Duration,
    /// A request (its body included) not answered within this gets 408.
    pub request_timeout: Duration,
    /// Outgoing notifications ([`crate::notify`]).
    pub notify: NotifySettings,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            db: DbTarget::Sqlite(PathBuf::from("flotilla-reporter.db")),
            listen: "127.0.0.1:8080".parse().expect("address"),
            admin_token: None,
            manifest: None,
            manifest_refresh: Duration::from_secs(60),
            trust_root: None,
            retain_days: 90,
            retain_per_agent: 10_000,
            retention_interval: Duration::from_secs(600),
            durability: Durability::ProcessCrash,
            rate_limit: RateLimit {
                per_second: 5.0,
                burst: 50.0,
            },
            stale_after: Duration::from_secs(3600),
            read_connections: 4,
            db_max_connections: 16,
            db_writers: 2,
            db_ca_file: None,
            rollout_cache: Duration::from_secs(2),
            session_ttl: Duration::from_secs(12 * 3600),
            cookie_secure: false,
            public_url: None,
            trusted_proxies: Vec::new(),
            enroll_rate_limit: RateLimit {
                per_second: 0.5,
                burst: 60.0,
            },
            auth_failure_limit: RateLimit {
                per_second: 10.0 / 60.0,
                burst: 10.0,
            },
            max_connections: 512,
            header_read_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(60),
            notify: NotifySettings::default(),
        }
    }
}

/// The body a webhook receiver gets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WebhookFormat {
    /// The notice as JSON (`kind`, `summary`, `at` and the kind's fields),
    /// signed in `X-Flotilla-Signature`.
    #[default]
    Json,
    /// `{"text": summary}`: what a Slack (or Mattermost, Rocket.Chat)
    /// incoming webhook takes. Signed too when a secret is given.
    Slack,
}

/// One webhook receiver.
#[derive(Clone, PartialEq)]
pub struct Webhook {
    /// Its name, in logs and metrics.
    pub name: String,
    /// Where notices are POSTed (http or https).
    pub url: String,
    /// The HMAC-SHA256 key; required for `json`.
    pub secret: Option<Secret>,
    /// The body.
    pub format: WebhookFormat,
    /// The notice kinds it wants (`crate::notify::Notice::kind`); empty: all.
    pub kinds: Vec<String>,
}

impl fmt::Debug for Webhook {
    /// The URL's path may be the secret (Slack's are): only its origin shows.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let origin = self
            .url
            .splitn(4, '/')
            .take(3)
            .collect::<Vec<_>>()
            .join("/");
        f.debug_struct("Webhook")
            .field("name", &self.name)
            .field("url", &format!("{origin}/…"))
            .field("secret", &self.secret)
            .field("format", &self.format)
            .field("kinds", &self.kinds)
            .finish()
    }
}

/// Outgoing notifications: receivers, delivery and its bounds.
#[derive(Clone, Debug, PartialEq)]
pub struct NotifySettings {
    /// The receivers; none: nothing is queued.
    pub webhooks: Vec<Webhook>,
    /// First retry after this; each next one waits twice as long.
    pub retry_min: Duration,
    /// Longest wait between retries.
    pub retry_max: Duration,
    /// A notice not delivered after this many attempts is dropped.
    pub max_attempts: u32,
    /// A notice not delivered within this is dropped.
    pub max_age: Duration,
    /// At most this many notices wait; beyond, the oldest are dropped.
    pub max_rows: u64,
    /// One delivery attempt's time limit.
    pub timeout: Duration,
    /// How often gates, silent agents and expiry dates are checked.
    pub check_every: Duration,
    /// A root or manifest that expires within this is announced (once).
    pub expiry_warning: Duration,
}

impl Default for NotifySettings {
    fn default() -> Self {
        NotifySettings {
            webhooks: Vec::new(),
            retry_min: Duration::from_secs(5),
            retry_max: Duration::from_secs(600),
            max_attempts: 50,
            max_age: Duration::from_secs(86_400),
            max_rows: 10_000,
            timeout: Duration::from_secs(10),
            check_every: Duration::from_secs(30),
            expiry_warning: Duration::from_secs(14 * 86_400),
        }
    }
}

/// `[notify]` of the config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyFile {
    /// See [`NotifySettings::retry_min`].
    pub retry_min: Option<HumanDuration>,
    /// See [`NotifySettings::retry_max`].
    pub retry_max: Option<HumanDuration>,
    /// See [`NotifySettings::max_attempts`].
    pub max_attempts: Option<u32>,
    /// See [`NotifySettings::max_age`].
    pub max_age: Option<HumanDuration>,
    /// See [`NotifySettings::max_rows`].
    pub max_rows: Option<u64>,
    /// See [`NotifySettings::timeout`].
    pub timeout: Option<HumanDuration>,
    /// See [`NotifySettings::check_every`].
    pub check_every: Option<HumanDuration>,
    /// See [`NotifySettings::expiry_warning`].
    pub expiry_warning: Option<HumanDuration>,
    /// `[[notify.webhook]]`: the receivers.
    #[serde(default)]
    pub webhook: Vec<WebhookFile>,
}

/// `[[notify.webhook]]` of the config file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookFile {
    /// See [`Webhook::name`].
    pub name: String,
    /// See [`Webhook::url`].
    pub url: String,
    /// A file holding the HMAC key (at least 16 characters).
    pub secret_file: Option<PathBuf>,
    /// See [`Webhook::format`].
    #[serde(default)]
    pub format: WebhookFormat,
    /// See [`Webhook::kinds`].
    #[serde(default)]
    pub kinds: Vec<String>,
}

impl NotifyFile {
    /// Applies `[notify]` over `n`; a receiver's mistakes name it.
    pub fn apply(self, n: &mut NotifySettings) -> Result<(), Error> {
        let bad = |field: String, reason: String| Error::Config {
            path: field.into(),
            reason,
        };
        let d = |h: HumanDuration| h.0;
        if let Some(v) = self.retry_min {
            n.retry_min = d(v).max(Duration::from_millis(10));
        }
        if let Some(v) = self.retry_max {
            n.retry_max = d(v);
        }
        n.retry_max = n.retry_max.max(n.retry_min);
        if let Some(v) = self.max_attempts {
            n.max_attempts = v.max(1);
        }
        if let Some(v) = self.max_age {
            n.max_age = d(v);
        }
        if let Some(v) = self.max_rows {
            n.max_rows = v.max(1);
        }
        if let Some(v) = self.timeout {
            n.timeout = d(v).max(Duration::from_millis(100));
        }
        if let Some(v) = self.check_every {
            n.check_every = d(v).max(Duration::from_millis(100));
        }
        if let Some(v) = self.expiry_warning {
            n.expiry_warning = d(v);
        }
        if !self.webhook.is_empty() {
            n.webhooks.clear();
        }
        for (i, w) in self.webhook.into_iter().enumerate() {
            let at = |f: &str| format!("notify.webhook[{i}] ({:?}).{f}", w.name);
            if w.name.is_empty() || n.webhooks.iter().any(|o| o.name == w.name) {
                return Err(bad(at("name"), "must be given and unique".into()));
            }
            if !(w.url.starts_with("https://") || w.url.starts_with("http://")) {
                return Err(bad(at("url"), "is not an http:// or https:// URL".into()));
            }
            for k in &w.kinds {
                if !crate::notify::KINDS.contains(&k.as_str()) {
                    return Err(bad(
                        at("kinds"),
                        format!(
                            "{k:?} is not a notice kind (one of {})",
                            crate::notify::KINDS.join(", ")
                        ),
                    ));
                }
            }
            let secret =
                match &w.secret_file {
                    Some(p) => Some(read_secret(p, "the webhook secret")?),
                    None if w.format == WebhookFormat::Json => return Err(bad(
                        at("secret_file"),
                        "a json webhook needs a secret_file (the HMAC key that signs each body)"
                            .into(),
                    )),
                    None => None,
                };
            n.webhooks.push(Webhook {
                name: w.name,
                url: w.url,
                secret,
                format: w.format,
                kinds: w.kinds,
            });
        }
        Ok(())
    }
}

/// The `--config` file: every key optional, unknown keys are errors.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSettings {
    /// See [`Settings::db`]: a SQLite path or a `postgres://` URL.
    pub db: Option<String>,
    /// A file holding the PostgreSQL password (else `PGPASSWORD`).
    pub db_password_file: Option<PathBuf>,
    /// See [`Settings::listen`].
    pub listen: Option<SocketAddr>,
    /// A file holding the admin token.
    pub admin_token_file: Option<PathBuf>,
    /// See [`Settings::manifest`].
    pub manifest: Option<String>,
    /// See [`Settings::manifest_refresh`].
    pub manifest_refresh: Option<HumanDuration>,
    /// See [`Settings::trust_root`].
    pub trust_root: Option<PathBuf>,
    /// See [`Settings::retain_days`].
    pub retain_days: Option<u32>,
    /// See [`Settings::retain_per_agent`].
    pub retain_per_agent: Option<u64>,
    /// See [`Settings::retention_interval`].
    pub retention_interval: Option<HumanDuration>,
    /// See [`Settings::durability`].
    pub durability: Option<Durability>,
    /// See [`RateLimit::per_second`].
    pub rate_limit_per_second: Option<f64>,
    /// See [`RateLimit::burst`].
    pub rate_limit_burst: Option<f64>,
    /// See [`Settings::stale_after`].
    pub stale_after: Option<HumanDuration>,
    /// See [`Settings::read_connections`].
    pub read_connections: Option<usize>,
    /// See [`Settings::db_max_connections`].
    pub db_max_connections: Option<usize>,
    /// See [`Settings::db_writers`].
    pub db_writers: Option<usize>,
    /// See [`Settings::db_ca_file`].
    pub db_ca_file: Option<PathBuf>,
    /// See [`Settings::session_ttl`].
    pub session_ttl: Option<HumanDuration>,
    /// See [`Settings::cookie_secure`].
    pub cookie_secure: Option<bool>,
    /// See [`Settings::public_url`].
    pub public_url: Option<String>,
    /// See [`Settings::trusted_proxies`].
    pub trusted_proxies: Option<Vec<IpAddr>>,
    /// See [`Settings::enroll_rate_limit`].
    pub enroll_per_minute: Option<f64>,
    /// See [`Settings::enroll_rate_limit`].
    pub enroll_burst: Option<f64>,
    /// See [`Settings::auth_failure_limit`].
    pub auth_failures_per_minute: Option<f64>,
    /// See [`Settings::auth_failure_limit`].
    pub auth_failure_burst: Option<f64>,
    /// See [`Settings::max_connections`].
    pub max_connections: Option<usize>,
    /// See [`Settings::header_read_timeout`].
    pub header_read_timeout: Option<HumanDuration>,
    /// See [`Settings::request_timeout`].
    pub request_timeout: Option<HumanDuration>,
    /// See [`Settings::notify`].
    pub notify: Option<NotifyFile>,
}

impl FileSettings {
    /// Reads and parses a TOML config file.
    pub fn load(path: &Path) -> Result<FileSettings, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| Error::Config {
            path: path.to_owned(),
            reason: e.to_string(),
        })
    }

    /// Applies the file over `s`.
    pub fn apply(self, s: &mut Settings) -> Result<(), Error> {
        let d = |h: HumanDuration| h.0;
        if let Some(v) = self.db {
            let mut db = DbTarget::parse(&v);
            // A URL given over the config's keeps the config's password file.
            if let (
                DbTarget::Postgres { password_file, .. },
                DbTarget::Postgres {
                    password_file: before,
                    ..
                },
            ) = (&mut db, &s.db)
            {
                password_file.clone_from(before);
            }
            s.db = db;
        }
        if let Some(p) = self.db_password_file {
            match &mut s.db {
                DbTarget::Postgres { password_file, .. } => {
                    // Refused now (missing, or readable by others), not at
                    // the first connection.
                    read_private(&p, "the database password")?;
                    *password_file = Some(p);
                }
                DbTarget::Sqlite(path) => {
                    return Err(Error::Config {
                        path: p,
                        reason: format!(
                            "db_password_file is for a PostgreSQL database, but db is the \
                             SQLite file {}",
                            path.display()
                        ),
                    })
                }
            }
        }
        if let Some(v) = self.listen {
            s.listen = v;
        }
        if let Some(p) = self.admin_token_file {
            s.admin_token = Some(read_admin_token(&p)?);
        }
        if let Some(v) = self.manifest {
            s.manifest = Some(v);
        }
        if let Some(v) = self.manifest_refresh {
            s.manifest_refresh = d(v);
        }
        if let Some(v) = self.trust_root {
            s.trust_root = Some(v);
        }
        if let Some(v) = self.retain_days {
            s.retain_days = v;
        }
        if let Some(v) = self.retain_per_agent {
            s.retain_per_agent = v;
        }
        if let Some(v) = self.retention_interval {
            s.retention_interval = d(v);
        }
        if let Some(v) = self.durability {
            s.durability = v;
        }
        if let Some(v) = self.rate_limit_per_second {
            s.rate_limit.per_second = v;
        }
        if let Some(v) = self.rate_limit_burst {
            s.rate_limit.burst = v;
        }
        if let Some(v) = self.stale_after {
            s.stale_after = d(v);
        }
        if let Some(v) = self.db_max_connections {
            s.db_max_connections = v.max(2);
        }
        if let Some(v) = self.db_writers {
            s.db_writers = v;
        }
        let max = crate::db::pg::writer::MAX_WRITERS.min(s.db_max_connections - 1);
        if !(1..=max).contains(&s.db_writers) {
            return Err(Error::Config {
                path: "db_writers".into(),
                reason: format!(
                    "is {}; it must be from 1 to {max}: below db_max_connections ({}), \
                     as each writer holds a connection and queries need the others, \
                     and at most {}",
                    s.db_writers,
                    s.db_max_connections,
                    crate::db::pg::writer::MAX_WRITERS
                ),
            });
        }
        if let Some(p) = self.db_ca_file {
            if let DbTarget::Sqlite(path) = &s.db {
                return Err(Error::Config {
                    path: p,
                    reason: format!(
                        "db_ca_file is for a PostgreSQL database, but db is the SQLite file {}",
                        path.display()
                    ),
                });
            }
            s.db_ca_file = Some(p);
        }
        if let Some(v) = self.read_connections {
            s.read_connections = v.max(1);
        }
        if let Some(v) = self.session_ttl {
            s.session_ttl = d(v);
        }
        if let Some(v) = self.public_url {
            let v = v.trim_end_matches('/').to_owned();
            if !(v.starts_with("https://") || v.starts_with("http://")) {
                return Err(Error::Config {
                    path: "public_url".into(),
                    reason: format!("{v:?} is not an http:// or https:// URL"),
                });
            }
            // `Secure` follows an https public URL unless set explicitly.
            if self.cookie_secure.is_none() {
                s.cookie_secure = v.starts_with("https://");
            }
            s.public_url = Some(v);
        }
        if let Some(v) = self.cookie_secure {
            s.cookie_secure = v;
        }
        if let Some(v) = self.trusted_proxies {
            s.trusted_proxies = v.into_iter().map(|ip| ip.to_canonical()).collect();
        }
        if let Some(v) = self.enroll_per_minute {
            s.enroll_rate_limit.per_second = v / 60.0;
        }
        if let Some(v) = self.enroll_burst {
            s.enroll_rate_limit.burst = v;
        }
        if let Some(v) = self.auth_failures_per_minute {
            s.auth_failure_limit.per_second = v / 60.0;
        }
        if let Some(v) = self.auth_failure_burst {
            s.auth_failure_limit.burst = v;
        }
        if let Some(v) = self.max_connections {
            s.max_connections = v.max(1);
        }
        if let Some(v) = self.header_read_timeout {
            s.header_read_timeout = d(v).max(Duration::from_millis(100));
        }
        if let Some(v) = self.request_timeout {
            s.request_timeout = d(v).max(Duration::from_millis(100));
        }
        if let Some(v) = self.notify {
            v.apply(&mut s.notify)?;
        }
        Ok(())
    }
}

/// Reads the admin token from a file; it must not be empty, should be
/// long (at least 16 characters), and group and others must not be able to
/// read it (the rule the publisher applies to keys:
/// [`flotilla_signing::fs::loose_mode`]).
pub fn read_admin_token(path: &Path) -> Result<Secret, Error> {
    read_secret(path, "the admin token")
}

/// Reads a secret of at least 16 characters from a file that group and
/// others cannot read.
fn read_secret(path: &Path, what: &str) -> Result<Secret, Error> {
    let secret = read_private(path, what)?;
    if secret.expose().len() < 16 {
        return Err(Error::Config {
            path: path.to_owned(),
            reason: format!("{what} must be at least 16 characters"),
        });
    }
    Ok(secret)
}

/// Reads a secret from a file that group and others cannot read.
fn read_private(path: &Path, what: &str) -> Result<Secret, Error> {
    let io_err = |source| Error::Io {
        path: path.to_owned(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(io_err)?;
    if let Some(mode) = flotilla_signing::fs::loose_mode(&meta) {
        return Err(Error::Config {
            path: path.to_owned(),
            reason: format!(
                "{what} file {}",
                flotilla_signing::fs::loose_mode_advice(path, mode)
            ),
        });
    }
    let text = std::fs::read_to_string(path).map_err(io_err)?;
    Ok(Secret::new(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_redacts_the_admin_token() {
        let s = Settings {
            admin_token: Some(Secret::new("very-secret-admin-token")),
            ..Settings::default()
        };
        let shown = format!("{s:?}");
        assert!(!shown.contains("very-secret"), "{shown}");
        assert!(shown.contains("redacted"));
    }

    #[test]
    fn file_overrides_defaults_and_rejects_unknown_keys() {
        let f: FileSettings =
            toml::from_str("listen = \"0.0.0.0:9000\"\nretain_days = 7\ndurability = \"power_loss\"\nstale_after = \"2h\"\n")
                .unwrap();
        let mut s = Settings::default();
        f.apply(&mut s).unwrap();
        assert_eq!(s.listen.port(), 9000);
        assert_eq!(s.retain_days, 7);
        assert_eq!(s.durability, Durability::PowerLoss);
        assert_eq!(s.stale_after, Duration::from_secs(7200));
        assert!(toml::from_str::<FileSettings>("listn = \"x\"").is_err());
    }

    #[test]
    fn db_writers_leave_connections_for_queries() {
        let apply = |text: &str| {
            let f: FileSettings = toml::from_str(text).unwrap();
            let mut s = Settings::default();
            f.apply(&mut s).map(|()| s.db_writers)
        };
        assert_eq!(apply("").unwrap(), 2);
        assert_eq!(apply("db_writers = 4").unwrap(), 4);
        assert_eq!(apply("db_max_connections = 4\ndb_writers = 3").unwrap(), 3);
        let e = apply("db_max_connections = 4\ndb_writers = 4")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("db_writers: is 4; it must be from 1 to 3"),
            "{e}"
        );
        assert!(e.contains("below db_max_connections (4)"), "{e}");
        let e = apply("db_writers = 0").unwrap_err().to_string();
        assert!(e.contains("from 1 to 15"), "{e}");
        let e = apply("db_max_connections = 64\ndb_writers = 17")
            .unwrap_err()
            .to_string();
        assert!(e.contains("at most 16"), "{e}");
    }

    #[test]
    fn db_is_a_sqlite_path_or_a_postgres_url_with_its_password_file() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("db.password");
        std::fs::write(&pw, "s3cret\n").unwrap();
        std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
        let apply = |text: String| {
            let f: FileSettings = toml::from_str(&text).unwrap();
            let mut s = Settings::default();
            f.apply(&mut s).map(|()| s.db)
        };
        assert_eq!(
            apply("db = \"/var/lib/r.db\"".into()).unwrap(),
            DbTarget::Sqlite("/var/lib/r.db".into())
        );
        let db = apply(format!(
            "db = \"postgresql://flotilla@db.example/fl\"\ndb_password_file = {:?}",
            pw.display().to_string()
        ))
        .unwrap();
        assert_eq!(
            db,
            DbTarget::Postgres {
                url: "postgresql://flotilla@db.example/fl".into(),
                password_file: Some(pw.clone()),
            }
        );
        assert_eq!(db.password().unwrap().unwrap().expose(), "s3cret");
        assert_eq!(db.to_string(), "postgresql://flotilla@db.example/fl");
        let e = apply(format!(
            "db = \"/var/lib/r.db\"\ndb_password_file = {:?}",
            pw.display().to_string()
        ))
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("db_password_file is for a PostgreSQL database"),
            "{e}"
        );
        std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o640)).unwrap();
        let e = apply(format!(
            "db = \"postgres://flotilla@db.example/fl\"\ndb_password_file = {:?}",
            pw.display().to_string()
        ))
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("the database password file has mode 0640"),
            "{e}"
        );
    }

    #[test]
    fn webhooks_name_their_mistakes() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("hook.secret");
        std::fs::write(&secret, "a-webhook-secret-0123456789\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
        let parse = |extra: &str| {
            let text = format!(
                "[notify]\nretry_min = \"1s\"\n[[notify.webhook]]\nname = \"ops\"\n\
                 url = \"https://h.example/x\"\n{extra}"
            );
            let f: FileSettings = toml::from_str(&text).unwrap();
            let mut s = Settings::default();
            f.apply(&mut s).map(|()| s)
        };
        let s = parse(&format!(
            "secret_file = {:?}\nkinds = [\"rollback\"]\n",
            secret.display().to_string()
        ))
        .unwrap();
        let w = &s.notify.webhooks[0];
        assert_eq!(
            w.secret.as_ref().unwrap().expose(),
            "a-webhook-secret-0123456789"
        );
        assert_eq!(
            (w.format, w.kinds.as_slice()),
            (WebhookFormat::Json, &["rollback".to_owned()][..])
        );
        assert_eq!(s.notify.retry_min, Duration::from_secs(1));
        assert!(
            !format!("{s:?}").contains("/x"),
            "the URL's path may be a secret"
        );
        let e = parse("").unwrap_err().to_string();
        assert!(
            e.contains("notify.webhook[0]") && e.contains("secret_file"),
            "{e}"
        );
        let e = parse("format = \"slack\"\nkinds = [\"gate_shut\"]\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("gate_shut") && e.contains("kinds"), "{e}");
        assert!(
            parse("format = \"slack\"\n").is_ok(),
            "slack URLs carry their own secret"
        );
    }
}
