//! The watcher: every `check_every`, what no single request reveals.
//!
//! 1. each channel's current release: its gate is computed (so a gate
//!    closes or reopens with a notice even when no agent asks);
//! 2. agents whose `last_seen` passed `stale_after` since the last look
//!    (a watermark in `notify_state`; the first look only sets it): one
//!    `agents_silent` notice naming them;
//! 3. the verified manifest and the newest verified root: an `expiring`
//!    notice once per serial or version when it expires within
//!    `expiry_warning`.

use chrono::{DateTime, Utc};
use rusqlite::Connection;

use super::{insert, Notice, Notifier, MAX_NAMED_AGENTS};
use crate::db::{outbox, DbError};
use crate::state::AppState;

const WATERMARK: &str = "silent_watermark";

/// Runs until the process ends.
pub async fn run(st: AppState) {
    let mut tick = tokio::time::interval(st.notifier.settings().check_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = once(&st).await {
            tracing::warn!(error = %e, "notification checks failed");
        }
    }
}

/// One look.
pub async fn once(st: &AppState) -> Result<(), DbError> {
    for (channel, release) in st.current_rollouts() {
        // `gate` reports a change to the notifier itself.
        st.gate(&channel, &release).await?;
    }
    let n = st.notifier.clone();
    let now = crate::db::now_micros();
    let stale = st.settings.stale_after;
    let silent_for = humantime::format_duration(stale).to_string();
    let mut expiring = Vec::new();
    let warn_until = Utc::now()
        + chrono::Duration::from_std(n.settings().expiry_warning).unwrap_or(chrono::Duration::MAX);
    let status = st.manifest.status();
    if let Some(m) = &status.verified {
        if m.expires <= warn_until {
            expiring.push(("manifest", m.serial, m.expires));
        }
    }
    if let Some((version, expires)) = st.manifest.root_expiry() {
        if expires <= warn_until {
            expiring.push(("root", version, expires));
        }
    }
    let queued = st
        .writer
        .run(move |c| {
            let cutoff = now - stale.as_micros() as i64;
            let a = silent(c, &n, cutoff, &silent_for, now)?;
            let b = expiry(c, &n, &expiring, now)?;
            Ok(a | b)
        })
        .await?;
    if queued {
        st.notifier.wake();
    }
    Ok(())
}

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

fn expiry(
    c: &Connection,
    n: &Notifier,
    expiring: &[(&str, u64, DateTime<Utc>)],
    now: i64,
) -> Result<bool, DbError> {
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
