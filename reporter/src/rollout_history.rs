//! Finished rollouts are kept: every release a channel rolled out, with
//! when the reporter first and last saw the verified manifest name it
//! ([`crate::db::rollout_history`]), looked at every [`EVERY`] by
//! [`record_loop`] and written when the manifest's rollouts changed (and
//! every [`REFRESH`] otherwise, so `last_seen` stays roughly current); `GET /api/v1/rollouts/history` and the overview show
//! them with their progress as it stands (the agents' outcomes are kept,
//! see [`crate::rollout`]).

use std::time::Duration;

use flotilla_protocol::api::{PastRollout, RolloutHistory};

use crate::db::{from_micros, DbError};
use crate::state::AppState;

/// How often the current rollouts are looked at.
pub const EVERY: Duration = Duration::from_secs(1);
/// How often they are written when nothing changed.
pub const REFRESH: Duration = Duration::from_secs(60);

/// Records `pairs` as the current rollouts.
async fn record(st: &AppState, pairs: Vec<(String, String)>) -> Result<(), DbError> {
    if pairs.is_empty() {
        return Ok(());
    }
    let now = crate::db::now_micros();
    st.store.rollout_history_touch(pairs, now).await
}

/// See the module doc; until aborted.
pub async fn record_loop(st: AppState) {
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last: Option<(Vec<(String, String)>, std::time::Instant)> = None;
    loop {
        tick.tick().await;
        let pairs = st.current_rollouts();
        if last
            .as_ref()
            .is_some_and(|(p, at)| *p == pairs && at.elapsed() < REFRESH)
        {
            continue;
        }
        match record(&st, pairs.clone()).await {
            Ok(()) => last = Some((pairs, std::time::Instant::now())),
            Err(e) => tracing::warn!(error = %e, "recording the rollout history failed"),
        }
    }
}

/// The newest `per_channel` rollouts of each channel (or of `channel`),
/// each with its progress.
pub async fn history(
    st: &AppState,
    channel: Option<String>,
    per_channel: u32,
) -> Result<RolloutHistory, DbError> {
    let entries = st.store.rollout_history_list(channel, per_channel).await?;
    let current = st.current_rollouts();
    let mut rollouts = Vec::with_capacity(entries.len());
    for e in entries {
        let progress = st.rollout(&e.channel, &e.release).await?;
        rollouts.push(PastRollout {
            current: current.contains(&(e.channel.clone(), e.release.clone())),
            first_seen: from_micros(e.first_seen),
            last_seen: from_micros(e.last_seen),
            progress,
        });
    }
    Ok(RolloutHistory { rollouts })
}
