//! `flotilla-reporter serve`.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use flotilla_reporter::settings::{FileSettings, Settings};

/// `serve --help`'s epilogue: every key of the `--config` file, set to its
/// default (a test parses it, so it cannot drift from the code).
pub const CONFIG_HELP: &str = r#"The --config file (TOML; every key optional, an unknown key is an error).
Each key below is set to its default, except the first seven (examples):
  db = "/var/lib/flotilla-reporter/db.sqlite"  # a SQLite file, or a URL:
                                 # "postgres://flotilla@db.example.com/flotilla"
                                 # (no password in it)
  db_password_file = "/etc/flotilla-reporter/db.password"  # PostgreSQL's
                                 # password (mode 0600; else PGPASSWORD)
  db_ca_file = "/etc/flotilla-reporter/db-ca.crt"  # PostgreSQL: the CA (PEM)
                                 # of its TLS certificate; else the system's
  admin_token_file = "/etc/flotilla-reporter/admin.token"
  manifest = "https://updates.example.com/fleet/manifest.json"
  trust_root = "/etc/flotilla-reporter/root.json"
  public_url = "https://reporter.example.com"  # https: the session cookie is
                                 # Secure (unless cookie_secure says otherwise)
  listen = "127.0.0.1:8080"
  manifest_refresh = "1m"        # how often --manifest is read again
  retain_days = 90               # events older than this are pruned
  retain_per_agent = 10000       # and each agent's oldest beyond this many
  retention_interval = "10m"     # how often pruning runs (in the background,
                                 # in small jobs that leave ingestion first)
  durability = "process_crash"   # an acknowledged event survives the reporter
                                 # being killed; "power_loss": it survives a
                                 # power loss too (an fsync per commit, slower)
  rate_limit_per_second = 5.0    # events per second per agent, sustained
  rate_limit_burst = 50.0        # and in a burst (beyond: 429, Retry-After)
  stale_after = "1h"             # agents silent this long are "not reporting"
  read_connections = 4           # SQLite connections for queries
  db_max_connections = 16        # PostgreSQL connections per reporter
  db_writers = 2                 # of which ingest commits on this many at once
  session_ttl = "12h"            # web login lifetime
  cookie_secure = false          # true when served over HTTPS
  trusted_proxies = []           # proxy addresses ("127.0.0.1") whose
                                 # X-Forwarded-For names the client; without,
                                 # every client behind a proxy is one address
  enroll_per_minute = 30.0       # enrollments per client address, sustained
  enroll_burst = 60.0            # and at once (beyond: 429, Retry-After)
  auth_failures_per_minute = 10.0  # wrong tokens (API or login) per client
  auth_failure_burst = 10.0      # address before it gets 429; others' are
                                 # never refused for it
  max_connections = 512          # served at once (keep below the fd limit)
  header_read_timeout = "10s"    # to send a request's headers (and idle)
  request_timeout = "1m"         # to send its body and be answered: 408
  [notify]                       # outgoing notifications (webhooks), kept in
                                 # the database until the receiver answers 2xx
  retry_min = "5s"               # first retry; each next one waits twice as
  retry_max = "10m"              # long, up to this
  max_attempts = 50              # then a notice is dropped (logged, counted in
  max_age = "1d"                 # flotilla_notifications_dropped_total), also
  max_rows = 10000               # when older, or the oldest beyond this many
  timeout = "10s"                # each attempt
  check_every = "30s"            # gates, silent agents and expiry dates
  expiry_warning = "14d"         # announce a root or manifest expiring within
  [[notify.webhook]]             # one per receiver (an example, not a default)
  name = "ops"                   # in logs and metrics
  url = "https://hooks.example.com/flotilla"
  secret_file = "/etc/flotilla-reporter/webhook.secret"  # the HMAC key of
                                 # X-Flotilla-Signature (required for json)
  format = "json"                # or "slack": {"text": "..."}
  kinds = []                     # all, or some of gate_closed, gate_reopened,
                                 # manual_halt, manual_resume, rollback,
                                 # migration_failed, agents_silent, expiring"#;

/// Serve the API and the web page.
#[derive(clap::Args)]
pub struct Args {
    /// A TOML file with any of the settings; flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// The database: a SQLite file (created, mode 0600, when missing), or a
    /// postgres:// (postgresql://) URL without a password
    /// [default: ./flotilla-reporter.db].
    #[arg(long)]
    db: Option<String>,
    /// File holding the PostgreSQL password (mode 0600; else PGPASSWORD is
    /// used). Never put the password in --db.
    #[arg(long)]
    db_password_file: Option<PathBuf>,
    /// PostgreSQL: the CA certificates (PEM) its TLS certificate must chain
    /// to [default: the system's]. TLS follows the URL's sslmode (disable,
    /// prefer, require); whenever it is used the certificate is verified.
    #[arg(long, value_name = "FILE")]
    db_ca_file: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// File holding the admin token (reads, metrics, web login).
    #[arg(long)]
    admin_token_file: Option<PathBuf>,
    /// The signed manifest (path or http(s) URL; roots are read from
    /// root/N.root.json beside it, or beside its signed/ directory): what
    /// each channel rolls out, its thresholds and waves. Verified against
    /// --trust-root like an agent does; until one verifies, every gate is
    /// closed.
    #[arg(long)]
    manifest: Option<String>,
    /// The root the manifest's root chain starts from (the root/1.root.json
    /// agents ship with). Required with --manifest.
    #[arg(long)]
    trust_root: Option<PathBuf>,
    /// Prune events older than this many days [default: 90].
    #[arg(long)]
    retain_days: Option<u32>,
    /// Keep at most this many events per agent [default: 10000].
    #[arg(long)]
    retain_per_agent: Option<u64>,
}

