//! `init`: a new fleet repo from the embedded template.

use std::path::PathBuf;

use super::Global;

/// Create a new fleet repo from the template, as a git repo with a first commit.
///
/// Lays down fleet.toml, pins.toml, root/, releases/, channels/ (with an
/// example), an operator README and CI workflows for GitHub Actions and
/// GitLab CI, then runs `git init` and commits. Needs the git command line.
#[derive(clap::Args)]
#[command(after_help = "\
Examples:
  flotilla-publisher init fleet --fleet prod
  cd fleet && flotilla-publisher keygen --out ~/keys/root-alice.pem")]
pub struct Args {
    /// Directory to create (must not exist, or be empty).
    pub dir: PathBuf,
    /// The fleet's name (default: the directory's name).
    #[arg(long, value_name = "NAME")]
    pub fleet: Option<String>,
}

pub fn run(_: &Global, args: Args) -> anyhow::Result<()> {
    let fleet = flotilla_publisher::template::init(&args.dir, args.fleet.as_deref())?;
    eprintln!(
        "created fleet repo {:?} in {} (first commit made)\nnext: make keys with `flotilla-publisher keygen`, then `flotilla-publisher root init` (see README.md)",
        fleet,
        args.dir.display()
    );
    Ok(())
}
