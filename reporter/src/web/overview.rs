//! `GET /`: the fleet overview.

use axum::extract::State;
use flotilla_protocol::api::{
    GateState, RolloutPhase, RolloutProgress, SettingsSource, WaveProgress,
};
use maud::{html, Markup};

use super::layout::{self, pct, when};
use super::session::WebSession;
use super::{html, PageResult};
use crate::channels::ManifestStatus;
use crate::state::AppState;

/// The page.
pub async fn page(s: WebSession, State(st): State<AppState>) -> PageResult {
    let since = crate::db::now_micros() - st.settings.stale_after.as_micros() as i64;
    let (versions, (total, reporting), errors) = st.store.overview(since, 10).await?;
    let mut rollouts = Vec::new();
    for (channel, release) in st.current_rollouts() {
        rollouts.push(st.rollout(&channel, &release).await?);
    }
    let active = rollouts.iter().any(|r| r.active);
    let manifest = st.manifest.status();
    let halts = st.halts.all();
    let earlier: Vec<_> = crate::rollout_history::history(&st, None, 6)
        .await?
        .rollouts
        .into_iter()
        .filter(|r| !r.current)
        .collect();
    let silent = total - reporting;
    let body = html! {
        h1 { "Fleet overview" }
        section.stats {
            div.stat { span.num #agents-total { (total) } span.lbl { "agents" } }
            div.stat { span.num { (reporting) } span.lbl { "reporting" } }
            a.stat.warn[silent > 0] href="/agents?not_seen_for=1h&sort=-last_seen" {
                span.num { (silent) } span.lbl { "not reporting" }
            }
            div.stat { span.num { (rollouts.len()) } span.lbl { "channels" } }
        }
        div.grid {
            section.card #versions {
                h2 { "Agents by version" }
                @if versions.is_empty() { p.muted { "No agents enrolled yet." } }
                table.versions {
                    @for (v, n) in &versions {
                        tr {
                            td { a href=(format!("/agents?q={}", urlenc(v.as_deref().unwrap_or("")))) { (v.as_deref().unwrap_or("unknown")) } }
                            td.bar { div.track { div class=(format!("fill ok w-{}", pct(*n, total))) {} } }
                            td.n { (n) }
                        }
                    }
                }
            }
            section.card #errors {
                h2 { "Newest errors" }
                @if errors.is_empty() { p.muted { "No errors reported." } }
                ul.errors {
                    @for a in &errors {
                        li {
                            a href=(format!("/agents/{}?severity=error,critical", urlenc(&a.agent_id))) { (a.agent_id) }
                            " " (when(a.last_error_at))
                            div.msg { (a.last_error.as_deref().unwrap_or("")) }
                        }
                    }
                }
            }
        }
        @if !halts.is_empty() {
            section.card.halts #halts {
                h2 { "Emergency stops" }
                ul {
                    @for h in &halts {
                        li.halt data-halt=(h.id) {
                            strong { (h.channel) @if let Some(r) = &h.release { " " (r) } @else { " (every release)" } }
                            ": gate closed by " (h.closed_by) " " (when(Some(h.closed_at))) " — " (h.reason)
                        }
                    }
                }
            }
        }
        h2 { "Rollouts" }
        (manifest_note(&manifest))
        @if rollouts.is_empty() { p.muted { "No rollout: the gate is closed for every channel until a manifest verifies." } }
        @for r in &rollouts { (rollout_card(r, &s.csrf)) }
        @if !earlier.is_empty() {
            section.card #history {
                h2 { "Earlier rollouts" }
                table.history {
                    thead { tr { th { "channel" } th { "release" } th { "rolled out" } th.n { "agents" } th.n { "on release" } th.n { "failed" } th.n { "rolled back" } } }
                    tbody {
                        @for h in &earlier {
                            @let sum = |f: fn(&WaveProgress) -> u64| h.progress.waves.iter().map(f).sum::<u64>();
                            tr data-release=(h.progress.release) {
                                td { (h.progress.channel) }
                                td { (h.progress.release) }
                                td { (h.first_seen.format("%Y-%m-%d %H:%M")) " – " (h.last_seen.format("%Y-%m-%d %H:%M UTC")) }
                                td.n { (h.progress.agents) }
                                td.n { (sum(|w| w.on_release)) }
                                td.n.bad[sum(|w| w.failed) > 0] { (sum(|w| w.failed)) }
                                td.n.bad[sum(|w| w.rolled_back) > 0] { (sum(|w| w.rolled_back)) }
                            }
                        }
                    }
                }
            }
        }
    };
    html(layout::page("Overview", "overview", &s, active, body))
}

/// Which verified manifest the rollouts and gates come from, and why the
/// latest copy was refused, if it was.
fn manifest_note(m: &ManifestStatus) -> Markup {
    html! {
        @match &m.verified {
            Some(v) => p.muted #manifest {
                "Verified manifest: fleet " (v.fleet) ", serial " (v.serial)
                ", expires " (v.expires.format("%Y-%m-%d %H:%M UTC"))
            },
            None => p.warn #manifest { (m.missing_reason()) },
        }
        @if let (Some(_), Some(e)) = (&m.verified, &m.error) {
            p.warn #manifest-refused { "The latest manifest copy was refused (the last verified one is used): " (e) }
        }
    }
}

/// Percent-encodes a query or path component.
pub fn urlenc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            o.push(b as char);
        } else {
            o.push_str(&format!("%{b:02X}"));
        }
    }
    o
}

