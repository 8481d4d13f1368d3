//! One module per subcommand, each with an `Args` (clap derive; the doc
//! comments are the help text) and a `run`. Shared: the global flags and the
//! mapping of errors to exit codes.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use chrono::{DateTime, Utc};
use flotilla_publisher::Repo;

pub mod hash;
pub mod init;
pub mod keygen;
pub mod package;
pub mod pin;
pub mod plan;
pub mod publish;
pub mod release;
pub mod rollout;
pub mod root;
pub mod sign;
pub mod status;
pub mod verify;

/// Flags every subcommand accepts.
#[derive(clap::Args)]
pub struct Global {
    /// The fleet repo to work on.
    #[arg(long, global = true, value_name = "DIR", default_value = ".")]
    pub repo: PathBuf,
    /// Judge expiry as of this RFC 3339 time instead of now (audits, tests).
    #[arg(long, global = true, hide = true, value_name = "TIME")]
    pub now: Option<String>,
}

impl Global {
    /// The repo.
    pub fn repo(&self) -> Repo {
        Repo::new(&self.repo)
    }

    /// The time expiry is judged at.
    pub fn now(&self) -> anyhow::Result<DateTime<Utc>> {
        match &self.now {
            None => Ok(Utc::now()),
            Some(s) => Ok(DateTime::parse_from_rfc3339(s)
                .with_context(|| format!("--now {s:?}"))?
                .with_timezone(&Utc)),
        }
    }
}

/// A check failed; each line is one problem, already phrased for the operator.
#[derive(Debug)]
pub struct Problems(pub Vec<String>);

impl std::fmt::Display for Problems {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.join("\n"))
    }
}

impl std::error::Error for Problems {}

/// The one place errors become exit codes and messages.
pub fn exit_code(result: anyhow::Result<()>) -> ExitCode {
    let Err(e) = result else {
        return ExitCode::SUCCESS;
    };
    if let Some(p) = e.downcast_ref::<Problems>() {
        for line in &p.0 {
            eprintln!("{line}");
        }
        eprintln!("{} problem(s) found", p.0.len());
        return ExitCode::from(1);
    }
    let broken_pipe = e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    });
    if broken_pipe {
        return ExitCode::SUCCESS;
    }
    eprintln!(
        "error: {}",
        flotilla_publisher::error::chain_text(e.as_ref())
    );
    ExitCode::from(1)
}
