//! Step 5: decide ([`crate::decide`]: pins, channel, `paused`, wave and
//! spread, downgrade policy, stepping stones, blocked release), then ask the
//! halt gate ([`crate::gate`]) before an update. Unchanged deferrals are
//! reported once, when they start.

use chrono::{DateTime, Utc};
use flotilla_protocol::api::{details, HostState};
use serde_json::json;

use super::{Ending, Pass};
use crate::checkin::Decided;
use crate::config::GateUnreachable;
use crate::decide::{self, Decision, DeferReason, Deferral, Plan};
use crate::gate::{self, GateAnswer};
use crate::state::DecisionRecord;
use crate::trust::Verified;
use crate::version;

/// What step 5 leaves for the rest of the pass.
pub(super) enum Next {
    /// The pass ends here (up to date, deferred, gate closed).
    Done(Ending),
    /// Update now, to what the manifest of this serial says.
    Update(Box<Plan>, u64),
}

impl Pass<'_> {
    /// Decides what the verified manifest means for this agent now.
    pub(super) fn decide(&mut self, v: &Verified) -> Next {
        let running = version::version();
        let blocked = self.state.blocked.as_ref().map(|b| b.version.clone());
        let agent_id = self.ev.agent_id().to_owned();
        let agent = decide::Agent {
            id: &agent_id,
            channel: &self.config.channel,
            labels: &self.config.labels,
            version: &running,
            target: &self.config.target,
            blocked: blocked.as_deref(),
        };
        let decision = decide::decide(&v.manifest, &agent, self.now);
        let pinned = decide::route(&v.manifest, &agent.view()).pinned.is_some();
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
                self.decided = Some(Decided {
                    state: if pinned {
                        HostState::Pinned
                    } else {
                        HostState::OnRelease
                    },
                    release: Some(release.to_string()),
                    wave: None,
                    until: None,
                });
                let ending = Ending::UpToDate {
                    release: release.to_string(),
                    pinned,
                };
                // `status` and the check-in say the same: "pinned to X"
                // or "up to date (X)".
                self.record(ending.describe(), Some(&release), None, None);
                Next::Done(ending)
            }
            Decision::Defer(d) => Next::Done(self.defer(d)),
            Decision::Update(plan) => {
                self.ev.wave = plan.wave.clone();
                if let Some(o) = self.gate(&plan) {
                    return Next::Done(o);
                }
                self.record(
                    format!("updating to {}", plan.release),
                    Some(&plan.release),
                    plan.wave.clone(),
                    plan.eligible_at,
                );
                Next::Update(Box::new(plan), v.manifest.serial)
            }
        }
    }

    /// Records the decision for `status`; returns whether it changed.
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

    fn defer(&mut self, d: Deferral) -> Ending {
        self.ev.wave = d.wave.clone();
        self.decided = Some(Decided {
            state: match d.reason {
                DeferReason::WaveNotOpen => HostState::Waiting,
                DeferReason::GateClosed(_) | DeferReason::GateUnreachable(_) => HostState::Held,
                DeferReason::Paused => HostState::Paused,
                DeferReason::Blocked => HostState::RolledBack,
                _ => HostState::Blocked,
            },
            release: d.target.as_ref().map(|t| t.to_string()),
            wave: d.wave.clone(),
            until: d.eligible_at,
        });
        let reason = match (&d.reason, d.eligible_at) {
            (DeferReason::WaveNotOpen, Some(at)) => format!("{} (turn at {at})", d.reason),
            // decide() knows only that the release is blocked; the state
            // says what failed (a health check, a migration...).
            (DeferReason::Blocked, _) if self.state.blocked.is_some() => self
                .state
                .blocked
                .as_ref()
                .map(|b| b.deferral())
                .unwrap_or_default(),
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
            self.ev
                .deferred(&summary, d.target.as_ref(), d.eligible_at, &reason);
        }
        Ending::Deferred { reason: summary }
    }

    /// The halt gate: `None` when the update may go ahead.
    fn gate(&mut self, plan: &Plan) -> Option<Ending> {
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
            GateAnswer::Unreachable(r) => match reporter.gate_unreachable {
                GateUnreachable::Proceed => {
                    tracing::warn!(
                        "halt gate unreachable ({r}); proceeding (gate_unreachable = \"proceed\")"
                    );
                    None
                }
                GateUnreachable::Wait => {
                    Some(self.defer(deferral(DeferReason::GateUnreachable(r))))
                }
            },
        }
    }
}
