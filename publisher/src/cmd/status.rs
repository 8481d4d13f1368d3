//! `status`: the rollout progress table, read from the reporter. Also the
//! reporter flags `plan` shares.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context};
use flotilla_protocol::sources::{parse_strict, Fleet};
use flotilla_publisher::progress;
use flotilla_publisher::reporter_client::{AdminToken, ReporterClient, TOKEN_ENV};

use super::Global;

/// Where the reporter is, and the admin token to read it with.
#[derive(clap::Args)]
pub struct ReporterArgs {
    /// The reporter's URL, e.g. https://reporter.example.com [default:
    /// reporter_url in the fleet repo's fleet.toml].
    #[arg(long, value_name = "URL")]
    pub reporter: Option<String>,
    /// A file holding the reporter's admin token (the reporter's
    /// --admin-token-file); refused unless mode 0600 [default: the
    /// FLOTILLA_REPORTER_TOKEN environment variable].
    #[arg(long, value_name = "F")]
    pub token_file: Option<PathBuf>,
}

impl ReporterArgs {
    /// The client: --reporter, else what `fleet_url` finds (in fleet.toml).
    pub fn client(
        &self,
        fleet_url: impl FnOnce() -> anyhow::Result<Option<String>>,
    ) -> anyhow::Result<ReporterClient> {
        let url = match &self.reporter {
            Some(u) => Some(u.clone()),
            None => fleet_url()?,
        };
        let Some(url) = url else {
            bail!("which reporter? give --reporter URL (or set reporter_url in fleet.toml)");
        };
        let token = AdminToken::find(self.token_file.as_deref(), std::env::var(TOKEN_ENV).ok())?;
        Ok(ReporterClient::new(&url, token)?)
    }
}

/// The reporter URL in `<repo>/fleet.toml`, if there is one.
pub fn fleet_reporter_url(g: &Global) -> anyhow::Result<Option<String>> {
    let rel = std::path::Path::new("fleet.toml");
    let path = g.repo().path(rel);
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(parse_strict::<Fleet>(rel, &text)?.reporter_url),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| path.display().to_string()),
    }
}

/// Rollout progress from the reporter: per channel and release, wave by
/// wave, and the halt gate.
///
/// Each agent of a channel is counted in exactly one column: on release
/// (installed and healthy), installing (downloading, verifying, installed
/// and not yet checked), failed (install, health check or migration
/// failed), rolled back, waiting (its wave has not opened, or deferred),
/// not reporting (not heard from for a while; the reporter's
/// --stale-after). The bar shows the same: `#` on release, `!` failed or
/// rolled back, `~` installing, `.` the rest; the percentage is the share on
/// the release.
///
/// The gate is the reporter's halt gate: CLOSED when the failure rate
/// (failed and rolled back over all reports) is above the channel's
/// max_failure_rate once min_reports agents have reported; agents then wait
/// instead of installing. Without --channel every channel's current rollout
/// is shown. Reads need the reporter's admin token.
#[derive(clap::Args)]
#[command(after_help = "\
Examples:
  flotilla-publisher status --reporter https://reporter.example.com --token-file admin.token
  FLOTILLA_REPORTER_TOKEN=$(cat admin.token) flotilla-publisher status --channel stable
  flotilla-publisher status --channel stable --release 1.3.2 --json | jq .rollouts[0].gate")]
pub struct Args {
    #[command(flatten)]
    reporter: ReporterArgs,
    /// Only this channel.
    #[arg(long, value_name = "C")]
    channel: Option<String>,
    /// A release other than the channel's current one (needs --channel).
    #[arg(long, value_name = "V", requires = "channel")]
    release: Option<String>,
    /// Print the reporter's answer as JSON ({"rollouts": [...]}, the
    /// RolloutList of GET /api/v1/rollouts) instead of the table.
    #[arg(long)]
    json: bool,
}

pub fn run(g: &Global, args: Args) -> anyhow::Result<()> {
    let client = args.reporter.client(|| fleet_reporter_url(g))?;
    let rollouts = match (&args.channel, &args.release) {
        (Some(c), Some(r)) => vec![client.rollout(c, r)?],
        (c, _) => client.rollouts(c.as_deref())?.rollouts,
    };
    let mut out = std::io::stdout().lock();
    if args.json {
        let list = flotilla_protocol::api::RolloutList { rollouts };
        serde_json::to_writer_pretty(&mut out, &list)?;
        writeln!(out)?;
        return Ok(());
    }
    if rollouts.is_empty() {
        if let Some(c) = &args.channel {
            bail!(
                "{}: no rollout on channel {c}: no agent has reported on it, and the reporter's manifest copy (if any) has no such channel",
                client.base()
            );
        }
        writeln!(
            out,
            "{}: no rollout yet (no agent has reported an update, and the reporter has no manifest copy)",
            client.base()
        )?;
        return Ok(());
    }
    out.write_all(progress::render(&rollouts).as_bytes())?;
    Ok(())
}
