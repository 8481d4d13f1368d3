//! Liveness: every agent pass ends with a check-in (`POST /api/v1/checkin`,
//! [`CheckIn`]): the agent was seen, and what it decided (its
//! [`HostState`](flotilla_protocol::api::HostState) and why).
//!
//! Check-ins are cheap on purpose, since a million agents every 15 minutes
//! send about 1,100 a second:
//!
//! 1. the handler checks the agent token and the body and puts the check-in
//!    into [`CheckIns`], an in-memory map keyed by agent (a newer check-in
//!    of the same agent replaces the older), and answers 202 at once;
//! 2. every [`FLUSH`] [`flush_loop`] takes the whole map and writes it in
//!    writer jobs of [`CHUNK`] check-ins ([`crate::db::checkin::apply`]),
//!    one after the other, sharing the writer's group commit with event
//!    batches: one job of a whole second's check-ins (~1,100 at 1M agents)
//!    held the writer long enough to double the event batches' p99;
//! 3. on shutdown, [`flush`] writes what is left.
//!
//! A check-in is not an event: only the latest is kept, and one lost in a
//! crash costs nothing but a second of `last_seen`. The map is bounded
//! ([`MAX_PENDING`] agents); past that a check-in answers 503 and the agent
//! simply tries again on its next pass.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use flotilla_protocol::api::CheckIn;

use crate::state::AppState;

/// How often the check-ins received are written.
pub const FLUSH: Duration = Duration::from_secs(1);
/// Check-ins per writer job.
pub const CHUNK: usize = 64;
/// Most agents whose check-ins wait for a flush.
pub const MAX_PENDING: usize = 100_000;

/// A check-in as received: what, and when (µs).
#[derive(Clone, Debug)]
pub struct Received {
    /// The check-in.
    pub checkin: CheckIn,
    /// When the reporter received it.
    pub at: i64,
}

/// The check-ins waiting for the next flush, newest per agent.
#[derive(Debug, Default)]
pub struct CheckIns {
    pending: Mutex<HashMap<String, Received>>,
}

impl CheckIns {
    /// Keeps `checkin` for the next flush; `false` when the map is full.
    pub fn record(&self, agent_id: &str, checkin: CheckIn, at: i64) -> bool {
        let mut p = self.pending.lock().expect("check-ins");
        if p.len() >= MAX_PENDING && !p.contains_key(agent_id) {
            return false;
        }
        p.insert(agent_id.to_owned(), Received { checkin, at });
        true
    }

    /// Takes everything waiting.
    pub fn take(&self) -> Vec<(String, Received)> {
        let mut p = self.pending.lock().expect("check-ins");
        std::mem::take(&mut *p).into_iter().collect()
    }
}

/// Writes the check-ins waiting, [`CHUNK`] per writer job.
pub async fn flush(st: &AppState) {
    let rows = st.checkins.take();
    if rows.is_empty() {
        return;
    }
    let n = rows.len();
    let mut rows = rows.into_iter();
    loop {
        let chunk: Vec<_> = rows.by_ref().take(CHUNK).collect();
        if chunk.is_empty() {
            break;
        }
        if let Err(e) = st.store.checkin_apply(chunk).await {
            tracing::warn!(error = %e, checkins = n, "writing check-ins failed");
            return;
        }
    }
    tracing::trace!(checkins = n, "check-ins written");
}

/// Step 2 of the module doc, until the task is aborted.
pub async fn flush_loop(st: AppState) {
    let mut tick = tokio::time::interval(FLUSH);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        flush(&st).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_protocol::api::HostState;

    fn c(state: HostState) -> CheckIn {
        CheckIn {
            state,
            reason: String::new(),
            release: None,
            wave: None,
            until: None,
            version: None,
            channel: None,
        }
    }

    #[test]
    fn newest_check_in_per_agent_wins() {
        let ci = CheckIns::default();
        assert!(ci.record("a", c(HostState::Waiting), 1));
        assert!(ci.record("a", c(HostState::Updating), 2));
        assert!(ci.record("b", c(HostState::Held), 3));
        let mut got = ci.take();
        got.sort_by(|x, y| x.0.cmp(&y.0));
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].1.checkin.state, HostState::Updating);
        assert!(ci.take().is_empty());
    }
}
