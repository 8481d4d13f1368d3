//! `sign`: compile the sources and sign the manifest.

use std::path::PathBuf;

use anyhow::Context;
use flotilla_publisher::history::Snapshot;
use flotilla_publisher::sign::{self, Mode};
use flotilla_publisher::{git_sources, spec, Store};
use flotilla_signing::PrivateKey;

use super::Global;

/// Compile the sources into the manifest and sign it: signed/manifest.json.
///
/// The serial is one above the last signed manifest's, so agents can refuse
/// replays; "signed" means it carries the release threshold of the root
/// chain (in the work tree, the --store's published copy, or at --base):
/// edited bytes never set the serial. A serial more than 1000 above the last
/// verified one is refused without --allow-serial-jump. Refuses to move a channel below its last signed release unless
/// the channel sets allow_downgrade. With --append, adds your co-signature to
/// the existing manifest instead, after checking it is exactly what the
/// current sources compile to (the two-person rule for a release threshold
/// of 2). With --if-needed (CI), signs only when the signed manifest is
/// missing, differs from the sources, or expires within --renew-before.
#[derive(clap::Args)]
#[command(after_help = "\
Examples:
  flotilla-publisher sign --key ~/keys/release-alice.pem
  flotilla-publisher sign --append --key ~/keys/release-bob.pem      # second signer
  # CI after a merge: sign if needed, after the serial published in the store
  flotilla-publisher sign --key \"$KEYFILE\" --if-needed --renew-before 7d --store s3://updates/fleet")]
pub struct Args {
    /// Your release key (PKCS#8 PEM, mode 0600).
    #[arg(long, value_name = "KEY.pem")]
    key: PathBuf,
    /// How long the manifest stays valid [default: fleet.toml's manifest_expires].
    #[arg(long, value_name = "DURATION", conflicts_with = "append")]
    expires: Option<String>,
    /// Co-sign the existing signed/manifest.json instead of signing a new one.
    #[arg(long)]
    append: bool,
    /// Sign only if the manifest is missing, out of date, or expiring soon.
    #[arg(long, conflicts_with = "append")]
    if_needed: bool,
    /// With --if-needed: re-sign when the manifest expires within this long.
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "7d",
        requires = "if_needed"
    )]
    renew_before: String,
    /// Also take the last serial from the manifest published in this store
    /// (a directory, file:///dir or s3://bucket/prefix), if it verifies.
    #[arg(long, value_name = "URL")]
    store: Option<String>,
    /// Also take the last serial from signed/manifest.json at this git
    /// revision, if it verifies [default: the merge-base of HEAD and
    /// origin/main, else main, when there is one].
    #[arg(long, value_name = "REF")]
    base: Option<String>,
    /// Sign even if the serial jumps by more than 1000 over the last
    /// verified one (a jump agents can never come back from).
    #[arg(long)]
    allow_serial_jump: bool,
}

pub fn run(g: &Global, args: Args) -> anyhow::Result<()> {
    let key = PrivateKey::load(&args.key)?;
    let expires = args.expires.as_deref().map(spec::duration).transpose()?;
    let mode = if args.append {
        Mode::Append
    } else if args.if_needed {
        Mode::IfNeeded(spec::duration(&args.renew_before)?)
    } else {
        Mode::New
    };
    let repo = g.repo();
    let mut history = Vec::new();
    if let Some(url) = &args.store {
        history.push(Snapshot::in_store(&Store::open(url)?)?);
    }
    let base = match &args.base {
        Some(r) => Some(git_sources::resolve(repo.dir(), r)?),
        // Outside git, or without main: nothing to compare with.
        None => git_sources::default_base(repo.dir()).ok(),
    };
    if let Some(rev) = base {
        history.push(Snapshot::at_revision(repo.dir(), &rev)?);
    }
    let opts = sign::Options {
        expires_in: expires,
        mode,
        history: &history,
        allow_serial_jump: args.allow_serial_jump,
        now: g.now()?,
    };
    let s = sign::sign(&repo, &key, &opts)
        .with_context(|| format!("signing with {}", args.key.display()))?;
    if s.changed {
        eprintln!(
            "signed/manifest.json: serial {}, expires {}, signed by {}; release keys: {}",
            s.serial,
            s.expires.to_rfc3339(),
            key.key_id().short(),
            s.status
        );
    } else {
        eprintln!(
            "signed/manifest.json: serial {} is up to date (expires {}); nothing to sign",
            s.serial,
            s.expires.to_rfc3339()
        );
    }
    Ok(())
}
