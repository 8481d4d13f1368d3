//! Read queries, run on the read pool.

use std::collections::BTreeMap;

use flotilla_protocol::api::{AgentSummary, HostState};
use flotilla_protocol::Event;
use rusqlite::types::Value as SqlValue;
use rusqlite::{params, params_from_iter, Connection, OptionalExtension, Row};

use super::{from_micros, DbError};

/// Filters of `GET /api/v1/agents`.
#[derive(Clone, Debug, Default)]
pub struct AgentFilter {
    /// Substring of the id, a label's key or value, or the version; `k=v`
    /// is a label filter.
    pub q: Option<String>,
    /// Exact channel.
    pub channel: Option<String>,
    /// Exact version.
    pub version: Option<String>,
    /// Exact wave.
    pub wave: Option<String>,
    /// Any of these states (`not_reporting`: not heard from since
    /// `stale_before`; the others: that check-in state, and heard from).
    pub states: Vec<HostState>,
    /// Every one of these labels, exactly (`key`, `value`).
    pub labels: Vec<(String, String)>,
    /// Only agents last seen before this (µs), or never: "not reporting".
    pub silent_since: Option<i64>,
    /// Agents not heard from since this (µs) are "not reporting".
    pub stale_before: i64,
    /// Include revoked agents.
    pub include_revoked: bool,
    /// Order.
    pub sort: AgentSort,
    /// Page size.
    pub limit: u32,
    /// Rows to skip.
    pub offset: u32,
}

/// One condition of an [`AgentFilter`], for each backend to write in its
/// own SQL: what the filter means is decided once, in
/// [`AgentFilter::conditions`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AgentCond {
    /// Not revoked.
    NotRevoked,
    /// This text (trimmed, not empty) in the id, the version, or a label's
    /// key or value: `LIKE '%text%'`, ASCII case folded.
    Search(String),
    /// This label (key, value), exactly.
    Label(String, String),
    /// This column (`channel`, `version` or `wave`) equal to this value.
    Eq(&'static str, String),
    /// Any of: in one of `reported` (check-in states) and heard from since
    /// `since`; or, if `not_reporting`, not heard from since `since` (µs)
    /// or never.
    States {
        /// Reported states, as stored.
        reported: Vec<&'static str>,
        /// Also agents not heard from since `since`.
        not_reporting: bool,
        /// The staleness bound, µs.
        since: i64,
    },
    /// Not heard from since this (µs), or never.
    SilentSince(i64),
}

impl AgentFilter {
    /// Every condition an agent must meet. The search box's `key=value` is
    /// a label filter; any other text is a [`AgentCond::Search`].
    pub fn conditions(&self) -> Vec<AgentCond> {
        let mut out = Vec::new();
        if !self.include_revoked {
            out.push(AgentCond::NotRevoked);
        }
        let mut labels = self.labels.clone();
        if let Some(q) = self.q.as_deref().map(str::trim).filter(|q| !q.is_empty()) {
            match q.split_once('=') {
                // `role=db` in the search box: that label, exactly.
                Some((k, v)) if !k.trim().is_empty() => {
                    labels.push((k.trim().to_owned(), v.trim().to_owned()))
                }
                _ => out.push(AgentCond::Search(q.to_owned())),
            }
        }
        out.extend(labels.into_iter().map(|(k, v)| AgentCond::Label(k, v)));
        for (col, val) in [
            ("channel", &self.channel),
            ("version", &self.version),
            ("wave", &self.wave),
        ] {
            if let Some(v) = val {
                out.push(AgentCond::Eq(col, v.clone()));
            }
        }
        if !self.states.is_empty() {
            out.push(AgentCond::States {
                reported: self
                    .states
                    .iter()
                    .filter(|s| **s != HostState::NotReporting)
                    .map(|s| s.as_str())
                    .collect(),
                not_reporting: self.states.contains(&HostState::NotReporting),
                since: self.stale_before,
            });
        }
        if let Some(t) = self.silent_since {
            out.push(AgentCond::SilentSince(t));
        }
        out
    }
}

