//! `flotilla-agent version`.

use std::process::ExitCode;

use flotilla_agent::version::{TARGET, VERSION};

/// Print the version and the target triple this build is for.
#[derive(clap::Args)]
pub struct Args {}

/// Prints `flotilla-agent <version> (<target>)`.
pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
    println!("flotilla-agent {VERSION} ({TARGET})");
    Ok(ExitCode::SUCCESS)
}
