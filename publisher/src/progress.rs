//! `status`: the reporter's rollout progress as a terminal table.
//!
//! One block per channel and release: a header, the halt gate (open or
//! closed, and the reporter's reason), one row per wave with the count of
//! agents in each column the reporter defines (`flotilla_reporter::rollout`:
//! on release, installing, failed, rolled back, waiting, not reporting) and
//! a progress bar, then the totals and the failure rate. A halted rollout
//! (the gate closed while agents have yet to move) says so, with the
//! operator's emergency stop if one holds it and the operator's options
//! ([`RolloutProgress::options`]).
//!
//! The bar has [`BAR_WIDTH`] cells shared out by agents: `#` on the release,
//! `!` failed or rolled back, `~` installing, `.` waiting or not reporting;
//! the percentage after it is the share on the release.

use std::fmt::Write as _;

use flotilla_protocol::api::{GateState, RolloutProgress, SettingsSource, WaveProgress};

/// Cells of a progress bar.
pub const BAR_WIDTH: usize = 20;

const COLUMNS: [&str; 8] = [
    "agents",
    "on release",
    "installing",
    "failed",
    "rolled back",
    "waiting",
    "not reporting",
    "progress",
];

/// Renders rollouts as text, one block each, separated by a blank line.
pub fn render(rollouts: &[RolloutProgress]) -> String {
    let mut out = String::new();
    for (i, p) in rollouts.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        render_one(&mut out, p);
    }
    out
}

fn render_one(out: &mut String, p: &RolloutProgress) {
    let state = p.phase().label();
    let _ = writeln!(
        out,
        "channel {}  release {}  ({} agent{}, {state})",
        p.channel,
        p.release,
        p.agents,
        plural(p.agents)
    );
    let g = &p.gate;
    let gate = match g.state {
        GateState::Open => "open",
        GateState::Closed => "CLOSED (agents wait)",
    };
    let _ = writeln!(out, "  gate {gate}: {}", g.reason);
    if let Some(h) = &g.halt {
        let _ = writeln!(
            out,
            "  emergency stop #{} by {} at {}: {}",
            h.id,
            h.closed_by,
            h.closed_at.format("%Y-%m-%d %H:%M UTC"),
            h.reason
        );
    }
    let mut settings = Vec::new();
    if let Some(m) = g.max_failure_rate {
        settings.push(format!("max_failure_rate {}", percent(m)));
    }
    if let Some(m) = g.min_reports {
        settings.push(format!("min_reports {m}"));
    }
    let source = match g.settings_source {
        SettingsSource::Manifest => "from the reporter's copy of the signed manifest",
        SettingsSource::Agents => "as the agents reported them",
        SettingsSource::Unknown => "no halt thresholds known to the reporter",
    };
    if settings.is_empty() {
        let _ = writeln!(out, "       {source}");
    } else {
        let _ = writeln!(out, "       {} ({source})", settings.join(", "));
    }

    let total = total(&p.waves);
    let mut rows: Vec<[String; 9]> = p.waves.iter().map(|w| row(&w.wave, w)).collect();
    if p.waves.len() > 1 {
        rows.push(row("total", &total));
    }
    let name_w = rows
        .iter()
        .map(|r| r[0].chars().count())
        .chain(["wave".len()])
        .max()
        .unwrap_or(4);
    let _ = write!(out, "  {:<name_w$}", "wave");
    for c in COLUMNS {
        let _ = write!(out, "  {c}");
    }
    out.push('\n');
    for r in &rows {
        let _ = write!(out, "  {:<name_w$}", r[0]);
        for (c, cell) in COLUMNS.iter().zip(&r[1..]) {
            if *c == "progress" {
                let _ = write!(out, "  {cell}");
            } else {
                let _ = write!(out, "  {cell:>w$}", w = c.len());
            }
        }
        out.push('\n');
    }
    if p.waves.is_empty() {
        let _ = writeln!(out, "  (no agent has reported on this release yet)");
    }
    match p.failure_rate {
        Some(rate) => {
            let _ = writeln!(
                out,
                "  failure rate {} ({} of {} report{})",
                percent(rate),
                g.failed,
                g.reports,
                plural(g.reports)
            );
        }
        None => {
            let _ = writeln!(out, "  failure rate: no reports yet");
        }
    }
    let options = p.options();
    if !options.is_empty() {
        let _ = writeln!(
            out,
            "  halted: agents wait at their next gate check. Options:"
        );
        for o in options {
            let _ = writeln!(out, "    - {o}");
        }
    }
}

