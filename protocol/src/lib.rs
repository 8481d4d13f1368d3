//! Flotilla's wire types, shared by the publisher, the agent and the reporter.
//!
//! - [`sources`]: the files of the fleet repo (`fleet.toml`, `releases/*.toml`,
//!   `channels/*.toml`, `pins.toml`), parsed strictly (unknown fields are
//!   errors that name the file and field) and validated.
//! - [`manifest`]: the compiled manifest that `flotilla-publisher sign` wraps
//!   in a DSSE envelope; parsed tolerantly so old agents read new manifests.
//! - [`wave`]: the wave function (bucket, wave, time of eligibility); the one
//!   implementation that agents, the publisher and simulations share.
//! - [`decide`]: the agent's decision (pins, channel, downgrade policy,
//!   paused, waves, stepping stones); the one implementation that agents act
//!   on and `flotilla-publisher plan` predicts with.
//! - [`event`]: the event schema agents report.
//! - [`trust`]: verifying a signed manifest against a root chain; the one
//!   implementation agents, the reporter and the publisher use.
//! - [`api`]: request and response bodies of the reporter's HTTP API;
//!   [`host`]: each host's state and its check-in; [`halt`]: the emergency stop.
//! - [`duration`]: human-friendly durations (`"90s"`, `"6h"`, `"3d"`).
//! - [`redact`]: credentials stripped from URLs before they are shown.
//!
//! This crate does no network I/O; [`sources::Sources::load_dir`] reads files.
#![deny(missing_docs)]

pub mod api;
pub mod decide;
pub mod duration;
mod error;
pub mod event;
pub mod halt;
pub mod host;
pub mod manifest;
pub mod redact;
pub mod sources;
pub mod trust;
pub mod wave;

pub use duration::HumanDuration;
pub use error::{chain, chain_text, chain_text_until, chain_until, Error, Problems};
pub use event::{Event, EventKind, EventStatus, Severity};
pub use manifest::{Manifest, MANIFEST_PAYLOAD_TYPE};
pub use redact::redact_urls;
pub use sources::{
    Artifact, Channel, DowngradePolicy, Fleet, Pin, PinTarget, Release, Sources, Wave,
};

/// Result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
