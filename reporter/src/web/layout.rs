//! The page frame and small shared pieces.

use chrono::{DateTime, Utc};
use maud::{html, Markup, DOCTYPE};

use super::session::WebSession;

/// A page without navigation (login, errors).
pub fn bare(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Flotilla" }
                link rel="stylesheet" href="/static/app.css";
                script src="/static/app.js" defer {}
            }
            body { (body) }
        }
    }
}

/// A page with navigation. `refresh`: reload `<main>` every few seconds.
pub fn page(title: &str, active: &str, s: &WebSession, refresh: bool, body: Markup) -> Markup {
    frame(title, active, s, refresh, None, body)
}

/// A page that updates itself when `stamp` changes: `app.js` polls
/// `stamp_url` (a few bytes, see [`super::live`]) and reloads `<main>` only
/// when the answer differs, keeping the URL's filters and the open details.
pub fn live_page(
    title: &str,
    active: &str,
    s: &WebSession,
    (stamp_url, stamp): (&str, &str),
    body: Markup,
) -> Markup {
    frame(title, active, s, false, Some((stamp_url, stamp)), body)
}

fn frame(
    title: &str,
    active: &str,
    s: &WebSession,
    refresh: bool,
    live: Option<(&str, &str)>,
    body: Markup,
) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Flotilla" }
                link rel="stylesheet" href="/static/app.css";
                script src="/static/app.js" defer {}
            }
            body data-refresh=(if refresh { "1" } else { "0" })
                data-stamp-url=[live.map(|l| l.0)] data-stamp=[live.map(|l| l.1)] {
                header.top {
                    a.brand href="/" { "⚓ Flotilla" }
                    nav {
                        a.active[active == "overview"] href="/" { "Overview" }
                        a.active[active == "agents"] href="/agents" { "Agents" }
                    }
                    span.live #live hidden[!refresh && live.is_none()] { "● live" }
                    form.logout method="post" action="/logout" {
                        input type="hidden" name="csrf" value=(s.csrf);
                        button type="submit" { "Log out" }
                    }
                }
                main #main { (body) }
            }
        }
    }
}

/// An absolute UTC time with a relative hint.
pub fn when(t: Option<DateTime<Utc>>) -> Markup {
    match t {
        None => html! { span.muted { "never" } },
        Some(t) => html! {
            time datetime=(t.to_rfc3339()) title=(t.format("%Y-%m-%d %H:%M:%S UTC")) { (ago(t)) }
        },
    }
}

/// The absolute time (UTC, to the second) and, beside it, how long ago.
pub fn when_both(t: DateTime<Utc>) -> Markup {
    html! {
        time datetime=(t.to_rfc3339()) { (t.format("%Y-%m-%d %H:%M:%S UTC")) }
        " " span.ago { "(" (ago(t)) ")" }
    }
}

/// "5m ago".
pub fn ago(t: DateTime<Utc>) -> String {
    let s = (Utc::now() - t).num_seconds();
    match s {
        i64::MIN..=-1 => "in the future".into(),
        0..=59 => format!("{s}s ago"),
        60..=3599 => format!("{}m ago", s / 60),
        3600..=86_399 => format!("{}h ago", s / 3600),
        _ => format!("{}d ago", s / 86_400),
    }
}

/// Percent (0–100) of `part` in `whole`, rounded.
pub fn pct(part: u64, whole: u64) -> u64 {
    (part * 100 + whole / 2).checked_div(whole).unwrap_or(0)
}
