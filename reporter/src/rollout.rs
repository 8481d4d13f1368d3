//! Rollout progress and the halt gate, computed from stored state.
//!
//! **Failure.** An agent has *failed* a release when its newest outcome for
//! that channel and release is `update_install` failed, `update_healthcheck`
//! failed, `migration_execution` failed or any `update_rollback` (see
//! [`crate::db::ingest::release_state`]). It has *succeeded* when its newest
//! outcome is `update_healthcheck` success. Download and verification
//! failures do not count: they say nothing about the release, and the agent
//! retries them (they show as "installing").
//!
//! **Gate.** `reports` = agents that succeeded or failed; `failed` = those
//! that failed. The gate is *closed* when no verified manifest names the
//! channel and release ([`crate::channels`]), or when the manifest's
//! `max_failure_rate` for the channel is set, `reports >= min_reports`
//! (default 1) and `failed / reports > max_failure_rate`. Otherwise it is
//! open; it cannot start anything: agents still follow their waves, pins
//! and the manifest.
//!
//! **Progress.** Each agent of the channel (and each agent that reported
//! about the release on it) is in exactly one column: on release, failed,
//! rolled back (outcomes, kept even when the agent falls silent), else not
//! reporting (not heard from within `stale_after`), else installing, else
//! waiting. Its wave: the one it reported for this release, else the one
//! the manifest's wave function gives it, else its latest reported wave.
//! Waiting agents are split further: *wave not open* (its check-in says
//! it waits for its wave, or, without one, its turn is still to come) and
//! *held* (its check-in says the gate holds it, or its turn came and the
//! gate is closed). Each wave carries the manifest's target percent, when
//! it opens and when its spread ends.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use flotilla_protocol::api::{
    Gate, GateState, HostState, RolloutProgress, SettingsSource, WaveProgress,
};
use flotilla_protocol::sources::Wave;
use flotilla_protocol::wave;

use crate::db::ingest::ReleaseState;
use crate::db::queries::RolloutRow;

/// What the reporter knows about a channel, for one release.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ChannelInfo {
    /// Where the rest came from.
    pub source: SettingsSource,
    /// The threshold.
    pub max_failure_rate: Option<f64>,
    /// Reports needed before the gate may close.
    pub min_reports: Option<u32>,
    /// Wave names in order.
    pub waves: Vec<String>,
    /// The manifest's waves and start, when the manifest rolls out this very
    /// release on the channel (then agents' waves can be computed).
    pub wave_function: Option<(Vec<Wave>, DateTime<Utc>)>,
    /// Why nothing is known (no verified manifest names the pair): the gate
    /// is then closed with this reason.
    pub missing: Option<String>,
}

impl ChannelInfo {
    /// Nothing known, for `reason`.
    pub fn missing(reason: String) -> ChannelInfo {
        ChannelInfo {
            missing: Some(reason),
            ..ChannelInfo::default()
        }
    }
}

/// The gate from per-state agent counts (`ReleaseState::as_str` keys).
pub fn gate(
    channel: &str,
    release: &str,
    counts: &BTreeMap<String, u64>,
    info: &ChannelInfo,
) -> Gate {
    let n = |s: ReleaseState| counts.get(s.as_str()).copied().unwrap_or(0);
    let failed = n(ReleaseState::Failed) + n(ReleaseState::RolledBack);
    let reports = failed + n(ReleaseState::OnRelease);
    let failure_rate = (reports > 0).then(|| failed as f64 / reports as f64);
    let min = info.min_reports.unwrap_or(1).max(1);
    let (state, reason) = match (info.max_failure_rate, failure_rate) {
        _ if info.missing.is_some() => {
            (GateState::Closed, info.missing.clone().unwrap_or_default())
        }
        (None, _) => (
            GateState::Open,
            "the verified manifest sets no max_failure_rate for this channel".to_owned(),
        ),
        (Some(_), _) if reports < min as u64 => (
            GateState::Open,
            format!("{reports} of {min} reports needed before the gate may close"),
        ),
        (Some(max), Some(rate)) if rate > max => (
            GateState::Closed,
            format!(
                "failure rate {:.1}% ({failed} of {reports}) is above {:.1}%",
                rate * 100.0,
                max * 100.0
            ),
        ),
        (Some(max), rate) => (
            GateState::Open,
            format!(
                "failure rate {:.1}% ({failed} of {reports}) is within {:.1}%",
                rate.unwrap_or(0.0) * 100.0,
                max * 100.0
            ),
        ),
    };
    Gate {
        channel: channel.to_owned(),
        release: release.to_owned(),
        state,
        reports,
        failed,
        failure_rate,
        max_failure_rate: info.max_failure_rate,
        min_reports: info.min_reports,
        settings_source: info.source,
        reason,
        halt: None,
    }
}

