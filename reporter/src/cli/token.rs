//! `flotilla-reporter token create|list|revoke`.

use anyhow::bail;
use chrono::Utc;
use flotilla_protocol::HumanDuration;
use flotilla_reporter::db::tokens;

use super::DbArgs;

/// Manage enrollment tokens.
#[derive(clap::Subcommand)]
pub enum Command {
    /// Make an enrollment token and print it (once; only its hash is kept).
    Create {
        #[command(flatten)]
        db: DbArgs,
        /// Expire after this long ("7d", "12h"); never if not given.
        #[arg(long)]
        expires: Option<HumanDuration>,
        /// Enroll at most this many agents; unlimited if not given.
        #[arg(long)]
        uses: Option<u64>,
        /// A note for `token list`.
        #[arg(long, default_value = "")]
        note: String,
    },
    /// List enrollment tokens with their real state.
    List {
        #[command(flatten)]
        db: DbArgs,
    },
    /// Revoke an enrollment token (agents it enrolled stay enrolled).
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
            expires,
            uses,
            note,
        } => {
            let conn = db.open()?;
            let (info, secret) = tokens::create(&conn, expires.map(|d| d.0), uses, &note)?;
            eprintln!(
                "enrollment token {} created (expires: {}, uses: {}); it is shown only now:",
                info.id,
                info.expires_at
                    .map(|t| t.to_rfc3339())
                    .unwrap_or_else(|| "never".into()),
                info.max_uses
                    .map(|m| m.to_string())
                    .unwrap_or_else(|| "unlimited".into())
            );
            println!("{secret}");
        }
        Command::List { db } => {
            let conn = db.open()?;
            let now = Utc::now();
            println!(
                "{:<10} {:<9} {:>9} {:<25} {:<25} NOTE",
                "ID", "STATE", "USES", "EXPIRES", "CREATED"
            );
            for t in tokens::list(&conn)? {
                let uses = match t.max_uses {
                    Some(m) => format!("{}/{m}", t.uses),
                    None => t.uses.to_string(),
                };
                let fmt = |d: chrono::DateTime<Utc>| d.format("%Y-%m-%d %H:%M:%SZ").to_string();
                println!(
                    "{:<10} {:<9} {:>9} {:<25} {:<25} {}",
                    t.id,
                    t.state(now).to_string(),
                    uses,
                    t.expires_at.map(fmt).unwrap_or_else(|| "never".into()),
                    fmt(t.created_at),
                    t.note
                );
            }
        }
        Command::Revoke { db, id } => {
            let conn = db.open()?;
            if !tokens::revoke(&conn, &id)? {
                bail!("no enrollment token {id}");
            }
            eprintln!("enrollment token {id} revoked");
        }
    }
    Ok(())
}