/// "opened 2h ago" or "opens in 3h", with the absolute time; the spread's
/// end when it has one.
fn opens(w: &WaveProgress) -> Markup {
    let Some(at) = w.opens_at else {
        return html! {};
    };
    let now = chrono::Utc::now();
    let abs = at.format("%Y-%m-%d %H:%M UTC").to_string();
    html! {
        time datetime=(at.to_rfc3339()) title=(abs) {
            @if at <= now { "opened " (abs) } @else { "opens " (abs) }
        }
        @if let Some(u) = w.spread_until.filter(|u| *u > at) {
            br; span.muted { "last turn " (u.format("%Y-%m-%d %H:%M UTC")) }
        }
    }
}

fn segments(w: &WaveProgress) -> Markup {
    let parts = [
        ("ok", w.on_release, "on release"),
        ("installing", w.installing, "installing"),
        ("failed", w.failed, "failed"),
        ("rolledback", w.rolled_back, "rolled back"),
        ("waiting", w.waiting, "waiting"),
        ("silent", w.not_reporting, "not reporting"),
    ];
    html! {
        div.track.stacked title=(format!("{} on release, {} installing, {} failed, {} rolled back, {} waiting, {} not reporting",
            w.on_release, w.installing, w.failed, w.rolled_back, w.waiting, w.not_reporting)) {
            @for (class, n, _) in parts {
                @if n > 0 { div class=(format!("fill {class} w-{}", pct(n, w.agents))) {} }
            }
        }
    }
}

/// The emergency stop of a rollout: who halted it and a reopen button, or
/// a folded form to halt it.
fn halt_controls(r: &RolloutProgress, csrf: &str) -> Markup {
    html! {
        @if let Some(h) = &r.gate.halt {
            div.halt-note {
                "Emergency stop by " (h.closed_by) " " (when(Some(h.closed_at))) ": " (h.reason)
                @if h.release.is_none() { " (every release of " (r.channel) ")" }
                form.inline.reopen method="post" action=(format!("/halts/{}/reopen", h.id)) {
                    input type="hidden" name="csrf" value=(csrf);
                    input type="text" name="by" placeholder="your name" maxlength="128";
                    button.reopen type="submit" { "Reopen the gate" }
                }
                p.muted { "Reopening never opens a gate its failure rate closes." }
            }
        } @else {
            details.halt-form {
                summary { "Emergency stop…" }
                form.stop method="post" action="/halts" {
                    input type="hidden" name="csrf" value=(csrf);
                    input type="hidden" name="channel" value=(r.channel);
                    label { "Why " input.reason type="text" name="reason" required maxlength="2000" placeholder="what is wrong"; }
                    label { "Only release " input type="text" name="release" placeholder=(format!("every release (or {})", r.release)) maxlength="128"; }
                    label { "Your name " input type="text" name="by" maxlength="128"; }
                    button.stop type="submit" { "Close the gate" }
                    p.muted { "Agents of " (r.channel) " stop installing at their next gate check; nothing is rolled back." }
                }
            }
        }
    }
}

fn rollout_card(r: &RolloutProgress, csrf: &str) -> Markup {
    let closed = r.gate.state == GateState::Closed;
    let phase = r.phase();
    html! {
        section.card.rollout data-channel=(r.channel) data-phase=(phase.label()) {
            div.rollout-head {
                h3 { (r.channel) " → " (r.release) }
                span class=(if closed { "gate closed" } else { "gate open" }) title=(r.gate.reason) {
                    "gate " (if closed { "closed" } else { "open" })
                }
                @match phase {
                    RolloutPhase::RollingOut => span.badge.live { "rolling out" },
                    RolloutPhase::Halted => span.badge.halted { "halted" },
                    RolloutPhase::Settled => span.badge { "settled" },
                }
            }
            (halt_controls(r, csrf))
            @let options = r.options();
            @if !options.is_empty() {
                div.options {
                    "Halted: agents wait at their next gate check. Options:"
                    ul { @for o in &options { li { (o) } } }
                }
            }
            p.muted.gate-reason {
                "Gate: " (r.gate.reason) " · " (r.agents) " agents"
                @if r.gate.settings_source == SettingsSource::Unknown { " · no verified thresholds" }
            }
            table.waves {
                thead { tr { th { "wave" } th { "target" } th { "opens" } th { "progress" } th.n { "on release" } th.n { "installing" } th.n { "failed" } th.n { "rolled back" } th.n { "waiting" } th.n { "silent" } } }
                tbody {
                    @for w in &r.waves {
                        tr data-wave=(w.wave) {
                            td { (w.wave) }
                            td.n { @if let Some(p) = w.percent { (format!("{p:.0}%")) } }
                            td.opens { (opens(w)) }
                            td.bar { (segments(w)) }
                            td.n { (w.on_release) }
                            td.n { (w.installing) }
                            td.n.bad[w.failed > 0] { (w.failed) }
                            td.n.bad[w.rolled_back > 0] { (w.rolled_back) }
                            td.n.waiting title="wave not open yet / held by the gate" {
                                (w.waiting)
                                @if w.wave_not_open > 0 || w.held > 0 {
                                    " " span.muted.split { "(" (w.wave_not_open) " not open, " (w.held) " held)" }
                                }
                            }
                            td.n { (w.not_reporting) }
                        }
                    }
                }
            }
            p.legend {
                span.key.ok { "on release" } span.key.installing { "installing" } span.key.failed { "failed" }
                span.key.rolledback { "rolled back" } span.key.waiting { "waiting" } span.key.silent { "not reporting" }
            }
        }
    }
}
