//! `flotilla-agent status`.

use std::path::Path;
use std::process::ExitCode;

use flotilla_agent::{status, Config};

/// Show the version, channel, wave and when it opens, the pending update,
/// the last manifest serial and check time, and the last error.
#[derive(clap::Args)]
#[command(after_help = "Examples:
  flotilla-agent status
  flotilla-agent status --json | jq .pending")]
pub struct Args {
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

/// Prints the status.
pub fn run(config: &Path, args: Args) -> anyhow::Result<ExitCode> {
    let config = Config::load(config)?;
    let s = status::status(&config)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&s)?);
    } else {
        println!("{s}");
    }
    Ok(ExitCode::SUCCESS)
}
