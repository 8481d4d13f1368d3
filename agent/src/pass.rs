//! One pass of the agent (`flotilla-agent run`), DESIGN.md "The agent".
//!
//! 1. Lock the state dir (`flock`); if another pass holds it, exit 0.
//!    Load `state.json`, the agent id, the spool; emit `agent_startup` on
//!    the first pass of a version.
//! 2. Migrations ([`crate::migrations`], via [`run_file`]): before the config
//!    is loaded strictly, since they may move or rewrite it. A failure is
//!    reported; a pending version whose migration failed is rolled back and
//!    the backup restored, a committed one keeps running.
//! 3. Finish or undo a pending update:
//!    - an interrupted rollback (`phase = rolling_back`) is completed;
//!    - run by the *old* binary while `current` still points at it (a pass
//!      killed before its swap): the pending record is dropped and the update
//!      is redone from the decision below;
//!    - run by the *new* binary: the health check (config loads, state dir
//!      writable, trust root valid, manifest fetched and verified). Healthy:
//!      commit (record, then prune to `keep_versions`). Unhealthy: one
//!      attempt fewer; at zero, roll back ([`hooks::restore_migration_backup_hook`],
//!      `current` back to the old version, the release blocked until a newer
//!      serial names another). A source that cannot be reached is retried
//!      on the next pass and counts against nothing.
//! 4. Fetch the manifest (git2 or conditional HTTP), walk the root chain,
//!    check thresholds, expiry and serial ([`crate::trust`]). A refused
//!    manifest is a `manifest_check` event, and the agent keeps running
//!    what it has.
//! 5. Decide ([`crate::decide`]): pins, channel, `paused`, wave and spread,
//!    downgrade policy, stepping stones, blocked release; then the halt gate
//!    ([`crate::gate`]).
//! 6. Download and verify ([`crate::download`]).
//! 7. Install as `versions/<v>/flotilla-agent`, run its `self-test`, record
//!    the pending update (`phase = swapping`, attempts left), point
//!    `previous` at the running version and swap `current` atomically, and
//!    end the pass: the next start runs the new version, which does step 3.
//! 8. [`hooks::deliver_events_hook`] (enrollment and event delivery within a
//!    time budget, [`crate::delivery`]), and
//!    `state.json` saved with the pass's last error; a pass that changed
//!    nothing but when it checked writes only `checked.json`, without fsync
//!    ([`StateDir::save_pass`]).
//!
//! Events are emitted at every step; repeated identical failures of the
//! manifest check and unchanged deferrals are reported once (when they
//! start) rather than on every 15-minute tick, so a long outage does not
//! flood the spool.

use std::path::Path;

use chrono::{DateTime, Utc};
use flotilla_protocol::api::details;
use flotilla_protocol::{EventKind, EventStatus};
use serde_json::json;

use crate::config::{Config, GateUnreachable};
use crate::decide::{self, Decision, DeferReason, Deferral, Plan};
use crate::error::{Error, Result};
use crate::events::{system_info, Events};
use crate::gate::{self, GateAnswer};
use crate::hooks;
use crate::install;
use crate::lock::StateLock;
use crate::source::{self, Fetched};
use crate::spool::Spool;
use crate::state::{Blocked, DecisionRecord, Pending, Phase, State, StateDir};
use crate::trust::{self, Verified};
use crate::version::{self, VERSION};
use crate::{download, fault};
use crate::{migrate, migrations};
use flotilla_protocol::redact_urls;

/// How a pass ended.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// Another pass holds the lock.
    Busy,
    /// Running what the manifest says.
    UpToDate {
        /// The release.
        release: String,
    },
    /// An update is known but not taken now.
    Deferred {
        /// Why.
        reason: String,
    },
    /// A new version was installed and swapped in; the next start runs it.
    Installed {
        /// The version swapped in.
        version: String,
    },
    /// The running version failed its health check and attempts remain.
    Unhealthy {
        /// Why.
        reason: String,
        /// Attempts left.
        attempts_left: u32,
    },
    /// The pending version was rolled back.
    RolledBack {
        /// The version rolled back from.
        from: String,
        /// The version restored.
        to: String,
    },
    /// The update is pending; the new version's next pass checks it.
    Waiting {
        /// Why nothing else was done.
        reason: String,
    },
    /// The manifest was refused.
    Rejected {
        /// Why.
        reason: String,
    },
    /// Something failed (source unreachable, download, install).
    Failed {
        /// Why.
        reason: String,
    },
}

