//! flotilla-agent: one pass per timer tick (see docs/design.md, "The agent").
//!
//! The pass and its steps are documented in [`pass`] (a module per step;
//! the pending update is a state machine in `pass/pending.rs`). Modules, by
//! job:
//!
//! - [`pass`]: one pass, and `rollback`; [`status`], [`selftest`]: the
//!   `status` and `self-test` commands; [`version`]: what this build is.
//! - [`config`]: the config file, parsed strictly; [`state`]: what is kept
//!   between passes; `lock`: one pass at a time.
//! - [`source`]: the fleet repo (git2) or a static store (conditional HTTP);
//!   [`trust`]: root chain, thresholds, expiry, serial.
//! - [`decide`]: pins, channel, waves, downgrade policy, stepping stones;
//!   `gate`: the reporter's halt gate.
//! - [`download`]: resumable, size-capped, hashed while streaming;
//!   `versions`: installed versions, self-test, atomic symlink swaps,
//!   pruning; [`setup`]: `flotilla-agent install` (a host's first install).
//! - `events` and [`spool`]: every step as an event, kept until delivered.
//! - [`layout`]: the state dir, legacy locations and migration limits,
//!   resolved once for the migration pre-pass and the config;
//!   [`migrations`]: config and state migrations, run before the config is
//!   loaded, with one bounded backup per run.
//! - `delivery`: enrollment and event delivery to the reporter, within a
//!   time budget; `checkin`: the pass's check-in (liveness and host state); `sysinfo`: host facts for events.
//! - [`fault`]: fault injection for the crash-safety tests (feature
//!   `fault-injection`); the build-time test knobs in [`version`] and
//!   [`migrations::builtin`] need the feature `test-knobs`.
//! - [`error`]: the agent's errors.
#![warn(missing_docs)]

pub(crate) mod checkin;
pub mod config;
pub mod decide;
pub(crate) mod delivery;
pub mod download;
pub mod error;
pub(crate) mod events;
pub mod fault;
pub(crate) mod gate;
pub mod http;
pub mod layout;
pub(crate) mod lock;
pub mod migrations;
pub mod pass;
pub mod selftest;
pub mod setup;
pub mod source;
pub mod spool;
pub mod state;
pub mod status;
pub(crate) mod sysinfo;
pub mod trust;
pub mod version;
pub(crate) mod versions;

pub use config::Config;
pub use error::{Error, Result};
