//! Where the pass hands over to the migration framework and to event
//! delivery, which come with their own issue (issue 4, "Agent migrations,
//! error reporting and the event spool"). Each hook is called at its place in
//! the pass and does nothing yet; the signatures give the migration code what
//! it needs (config, state dir, the pending update, the event sink).

use crate::config::Config;
use crate::error::Result;
use crate::events::Events;
use crate::state::{Pending, State, StateDir};

/// Pass step 2: detect and execute the migrations this version needs (on
/// the first pass of a new version, or on a host installed over an older
/// layout), with one bounded backup per run.
///
/// Called with the state-dir lock held, before the pending update's health
/// check, so a version whose migration fails is rolled back. **Does nothing
/// yet: the migration issue fills it in.** An `Err` makes the pass count the
/// new version as unhealthy (if one is pending) and report the error.
pub fn migrations_hook(
    _config: &Config,
    _state_dir: &StateDir,
    _state: &mut State,
    _events: &mut Events,
) -> Result<()> {
    Ok(())
}

/// Rollback: restore the backup the migration run of `pending.to` made, so
/// the previous version finds its config and state as it left them. Called
/// before `current` is pointed back. **Does nothing yet: the migration issue
/// fills it in.**
pub fn restore_migration_backup_hook(
    _config: &Config,
    _state_dir: &StateDir,
    _pending: &Pending,
    _events: &mut Events,
) -> Result<()> {
    Ok(())
}

/// Pass step 8: enroll if needed and deliver the spool to the reporter
/// within a time budget. Called at the end of every pass, after the update
/// work, so a dead reporter never delays an update. **Does nothing yet:
/// delivery (agent/src/delivery.rs) comes with the migration issue;** until
/// then events stay in the spool.
pub fn deliver_events_hook(_config: &Config, _state_dir: &StateDir, _events: &mut Events) {}
