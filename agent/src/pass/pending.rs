//! Step 3: finish or undo a pending update. The pending update's phase is
//! an explicit state machine ([`PendingPhase`]), read from `state.json`,
//! the running binary and where `current` points:
//!
//! ```text
//!  none ──install (step 7)──▶ swapping ──new binary's pass──▶ awaiting health
//!   ▲                            │                              │   │    │
//!   │       killed before swap ◀─┘ (old binary, current = old)  │   │    │
//!   │        (record dropped; the update is redone)             │   │    │
//!   ├──────────────── healthy: commit ◀─────────────────────────┘   │    │
//!   │                        unhealthy, attempts left: stay ◀───────┘    │
//!   └── rolled back (release blocked) ◀── rolling back ◀── unhealthy, ───┘
//!                                                          no attempts left
//! ```
//!
//! Each state's work is one method of [`Pass`] below. The health check is
//! the new version's own (`health.rs`); a manifest that cannot be fetched or
//! is refused during it is reported and retried on the next pass, and
//! counts against nothing.

use chrono::Utc;

use super::{Ending, Pass};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::fault;
use crate::lock::StateLock;
use crate::migrations;
use crate::state::{BlockCause, Blocked, Pending, Phase, StateDir};
use crate::trust::Verified;
use crate::version::VERSION;
use crate::versions;

/// Where a pending update stands, as a pass finds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum PendingPhase {
    /// Nothing pending: the running version is (or becomes) the committed one.
    None,
    /// A rollback was recorded and interrupted: it is finished.
    RollingBack(Pending),
    /// The old binary runs and `current` still points at it: the pass that
    /// installed the update was killed before its swap. The record is
    /// dropped and the update redone from the decision.
    NeverSwapped(Pending),
    /// The new binary runs through `current`: its health check is due.
    AwaitingHealth(Pending),
    /// Another binary than the one whose health is due runs (the old one
    /// while `current` already points at the new one, or the new one started
    /// by hand): the health check belongs to the new version started through
    /// `current`, so this pass waits.
    NotThisBinary(Pending),
}

impl PendingPhase {
    /// The phase of `pending` for the binary of version `running`, with
    /// `current` pointing at version `current`.
    pub(crate) fn of(pending: Option<&Pending>, running: &str, current: Option<&str>) -> Self {
        let Some(p) = pending.cloned() else {
            return PendingPhase::None;
        };
        let swapped = current == Some(p.to.as_str());
        if p.phase == Phase::RollingBack {
            PendingPhase::RollingBack(p)
        } else if running == p.from && !swapped {
            PendingPhase::NeverSwapped(p)
        } else if running != p.to || !swapped {
            PendingPhase::NotThisBinary(p)
        } else {
            PendingPhase::AwaitingHealth(p)
        }
    }
}

/// What step 3 leaves for the rest of the pass.
pub(super) enum Step {
    /// The pass ends here.
    Done(Ending),
    /// Nothing is pending (any more): go on to step 4, with the manifest the
    /// health check already verified, if it did.
    Continue(Option<Box<Verified>>),
}