/// Orders of the agents list.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AgentSort {
    /// Most recently seen first.
    #[default]
    LastSeenDesc,
    /// Longest silent first.
    LastSeenAsc,
    /// By id.
    AgentId,
    /// By version, then id.
    Version,
}

/// An agent's row; its state is `not_reporting` when it was not heard from
/// since `stale_before` (µs).
fn agent_from_row(r: &Row<'_>, stale_before: i64) -> rusqlite::Result<AgentSummary> {
    let labels: String = r.get("labels")?;
    let last_seen: Option<i64> = r.get("last_seen")?;
    let reported = r
        .get::<_, Option<String>>("host_state")?
        .as_deref()
        .and_then(HostState::parse);
    let state = if last_seen.is_none_or(|t| t < stale_before) {
        Some(HostState::NotReporting)
    } else {
        reported
    };
    Ok(AgentSummary {
        agent_id: r.get("agent_id")?,
        version: r.get("version")?,
        channel: r.get("channel")?,
        wave: r.get("wave")?,
        labels: serde_json::from_str(&labels).unwrap_or_default(),
        last_seen: last_seen.map(from_micros),
        last_error: r.get("last_error")?,
        last_error_at: r.get::<_, Option<i64>>("last_error_ts")?.map(from_micros),
        enrolled_at: Some(from_micros(r.get("enrolled_at")?)),
        revoked: r.get::<_, Option<i64>>("revoked_at")?.is_some(),
        event_count: r.get::<_, i64>("event_count")? as u64,
        state,
        reason: r.get("host_reason")?,
        state_release: r.get("host_release")?,
        until: r.get::<_, Option<i64>>("host_until")?.map(from_micros),
        checked_in_at: r.get::<_, Option<i64>>("checkin_ts")?.map(from_micros),
    })
}

const AGENT_COLUMNS: &str = "agent_id, version, channel, wave, labels, last_seen, last_error, \
     last_error_ts, enrolled_at, revoked_at, event_count, host_state, host_reason, host_release, \
     host_until, checkin_ts";

fn like_pattern(q: &str) -> String {
    format!(
        "%{}%",
        q.replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_")
    )
}

/// Agents matching `f`, and how many match in all.
pub fn agents(conn: &Connection, f: &AgentFilter) -> Result<(Vec<AgentSummary>, u64), DbError> {
    let mut wh = vec!["1 = 1".to_owned()];
    let mut args: Vec<SqlValue> = Vec::new();
    let arg = |args: &mut Vec<SqlValue>, v: SqlValue| {
        args.push(v);
        format!("?{}", args.len())
    };
    for cond in f.conditions() {
        wh.push(match cond {
            AgentCond::NotRevoked => "revoked_at IS NULL".into(),
            AgentCond::Search(q) => {
                let p = arg(&mut args, SqlValue::Text(like_pattern(&q)));
                format!(
                    "(agent_id LIKE {p} ESCAPE '\\' OR version LIKE {p} ESCAPE '\\' OR EXISTS \
                     (SELECT 1 FROM json_each(agents.labels) WHERE key LIKE {p} ESCAPE '\\' \
                      OR value LIKE {p} ESCAPE '\\'))"
                )
            }
            AgentCond::Label(k, v) => {
                let k = arg(&mut args, SqlValue::Text(k));
                let v = arg(&mut args, SqlValue::Text(v));
                format!(
                    "EXISTS (SELECT 1 FROM json_each(agents.labels) WHERE key = {k} AND value = {v})"
                )
            }
            AgentCond::Eq(col, v) => format!("{col} = {}", arg(&mut args, SqlValue::Text(v))),
            AgentCond::States {
                reported,
                not_reporting,
                since,
            } => {
                let since = arg(&mut args, SqlValue::Integer(since));
                let mut any = Vec::new();
                if not_reporting {
                    any.push(format!("(last_seen IS NULL OR last_seen < {since})"));
                }
                if !reported.is_empty() {
                    let marks: Vec<String> = reported
                        .iter()
                        .map(|s| arg(&mut args, SqlValue::Text((*s).to_owned())))
                        .collect();
                    any.push(format!(
                        "(host_state IN ({}) AND last_seen >= {since})",
                        marks.join(", ")
                    ));
                }
                format!("({})", any.join(" OR "))
            }
            AgentCond::SilentSince(t) => {
                let p = arg(&mut args, SqlValue::Integer(t));
                format!("(last_seen IS NULL OR last_seen < {p})")
            }
        });
    }
    let wh = wh.join(" AND ");
    // The count and the page from one snapshot (a read transaction), so the
    // total agrees with the page while ingestion writes.
    let tx = conn.unchecked_transaction()?;
    let conn = &*tx;
    let total: i64 = conn.query_row(
        &format!("SELECT count(*) FROM agents WHERE {wh}"),
        params_from_iter(args.iter()),
        |r| r.get(0),
    )?;
    let order = match f.sort {
        AgentSort::LastSeenDesc => "last_seen DESC NULLS LAST, agent_id",
        AgentSort::LastSeenAsc => "last_seen ASC NULLS FIRST, agent_id",
        AgentSort::AgentId => "agent_id",
        AgentSort::Version => "version, agent_id",
    };
    let sql = format!(
        "SELECT {AGENT_COLUMNS} FROM agents WHERE {wh} ORDER BY {order} LIMIT {} OFFSET {}",
        f.limit, f.offset
    );
    let mut st = conn.prepare(&sql)?;
    let rows = st.query_map(params_from_iter(args.iter()), |r| {
        agent_from_row(r, f.stale_before)
    })?;
    Ok((rows.collect::<Result<_, _>>()?, total as u64))
}

