//! `flotilla-reporter agent revoke`.

use anyhow::bail;
use flotilla_reporter::db::tokens;

use super::DbArgs;

/// Manage agents.
#[derive(clap::Subcommand)]
pub enum Command {
    /// Revoke an agent's token: it gets 401 from now on, and its id may be
    /// enrolled again with an enrollment token. Its history is kept.
    Revoke {
        #[command(flatten)]
        db: DbArgs,
        /// The agent's id.
        id: String,
    },
}

/// Runs the subcommand.
pub fn run(cmd: Command) -> anyhow::Result<()> {
    match cmd {
        Command::Revoke { db, id } => {
            let conn = db.open()?;
            if !tokens::revoke_agent(&conn, &id)? {
                bail!("no agent {id}");
            }
            eprintln!("agent {id} revoked");
        }
    }
    Ok(())
}
