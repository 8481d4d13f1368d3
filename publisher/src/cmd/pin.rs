//! `pin add|remove|list`: pins.toml.

use std::io::Write;

use anyhow::bail;
use flotilla_protocol::Pin;
use flotilla_publisher::pins::{self, PinSelector};
use semver::Version;

use super::Global;

/// Pins: hold agents on a release or move them to another channel (pins.toml).
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    Add(AddArgs),
    Remove(RemoveArgs),
    /// List the pins of pins.toml in order, with the INDEX `pin remove`
    /// takes (the first pin that matches an agent wins).
    List,
}

/// Add a pin; the first matching pin wins.
#[derive(clap::Args)]
#[command(after_help = "\
Examples:
  flotilla-publisher pin add --agent db-01 --agent db-02 --release 1.3.2 --note \"waits for the schema migration\"
  flotilla-publisher pin add --label site=ams1 --channel beta")]
struct AddArgs {
    /// Agent id the pin applies to; repeat for more.
    #[arg(long = "agent", value_name = "ID")]
    agents: Vec<String>,
    /// Label key=value an agent must carry (all given must match); repeat for more.
    #[arg(long = "label", value_name = "KEY=VALUE")]
    labels: Vec<String>,
    /// Hold matching agents on this release …
    #[arg(long, value_name = "V", conflicts_with = "channel")]
    release: Option<Version>,
    /// … or make them follow this channel.
    #[arg(long, value_name = "C")]
    channel: Option<String>,
    /// Why, for the reviewer.
    #[arg(long, value_name = "TEXT")]
    note: Option<String>,
}

/// Remove a pin by its index (see `pin list`), or an agent from every pin.
#[derive(clap::Args)]
#[command(after_help = "\
Examples:
  flotilla-publisher pin remove 0
  flotilla-publisher pin remove --agent db-01")]
struct RemoveArgs {
    /// Index of the pin, as `pin list` shows it.
    #[arg(
        value_name = "INDEX",
        required_unless_present = "agent",
        conflicts_with = "agent"
    )]
    index: Option<usize>,
    /// Remove this agent from every pin (pins left empty go).
    #[arg(long, value_name = "ID")]
    agent: Option<String>,
}

pub fn run(g: &Global, args: Args) -> anyhow::Result<()> {
    let repo = g.repo();
    match args.command {
        Command::Add(a) => {
            if a.agents.is_empty() && a.labels.is_empty() {
                bail!("a pin needs --agent or --label");
            }
            if a.release.is_none() && a.channel.is_none() {
                bail!("a pin needs --release or --channel");
            }
            let pin = Pin {
                agents: a.agents,
                labels: pins::parse_labels(&a.labels)?,
                release: a.release,
                channel: a.channel,
                note: a.note,
            };
            let i = pins::add(&repo, &pin)?;
            eprintln!("pins.toml: added pin {i}: {}", pins::describe(&pin));
        }
        Command::Remove(a) => {
            let which = match (a.index, a.agent) {
                (Some(i), _) => PinSelector::Index(i),
                (None, Some(agent)) => PinSelector::Agent(agent),
                (None, None) => bail!("give a pin INDEX or --agent ID"),
            };
            let n = pins::remove(&repo, &which)?;
            eprintln!("pins.toml: {n} pin(s) changed");
        }
        Command::List => {
            let mut out = std::io::stdout().lock();
            for (i, p) in pins::list(&repo)?.iter().enumerate() {
                writeln!(out, "{i}  {}", pins::describe(p))?;
            }
        }
    }
    Ok(())
}
