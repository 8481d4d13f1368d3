//! Compositions of the notifications: what queues notices in the
//! caller's transaction, over the outbox and `notify_state`
//! ([`super::outbox`]). Each is one store operation.

use chrono::{DateTime, Utc};
use flotilla_protocol::api::{Gate, GateState};
use rusqlite::Connection;

use super::{outbox, DbError};
use crate::notify::{Notice, Notifier, MAX_NAMED_AGENTS};

/// The watermark of the silent-agent check in `notify_state`.
pub const WATERMARK: &str = "silent_watermark";

/// Queues `notice` for each receiver that wants it, in `conn`'s
/// transaction, then drops the oldest rows beyond `max_rows`. Returns
/// whether anything was queued (then call [`Notifier::wake`] after the
/// commit).
pub fn insert(conn: &Connection, n: &Notifier, notice: &Notice, now: i64) -> Result<bool, DbError> {
    let kind = notice.kind();
    let mut body = None;
    for w in &n.settings().webhooks {
        if !(w.kinds.is_empty() || w.kinds.iter().any(|k| k == kind)) {
            continue;
        }
        let body = body.get_or_insert_with(|| notice.body(crate::db::from_micros(now)));
        outbox::insert(conn, &w.name, kind, body, now)?;
    }
    if body.is_none() {
        return Ok(false);
    }
    for receiver in outbox::trim(conn, n.settings().max_rows)? {
        n.dropped(&receiver, "max_rows");
    }
    Ok(true)
}

/// The gate part of [`Notifier::observe_gate`], in one transaction: whether a
/// notice was queued.
pub fn record_gate(conn: &Connection, n: &Notifier, g: &Gate, now: i64) -> Result<bool, DbError> {
    let key = format!("gate:{}\u{1f}{}", g.channel, g.release);
    let state = match g.state {
        GateState::Closed => "closed",
        _ => "open",
    };
    let before = outbox::state(conn, &key)?;
    if before.as_deref() == Some(state) {
        return Ok(false);
    }
    outbox::set_state(conn, &key, state, now)?;
    let notice = match (before.as_deref(), g.state) {
        (_, GateState::Closed) => Notice::GateClosed {
            channel: g.channel.clone(),
            release: g.release.clone(),
            reason: g.reason.clone(),
            failure_rate: g.failure_rate,
            failed: g.failed,
            reports: g.reports,
        },
        // A release first seen open is no news.
        (None, _) => return Ok(false),
        (Some(_), _) => Notice::GateReopened {
            channel: g.channel.clone(),
            release: g.release.clone(),
            reason: g.reason.clone(),
        },
    };
    insert(conn, n, &notice, now)
}

/// The watcher's steps 2 and 3 ([`crate::notify::watch`]), in one transaction: the agents that
/// fell silent since the watermark (then the watermark moves to `cutoff`)
/// and what expires soon; whether a notice was queued.
pub fn watch_check(
    c: &Connection,
    n: &Notifier,
    cutoff: i64,
    silent_for: &str,
    expiring: &[Expiring],
    now: i64,
) -> Result<bool, DbError> {
    let a = silent(c, n, cutoff, silent_for, now)?;
    let b = expiry(c, n, expiring, now)?;
    Ok(a | b)
}

/// What expires soon: "manifest" or "root", its serial or version, when.
pub type Expiring = (&'static str, u64, DateTime<Utc>);

fn silent(
    c: &Connection,
    n: &Notifier,
    cutoff: i64,
    silent_for: &str,
    now: i64,
) -> Result<bool, DbError> {
    let after: Option<i64> = outbox::state(c, WATERMARK)?.and_then(|v| v.parse().ok());
    outbox::set_state(c, WATERMARK, &cutoff.to_string(), now)?;
    let Some(after) = after.filter(|a| *a < cutoff) else {
        return Ok(false);
    };
    if !n.wants("agents_silent") {
        return Ok(false);
    }
    let (count, agents) = outbox::fell_silent(c, after, cutoff, MAX_NAMED_AGENTS)?;
    if count == 0 {
        return Ok(false);
    }
    let notice = Notice::AgentsSilent {
        count,
        agents,
        silent_for: silent_for.to_owned(),
    };
    insert(c, n, &notice, now)
}

fn expiry(c: &Connection, n: &Notifier, expiring: &[Expiring], now: i64) -> Result<bool, DbError> {
    let mut queued = false;
    for (what, version, expires) in expiring {
        let key = format!("expiring:{what}:{version}");
        if outbox::state(c, &key)?.is_some() {
            continue;
        }
        outbox::set_state(c, &key, &expires.to_rfc3339(), now)?;
        let notice = Notice::Expiring {
            what: (*what).to_owned(),
            version: *version,
            expires: *expires,
        };
        queued |= insert(c, n, &notice, now)?;
    }
    Ok(queued)
}
