//! Step 2: the migrations this version needs ([`crate::migrations`]), run
//! before the config is loaded strictly, since they may move or rewrite it;
//! and what the pass reports and does about them.

use std::path::Path;
use std::sync::Arc;

use flotilla_protocol::api::details;
use flotilla_protocol::{Event, EventKind};
use serde_json::json;

use super::{Ending, Pass};
use crate::error::{Error, Result};
use crate::events::Events;
use crate::layout::Layout;
use crate::migrations::{self, Detected};
use crate::spool::Spool;
use crate::state::StateDir;
use crate::version::VERSION;

/// The migration run of a pass: its context and report.
pub(super) struct Migrated {
    ctx: migrations::Context,
    report: std::result::Result<migrations::Report, Arc<migrations::Error>>,
}

/// Detects and runs the migrations this version needs, from the version
/// that ran before (the pending update's `from`, or the committed one).
pub(super) fn run(config_path: &Path, sd: &StateDir) -> Migrated {
    let from = sd.load().ok().and_then(|s| {
        s.pending
            .filter(|p| p.to == VERSION)
            .map(|p| p.from)
            .or(s.committed)
    });
    let mut ctx =
        migrations::Context::new(config_path, &Layout::lenient(config_path), from, VERSION);
    ctx.state_dir = sd.root().to_owned();
    let report = migrations::run(&ctx, &migrations::builtin::registry()).map_err(Arc::new);
    Migrated { ctx, report }
}

impl Migrated {
    /// Emits the run's events and returns the failure the pass must act
    /// on. `first_of_version`: the first pass of this version on this
    /// host, which also says that no migration was needed; later passes
    /// say it no more.
    fn report(
        &self,
        ev: &mut Events,
        sd: &StateDir,
        channel: Option<&str>,
        first_of_version: bool,
    ) -> Option<Error> {
        if matches!(&self.report, Ok(r) if r.is_quiet() || (!first_of_version && nothing_needed(r)))
        {
            // The common pass: nothing to say, so no system facts to gather
            // and no spool write (with its fdatasync).
            return None;
        }
        let system = crate::sysinfo::collect(sd.root());
        match &self.report {
            Ok(r) => {
                let events: Vec<Event> = r.events(ev.agent_id(), &self.ctx, &system);
                let failure = r.failed().then(|| Error::Migration {
                    reason: events
                        .iter()
                        .find(|e| e.kind == EventKind::MigrationExecution)
                        .map(|e| e.message.clone())
                        .unwrap_or_else(|| "migration failed".into()),
                });
                for mut e in events {
                    e.channel = channel.map(str::to_owned);
                    e.details
                        .insert(details::AGENT_VERSION.into(), json!(VERSION));
                    ev.emit(e);
                }
                failure
            }
            Err(e) => {
                ev.migration_state_failed(e, system);
                Some(Error::MigrationState { source: e.clone() })
            }
        }
    }
}

/// Nothing ran and nothing is needed: every migration is completed or was
/// found not needed (as on a host installed with the current layout, where
/// a migration that was never needed is never recorded as completed).
fn nothing_needed(r: &migrations::Report) -> bool {
    r.outcome == migrations::RunOutcome::NothingToDo
        && r.detections
            .iter()
            .all(|(_, d)| matches!(d, Detected::Completed | Detected::NotNeeded))
}

/// A config that does not load: the migration events and the error go to
/// the spool all the same, so the failure is visible once a config works.
pub(super) fn record_without_config(sd: &StateDir, m: &Migrated, err: &Error) {
    let agent_id = sd
        .agent_id(None, true)
        .ok()
        .flatten()
        .unwrap_or_else(|| "unknown".into());
    let mut ev = Events::new(Spool::open(sd.root()).ok(), &agent_id, None);
    m.report(&mut ev, sd, None, true);
    ev.config_failed(err);
}

impl Pass<'_> {
    /// Reports the migration run; a failure is acted on (see
    /// [`Pass::migration_failed`]).
    pub(super) fn report_migrations(
        &mut self,
        m: &Migrated,
        first_of_version: bool,
    ) -> Option<Error> {
        let channel = self.ev.channel.clone();
        m.report(&mut self.ev, &self.sd, channel.as_deref(), first_of_version)
    }

    /// A version whose migration failed is rolled back if it is the pending
    /// update; a committed version keeps running and updating (the failure
    /// is reported, and retried up to `migrations.retries` times).
    pub(super) fn migration_failed(&mut self, e: Error) -> Result<Ending> {
        match self.state.pending.clone() {
            Some(p) if p.to == VERSION => {
                self.roll_back(p, e.to_string(), crate::state::BlockCause::Migration)
            }
            _ => Ok(match self.work()? {
                Ending::UpToDate { .. } | Ending::Deferred { .. } | Ending::Waiting { .. } => {
                    Ending::Failed {
                        reason: e.to_string(),
                    }
                }
                other => other,
            }),
        }
    }
}
