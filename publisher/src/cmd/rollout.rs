//! `rollout set|pause|resume`: what a channel rolls out, and how fast.

use flotilla_protocol::DowngradePolicy;
use flotilla_publisher::rollout::{self, RolloutSpec};
use flotilla_publisher::spec;
use semver::Version;

use super::Global;

/// Channels: which release each rolls out, in which waves.
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    Set(SetArgs),
    /// Pause a channel: its agents stay on the release they run, none starts
    /// the update (sets `paused = true` in channels/<channel>.toml).
    Pause(ChannelArgs),
    /// Resume a paused channel: its waves go on from where their times say
    /// (removes `paused` from channels/<channel>.toml).
    Resume(ChannelArgs),
}

/// Point a channel at a release: writes channels/<channel>.toml (comments kept).
///
/// Waves are `name=percent%@after/spread`, percents cumulative and ending at
/// 100, `after` measured from --start; each agent's turn falls evenly within
/// its wave's spread. Without --waves, an existing channel keeps its waves and
/// a new one gets canary=5%@0s/1h,early=25%@1d/6h,all=100%@3d/12h.
/// --allow-downgrade applies to this rollout only; it is removed otherwise.
#[derive(clap::Args)]
#[command(after_help = "\
Examples:
  flotilla-publisher rollout set --channel stable --release 1.4.0
  flotilla-publisher rollout set --channel stable --release 1.4.0 \\
      --start 2026-05-04T08:00:00Z --waves \"canary=1%@0s/2h,half=50%@1d/12h,all=100%@2d/12h\" \\
      --max-failure-rate 0.05 --min-reports 3
  flotilla-publisher rollout set --channel stable --release 1.3.2 --allow-downgrade   # roll back")]
struct SetArgs {
    /// The channel (channels/<name>.toml).
    #[arg(long, value_name = "C")]
    channel: String,
    /// The release to roll out (releases/<V>.toml must exist).
    #[arg(long, value_name = "V")]
    release: Version,
    /// When the rollout starts: `now` or an RFC 3339 time.
    #[arg(long, value_name = "now|RFC3339", default_value = "now")]
    start: String,
    /// The waves, e.g. "canary=5%@0s/1h,early=25%@1d/6h,all=100%@3d/12h".
    #[arg(long, value_name = "WAVES")]
    waves: Option<String>,
    /// Halt: the reporter's gate closes above this failure rate (0.0-1.0) …
    #[arg(long, value_name = "RATE")]
    max_failure_rate: Option<f64>,
    /// … once at least this many agents have reported on the release.
    #[arg(long, value_name = "N")]
    min_reports: Option<u32>,
    /// Let agents move down to this release (a deliberate rollback).
    #[arg(long)]
    allow_downgrade: bool,
}

/// The channel to pause or resume.
#[derive(clap::Args)]
#[command(after_help = "\
Examples:
  flotilla-publisher rollout pause --channel stable
  flotilla-publisher rollout resume --channel stable")]
struct ChannelArgs {
    /// The channel (channels/<name>.toml).
    #[arg(long, value_name = "C")]
    channel: String,
}

pub fn run(g: &Global, args: Args) -> anyhow::Result<()> {
    let repo = g.repo();
    match args.command {
        Command::Set(a) => {
            let spec = RolloutSpec {
                release: a.release,
                start: spec::start(&a.start, g.now()?)?,
                waves: a.waves.as_deref().map(spec::waves).transpose()?,
                max_failure_rate: a.max_failure_rate,
                min_reports: a.min_reports,
                allow_downgrade: if a.allow_downgrade {
                    DowngradePolicy::Allow
                } else {
                    DowngradePolicy::Refuse
                },
            };
            let rel = rollout::set(&repo, &a.channel, &spec)?;
            eprintln!(
                "{}: rolls out {} from {}; review, commit and open a pull request",
                rel.display(),
                spec.release,
                spec.start.to_rfc3339()
            );
        }
        Command::Pause(a) => {
            let rel = rollout::set_paused(&repo, &a.channel, true)?;
            eprintln!(
                "{}: paused (takes effect once signed and published)",
                rel.display()
            );
        }
        Command::Resume(a) => {
            let rel = rollout::set_paused(&repo, &a.channel, false)?;
            eprintln!(
                "{}: resumed (takes effect once signed and published)",
                rel.display()
            );
        }
    }
    Ok(())
}
