//! Migrations: how an agent moves its own config and state to the layout the
//! running version expects — once, safely, and visibly.
//!
//! A migration is code in the agent with a stable id, a detection and an
//! execution ([`Migration`]); [`builtin::registry`] lists them in order. A run
//! ([`run`]) is:
//!
//! 1. Load `state_dir/migrations.json`. If a run was interrupted
//!    (`in_progress` is set), resume it with the backup it already made.
//! 2. Detect: for each migration not yet completed, needed / not needed /
//!    failed to detect (with the reason). Nothing needed → done: no backup,
//!    no change (a fresh install needs nothing and creates no backup dir).
//! 3. Retry bound: a version that failed `retries` runs (default 3) does not
//!    try again; this is said once, in one event, not on every pass.
//! 4. Backup: one per run, under `state_dir/backups/<time>-<from>-<to>/`,
//!    holding every path the needed migrations touch. A backup that cannot be
//!    written aborts the run before any change.
//! 5. Record the run as in progress, then execute the needed migrations in
//!    order, recording each completion atomically. A completed migration never
//!    runs again.
//! 6. On failure, restore the backup: the host is left as it was, the run's
//!    completions are forgotten, and the attempt is counted.
//! 7. Keep at most `keep_backups` backups (default 3), newest first; the last
//!    run's backup stays while its version is not committed, so a rollback can
//!    restore it ([`restore_last_run`]).
//!
//! Every run reports a `migration_detection` event and, when anything was
//! executed or refused, a `migration_execution` event, with migration ids,
//! versions, schema versions, the error chain, the paths and system info.

mod backup;
pub mod builtin;
mod error;
mod state;

use std::path::{Path, PathBuf};

use chrono::Utc;
use flotilla_protocol::api::details;
use flotilla_protocol::{chain, Event, EventKind, EventStatus, Severity};
use serde_json::{json, Map, Value};

pub use backup::{copy_tree, remove_any};
pub use error::{Error, Result};

use crate::layout::Layout;
pub use state::{Completed, InProgress, LastRun, MigrationState};

/// What a migration needs to know about the host.
#[derive(Clone, Debug)]
pub struct Context {
    /// Prefix of every absolute path (`/` in production, a temp root in tests).
    pub prefix: PathBuf,
    /// The agent's config file (already under `prefix`).
    pub config_path: PathBuf,
    /// The agent's state dir (already under `prefix`).
    pub state_dir: PathBuf,
    /// Legacy install locations (already under `prefix`): config dir, state dir.
    pub legacy_config_dir: PathBuf,
    /// Legacy state dir.
    pub legacy_state_dir: PathBuf,
    /// The version that ran before, if known.
    pub from_version: Option<String>,
    /// This binary's version.
    pub to_version: String,
    /// Backups kept.
    pub keep_backups: usize,
    /// Runs per version before giving up.
    pub retries: u32,
}

impl Context {
    /// The context of a run on the host `layout` describes, for the config
    /// at `config_path`, from `from_version` (if known) to `to_version`.
    pub fn new(
        config_path: &Path,
        layout: &Layout,
        from_version: Option<String>,
        to_version: &str,
    ) -> Context {
        Context {
            prefix: layout.prefix.clone(),
            config_path: config_path.to_owned(),
            state_dir: layout.state_dir.clone(),
            legacy_config_dir: layout.legacy_config_dir.clone(),
            legacy_state_dir: layout.legacy_state_dir.clone(),
            from_version,
            to_version: to_version.to_owned(),
            keep_backups: layout.keep_backups,
            retries: layout.retries,
        }
    }

    /// `state_dir/backups`.
    pub fn backups_dir(&self) -> PathBuf {
        self.state_dir.join("backups")
    }
}

/// What detection found for one migration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Detection {
    /// The migration must run; `paths` are what it touches (backed up first).
    Needed {
        /// Why, for humans.
        reason: String,
        /// Every path the execution may create, change or remove.
        paths: Vec<PathBuf>,
    },
    /// Nothing to do.
    NotNeeded,
}

/// One migration.
pub trait Migration: Send + Sync {
    /// Stable id, e.g. `config-schema-3`; recorded when completed.
    fn id(&self) -> &'static str;
    /// Detects whether this host needs it.
    fn detect(&self, ctx: &Context) -> Result<Detection>;
    /// Applies it. Must be safe to call again after a crash part-way
    /// (each step checks what is already done).
    fn execute(&self, ctx: &Context) -> Result<()>;
}

/// Per-migration detection outcome, for reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Detected {
    /// Already completed earlier; not checked again.
    Completed,
    /// Needed, with the reason.
    Needed(String),
    /// Not needed.
    NotNeeded,
    /// Detection failed, with the error chain.
    Failed(Vec<String>),
}

