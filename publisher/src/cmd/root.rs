//! `root init|sign|rotate`: root metadata.

use std::path::PathBuf;

use anyhow::Context;
use flotilla_publisher::roots::{self, RoleSpec};
use flotilla_publisher::spec;
use flotilla_signing::{PrivateKey, PublicKey};

use super::Global;

/// Root metadata: the root keys (sign rotations) and release keys (sign manifests).
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    Init(InitArgs),
    Sign(SignArgs),
    Rotate(RotateArgs),
}

/// Write root/1.root.json (unsigned); every root key holder then runs `root sign`.
#[derive(clap::Args)]
#[command(after_help = "\
Examples:
  flotilla-publisher root init --root-key alice.pub.pem --root-key bob.pub.pem --root-threshold 2 \\
      --release-key ci.pub.pem --expires 365d
  flotilla-publisher root sign --key ~/keys/alice.pem")]
struct InitArgs {
    /// Public key (SPKI PEM) of a root key holder; repeat for each.
    #[arg(long = "root-key", value_name = "PUB", required = true)]
    root_keys: Vec<PathBuf>,
    /// How many root keys must sign a rotation [default: 1].
    #[arg(long, value_name = "N")]
    root_threshold: Option<u32>,
    /// Public key of a release signer (a person or CI); repeat for each.
    #[arg(long = "release-key", value_name = "PUB", required = true)]
    release_keys: Vec<PathBuf>,
    /// How many release keys must sign a manifest [default: 1].
    #[arg(long, value_name = "N")]
    release_threshold: Option<u32>,
    /// How long the root stays valid.
    #[arg(long, value_name = "DURATION", default_value = "365d")]
    expires: String,
}

/// Add your signature to the newest root (or --version N).
///
/// The key must be a root key of that root, or of the one before it (a
/// rotation needs both the old and the new root keys).
#[derive(clap::Args)]
#[command(after_help = "\
Examples:
  flotilla-publisher root sign --key ~/keys/root-alice.pem
  flotilla-publisher root sign --key ~/keys/root-alice.pem --version 2")]
struct SignArgs {
    /// Your private key (PKCS#8 PEM, mode 0600).
    #[arg(long, value_name = "KEY.pem")]
    key: PathBuf,
    /// Which root version to sign [default: the newest].
    #[arg(long, value_name = "N")]
    version: Option<u64>,
}

/// Write the next root version (unsigned) with new keys, thresholds or expiry.
///
/// Roles not given keep their keys; thresholds not given keep theirs. The
/// holders of the current root keys and of the new root keys then each run
/// `root sign`; agents accept the rotation only with both thresholds.
#[derive(clap::Args)]
#[command(after_help = "\
Examples:
  flotilla-publisher root rotate --release-key new-ci.pub.pem          # replace the CI key
  flotilla-publisher root rotate --expires 365d                        # renew before expiry
  flotilla-publisher root rotate --root-key carol.pub.pem --root-key dave.pub.pem --root-threshold 2")]
struct RotateArgs {
    /// New root public keys (replace the current ones); repeat for each.
    #[arg(long = "root-key", value_name = "PUB")]
    root_keys: Vec<PathBuf>,
    /// New root threshold.
    #[arg(long, value_name = "N")]
    root_threshold: Option<u32>,
    /// New release public keys (replace the current ones); repeat for each.
    #[arg(long = "release-key", value_name = "PUB")]
    release_keys: Vec<PathBuf>,
    /// New release threshold.
    #[arg(long, value_name = "N")]
    release_threshold: Option<u32>,
    /// How long the new root stays valid.
    #[arg(long, value_name = "DURATION", default_value = "365d")]
    expires: String,
}

fn load_keys(paths: &[PathBuf]) -> anyhow::Result<Vec<PublicKey>> {
    paths
        .iter()
        .map(|p| PublicKey::load(p).map_err(anyhow::Error::from))
        .collect()
}

fn role(keys: &[PathBuf], threshold: Option<u32>) -> anyhow::Result<Option<RoleSpec>> {
    if keys.is_empty() && threshold.is_none() {
        return Ok(None);
    }
    Ok(Some(RoleSpec {
        keys: load_keys(keys)?,
        threshold,
    }))
}

pub fn run(g: &Global, args: Args) -> anyhow::Result<()> {
    let repo = g.repo();
    let now = g.now()?;
    match args.command {
        Command::Init(a) => {
            let expires = now + spec::duration(&a.expires)?.to_chrono();
            let root = role(&a.root_keys, a.root_threshold)?.expect("required");
            let release = role(&a.release_keys, a.release_threshold)?.expect("required");
            let rel = roots::init(&repo, &root, &release, expires)?;
            eprintln!(
                "wrote {} (unsigned; expires {}); each root key holder now runs `flotilla-publisher root sign --key KEY.pem`",
                rel.display(),
                expires.to_rfc3339()
            );
        }
        Command::Sign(a) => {
            let key = PrivateKey::load(&a.key)?;
            let st = roots::sign(&repo, &key, a.version)
                .with_context(|| format!("signing with {}", a.key.display()))?;
            eprintln!(
                "signed {} with key {}",
                st.file.display(),
                key.key_id().short()
            );
            eprintln!("  its own root keys: {}", st.own);
            if let Some(p) = st.previous {
                eprintln!("  the previous root's root keys: {p}");
            }
        }
        Command::Rotate(a) => {
            let expires = now + spec::duration(&a.expires)?.to_chrono();
            let root = role(&a.root_keys, a.root_threshold)?;
            let release = role(&a.release_keys, a.release_threshold)?;
            let rel = roots::rotate(&repo, root.as_ref(), release.as_ref(), expires)?;
            eprintln!(
                "wrote {} (unsigned); holders of the current and of the new root keys each run `flotilla-publisher root sign`",
                rel.display()
            );
        }
    }
    Ok(())
}
