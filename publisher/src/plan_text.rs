//! `plan` as text: what a reviewer reads in a pull request.
//!
//! ```text
//! channel stable: release 1.0.0 → 2.0.0
//!   start: 2026-01-01T00:00:00+00:00 → 2026-05-04T08:00:00+00:00
//!   3 agents move:
//!   wave canary (to 5%): opens 2026-05-04 08:00:00 UTC (in 2d 3h), spread 1h until 2026-05-04 09:00:00 UTC: 1 agent
//!     web-03  1.0.0 → 2.0.0  eligible 2026-05-04 08:41:10 UTC (in 2d 4h)
//!   wave all (to 100%): opens 2026-05-05 08:00:00 UTC (in 3d 3h), spread 0s: 2 agents
//!     …
//!   unaffected: 1 already on 2.0.0, 1 pinned elsewhere
//! ```
//!
//! Agent lists are capped at [`CAP`] per wave or pin ("… and N more")
//! unless every agent is asked for.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};

use crate::plan::{Change, ChannelPlan, Held, Move, PinPlan, Plan, Unaffected};

/// Agents listed per wave (or pin, or held reason) unless `all`.
pub const CAP: usize = 10;

/// Renders the plan; `all` lists every agent.
pub fn render(plan: &Plan, all: bool) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "plan: {} compared with {}", plan.head, plan.base);
    let _ = writeln!(
        out,
        "reporter {} knows {} agent{}; times in UTC, \"in …\" from {}",
        plan.reporter,
        plan.agents,
        plural(plan.agents),
        time(plan.now)
    );
    if plan.is_empty() {
        let _ = writeln!(
            out,
            "\nno channel or pin changes: this change moves no agent."
        );
        return out;
    }
    if !plan.pin_changes.is_empty() {
        let _ = writeln!(out, "\npins.toml:");
        for line in &plan.pin_changes {
            let _ = writeln!(out, "  {line}");
        }
    }
    for c in &plan.channels {
        out.push('\n');
        channel(&mut out, c, plan.now, all);
    }
    for p in &plan.pins {
        out.push('\n');
        pin(&mut out, p, plan.now, all);
    }
    if !plan.channel_unknown.is_empty() {
        let _ = writeln!(
            out,
            "\n{} agent{} a removed channel pin had moved go back to the channel in their config, which the reporter cannot tell:",
            plan.channel_unknown.len(),
            plural(plan.channel_unknown.len())
        );
        ids(&mut out, "  ", &plan.channel_unknown, all);
    }
    let _ = writeln!(
        out,
        "\n{} agent{} move{}; {} other agent{} {} not touched by this change.",
        plan.moving(),
        plural(plan.moving()),
        if plan.moving() == 1 { "s" } else { "" },
        plan.untouched,
        plural(plan.untouched),
        if plan.untouched == 1 { "is" } else { "are" },
    );
    let _ = writeln!(
        out,
        "Only agents enrolled with the reporter are listed; others follow the same rules."
    );
    out
}

fn channel(out: &mut String, c: &ChannelPlan, now: DateTime<Utc>, all: bool) {
    let release = match (&c.from_release, &c.to_release) {
        (Some(a), Some(b)) if a != b => format!("release {a} → {b}"),
        (_, Some(b)) => format!("release {b}"),
        (Some(a), None) => format!("was release {a}"),
        (None, None) => String::new(),
    };
    let what = match c.change {
        Change::Added => "new channel, ",
        Change::Removed => "removed, ",
        Change::Changed | Change::Unchanged => "",
    };
    let _ = writeln!(out, "channel {}: {what}{release}", c.channel);
    for d in &c.details {
        let _ = writeln!(out, "  {d}");
    }
    if c.paused {
        let _ = writeln!(
            out,
            "  PAUSED: nobody moves until `flotilla-publisher rollout resume --channel {}`",
            c.channel
        );
    }
    let moving: usize = c.waves.iter().map(|w| w.agents.len()).sum();
    if !c.waves.is_empty() && (moving > 0 || !c.paused) {
        let _ = writeln!(
            out,
            "  {moving} agent{} move{}:",
            plural(moving),
            if moving == 1 { "s" } else { "" }
        );
    }
    for w in &c.waves {
        let _ = writeln!(
            out,
            "  wave {} (to {}%): {} {} ({}), spread {}{}: {} agent{}",
            w.name,
            w.percent,
            if w.opens_at > now { "opens" } else { "opened" },
            time(w.opens_at),
            relative(w.opens_at, now),
            w.spread,
            if w.spread.0.is_zero() {
                String::new()
            } else {
                format!(" until {}", time(w.closes_at))
            },
            w.agents.len(),
            plural(w.agents.len())
        );
        moves(out, &w.agents, now, all);
    }
    for warning in &c.warnings {
        let _ = writeln!(out, "  WARNING: {warning}");
    }
    held(out, &c.held, all);
    unaffected(out, &c.unaffected, c.to_release.as_ref());
}

