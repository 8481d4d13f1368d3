//! Deciding the target (DESIGN.md, pass step 5): a pure function of the
//! verified manifest, the agent's identity, its running version and the time.
//!
//! 1. Pins, first match wins: a pin on a release holds the agent on that
//!    release (no waves); a pin on a channel makes it follow that channel.
//! 2. The channel's release. Already running it: up to date. Lower than the
//!    running version: refused unless the channel says `allow_downgrade`.
//! 3. `paused`: nobody moves.
//! 4. The wave ([`flotilla_protocol::wave`]): bucket of channel + release +
//!    agent id; the agent's turn comes at the slot's `eligible_at`.
//! 5. Stepping stones: if the target has `min_from` above the running
//!    version, go first to the newest release in `[min_from, target)` the
//!    manifest carries (repeatedly, if that one has its own `min_from`).
//! 6. A release that failed its health check here and was rolled back is not
//!    installed again (the caller forgets it once a decision names another).
//! 7. The release must have an artifact for the agent's target triple.
//!
//! The halt gate (the reporter's opinion) is asked afterwards, by
//! [`crate::gate`], only when this says [`Decision::Update`].

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use flotilla_protocol::wave::{bucket, slot};
use flotilla_protocol::{Artifact, DowngradePolicy, Manifest, PinTarget};
use semver::Version;

/// Who is deciding.
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
    /// The reporter's halt gate is closed.
    GateClosed(String),
    /// The gate could not be asked and the policy is `wait`.
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

/// Decides what `agent` does under `manifest` at `now`.
pub fn decide(manifest: &Manifest, agent: &Agent<'_>, now: DateTime<Utc>) -> Decision {
    let mut channel_name = agent.channel;
    let mut pinned: Option<&Version> = None;
    if let Some(pin) = manifest
        .pins
        .iter()
        .find(|p| p.matches(agent.id, agent.labels))
    {
        match pin.target() {
            Some(PinTarget::Release(v)) => pinned = Some(v),
            Some(PinTarget::Channel(c)) => channel_name = c,
            None => {}
        }
    }
    let defer = |reason, target: Option<&Version>, wave: Option<String>, at| {
        Decision::Defer(Deferral {
            reason,
            channel: channel_name.to_owned(),
            target: target.cloned(),
            wave,
            eligible_at: at,
        })
    };
    let Some(channel) = manifest.channels.get(channel_name) else {
        return defer(DeferReason::UnknownChannel, None, None, None);
    };
    let target = pinned.unwrap_or(&channel.release);
    if manifest.release(target).is_none() {
        return defer(
            DeferReason::UnknownRelease(target.clone()),
            Some(target),
            None,
            None,
        );
    }
    if target == agent.version {
        return Decision::UpToDate {
            channel: channel_name.to_owned(),
            release: target.clone(),
        };
    }
    if target < agent.version && channel.allow_downgrade == DowngradePolicy::Refuse {
        return defer(DeferReason::DowngradeRefused, Some(target), None, None);
    }
    let (mut wave, mut eligible_at) = (None, None);
    if pinned.is_none() {
        if channel.paused {
            return defer(DeferReason::Paused, Some(target), None, None);
        }
        let b = bucket(channel_name, &target.to_string(), agent.id);
        let Some(s) = slot(&channel.waves, channel.start, b) else {
            return defer(DeferReason::InvalidWaves, Some(target), None, None);
        };
        wave = Some(s.wave);
        eligible_at = Some(s.eligible_at);
        if now < s.eligible_at {
            return defer(DeferReason::WaveNotOpen, Some(target), wave, eligible_at);
        }
    }
    let release = if target > agent.version {
        match stepping_stone(manifest, agent.version, target) {
            Ok(v) => v,
            Err(min_from) => {
                return defer(
                    DeferReason::NoSteppingStone { min_from },
                    Some(target),
                    wave,
                    eligible_at,
                )
            }
        }
    } else {
        target.clone()
    };
    if agent.blocked == Some(release.to_string().as_str()) {
        return defer(DeferReason::Blocked, Some(&release), wave, eligible_at);
    }
    let Some(artifact) = manifest
        .release(&release)
        .and_then(|r| r.artifacts.get(agent.target))
    else {
        return defer(DeferReason::NoArtifact, Some(&release), wave, eligible_at);
    };
    Decision::Update(Plan {
        channel: channel_name.to_owned(),
        release,
        final_release: target.clone(),
        artifact: artifact.clone(),
        wave,
        eligible_at,
        pinned: pinned.is_some(),
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
    use flotilla_protocol::sources::{Channel, Pin, Release, Wave};
    use flotilla_protocol::HumanDuration;

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

    fn run(m: &Manifest, version: &str, blocked: Option<&str>) -> Decision {
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
            "2026-02-01T00:00:00Z".parse().unwrap(),
        )
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
    fn pins_hold_and_switch() {
        let mut m = manifest("2.0.0", &[rel("1.0.0", None), rel("2.0.0", None)]);
        m.pins.push(Pin {
            agents: vec!["a1".into()],
            labels: BTreeMap::new(),
            release: Some("1.0.0".parse().unwrap()),
            channel: None,
            note: None,
        });
        assert!(matches!(run(&m, "1.0.0", None), Decision::UpToDate { .. }));
        assert!(matches!(
            run(&m, "2.0.0", None),
            Decision::Defer(Deferral {
                reason: DeferReason::DowngradeRefused,
                ..
            })
        ));
    }
}
