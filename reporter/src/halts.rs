//! The emergency stop: an admin closes a channel's halt gate, or one
//! release's, by hand, with a reason (`POST /api/v1/halts`, or the form on
//! the overview), and reopens it (`POST /api/v1/halts/{id}/reopen`).
//!
//! - Who (the credential, and the name given), when and why are stored
//!   ([`crate::db::halts`], kept after reopening) and shown on the
//!   overview, in the rollout's gate ([`Gate::halt`]) and so in
//!   `flotilla-publisher status`.
//! - Agents obey at their next gate check: [`apply`] closes the gate with
//!   "manually halted by X at T: why".
//! - A manual halt only ever closes a gate. [`apply`] runs on the gate the
//!   failure rate gives, so reopening (removing the halt) leaves that gate
//!   as the failure rate says: a gate the failure rate closed stays closed.
//! - Every change goes through [`announce`], the one place that tells the
//!   world (the log, and the notifications hook there).
//!
//! The active halts are kept in memory ([`Board`]), loaded at start and
//! after each change, so a gate check costs no query for them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;

use flotilla_protocol::api::{Gate, GateState, Halt, HaltRequest};
use flotilla_protocol::halt::MAX_HALT_REASON_BYTES;

use crate::db::halts::Closed;
use crate::db::DbError;
use crate::error::AppError;
use crate::notify::Notice;
use crate::state::AppState;

/// The active halts, in memory.
///
/// Loads of the list may finish out of order (the reload loop's read
/// started before a halt was committed, the closing request's after; the
/// first can land last), so each load takes a [`Board::ticket`] before it
/// reads and [`Board::set`] keeps the list of the latest ticket: a halt
/// closed here is never dropped by an older read, and a reopened one never
/// comes back from one.
#[derive(Debug, Default)]
pub struct Board {
    /// The list, and the ticket of the read it came from.
    active: RwLock<(u64, Vec<Halt>)>,
    tickets: AtomicU64,
}

impl Board {
    /// The active halt that stops `release` on `channel`, if any: one on the
    /// release itself before one on the whole channel.
    pub fn find(&self, channel: &str, release: &str) -> Option<Halt> {
        let a = self.active.read().expect("halts");
        a.1.iter()
            .filter(|h| h.covers(channel, release))
            .max_by_key(|h| h.release.is_some())
            .cloned()
    }

    /// Every active halt.
    pub fn all(&self) -> Vec<Halt> {
        self.active.read().expect("halts").1.clone()
    }

    /// A number for a read of the halts about to start: greater than every
    /// earlier one.
    pub fn ticket(&self) -> u64 {
        self.tickets.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// Replaces the active halts with `halts`, read after taking `ticket`,
    /// unless a read that started later replaced them already.
    pub fn set(&self, ticket: u64, halts: Vec<Halt>) {
        let mut a = self.active.write().expect("halts");
        if ticket > a.0 {
            *a = (ticket, halts);
        }
    }
}

/// Reloads the active halts from the database.
pub async fn reload(st: &AppState) -> Result<(), DbError> {
    let ticket = st.halts.ticket();
    let halts = st.store.halts_active().await?;
    st.halts.set(ticket, halts);
    Ok(())
}

/// On a database shared by several reporters, reloads the active halts
/// every `every`, so a halt closed or reopened on another replica holds
/// here within that time (the gate's own cache adds its `rollout_cache`).
pub async fn reload_loop(st: AppState, every: std::time::Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = reload(&st).await {
            tracing::warn!(error = %e, "reloading the manual halts failed");
        }
    }
}

/// `gate` as it is with `halt` holding: closed, the halt's reason first
/// (and the failure rate's, when that closed it too).
pub fn apply(mut gate: Gate, halt: Option<Halt>) -> Gate {
    let Some(h) = halt else { return gate };
    gate.reason = match gate.state {
        GateState::Closed => format!("{}; also {}", h.gate_reason(), gate.reason),
        GateState::Open => h.gate_reason(),
    };
    gate.state = GateState::Closed;
    gate.halt = Some(h);
    gate
}

/// A change of a manual halt.
#[derive(Clone, Debug, PartialEq)]
pub enum HaltChange {
    /// An operator closed a gate.
    Closed(Halt),
    /// An operator reopened it (the gate may stay closed by its failure
    /// rate).
    Reopened(Halt),
}

/// Tells the world about `change`, once it is committed: the log, and the
/// webhooks (`manual_halt` / `manual_resume`, queued in the outbox by a task
/// of their own so the operator's request does not wait on it).
pub fn announce(st: &AppState, change: &HaltChange) {
    let notice = match change {
        HaltChange::Closed(h) => Notice::ManualHalt {
            channel: h.channel.clone(),
            release: h.release.clone(),
            by: h.closed_by.clone(),
            reason: h.reason.clone(),
        },
        HaltChange::Reopened(h) => Notice::ManualResume {
            channel: h.channel.clone(),
            release: h.release.clone(),
            by: h.reopened_by.clone().unwrap_or_default(),
        },
    };
    let (notifier, store) = (st.notifier.clone(), st.store.clone());
    tokio::spawn(async move {
        if let Err(e) = notifier.enqueue(&store, notice).await {
            tracing::warn!(error = %e, "queueing a manual-halt notification failed");
        }
    });
    match change {
        HaltChange::Closed(h) => tracing::warn!(
            id = h.id,
            channel = %h.channel,
            release = h.release.as_deref().unwrap_or("*"),
            by = %h.closed_by,
            reason = %h.reason,
            "gate manually closed"
        ),
        HaltChange::Reopened(h) => tracing::warn!(
            id = h.id,
            channel = %h.channel,
            release = h.release.as_deref().unwrap_or("*"),
            by = h.reopened_by.as_deref().unwrap_or(""),
            "manual halt reopened"
        ),
    }
}