fn pin(out: &mut String, p: &PinPlan, now: DateTime<Utc>, all: bool) {
    let _ = writeln!(
        out,
        "pin {}{}: {}",
        p.index,
        if p.new { " (new)" } else { "" },
        p.pin
    );
    let _ = writeln!(
        out,
        "  {} agent{} move{} to {} at their next pass once signed and published (pins have no waves):",
        p.moves.len(),
        plural(p.moves.len()),
        if p.moves.len() == 1 { "s" } else { "" },
        p.release
    );
    moves(out, &p.moves, now, all);
    held(out, &p.held, all);
    unaffected(out, &p.unaffected, Some(&p.release));
}

fn moves(out: &mut String, list: &[Move], now: DateTime<Utc>, all: bool) {
    let shown = if all { list.len() } else { list.len().min(CAP) };
    let id_w = list[..shown]
        .iter()
        .map(|m| m.agent_id.chars().count())
        .max()
        .unwrap_or(0);
    for m in &list[..shown] {
        let from = m.from.as_deref().unwrap_or("?");
        let via = m
            .via
            .as_ref()
            .map(|v| format!(" via {v}"))
            .unwrap_or_default();
        let when = match m.eligible_at {
            Some(t) if t > now => format!("  eligible {} ({})", time(t), relative(t, now)),
            Some(t) => format!("  eligible {} (due: at its next pass)", time(t)),
            None => String::new(),
        };
        let _ = writeln!(
            out,
            "    {:<id_w$}  {from} → {}{via}{when}",
            m.agent_id, m.to
        );
    }
    more(out, "    ", list.len() - shown);
}

fn held(out: &mut String, held: &[Held], all: bool) {
    for h in held {
        let _ = writeln!(
            out,
            "  held, {} agent{}: {}",
            h.agents.len(),
            plural(h.agents.len()),
            h.reason
        );
        ids(out, "    ", &h.agents, all);
    }
}

fn ids(out: &mut String, indent: &str, ids: &[String], all: bool) {
    let shown = if all { ids.len() } else { ids.len().min(CAP) };
    if shown > 0 {
        let _ = writeln!(out, "{indent}{}", ids[..shown].join(" "));
    }
    more(out, indent, ids.len() - shown);
}

fn more(out: &mut String, indent: &str, n: usize) {
    if n > 0 {
        let _ = writeln!(out, "{indent}… and {n} more (--all lists every agent)");
    }
}

fn unaffected(out: &mut String, u: &Unaffected, release: Option<&semver::Version>) {
    let mut parts = Vec::new();
    if u.already_on_release > 0 {
        let on = release.map(|r| format!(" {r}")).unwrap_or_default();
        parts.push(format!("{} already on{on}", u.already_on_release));
    }
    if u.pinned_elsewhere > 0 {
        parts.push(format!("{} pinned elsewhere", u.pinned_elsewhere));
    }
    if u.unchanged > 0 {
        parts.push(format!("{} unchanged by this change", u.unchanged));
    }
    if !parts.is_empty() {
        let _ = writeln!(out, "  unaffected: {}", parts.join(", "));
    }
}

/// `2026-05-04 08:41:10 UTC`.
pub fn time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// `in 2d 3h`, `in 5m`, `now`, `3h ago`: the two largest units.
pub fn relative(t: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let secs = (t - now).num_seconds();
    if secs.abs() < 60 {
        return if secs <= 0 {
            "now"
        } else {
            "in under a minute"
        }
        .into();
    }
    let mut rest = secs.unsigned_abs();
    let mut parts = Vec::new();
    for (unit, n) in [("d", 86_400), ("h", 3_600), ("m", 60)] {
        if rest >= n && parts.len() < 2 {
            parts.push(format!("{}{unit}", rest / n));
            rest %= n;
        } else if !parts.is_empty() {
            break;
        }
    }
    let span = parts.join(" ");
    if secs > 0 {
        format!("in {span}")
    } else {
        format!("{span} ago")
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_times_read_naturally() {
        let now: DateTime<Utc> = "2026-01-01T00:00:00Z".parse().unwrap();
        let at = |s: i64| now + chrono::Duration::seconds(s);
        assert_eq!(relative(at(0), now), "now");
        assert_eq!(relative(at(30), now), "in under a minute");
        assert_eq!(relative(at(90), now), "in 1m");
        assert_eq!(relative(at(2 * 86_400 + 3 * 3_600 + 7), now), "in 2d 3h");
        assert_eq!(relative(at(86_400 + 5 * 60), now), "in 1d");
        assert_eq!(relative(at(-3 * 3_600), now), "3h ago");
    }
}
