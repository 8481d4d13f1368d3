//! `flotilla-reporter token create|list|revoke`.

use std::time::Duration;

use anyhow::bail;
use chrono::Utc;
use flotilla_protocol::HumanDuration;
use flotilla_reporter::db::tokens::Scope;

use super::DbArgs;

/// How long a token lives unless `--expires` says otherwise.
pub const DEFAULT_EXPIRY: Duration = Duration::from_secs(24 * 3600);
/// How many agents an enrollment token enrolls unless `--uses` says otherwise.
pub const DEFAULT_USES: u64 = 1;

/// `--expires`: a duration or `never`.
#[derive(Clone, Copy, Debug)]
pub struct Expiry(Option<Duration>);

impl std::str::FromStr for Expiry {
    type Err = String;
    fn from_str(s: &str) -> Result<Expiry, String> {
        if s == "never" {
            return Ok(Expiry(None));
        }
        let d: HumanDuration = s.parse()?;
        if d.0.is_zero() {
            return Err("a token that expires at once is of no use; give e.g. 1h".into());
        }
        Ok(Expiry(Some(d.0)))
    }
}

/// `--uses`: a number or `unlimited`.
#[derive(Clone, Copy, Debug)]
pub struct Uses(Option<u64>);

impl std::str::FromStr for Uses {
    type Err = String;
    fn from_str(s: &str) -> Result<Uses, String> {
        if s == "unlimited" {
            return Ok(Uses(None));
        }
        match s.parse::<u64>() {
            Ok(0) | Err(_) => Err(format!(
                "{s:?} is not a number of agents (1 or more) or \"unlimited\""
            )),
            Ok(n) => Ok(Uses(Some(n))),
        }
    }
}

/// Manage tokens: enrollment tokens for agents, read tokens for CI and Prometheus.
#[derive(clap::Subcommand)]
pub enum Command {
    /// Make a token and print it (once; only its hash is kept).
    #[command(after_help = "Scopes:
  enroll  (default) enrolls agents. Limited by default: it expires after 24h and
          enrolls one agent; a batch needs --uses N, e.g.
          token create --expires 7d --uses 500 --note \"rack b7\".
          \"--expires never\" and \"--uses unlimited\" are explicit opt-outs: such a
          token left on a host lets anyone who reads it enroll agents that
          vote in the halt gate.
  read    reads status and plan data only: GET /api/v1/agents*, /api/v1/rollouts*,
          /api/v1/gate/*, /metrics (for pull-request jobs, `flotilla-publisher
          status|plan` via FLOTILLA_REPORTER_TOKEN, Prometheus). Never writes,
          never the web page. Expires after 24h unless --expires says
          otherwise (\"--expires never\" for a Prometheus scraper); revoke it
          with `token revoke ID`.")]
    Create {
        #[command(flatten)]
        db: DbArgs,
        /// What the token may do: enroll (agents) or read (status and plan data).
        #[arg(long, default_value = "enroll")]
        scope: Scope,
        /// Expire after this long ("7d", "12h") or "never" [default: 24h].
        #[arg(long)]
        expires: Option<Expiry>,
        /// Enroll at most this many agents, or "unlimited" [default: 1]; enroll scope only.
        #[arg(long)]
        uses: Option<Uses>,
        /// A note for `token list`.
        #[arg(long, default_value = "")]
        note: String,
    },
    /// List tokens with their real state and the agents each one enrolled.
    List {
        #[command(flatten)]
        db: DbArgs,
    },
    /// Revoke a token (agents it enrolled stay enrolled; `agent revoke` them).
    Revoke {
        #[command(flatten)]
        db: DbArgs,
        /// The token's id, from `token list`.
        id: String,
    },
}

/// Runs the subcommand.
pub fn run(cmd: Command) -> anyhow::Result<()> {
    match cmd {
        Command::Create {
            db,
            scope,
            expires,
            uses,
            note,
        } => {
            let expires = expires.map_or(Some(DEFAULT_EXPIRY), |e| e.0);
            if scope == Scope::Read && uses.is_some() {
                bail!("--uses limits enrollments; a read token has no uses to limit");
            }
            let (info, secret) = db.with_store(|store| async move {
                Ok(match scope {
                    Scope::Enroll => {
                        let uses = uses.map_or(Some(DEFAULT_USES), |u| u.0);
                        store.token_create(expires, uses, note).await?
                    }
                    Scope::Read => store.token_create_read(expires, note).await?,
                })
            })?;
            eprintln!(
                "{} token {} created (expires: {}, uses: {}); it is shown only now:",
                info.scope,
                info.id,
                info.expires_at
                    .map(|t| t.to_rfc3339())
                    .unwrap_or_else(|| "never".into()),
                match (info.scope, info.max_uses) {
                    (Scope::Read, _) => "-".to_owned(),
                    (_, Some(m)) => m.to_string(),
                    (_, None) => "unlimited".to_owned(),
                }
            );
            println!("{secret}");
        }
        Command::List { db } => {
            let list = db.with_store(|store| async move { Ok(store.tokens_list().await?) })?;
            let now = Utc::now();
            println!(
                "{:<10} {:<7} {:<9} {:>9} {:>7} {:<21} {:<21} NOTE",
                "ID", "SCOPE", "STATE", "USES", "AGENTS", "EXPIRES", "CREATED"
            );
            for t in list {
                let (uses, agents) = match (t.scope, t.max_uses) {
                    (Scope::Read, _) => ("-".to_owned(), "-".to_owned()),
                    (_, Some(m)) => (format!("{}/{m}", t.uses), t.agents.to_string()),
                    (_, None) => (t.uses.to_string(), t.agents.to_string()),
                };
                let fmt = |d: chrono::DateTime<Utc>| d.format("%Y-%m-%d %H:%M:%SZ").to_string();
                println!(
                    "{:<10} {:<7} {:<9} {:>9} {:>7} {:<21} {:<21} {}",
                    t.id,
                    t.scope.to_string(),
                    t.state(now).to_string(),
                    uses,
                    agents,
                    t.expires_at.map(fmt).unwrap_or_else(|| "never".into()),
                    fmt(t.created_at),
                    t.note
                );
            }
        }
        Command::Revoke { db, id } => {
            let found = db.with_store(|store| {
                let id = id.clone();
                async move { Ok(store.token_revoke(id).await?) }
            })?;
            if !found {
                bail!("no token {id}");
            }
            eprintln!("token {id} revoked");
        }
    }
    Ok(())
}