/// One agent; "not reporting" when not heard from since `stale_before` (µs).
pub fn agent(
    conn: &Connection,
    agent_id: &str,
    stale_before: i64,
) -> Result<Option<AgentSummary>, DbError> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {AGENT_COLUMNS} FROM agents WHERE agent_id = ?1"
        ))?
        .query_row([agent_id], |r| agent_from_row(r, stale_before))
        .optional()?)
}

/// Filters of `GET /api/v1/agents/{id}/events`.
#[derive(Clone, Debug, Default)]
pub struct EventFilter {
    /// Any of these kinds.
    pub kinds: Vec<String>,
    /// Any of these statuses.
    pub statuses: Vec<String>,
    /// Any of these severities.
    pub severities: Vec<String>,
    /// `ts >= since` (µs).
    pub since: Option<i64>,
    /// `ts < until` (µs).
    pub until: Option<i64>,
    /// Older than this `(ts, seq)`.
    pub before: Option<(i64, i64)>,
    /// Page size.
    pub limit: u32,
}

/// A page cursor: the `(ts, seq)` of the last event shown.
pub fn encode_cursor(ts: i64, seq: i64) -> String {
    format!("{ts}.{seq}")
}

/// The inverse of [`encode_cursor`].
pub fn decode_cursor(s: &str) -> Option<(i64, i64)> {
    let (a, b) = s.split_once('.')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

fn parse_enum<T: serde::de::DeserializeOwned>(r: &Row<'_>, col: &str) -> rusqlite::Result<T> {
    let s: String = r.get(col)?;
    serde_json::from_value(serde_json::Value::String(s)).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
    })
}

fn event_from_row(r: &Row<'_>) -> rusqlite::Result<Event> {
    let id: Vec<u8> = r.get("id")?;
    let details: String = r.get("details")?;
    Ok(Event {
        id: uuid::Uuid::from_slice(&id).unwrap_or_default(),
        agent_id: r.get("agent_id")?,
        ts: from_micros(r.get("ts")?),
        kind: parse_enum(r, "kind")?,
        status: parse_enum(r, "status")?,
        severity: parse_enum(r, "severity")?,
        component: r.get("component")?,
        message: r.get("message")?,
        from_version: r.get("from_version")?,
        to_version: r.get("to_version")?,
        channel: r.get("channel")?,
        wave: r.get("wave")?,
        details: serde_json::from_str(&details).unwrap_or_default(),
    })
}