fn row(name: &str, w: &WaveProgress) -> [String; 9] {
    [
        name.to_owned(),
        w.agents.to_string(),
        w.on_release.to_string(),
        w.installing.to_string(),
        w.failed.to_string(),
        w.rolled_back.to_string(),
        w.waiting.to_string(),
        w.not_reporting.to_string(),
        bar(w),
    ]
}

fn total(waves: &[WaveProgress]) -> WaveProgress {
    let mut t = WaveProgress {
        wave: "total".into(),
        ..WaveProgress::default()
    };
    for w in waves {
        t.agents += w.agents;
        t.on_release += w.on_release;
        t.installing += w.installing;
        t.failed += w.failed;
        t.rolled_back += w.rolled_back;
        t.waiting += w.waiting;
        t.wave_not_open += w.wave_not_open;
        t.held += w.held;
        t.not_reporting += w.not_reporting;
    }
    t
}

/// `[####!!~~......]  40%`: cells by state, then the share on the release.
pub fn bar(w: &WaveProgress) -> String {
    let n = w
        .agents
        .max(w.on_release + w.installing + w.failed + w.rolled_back + w.waiting + w.not_reporting);
    if n == 0 {
        return format!("[{}]    -", " ".repeat(BAR_WIDTH));
    }
    // Cumulative rounding: the cells add up to BAR_WIDTH exactly.
    let parts = [
        ('#', w.on_release),
        ('!', w.failed + w.rolled_back),
        ('~', w.installing),
    ];
    let mut s = String::with_capacity(BAR_WIDTH + 8);
    s.push('[');
    let (mut acc, mut drawn) = (0u64, 0usize);
    for (ch, count) in parts {
        acc += count;
        let upto = (acc as usize * BAR_WIDTH + n as usize / 2) / n as usize;
        let upto = upto.min(BAR_WIDTH);
        for _ in drawn..upto {
            s.push(ch);
        }
        drawn = drawn.max(upto);
    }
    for _ in drawn..BAR_WIDTH {
        s.push('.');
    }
    let pct = w.on_release * 100 / n;
    let _ = write!(s, "] {pct:>3}%");
    s
}

fn percent(rate: f64) -> String {
    format!("{:.1}%", rate * 100.0)
}

fn plural(n: u64) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wave(on: u64, failed: u64, installing: u64, waiting: u64) -> WaveProgress {
        WaveProgress {
            wave: "w".into(),
            agents: on + failed + installing + waiting,
            on_release: on,
            installing,
            failed,
            waiting,
            ..WaveProgress::default()
        }
    }

    #[test]
    fn bar_cells_add_up_and_show_each_state() {
        assert_eq!(bar(&wave(1, 1, 0, 0)), "[##########!!!!!!!!!!]  50%");
        assert_eq!(bar(&wave(0, 0, 0, 3)), "[....................]   0%");
        assert_eq!(bar(&wave(3, 0, 0, 0)), "[####################] 100%");
        assert_eq!(bar(&wave(1, 1, 1, 0)), "[#######!!!!!!~~~~~~~]  33%");
        assert_eq!(bar(&wave(0, 0, 0, 0)), "[                    ]    -");
        for (a, b, c, d) in [(1, 2, 3, 4), (7, 0, 0, 993), (0, 1, 0, 999)] {
            let s = bar(&wave(a, b, c, d));
            assert_eq!(s.chars().count(), BAR_WIDTH + 2 + 5, "{s}");
        }
        // below half a cell rounds away: the columns carry the exact counts
        assert_eq!(bar(&wave(0, 1, 0, 999)), "[....................]   0%");
    }
}
