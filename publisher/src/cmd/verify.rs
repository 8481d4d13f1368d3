//! `verify`: the checks CI runs.

use flotilla_publisher::history::Snapshot;
use flotilla_publisher::verify::{self, Options, Scope};
use flotilla_publisher::{git_sources, Store};

use super::status::ReporterArgs;
use super::{Global, Problems};

/// Check the fleet repo; prints one line per problem and fails if there is any.
///
/// Always: the sources validate (unknown fields, waves, artifact paths,
/// hashes, references), and no channel moves below the release in
/// signed/manifest.json unless it sets allow_downgrade. Unless --sources:
/// the root chain verifies and has not expired, signed/manifest.json carries
/// the release threshold, has not expired, and matches the sources (no
/// unsigned change). --check-artifacts streams every artifact from the store
/// and compares size and SHA-256 with what was signed.
///
/// --base (every pull request) compares with the base revision: an
/// existing root/N.root.json must not change, a new one must chain from the
/// one before, and nothing under signed/ may be edited (it is CI's to
/// write); the one exception is a signed/manifest.json that carries the
/// release threshold with a serial at most 1000 above the base's (co-signers
/// sign in the pull request).
///
/// --reporter also warns (without failing) about waves too thin for the
/// halt gate to judge, as `plan` does: a wave before the last whose known
/// agents, with those of the waves before it, number fewer than the
/// channel's min_reports.
#[derive(clap::Args)]
#[command(after_help = "\
Examples:
  flotilla-publisher verify --sources --base                 # a pull request, vs. its merge-base
  flotilla-publisher verify --sources --base origin/release  # … with another base
  flotilla-publisher verify --check-artifacts --store s3://updates/fleet  # everything
  flotilla-publisher verify --sources --reporter https://reporter.example.com  # + thin waves")]
pub struct Args {
    /// Check the sources alone (before signing).
    #[arg(long)]
    sources: bool,
    /// Also check every artifact in the store (needs --store).
    #[arg(long, requires = "store")]
    check_artifacts: bool,
    /// The store: a directory, file:///dir or s3://bucket/prefix.
    #[arg(long, value_name = "URL")]
    store: Option<String>,
    /// Check the change against this git revision (a pull request's base):
    /// no existing root changed, new roots chain, nothing under signed/
    /// edited. Without REF: the merge-base of HEAD and origin/main (else main).
    #[arg(long, value_name = "REF", num_args = 0..=1, default_missing_value = "")]
    base: Option<String>,
    /// Also warn about waves too thin for the halt gate to judge, counting
    /// the agents this reporter knows (as `plan` does; a read token is
    /// enough). Without it, verify asks no reporter.
    #[arg(long, value_name = "URL")]
    reporter: Option<String>,
    /// A file holding a reporter token (read or admin); refused unless mode
    /// 0600 [default: the FLOTILLA_REPORTER_TOKEN environment variable].
    #[arg(long, value_name = "F", requires = "reporter")]
    token_file: Option<std::path::PathBuf>,
}

pub fn run(g: &Global, args: Args) -> anyhow::Result<()> {
    let store = match (&args.store, args.check_artifacts) {
        (Some(url), true) => Some(Store::open(url)?),
        _ => None,
    };
    let repo = g.repo();
    let base = match args.base.as_deref() {
        None => None,
        Some("") => Some(git_sources::default_base(repo.dir())?),
        Some(r) => Some(git_sources::resolve(repo.dir(), r)?),
    }
    .map(|rev| Snapshot::at_revision(repo.dir(), &rev))
    .transpose()?;
    let problems = verify::verify(
        &repo,
        &Options {
            scope: if args.sources {
                Scope::Sources
            } else {
                Scope::Full
            },
            artifacts: store.as_ref(),
            base: base.as_ref(),
            now: g.now()?,
        },
    );
    if let Some(url) = &args.reporter {
        let client = ReporterArgs {
            reporter: Some(url.clone()),
            token_file: args.token_file.clone(),
        }
        .client(|| Ok(None))?;
        // Sources that do not load are already a problem above.
        if let Ok(sources) = repo.load_sources() {
            for w in verify::thin_waves(&sources, &client.agents()?, g.now()?) {
                eprintln!("WARNING: {w}");
            }
        }
    }
    if !problems.is_empty() {
        return Err(Problems(problems).into());
    }
    eprintln!("ok");
    Ok(())
}
