//! `flotilla-agent run`: one pass (see `flotilla_agent::pass`).

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use flotilla_agent::pass;

/// Do one pass: check the manifest, update if this host's turn has come,
/// health-check a new version, roll back a failing one. Then exit.
#[derive(clap::Args)]
#[command(after_help = "Examples:
  flotilla-agent run
  FLOTILLA_LOG=debug flotilla-agent --config ./agent.toml run")]
pub struct Args {}

/// Runs the pass and prints its outcome.
pub fn run(config: &Path, _args: Args) -> anyhow::Result<ExitCode> {
    let outcome = pass::run_file(config).context("the pass stopped")?;
    println!("{}", outcome.describe());
    Ok(ExitCode::SUCCESS)
}