impl Outcome {
    /// A line for the operator.
    pub fn describe(&self) -> String {
        match self {
            Outcome::Busy => "another pass is running; nothing done".into(),
            Outcome::UpToDate { release } => format!("up to date ({release})"),
            Outcome::Deferred { reason } => format!("update deferred: {reason}"),
            Outcome::Installed { version } => {
                format!("installed {version}; the next pass runs it and checks its health")
            }
            Outcome::Unhealthy {
                reason,
                attempts_left,
            } => format!("health check failed ({reason}); {attempts_left} attempt(s) left"),
            Outcome::RolledBack { from, to } => format!("rolled back from {from} to {to}"),
            Outcome::Waiting { reason } => reason.clone(),
            Outcome::Rejected { reason } => format!("manifest rejected: {reason}"),
            Outcome::Failed { reason } => format!("failed: {reason}"),
        }
    }

    fn error(&self) -> Option<String> {
        match self {
            Outcome::Unhealthy { reason, .. }
            | Outcome::Rejected { reason }
            | Outcome::Failed { reason } => Some(reason.clone()),
            _ => None,
        }
    }
}

/// Runs one pass with the config at hand, at the current time.
pub fn run(config: &Config) -> Result<Outcome> {
    run_at(config, Utc::now())
}

/// `flotilla-agent run`: the whole pass from the config file's path. The
/// migrations run before the config is loaded strictly, since they may have
/// to move or rewrite it (legacy paths, an older `config_schema`). A config
/// that still does not load is reported in the spool and returned as the
/// error.
pub fn run_file(config_path: &Path) -> Result<Outcome> {
    let now = Utc::now();
    let early = migrate::context(config_path, None, VERSION);
    let sd = StateDir::new(&early.state_dir);
    sd.create()?;
    let lock = match StateLock::acquire(&sd.lock_file()) {
        Err(Error::Busy { .. }) => return Ok(Outcome::Busy),
        other => other?,
    };
    let migrated = run_migrations(config_path, &sd);
    let config = match Config::load(config_path) {
        Ok(c) => c,
        Err(e) => {
            record_without_config(&sd, &migrated, &e);
            return Err(e);
        }
    };
    run_locked(&config, sd, lock, now, migrated)
}

/// Runs one pass as if it were `now` (tests inject the clock).
pub fn run_at(config: &Config, now: DateTime<Utc>) -> Result<Outcome> {
    let sd = StateDir::new(&config.state_dir);
    sd.create()?;
    let lock = match StateLock::acquire(&sd.lock_file()) {
        Err(Error::Busy { .. }) => return Ok(Outcome::Busy),
        other => other?,
    };
    let migrated = run_migrations(&config.path, &sd);
    run_locked(config, sd, lock, now, migrated)
}

/// The migration run of a pass: its context and report.
struct Migrated {
    ctx: migrations::Context,
    report: std::result::Result<migrations::Report, String>,
}

/// Step 2: detect and run the migrations this version needs.
fn run_migrations(config_path: &Path, sd: &StateDir) -> Migrated {
    let from = sd.load().ok().and_then(|s| {
        s.pending
            .filter(|p| p.to == VERSION)
            .map(|p| p.from)
            .or(s.committed)
    });
    let mut ctx = migrate::context(config_path, from, VERSION);
    ctx.state_dir = sd.root().to_owned();
    let report =
        migrations::run(&ctx, &migrations::builtin::registry()).map_err(|e| format!("{e:#}"));
    Migrated { ctx, report }
}

/// The migration events, and a failure the pass must act on.
/// `first_of_version`: the first pass of this version on this host, which
/// also says that no migration was needed; later passes say it no more.
fn migration_events(
    m: &Migrated,
    agent_id: &str,
    sd: &StateDir,
    first_of_version: bool,
) -> (Vec<flotilla_protocol::Event>, Option<Error>) {
    if matches!(&m.report, Ok(r) if r.is_quiet() || (!first_of_version && nothing_needed(r))) {
        // The common pass: nothing to say, so no system facts to gather
        // and no spool write (with its fdatasync).
        return (Vec::new(), None);
    }
    let system = crate::sysinfo::collect(sd.root());
    match &m.report {
        Ok(r) => {
            let events = r.events(agent_id, &m.ctx, &system);
            let failure = r.failed().then(|| Error::Migration {
                reason: events
                    .iter()
                    .find(|e| e.kind == EventKind::MigrationExecution)
                    .map(|e| e.message.clone())
                    .unwrap_or_else(|| "migration failed".into()),
            });
            (events, failure)
        }
        Err(reason) => {
            let mut e = flotilla_protocol::Event::new(
                agent_id,
                EventKind::MigrationDetection,
                EventStatus::Failed,
                "migration",
                format!("cannot read or write the migration state: {reason}"),
            );
            e.to_version = Some(VERSION.into());
            e.details.insert(details::SYSTEM.into(), json!(system));
            (
                vec![e],
                Some(Error::Migration {
                    reason: reason.clone(),
                }),
            )
        }
    }
}

