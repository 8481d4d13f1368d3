//! Deciding the target (docs/design.md, pass step 5): pins, channel, up to date,
//! downgrade policy, paused, the wave, stepping stones, a blocked release
//! and the target triple.
//!
//! The rules live in [`flotilla_protocol::decide`], so that
//! `flotilla-publisher plan` predicts with the very function the agent acts
//! on; this module is where the pass finds them. The halt gate is asked
//! afterwards, by `crate::gate`, only when [`decide()`] says
//! [`Decision::Update`].

pub use flotilla_protocol::decide::*;