impl Pass<'_> {
    /// Step 3: one transition of the pending update's state machine.
    pub(super) fn settle_pending(&mut self) -> Result<Step> {
        let current = versions::pointed(&self.config.install_dir, "current");
        let phase = PendingPhase::of(self.state.pending.as_ref(), VERSION, current.as_deref());
        let step = match phase {
            PendingPhase::None => Step::Continue(None),
            PendingPhase::RollingBack(p) => {
                Step::Done(self.finish_rollback(
                    p,
                    "rollback interrupted; completed".into(),
                    BlockCause::Unknown,
                )?)
            }
            PendingPhase::NeverSwapped(p) => {
                self.ev.install_interrupted(&p.to);
                self.state.pending = None;
                self.sd.save(&self.state)?;
                Step::Continue(None)
            }
            PendingPhase::NotThisBinary(p) => Step::Done(Ending::Waiting {
                reason: format!(
                    "update {} -> {} pending; the next pass of {} (through {}/current) checks its health",
                    p.from,
                    p.to,
                    p.to,
                    self.config.install_dir.display()
                ),
            }),
            PendingPhase::AwaitingHealth(p) => self.check_health(p)?,
        };
        if matches!(step, Step::Continue(_)) {
            self.settled();
        }
        Ok(step)
    }

    /// Nothing is pending: the first version that runs is committed, and a
    /// prune a killed pass left half-done is finished (cheap otherwise).
    fn settled(&mut self) {
        if self.state.committed.is_none() {
            self.state.committed = Some(VERSION.into());
        }
        let protect: Vec<String> = [
            self.state.committed.clone(),
            versions::pointed(&self.config.install_dir, "current"),
            versions::pointed(&self.config.install_dir, "previous"),
        ]
        .into_iter()
        .flatten()
        .collect();
        let protect: Vec<&str> = protect.iter().map(String::as_str).collect();
        if let Err(e) = self.prune(&protect) {
            tracing::warn!("pruning old versions: {e}");
        }
    }

    /// Awaiting health: healthy commits once the manifest verifies;
    /// unhealthy costs one attempt, the last one rolls back. A manifest that
    /// cannot be fetched or is refused is reported and waits for the next
    /// pass: it counts against nothing.
    fn check_health(&mut self, p: Pending) -> Result<Step> {
        self.ev.wave = p.wave.clone();
        if let Err(err) = self.health() {
            let attempts_left = p.attempts_left.saturating_sub(1);
            self.ev.unhealthy(&p, &err, attempts_left);
            if attempts_left == 0 {
                return self
                    .roll_back(p, err.to_string(), BlockCause::HealthCheck)
                    .map(Step::Done);
            }
            self.state.pending = Some(Pending { attempts_left, ..p });
            self.sd.save(&self.state)?;
            return Ok(Step::Done(Ending::Unhealthy {
                reason: err.to_string(),
                attempts_left,
            }));
        }
        match self.check_manifest() {
            Ok(v) => {
                self.commit(&p)?;
                Ok(Step::Continue(Some(v)))
            }
            Err(e) => Ok(Step::Done(self.manifest_failed(e))),
        }
    }

    /// Awaiting health -> none: `p.to` is committed, then old versions are
    /// pruned.
    fn commit(&mut self, p: &Pending) -> Result<()> {
        self.state.committed = Some(p.to.clone());
        self.state.pending = None;
        self.sd.save(&self.state)?;
        fault::point("after-commit");
        let pruned = self.prune(&[&p.to, &p.from]);
        self.ev.committed(p, &pruned);
        Ok(())
    }

    /// Removes old versions beyond `keep_versions`, never those in `protect`
    /// (unless blocked: a blocked release goes first).
    pub(super) fn prune(&self, protect: &[&str]) -> Result<Vec<String>> {
        let blocked = self.state.blocked.as_ref().map(|b| b.version.as_str());
        let protect: Vec<&str> = protect
            .iter()
            .copied()
            .filter(|v| Some(*v) != blocked)
            .collect();
        versions::prune(
            &self.config.install_dir,
            &protect,
            blocked,
            self.config.update.keep_versions as usize,
        )
    }

    /// -> rolling back: recorded before `current` is swapped back, so a
    /// killed rollback is finished by the next pass.
    pub(super) fn roll_back(
        &mut self,
        p: Pending,
        reason: String,
        cause: BlockCause,
    ) -> Result<Ending> {
        let install_dir = &self.config.install_dir;
        if !versions::binary_path(install_dir, &p.from).exists() {
            let err = Error::Install {
                path: versions::binary_path(install_dir, &p.from),
                reason: format!(
                    "cannot roll back from {}: the previous version is gone",
                    p.to
                ),
            };
            self.ev.rollback_failed(&p, &err);
            return Err(err);
        }
        self.state.pending = Some(Pending {
            phase: Phase::RollingBack,
            ..p.clone()
        });
        self.sd.save(&self.state)?;
        versions::point(install_dir, "current", &p.from)?;
        fault::point("after-rollback-swap");
        self.finish_rollback(p, reason, cause)
    }

    /// Restores the backup the migration run of `p.to` made, so the
    /// previous version finds its config and state as it left them.
    /// Idempotent: called when a rollback starts and again when an
    /// interrupted one is finished. A restore that fails is a critical event.
    fn restore_migration_backup(&mut self, p: &Pending) {
        match migrations::restore_last_run(self.sd.root(), &p.to) {
            Ok(false) => {}
            Ok(true) => tracing::info!("restored the migration backup of {}", p.to),
            Err(e) => self.ev.restore_failed(&p.to, &e),
        }
    }

    /// Rolling back -> none: the migration backup restored, `current` at
    /// the old version, the release blocked until a newer serial names
    /// another. Idempotent: finishes what an interrupted rollback began.
    fn finish_rollback(&mut self, p: Pending, reason: String, cause: BlockCause) -> Result<Ending> {
        self.restore_migration_backup(&p);
        versions::point(&self.config.install_dir, "current", &p.from)?;
        self.state.blocked = Some(Blocked {
            version: p.to.clone(),
            serial: p.serial,
            reason: reason.clone(),
            cause,
            at: self.now,
        });
        self.state.pending = None;
        self.state.committed = Some(p.from.clone());
        self.sd.save(&self.state)?;
        self.ev.rolled_back(&p, &reason);
        Ok(Ending::RolledBack {
            from: p.to,
            to: p.from,
        })
    }
}

