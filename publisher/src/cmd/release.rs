//! `release add`: upload a build and record it.

use std::path::PathBuf;

use flotilla_publisher::release::{self, AddRelease};
use flotilla_publisher::store::Uploaded;
use flotilla_publisher::Store;
use semver::Version;

use super::Global;

/// Releases: one releases/<version>.toml per release, one artifact per target.
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    Add(AddArgs),
}

/// Upload a build to the store (hashing it on the way) and record it in releases/<version>.toml.
///
/// The object key, and the `path` recorded, is
/// flotilla-agent/<version>/<target>/flotilla-agent unless --path says
/// otherwise. Large files go up in 8 MiB parts; a progress bar shows on a
/// terminal. An object already in the store is never overwritten: the same
/// content is a no-op, different content an error. Without --store the file
/// is only hashed and recorded, and you upload it to the path yourself.
///
/// S3 settings come from the environment: AWS_ENDPOINT_URL (MinIO, Ceph, R2),
/// AWS_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ALLOW_HTTP.
#[derive(clap::Args)]
#[command(after_help = "\
Examples:
  flotilla-publisher release add --version 1.4.0 --target x86_64-unknown-linux-gnu \\
      --file target/release/flotilla-agent --store s3://updates/fleet --notes \"faster downloads\"
  flotilla-publisher release add --version 1.4.0 --target aarch64-unknown-linux-gnu \\
      --file build/aarch64/flotilla-agent --store /srv/flotilla --min-from 1.2.0")]
struct AddArgs {
    /// The release's semantic version.
    #[arg(long, value_name = "V")]
    version: Version,
    /// Target triple the build is for.
    #[arg(long, value_name = "TRIPLE")]
    target: String,
    /// The build to upload.
    #[arg(long, value_name = "PATH")]
    file: PathBuf,
    /// Store to upload to: a directory, file:///dir or s3://bucket/prefix.
    #[arg(long, value_name = "URL")]
    store: Option<String>,
    /// Object key under the store, relative (default: flotilla-agent/<version>/<target>/flotilla-agent).
    #[arg(long, value_name = "REL")]
    path: Option<String>,
    /// Stepping stone: agents older than this update to it first.
    #[arg(long, value_name = "V")]
    min_from: Option<Version>,
    /// Release notes for reviewers.
    #[arg(long, value_name = "TEXT")]
    notes: Option<String>,
}

pub fn run(g: &Global, args: Args) -> anyhow::Result<()> {
    let Command::Add(a) = args.command;
    let store = a.store.as_deref().map(Store::open).transpose()?;
    let added = release::add(
        &g.repo(),
        store.as_ref(),
        &AddRelease {
            version: a.version,
            target: a.target,
            file: &a.file,
            path: a.path,
            min_from: a.min_from,
            notes: a.notes,
        },
    )?;
    let where_ = match (&store, &added.uploaded) {
        (Some(s), Some(Uploaded::New)) => {
            format!("uploaded to {}", s.display(&added.artifact.path))
        }
        (Some(s), _) => format!(
            "already in the store at {}",
            s.display(&added.artifact.path)
        ),
        (None, _) => format!(
            "not uploaded (no --store): upload it to <store>/{}",
            added.artifact.path
        ),
    };
    eprintln!(
        "{} ({} bytes, sha256 {}): {where_}",
        a.file.display(),
        added.artifact.size,
        added.artifact.sha256
    );
    if added.changed {
        eprintln!("recorded in {}", added.file.display());
    } else {
        eprintln!("{} already records it", added.file.display());
    }
    Ok(())
}
