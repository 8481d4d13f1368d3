//! `flotilla-reporter agent revoke|readmit|release`.

use super::DbArgs;
use anyhow::bail;

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
    #[derive(Clone, Copy)]
    enum Op {
        Revoke,
        Readmit,
        Release,
    }
    let (db, id, op, done) = match cmd {
        Command::Revoke { db, id } => (
            db,
            id,
            Op::Revoke,
            "revoked; it stays out until `agent readmit`",
        ),
        Command::Readmit { db, id } => (db, id, Op::Readmit, "readmitted; it may enroll again"),
        Command::Release { db, id } => {
            (db, id, Op::Release, "released; its id may be enrolled anew")
        }
    };
    let found = db.with_store(|store| {
        let id = id.clone();
        async move {
            Ok(match op {
                Op::Revoke => store.revoke_agent(id).await?,
                Op::Readmit => store.readmit_agent(id).await?,
                Op::Release => store.release_agent(id).await?,
            })
        }
    })?;
    if !found {
        bail!("no agent {id}");
    }
    eprintln!("agent {id} {done}");
    Ok(())
}
