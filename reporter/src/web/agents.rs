//! `GET /agents`: the agents table: each host's state and why, filters by
//! state, channel, wave, version and label (the API's, see
//! [`crate::handlers::agents::AgentQuery`]).

use axum::extract::{Query, RawQuery, State};
use flotilla_protocol::api::HostState;
use maud::html;

use super::layout::{self, when};
use super::overview::urlenc;
use super::session::WebSession;
use super::{html, PageResult};
use crate::db::tokens::Scope;
use crate::handlers::agents::AgentQuery;
use crate::state::AppState;

/// The page.
pub async fn page(
    s: WebSession,
    State(st): State<AppState>,
    Query(q): Query<AgentQuery>,
    RawQuery(raw): RawQuery,
) -> PageResult {
    let mut f = q.filter(raw.as_deref(), st.settings.stale_after)?;
    f.limit = q.limit.unwrap_or(200).clamp(1, 1000);
    let f2 = f.clone();
    let (agents, total) = st.store.agents(f2).await?;
    let enroll_tokens: Vec<_> = st
        .store
        .tokens_list()
        .await?
        .into_iter()
        .filter(|t| t.scope == Scope::Enroll)
        .collect();
    let stale = chrono::Duration::from_std(st.settings.stale_after).unwrap_or_default();
    let now = chrono::Utc::now();
    let qv = q.q.clone().unwrap_or_default();
    let nsf = q.not_seen_for.clone().unwrap_or_default();
    let sort = q.sort.clone().unwrap_or_else(|| "last_seen".into());
    let state = q.state.clone().unwrap_or_default();
    let text = |v: &Option<String>| v.clone().unwrap_or_default();
    let (channel, wave, version) = (text(&q.channel), text(&q.wave), text(&q.version));
    let label = f
        .labels
        .first()
        .map(|(k, v)| format!("{k}={v}"))
        .unwrap_or_default();
    // Every filter as it is, for the pager's links.
    let kept: String = form_urlencoded::parse(raw.as_deref().unwrap_or("").as_bytes())
        .filter(|(k, _)| k != "offset")
        .map(|(k, v)| format!("{}={}&", urlenc(&k), urlenc(&v)))
        .collect();
    let link = |offset: u32| format!("/agents?{kept}offset={offset}");
    let body = html! {
        h1 { "Agents" }
        form.filters.auto #agent-filters method="get" action="/agents" {
            input #q type="search" name="q" value=(qv) placeholder="id, label or version; role=db: that label";
            select #state name="state" {
                option value="" selected[state.is_empty()] { "any state" }
                @for h in HostState::ALL {
                    option value=(h.as_str()) selected[state == h.as_str()] { (h.label()) }
                }
            }
            input #channel type="text" name="channel" value=(channel) placeholder="channel" size="10";
            input #wave type="text" name="wave" value=(wave) placeholder="wave" size="8";
            input #version type="text" name="version" value=(version) placeholder="version" size="8";
            input #label type="text" name="label" value=(label) placeholder="label key=value" size="14";
            select name="not_seen_for" {
                @for (v, l) in [("", "any time"), ("15m", "silent 15m+"), ("1h", "silent 1h+"), ("1d", "silent 1d+"), ("7d", "silent 7d+")] {
                    option value=(v) selected[nsf == v] { (l) }
                }
            }
            select name="sort" {
                @for (v, l) in [("last_seen", "last seen, newest"), ("-last_seen", "last seen, oldest"), ("agent_id", "id"), ("version", "version")] {
                    option value=(v) selected[sort == v] { (l) }
                }
            }
            button type="submit" { "Search" }
        }
        p.muted { (total) " agents" @if total > agents.len() as u64 { ", showing " (f.offset + 1) "–" (f.offset as usize + agents.len()) } }
        table.agents #agents-table {
            thead { tr { th { "agent" } th { "state" } th { "version" } th { "channel" } th { "wave" } th { "labels" } th { "last seen" } th { "last error" } } }
            tbody {
                @for a in &agents {
                    @let silent = a.last_seen.is_none_or(|t| now - t > stale);
                    tr.silent[silent] data-agent=(a.agent_id) {
                        td { a href=(format!("/agents/{}", urlenc(&a.agent_id))) { (a.agent_id) } }
                        td.state {
                            @match a.state {
                                Some(h) => {
                                    span class=(format!("state {}", h.as_str())) { (h.label()) }
                                    @if let (HostState::Waiting, Some(u)) = (h, a.until) { " until " (u.format("%Y-%m-%d %H:%M UTC")) }
                                    @if let Some(r) = a.reason.as_deref().filter(|r| !r.is_empty() && h != HostState::NotReporting) { div.reason.msg { (r) } }
                                }
                                None => span.muted { "no check-in yet" },
                            }
                        }
                        td { (a.version.as_deref().unwrap_or("?")) }
                        td { (a.channel.as_deref().unwrap_or("")) }
                        td { (a.wave.as_deref().unwrap_or("")) }
                        td { @for (k, v) in &a.labels { a.chip href=(format!("/agents?label={}", urlenc(&format!("{k}={v}")))) { (k) "=" (v) } " " } }
                        td { (when(a.last_seen)) @if silent { " " span.badge.warn { "silent" } } }
                        td.msg { (a.last_error.as_deref().unwrap_or("")) }
                    }
                }
            }
        }
        nav.pager {
            @if f.offset > 0 { a href=(link(f.offset.saturating_sub(f.limit))) { "← previous" } }
            @if (f.offset as u64 + agents.len() as u64) < total { a href=(link(f.offset + f.limit)) { "next →" } }
        }
        h2 { "Enrollment tokens" }
        p.muted { "Agents each token enrolled (not revoked). A token with more agents than hosts you gave it to was leaked: "
            code { "flotilla-reporter token revoke ID" } ", then " code { "agent revoke" } " its agents." }
        table #enrollment-tokens {
            thead { tr { th { "token" } th { "state" } th { "agents" } th { "uses" } th { "expires" } th { "note" } } }
            tbody {
                @for t in &enroll_tokens {
                    tr {
                        td { code { (t.id) } }
                        td { (t.state(now).to_string()) }
                        td.agents { (t.agents) }
                        td { (t.uses) @if let Some(m) = t.max_uses { " / " (m) } @else { " / unlimited" } }
                        td { (t.expires_at.map(|e| e.format("%Y-%m-%d %H:%M UTC").to_string()).unwrap_or_else(|| "never".into())) }
                        td { (t.note) }
                    }
                }
            }
        }
    };
    html(layout::page("Agents", "agents", &s, false, body))
}
