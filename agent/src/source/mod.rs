//! Where the signed manifest and the root chain come from.
//!
//! Two kinds of source, one interface: [`ManifestSource::fetch`] says whether
//! anything changed since the last accepted manifest and, if so, hands over
//! the envelope bytes of `signed/manifest.json`; [`ManifestSource::root`]
//! reads `root/<n>.root.json` from the same snapshot (the same git commit, or
//! the same HTTP base URL). Nothing here is trusted: [`crate::trust`] checks it.
//!
//! Either source caps each document at [`MAX_METADATA`] bytes and abandons a
//! transfer slower than `update.min_rate` ([`crate::http::MinRate`]).

pub mod git;
mod git_stream;
pub mod http;

/// Largest manifest or root document accepted, from any source.
pub const MAX_METADATA: u64 = 16 * 1024 * 1024;

use crate::config::{Config, Source};
use crate::error::Result;
use crate::state::StateDir;

/// What a fetch found.
#[derive(Debug)]
pub enum Fetched {
    /// Nothing new since the last accepted manifest (HTTP 304, or the same
    /// git commit): verify the cached `manifest.json` again.
    Unchanged,
    /// A manifest envelope to verify.
    New {
        /// The DSSE envelope bytes, exactly as fetched.
        envelope: Vec<u8>,
        /// Where it came from (a git commit id, or the URL without
        /// credentials).
        origin: String,
    },
}

/// A manifest source.
pub trait ManifestSource {
    /// Fetches the manifest (conditionally where the source allows).
    fn fetch(&mut self) -> Result<Fetched>;
    /// Reads `root/<n>.root.json` of the fetched snapshot; `None` if absent.
    fn root(&mut self, n: u64) -> Result<Option<Vec<u8>>>;
    /// Records that the fetched manifest was accepted (so the next fetch can
    /// be conditional).
    fn accepted(&mut self) -> Result<()>;
    /// The commit id of the snapshot, for git sources.
    fn commit(&self) -> Option<String> {
        None
    }
}

/// The source a config names.
pub fn open(
    config: &Config,
    state: &StateDir,
    http: &ureq::Agent,
    last_commit: Option<&str>,
) -> Result<Box<dyn ManifestSource>> {
    Ok(match &config.source {
        Source::Git { url, branch } => Box::new(git::GitSource::new(
            url,
            branch,
            &state.git_dir(),
            last_commit,
            git_stream::Limits {
                connect: config.update.connect_timeout,
                stall: config.update.stall_timeout,
                min_rate: config.update.min_rate(),
            },
        )),
        Source::Http { url } => Box::new(http::HttpSource::new(
            url,
            state,
            http.clone(),
            config.update.min_rate(),
        )),
    })
}
