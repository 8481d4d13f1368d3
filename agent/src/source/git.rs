//! The fleet repo as a source, through git2 (libgit2, built into the binary).
//!
//! 1. Open (or create) the bare mirror `state_dir/fleet.git`. Nothing is ever
//!    checked out: the agent only reads blobs.
//! 2. Fetch `refs/heads/<branch>` into `refs/remotes/origin/<branch>`, with
//!    depth 1 (shallow) where the transport supports it; libgit2's local
//!    transport (`file://`) does not, and is fetched whole (it is local).
//! 3. If the branch tip is the commit of the last accepted manifest, report
//!    [`Fetched::Unchanged`]. Otherwise read the blob `signed/manifest.json`
//!    from the tip commit's tree; [`GitSource::root`] reads
//!    `root/<n>.root.json` from the same tree. A blob's size is read from
//!    its object header first: one larger than [`MAX_METADATA`] is refused
//!    without being loaded.
//!
//! Over the network, libgit2 reads through [`super::git_stream`]: a server
//! that sends anything (advertisement, negotiation, pack) slower than
//! `update.min_rate`, or stalls for `stall_timeout`, is abandoned.

use std::path::{Path, PathBuf};

use git2::{AutotagOption, FetchOptions, ObjectType, Oid, Repository};

use super::git_stream::{self, Limits};
use super::{Fetched, ManifestSource, MAX_METADATA};
use crate::error::{Error, Result, Transfer};

/// A fleet repo reached with git2.
pub struct GitSource {
    url: String,
    branch: String,
    dir: PathBuf,
    last_commit: Option<String>,
    limits: Limits,
    repo: Option<Repository>,
    tip: Option<Oid>,
}

impl GitSource {
    /// A source for `url`'s `branch`, mirrored in `dir`. `last_commit` is the
    /// commit of the last accepted manifest (if its cached copy exists).
    pub(crate) fn new(
        url: &str,
        branch: &str,
        dir: &Path,
        last_commit: Option<&str>,
        limits: Limits,
    ) -> Self {
        GitSource {
            url: url.to_owned(),
            branch: branch.to_owned(),
            dir: dir.to_owned(),
            last_commit: last_commit.map(str::to_owned),
            limits,
            repo: None,
            tip: None,
        }
    }

    fn err(&self, source: git2::Error) -> Error {
        Error::Git {
            url: self.url.clone(),
            source,
        }
    }

    fn refused(&self, reason: String) -> Error {
        Error::Fetch {
            url: self.url.clone(),
            source: Transfer::Refused(reason),
        }
    }

    fn open_repo(&self) -> Result<Repository> {
        match Repository::open_bare(&self.dir) {
            Ok(r) => Ok(r),
            Err(_) => {
                // Missing or half-created mirror: start it again.
                let _ = std::fs::remove_dir_all(&self.dir);
                Repository::init_bare(&self.dir).map_err(|e| self.err(e))
            }
        }
    }

    fn blob(&self, path: &str) -> Result<Option<Vec<u8>>> {
        let (Some(repo), Some(tip)) = (&self.repo, self.tip) else {
            return Ok(None);
        };
        let tree = repo
            .find_commit(tip)
            .and_then(|c| c.tree())
            .map_err(|e| self.err(e))?;
        let entry = match tree.get_path(Path::new(path)) {
            Ok(e) => e,
            Err(e) if e.code() == git2::ErrorCode::NotFound => return Ok(None),
            Err(e) => return Err(self.err(e)),
        };
        if entry.kind() != Some(ObjectType::Blob) {
            return Ok(None);
        }
        let odb = repo.odb().map_err(|e| self.err(e))?;
        let (size, _) = odb.read_header(entry.id()).map_err(|e| self.err(e))?;
        if size as u64 > MAX_METADATA {
            return Err(self.refused(format!(
                "{path} in commit {tip} is {size} bytes, larger than {MAX_METADATA} bytes; not read"
            )));
        }
        let blob = repo.find_blob(entry.id()).map_err(|e| self.err(e))?;
        Ok(Some(blob.content().to_vec()))
    }
}

impl ManifestSource for GitSource {
    fn fetch(&mut self) -> Result<Fetched> {
        git_stream::install(self.limits).map_err(|reason| self.refused(reason))?;
        let repo = self.open_repo()?;
        let refspec = format!("+refs/heads/{b}:refs/remotes/origin/{b}", b = self.branch);
        let local = self.url.starts_with("file://");
        {
            let mut remote = repo.remote_anonymous(&self.url).map_err(|e| self.err(e))?;
            let mut opts = FetchOptions::new();
            opts.download_tags(AutotagOption::None);
            if !local {
                opts.depth(1);
            }
            let _ = git_stream::take_too_slow();
            let fetched = remote.fetch(&[&refspec], Some(&mut opts), None);
            if let Some(slow) = git_stream::take_too_slow() {
                return Err(Error::Fetch {
                    url: self.url.clone(),
                    source: slow.into(),
                });
            }
            fetched.map_err(|e| self.err(e))?;
        }
        let tip = repo
            .refname_to_id(&format!("refs/remotes/origin/{}", self.branch))
            .map_err(|e| self.err(e))?;
        self.tip = Some(tip);
        self.repo = Some(repo);
        if self.last_commit.as_deref() == Some(tip.to_string().as_str()) {
            return Ok(Fetched::Unchanged);
        }
        match self.blob("signed/manifest.json")? {
            Some(envelope) => Ok(Fetched::New {
                envelope,
                origin: tip.to_string(),
            }),
            None => Err(self.refused(format!(
                "commit {tip} of branch {} has no signed/manifest.json (run `flotilla-publisher sign`)",
                self.branch
            ))),
        }
    }

    fn root(&mut self, n: u64) -> Result<Option<Vec<u8>>> {
        self.blob(&format!("root/{n}.root.json"))
    }

    fn accepted(&mut self) -> Result<()> {
        Ok(())
    }

    fn commit(&self) -> Option<String> {
        self.tip.map(|t| t.to_string())
    }
}
