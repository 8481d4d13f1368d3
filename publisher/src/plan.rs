//! `plan`: which agents a change of the fleet repo moves, wave by wave, and
//! when. What a reviewer reads before approving a rollout.
//!
//! 1. Compile the sources before the change (the base) and after it (the
//!    head) into manifests, as `sign` would.
//! 2. For every agent the reporter knows (id, labels, running version,
//!    channel), route it under each manifest with the agent's own decision
//!    ([`flotilla_protocol::decide::route`]: pins, the channel's release,
//!    up to date, downgrade refused, paused, its wave and its turn,
//!    stepping stones). What only the host knows (its target triple, a
//!    release it rolled back from) is not predicted, nor is the halt gate:
//!    it can only stop an update, and it is the reporter's live opinion.
//! 3. An agent is *affected* when the two routes differ (another
//!    target, another turn, held where it moved or the reverse).
//! 4. Group by where the head sends each agent: one section per channel that
//!    changed or that affected agents now follow, one per release pin that
//!    holds affected agents. Affected agents that move are listed per wave
//!    with the instant each becomes eligible; the rest of the channel's
//!    agents are counted as unaffected (already on the release, pinned
//!    elsewhere, unchanged by this change) or held (paused, downgrade…).
//!
//! The reporter knows the channel an agent *follows* (it is on every event),
//! not the one in its config: an agent a channel pin of the base moved is
//! taken to be configured on an unknown channel, and if the head drops that
//! pin it is listed under "configured channel unknown".
//!
//! Rendering as text is in [`crate::plan_text`].

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use flotilla_protocol::api::AgentSummary;
use flotilla_protocol::{DowngradePolicy, HumanDuration, Manifest, PinTarget, Sources, Wave};
use semver::Version;
use serde::Serialize;

use flotilla_protocol::decide::{route, AgentView, Course, Route};

use crate::resolve::{configured_channel, held_reason, same_effect};

/// The plan: what the change does to the agents the reporter knows.
#[derive(Clone, Debug, Serialize)]
pub struct Plan {
    /// The sources compared with: `3f2a1c09e1 (merge-base of HEAD and origin/main)`.
    pub base: String,
    /// The sources of the change: `work tree` or a revision.
    pub head: String,
    /// The reporter asked.
    pub reporter: String,
    /// Relative times are measured from here.
    pub now: DateTime<Utc>,
    /// Agents the reporter knows.
    pub agents: usize,
    /// Lines describing changes of `pins.toml` (`+ pin 1: …`, `- pin: …`).
    pub pin_changes: Vec<String>,
    /// One per channel that changed or that affected agents now follow.
    pub channels: Vec<ChannelPlan>,
    /// One per release pin that is new or holds affected agents.
    pub pins: Vec<PinPlan>,
    /// Affected agents whose own channel the reporter cannot tell (see the
    /// module docs).
    pub channel_unknown: Vec<String>,
    /// Agents outside every section: this change does not touch them.
    pub untouched: usize,
}

impl Plan {
    /// Whether the change touches no channel and no pin.
    pub fn is_empty(&self) -> bool {
        self.channels.is_empty() && self.pins.is_empty() && self.pin_changes.is_empty()
    }

    /// Agents that move, over all sections.
    pub fn moving(&self) -> usize {
        self.channels
            .iter()
            .flat_map(|c| &c.waves)
            .map(|w| w.agents.len())
            .sum::<usize>()
            + self.pins.iter().map(|p| p.moves.len()).sum::<usize>()
    }
}

/// How a channel changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    /// New in the head.
    Added,
    /// Gone in the head.
    Removed,
    /// Its file differs.
    Changed,
    /// Its file is the same; pins move agents onto it or off it.
    Unchanged,
}

