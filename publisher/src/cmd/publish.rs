//! `publish`: roots and the signed manifest to the store.

use flotilla_publisher::{publish, Store};

use super::Global;

/// Upload root/*.root.json and signed/manifest.json to the store, for agents that pull over HTTP.
///
/// Runs the full `verify` first and uploads nothing if it fails. Layout:
/// <store>/manifest.json and <store>/root/<N>.root.json, next to the
/// artifacts at <store>/flotilla-agent/<version>/<target>/flotilla-agent.
/// Refuses to replace a newer manifest in the store (a stale checkout).
#[derive(clap::Args)]
#[command(after_help = "\
Examples:
  flotilla-publisher publish --store s3://updates/fleet
  flotilla-publisher publish --store /srv/www/fleet")]
pub struct Args {
    /// The store: a directory, file:///dir or s3://bucket/prefix.
    #[arg(long, value_name = "URL")]
    store: String,
}

pub fn run(g: &Global, args: Args) -> anyhow::Result<()> {
    let store = Store::open(&args.store)?;
    let p = publish::publish(&g.repo(), &store, g.now()?)?;
    eprintln!(
        "published manifest serial {} and root 1..{} to {}",
        p.serial, p.roots, p.manifest_url
    );
    Ok(())
}