impl Args {
    fn settings(self) -> anyhow::Result<Settings> {
        let mut s = Settings::default();
        if let Some(c) = &self.config {
            FileSettings::load(c)?.apply(&mut s)?;
        }
        // The flags are a config file of their own, applied over the file.
        FileSettings {
            db: self.db,
            db_password_file: self.db_password_file,
            db_ca_file: self.db_ca_file,
            listen: self.listen,
            admin_token_file: self.admin_token_file,
            manifest: self.manifest,
            trust_root: self.trust_root,
            retain_days: self.retain_days,
            retain_per_agent: self.retain_per_agent,
            ..FileSettings::default()
        }
        .apply(&mut s)?;
        Ok(s)
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = ctrl_c => {},
        _ = term.recv() => {},
    }
    tracing::info!("shutting down");
}

/// Runs the server until SIGINT or SIGTERM.
pub fn run(args: Args) -> anyhow::Result<()> {
    let settings = args.settings()?;
    if settings.admin_token.is_none() {
        tracing::warn!(
            "no --admin-token-file: the read API, metrics and the web page are disabled"
        );
    }
    // Create (0600) and migrate the database before listening: a bad --db
    // fails before the address is announced, and once it is, the admin
    // commands (which open only an existing database) find it.
    if let Some(path) = settings.db.sqlite_path() {
        drop(flotilla_reporter::db::open_writer(
            path,
            settings.durability,
        )?);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(settings.listen)
            .await
            .with_context(|| format!("listening on {}", settings.listen))?;
        // User-facing (tests and scripts read it): the address actually bound.
        println!("listening on {}", listener.local_addr()?);
        flotilla_reporter::launch_with_tcp_listener(settings, listener, shutdown_signal()).await?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    #[test]
    fn flags_override_the_config_file_and_the_file_the_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("reporter.toml");
        std::fs::write(
            &file,
            "listen = \"127.0.0.1:9000\"\nretain_days = 30\nretain_per_agent = 500\n",
        )
        .unwrap();
        let cli = Cli::parse_from([
            "serve",
            "--config",
            file.to_str().unwrap(),
            "--retain-days",
            "7",
        ]);
        let s = cli.args.settings().unwrap();
        assert_eq!(s.retain_days, 7);
        assert_eq!(s.retain_per_agent, 500);
        assert_eq!(s.listen.to_string(), "127.0.0.1:9000");
        assert_eq!(s.db, Settings::default().db);
    }

    #[test]
    fn the_help_names_every_config_key_with_its_default() {
        let toml = CONFIG_HELP.splitn(3, '\n').nth(2).unwrap();
        let mut f: FileSettings = toml::from_str(toml).unwrap();
        // Every field, by name: a new one does not compile until it is here,
        // and one missing from the help does not match.
        let FileSettings {
            db: Some(_),
            db_password_file: Some(_),
            listen: Some(_),
            admin_token_file: Some(_),
            manifest: Some(_),
            manifest_refresh: Some(_),
            trust_root: Some(_),
            retain_days: Some(_),
            retain_per_agent: Some(_),
            retention_interval: Some(_),
            durability: Some(_),
            rate_limit_per_second: Some(_),
            rate_limit_burst: Some(_),
            stale_after: Some(_),
            read_connections: Some(_),
            db_max_connections: Some(_),
            db_writers: Some(_),
            db_ca_file: Some(_),
            session_ttl: Some(_),
            cookie_secure: Some(_),
            public_url: Some(_),
            trusted_proxies: Some(_),
            enroll_per_minute: Some(_),
            enroll_burst: Some(_),
            auth_failures_per_minute: Some(_),
            auth_failure_burst: Some(_),
            max_connections: Some(_),
            header_read_timeout: Some(_),
            request_timeout: Some(_),
            notify: Some(_),
        } = &f
        else {
            panic!("a key is missing from the help: {f:?}");
        };
        // The first four are examples, not defaults.
        (f.db, f.admin_token_file, f.manifest, f.trust_root) = (None, None, None, None);
        f.public_url = None;
        f.db_password_file = None;
        f.db_ca_file = None;
        f.notify.as_mut().unwrap().webhook.clear();
        let mut s = Settings::default();
        f.apply(&mut s).unwrap();
        assert_eq!(
            format!("{s:?}"),
            format!("{:?}", Settings::default()),
            "the help states other defaults than the code's"
        );
    }
}