/// One channel's section.
#[derive(Clone, Debug, Serialize)]
pub struct ChannelPlan {
    /// The channel.
    pub channel: String,
    /// How its file changed.
    pub change: Change,
    /// Its release in the base.
    pub from_release: Option<Version>,
    /// Its release in the head.
    pub to_release: Option<Version>,
    /// Changed settings, `field: old → new`, in reading order.
    pub details: Vec<String>,
    /// Whether it is paused in the head.
    pub paused: bool,
    /// The head's waves, each with the affected agents that move in it.
    pub waves: Vec<WavePlan>,
    /// Affected agents that will not move, by reason.
    pub held: Vec<Held>,
    /// Agents of the channel this change does not move.
    pub unaffected: Unaffected,
    /// Waves too thin for the gate to judge (see [`thin_waves`]).
    pub warnings: Vec<String>,
}

/// One wave of a channel section.
#[derive(Clone, Debug, Serialize)]
pub struct WavePlan {
    /// The wave's name.
    pub name: String,
    /// Its cumulative percent.
    pub percent: f64,
    /// When it opens: the channel's start plus its `after`.
    pub opens_at: DateTime<Utc>,
    /// Over how long its agents become eligible.
    pub spread: HumanDuration,
    /// When its last agent becomes eligible.
    pub closes_at: DateTime<Utc>,
    /// Affected agents that move in this wave, by turn.
    pub agents: Vec<Move>,
}

/// An agent that moves.
#[derive(Clone, Debug, Serialize)]
pub struct Move {
    /// Its id.
    pub agent_id: String,
    /// The version it runs, as the reporter knows it.
    pub from: Option<String>,
    /// The release the channel or pin names.
    pub to: Version,
    /// A stepping stone it installs first (`min_from`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub via: Option<Version>,
    /// Its bucket (0–9999) for the channel and release; none when pinned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bucket: Option<u32>,
    /// The instant it becomes eligible; none when pinned (at once).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eligible_at: Option<DateTime<Utc>>,
}

/// Agents that will not move, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Held {
    /// Why, for the reader.
    pub reason: String,
    /// Their ids.
    pub agents: Vec<String>,
}

/// Counts of agents a section's change does not move.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Unaffected {
    /// Running the release already.
    pub already_on_release: usize,
    /// Configured on this channel, sent elsewhere by a pin.
    pub pinned_elsewhere: usize,
    /// Told the same by the base and the head (e.g. mid-way through a
    /// rollout the change does not touch).
    pub unchanged: usize,
}

/// One release pin's section.
#[derive(Clone, Debug, Serialize)]
pub struct PinPlan {
    /// Its index in the head's `pins.toml`.
    pub index: usize,
    /// What it says (`pin list` style).
    pub pin: String,
    /// Whether it is new (absent from the base).
    pub new: bool,
    /// The release it holds agents on.
    pub release: Version,
    /// Affected agents that move to the release (pins have no waves).
    pub moves: Vec<Move>,
    /// Affected agents that will not move, by reason.
    pub held: Vec<Held>,
    /// Agents it matches that this change does not move.
    pub unaffected: Unaffected,
}

/// Labels for the plan's header.
#[derive(Clone, Debug)]
pub struct Context {
    /// See [`Plan::base`].
    pub base: String,
    /// See [`Plan::head`].
    pub head: String,
    /// See [`Plan::reporter`].
    pub reporter: String,
    /// See [`Plan::now`].
    pub now: DateTime<Utc>,
}