/// One agent's events matching `f`, newest first, and the next cursor.
pub fn events(
    conn: &Connection,
    agent_id: &str,
    f: &EventFilter,
) -> Result<(Vec<Event>, Option<String>), DbError> {
    let mut args: Vec<SqlValue> = vec![SqlValue::Text(agent_id.to_owned())];
    let mut wh = vec!["agent_id = ?1".to_owned()];
    for (col, list) in [
        ("kind", &f.kinds),
        ("status", &f.statuses),
        ("severity", &f.severities),
    ] {
        if list.is_empty() {
            continue;
        }
        let mut marks = Vec::new();
        for v in list {
            args.push(SqlValue::Text(v.clone()));
            marks.push(format!("?{}", args.len()));
        }
        wh.push(format!("{col} IN ({})", marks.join(", ")));
    }
    if let Some(t) = f.since {
        args.push(SqlValue::Integer(t));
        wh.push(format!("ts >= ?{}", args.len()));
    }
    if let Some(t) = f.until {
        args.push(SqlValue::Integer(t));
        wh.push(format!("ts < ?{}", args.len()));
    }
    if let Some((ts, seq)) = f.before {
        args.push(SqlValue::Integer(ts));
        let a = args.len();
        args.push(SqlValue::Integer(seq));
        wh.push(format!(
            "(ts < ?{a} OR (ts = ?{a} AND seq < ?{}))",
            args.len()
        ));
    }
    let limit = f.limit.max(1);
    let sql = format!(
        "SELECT seq, id, agent_id, ts, kind, status, severity, component, message, from_version,
                to_version, channel, wave, details
         FROM events WHERE {} ORDER BY ts DESC, seq DESC LIMIT {}",
        wh.join(" AND "),
        limit + 1
    );
    let mut st = conn.prepare_cached(&sql)?;
    let mut rows = st.query(params_from_iter(args.iter()))?;
    let mut out = Vec::new();
    let mut last = None;
    let mut more = false;
    while let Some(r) = rows.next()? {
        if out.len() == limit as usize {
            more = true;
            break;
        }
        last = Some((r.get::<_, i64>("ts")?, r.get::<_, i64>("seq")?));
        out.push(event_from_row(r)?);
    }
    let cursor = if more {
        last.map(|(t, s)| encode_cursor(t, s))
    } else {
        None
    };
    Ok((out, cursor))
}

/// One agent as the rollout computation sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct RolloutRow {
    /// The agent.
    pub agent_id: String,
    /// Its running version.
    pub version: Option<String>,
    /// Its wave, from its own events about this release (or its latest
    /// check-in, when that was about this release).
    pub wave: Option<String>,
    /// The wave of its latest event (perhaps another release's).
    pub latest_wave: Option<String>,
    /// When last heard from (µs).
    pub last_seen: Option<i64>,
    /// Its state in this release's rollout, if it reported one.
    pub state: Option<String>,
    /// Its latest check-in's host state.
    pub host_state: Option<String>,
}

