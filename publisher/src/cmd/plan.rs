//! `plan`: which agents a change of the fleet repo moves, wave by wave, and
//! when; see `flotilla_publisher::plan`.

use std::io::Write;

use anyhow::Context;
use flotilla_publisher::git_sources::{self, Revision};
use flotilla_publisher::plan::{self, Context as PlanContext};
use flotilla_publisher::plan_text;

use super::status::ReporterArgs;
use super::Global;

/// What a change (a pull request) does to the fleet: which agents each
/// changed channel or pin moves, wave by wave, and when.
///
/// Compares the fleet repo's sources in the work tree (or --head) with a
/// base revision (by default where the branch left origin/main), and applies
/// both to every agent the reporter knows: its id, labels, running version
/// and channel. Per changed channel it shows the release change (from → to)
/// and the changed settings, then per wave when the wave opens, its spread,
/// and the agents that will move in it, each with the instant it becomes
/// eligible, computed with the same wave function the agents use. Release
/// pins list the agents they move at once. Agents already on the release,
/// pinned elsewhere or untouched by the change are counted, not listed.
///
/// The halt gate is not predicted (it can only stop agents), and agents that
/// never enrolled with the reporter are not known to it. Reads need the
/// reporter's admin token; the base is read with `git` (no checkout).
#[derive(clap::Args)]
#[command(after_help = "\
Examples:
  flotilla-publisher plan --reporter https://reporter.example.com --token-file admin.token
  flotilla-publisher plan --base origin/main --head HEAD --all
  flotilla-publisher plan --base HEAD~1 --json > plan.json    # for a CI comment bot")]
pub struct Args {
    #[command(flatten)]
    reporter: ReporterArgs,
    /// The revision to compare with [default: the merge-base of HEAD and
    /// origin/main, else of HEAD and main].
    #[arg(long, value_name = "REF")]
    base: Option<String>,
    /// The revision of the change [default: the work tree, uncommitted
    /// edits included].
    #[arg(long, value_name = "REF")]
    head: Option<String>,
    /// List every agent (default: the first 10 per wave, then "… and N more").
    #[arg(long)]
    all: bool,
    /// Print the plan as JSON instead of text.
    #[arg(long)]
    json: bool,
}

pub fn run(g: &Global, args: Args) -> anyhow::Result<()> {
    let repo = g.repo();
    let dir = repo.dir();
    let (head, head_label) = match &args.head {
        Some(r) => {
            let rev = git_sources::resolve(dir, r)?;
            let s = git_sources::sources_at(dir, &rev)?
                .with_context(|| format!("{}: no fleet.toml there", rev.describe()))?;
            (s, rev.describe())
        }
        None => (
            repo.load_sources()?,
            format!(
                "the work tree of {}",
                std::fs::canonicalize(dir)
                    .unwrap_or_else(|_| dir.to_owned())
                    .display()
            ),
        ),
    };
    let base_rev: Revision = match &args.base {
        Some(r) => git_sources::resolve(dir, r)?,
        None => git_sources::default_base(dir)?,
    };
    let base = git_sources::sources_at(dir, &base_rev)?;
    let client = args
        .reporter
        .client(|| Ok(head.fleet.reporter_url.clone()))?;
    let agents = client.agents()?;
    let ctx = PlanContext {
        base: match &base {
            Some(_) => base_rev.describe(),
            None => format!("{} (no fleet repo there yet)", base_rev.describe()),
        },
        head: head_label,
        reporter: client.base().to_string(),
        now: g.now()?,
    };
    let plan = plan::compute(&ctx, base.as_ref(), &head, &agents);
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &plan)?;
        writeln!(out)?;
    } else {
        out.write_all(plan_text::render(&plan, args.all).as_bytes())?;
    }
    Ok(())
}