/// What a run did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RunOutcome {
    /// Nothing needed (or only failed detections, see `detections`).
    NothingToDo,
    /// Needed migrations ran and were recorded; some detections may have failed.
    Completed {
        /// Ids executed, in order.
        ids: Vec<String>,
        /// The run's backup.
        backup: PathBuf,
    },
    /// A migration failed; the backup was restored (or restoring failed too).
    Failed {
        /// The migration that failed.
        id: String,
        /// Its error chain ([`Error::Step`] first: the migration and the
        /// version, then the file and the cause).
        chain: Vec<String>,
        /// Whether the host was put back as it was.
        restored: bool,
        /// Why restoring the backup failed (empty when `restored`).
        restore_error: Vec<String>,
        /// The run's backup.
        backup: PathBuf,
    },
    /// The backup could not be written: nothing was changed.
    BackupFailed {
        /// The error chain.
        chain: Vec<String>,
    },
    /// This version already failed `retries` runs; not tried again.
    RetriesExhausted {
        /// Failed runs so far.
        attempts: u32,
        /// Whether this pass is the first to say so (only then is an event due).
        first_notice: bool,
    },
}

/// The result of [`run`].
#[derive(Clone, Debug)]
pub struct Report {
    /// Per migration id, what detection found.
    pub detections: Vec<(String, Detected)>,
    /// What happened.
    pub outcome: RunOutcome,
    /// Paths involved (what was backed up).
    pub paths: Vec<PathBuf>,
}

impl Report {
    /// True when a migration failed or a backup could not be made (the
    /// version cannot be committed with this host's config and state).
    pub fn failed(&self) -> bool {
        matches!(
            self.outcome,
            RunOutcome::Failed { .. }
                | RunOutcome::BackupFailed { .. }
                | RunOutcome::RetriesExhausted { .. }
        )
    }

    /// True when the run has nothing to report: every migration was
    /// completed earlier and nothing ran (the common pass).
    pub fn is_quiet(&self) -> bool {
        self.outcome == RunOutcome::NothingToDo
            && self
                .detections
                .iter()
                .all(|(_, d)| *d == Detected::Completed)
    }

