//! `GET /`: the fleet overview.

use axum::extract::State;
use flotilla_protocol::api::{GateState, RolloutProgress, SettingsSource, WaveProgress};
use maud::{html, Markup};

use super::layout::{self, pct, when};
use super::session::WebSession;
use super::{html, PageResult};
use crate::channels::ManifestStatus;
use crate::db::queries;
use crate::state::AppState;

/// The page.
pub async fn page(s: WebSession, State(st): State<AppState>) -> PageResult {
    let since = crate::db::now_micros() - st.settings.stale_after.as_micros() as i64;
    let (versions, (total, reporting), errors) = st
        .reader
        .read(move |c| {
            Ok((
                queries::agents_by_version(c)?,
                queries::agent_counts(c, since)?,
                queries::newest_errors(c, 10)?,
            ))
        })
        .await?;
    let mut rollouts = Vec::new();
    for (channel, release) in st.current_rollouts() {
        rollouts.push(st.rollout(&channel, &release).await?);
    }
    let active = rollouts.iter().any(|r| r.active);
    let manifest = st.manifest.status();
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
        h2 { "Rollouts" }
        (manifest_note(&manifest))
        @if rollouts.is_empty() { p.muted { "No rollout: the gate is closed for every channel until a manifest verifies." } }
        @for r in &rollouts { (rollout_card(r)) }
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

fn rollout_card(r: &RolloutProgress) -> Markup {
    let closed = r.gate.state == GateState::Closed;
    html! {
        section.card.rollout data-channel=(r.channel) {
            div.rollout-head {
                h3 { (r.channel) " → " (r.release) }
                span class=(if closed { "gate closed" } else { "gate open" }) title=(r.gate.reason) {
                    "gate " (if closed { "closed" } else { "open" })
                }
                @if r.active { span.badge.live { "rolling out" } }
            }
            p.muted.gate-reason {
                "Gate: " (r.gate.reason) " · " (r.agents) " agents"
                @if r.gate.settings_source == SettingsSource::Unknown { " · no verified thresholds" }
            }
            table.waves {
                thead { tr { th { "wave" } th { "progress" } th.n { "on release" } th.n { "installing" } th.n { "failed" } th.n { "rolled back" } th.n { "waiting" } th.n { "silent" } } }
                tbody {
                    @for w in &r.waves {
                        tr {
                            td { (w.wave) }
                            td.bar { (segments(w)) }
                            td.n { (w.on_release) }
                            td.n { (w.installing) }
                            td.n.bad[w.failed > 0] { (w.failed) }
                            td.n.bad[w.rolled_back > 0] { (w.rolled_back) }
                            td.n { (w.waiting) }
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
