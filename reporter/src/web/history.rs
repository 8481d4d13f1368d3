//! `GET /agents/{id}`: one agent's history as a timeline.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use flotilla_protocol::api::details as keys;
use flotilla_protocol::{Event, EventKind, EventStatus, Severity};
use maud::{html, Markup};
use serde_json::Value;

use super::layout::{self, when, when_both};
use super::overview::urlenc;
use super::session::WebSession;
use super::{html, PageError, PageResult};
use crate::handlers::agents::EventQuery;
use crate::state::AppState;

fn group(k: EventKind) -> &'static str {
    if k.is_migration() {
        "migration"
    } else if k.as_str().starts_with("update_") {
        "update"
    } else {
        "agent"
    }
}

fn chain(d: &serde_json::Map<String, Value>) -> Vec<String> {
    match d.get(keys::ERROR_CHAIN) {
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| v.to_string())
            })
            .collect(),
        Some(Value::String(s)) => vec![s.clone()],
        _ => Vec::new(),
    }
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A system fact in human units, by its key's suffix (`_bytes`, `_s`,
/// `_ms`); the raw value goes in the title.
fn fact(key: &str, v: &Value) -> (String, Option<String>) {
    let Some(n) = v.as_u64() else {
        return (scalar(v), None);
    };
    let human = if key.ends_with("_bytes") {
        bytes(n)
    } else if key.ends_with("_ms") {
        duration(n / 1000)
    } else if key.ends_with("_s") {
        duration(n)
    } else {
        return (scalar(v), None);
    };
    (human, Some(n.to_string()))
}

/// `12.3 GiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["bytes", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i < UNITS.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} bytes")
    } else {
        format!("{v:.1} {}", UNITS[i])
    }
}

/// `3d 4h`, `5m 2s`: the two largest units.
pub fn duration(secs: u64) -> String {
    let parts = [
        (secs / 86_400, "d"),
        (secs / 3600 % 24, "h"),
        (secs / 60 % 60, "m"),
        (secs % 60, "s"),
    ];
    let shown: Vec<String> = parts
        .iter()
        .skip_while(|(n, _)| *n == 0)
        .take(2)
        .filter(|(n, _)| *n > 0)
        .map(|(n, u)| format!("{n}{u}"))
        .collect();
    if shown.is_empty() {
        "0s".into()
    } else {
        shown.join(" ")
    }
}

fn event_item(e: &Event) -> Markup {
    let chain = chain(&e.details);
    let system = e.details.get(keys::SYSTEM).and_then(Value::as_object);
    let rest: serde_json::Map<String, Value> = e
        .details
        .iter()
        .filter(|(k, _)| k.as_str() != keys::ERROR_CHAIN && k.as_str() != keys::SYSTEM)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let has_details = !e.details.is_empty();
    let problem = e.severity >= Severity::Warning;
    // A failure's details are what the reader came for.
    let open = e.status == EventStatus::Failed;
    html! {
        li class=(format!("event {} sev-{}", group(e.kind), e.severity)) data-kind=(e.kind) id=(format!("ev-{}", e.id)) {
            div.event-head {
                span.ts { (when_both(e.ts)) }
                span class=(format!("kind {}", group(e.kind))) { (e.kind) }
                span class=(format!("status st-{}", e.status)) { (e.status) }
                span class=(format!("sev sev-{}", e.severity)) { (e.severity) }
                @if e.from_version.is_some() || e.to_version.is_some() {
                    span.versions { (e.from_version.as_deref().unwrap_or("?")) " → " (e.to_version.as_deref().unwrap_or("?")) }
                }
                span.component { (e.component) }
            }
            div.message { (e.message) }
            @if has_details {
                details.more open[open] id=(format!("d-{}", e.id)) {
                    summary { @if problem { "Error details" } @else { "Details" } }
                    @if !chain.is_empty() {
                        h4 { "Error chain" }
                        ol.chain { @for c in &chain { li { (c) } } }
                    }
                    @if let Some(sys) = system {
                        h4 { "System" }
                        table.kv { @for (k, v) in sys {
                            @let (shown, raw) = fact(k, v);
                            tr { th { (k) } td title=[raw] { (shown) } }
                        } }
                    }
                    @if !rest.is_empty() {
                        h4 { "Details" }
                        pre { (serde_json::to_string_pretty(&rest).unwrap_or_default()) }
                    }
                    p.muted.small { "event " (e.id) @if let Some(c) = &e.channel { " · channel " (c) } @if let Some(w) = &e.wave { " · wave " (w) } }
                }
            }
        }
    }
}