/// Nothing ran and nothing is needed: every migration is completed or was
/// found not needed (as on a host installed with the current layout, where
/// a migration that was never needed is never recorded as completed).
fn nothing_needed(r: &migrations::Report) -> bool {
    r.outcome == migrations::Outcome::NothingToDo
        && r.detections.iter().all(|(_, d)| {
            matches!(
                d,
                migrations::Detected::Completed | migrations::Detected::NotNeeded
            )
        })
}

/// A config that does not load: the migration events and the error go to
/// the spool all the same, so the failure is visible once a config works.
fn record_without_config(sd: &StateDir, m: &Migrated, err: &Error) {
    let agent_id = sd
        .agent_id(None, true)
        .ok()
        .flatten()
        .unwrap_or_else(|| "unknown".into());
    let mut ev = Events::new(Spool::open(sd.root()).ok(), &agent_id, None);
    for e in migration_events(m, &agent_id, sd, true).0 {
        ev.emit(e);
    }
    ev.failure(
        EventKind::AgentStartup,
        EventStatus::Failed,
        "config",
        err,
        None,
    );
}

fn run_locked(
    config: &Config,
    sd: StateDir,
    _lock: StateLock,
    now: DateTime<Utc>,
    migrated: Migrated,
) -> Result<Outcome> {
    let mut pass = Pass::open(config, sd, now)?;
    let first_of_version = pass.state.started_version.as_deref() != Some(VERSION);
    pass.startup();
    let (events, failure) =
        migration_events(&migrated, pass.ev.agent_id(), &pass.sd, first_of_version);
    for mut e in events {
        e.channel = pass.ev.channel.clone();
        e.details
            .insert(details::AGENT_VERSION.into(), json!(VERSION));
        pass.ev.emit(e);
    }
    let outcome = match failure {
        Some(e) => pass.migration_failed(e),
        None => pass.work(),
    };
    let outcome = match outcome {
        Ok(o) => o,
        Err(e) => {
            pass.state.last_error = Some(e.to_string());
            let _ = pass.sd.save(&pass.state);
            return Err(e);
        }
    };
    hooks::deliver_events_hook(config, &pass.sd, &mut pass.ev);
    pass.state.last_error = outcome.error();
    // An idle pass changes only when it checked: no fsync for that.
    pass.sd.save_pass(&pass.loaded, &pass.state)?;
    Ok(outcome)
}

/// `flotilla-agent rollback`: undo a pending update (used by
/// flotilla-agent-rollback.service when the new version cannot even start).
pub fn rollback(config: &Config) -> Result<Outcome> {
    let sd = StateDir::new(&config.state_dir);
    sd.create()?;
    let _lock = StateLock::acquire(&sd.lock_file())?;
    let mut pass = Pass::open(config, sd, Utc::now())?;
    let Some(p) = pass.state.pending.clone() else {
        return Ok(Outcome::Waiting {
            reason: format!(
                "no pending update; {} stays",
                install::pointed(&config.install_dir, "current").unwrap_or_else(|| VERSION.into())
            ),
        });
    };
    let current = install::pointed(&config.install_dir, "current");
    if p.phase == Phase::Swapping && current.as_deref() != Some(p.to.as_str()) {
        pass.state.pending = None;
        pass.sd.save(&pass.state)?;
        return Ok(Outcome::Waiting {
            reason: format!("the update to {} never took effect; dropped it", p.to),
        });
    }
    let out = pass.roll_back(
        p,
        "the new version failed to start (flotilla-agent-rollback.service)".into(),
    )?;
    pass.sd.save(&pass.state)?;
    Ok(out)
}

struct Pass<'a> {
    config: &'a Config,
    sd: StateDir,
    state: State,
    /// The state as the pass found it.
    loaded: State,
    ev: Events,
    http: ureq::Agent,
    now: DateTime<Utc>,
}

