//! The SQL of check-ins ([`crate::checkin`]).

use rusqlite::{params, Connection};

use super::DbError;
use crate::checkin::Received;

/// Writes each agent's latest check-in: it was seen then, and this is its
/// state. Revoked or unknown agents are skipped. Re-runnable.
pub fn apply(conn: &Connection, rows: &[(String, Received)]) -> Result<(), DbError> {
    let mut st = conn.prepare_cached(
        "UPDATE agents SET last_seen = MAX(IFNULL(last_seen, 0), ?2), checkin_ts = ?2,
             host_state = ?3, host_reason = ?4, host_release = ?5, host_until = ?6,
             wave = COALESCE(?7, wave), version = COALESCE(?8, version),
             channel = COALESCE(?9, channel)
         WHERE agent_id = ?1 AND revoked_at IS NULL",
    )?;
    for (agent_id, r) in rows {
        let c = &r.checkin;
        st.execute(params![
            agent_id,
            r.at,
            c.state.as_str(),
            c.reason,
            c.release,
            c.until.map(super::to_micros),
            c.wave,
            c.version,
            c.channel,
        ])?;
    }
    Ok(())
}