/// The page.
pub async fn page(
    s: WebSession,
    State(st): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<EventQuery>,
) -> PageResult {
    let f = q.filter()?;
    let id2 = id.clone();
    let stale = st.stale_before();
    let (agent, (events, next)) = st.store.agent_with_events(id2, stale, f).await?;
    let Some(a) = agent else {
        return Err(PageError(StatusCode::NOT_FOUND, format!("No agent {id}.")));
    };
    let kind = q.kind.clone().unwrap_or_default();
    let sev = q.severity.clone().unwrap_or_default();
    let base = format!("/agents/{}", urlenc(&id));
    let kinds: Vec<(String, String)> = [
        ("", "all kinds"),
        ("update", "update events"),
        ("migration", "migration events"),
    ]
    .iter()
    .map(|(v, l)| (v.to_string(), l.to_string()))
    .chain(
        EventKind::ALL
            .iter()
            .map(|k| (k.as_str().to_owned(), k.as_str().to_owned())),
    )
    .collect();
    let body = html! {
        p.crumbs { a href="/agents" { "Agents" } " / " }
        h1 { (a.agent_id) @if a.revoked { " " span.badge.warn { "revoked" } } }
        dl.facts {
            dt { "version" } dd { (a.version.as_deref().unwrap_or("?")) }
            dt { "channel" } dd { (a.channel.as_deref().unwrap_or("")) }
            dt { "wave" } dd { (a.wave.as_deref().unwrap_or("")) }
            dt { "last seen" } dd { (when(a.last_seen)) }
            dt { "enrolled" } dd { (when(a.enrolled_at)) }
            dt { "events kept" } dd { (a.event_count) }
            dt { "labels" } dd { @for (k, v) in &a.labels { span.chip { (k) "=" (v) } " " } }
        }
        form.filters.auto #event-filters method="get" action=(base) {
            label { "kind " select #kind name="kind" {
                @for (v, l) in &kinds { option value=(v) selected[&kind == v] { (l) } }
            } }
            label { "severity " select #severity name="severity" {
                @for (v, l) in [("", "all"), ("warning,error,critical", "warning and worse"), ("error,critical", "error and worse"), ("critical", "critical"), ("info", "info")] {
                    option value=(v) selected[sev == v] { (l) }
                }
            } }
            button type="submit" { "Filter" }
            a href=(base) { "reset" }
        }
        @if events.is_empty() { p.muted #no-events { "No events match." } }
        ol.timeline #timeline { @for e in &events { (event_item(e)) } }
        @if let Some(c) = next {
            nav.pager { a href=(format!("{base}?kind={}&severity={}&cursor={}", urlenc(&kind), urlenc(&sev), urlenc(&c))) { "older events →" } }
        }
    };
    let stamp_url = super::live::stamp_url(&id);
    html(layout::live_page(
        &format!("Agent {id}"),
        "agents",
        &s,
        (&stamp_url, &super::live::stamp_of(&a)),
        body,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn facts_in_human_units() {
        assert_eq!(
            fact("state_dir_free_bytes", &12_884_901_888u64.into()).0,
            "12.0 GiB"
        );
        assert_eq!(fact("x_bytes", &512u64.into()).0, "512 bytes");
        assert_eq!(
            fact("host_uptime_s", &273_600u64.into()),
            ("3d 4h".into(), Some("273600".into()))
        );
        assert_eq!(fact("agent_uptime_ms", &65_000u64.into()).0, "1m 5s");
        assert_eq!(fact("kernel", &"6.1.0".into()), ("6.1.0".into(), None));
        assert_eq!(duration(3600), "1h");
    }
}