/// Every non-revoked agent on `channel`, and every agent that reported
/// about this release on it, with its state.
pub fn rollout_rows(
    conn: &Connection,
    channel: &str,
    release: &str,
) -> Result<Vec<RolloutRow>, DbError> {
    let mut st = conn.prepare_cached(
        "SELECT a.agent_id, a.version,
                COALESCE(r.wave, CASE WHEN a.host_release = ?2 THEN a.wave END),
                a.wave, a.last_seen, r.state, a.host_state
         FROM agents a LEFT JOIN agent_release r
           ON r.channel = ?1 AND r.release = ?2 AND r.agent_id = a.agent_id
         WHERE a.revoked_at IS NULL AND a.channel = ?1
         UNION ALL
         SELECT a.agent_id, a.version,
                COALESCE(r.wave, CASE WHEN a.host_release = ?2 THEN a.wave END),
                a.wave, a.last_seen, r.state, a.host_state
         FROM agent_release r JOIN agents a ON a.agent_id = r.agent_id
         WHERE r.channel = ?1 AND r.release = ?2 AND a.revoked_at IS NULL
           AND a.channel IS NOT ?1",
    )?;
    let rows = st.query_map(params![channel, release], |r| {
        Ok(RolloutRow {
            agent_id: r.get(0)?,
            version: r.get(1)?,
            wave: r.get(2)?,
            latest_wave: r.get(3)?,
            last_seen: r.get(4)?,
            state: r.get(5)?,
            host_state: r.get(6)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Agents per rollout state of a release (revoked agents left out).
pub fn release_state_counts(
    conn: &Connection,
    channel: &str,
    release: &str,
) -> Result<BTreeMap<String, u64>, DbError> {
    let mut st = conn.prepare_cached(
        "SELECT r.state, count(*) FROM agent_release r JOIN agents a ON a.agent_id = r.agent_id
         WHERE r.channel = ?1 AND r.release = ?2 AND a.revoked_at IS NULL GROUP BY r.state",
    )?;
    let rows = st.query_map(params![channel, release], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Non-revoked agents per version (`None`: not known yet).
pub fn agents_by_version(conn: &Connection) -> Result<Vec<(Option<String>, u64)>, DbError> {
    let mut st = conn.prepare_cached(
        "SELECT version, count(*) FROM agents WHERE revoked_at IS NULL GROUP BY version ORDER BY version",
    )?;
    let rows = st.query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The newest error of each agent, newest first.
pub fn newest_errors(conn: &Connection, limit: u32) -> Result<Vec<AgentSummary>, DbError> {
    let mut st = conn.prepare_cached(&format!(
        "SELECT {AGENT_COLUMNS} FROM agents WHERE last_error_ts IS NOT NULL AND revoked_at IS NULL
         ORDER BY last_error_ts DESC LIMIT ?1"
    ))?;
    let rows = st.query_map([limit], |r| agent_from_row(r, i64::MIN))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Non-revoked agents, and how many were heard from since `t` (µs).
pub fn agent_counts(conn: &Connection, since: i64) -> Result<(u64, u64), DbError> {
    Ok(conn.query_row(
        "SELECT count(*), count(*) FILTER (WHERE last_seen >= ?1) FROM agents WHERE revoked_at IS NULL",
        [since],
        |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64)),
    )?)
}

/// One agent and its events matching `f` (as [`agent`] and [`events`]),
/// read together: the agent page and `GET /api/v1/agents/{id}/events`.
pub fn agent_with_events(
    conn: &Connection,
    agent_id: &str,
    stale_before: i64,
    f: &EventFilter,
) -> Result<AgentWithEvents, DbError> {
    Ok((
        agent(conn, agent_id, stale_before)?,
        events(conn, agent_id, f)?,
    ))
}

/// What [`agent_with_events`] gives: the agent, its events and the next cursor.
pub type AgentWithEvents = (Option<AgentSummary>, (Vec<Event>, Option<String>));

/// The web overview's figures, read together: agents by version, the
/// counts of all and of reporting agents (seen since `since`), and the
/// newest `errors` agents with an error.
pub fn overview(conn: &Connection, since: i64, errors: u32) -> Result<Overview, DbError> {
    Ok((
        agents_by_version(conn)?,
        agent_counts(conn, since)?,
        newest_errors(conn, errors)?,
    ))
}

/// What [`overview`] gives.
pub type Overview = (Vec<(Option<String>, u64)>, (u64, u64), Vec<AgentSummary>);

/// The figures of `GET /metrics`, read together: agents by version, the
/// counts of all and of reporting agents (seen since `since`), and the
/// notifications queued.
pub fn gauges(conn: &Connection, since: i64) -> Result<GaugeCounts, DbError> {
    Ok((
        agents_by_version(conn)?,
        agent_counts(conn, since)?,
        super::outbox::count(conn)?,
    ))
}

/// What [`gauges`] gives.
pub type GaugeCounts = (Vec<(Option<String>, u64)>, (u64, u64), u64);