enum Health {
    Healthy(Box<Verified>),
    Unhealthy(Error),
    Unreachable(Error),
}

impl<'a> Pass<'a> {
    fn open(config: &'a Config, sd: StateDir, now: DateTime<Utc>) -> Result<Self> {
        let state = sd.load()?;
        let agent_id = sd
            .agent_id(config.agent_id.as_deref(), true)?
            .expect("created");
        let spool = match Spool::open(sd.root()) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!("{}: cannot open the event spool: {e}", sd.root().display());
                None
            }
        };
        let ev = Events::new(spool, &agent_id, Some(&config.channel));
        let http = crate::http::client(config.update.connect_timeout, config.update.stall_timeout)?;
        Ok(Pass {
            config,
            sd,
            loaded: state.clone(),
            state,
            ev,
            http,
            now,
        })
    }

    fn startup(&mut self) {
        if self.state.started_version.as_deref() == Some(VERSION) {
            return;
        }
        let mut e = self.ev.event(
            EventKind::AgentStartup,
            EventStatus::Success,
            "agent",
            format!("flotilla-agent {VERSION} started"),
        );
        e.details
            .insert(details::SYSTEM.into(), system_info(self.sd.root()));
        e.details
            .insert(details::LABELS.into(), json!(self.config.labels));
        e.details
            .insert("config_schema".into(), json!(self.config.config_schema));
        self.ev.emit(e);
        self.state.started_version = Some(VERSION.into());
    }

    /// A version whose migration failed is rolled back if it is the pending
    /// update; a committed version keeps running and updating (the failure
    /// is reported, and retried up to `migrations.retries` times).
    fn migration_failed(&mut self, e: Error) -> Result<Outcome> {
        match self.state.pending.clone() {
            Some(p) if p.to == VERSION => self.roll_back(p, e.to_string()),
            _ => {
                let outcome = self.work()?;
                Ok(match outcome {
                    Outcome::UpToDate { .. }
                    | Outcome::Deferred { .. }
                    | Outcome::Waiting { .. } => Outcome::Failed {
                        reason: e.to_string(),
                    },
                    other => other,
                })
            }
        }
    }

    fn work(&mut self) -> Result<Outcome> {
        let mut checked = None;
        if let Some(p) = self.state.pending.clone() {
            match self.pending(p)? {
                Step::Done(o) => return Ok(o),
                Step::Continue(v) => checked = v,
            }
        }
        if self.state.committed.is_none() && self.state.pending.is_none() {
            self.state.committed = Some(VERSION.into());
        }
        if self.state.pending.is_none() {
            // Finishes a prune a killed pass left half-done; cheap otherwise.
            let protect: Vec<String> = [
                self.state.committed.clone(),
                install::pointed(&self.config.install_dir, "current"),
                install::pointed(&self.config.install_dir, "previous"),
            ]
            .into_iter()
            .flatten()
            .collect();
            let protect: Vec<&str> = protect.iter().map(String::as_str).collect();
            if let Err(e) = self.prune(&protect) {
                tracing::warn!("pruning old versions: {e}");
            }
        }
        let verified = match checked {
            Some(v) => v,
            None => match self.check_manifest() {
                Ok(v) => v,
                Err(e) => return Ok(self.manifest_failed(e)),
            },
        };
        self.decide_and_update(*verified)
    }

    /// Step 3.
    fn pending(&mut self, p: Pending) -> Result<Step> {
        let install_dir = &self.config.install_dir;
        let current = install::pointed(install_dir, "current");
        if p.phase == Phase::RollingBack {
            return self
                .finish_rollback(p, "rollback interrupted; completed".into())
                .map(Step::Done);
        }
        if VERSION == p.from && current.as_deref() != Some(p.to.as_str()) {
            // Killed before the swap: drop the record, redo from the decision.
            let mut e = self.ev.event(
                EventKind::UpdateInstall,
                EventStatus::Failed,
                "install",
                format!(
                    "the update to {} was interrupted before the swap; it is retried",
                    p.to
                ),
            );
            e.to_version = Some(p.to.clone());
            self.ev.emit(e);
            self.state.pending = None;
            self.sd.save(&self.state)?;
            return Ok(Step::Continue(None));
        }
        if VERSION != p.to || current.as_deref() != Some(p.to.as_str()) {
            // Either the old binary runs while `current` already points at
            // the new one, or the new binary was started by hand: the health
            // check belongs to the new version started through `current`.
            return Ok(Step::Done(Outcome::Waiting {
                reason: format!(
                    "update {} -> {} pending; the next pass of {} (through {}/current) checks its health",
                    p.from,
                    p.to,
                    p.to,
                    install_dir.display()
                ),
            }));
        }
        self.ev.wave = p.wave.clone();
        match self.health() {
            Health::Healthy(v) => {
                self.commit(&p)?;
                Ok(Step::Continue(Some(v)))
            }
            Health::Unreachable(e) => {
                self.manifest_failed(e);
                Ok(Step::Done(Outcome::Waiting {
                    reason: format!(
                        "health check of {} waits for the fleet source to be reachable",
                        p.to
                    ),
                }))
            }
            Health::Unhealthy(err) => {
                let attempts_left = p.attempts_left.saturating_sub(1);
                let mut e = self.ev.event(
                    EventKind::UpdateHealthcheck,
                    EventStatus::Failed,
                    "health",
                    format!("health check of {} failed: {err}", p.to),
                );
                e.from_version = Some(p.from.clone());
                e.to_version = Some(p.to.clone());
                e.details.insert(
                    details::ERROR_CHAIN.into(),
                    json!(crate::error::chain(&err)),
                );
                e.details
                    .insert("attempts_left".into(), json!(attempts_left));
                self.ev.emit(e);
                if attempts_left == 0 {
                    return self.roll_back(p, err.to_string()).map(Step::Done);
                }
                self.state.pending = Some(Pending { attempts_left, ..p });
                self.sd.save(&self.state)?;
                Ok(Step::Done(Outcome::Unhealthy {
                    reason: err.to_string(),
                    attempts_left,
                }))
            }
        }
    }

    fn health(&mut self) -> Health {
        let probe = self.sd.root().join(".health-probe");
        if let Err(e) = self.sd.write(&probe, VERSION.as_bytes()) {
            return Health::Unhealthy(e);
        }
        let _ = std::fs::remove_file(&probe);
        if let Err(e) = trust::load_root(&self.config.trust_root, &self.sd) {
            return Health::Unhealthy(e);
        }
        if version::TEST_BREAK_HEALTH {
            return Health::Unhealthy(Error::SelfTest {
                binary: std::env::current_exe().unwrap_or_default(),
                reason: "built with FLOTILLA_TEST_BREAK_HEALTH (a test-only broken build)".into(),
            });
        }
        match self.check_manifest() {
            Ok(v) => Health::Healthy(v),
            Err(e) if e.is_transient() => Health::Unreachable(e),
            Err(e) => Health::Unhealthy(e),
        }
    }

    fn commit(&mut self, p: &Pending) -> Result<()> {
        self.state.committed = Some(p.to.clone());
        self.state.pending = None;
        self.sd.save(&self.state)?;
        fault::point("after-commit");
        let removed = self.prune(&[&p.to, &p.from]);
        let mut e = self.ev.event(
            EventKind::UpdateHealthcheck,
            EventStatus::Success,
            "health",
            format!("{} is healthy; committed", p.to),
        );
        e.from_version = Some(p.from.clone());
        e.to_version = Some(p.to.clone());
        match removed {
            Ok(r) => {
                e.details.insert("pruned".into(), json!(r));
            }
            Err(err) => {
                e.details
                    .insert("prune_error".into(), json!(err.to_string()));
            }
        }
        self.ev.emit(e);
        Ok(())
    }

    fn prune(&self, protect: &[&str]) -> Result<Vec<String>> {
        let blocked = self.state.blocked.as_ref().map(|b| b.version.as_str());
        let protect: Vec<&str> = protect
            .iter()
            .copied()
            .filter(|v| Some(*v) != blocked)
            .collect();
        install::prune(
            &self.config.install_dir,
            &protect,
            blocked,
            self.config.update.keep_versions as usize,
        )
    }

    fn roll_back(&mut self, p: Pending, reason: String) -> Result<Outcome> {
        let install_dir = &self.config.install_dir;
        if !install::binary_path(install_dir, &p.from).exists() {
            let err = Error::Install {
                path: install::binary_path(install_dir, &p.from),
                reason: format!(
                    "cannot roll back from {}: the previous version is gone",
                    p.to
                ),
            };
            self.ev.failure(
                EventKind::UpdateRollback,
                EventStatus::Failed,
                "rollback",
                &err,
                Some(&p.from),
            );
            return Err(err);
        }
        self.state.pending = Some(Pending {
            phase: Phase::RollingBack,
            ..p.clone()
        });
        self.sd.save(&self.state)?;
        install::point(install_dir, "current", &p.from)?;
        fault::point("after-rollback-swap");
        self.finish_rollback(p, reason)
    }

    fn finish_rollback(&mut self, p: Pending, reason: String) -> Result<Outcome> {
        // Idempotent: finishes a restore that an interrupted rollback began.
        hooks::restore_migration_backup_hook(self.config, &self.sd, &p, &mut self.ev)?;
        install::point(&self.config.install_dir, "current", &p.from)?;
        self.state.blocked = Some(Blocked {
            version: p.to.clone(),
            serial: p.serial,
            reason: reason.clone(),
            at: self.now,
        });
        self.state.pending = None;
        self.state.committed = Some(p.from.clone());
        self.sd.save(&self.state)?;
        let mut e = self.ev.event(
            EventKind::UpdateRollback,
            EventStatus::Success,
            "rollback",
            format!("rolled back from {} to {}: {reason}", p.to, p.from),
        );
        e.from_version = Some(p.to.clone());
        e.to_version = Some(p.from.clone());
        e.wave = p.wave.clone();
        e.details.insert(details::RELEASE.into(), json!(p.to));
        e.details.insert("reason".into(), json!(reason));
        self.ev.emit(e);
        Ok(Outcome::RolledBack {
            from: p.to,
            to: p.from,
        })
    }

    /// Step 4.
    fn check_manifest(&mut self) -> Result<Box<Verified>> {
        let trusted = trust::load_root(&self.config.trust_root, &self.sd)?;
        let cached = self.sd.read_optional(&self.sd.manifest_file())?;
        let last_commit = cached.as_ref().and(self.state.source_commit.as_deref());
        let mut src = source::open(self.config, &self.sd, &self.http, last_commit)?;
        let (envelope, new, origin) = match src.fetch()? {
            Fetched::Unchanged => match cached {
                Some(c) => (c, false, "unchanged".to_owned()),
                None => unreachable!("sources answer Unchanged only when a cached copy exists"),
            },
            Fetched::New { envelope, origin } => (envelope, true, origin),
        };
        let v = trust::verify(trusted, &mut *src, new, &envelope, self.now, &self.state)?;
        let serial = v.manifest.serial;
        let first_time = self.state.highest_serial != Some(serial);
        if new {
            if let Some(r) = &v.new_root {
                self.sd.write(&self.sd.root_file(), r)?;
            }
            self.sd.write(&self.sd.manifest_file(), &envelope)?;
            src.accepted()?;
            if let Some(c) = src.commit() {
                self.state.source_commit = Some(c);
            }
        }
        self.state.highest_serial = Some(serial);
        self.state.highest_digest = Some(v.digest.clone());
        self.state.root_version = Some(v.root.version());
        self.state.last_check = Some(self.now);
        if first_time || self.state.last_error.is_some() {
            let mut e = self.ev.event(
                EventKind::ManifestCheck,
                EventStatus::Success,
                "manifest",
                format!(
                    "manifest serial {serial} accepted (root v{})",
                    v.root.version()
                ),
            );
            e.details.insert("serial".into(), json!(serial));
            e.details
                .insert("root_version".into(), json!(v.root.version()));
            e.details.insert("origin".into(), json!(origin));
            e.details
                .insert("expires".into(), json!(v.manifest.expires));
            self.ev.emit(e);
        }
        if new || first_time {
            // The accepted serial must be durable before anything acts on
            // it; an unchanged manifest is saved with the pass's end.
            self.sd.save(&self.state)?;
        }
        Ok(Box::new(v))
    }

    fn manifest_failed(&mut self, e: Error) -> Outcome {
        let status = if e.is_rejection() {
            EventStatus::Rejected
        } else {
            EventStatus::Failed
        };
        let msg = e.to_string();
        if self.state.last_error.as_deref() != Some(msg.as_str()) {
            self.ev
                .failure(EventKind::ManifestCheck, status, "manifest", &e, None);
        }
        if status == EventStatus::Rejected {
            Outcome::Rejected { reason: msg }
        } else {
            Outcome::Failed { reason: msg }
        }
    }

    /// Steps 5-7.
    fn decide_and_update(&mut self, v: Verified) -> Result<Outcome> {
        let running = version::version();
        let blocked = self.state.blocked.as_ref().map(|b| b.version.clone());
        let agent_id = self.ev.agent_id().to_owned();
        let decision = decide::decide(
            &v.manifest,
            &decide::Agent {
                id: &agent_id,
                channel: &self.config.channel,
                labels: &self.config.labels,
                version: &running,
                target: &self.config.target,
                blocked: blocked.as_deref(),
            },
            self.now,
        );
        if let (Some(b), Some(t)) = (&blocked, decision.target()) {
            if *b != t.to_string() {
                self.state.blocked = None;
            }
        }
        let channel_name = match &decision {
            Decision::UpToDate { channel, .. } => channel.clone(),
            Decision::Defer(d) => d.channel.clone(),
            Decision::Update(p) => p.channel.clone(),
        };
        self.ev.channel = Some(channel_name.clone());
        if let Some(c) = v.manifest.channels.get(&channel_name) {
            let d = &mut self.ev.channel_details;
            if let Some(r) = c.max_failure_rate {
                d.insert(details::MAX_FAILURE_RATE.into(), json!(r));
            }
            if let Some(m) = c.min_reports {
                d.insert(details::MIN_REPORTS.into(), json!(m));
            }
            d.insert(
                details::WAVES.into(),
                json!(c.waves.iter().map(|w| w.name.clone()).collect::<Vec<_>>()),
            );
        }
        match decision {
            Decision::UpToDate { release, .. } => {
                self.record(
                    format!("up to date ({release})"),
                    Some(&release),
                    None,
                    None,
                );
                Ok(Outcome::UpToDate {
                    release: release.to_string(),
                })
            }
            Decision::Defer(d) => Ok(self.defer(d)),
            Decision::Update(plan) => {
                self.ev.wave = plan.wave.clone();
                if let Some(o) = self.gate(&plan) {
                    return Ok(o);
                }
                self.record(
                    format!("updating to {}", plan.release),
                    Some(&plan.release),
                    plan.wave.clone(),
                    plan.eligible_at,
                );
                self.update(plan, v.manifest.serial)
            }
        }
    }

    fn record(
        &mut self,
        summary: String,
        target: Option<&semver::Version>,
        wave: Option<String>,
        eligible_at: Option<DateTime<Utc>>,
    ) -> bool {
        let changed = self
            .state
            .last_decision
            .as_ref()
            .is_none_or(|d| d.summary != summary);
        self.state.last_decision = Some(DecisionRecord {
            summary,
            target: target.map(|t| t.to_string()),
            wave,
            eligible_at,
            at: self.now,
        });
        changed
    }

    fn defer(&mut self, d: Deferral) -> Outcome {
        self.ev.wave = d.wave.clone();
        let reason = match (&d.reason, d.eligible_at) {
            (DeferReason::WaveNotOpen, Some(at)) => format!("{} (turn at {at})", d.reason),
            _ => d.reason.to_string(),
        };
        let summary = match &d.target {
            Some(t) => format!("{t}: {reason}"),
            None => reason.clone(),
        };
        if self.record(
            summary.clone(),
            d.target.as_ref(),
            d.wave.clone(),
            d.eligible_at,
        ) {
            let mut e = self.ev.event(
                EventKind::UpdateDeferred,
                EventStatus::Info,
                "decide",
                summary.clone(),
            );
            e.to_version = d.target.as_ref().map(|t| t.to_string());
            if let Some(at) = d.eligible_at {
                e.details.insert("eligible_at".into(), json!(at));
            }
            e.details.insert("reason".into(), json!(reason));
            self.ev.emit(e);
        }
        Outcome::Deferred { reason: summary }
    }

    fn gate(&mut self, plan: &Plan) -> Option<Outcome> {
        let reporter = self.config.reporter.as_ref()?;
        let token = self
            .sd
            .read_optional(&self.sd.agent_token_file())
            .ok()
            .flatten()
            .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
            .filter(|t| !t.is_empty());
        let answer = gate::ask(
            &self.http,
            &reporter.url,
            &plan.channel,
            &plan.release.to_string(),
            token.as_deref(),
        );
        let deferral = |reason| Deferral {
            reason,
            channel: plan.channel.clone(),
            target: Some(plan.release.clone()),
            wave: plan.wave.clone(),
            eligible_at: plan.eligible_at,
        };
        match answer {
            GateAnswer::Open => None,
            GateAnswer::Closed(r) => Some(self.defer(deferral(DeferReason::GateClosed(r)))),
            GateAnswer::Unreachable(r) => {
                match reporter.gate_unreachable {
                    GateUnreachable::Proceed => {
                        tracing::warn!("halt gate unreachable ({r}); proceeding (gate_unreachable = \"proceed\")");
                        None
                    }
                    GateUnreachable::Wait => {
                        Some(self.defer(deferral(DeferReason::GateUnreachable(r))))
                    }
                }
            }
        }
    }

    /// Steps 6-7.
    fn update(&mut self, plan: Plan, serial: u64) -> Result<Outcome> {
        let to = plan.release.to_string();
        let a = &plan.artifact;
        let url = match download::artifact_url(&self.config.artifacts_base_url, &a.path) {
            Ok(u) => u,
            Err(e) => return Ok(self.step_failed(EventKind::UpdateDownload, e, &to)),
        };
        let dir = self.sd.downloads();
        let req = download::Request {
            url: &url,
            sha256: &a.sha256,
            size: a.size,
            dir: &dir,
            min_rate: self.config.update.min_rate(),
        };
        let file = match download::fetch(&self.http, &req) {
            Ok(f) => f,
            Err(e @ Error::HashMismatch { .. }) => {
                return Ok(self.step_failed(EventKind::UpdateVerify, e, &to))
            }
            Err(e) => return Ok(self.step_failed(EventKind::UpdateDownload, e, &to)),
        };
        for (kind, msg) in [
            (
                EventKind::UpdateDownload,
                format!("downloaded {to} from {}", redact_urls(url.as_str())),
            ),
            (
                EventKind::UpdateVerify,
                format!(
                    "{to}: size {} and SHA-256 {} match the signed manifest",
                    a.size, a.sha256
                ),
            ),
        ] {
            let mut e = self.ev.event(kind, EventStatus::Success, "download", msg);
            e.to_version = Some(to.clone());
            e.details
                .insert("url".into(), json!(redact_urls(url.as_str())));
            e.details.insert("size".into(), json!(a.size));
            e.details.insert("sha256".into(), json!(a.sha256));
            e.details.insert("serial".into(), json!(serial));
            self.ev.emit(e);
        }
        let install_dir = &self.config.install_dir;
        let installed = install::install_binary(&file, install_dir, &to, &a.sha256, a.size)
            .and_then(|bin| install::self_test(&bin, &self.config.path, &to, &self.config.target));
        if let Err(e) = installed {
            if matches!(e, Error::SelfTest { .. }) {
                let _ = std::fs::remove_dir_all(install::version_dir(install_dir, &to));
                self.state.blocked = Some(Blocked {
                    version: to.clone(),
                    serial,
                    reason: e.to_string(),
                    at: self.now,
                });
            }
            return Ok(self.step_failed(EventKind::UpdateInstall, e, &to));
        }
        // The running version must be installed too, or there is nothing to roll back to.
        if !install::binary_path(install_dir, VERSION).exists() {
            if let Err(e) = install::install_self(install_dir, VERSION) {
                return Ok(self.step_failed(EventKind::UpdateInstall, e, &to));
            }
        }
        self.state.pending = Some(Pending {
            from: VERSION.into(),
            to: to.clone(),
            attempts_left: self.config.update.health_attempts,
            serial,
            installed_at: self.now,
            phase: Phase::Swapping,
            wave: plan.wave.clone(),
        });
        self.sd.save(&self.state)?;
        fault::point("after-state-write");
        install::point(install_dir, "previous", VERSION)?;
        install::point(install_dir, "current", &to)?;
        fault::point("after-swap");
        let _ = std::fs::remove_file(&file);
        let mut e = self.ev.event(
            EventKind::UpdateInstall,
            EventStatus::Success,
            "install",
            format!("installed {to} and swapped it in; its first pass checks its health"),
        );
        e.to_version = Some(to.clone());
        e.details
            .insert("path".into(), json!(install::binary_path(install_dir, &to)));
        e.details.insert("pinned".into(), json!(plan.pinned));
        if plan.release != plan.final_release {
            e.details.insert(
                "stepping_stone_to".into(),
                json!(plan.final_release.to_string()),
            );
        }
        self.ev.emit(e);
        Ok(Outcome::Installed { version: to })
    }

    fn step_failed(&mut self, kind: EventKind, e: Error, to: &str) -> Outcome {
        self.ev.failure(
            kind,
            EventStatus::Failed,
            kind.as_str().trim_start_matches("update_"),
            &e,
            Some(to),
        );
        Outcome::Failed {
            reason: e.to_string(),
        }
    }
}

enum Step {
    Done(Outcome),
    Continue(Option<Box<Verified>>),
}
