//! `flotilla-agent self-test`.

use std::path::Path;
use std::process::ExitCode;

use flotilla_agent::selftest;

/// Check this binary (version, hashing, signatures, reading the host's
/// config) and print one JSON line with its version and target. The
/// installing agent runs it before swapping a new version in.
#[derive(clap::Args)]
#[command(after_help = "Example:
  /opt/flotilla/versions/2.0.0/flotilla-agent self-test")]
pub struct Args {}

/// Prints the report; exits 1 if a check failed.
pub fn run(config: &Path, _args: Args) -> anyhow::Result<ExitCode> {
    let report = selftest::run(Some(config));
    println!("{}", serde_json::to_string(&report)?);
    Ok(if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
