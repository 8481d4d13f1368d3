//! Where the pass hands over to the migration framework and to event
//! delivery (see [`crate::migrations`] and [`crate::delivery`]).

use std::time::Duration;

use flotilla_protocol::{EventKind, EventStatus, Severity};
use serde_json::json;

use crate::config::Config;
use crate::delivery;
use crate::error::Result;
use crate::events::Events;
use crate::migrations;
use crate::state::{Pending, StateDir};

/// Rollback: restore the backup the migration run of `pending.to` made, so
/// the previous version finds its config and state as it left them.
/// Idempotent: called when a rollback starts and again when an interrupted
/// one is finished. A restore that fails is a critical event.
pub fn restore_migration_backup_hook(
    _config: &Config,
    state_dir: &StateDir,
    pending: &Pending,
    events: &mut Events,
) -> Result<()> {
    match migrations::restore_last_run(state_dir.root(), &pending.to) {
        Ok(false) => {}
        Ok(true) => tracing::info!("restored the migration backup of {}", pending.to),
        Err(e) => {
            let mut ev = events.event(
                EventKind::MigrationExecution,
                EventStatus::Failed,
                "migration",
                format!(
                    "restoring the migration backup of {} failed: {e:#}",
                    pending.to
                ),
            );
            ev.severity = Severity::Critical;
            ev.to_version = Some(pending.to.clone());
            ev.details.insert(
                flotilla_protocol::api::details::ERROR_CHAIN.into(),
                json!(migrations::chain(&e)),
            );
            events.emit(ev);
        }
    }
    Ok(())
}

/// Pass step 8: enroll if needed and deliver the spool to the reporter
/// within a time budget. Called at the end of every pass, after the update
/// work, so a dead reporter never delays an update.
pub fn deliver_events_hook(config: &Config, state_dir: &StateDir, events: &mut Events) {
    let Some(rep) = &config.reporter else {
        return;
    };
    let settings = delivery::Settings {
        reporter_url: rep.url.clone(),
        enrollment_token_file: rep.enrollment_token_file.clone(),
        state_dir: state_dir.root().to_owned(),
        agent_id: events.agent_id().to_owned(),
        labels: config.labels.clone(),
        version: crate::version::VERSION.to_owned(),
        channel: config.channel.clone(),
        budget: delivery::DEFAULT_BUDGET,
    };
    let http = match crate::http::client(
        config.update.connect_timeout.min(Duration::from_secs(5)),
        config.update.stall_timeout,
    ) {
        Ok(h) => h,
        Err(e) => {
            tracing::warn!("event delivery: {e}");
            return;
        }
    };
    let Some(spool) = events.spool_mut() else {
        return;
    };
    let out = delivery::deliver(&http, &settings, spool);
    match &out.error {
        Some(err) => tracing::warn!(
            acked = out.acked,
            remaining = out.remaining,
            "event delivery stopped: {err}"
        ),
        None => tracing::debug!(acked = out.acked, "events delivered"),
    }
}
