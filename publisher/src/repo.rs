//! The fleet repo on disk: where things live, reading the root chain and the
//! signed manifest, writing files atomically.
//!
//! ```text
//! fleet.toml  releases/<v>.toml  channels/<name>.toml  pins.toml   sources (protocol::sources)
//! root/<N>.root.json                                                root metadata, N = 1, 2, …
//! signed/manifest.json                                              DSSE envelope of the compiled manifest
//! ```
//!
//! Every error names the file relative to the repo, as operators see it in
//! `git status` and in review.

use std::path::{Path, PathBuf};

use flotilla_protocol::{Manifest, Sources};
use flotilla_signing::{Envelope, TrustedRoot};

use crate::{Error, Result};

/// Where the signed manifest lives in the repo.
pub const SIGNED_MANIFEST: &str = "signed/manifest.json";

/// A fleet repo checkout.
#[derive(Clone, Debug)]
pub struct Repo {
    dir: PathBuf,
}

/// The signed manifest as found in the repo, parsed but not verified.
#[derive(Clone, Debug)]
pub struct SignedManifest {
    /// The envelope.
    pub envelope: Envelope,
    /// Its payload.
    pub manifest: Manifest,
}

impl Repo {
    /// The repo at `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Repo { dir: dir.into() }
    }

    /// The repo's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The absolute (or caller-relative) path of `rel`.
    pub fn path(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.dir.join(rel)
    }

    /// `root/<n>.root.json`, relative.
    pub fn root_rel(n: u64) -> PathBuf {
        PathBuf::from(format!("root/{n}.root.json"))
    }

    /// Reads and validates the sources; problems name their files.
    pub fn load_sources(&self) -> Result<Sources> {
        if !self.path("fleet.toml").exists() {
            return Err(Error::file(
                self.path("fleet.toml"),
                "not found: is --repo a fleet repo? (`flotilla-publisher init DIR` makes one)",
            ));
        }
        Ok(Sources::load_dir(&self.dir)?)
    }

    /// The root versions present under `root/`, sorted.
    pub fn root_versions(&self) -> Result<Vec<u64>> {
        let dir = self.path("root");
        let mut out = Vec::new();
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(Error::io(dir, e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| Error::io(&dir, e))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if let Some(n) = name
                .strip_suffix(".root.json")
                .and_then(|n| n.parse::<u64>().ok())
            {
                out.push(n);
            }
        }
        out.sort_unstable();
        Ok(out)
    }

    /// "root/1.root.json: not found; create it with …".
    pub(crate) fn no_root() -> Error {
        Error::file(
            "root/1.root.json",
            "not found; create it with `flotilla-publisher root init`",
        )
    }

    /// The newest root version, or an error saying how to make the first.
    pub fn newest_root(&self) -> Result<u64> {
        self.root_versions()?
            .last()
            .copied()
            .ok_or_else(Self::no_root)
    }

    /// Reads a DSSE envelope at `rel`.
    pub fn read_envelope(&self, rel: &Path) -> Result<Envelope> {
        let bytes = std::fs::read(self.path(rel)).map_err(|e| Error::io(rel, e))?;
        Envelope::from_json(&bytes).map_err(|e| Error::file(rel, e))
    }

    /// Writes a DSSE envelope at `rel` (atomically, mode 0644).
    pub fn write_envelope(&self, rel: &Path, env: &Envelope) -> Result<()> {
        self.write_file(rel, env.to_json_pretty().as_bytes())
    }

    /// Writes `bytes` to `rel` atomically (mode 0644), creating directories.
    pub fn write_file(&self, rel: &Path, bytes: &[u8]) -> Result<()> {
        let path = self.path(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        }
        flotilla_signing::fs::write_atomic(&path, bytes, 0o644).map_err(|e| Error::io(rel, e))
    }

    /// Walks the root chain from `root/1.root.json` (self-signed by a
    /// threshold of its own root keys) through every newer version; each
    /// step must carry a threshold of the old and of the new root keys
    /// ([`crate::history::Snapshot::chain`]). Expiry is not checked here.
    pub fn root_chain(&self) -> Result<TrustedRoot> {
        let chain = crate::history::Snapshot::work_tree(self)?.chain()?;
        chain.into_iter().last().ok_or_else(Self::no_root)
    }

    /// The signed manifest, if `signed/manifest.json` exists. A file that is
    /// not an envelope, or whose payload is not a manifest, is an error
    /// naming the file. Signatures are not checked here.
    pub fn signed_manifest(&self) -> Result<Option<SignedManifest>> {
        let rel = Path::new(SIGNED_MANIFEST);
        let bytes = match std::fs::read(self.path(rel)) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(rel, e)),
        };
        let envelope = Envelope::from_json(&bytes).map_err(|e| {
            Error::file(
                rel,
                format!(
                    "{e}; it is generated: restore it from git or re-run `flotilla-publisher sign`"
                ),
            )
        })?;
        let payload = envelope.payload_bytes().map_err(|e| Error::file(rel, e))?;
        let manifest = Manifest::from_payload(&payload)
            .map_err(|e| Error::file(rel, format!("payload is not a manifest: {e}")))?;
        Ok(Some(SignedManifest { envelope, manifest }))
    }
}

impl Repo {
    /// Replaces the source file `rel` with `text`, then validates the whole
    /// repo; if that fails, the old file is put back and the problems are
    /// returned. `extra` runs further checks on the validated sources.
    pub fn replace_source_validated(
        &self,
        rel: &Path,
        text: &str,
        extra: impl FnOnce(&Sources) -> Result<()>,
    ) -> Result<Sources> {
        let old = match std::fs::read(self.path(rel)) {
            Ok(b) => Some(b),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(Error::io(rel, e)),
        };
        self.write_file(rel, text.as_bytes())?;
        let checked = self.load_sources().and_then(|s| extra(&s).map(|()| s));
        if checked.is_err() {
            match old {
                Some(b) => self.write_file(rel, &b)?,
                None => std::fs::remove_file(self.path(rel)).map_err(|e| Error::io(rel, e))?,
            }
        }
        checked
    }
}
