//! End-to-end tests with real binaries: agent builds v1, v2, a broken v3 and
//! v4 compiled from this source, a fleet repo made with flotilla-publisher,
//! served by `git daemon`, as file:// and as a static HTTP store, and
//! artifacts from a loopback HTTP server. One test binary, so the agent
//! builds happen once per run.

#[path = "../support/mod.rs"]
mod support;

mod attacks;
mod crash;
mod delivery;
mod emergency_stop;
mod migration_rollback;
mod pending_health;
mod reporter;
mod transport;
mod update;