/// Computes the plan. `base` is `None` when the base had no fleet repo.
pub fn compute(
    ctx: &Context,
    base: Option<&Sources>,
    head: &Sources,
    agents: &[AgentSummary],
) -> Plan {
    let epoch = DateTime::<Utc>::UNIX_EPOCH;
    let base_m = base.map(|s| Manifest::compile(s, 0, epoch, epoch));
    let head_m = Manifest::compile(head, 0, epoch, epoch);
    let empty = Manifest {
        fleet: String::new(),
        serial: 0,
        issued: epoch,
        expires: epoch,
        artifact_base_urls: vec![],
        reporter_url: None,
        releases: BTreeMap::new(),
        channels: BTreeMap::new(),
        pins: vec![],
    };
    let base_m = base_m.as_ref().unwrap_or(&empty);

    let mut channels: BTreeMap<String, ChannelPlan> = BTreeMap::new();
    let names: std::collections::BTreeSet<&String> = base_m
        .channels
        .keys()
        .chain(head_m.channels.keys())
        .collect();
    for name in names {
        let (b, h) = (base_m.channels.get(name), head_m.channels.get(name));
        if b != h {
            channels.insert(name.clone(), channel_section(name, b, h));
        }
    }
    let mut pins: BTreeMap<usize, PinPlan> = BTreeMap::new();
    for (i, p) in head_m.pins.iter().enumerate() {
        if let (Some(PinTarget::Release(v)), false) = (p.target(), base_m.pins.contains(p)) {
            pins.insert(i, pin_section(i, p, v, true));
        }
    }
    let mut plan = Plan {
        base: ctx.base.clone(),
        head: ctx.head.clone(),
        reporter: ctx.reporter.clone(),
        now: ctx.now,
        agents: agents.len(),
        pin_changes: pin_changes(&base_m.pins, &head_m.pins),
        channels: Vec::new(),
        pins: Vec::new(),
        channel_unknown: Vec::new(),
        untouched: 0,
    };

    // Pass 1: what base and head tell each agent; which sections exist.
    let resolved: Vec<Resolved> = agents
        .iter()
        .map(|a| {
            let version = a.version.as_deref().and_then(|v| Version::parse(v).ok());
            let configured = configured_channel(base_m, a);
            let view = AgentView {
                id: &a.agent_id,
                labels: &a.labels,
                channel: configured.as_deref(),
                version: version.as_ref(),
            };
            let (b, h) = (route(base_m, &view), route(&head_m, &view));
            Resolved {
                affected: !same_effect(&b, &h),
                configured,
                head: h,
            }
        })
        .collect();
    for r in resolved.iter().filter(|r| r.affected) {
        match (&r.head.pinned, &r.head.channel, r.head.pin) {
            (Some(v), _, Some(i)) => {
                pins.entry(i)
                    .or_insert_with(|| pin_section(i, &head_m.pins[i], v, false));
            }
            (None, Some(c), _) => {
                channels.entry(c.clone()).or_insert_with(|| {
                    let mut s = channel_section(c, base_m.channels.get(c), head_m.channels.get(c));
                    s.change = Change::Unchanged;
                    s.details = vec!["unchanged; pins.toml changes move agents onto it".into()];
                    s
                });
            }
            _ => {}
        }
    }

    // Pass 2: place every agent in the sections that concern it.
    for (a, r) in agents.iter().zip(&resolved) {
        let h = &r.head;
        let mut in_section = false;
        if let Some(sec) = r.configured.as_deref().and_then(|c| {
            let elsewhere = h.pinned.is_some() || h.channel.as_deref() != Some(c);
            elsewhere.then(|| channels.get_mut(c)).flatten()
        }) {
            sec.unaffected.pinned_elsewhere += 1;
            in_section = true;
        }
        let from = a.version.clone();
        match (&h.pinned, &h.channel) {
            (Some(_), _) => {
                if let Some(sec) = h.pin.and_then(|i| pins.get_mut(&i)) {
                    place(
                        h,
                        r.affected,
                        a,
                        from,
                        &mut sec.moves,
                        &mut sec.held,
                        &mut sec.unaffected,
                    );
                    in_section = true;
                }
            }
            (None, Some(c)) => {
                if let Some(sec) = channels.get_mut(c) {
                    in_section = true;
                    let wave = match &h.course {
                        Course::Moves { slot: Some(s), .. } if r.affected => {
                            sec.waves.get_mut(s.index)
                        }
                        _ => None,
                    };
                    match wave {
                        Some(w) => w.agents.push(to_move(a, from, h)),
                        None => {
                            let mut none = Vec::new();
                            place(
                                h,
                                r.affected,
                                a,
                                from,
                                &mut none,
                                &mut sec.held,
                                &mut sec.unaffected,
                            );
                        }
                    }
                }
            }
            (None, None) => {
                if r.affected {
                    plan.channel_unknown.push(a.agent_id.clone());
                    in_section = true;
                }
            }
        }
        if !in_section {
            plan.untouched += 1;
        }
    }
    for sec in channels.values_mut() {
        for w in &mut sec.waves {
            w.agents
                .sort_by(|x, y| (x.eligible_at, &x.agent_id).cmp(&(y.eligible_at, &y.agent_id)));
        }
        if let Some(c) = head_m.channels.get(&sec.channel) {
            let known: Vec<usize> = sec.waves.iter().map(|w| w.agents.len()).collect();
            sec.warnings = thin_waves(c, &known);
        }
    }
    plan.channels = channels.into_values().collect();
    plan.pins = pins.into_values().collect();
    plan
}

