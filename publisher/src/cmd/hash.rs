//! `hash` (hidden): the streaming hasher on a file, for `scripts/bench`.

use std::path::PathBuf;

use super::Global;

/// Print the SHA-256 and size of a file, streamed (benchmarks, debugging).
#[derive(clap::Args)]
pub struct Args {
    /// The file.
    pub file: PathBuf,
}

pub fn run(_: &Global, args: Args) -> anyhow::Result<()> {
    let sum = flotilla_publisher::store::hash_file(&args.file)?;
    println!("{}  {}  {}", sum.sha256, sum.size, args.file.display());
    Ok(())
}
