//! `flotilla-agent rollback`.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use flotilla_agent::{pass, Config};

/// Roll back a pending update: point `current` back at the previous
/// version and block the failed release. Run by
/// flotilla-agent-rollback.service (OnFailure= of the main unit) with the
/// *previous* binary; without a pending update it does nothing.
#[derive(clap::Args)]
#[command(after_help = "Example:
  /opt/flotilla/previous/flotilla-agent rollback")]
pub struct Args {}

/// Rolls back and prints what happened.
pub fn run(config: &Path, _args: Args) -> anyhow::Result<ExitCode> {
    let config = Config::load(config)?;
    let outcome = pass::rollback(&config).context("rollback failed")?;
    println!("{}", outcome.describe());
    Ok(ExitCode::SUCCESS)
}
