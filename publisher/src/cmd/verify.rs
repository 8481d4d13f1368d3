//! `verify`: the checks CI runs.

use flotilla_publisher::verify::{self, Options, Scope};
use flotilla_publisher::Store;

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
#[derive(clap::Args)]
#[command(after_help = "\
Examples:
  flotilla-publisher verify --sources                                   # before signing, in a pull request
  flotilla-publisher verify --check-artifacts --store s3://updates/fleet  # everything")]
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
}

pub fn run(g: &Global, args: Args) -> anyhow::Result<()> {
    let store = match (&args.store, args.check_artifacts) {
        (Some(url), true) => Some(Store::open(url)?),
        _ => None,
    };
    let problems = verify::verify(
        &g.repo(),
        &Options {
            scope: if args.sources {
                Scope::Sources
            } else {
                Scope::Full
            },
            artifacts: store.as_ref(),
            now: g.now()?,
        },
    );
    if !problems.is_empty() {
        return Err(Problems(problems).into());
    }
    eprintln!("ok");
    Ok(())
}
