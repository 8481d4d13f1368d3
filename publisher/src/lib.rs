//! `flotilla-publisher` as a library: everything the CLI does, callable from
//! tests and other tools. `main.rs` only parses arguments and calls in here.
//!
//! - [`repo`]: paths of the fleet repo, the root chain and the signed manifest.
//! - [`template`]: `init`, the embedded `fleet-repo-template/`.
//! - [`roots`]: `root init`, `root sign`, `root rotate`.
//! - [`release`]: `release add` (hash while uploading, then `releases/<v>.toml`).
//! - [`store`]: store URLs (local directory, `file://`, `s3://`) and the
//!   store layout agents read.
//! - [`rollout`], [`pins`]: comment-preserving edits of `channels/*.toml` and `pins.toml`.
//! - [`sign`]: compile and sign the manifest; the two-person `--append`.
//! - [`verify`]: every check CI runs, one problem per line.
//! - [`history`]: what was trusted before a change (a base revision, the
//!   store): append-only roots, generated `signed/`, verified serials.
//! - [`package`]: `.deb` installers of the agent (for one fleet, from a
//!   verified release) and of the reporter.
//! - [`publish`]: upload roots and the signed manifest for HTTP-pulling agents.
//! - [`spec`]: parsing of command-line values (`--waves`, `--expires`, `--start`).
//! - [`reporter_client`] (TLS in [`tls`]): the reporter's admin API, for
//!   `status` ([`progress`]: the table) and `plan`.
//! - [`plan`]: which agents a change moves, wave by wave, and when, from the
//!   base's sources ([`git_sources`]) and the head's, each agent decided as
//!   the agent decides ([`flotilla_protocol::decide::route`], with the
//!   plan-only parts in `resolve`); [`plan_text`] renders it.

pub mod error;
pub mod git_sources;
pub mod history;
pub mod package;
pub mod pins;
pub mod plan;
pub mod plan_text;
pub mod progress;
pub mod publish;
pub mod release;
pub mod repo;
pub mod reporter_client;
mod resolve;
pub mod rollout;
pub mod roots;
pub mod sign;
pub mod spec;
pub mod store;
pub mod template;
pub mod tls;
pub mod verify;

pub use error::{Error, Result};
pub use repo::Repo;
pub use store::Store;
