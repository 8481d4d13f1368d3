//! `flotilla-reporter agent revoke|readmit|release`.

use anyhow::bail;
use flotilla_reporter::db::tokens;

use super::DbArgs;

/// Manage agents.
#[derive(clap::Subcommand)]
pub enum Command {
    /// Revoke an agent and keep it out: its token gets 401 from now on and
    /// its id cannot be enrolled again, with any enrollment token, until
    /// `agent readmit`. Its history is kept.
    Revoke {
        #[command(flatten)]
        db: DbArgs,
        /// The agent's id.
        id: String,
    },
    /// Let a revoked agent id enroll again (with an enrollment token; its old
    /// agent token stays dead, so the agent enrolls with a new one).
    Readmit {
        #[command(flatten)]
        db: DbArgs,
        /// The agent's id.
        id: String,
    },
    /// Free an agent id that the wrong party enrolled (a squatter took
    /// web-99 before the real host): its token gets 401 and the id may be
    /// enrolled anew at once. Revoke the enrollment token the squatter used
    /// first (`token list` shows which enrolled how many), or it may take the
    /// id again.
    Release {
        #[command(flatten)]
        db: DbArgs,
        /// The agent's id.
        id: String,
    },
}

/// Runs the subcommand.
pub fn run(cmd: Command) -> anyhow::Result<()> {
    let (db, id, f, done): (_, _, fn(&rusqlite::Connection, &str) -> _, _) = match cmd {
        Command::Revoke { db, id } => (
            db,
            id,
            tokens::revoke_agent,
            "revoked; it stays out until `agent readmit`",
        ),
        Command::Readmit { db, id } => (
            db,
            id,
            tokens::readmit_agent,
            "readmitted; it may enroll again",
        ),
        Command::Release { db, id } => (
            db,
            id,
            tokens::release_agent,
            "released; its id may be enrolled anew",
        ),
    };
    let conn = db.open()?;
    if !f(&conn, &id)? {
        bail!("no agent {id}");
    }
    eprintln!("agent {id} {done}");
    Ok(())
}