/// `flotilla-agent rollback`: undo a pending update (used by
/// flotilla-agent-rollback.service when the new version cannot even start).
pub fn rollback(config: &Config) -> Result<Ending> {
    let sd = StateDir::new(&config.state_dir);
    sd.create()?;
    let _lock = StateLock::acquire(&sd.lock_file())?;
    let mut pass = Pass::open(config, sd, Utc::now())?;
    let Some(p) = pass.state.pending.clone() else {
        return Ok(Ending::Waiting {
            reason: format!(
                "no pending update; {} stays",
                versions::pointed(&config.install_dir, "current").unwrap_or_else(|| VERSION.into())
            ),
        });
    };
    let current = versions::pointed(&config.install_dir, "current");
    if p.phase == Phase::Swapping && current.as_deref() != Some(p.to.as_str()) {
        pass.state.pending = None;
        pass.sd.save(&pass.state)?;
        return Ok(Ending::Waiting {
            reason: format!("the update to {} never took effect; dropped it", p.to),
        });
    }
    let out = pass.roll_back(
        p,
        "the new version failed to start (flotilla-agent-rollback.service)".into(),
        BlockCause::Start,
    )?;
    pass.sd.save(&pass.state)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(phase: Phase) -> Pending {
        Pending {
            from: "1.0.0".into(),
            to: "2.0.0".into(),
            attempts_left: 3,
            serial: 7,
            installed_at: Utc::now(),
            phase,
            wave: None,
        }
    }

    #[test]
    fn the_phase_follows_the_record_the_binary_and_current() {
        let sw = pending(Phase::Swapping);
        let of = |p: Option<&Pending>, running, current| PendingPhase::of(p, running, current);
        assert_eq!(of(None, "2.0.0", Some("2.0.0")), PendingPhase::None);
        assert_eq!(
            of(Some(&sw), "2.0.0", Some("2.0.0")),
            PendingPhase::AwaitingHealth(sw.clone())
        );
        assert_eq!(
            of(Some(&sw), "1.0.0", Some("1.0.0")),
            PendingPhase::NeverSwapped(sw.clone())
        );
        assert_eq!(
            of(Some(&sw), "1.0.0", Some("2.0.0")),
            PendingPhase::NotThisBinary(sw.clone())
        );
        assert_eq!(
            of(Some(&sw), "2.0.0", Some("1.0.0")),
            PendingPhase::NotThisBinary(sw.clone())
        );
        let rb = pending(Phase::RollingBack);
        assert_eq!(
            of(Some(&rb), "1.0.0", Some("1.0.0")),
            PendingPhase::RollingBack(rb.clone())
        );
    }
}
