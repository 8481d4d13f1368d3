//! Deciding the target (docs/design.md, agent pass step 5): a pure function of the
//! verified manifest, the agent's identity, its running version and the time.
//! The one implementation that the agent acts on and that
//! `flotilla-publisher plan` predicts with.
//!
//! [`route`] applies the rules that need only what the reporter also knows
//! (id, labels, channel, running version):
//!
//! 1. Pins, first match wins: a pin on a release holds the agent on that
//!    release (no waves); a pin on a channel makes it follow that channel.
//! 2. The channel's release. Already running it: up to date. Lower than the
//!    running version: refused unless the channel says `allow_downgrade`.
//! 3. `paused`: nobody moves.
//! 4. The wave ([`crate::wave`]): bucket of channel + release + agent id;
//!    the slot gives the agent's turn.
//! 5. Stepping stones: if the target has `min_from` above the running
//!    version, go first to the newest release in `[min_from, target)` the
//!    manifest carries (repeatedly, if that one has its own `min_from`).
//!
//! [`decide`] is the agent's whole decision: the route, then what only the
//! host knows and the clock says:
//!
//! 6. The turn: nothing moves before the slot's `eligible_at` (asked before
//!    the stepping stone's absence is reported).
//! 7. A release that failed its health check here and was rolled back is not
//!    installed again (the caller forgets it once a decision names another).
//! 8. The release must have an artifact for the agent's target triple.
//!
//! The halt gate (the reporter's opinion) is asked afterwards, by the agent,
//! only when this says [`Decision::Update`]; its answers are the
//! [`DeferReason::GateClosed`] and [`DeferReason::GateUnreachable`] reasons.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use semver::Version;

use crate::sources::{Artifact, DowngradePolicy, PinTarget};
use crate::wave::{bucket, slot, Slot};
use crate::Manifest;

/// Who is deciding: the agent, which knows all of this.
#[derive(Clone, Copy, Debug)]
pub struct Agent<'a> {
    /// Agent id.
    pub id: &'a str,
    /// The channel the config names.
    pub channel: &'a str,
    /// The agent's labels.
    pub labels: &'a BTreeMap<String, String>,
    /// The running version.
    pub version: &'a Version,
    /// The target triple of artifacts it can run.
    pub target: &'a str,
    /// A release this host rolled back from and will not retry.
    pub blocked: Option<&'a str>,
}

impl<'a> Agent<'a> {
    /// What [`route`] needs of it.
    pub fn view(&self) -> AgentView<'a> {
        AgentView {
            id: self.id,
            labels: self.labels,
            channel: Some(self.channel),
            version: Some(self.version),
        }
    }
}

/// An agent as far as it is known: all of it to the agent itself; to the
/// publisher's `plan`, what the reporter tells.
#[derive(Clone, Copy, Debug)]
pub struct AgentView<'a> {
    /// Agent id.
    pub id: &'a str,
    /// Its labels.
    pub labels: &'a BTreeMap<String, String>,
    /// The channel its config names; `None` when not known. A channel pin
    /// still applies; a release pin still holds it, refusing downgrades.
    pub channel: Option<&'a str>,
    /// The version it runs; `None` when not known: it is taken to move
    /// straight to the target (never up to date, no downgrade refused, no
    /// stepping stone).
    pub version: Option<&'a Version>,
}

/// Where the rules of steps 1–5 lead an agent, whatever the time.
#[derive(Clone, Debug, PartialEq)]
pub struct Route {
    /// Index in the manifest's pins of the first that matches.
    pub pin: Option<usize>,
    /// The release that pin holds the agent on.
    pub pinned: Option<Version>,
    /// The channel followed: a channel pin's or the agent's own; `None` only
    /// when its own is not known and no channel pin names one.
    pub channel: Option<String>,
    /// What it does.
    pub course: Course,
}

