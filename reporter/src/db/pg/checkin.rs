//! Check-ins on PostgreSQL: the twin of [`crate::db::checkin::apply`].
//!
//! One statement for the whole job (`UPDATE ... FROM unnest(...)`). Each
//! row is a single-row update, safe next to other replicas at READ
//! COMMITTED (`last_seen` only moves forward: `GREATEST`). Rows are sent in
//! agent id order, so that concurrent jobs lock agents in one order.

use std::collections::BTreeMap;

use tokio_postgres::types::Type;
use tokio_postgres::GenericClient;

use crate::checkin::Received;
use crate::db::{to_micros, DbError};

/// Writes each agent's latest check-in: it was seen then, and this is its
/// state. Revoked or unknown agents are skipped. Re-runnable. An agent
/// named twice ends as SQLite leaves it (its last row, `last_seen` the
/// latest of them).
pub async fn apply(c: &impl GenericClient, rows: &[(String, Received)]) -> Result<(), DbError> {
    // agent -> (latest receipt, its last row)
    let mut last: BTreeMap<&str, (i64, &Received)> = BTreeMap::new();
    for (agent_id, r) in rows {
        let e = last.entry(agent_id).or_insert((r.at, r));
        *e = (e.0.max(r.at), r);
    }
    if last.is_empty() {
        return Ok(());
    }
    let n = last.len();
    let mut ids = Vec::with_capacity(n);
    let mut seen = Vec::with_capacity(n);
    let mut at = Vec::with_capacity(n);
    let mut state = Vec::with_capacity(n);
    let mut reason = Vec::with_capacity(n);
    let mut release: Vec<Option<&str>> = Vec::with_capacity(n);
    let mut until: Vec<Option<i64>> = Vec::with_capacity(n);
    let mut wave: Vec<Option<&str>> = Vec::with_capacity(n);
    let mut version: Vec<Option<&str>> = Vec::with_capacity(n);
    let mut channel: Vec<Option<&str>> = Vec::with_capacity(n);
    for (id, (max_at, r)) in &last {
        let ck = &r.checkin;
        ids.push(*id);
        seen.push(*max_at);
        at.push(r.at);
        state.push(ck.state.as_str());
        reason.push(ck.reason.as_str());
        release.push(ck.release.as_deref());
        until.push(ck.until.map(to_micros));
        wave.push(ck.wave.as_deref());
        version.push(ck.version.as_deref());
        channel.push(ck.channel.as_deref());
    }
    let t = Type::TEXT_ARRAY;
    c.execute_typed(
        "UPDATE agents a SET last_seen = GREATEST(COALESCE(a.last_seen, 0), u.seen),
             checkin_ts = u.at, host_state = u.state, host_reason = u.reason,
             host_release = u.release, host_until = u.until,
             wave = COALESCE(u.wave, a.wave), version = COALESCE(u.version, a.version),
             channel = COALESCE(u.channel, a.channel)
         FROM unnest($1::text[], $2::int8[], $3::int8[], $4::text[], $5::text[], $6::text[],
                     $7::int8[], $8::text[], $9::text[], $10::text[])
              AS u(agent_id, seen, at, state, reason, release, until, wave, version, channel)
         WHERE a.agent_id = u.agent_id AND a.revoked_at IS NULL",
        &[
            (&ids, t.clone()),
            (&seen, Type::INT8_ARRAY),
            (&at, Type::INT8_ARRAY),
            (&state, t.clone()),
            (&reason, t.clone()),
            (&release, t.clone()),
            (&until, Type::INT8_ARRAY),
            (&wave, t.clone()),
            (&version, t.clone()),
            (&channel, t),
        ],
    )
    .await?;
    Ok(())
}