impl Plan {
    /// Every channel section's [`thin_waves`] warnings, each naming the
    /// channel's file (what `verify` prints; `plan` prints them under
    /// their channel).
    pub fn thin_wave_warnings(&self) -> Vec<String> {
        self.channels
            .iter()
            .flat_map(|c| {
                c.warnings
                    .iter()
                    .map(move |w| format!("channels/{}.toml: {w}", c.channel))
            })
            .collect()
    }
}

/// Puts an agent of a section that does not move in a wave: moves (pins),
/// held, or unaffected.
fn place(
    h: &Route,
    affected: bool,
    a: &AgentSummary,
    from: Option<String>,
    moves: &mut Vec<Move>,
    held: &mut Vec<Held>,
    unaffected: &mut Unaffected,
) {
    match &h.course {
        Course::UpToDate(_) => unaffected.already_on_release += 1,
        _ if !affected => unaffected.unchanged += 1,
        Course::Moves { .. } => moves.push(to_move(a, from, h)),
        _ => {
            let reason = held_reason(h);
            match held.iter_mut().find(|x| x.reason == reason) {
                Some(x) => x.agents.push(a.agent_id.clone()),
                None => held.push(Held {
                    reason,
                    agents: vec![a.agent_id.clone()],
                }),
            }
        }
    }
}

fn to_move(a: &AgentSummary, from: Option<String>, h: &Route) -> Move {
    let Course::Moves { target, via, slot } = &h.course else {
        unreachable!("only moving agents become moves")
    };
    Move {
        agent_id: a.agent_id.clone(),
        from,
        to: target.clone(),
        via: via.clone(),
        bucket: slot.as_ref().map(|s| s.bucket),
        eligible_at: slot.as_ref().map(|s| s.eligible_at),
    }
}

