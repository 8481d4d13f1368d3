//! What one manifest tells one agent, decided as `flotilla-agent` decides
//! (its `decide` module, pass step 5) up to the halt gate, for `plan`.
//!
//! 1. Pins, first match wins: a pin on a release holds the agent there (no
//!    waves); a pin on a channel makes it follow that channel.
//! 2. The channel's release. Already running it: up to date. Lower than the
//!    running version: refused unless the channel says `allow_downgrade`.
//! 3. `paused`: nobody moves.
//! 4. The wave: [`flotilla_protocol::wave`]'s bucket of channel + release +
//!    agent id, and the slot that gives its turn.
//! 5. Stepping stones: below the target's `min_from`, the newest release in
//!    `[min_from, target)` first, repeatedly.
//!
//! The agent's own inputs that the reporter does not know (its target
//! triple, a release it rolled back from) are left out. The agent crate is
//! not a dependency of the publisher (dependencies point one way), so the
//! rules are repeated here; `publisher/tests/reporter_cli.rs` checks the
//! turns against the wave function.

use std::collections::BTreeMap;

use flotilla_protocol::api::AgentSummary;
use flotilla_protocol::wave::{self, Slot};
use flotilla_protocol::{Channel, DowngradePolicy, Manifest, PinTarget};
use semver::Version;

/// The channel in the agent's config, as far as the reporter tells: the one
/// it reports following, unless a base pin is what sends it there.
pub(crate) fn configured_channel(base: &Manifest, a: &AgentSummary) -> Option<String> {
    let reported = a.channel.clone()?;
    let pinned_there = base
        .pins
        .iter()
        .find(|p| p.matches(&a.agent_id, &a.labels))
        .and_then(|p| p.target())
        .is_some_and(|t| t == PinTarget::Channel(&reported));
    (!pinned_there).then_some(reported)
}

/// Who is deciding, as the reporter knows it.
pub(crate) struct AgentView<'a> {
    /// Agent id.
    pub id: &'a str,
    /// Its labels.
    pub labels: &'a BTreeMap<String, String>,
    /// The channel in its config, if known.
    pub channel: Option<&'a str>,
    /// The version it runs, if known.
    pub version: Option<&'a Version>,
}

/// What one manifest tells one agent.
#[derive(Clone, Debug)]
pub(crate) struct Resolution {
    /// Index of the first matching pin.
    pub pin: Option<usize>,
    /// The release that pin holds it on.
    pub pin_release: Option<Version>,
    /// The channel it follows (its own, or a pin's).
    pub followed: Option<String>,
    /// What it does.
    pub outcome: Outcome,
}

impl Resolution {
    /// Same target, same turn, same reason: the pin's position in the list
    /// does not matter.
    pub fn same_effect(&self, other: &Resolution) -> bool {
        self.pin_release == other.pin_release
            && self.followed == other.followed
            && self.outcome == other.outcome
    }
}

/// What an agent does under a manifest.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Outcome {
    NoChannel,
    UnknownChannel(String),
    UnknownRelease(Version),
    UpToDate(Version),
    DowngradeRefused(Version),
    Paused(Version),
    InvalidWaves(Version),
    NoSteppingStone {
        target: Version,
        min_from: Version,
    },
    Moves {
        target: Version,
        via: Option<Version>,
        slot: Option<Slot>,
    },
}

impl Outcome {
    /// Why it does not move, for the reader.
    pub fn held_reason(&self) -> String {
        match self {
            Outcome::NoChannel => "own channel unknown".into(),
            Outcome::UnknownChannel(c) => {
                format!(
                    "follow channel {c}, which the manifest no longer has: they keep what they run"
                )
            }
            Outcome::UnknownRelease(v) => format!("release {v} is not in the manifest"),
            Outcome::UpToDate(v) => format!("already on {v}"),
            Outcome::DowngradeRefused(v) => {
                format!("run a newer version than {v} and the channel refuses downgrades")
            }
            Outcome::Paused(_) => "the channel is paused: they wait for `rollout resume`".into(),
            Outcome::InvalidWaves(_) => "the channel's waves do not reach 100%".into(),
            Outcome::NoSteppingStone { target, min_from } => {
                format!("{target} needs {min_from} or later first, and the manifest offers no stepping stone")
            }
            Outcome::Moves { .. } => "move".into(),
        }
    }
}

