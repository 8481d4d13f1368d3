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

use crate::db::DbError;
use crate::state::AppState;
use chrono::Utc;

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

/// The lease that lets one replica at a time watch a shared database.
pub const LEASE: &str = "notify-watch";

/// One look; on a shared database only by the replica that holds
/// [`LEASE`] (for three `check_every`, at least a minute: a dead holder's
/// watch passes to another after that). Gate notices are told once either
/// way ([`crate::store::Store::notify_record_gate`] locks the gate's row).
pub async fn once(st: &AppState) -> Result<(), DbError> {
    let ttl = (st.notifier.settings().check_every * 3).max(std::time::Duration::from_secs(60));
    if !st.store.lease(LEASE, &st.replica, ttl).await? {
        return Ok(());
    }
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
    let cutoff = now - stale.as_micros() as i64;
    let queued = st
        .store
        .watch_check(n, cutoff, silent_for, expiring, now)
        .await?;
    if queued {
        st.notifier.wake();
    }
    Ok(())
}