    /// The events this run reports (`migration_detection`, and
    /// `migration_execution` when anything was executed or refused).
    pub fn events(&self, agent_id: &str, ctx: &Context, system: &Map<String, Value>) -> Vec<Event> {
        let mut out = Vec::new();
        if self.is_quiet() {
            return out;
        }
        let needed: Vec<&str> = self
            .detections
            .iter()
            .filter(|(_, d)| matches!(d, Detected::Needed(_)))
            .map(|(id, _)| id.as_str())
            .collect();
        let failed: Vec<(&str, &Vec<String>)> = self
            .detections
            .iter()
            .filter_map(|(id, d)| match d {
                Detected::Failed(c) => Some((id.as_str(), c)),
                _ => None,
            })
            .collect();
        let base = |kind, status, message: String| {
            let mut e = Event::new(agent_id, kind, status, "migration", message);
            e.from_version = ctx.from_version.clone();
            e.to_version = Some(ctx.to_version.clone());
            e.details
                .insert(details::SYSTEM.into(), Value::Object(system.clone()));
            e.details.insert(
                details::CONFIG_SCHEMA.into(),
                json!({ "found": builtin::config_schema_of(&ctx.config_path), "current": builtin::CONFIG_SCHEMA }),
            );
            e.details.insert(
                details::PATHS.into(),
                json!(self
                    .paths
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()),
            );
            e
        };
        let detection = if !failed.is_empty() {
            let mut e = base(
                EventKind::MigrationDetection,
                EventStatus::Failed,
                format!(
                    "could not detect migration(s) {}: {}",
                    failed
                        .iter()
                        .map(|(id, _)| *id)
                        .collect::<Vec<_>>()
                        .join(", "),
                    failed[0].1.join(": ")
                ),
            );
            e.details.insert(
                details::ERRORS.into(),
                json!(failed
                    .iter()
                    .map(|(id, c)| json!({(details::MIGRATION): id, (details::ERROR_CHAIN): c}))
                    .collect::<Vec<_>>()),
            );
            Some(e)
        } else if !needed.is_empty() {
            Some(base(
                EventKind::MigrationDetection,
                EventStatus::Success,
                format!("migration needed: {}", needed.join(", ")),
            ))
        } else if matches!(self.outcome, RunOutcome::NothingToDo) && !self.is_quiet() {
            Some(base(
                EventKind::MigrationDetection,
                EventStatus::NotNeeded,
                "no migration needed".into(),
            ))
        } else {
            None
        };
        if let Some(mut e) = detection {
            e.details
                .insert(details::MIGRATION_IDS.into(), json!(needed));
            out.push(e);
        }
        let exec = match &self.outcome {
            RunOutcome::NothingToDo => None,
            RunOutcome::Completed { ids, backup } => {
                let partial = !failed.is_empty();
                let mut e = base(
                    EventKind::MigrationExecution,
                    if partial { EventStatus::Partial } else { EventStatus::Success },
                    if partial {
                        format!("migrated {} but could not detect {}", ids.join(", "), failed.iter().map(|(id, _)| *id).collect::<Vec<_>>().join(", "))
                    } else {
                        format!("migrated {}", ids.join(", "))
                    },
                );
                e.details.insert(details::MIGRATION_IDS.into(), json!(ids));
                e.details.insert(details::BACKUP.into(), json!(backup.display().to_string()));
                Some(e)
            }
            RunOutcome::Failed { id, chain, restored, restore_error, backup } => {
                let mut e = base(
                    EventKind::MigrationExecution,
                    EventStatus::Failed,
                    format!(
                        "{}; {}",
                        chain.join(": "),
                        if *restored {
                            "backup restored, host left as it was".to_owned()
                        } else {
                            format!("RESTORING THE BACKUP FAILED: {}", restore_error.join(": "))
                        }
                    ),
                );
                if !restored {
                    e.severity = Severity::Critical;
                }
                e.details.insert(details::MIGRATION_IDS.into(), json!(needed));
                e.details.insert(details::FAILED_MIGRATION.into(), json!(id));
                e.details.insert(details::ERROR_CHAIN.into(), json!(chain));
                e.details.insert(details::BACKUP.into(), json!(backup.display().to_string()));
                e.details.insert(details::RESTORED.into(), json!(restored));
                if !restore_error.is_empty() {
                    e.details.insert(details::RESTORE_ERROR_CHAIN.into(), json!(restore_error));
                }
                Some(e)
            }
            RunOutcome::BackupFailed { chain } => {
                let mut e = base(
                    EventKind::MigrationExecution,
                    EventStatus::Failed,
                    format!("backup before migrating failed, nothing changed: {}", chain.join(": ")),
                );
                e.details.insert(details::MIGRATION_IDS.into(), json!(needed));
                e.details.insert(details::ERROR_CHAIN.into(), json!(chain));
                Some(e)
            }
            RunOutcome::RetriesExhausted { attempts, first_notice } => first_notice.then(|| {
                let mut e = base(
                    EventKind::MigrationExecution,
                    EventStatus::Failed,
                    format!(
                        "migration for {} failed {attempts} times; not retrying until a new version",
                        ctx.to_version
                    ),
                );
                e.details.insert(details::MIGRATION_IDS.into(), json!(needed));
                e.details.insert(details::ATTEMPTS.into(), json!(attempts));
                e.details.insert(details::RETRIES_EXHAUSTED.into(), json!(true));
                e
            }),
        };
        out.extend(exec);
        out
    }
}