/// The agent's decision up to the wave, as `flotilla-agent` makes it.
pub(crate) fn resolve(m: &Manifest, a: &AgentView<'_>) -> Resolution {
    let pin = m.pins.iter().position(|p| p.matches(a.id, a.labels));
    let mut channel_name = a.channel;
    let mut pinned: Option<&Version> = None;
    match pin.and_then(|i| m.pins[i].target()) {
        Some(PinTarget::Release(v)) => pinned = Some(v),
        Some(PinTarget::Channel(c)) => channel_name = Some(c),
        None => {}
    }
    let mut r = Resolution {
        pin,
        pin_release: pinned.cloned(),
        followed: channel_name.map(str::to_owned),
        outcome: Outcome::NoChannel,
    };
    let channel = match channel_name.map(|c| (c, m.channels.get(c))) {
        Some((_, Some(c))) => Some(c),
        Some((c, None)) => {
            r.outcome = Outcome::UnknownChannel(c.to_owned());
            return r;
        }
        // A release pin still applies; the agent checks its own channel,
        // which is not known here.
        None if pinned.is_some() => None,
        None => return r,
    };
    let target = match (pinned, channel) {
        (Some(v), _) => v,
        (None, Some(c)) => &c.release,
        (None, None) => return r,
    };
    r.outcome = decide(m, a, channel, target, pinned.is_some(), channel_name);
    r
}

fn decide(
    m: &Manifest,
    a: &AgentView<'_>,
    channel: Option<&Channel>,
    target: &Version,
    pinned: bool,
    channel_name: Option<&str>,
) -> Outcome {
    if m.release(target).is_none() {
        return Outcome::UnknownRelease(target.clone());
    }
    if a.version == Some(target) {
        return Outcome::UpToDate(target.clone());
    }
    let refuses = channel.is_none_or(|c| c.allow_downgrade == DowngradePolicy::Refuse);
    if a.version.is_some_and(|v| target < v) && refuses {
        return Outcome::DowngradeRefused(target.clone());
    }
    let mut slot = None;
    if let (false, Some(c), Some(name)) = (pinned, channel, channel_name) {
        if c.paused {
            return Outcome::Paused(target.clone());
        }
        let b = wave::bucket(name, &target.to_string(), a.id);
        match wave::slot(&c.waves, c.start, b) {
            Some(s) => slot = Some(s),
            None => return Outcome::InvalidWaves(target.clone()),
        }
    }
    let via = match a.version {
        Some(v) if target > v => match stepping_stone(m, v, target) {
            Ok(stone) => (stone != *target).then_some(stone),
            Err(min_from) => {
                return Outcome::NoSteppingStone {
                    target: target.clone(),
                    min_from,
                }
            }
        },
        _ => None,
    };
    Outcome::Moves {
        target: target.clone(),
        via,
        slot,
    }
}

/// The agent's stepping-stone rule: the newest release in `[min_from,
/// target)` above `current`, repeatedly; `Err(min_from)` if none.
fn stepping_stone(m: &Manifest, current: &Version, target: &Version) -> Result<Version, Version> {
    let mut t = target.clone();
    for _ in 0..64 {
        let Some(rel) = m.release(&t) else {
            return Ok(t);
        };
        match &rel.min_from {
            Some(min) if current < min => {
                let next = m
                    .releases
                    .values()
                    .map(|r| &r.version)
                    .filter(|v| *v >= min && **v < t && *v > current)
                    .max();
                match next {
                    Some(v) => t = v.clone(),
                    None => return Err(min.clone()),
                }
            }
            _ => return Ok(t),
        }
    }
    Ok(t)
}