/// What an agent does under a manifest, up to its turn and its host.
#[derive(Clone, Debug, PartialEq)]
pub enum Course {
    /// Its own channel is not known and no pin applies.
    NoChannel,
    /// The channel followed is not in the manifest.
    UnknownChannel,
    /// A pin or the channel names a release the manifest lacks.
    UnknownRelease(Version),
    /// It runs the release already.
    UpToDate(Version),
    /// The release is below the running version and downgrades are refused.
    DowngradeRefused(Version),
    /// The channel is paused.
    Paused(Version),
    /// The channel's waves do not cover the agent's bucket.
    InvalidWaves(Version),
    /// The target has a `min_from` above the running version and no release
    /// can be a stepping stone.
    NoSteppingStone {
        /// The release the channel or pin names.
        target: Version,
        /// Its `min_from`.
        min_from: Version,
        /// The agent's turn (none when pinned).
        slot: Option<Slot>,
    },
    /// It moves, at its turn.
    Moves {
        /// The release the channel or pin names.
        target: Version,
        /// A stepping stone it installs first.
        via: Option<Version>,
        /// The agent's turn (none when pinned: at once).
        slot: Option<Slot>,
    },
}

/// What to do.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// Running what the channel (or pin) says.
    UpToDate {
        /// The channel followed.
        channel: String,
        /// The release.
        release: Version,
    },
    /// Something to move to, but not now.
    Defer(Deferral),
    /// Install this.
    Update(Plan),
}

/// An update that is known but not taken.
#[derive(Clone, Debug, PartialEq)]
pub struct Deferral {
    /// Why.
    pub reason: DeferReason,
    /// The channel followed.
    pub channel: String,
    /// The release it would move to.
    pub target: Option<Version>,
    /// The agent's wave.
    pub wave: Option<String>,
    /// When the agent's turn comes.
    pub eligible_at: Option<DateTime<Utc>>,
}

/// Why an update is deferred.
#[derive(Clone, Debug, PartialEq)]
pub enum DeferReason {
    /// The manifest has no such channel.
    UnknownChannel,
    /// A pin or channel names a release the manifest lacks.
    UnknownRelease(Version),
    /// The channel is paused.
    Paused,
    /// The agent's wave has not opened, or its turn within it has not come.
    WaveNotOpen,
    /// The channel's waves do not cover the agent's bucket.
    InvalidWaves,
    /// The target is below the running version and downgrades are refused.
    DowngradeRefused,
    /// No release is allowed as a stepping stone toward the target.
    NoSteppingStone {
        /// The target's `min_from`.
        min_from: Version,
    },
    /// The release failed its health check on this host.
    Blocked,
    /// The release has no artifact for this agent's target triple.
    NoArtifact,
    /// The reporter's halt gate is closed (set by the agent after asking
    /// the gate; [`decide`] never says it).
    GateClosed(String),
    /// The gate could not be asked and the policy is `wait` (set by the
    /// agent; [`decide`] never says it).
    GateUnreachable(String),
}

impl fmt::Display for DeferReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeferReason::UnknownChannel => write!(f, "the manifest has no such channel"),
            DeferReason::UnknownRelease(v) => write!(f, "release {v} is not in the manifest"),
            DeferReason::Paused => write!(f, "the channel is paused"),
            DeferReason::WaveNotOpen => write!(f, "this agent's turn in its wave has not come"),
            DeferReason::InvalidWaves => write!(f, "the channel's waves do not reach 100%"),
            DeferReason::DowngradeRefused => {
                write!(f, "the target is older than the running version and the channel does not allow downgrades")
            }
            DeferReason::NoSteppingStone { min_from } => write!(
                f,
                "the target needs {min_from} or later first, and the manifest offers no such release"
            ),
            DeferReason::Blocked => write!(
                f,
                "this release failed its health check here and was rolled back; waiting for a manifest that names another"
            ),
            DeferReason::NoArtifact => write!(f, "the release has no artifact for this target"),
            DeferReason::GateClosed(r) => write!(f, "the halt gate is closed: {r}"),
            DeferReason::GateUnreachable(r) => {
                write!(f, "the halt gate cannot be asked ({r}) and gate_unreachable = \"wait\"")
            }
        }
    }
}

