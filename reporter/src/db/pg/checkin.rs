//! Check-ins on PostgreSQL: the twin of [`crate::db::checkin::apply`].
//!
//! One statement for the whole job (`UPDATE ... FROM unnest(...)`). Each
//! row is a single-row update, safe next to other replicas at READ
//! COMMITTED (`last_seen` only moves forward: `GREATEST`). Rows are sent in
//! agent id order, so that concurrent jobs lock agents in one order.

use std::collections::BTreeMap;

use deadpool_postgres::GenericClient;
use tokio_postgres::types::Type;

use crate::checkin::Received;
use crate::db::{to_micros, DbError};

const CHECKIN: &str = "UPDATE agents a SET last_seen = GREATEST(COALESCE(a.last_seen, 0), u.seen),
             checkin_ts = u.at, host_state = u.state, host_reason = u.reason,
             host_release = u.release, host_until = u.until,
             wave = COALESCE(u.wave, a.wave), version = COALESCE(u.version, a.version),
             channel = COALESCE(u.channel, a.channel)
         FROM unnest($1::text[], $2::int8[], $3::int8[], $4::text[], $5::text[], $6::text[],
                     $7::int8[], $8::text[], $9::text[], $10::text[])
              AS u(agent_id, seen, at, state, reason, release, until, wave, version, channel)
         WHERE a.agent_id = u.agent_id AND a.revoked_at IS NULL";

struct Folded<'a> {
    seen: i64,
    last: &'a Received,
    wave: Option<&'a str>,
    version: Option<&'a str>,
    channel: Option<&'a str>,
}

/// Writes each agent's latest check-in: it was seen then, and this is its
/// state. Revoked or unknown agents are skipped. Re-runnable. An agent
/// named twice ends as SQLite leaves it.
pub async fn apply(
    c: &deadpool_postgres::Transaction<'_>,
    rows: &[(String, Received)],
) -> Result<(), DbError> {
    // Applied in order, rows of one agent leave: `last_seen` the latest
    // receipt, wave, version and channel the last given, the rest the last
    // row's. Folded here, so the statement updates each agent once.
    let mut last: BTreeMap<&str, Folded> = BTreeMap::new();
    for (agent_id, r) in rows {
        let ck = &r.checkin;
        let f = last.entry(agent_id).or_insert(Folded {
            seen: r.at,
            last: r,
            wave: None,
            version: None,
            channel: None,
        });
        f.seen = f.seen.max(r.at);
        f.last = r;
        f.wave = ck.wave.as_deref().or(f.wave);
        f.version = ck.version.as_deref().or(f.version);
        f.channel = ck.channel.as_deref().or(f.channel);
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
    for (id, f) in &last {
        let ck = &f.last.checkin;
        ids.push(*id);
        seen.push(f.seen);
        at.push(f.last.at);
        state.push(ck.state.as_str());
        reason.push(ck.reason.as_str());
        release.push(ck.release.as_deref());
        until.push(ck.until.map(to_micros));
        wave.push(f.wave);
        version.push(f.version);
        channel.push(f.channel);
    }
    let t = Type::TEXT_ARRAY;
    let i8s = Type::INT8_ARRAY;
    let st = c
        .prepare_typed_cached(
            CHECKIN,
            &[
                t.clone(),
                i8s.clone(),
                i8s.clone(),
                t.clone(),
                t.clone(),
                t.clone(),
                i8s,
                t.clone(),
                t.clone(),
                t,
            ],
        )
        .await?;
    c.execute(
        &st,
        &[
            &ids, &seen, &at, &state, &reason, &release, &until, &wave, &version, &channel,
        ],
    )
    .await?;
    Ok(())
}
