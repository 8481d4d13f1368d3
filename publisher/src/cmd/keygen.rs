//! `keygen`: a new Ed25519 key pair.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use anyhow::bail;
use flotilla_signing::PrivateKey;

use super::Global;

/// Make a new Ed25519 key: KEY.pem (private, mode 0600) and KEY.pub.pem.
///
/// Prints the key id (hex SHA-256 of the public key) on stdout. Never
/// overwrites an existing file. Keys from `openssl genpkey -algorithm
/// ed25519` work as well.
#[derive(clap::Args)]
#[command(after_help = "\
Examples:
  flotilla-publisher keygen --out ~/keys/release-alice.pem
  # writes ~/keys/release-alice.pem and ~/keys/release-alice.pub.pem")]
pub struct Args {
    /// Where to write the private key; the public key goes next to it as *.pub.pem.
    #[arg(long, value_name = "KEY.pem")]
    pub out: PathBuf,
}

/// `x.pem` -> `x.pub.pem`; anything else gets `.pub.pem` appended.
pub fn public_path(private: &Path) -> PathBuf {
    let s = private.to_string_lossy();
    match s.strip_suffix(".pem") {
        Some(stem) => PathBuf::from(format!("{stem}.pub.pem")),
        None => PathBuf::from(format!("{s}.pub.pem")),
    }
}

pub fn run(_: &Global, args: Args) -> anyhow::Result<()> {
    let public = public_path(&args.out);
    if public.exists() {
        bail!(
            "{}: already exists; refusing to overwrite it",
            public.display()
        );
    }
    if let Some(dir) = args.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            // A new key directory is private to its owner.
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| anyhow::anyhow!("creating {}: {e}", dir.display()))?;
        }
    }
    let key = PrivateKey::generate();
    key.save(&args.out)?;
    key.public_key().save(&public)?;
    eprintln!(
        "wrote {} (private, mode 0600) and {}",
        args.out.display(),
        public.display()
    );
    println!("{}", key.key_id());
    Ok(())
}