/// An update to carry out.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// The channel followed.
    pub channel: String,
    /// The release to install now.
    pub release: Version,
    /// The release the channel (or pin) names; differs from `release` when
    /// a stepping stone comes first.
    pub final_release: Version,
    /// The artifact for this agent's target.
    pub artifact: Artifact,
    /// The agent's wave (none when pinned).
    pub wave: Option<String>,
    /// When its turn came.
    pub eligible_at: Option<DateTime<Utc>>,
    /// Whether a pin decided it.
    pub pinned: bool,
}

impl Decision {
    /// The release this decision heads for, if any.
    pub fn target(&self) -> Option<&Version> {
        match self {
            Decision::UpToDate { release, .. } => Some(release),
            Decision::Defer(d) => d.target.as_ref(),
            Decision::Update(p) => Some(&p.release),
        }
    }
}

/// Steps 1–5: where `manifest` leads `agent`, whatever the time and host.
pub fn route(manifest: &Manifest, agent: &AgentView<'_>) -> Route {
    let pin = manifest
        .pins
        .iter()
        .position(|p| p.matches(agent.id, agent.labels));
    let mut channel_name = agent.channel;
    let mut pinned: Option<&Version> = None;
    match pin.and_then(|i| manifest.pins[i].target()) {
        Some(PinTarget::Release(v)) => pinned = Some(v),
        Some(PinTarget::Channel(c)) => channel_name = Some(c),
        None => {}
    }
    let course = course(manifest, agent, channel_name, pinned);
    Route {
        pin,
        pinned: pinned.cloned(),
        channel: channel_name.map(str::to_owned),
        course,
    }
}

fn course(
    manifest: &Manifest,
    agent: &AgentView<'_>,
    channel_name: Option<&str>,
    pinned: Option<&Version>,
) -> Course {
    let channel = match channel_name.map(|c| manifest.channels.get(c)) {
        Some(Some(c)) => Some(c),
        Some(None) => return Course::UnknownChannel,
        // A release pin holds an agent whose own channel is not known.
        None if pinned.is_some() => None,
        None => return Course::NoChannel,
    };
    let Some(target) = pinned.or(channel.map(|c| &c.release)) else {
        return Course::NoChannel;
    };
    if manifest.release(target).is_none() {
        return Course::UnknownRelease(target.clone());
    }
    if agent.version == Some(target) {
        return Course::UpToDate(target.clone());
    }
    let refuses = channel.is_none_or(|c| c.allow_downgrade == DowngradePolicy::Refuse);
    if agent.version.is_some_and(|v| target < v) && refuses {
        return Course::DowngradeRefused(target.clone());
    }
    let mut turn = None;
    if let (None, Some(c), Some(name)) = (pinned, channel, channel_name) {
        if c.paused {
            return Course::Paused(target.clone());
        }
        let b = bucket(name, &target.to_string(), agent.id);
        match slot(&c.waves, c.start, b) {
            Some(s) => turn = Some(s),
            None => return Course::InvalidWaves(target.clone()),
        }
    }
    let via = match agent.version {
        Some(v) if target > v => match stepping_stone(manifest, v, target) {
            Ok(stone) => (stone != *target).then_some(stone),
            Err(min_from) => {
                return Course::NoSteppingStone {
                    target: target.clone(),
                    min_from,
                    slot: turn,
                }
            }
        },
        _ => None,
    };
    Course::Moves {
        target: target.clone(),
        via,
        slot: turn,
    }
}