/// Rollout progress per wave. `now` and `stale_after` in µs; `halted`: an
/// operator's halt holds this release, so an agent whose turn came and that
/// has not checked in since is held, as when the failure rate closes the
/// gate.
pub fn progress(
    channel: &str,
    release: &str,
    rows: &[RolloutRow],
    info: &ChannelInfo,
    now: i64,
    stale_after: i64,
    halted: bool,
) -> RolloutProgress {
    let plan = |name: &str| {
        let (ws, start) = info.wave_function.as_ref()?;
        let w = ws.iter().find(|w| w.name == name)?;
        let opens = *start + chrono::Duration::from_std(w.after.0).ok()?;
        let until = opens + chrono::Duration::from_std(w.spread.0).ok()?;
        Some((w.percent, opens, until))
    };
    let mut waves: Vec<WaveProgress> = info
        .waves
        .iter()
        .map(|w| {
            let p = plan(w);
            WaveProgress {
                wave: w.clone(),
                percent: p.map(|p| p.0),
                opens_at: p.map(|p| p.1),
                spread_until: p.map(|p| p.2),
                ..WaveProgress::default()
            }
        })
        .collect();
    // The gate as the counts make it, to tell "held" from "not its turn".
    let counts: BTreeMap<String, u64> = {
        let mut c = BTreeMap::new();
        for row in rows {
            if let Some(s) = row.state.as_deref().and_then(ReleaseState::parse) {
                *c.entry(s.as_str().to_owned()).or_default() += 1;
            }
        }
        c
    };
    let closed = halted || gate(channel, release, &counts, info).state == GateState::Closed;
    let now_t = crate::db::from_micros(now);
    let mut seen = std::collections::HashSet::new();
    for row in rows {
        if !seen.insert(row.agent_id.as_str()) {
            continue;
        }
        let state = row.state.as_deref().and_then(ReleaseState::parse);
        let state = match state {
            None if row.version.as_deref() == Some(release) => Some(ReleaseState::OnRelease),
            s => s,
        };
        let slot = info.wave_function.as_ref().and_then(|(ws, start)| {
            wave::slot(ws, *start, wave::bucket(channel, release, &row.agent_id))
        });
        let wave_name = row
            .wave
            .clone()
            .or_else(|| slot.as_ref().map(|s| s.wave.clone()))
            // Its latest wave may be another release's: only a last resort.
            .or_else(|| row.latest_wave.clone())
            .unwrap_or_else(|| "unknown".to_owned());
        let idx = match waves.iter().position(|w| w.wave == wave_name) {
            Some(i) => i,
            None => {
                waves.push(WaveProgress {
                    wave: wave_name,
                    ..WaveProgress::default()
                });
                waves.len() - 1
            }
        };
        let w = &mut waves[idx];
        w.agents += 1;
        let stale = row.last_seen.is_none_or(|t| now - t > stale_after);
        match state {
            Some(ReleaseState::OnRelease) => w.on_release += 1,
            Some(ReleaseState::Failed) => w.failed += 1,
            Some(ReleaseState::RolledBack) => w.rolled_back += 1,
            _ if stale => w.not_reporting += 1,
            Some(ReleaseState::Installing) => w.installing += 1,
            Some(ReleaseState::Waiting) | None => {
                w.waiting += 1;
                // Its own check-in says best; else its turn and the gate.
                match row.host_state.as_deref().and_then(HostState::parse) {
                    Some(HostState::Held) => w.held += 1,
                    Some(HostState::Waiting) => w.wave_not_open += 1,
                    Some(_) => {}
                    None => match &slot {
                        Some(s) if s.eligible_at > now_t => w.wave_not_open += 1,
                        Some(_) if closed => w.held += 1,
                        _ => {}
                    },
                }
            }
        }
    }
    // waves not named by the settings go after them, "unknown" last
    let named = info.waves.len();
    waves[named..]
        .sort_by(|a, b| (a.wave == "unknown", &a.wave).cmp(&(b.wave == "unknown", &b.wave)));
    // the gate counts only reported outcomes, not agents found on the release
    let gate = gate(channel, release, &counts, info);
    let agents = waves.iter().map(|w| w.agents).sum();
    let active = waves.iter().any(|w| w.installing > 0 || w.waiting > 0);
    RolloutProgress {
        channel: channel.to_owned(),
        release: release.to_owned(),
        failure_rate: gate.failure_rate,
        waves,
        gate,
        agents,
        active,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(max: Option<f64>, min: Option<u32>) -> ChannelInfo {
        ChannelInfo {
            source: SettingsSource::Manifest,
            max_failure_rate: max,
            min_reports: min,
            waves: vec!["canary".into(), "all".into()],
            wave_function: None,
            missing: None,
        }
    }

    fn counts(ok: u64, failed: u64, rolled: u64) -> BTreeMap<String, u64> {
        [
            ("on_release", ok),
            ("failed", failed),
            ("rolled_back", rolled),
            ("waiting", 7),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    #[test]
    fn gate_rules() {
        let g = gate("s", "1", &counts(1, 1, 0), &info(None, None));
        assert_eq!(g.state, GateState::Open);
        let unknown = ChannelInfo::missing("no verified manifest".into());
        let g = gate("s", "1", &counts(100, 0, 0), &unknown);
        assert_eq!(
            (g.state, g.reason.as_str()),
            (GateState::Closed, "no verified manifest")
        );
        let g = gate("s", "1", &counts(1, 1, 1), &info(Some(0.5), Some(5)));
        assert_eq!((g.state, g.reports, g.failed), (GateState::Open, 3, 2));
        let g = gate("s", "1", &counts(3, 1, 1), &info(Some(0.5), Some(5)));
        assert_eq!(g.state, GateState::Open, "{}", g.reason);
        let g = gate("s", "1", &counts(2, 2, 1), &info(Some(0.5), Some(5)));
        assert_eq!(g.state, GateState::Closed, "{}", g.reason);
        assert_eq!(g.failure_rate, Some(0.6));
        // exactly at the threshold stays open
        let g = gate("s", "1", &counts(1, 1, 0), &info(Some(0.5), None));
        assert_eq!(g.state, GateState::Open);
    }

    #[test]
    fn an_agent_silent_on_a_release_is_in_the_wave_the_manifest_gives_it() {
        let ws: Vec<Wave> = serde_json::from_value(serde_json::json!([
            {"name": "canary", "percent": 50.0, "after": "0s", "spread": "0s"},
            {"name": "all", "percent": 100.0, "after": "1d", "spread": "0s"}
        ]))
        .unwrap();
        let start = "2026-01-01T00:00:00Z".parse().unwrap();
        let i = ChannelInfo {
            wave_function: Some((ws.clone(), start)),
            ..info(Some(0.1), None)
        };
        let rows: Vec<RolloutRow> = (0..40)
            .map(|n| RolloutRow {
                agent_id: format!("h{n}"),
                version: Some("1".into()),
                wave: None,
                // the previous release's wave
                latest_wave: Some("half".into()),
                last_seen: Some(0),
                state: None,
                host_state: None,
            })
            .collect();
        let p = progress("s", "2", &rows, &i, 0, 1_000_000, false);
        let names: Vec<&str> = p.waves.iter().map(|w| w.wave.as_str()).collect();
        assert_eq!(names, ["canary", "all"], "no wave of another release");
        for w in &p.waves {
            let expect = rows
                .iter()
                .filter(|r| {
                    let b = wave::bucket("s", "2", &r.agent_id);
                    wave::slot(&ws, start, b).unwrap().wave == w.wave
                })
                .count() as u64;
            assert_eq!(w.agents, expect, "{}", w.wave);
        }
    }

    #[test]
    fn progress_columns_are_exclusive() {
        let now = 10_000_000_000;
        let row = |id: &str, state: Option<&str>, wave: &str, seen: i64, v: &str| RolloutRow {
            agent_id: id.into(),
            version: Some(v.into()),
            wave: Some(wave.into()),
            latest_wave: None,
            last_seen: Some(seen),
            state: state.map(str::to_owned),
            host_state: None,
        };
        let rows = vec![
            row("a", Some("on_release"), "canary", now, "2"),
            row("b", Some("failed"), "canary", 0, "1"),
            row("c", Some("installing"), "canary", now, "1"),
            row("d", None, "all", 0, "1"),
            row("e", None, "all", now, "1"),
            row("f", None, "all", now, "2"),
            row("g", None, "other", now, "1"),
        ];
        let p = progress(
            "s",
            "2",
            &rows,
            &info(Some(0.1), None),
            now,
            1_000_000,
            false,
        );
        let names: Vec<&str> = p.waves.iter().map(|w| w.wave.as_str()).collect();
        assert_eq!(names, ["canary", "all", "other"]);
        let c = &p.waves[0];
        assert_eq!((c.on_release, c.failed, c.installing), (1, 1, 1));
        let a = &p.waves[1];
        assert_eq!((a.not_reporting, a.waiting, a.on_release), (1, 1, 1));
        assert_eq!(p.agents, 7);
        assert!(p.active);
        // the gate counts reported outcomes only: a (ok) and b (failed)
        assert_eq!((p.gate.reports, p.gate.failed), (2, 1));
        assert_eq!(p.gate.state, GateState::Closed);
    }

    #[test]
    fn under_a_manual_halt_agents_whose_turn_came_are_held() {
        let ws: Vec<Wave> = serde_json::from_value(serde_json::json!([
            {"name": "all", "percent": 100.0, "after": "0s", "spread": "0s"},
        ]))
        .unwrap();
        let start = "2026-01-01T00:00:00Z".parse().unwrap();
        let i = ChannelInfo {
            wave_function: Some((ws, start)),
            ..info(None, None)
        };
        let now = crate::db::to_micros("2026-01-02T00:00:00Z".parse().unwrap());
        let rows: Vec<RolloutRow> = (0..5)
            .map(|n| RolloutRow {
                agent_id: format!("h{n}"),
                version: Some("1".into()),
                wave: None,
                latest_wave: None,
                last_seen: Some(now),
                state: None,
                host_state: None,
            })
            .collect();
        let open = progress("s", "2", &rows, &i, now, 1_000_000, false);
        let halted = progress("s", "2", &rows, &i, now, 1_000_000, true);
        let all = |p: &RolloutProgress| {
            let w = p.waves.iter().find(|w| w.wave == "all").expect("wave all");
            (w.waiting, w.held)
        };
        assert_eq!(all(&open), (5, 0));
        assert_eq!(all(&halted), (5, 5));
    }
}
