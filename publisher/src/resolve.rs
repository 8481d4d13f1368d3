//! What `plan` needs around the agent's own decision
//! ([`flotilla_protocol::decide::route`], the function the agent acts on):
//! what the reporter can tell of an agent, when two routes count as the same,
//! and why an agent that does not move stays, in words.
//!
//! The reporter knows an agent's id, labels, running version and the channel
//! it *follows*; not its target triple, a release it rolled back from, nor
//! the time its next pass runs. So `plan` asks the route (pins, the
//! channel's release, up to date, downgrade, paused, the wave and its turn,
//! stepping stones) and not the full decision, which adds the clock and the
//! host.

use flotilla_protocol::api::AgentSummary;
use flotilla_protocol::decide::{Course, Route};
use flotilla_protocol::{Manifest, PinTarget};

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

/// Same target, same turn, same reason: the pin's position in the list
/// does not matter.
pub(crate) fn same_effect(a: &Route, b: &Route) -> bool {
    a.pinned == b.pinned && a.channel == b.channel && a.course == b.course
}

/// Why an agent on `r` does not move, for the reader.
pub(crate) fn held_reason(r: &Route) -> String {
    match &r.course {
        Course::NoChannel => "own channel unknown".into(),
        Course::UnknownChannel => format!(
            "follow channel {}, which the manifest no longer has: they keep what they run",
            r.channel.as_deref().unwrap_or("?")
        ),
        Course::UnknownRelease(v) => format!("release {v} is not in the manifest"),
        Course::UpToDate(v) => format!("already on {v}"),
        Course::DowngradeRefused(v) => {
            format!("run a newer version than {v} and the channel refuses downgrades")
        }
        Course::Paused(_) => "the channel is paused: they wait for `rollout resume`".into(),
        Course::InvalidWaves(_) => "the channel's waves do not reach 100%".into(),
        Course::NoSteppingStone {
            target, min_from, ..
        } => {
            format!("{target} needs {min_from} or later first, and the manifest offers no stepping stone")
        }
        Course::Moves { .. } => "move".into(),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::BTreeMap;
    use std::path::PathBuf;

    use chrono::{DateTime, Utc};
    use flotilla_protocol::decide::{route, AgentView};
    use flotilla_protocol::Sources;
    use semver::Version;

    use super::*;

    /// stable and beta on 1.0.0, waves spread over a day, and `pins`.
    fn manifest(pins: &str) -> Manifest {
        let sha = "a".repeat(64);
        let channel = "release = \"1.0.0\"\nstart = \"2026-01-01T00:00:00Z\"\n\
                       [[waves]]\nname = \"all\"\npercent = 100\nafter = \"0s\"\nspread = \"1d\"\n";
        let files: Vec<(PathBuf, String)> = vec![
            ("fleet.toml".into(), "name = \"f\"\n".into()),
            ("pins.toml".into(), pins.into()),
            (
                "releases/1.0.0.toml".into(),
                format!("version = \"1.0.0\"\n[artifacts.t]\npath = \"a\"\nsha256 = \"{sha}\"\nsize = 1\n"),
            ),
            ("channels/stable.toml".into(), channel.into()),
            ("channels/beta.toml".into(), channel.into()),
        ];
        let s = Sources::from_files(files).unwrap();
        let epoch = DateTime::<Utc>::UNIX_EPOCH;
        Manifest::compile(&s, 0, epoch, epoch)
    }

    /// An inventory entry as the reporter lists it (for this and `plan`'s tests).
    pub(crate) fn agent(id: &str, channel: &str, version: &str) -> AgentSummary {
        AgentSummary {
            agent_id: id.into(),
            version: Some(version.into()),
            channel: Some(channel.into()),
            wave: None,
            labels: BTreeMap::new(),
            ..AgentSummary::default()
        }
    }

    fn route_of(m: &Manifest, id: &str, version: &str) -> Route {
        let labels = BTreeMap::new();
        let v: Version = version.parse().unwrap();
        route(
            m,
            &AgentView {
                id,
                labels: &labels,
                channel: Some("stable"),
                version: Some(&v),
            },
        )
    }

    #[test]
    fn the_configured_channel_is_the_followed_one_unless_a_base_pin_sends_it_there() {
        let m = manifest("[[pin]]\nagents = [\"x\"]\nchannel = \"beta\"\n");
        assert_eq!(configured_channel(&m, &agent("x", "beta", "0.9.0")), None);
        assert_eq!(
            configured_channel(&m, &agent("y", "beta", "0.9.0")).as_deref(),
            Some("beta")
        );
        // Following another channel than its pin's: that is its own.
        assert_eq!(
            configured_channel(&m, &agent("x", "stable", "0.9.0")).as_deref(),
            Some("stable")
        );
        let mut unknown = agent("y", "beta", "0.9.0");
        unknown.channel = None;
        assert_eq!(configured_channel(&m, &unknown), None);
    }

    #[test]
    fn the_same_effect_ignores_the_pins_position_but_not_the_turn() {
        let one = manifest("[[pin]]\nagents = [\"x\"]\nrelease = \"1.0.0\"\n");
        let two = manifest(
            "[[pin]]\nagents = [\"z\"]\nrelease = \"1.0.0\"\n\
             [[pin]]\nagents = [\"x\"]\nrelease = \"1.0.0\"\n",
        );
        let (a, b) = (route_of(&one, "x", "0.9.0"), route_of(&two, "x", "0.9.0"));
        assert_ne!(a.pin, b.pin);
        assert!(same_effect(&a, &b));
        // Another id, another bucket in the same channel: another turn.
        let none = manifest("");
        let (c, d) = (route_of(&none, "x", "0.9.0"), route_of(&none, "w", "0.9.0"));
        assert!(!same_effect(&c, &d));
        assert!(same_effect(&c, &route_of(&none, "x", "0.9.0")));
    }

    #[test]
    fn held_reasons_name_what_holds() {
        let mut m = manifest("[[pin]]\nagents = [\"x\"]\nchannel = \"beta\"\n");
        // A pin to a channel the manifest lacks (sources refuse to say so).
        m.pins[0].channel = Some("gone".into());
        let r = route_of(&m, "x", "0.9.0");
        assert_eq!(r.course, Course::UnknownChannel);
        assert!(held_reason(&r).contains("channel gone, which the manifest no longer has"));
        let r = route_of(&m, "y", "2.0.0");
        assert!(held_reason(&r).contains("newer version than 1.0.0"));
        assert_eq!(held_reason(&route_of(&m, "y", "1.0.0")), "already on 1.0.0");
    }
}