/// Decides what `agent` does under `manifest` at `now`: [`route`], then its
/// turn, a blocked release and its target triple (steps 6–8).
pub fn decide(manifest: &Manifest, agent: &Agent<'_>, now: DateTime<Utc>) -> Decision {
    let r = route(manifest, &agent.view());
    let channel = r.channel.unwrap_or_else(|| agent.channel.to_owned());
    let defer = |reason, target: Option<&Version>, slot: Option<&Slot>| {
        Decision::Defer(Deferral {
            reason,
            channel: channel.clone(),
            target: target.cloned(),
            wave: slot.map(|s| s.wave.clone()),
            eligible_at: slot.map(|s| s.eligible_at),
        })
    };
    let (target, next, slot) = match r.course {
        Course::NoChannel | Course::UnknownChannel => {
            return defer(DeferReason::UnknownChannel, None, None)
        }
        Course::UnknownRelease(v) => {
            return defer(DeferReason::UnknownRelease(v.clone()), Some(&v), None)
        }
        Course::UpToDate(release) => return Decision::UpToDate { channel, release },
        Course::DowngradeRefused(v) => return defer(DeferReason::DowngradeRefused, Some(&v), None),
        Course::Paused(v) => return defer(DeferReason::Paused, Some(&v), None),
        Course::InvalidWaves(v) => return defer(DeferReason::InvalidWaves, Some(&v), None),
        Course::NoSteppingStone {
            target,
            min_from,
            slot,
        } => (target, Err(min_from), slot),
        Course::Moves { target, via, slot } => (target, Ok(via), slot),
    };
    if let Some(s) = slot.as_ref().filter(|s| now < s.eligible_at) {
        return defer(DeferReason::WaveNotOpen, Some(&target), Some(s));
    }
    let release = match next {
        Ok(via) => via.unwrap_or_else(|| target.clone()),
        Err(min_from) => {
            return defer(
                DeferReason::NoSteppingStone { min_from },
                Some(&target),
                slot.as_ref(),
            )
        }
    };
    if agent.blocked == Some(release.to_string().as_str()) {
        return defer(DeferReason::Blocked, Some(&release), slot.as_ref());
    }
    let Some(artifact) = manifest
        .release(&release)
        .and_then(|rel| rel.artifacts.get(agent.target))
    else {
        return defer(DeferReason::NoArtifact, Some(&release), slot.as_ref());
    };
    Decision::Update(Plan {
        channel,
        artifact: artifact.clone(),
        release,
        final_release: target,
        wave: slot.as_ref().map(|s| s.wave.clone()),
        eligible_at: slot.map(|s| s.eligible_at),
        pinned: r.pinned.is_some(),
    })
}