fn channel_section(
    name: &str,
    b: Option<&flotilla_protocol::Channel>,
    h: Option<&flotilla_protocol::Channel>,
) -> ChannelPlan {
    let change = match (b, h) {
        (None, Some(_)) => Change::Added,
        (Some(_), None) => Change::Removed,
        _ => Change::Changed,
    };
    let waves = h
        .map(|c| {
            c.waves
                .iter()
                .map(|w| {
                    let opens_at = c.start + w.after.to_chrono();
                    WavePlan {
                        name: w.name.clone(),
                        percent: w.percent,
                        opens_at,
                        spread: w.spread,
                        closes_at: opens_at + w.spread.to_chrono(),
                        agents: Vec::new(),
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    ChannelPlan {
        channel: name.to_owned(),
        change,
        from_release: b.map(|c| c.release.clone()),
        to_release: h.map(|c| c.release.clone()),
        details: channel_details(b, h),
        paused: h.is_some_and(|c| c.paused),
        waves,
        held: Vec::new(),
        unaffected: Unaffected::default(),
        warnings: Vec::new(),
    }
}

/// Warnings for the waves before the last whose agents, with those of the
/// waves before them, number fewer than the channel's `min_reports`
/// (default 1): the halt gate counts no failure below `min_reports`
/// reports, so it cannot stop the rollout before the next wave opens.
/// `known[i]`: the agents known to land in wave `i`. Nothing when the
/// channel sets no `max_failure_rate` (its gate never closes anyway).
pub fn thin_waves(c: &flotilla_protocol::Channel, known: &[usize]) -> Vec<String> {
    if c.max_failure_rate.is_none() {
        return Vec::new();
    }
    let min = c.min_reports.unwrap_or(1).max(1) as usize;
    let mut out = Vec::new();
    let mut so_far = 0;
    for (i, pair) in c.waves.windows(2).enumerate() {
        let (w, next) = (&pair[0], &pair[1]);
        so_far += known.get(i).copied().unwrap_or(0);
        if so_far < min {
            out.push(format!(
                "wave {} ({}%) has {so_far} known agent{} by its end (waves before included), \
                 fewer than min_reports {min}: the halt gate cannot judge it before wave {} \
                 opens; make it larger or lower min_reports",
                w.name,
                w.percent,
                if so_far == 1 { "" } else { "s" },
                next.name
            ));
        }
    }
    out
}

/// `field: old → new` for every setting that differs (all of the head's for
/// a new channel).
fn channel_details(
    b: Option<&flotilla_protocol::Channel>,
    h: Option<&flotilla_protocol::Channel>,
) -> Vec<String> {
    fn opt(v: Option<String>) -> String {
        v.unwrap_or_else(|| "unset".into())
    }
    fn yes(b: bool) -> String {
        if b { "yes" } else { "no" }.to_owned()
    }
    type Field = fn(&flotilla_protocol::Channel) -> String;
    let fields: [(&str, Field); 6] = [
        ("start", |c| c.start.to_rfc3339()),
        ("waves", |c| waves_spec(&c.waves)),
        ("paused", |c| yes(c.paused)),
        ("allow_downgrade", |c| {
            yes(c.allow_downgrade == DowngradePolicy::Allow)
        }),
        ("max_failure_rate", |c| {
            opt(c.max_failure_rate.map(|r| r.to_string()))
        }),
        ("min_reports", |c| opt(c.min_reports.map(|r| r.to_string()))),
    ];
    let mut out = Vec::new();
    for (name, f) in fields {
        match (b.map(f), h.map(f)) {
            (Some(old), Some(new)) if old != new => out.push(format!("{name}: {old} → {new}")),
            (None, Some(new)) => out.push(format!("{name}: {new}")),
            _ => {}
        }
    }
    out
}

/// Waves in `--waves` notation: `canary=5%@0s/1h,all=100%@1d/12h`.
pub fn waves_spec(waves: &[Wave]) -> String {
    waves
        .iter()
        .map(|w| format!("{}={}%@{}/{}", w.name, w.percent, w.after, w.spread))
        .collect::<Vec<_>>()
        .join(",")
}

fn pin_section(index: usize, pin: &flotilla_protocol::Pin, v: &Version, new: bool) -> PinPlan {
    PinPlan {
        index,
        pin: crate::pins::describe(pin),
        new,
        release: v.clone(),
        moves: Vec::new(),
        held: Vec::new(),
        unaffected: Unaffected::default(),
    }
}

/// `+ pin i: …` for pins only the head has, `- pin: …` for pins only the
/// base has; a reorder of the same pins is said as such (first match wins).
fn pin_changes(base: &[flotilla_protocol::Pin], head: &[flotilla_protocol::Pin]) -> Vec<String> {
    let mut out = Vec::new();
    for p in base.iter().filter(|p| !head.contains(p)) {
        out.push(format!("- pin: {}", crate::pins::describe(p)));
    }
    for (i, p) in head.iter().enumerate().filter(|(_, p)| !base.contains(p)) {
        out.push(format!("+ pin {i}: {}", crate::pins::describe(p)));
    }
    if out.is_empty() && base != head {
        out.push("pins reordered (the first matching pin wins)".into());
    }
    out
}

/// One agent's route under the head, and whether the base said otherwise.
struct Resolved {
    affected: bool,
    configured: Option<String>,
    head: Route,
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::resolve::tests::agent;

    /// Sources with releases 1.0.0, 1.5.0, 2.0.0 (min_from 1.5.0) and the
    /// given channel files and pins.toml.
    fn sources(channels: &[(&str, &str)], pins: &str) -> Sources {
        let sha = "a".repeat(64);
        let rel = |v: &str, extra: &str| {
            (
                PathBuf::from(format!("releases/{v}.toml")),
                format!("version = \"{v}\"\n{extra}[artifacts.t]\npath = \"a/{v}\"\nsha256 = \"{sha}\"\nsize = 1\n"),
            )
        };
        let mut files = vec![
            ("fleet.toml".into(), "name = \"f\"\n".to_owned()),
            ("pins.toml".into(), pins.to_owned()),
            rel("1.0.0", ""),
            rel("1.5.0", ""),
            rel("2.0.0", "min_from = \"1.5.0\"\n"),
        ];
        for (name, body) in channels {
            files.push((
                PathBuf::from(format!("channels/{name}.toml")),
                format!("start = \"2026-01-01T00:00:00Z\"\n{body}"),
            ));
        }
        Sources::from_files(files).unwrap()
    }

    fn ctx() -> Context {
        Context {
            base: "base".into(),
            head: "head".into(),
            reporter: "http://r/".into(),
            now: "2026-01-01T00:00:00Z".parse().unwrap(),
        }
    }

    fn moving(p: &ChannelPlan) -> Vec<(&str, Option<String>)> {
        p.waves
            .iter()
            .flat_map(|w| &w.agents)
            .map(|m| (m.agent_id.as_str(), m.via.as_ref().map(|v| v.to_string())))
            .collect()
    }

    #[test]
    fn warns_of_a_wave_too_thin_for_the_gate_to_judge() {
        let base = sources(&[("stable", "release = \"1.0.0\"\n")], "");
        let waves = "max_failure_rate = 0.2\nmin_reports = 2\n\
            [[waves]]\nname = \"canary\"\npercent = 0.01\nafter = \"0s\"\nspread = \"0s\"\n\
            [[waves]]\nname = \"all\"\npercent = 100\nafter = \"1d\"\nspread = \"0s\"\n";
        let head = sources(&[("stable", &format!("release = \"1.5.0\"\n{waves}"))], "");
        let agents: Vec<_> = (0..15)
            .map(|i| agent(&format!("h{i}"), "stable", "1.0.0"))
            .collect();
        let p = compute(&ctx(), Some(&base), &head, &agents);
        let s = &p.channels[0];
        assert_eq!(s.waves[0].agents.len(), 0, "nobody in the 0.01% canary");
        assert_eq!(s.waves[1].agents.len(), 15);
        assert_eq!(s.warnings.len(), 1, "{:?}", s.warnings);
        assert!(
            s.warnings[0].contains("wave canary")
                && s.warnings[0].contains("0 known agents")
                && s.warnings[0].contains("min_reports 2"),
            "{}",
            s.warnings[0]
        );
        let text = crate::plan_text::render(&p, false);
        assert!(text.contains("WARNING: wave canary"), "{text}");

        // Enough agents before the last wave, or no threshold: no warning.
        let c = &head.channels["stable"];
        assert!(thin_waves(c, &[2, 13]).is_empty());
        assert_eq!(thin_waves(c, &[1, 14]).len(), 1);
        let mut open = c.clone();
        open.max_failure_rate = None;
        assert!(thin_waves(&open, &[0, 15]).is_empty());
    }

    #[test]
    fn stepping_stones_downgrades_and_unknown_versions() {
        let base = sources(&[("stable", "release = \"1.0.0\"\n")], "");
        let head = sources(&[("stable", "release = \"2.0.0\"\n")], "");
        let mut unknown = agent("u", "stable", "?");
        unknown.version = None;
        let agents = [
            agent("old", "stable", "1.0.0"),
            agent("mid", "stable", "1.5.0"),
            agent("new", "stable", "3.0.0"),
            agent("done", "stable", "2.0.0"),
            unknown,
        ];
        let p = compute(&ctx(), Some(&base), &head, &agents);
        let s = &p.channels[0];
        assert_eq!(
            moving(s),
            [("mid", None), ("old", Some("1.5.0".into())), ("u", None)]
        );
        assert_eq!(s.held.len(), 1);
        assert_eq!(s.held[0].agents, ["new"]);
        assert!(s.held[0].reason.contains("refuses downgrades"));
        assert_eq!(s.unaffected.already_on_release, 1);
    }

    #[test]
    fn a_threshold_change_moves_nobody_and_an_untouched_channel_is_left_out() {
        let base = sources(
            &[
                ("stable", "release = \"2.0.0\"\n"),
                ("beta", "release = \"2.0.0\"\n"),
            ],
            "",
        );
        let head = sources(
            &[
                ("stable", "release = \"2.0.0\"\nmax_failure_rate = 0.1\n"),
                ("beta", "release = \"2.0.0\"\n"),
            ],
            "",
        );
        let agents = [
            agent("a", "stable", "1.5.0"),
            agent("b", "beta", "1.5.0"),
            agent("c", "stable", "2.0.0"),
        ];
        let p = compute(&ctx(), Some(&base), &head, &agents);
        assert_eq!(p.channels.len(), 1);
        let s = &p.channels[0];
        assert_eq!(s.details, ["max_failure_rate: unset → 0.1"]);
        assert!(moving(s).is_empty());
        assert_eq!(
            s.unaffected,
            Unaffected {
                already_on_release: 1,
                pinned_elsewhere: 0,
                unchanged: 1
            }
        );
        assert_eq!((p.untouched, p.moving()), (1, 0));
    }

    #[test]
    fn channel_pins_added_and_removed() {
        let both = [
            ("stable", "release = \"1.0.0\"\n"),
            ("beta", "release = \"1.5.0\"\n"),
        ];
        let pin = "[[pin]]\nagents = [\"x\"]\nchannel = \"beta\"\n";
        let unpinned = sources(&both, "");
        let pinned = sources(&both, pin);
        // x follows stable; the pin sends it to beta's 1.5.0.
        let agents = [agent("x", "stable", "1.0.0"), agent("y", "stable", "1.0.0")];
        let p = compute(&ctx(), Some(&unpinned), &pinned, &agents);
        assert_eq!(p.pin_changes, ["+ pin 0: agents x: follow channel beta"]);
        assert_eq!(p.channels.len(), 1);
        let beta = &p.channels[0];
        assert_eq!(
            (beta.channel.as_str(), beta.change),
            ("beta", Change::Unchanged)
        );
        assert_eq!(moving(beta), [("x", None)]);
        assert_eq!(p.untouched, 1);

        // The reporter says x follows beta, and the base's pin is why: once
        // the pin goes, x's own channel is unknown.
        let agents = [agent("x", "beta", "1.5.0")];
        let p = compute(&ctx(), Some(&pinned), &unpinned, &agents);
        assert_eq!(p.pin_changes, ["- pin: agents x: follow channel beta"]);
        assert_eq!(p.channel_unknown, ["x"]);
        assert!(p.channels.is_empty());
    }

    #[test]
    fn a_new_fleet_and_a_removed_channel() {
        let head = sources(&[("stable", "release = \"1.0.0\"\n")], "");
        let agents = [agent("a", "stable", "0.9.0"), agent("b", "gone", "1.0.0")];
        let p = compute(&ctx(), None, &head, &agents);
        assert_eq!(p.channels[0].change, Change::Added);
        assert_eq!(moving(&p.channels[0]), [("a", None)]);
        assert_eq!(p.untouched, 1);

        let base = sources(
            &[
                ("stable", "release = \"1.0.0\"\n"),
                ("gone", "release = \"1.5.0\"\n"),
            ],
            "",
        );
        let p = compute(&ctx(), Some(&base), &head, &agents);
        let gone = &p.channels[0];
        assert_eq!(
            (gone.channel.as_str(), gone.change),
            ("gone", Change::Removed)
        );
        assert_eq!(gone.held[0].agents, ["b"]);
        assert!(gone.held[0].reason.contains("no longer has"));
    }

    #[test]
    fn waves_spec_round_trips_through_the_cli_parser() {
        let w = flotilla_protocol::sources::standard_waves();
        assert_eq!(
            waves_spec(&w),
            "canary=5%@0s/1h,early=25%@1d/6h,all=100%@3d/12h"
        );
        assert_eq!(crate::spec::waves(&waves_spec(&w)).unwrap(), w);
    }
}