/// Runs the migrations of `registry` that this host needs (see the module docs).
///
/// Errors only when the migration state itself cannot be read or written;
/// everything else is an [`RunOutcome`].
pub fn run(ctx: &Context, registry: &[Box<dyn Migration>]) -> Result<Report> {
    let mut st = MigrationState::load(&ctx.state_dir)?;
    let mut detections = Vec::new();
    let mut needed: Vec<(&dyn Migration, Vec<PathBuf>)> = Vec::new();
    for m in registry {
        if st.completed.contains_key(m.id()) {
            detections.push((m.id().to_owned(), Detected::Completed));
            continue;
        }
        match m.detect(ctx) {
            Ok(Detection::NotNeeded) => detections.push((m.id().to_owned(), Detected::NotNeeded)),
            Ok(Detection::Needed { reason, paths }) => {
                detections.push((m.id().to_owned(), Detected::Needed(reason)));
                needed.push((m.as_ref(), paths));
            }
            Err(e) => detections.push((m.id().to_owned(), Detected::Failed(chain(&e)))),
        }
    }
    let mut paths: Vec<PathBuf> = Vec::new();
    for (_, ps) in &needed {
        for p in ps {
            if !paths.contains(p) {
                paths.push(p.clone());
            }
        }
    }
    let report = |outcome, paths| Report {
        detections: detections.clone(),
        outcome,
        paths,
    };

    // An interrupted run: resume with its backup.
    let resumed = st.in_progress.clone();
    if needed.is_empty() {
        if let Some(ip) = resumed {
            // Everything it needed got done before the crash; close it.
            st.last_run = Some(LastRun::from(&ip));
            st.in_progress = None;
            st.save(&ctx.state_dir)?;
        }
        return Ok(report(RunOutcome::NothingToDo, paths));
    }

    if resumed.is_none() {
        let attempts = st.attempts.get(&ctx.to_version).copied().unwrap_or(0);
        if attempts >= ctx.retries {
            let first_notice = !st.exhausted_reported.contains(&ctx.to_version);
            if first_notice {
                st.exhausted_reported.push(ctx.to_version.clone());
                st.save(&ctx.state_dir)?;
            }
            return Ok(report(
                RunOutcome::RetriesExhausted {
                    attempts,
                    first_notice,
                },
                paths,
            ));
        }
    }

    let backup_dir = match &resumed {
        Some(ip) => ctx.state_dir.join(&ip.backup),
        None => {
            let name = format!(
                "{}-{}-{}",
                Utc::now().format("%Y%m%dT%H%M%S%.3fZ"),
                sanitize(ctx.from_version.as_deref().unwrap_or("unknown")),
                sanitize(&ctx.to_version)
            );
            let dir = ctx.backups_dir().join(&name);
            if let Err(source) = backup::create(&dir, &paths) {
                let e = Error::Backup {
                    path: dir.clone(),
                    source,
                };
                *st.attempts.entry(ctx.to_version.clone()).or_default() += 1;
                st.save(&ctx.state_dir)?;
                return Ok(report(RunOutcome::BackupFailed { chain: chain(&e) }, paths));
            }
            st.in_progress = Some(InProgress {
                backup: PathBuf::from("backups").join(&name),
                from_version: ctx.from_version.clone(),
                to_version: ctx.to_version.clone(),
                started: Utc::now(),
                completed: Vec::new(),
            });
            st.save(&ctx.state_dir)?;
            crate::fault::point("migration-after-backup");
            dir
        }
    };

    let mut ids = Vec::new();
    for (m, _) in &needed {
        if let Err(e) = m.execute(ctx) {
            let e = Error::Step {
                id: m.id().to_owned(),
                version: ctx.to_version.clone(),
                source: Box::new(e),
            };
            let restore_error = match backup::restore(&backup_dir) {
                Ok(()) => Vec::new(),
                Err(source) => chain(&Error::Restore {
                    path: backup_dir.clone(),
                    source,
                }),
            };
            let restored = restore_error.is_empty();
            let ip = st.in_progress.take().expect("in progress");
            for id in &ip.completed {
                st.completed.remove(id);
            }
            if !restored {
                // The host is half-migrated: keep the run, so that a
                // rollback of this version tries the restore again.
                st.last_run = Some(LastRun {
                    restored: false,
                    restore_error: restore_error.clone(),
                    ..LastRun::from(&ip)
                });
            }
            *st.attempts.entry(ctx.to_version.clone()).or_default() += 1;
            st.save(&ctx.state_dir)?;
            let keep = (!restored).then_some(backup_dir.as_path());
            let _ = backup::prune(&ctx.backups_dir(), ctx.keep_backups, keep);
            return Ok(report(
                RunOutcome::Failed {
                    id: m.id().to_owned(),
                    chain: chain(&e),
                    restored,
                    restore_error,
                    backup: backup_dir,
                },
                paths,
            ));
        }
        st.completed.insert(
            m.id().to_owned(),
            Completed {
                at: Utc::now(),
                by_version: ctx.to_version.clone(),
            },
        );
        if let Some(ip) = st.in_progress.as_mut() {
            ip.completed.push(m.id().to_owned());
        }
        st.save(&ctx.state_dir)?;
        crate::fault::point("migration-after-step");
        ids.push(m.id().to_owned());
    }
    let ip = st.in_progress.take().expect("in progress");
    st.last_run = Some(LastRun::from(&ip));
    st.save(&ctx.state_dir)?;
    backup::prune(&ctx.backups_dir(), ctx.keep_backups, Some(&backup_dir))
        .map_err(Error::io("pruning", &ctx.backups_dir()))?;
    Ok(report(
        RunOutcome::Completed {
            ids,
            backup: backup_dir,
        },
        paths,
    ))
}

/// Undoes the last run for `version` (used when that version is rolled
/// back): restores its backup and forgets its completions, so the previous
/// version finds config and state as it left them. Returns whether there was
/// anything to restore.
pub fn restore_last_run(state_dir: &Path, version: &str) -> Result<bool> {
    let mut st = MigrationState::load(state_dir)?;
    let run = match (&st.in_progress, &st.last_run) {
        (Some(ip), _) if ip.to_version == version => LastRun::from(ip),
        (_, Some(lr)) if lr.to_version == version => lr.clone(),
        _ => return Ok(false),
    };
    let path = state_dir.join(&run.backup);
    backup::restore(&path).map_err(|source| Error::Restore { path, source })?;
    for id in &run.completed {
        st.completed.remove(id);
    }
    st.in_progress = None;
    st.last_run = None;
    st.save(state_dir)?;
    Ok(true)
}

/// Fault points inside a migration run (see [`crate::fault`]).
pub use crate::fault::MIGRATION_POINTS as FAULT_POINTS;

fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests;