/// Who did it, for the record: the name given (if any) and the credential.
fn who(by: Option<&str>, credential: &str) -> String {
    match by.map(str::trim).filter(|s| !s.is_empty()) {
        Some(name) => format!("{name} ({credential})"),
        None => credential.to_owned(),
    }
}

fn bounded(field: &str, v: &str, max: usize, required: bool) -> Result<(), AppError> {
    let bad =
        |why: String| Err(AppError::bad_request(format!("{field}: {why}")).at(None, Some(field)));
    if required && v.trim().is_empty() {
        return bad("required".into());
    }
    if v.len() > max {
        return bad(format!("at most {max} bytes, got {}", v.len()));
    }
    if v.chars().any(|c| c.is_control() && c != '\n') {
        return bad("no control characters".into());
    }
    Ok(())
}

/// Closes a gate for `req`, as `credential` ("admin token", "web page").
/// Returns the halt and whether it is new (the same scope halted already
/// gives that halt back, unchanged). 400 names the field; a channel the
/// verified manifest does not name is refused (a typo would stop nothing).
pub async fn close(
    st: &AppState,
    req: HaltRequest,
    credential: &str,
) -> Result<(Halt, bool), AppError> {
    bounded("channel", &req.channel, 128, true)?;
    if let Some(r) = &req.release {
        bounded("release", r, 128, true)?;
    }
    bounded("reason", &req.reason, MAX_HALT_REASON_BYTES, true)?;
    bounded("by", req.by.as_deref().unwrap_or(""), 128, false)?;
    if let Some(m) = st.manifest.get() {
        if !m.channels.contains_key(&req.channel) {
            let known: Vec<&str> = m.channels.keys().map(String::as_str).collect();
            return Err(AppError::bad_request(format!(
                "channel: the verified manifest has no channel {:?} (it has: {})",
                req.channel,
                known.join(", ")
            ))
            .at(None, Some("channel")));
        }
    }
    let by = who(req.by.as_deref(), credential);
    let now = crate::db::now_micros();
    let HaltRequest {
        channel,
        release,
        reason,
        ..
    } = req;
    let reason = reason.trim().to_owned();
    let closed = st
        .store
        .halt_close(channel, release, reason, by, now)
        .await?;
    reload(st).await?;
    Ok(match closed {
        Closed::New(h) => {
            announce(st, &HaltChange::Closed(h.clone()));
            (h, true)
        }
        Closed::Already(h) => (h, false),
    })
}

/// Reopens halt `id` as `credential`; 404 when there is none. Reopening one
/// reopened already answers it as it is.
pub async fn reopen(
    st: &AppState,
    id: i64,
    by: Option<&str>,
    credential: &str,
) -> Result<Halt, AppError> {
    bounded("by", by.unwrap_or(""), 128, false)?;
    let by = who(by, credential);
    let now = crate::db::now_micros();
    let before = st.store.halt_get(id).await?;
    let Some(before) = before else {
        return Err(AppError::not_found(format!("no halt {id}")));
    };
    let h = st
        .store
        .halt_reopen(id, by, now)
        .await?
        .ok_or_else(|| AppError::not_found(format!("no halt {id}")))?;
    reload(st).await?;
    if before.active() {
        announce(st, &HaltChange::Reopened(h.clone()));
    }
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn halt(id: i64, reopened: bool) -> Halt {
        Halt {
            id,
            channel: "stable".into(),
            release: None,
            reason: "bad".into(),
            closed_by: "ops".into(),
            closed_at: chrono::Utc::now(),
            reopened_by: reopened.then(|| "ops".into()),
            reopened_at: reopened.then(chrono::Utc::now),
        }
    }

    #[test]
    fn an_older_read_landing_last_keeps_a_newer_halt() {
        let b = Board::default();
        // The reload loop's read starts; a halt is closed and the closing
        // request reads the list again, which lands first.
        let old = b.ticket();
        let new = b.ticket();
        b.set(new, vec![halt(1, false)]);
        b.set(old, vec![]);
        assert_eq!(b.find("stable", "2.0.0").map(|h| h.id), Some(1));
        // A read that starts after replaces it (the halt reopened).
        b.set(b.ticket(), vec![]);
        assert!(b.find("stable", "2.0.0").is_none());
        b.set(new, vec![halt(1, false)]);
        assert!(
            b.find("stable", "2.0.0").is_none(),
            "a reopened halt came back"
        );
    }
}