/// The release to install now on the way from `current` to `target`:
/// `target` itself, or the newest release in `[min_from, target)` above
/// `current`, recursively. `Err(min_from)` if none is available.
fn stepping_stone(
    manifest: &Manifest,
    current: &Version,
    target: &Version,
) -> Result<Version, Version> {
    let mut t = target.clone();
    for _ in 0..64 {
        let Some(rel) = manifest.release(&t) else {
            return Ok(t);
        };
        match &rel.min_from {
            Some(m) if current < m => {
                let next = manifest
                    .releases
                    .values()
                    .map(|r| &r.version)
                    .filter(|v| *v >= m && **v < t && *v > current)
                    .max();
                match next {
                    Some(v) => t = v.clone(),
                    None => return Err(m.clone()),
                }
            }
            _ => return Ok(t),
        }
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::{Channel, Pin, Release, Wave};
    use crate::HumanDuration;

    fn rel(v: &str, min_from: Option<&str>) -> Release {
        let mut artifacts = BTreeMap::new();
        artifacts.insert(
            "t".to_string(),
            Artifact {
                path: format!("a/{v}"),
                sha256: "a".repeat(64),
                size: 1,
            },
        );
        Release {
            version: v.parse().unwrap(),
            min_from: min_from.map(|m| m.parse().unwrap()),
            notes: None,
            artifacts,
        }
    }

    fn manifest(release: &str, releases: &[Release]) -> Manifest {
        let start: DateTime<Utc> = "2026-01-01T00:00:00Z".parse().unwrap();
        let mut channels = BTreeMap::new();
        channels.insert(
            "stable".to_string(),
            Channel {
                release: release.parse().unwrap(),
                start,
                paused: false,
                allow_downgrade: DowngradePolicy::Refuse,
                max_failure_rate: None,
                min_reports: None,
                waves: vec![Wave {
                    name: "all".into(),
                    percent: 100.0,
                    after: HumanDuration::from_secs(0),
                    spread: HumanDuration::from_secs(0),
                }],
            },
        );
        Manifest {
            fleet: "f".into(),
            serial: 1,
            issued: start,
            expires: start + chrono::Duration::days(365),
            artifact_base_urls: vec![],
            reporter_url: None,
            releases: releases
                .iter()
                .map(|r| (r.version.to_string(), r.clone()))
                .collect(),
            channels,
            pins: vec![],
        }
    }

    fn pin(release: Option<&str>, channel: Option<&str>) -> Pin {
        Pin {
            agents: vec!["a1".into()],
            labels: BTreeMap::new(),
            release: release.map(|r| r.parse().unwrap()),
            channel: channel.map(str::to_owned),
            note: None,
        }
    }

    fn at(m: &Manifest, version: &str, blocked: Option<&str>, now: &str) -> Decision {
        let labels = BTreeMap::new();
        let v: Version = version.parse().unwrap();
        decide(
            m,
            &Agent {
                id: "a1",
                channel: "stable",
                labels: &labels,
                version: &v,
                target: "t",
                blocked,
            },
            now.parse().unwrap(),
        )
    }

    fn run(m: &Manifest, version: &str, blocked: Option<&str>) -> Decision {
        at(m, version, blocked, "2026-02-01T00:00:00Z")
    }

    /// What the reporter may know of `a1`.
    fn route_of(m: &Manifest, channel: Option<&str>, version: Option<&str>) -> Route {
        let labels = BTreeMap::new();
        let v: Option<Version> = version.map(|v| v.parse().unwrap());
        route(
            m,
            &AgentView {
                id: "a1",
                labels: &labels,
                channel,
                version: v.as_ref(),
            },
        )
    }

    fn v(s: &str) -> Version {
        s.parse().unwrap()
    }

    #[test]
    fn up_to_date_update_and_blocked() {
        let m = manifest("2.0.0", &[rel("1.0.0", None), rel("2.0.0", None)]);
        assert!(matches!(run(&m, "2.0.0", None), Decision::UpToDate { .. }));
        let Decision::Update(p) = run(&m, "1.0.0", None) else {
            panic!()
        };
        assert_eq!(p.release.to_string(), "2.0.0");
        assert_eq!(p.wave.as_deref(), Some("all"));
        let Decision::Defer(d) = run(&m, "1.0.0", Some("2.0.0")) else {
            panic!()
        };
        assert_eq!(d.reason, DeferReason::Blocked);
    }

    #[test]
    fn stepping_stones_chain() {
        let m = manifest(
            "4.0.0",
            &[
                rel("2.0.0", None),
                rel("2.5.0", None),
                rel("3.0.0", Some("2.0.0")),
                rel("4.0.0", Some("3.0.0")),
            ],
        );
        let step = |v| match run(&m, v, None) {
            Decision::Update(p) => p.release.to_string(),
            other => panic!("{other:?}"),
        };
        assert_eq!(step("1.0.0"), "2.5.0");
        assert_eq!(step("2.5.0"), "3.0.0");
        assert_eq!(step("3.0.0"), "4.0.0");
        let m = manifest("3.0.0", &[rel("3.0.0", Some("2.0.0"))]);
        assert!(matches!(
            run(&m, "1.0.0", None),
            Decision::Defer(Deferral {
                reason: DeferReason::NoSteppingStone { .. },
                ..
            })
        ));
    }

    #[test]
    fn the_turn_is_told_before_a_missing_stepping_stone() {
        let mut m = manifest("3.0.0", &[rel("3.0.0", Some("2.0.0"))]);
        m.channels.get_mut("stable").unwrap().waves[0].after = HumanDuration::from_secs(86400);
        let Decision::Defer(d) = at(&m, "1.0.0", None, "2026-01-01T12:00:00Z") else {
            panic!()
        };
        assert_eq!(d.reason, DeferReason::WaveNotOpen);
        assert_eq!(d.wave.as_deref(), Some("all"));
        let Decision::Defer(d) = at(&m, "1.0.0", None, "2026-01-02T00:00:00Z") else {
            panic!()
        };
        assert_eq!(
            d.reason,
            DeferReason::NoSteppingStone {
                min_from: v("2.0.0")
            }
        );
        assert!(d.eligible_at.is_some());
    }

    #[test]
    fn no_artifact_for_the_target_triple() {
        let mut m = manifest("2.0.0", &[rel("1.0.0", None), rel("2.0.0", None)]);
        m.releases.get_mut("2.0.0").unwrap().artifacts.clear();
        let Decision::Defer(d) = run(&m, "1.0.0", None) else {
            panic!()
        };
        assert_eq!(d.reason, DeferReason::NoArtifact);
        assert_eq!(d.target, Some(v("2.0.0")));
    }

    #[test]
    fn pins_hold_and_switch() {
        let mut m = manifest("2.0.0", &[rel("1.0.0", None), rel("2.0.0", None)]);
        m.pins.push(pin(Some("1.0.0"), None));
        assert!(matches!(run(&m, "1.0.0", None), Decision::UpToDate { .. }));
        assert!(matches!(
            run(&m, "2.0.0", None),
            Decision::Defer(Deferral {
                reason: DeferReason::DowngradeRefused,
                ..
            })
        ));
        // A channel pin to a channel the manifest lacks.
        m.pins[0] = pin(None, Some("gone"));
        let Decision::Defer(d) = run(&m, "1.0.0", None) else {
            panic!()
        };
        assert_eq!(
            (d.reason, d.channel.as_str()),
            (DeferReason::UnknownChannel, "gone")
        );
    }

    #[test]
    fn the_route_is_the_decision_without_the_clock_or_the_host() {
        let m = manifest("2.0.0", &[rel("1.0.0", None), rel("2.0.0", None)]);
        let r = route_of(&m, Some("stable"), Some("1.0.0"));
        let Course::Moves {
            target,
            via: None,
            slot: Some(s),
        } = &r.course
        else {
            panic!("{r:?}")
        };
        assert_eq!((target, s.wave.as_str()), (&v("2.0.0"), "all"));
        assert_eq!((r.pin, r.channel.as_deref()), (None, Some("stable")));
    }

    #[test]
    fn what_the_reporter_does_not_know() {
        let mut m = manifest("2.0.0", &[rel("1.0.0", None), rel("2.0.0", Some("1.5.0"))]);
        // Version unknown: straight to the target, no stepping stone asked.
        let r = route_of(&m, Some("stable"), None);
        assert!(matches!(
            r.course,
            Course::Moves {
                via: None,
                slot: Some(_),
                ..
            }
        ));
        // Own channel unknown: nothing to say, unless a pin does.
        assert_eq!(route_of(&m, None, Some("1.0.0")).course, Course::NoChannel);
        m.pins.push(pin(None, Some("stable")));
        let r = route_of(&m, None, Some("1.0.0"));
        assert_eq!((r.pin, r.channel.as_deref()), (Some(0), Some("stable")));
        assert!(matches!(r.course, Course::NoSteppingStone { .. }));
        // A release pin holds it, with downgrades refused.
        m.pins[0] = pin(Some("1.0.0"), None);
        let r = route_of(&m, None, Some("2.0.0"));
        assert_eq!((r.channel, r.pinned), (None, Some(v("1.0.0"))));
        assert_eq!(r.course, Course::DowngradeRefused(v("1.0.0")));
        let r = route_of(&m, None, Some("0.9.0"));
        assert!(matches!(r.course, Course::Moves { slot: None, .. }));
    }
}
