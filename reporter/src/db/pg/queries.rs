//! Read queries on PostgreSQL: the twins of [`crate::db::queries`], with
//! the same answers for the same rows. Where the two engines differ, the
//! SQL here says what SQLite does:
//!
//! - text is ordered byte by byte (`COLLATE "C"`, SQLite's `BINARY`), not
//!   by the database's locale;
//! - NULLs sort first ascending and last descending (`NULLS FIRST/LAST`);
//! - the search box's `LIKE` folds ASCII letters only, as SQLite's does
//!   (`translate` of A-Z on both sides, not `ILIKE`, which folds all of
//!   Unicode);
//! - labels are the JSON text SQLite holds, read with `jsonb_each_text`.

use std::collections::BTreeMap;

use flotilla_protocol::api::{AgentSummary, HostState};
use flotilla_protocol::Event;
use tokio_postgres::types::{FromSql, ToSql, Type};
use tokio_postgres::{GenericClient, Row};

use crate::db::queries::{
    encode_cursor, AgentCond, AgentFilter, AgentSort, EventFilter, RolloutRow,
};
use crate::db::{from_micros, DbError};

/// A query argument of a statement built at run time.
pub(crate) type Arg = Box<dyn ToSql + Sync + Send>;

/// `args` as tokio-postgres takes them.
pub(crate) fn arg_refs(args: &[Arg]) -> Vec<&(dyn ToSql + Sync)> {
    args.iter()
        .map(|a| a.as_ref() as &(dyn ToSql + Sync))
        .collect()
}

/// Pushes `v`; its placeholder.
fn arg(args: &mut Vec<Arg>, v: impl ToSql + Sync + Send + 'static) -> String {
    args.push(Box::new(v));
    format!("${}", args.len())
}

/// SQLite's `LIKE` is case-insensitive for ASCII letters only: `x`, folded
/// so, to compare with a pattern folded by [`like_pattern`].
fn fold(x: &str) -> String {
    format!("translate({x}, 'ABCDEFGHIJKLMNOPQRSTUVWXYZ', 'abcdefghijklmnopqrstuvwxyz')")
}

/// `%q%` with `\`, `%` and `_` escaped, ASCII folded to lower case.
fn like_pattern(q: &str) -> String {
    format!(
        "%{}%",
        q.to_ascii_lowercase()
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_")
    )
}

/// The agent's state: `not_reporting` when not heard from since
/// `stale_before` (µs), else what it reported (as in SQLite's twin).
fn agent_from_row(r: &Row, stale_before: i64) -> Result<AgentSummary, DbError> {
    let labels: String = r.try_get("labels")?;
    let last_seen: Option<i64> = r.try_get("last_seen")?;
    let reported = r
        .try_get::<_, Option<String>>("host_state")?
        .as_deref()
        .and_then(HostState::parse);
    let state = if last_seen.is_none_or(|t| t < stale_before) {
        Some(HostState::NotReporting)
    } else {
        reported
    };
    Ok(AgentSummary {
        agent_id: r.try_get("agent_id")?,
        version: r.try_get("version")?,
        channel: r.try_get("channel")?,
        wave: r.try_get("wave")?,
        labels: serde_json::from_str(&labels).unwrap_or_default(),
        last_seen: last_seen.map(from_micros),
        last_error: r.try_get("last_error")?,
        last_error_at: r
            .try_get::<_, Option<i64>>("last_error_ts")?
            .map(from_micros),
        enrolled_at: Some(from_micros(r.try_get("enrolled_at")?)),
        revoked: r.try_get::<_, Option<i64>>("revoked_at")?.is_some(),
        event_count: r.try_get::<_, i64>("event_count")? as u64,
        state,
        reason: r.try_get("host_reason")?,
        state_release: r.try_get("host_release")?,
        until: r.try_get::<_, Option<i64>>("host_until")?.map(from_micros),
        checked_in_at: r.try_get::<_, Option<i64>>("checkin_ts")?.map(from_micros),
    })
}

const AGENT_COLUMNS: &str = "agent_id, version, channel, wave, labels, last_seen, last_error, \
     last_error_ts, enrolled_at, revoked_at, event_count, host_state, host_reason, host_release, \
     host_until, checkin_ts";

/// Agents matching `f`, and how many match in all.
pub async fn agents(
    c: &impl GenericClient,
    f: &AgentFilter,
) -> Result<(Vec<AgentSummary>, u64), DbError> {
    let mut wh = vec!["TRUE".to_owned()];
    let mut args: Vec<Arg> = Vec::new();
    for cond in f.conditions() {
        wh.push(match cond {
            AgentCond::NotRevoked => "revoked_at IS NULL".into(),
            AgentCond::Search(q) => {
                let p = arg(&mut args, like_pattern(&q));
                let like = |x: &str| format!("{} LIKE {p} ESCAPE '\\'", fold(x));
                format!(
                    "({} OR {} OR EXISTS (SELECT 1 FROM jsonb_each_text(agents.labels::jsonb) l \
                     WHERE {} OR {}))",
                    like("agent_id"),
                    like("version"),
                    like("l.key"),
                    like("l.value"),
                )
            }
            AgentCond::Label(k, v) => {
                let k = arg(&mut args, k);
                let v = arg(&mut args, v);
                format!(
                    "EXISTS (SELECT 1 FROM jsonb_each_text(agents.labels::jsonb) l \
                     WHERE l.key = {k} AND l.value = {v})"
                )
            }
            AgentCond::Eq(col, v) => format!("{col} = {}", arg(&mut args, v)),
            AgentCond::States {
                reported,
                not_reporting,
                since,
            } => {
                let since = arg(&mut args, since);
                let mut any = Vec::new();
                if not_reporting {
                    any.push(format!("(last_seen IS NULL OR last_seen < {since})"));
                }
                if !reported.is_empty() {
                    let list = arg(
                        &mut args,
                        reported.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>(),
                    );
                    any.push(format!(
                        "(host_state = ANY({list}) AND last_seen >= {since})"
                    ));
                }
                format!("({})", any.join(" OR "))
            }
            AgentCond::SilentSince(t) => {
                let p = arg(&mut args, t);
                format!("(last_seen IS NULL OR last_seen < {p})")
            }
        });
    }
    let wh = wh.join(" AND ");
    let refs = arg_refs(&args);
    let total: i64 = c
        .query_one(&format!("SELECT count(*) FROM agents WHERE {wh}"), &refs)
        .await?
        .try_get(0)?;
    let order = match f.sort {
        AgentSort::LastSeenDesc => "last_seen DESC NULLS LAST, agent_id COLLATE \"C\"",
        AgentSort::LastSeenAsc => "last_seen ASC NULLS FIRST, agent_id COLLATE \"C\"",
        AgentSort::AgentId => "agent_id COLLATE \"C\"",
        AgentSort::Version => "version COLLATE \"C\" NULLS FIRST, agent_id COLLATE \"C\"",
    };
    let sql = format!(
        "SELECT {AGENT_COLUMNS} FROM agents WHERE {wh} ORDER BY {order} LIMIT {} OFFSET {}",
        f.limit, f.offset
    );
    let rows = c.query(&sql, &refs).await?;
    let out = rows
        .iter()
        .map(|r| agent_from_row(r, f.stale_before))
        .collect::<Result<_, _>>()?;
    Ok((out, total as u64))
}

/// One agent; "not reporting" when not heard from since `stale_before` (µs).
pub async fn agent(
    c: &impl GenericClient,
    agent_id: &str,
    stale_before: i64,
) -> Result<Option<AgentSummary>, DbError> {
    c.query_opt(
        &format!("SELECT {AGENT_COLUMNS} FROM agents WHERE agent_id = $1"),
        &[&agent_id],
    )
    .await?
    .map(|r| agent_from_row(&r, stale_before))
    .transpose()
}

/// A text column parsed as a serde enum (kind, status, severity); a
/// value this binary does not know is a conversion error naming the
/// column, as in SQLite's twin.
struct Enum<T>(T);

impl<'a, T: serde::de::DeserializeOwned> FromSql<'a> for Enum<T> {
    fn from_sql(
        ty: &Type,
        raw: &'a [u8],
    ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        let s = <&str as FromSql>::from_sql(ty, raw)?;
        Ok(Enum(serde_json::from_value(serde_json::Value::String(
            s.to_owned(),
        ))?))
    }

    fn accepts(ty: &Type) -> bool {
        <&str as FromSql>::accepts(ty)
    }
}

fn event_from_row(r: &Row) -> Result<Event, DbError> {
    let id: Vec<u8> = r.try_get("id")?;
    let details: String = r.try_get("details")?;
    Ok(Event {
        id: uuid::Uuid::from_slice(&id).unwrap_or_default(),
        agent_id: r.try_get("agent_id")?,
        ts: from_micros(r.try_get("ts")?),
        kind: r.try_get::<_, Enum<_>>("kind")?.0,
        status: r.try_get::<_, Enum<_>>("status")?.0,
        severity: r.try_get::<_, Enum<_>>("severity")?.0,
        component: r.try_get("component")?,
        message: r.try_get("message")?,
        from_version: r.try_get("from_version")?,
        to_version: r.try_get("to_version")?,
        channel: r.try_get("channel")?,
        wave: r.try_get("wave")?,
        details: serde_json::from_str(&details).unwrap_or_default(),
    })
}

/// One agent's events matching `f`, newest first, and the next cursor.
pub async fn events(
    c: &impl GenericClient,
    agent_id: &str,
    f: &EventFilter,
) -> Result<(Vec<Event>, Option<String>), DbError> {
    let mut args: Vec<Arg> = Vec::new();
    let mut wh = vec![format!(
        "agent_id = {}",
        arg(&mut args, agent_id.to_owned())
    )];
    for (col, list) in [
        ("kind", &f.kinds),
        ("status", &f.statuses),
        ("severity", &f.severities),
    ] {
        if !list.is_empty() {
            let p = arg(&mut args, list.clone());
            wh.push(format!("{col} = ANY({p})"));
        }
    }
    if let Some(t) = f.since {
        wh.push(format!("ts >= {}", arg(&mut args, t)));
    }
    if let Some(t) = f.until {
        wh.push(format!("ts < {}", arg(&mut args, t)));
    }
    if let Some((ts, seq)) = f.before {
        let a = arg(&mut args, ts);
        let b = arg(&mut args, seq);
        wh.push(format!("(ts < {a} OR (ts = {a} AND seq < {b}))"));
    }
    let limit = f.limit.max(1);
    let sql = format!(
        "SELECT seq, id, agent_id, ts, kind, status, severity, component, message, from_version,
                to_version, channel, wave, details
         FROM events WHERE {} ORDER BY ts DESC, seq DESC LIMIT {}",
        wh.join(" AND "),
        limit as u64 + 1
    );
    let rows = c.query(&sql, &arg_refs(&args)).await?;
    let more = rows.len() > limit as usize;
    let mut out = Vec::with_capacity(rows.len().min(limit as usize));
    let mut last = None;
    for r in rows.iter().take(limit as usize) {
        last = Some((r.try_get::<_, i64>("ts")?, r.try_get::<_, i64>("seq")?));
        out.push(event_from_row(r)?);
    }
    let cursor = if more {
        last.map(|(t, s)| encode_cursor(t, s))
    } else {
        None
    };
    Ok((out, cursor))
}

/// Every non-revoked agent on `channel`, and every agent that reported
/// about this release on it, with its state.
pub async fn rollout_rows(
    c: &impl GenericClient,
    channel: &str,
    release: &str,
) -> Result<Vec<RolloutRow>, DbError> {
    let rows = c
        .query(
            "SELECT a.agent_id, a.version,
                    COALESCE(r.wave, CASE WHEN a.host_release = $2 THEN a.wave END),
                    a.wave, a.last_seen, r.state, a.host_state
             FROM agents a LEFT JOIN agent_release r
               ON r.channel = $1 AND r.release = $2 AND r.agent_id = a.agent_id
             WHERE a.revoked_at IS NULL AND a.channel = $1
             UNION ALL
             SELECT a.agent_id, a.version,
                    COALESCE(r.wave, CASE WHEN a.host_release = $2 THEN a.wave END),
                    a.wave, a.last_seen, r.state, a.host_state
             FROM agent_release r JOIN agents a ON a.agent_id = r.agent_id
             WHERE r.channel = $1 AND r.release = $2 AND a.revoked_at IS NULL
               AND a.channel IS DISTINCT FROM $1",
            &[&channel, &release],
        )
        .await?;
    rows.iter()
        .map(|r| {
            Ok(RolloutRow {
                agent_id: r.try_get(0)?,
                version: r.try_get(1)?,
                wave: r.try_get(2)?,
                latest_wave: r.try_get(3)?,
                last_seen: r.try_get(4)?,
                state: r.try_get(5)?,
                host_state: r.try_get(6)?,
            })
        })
        .collect()
}

/// Agents per rollout state of a release (revoked agents left out).
pub async fn release_state_counts(
    c: &impl GenericClient,
    channel: &str,
    release: &str,
) -> Result<BTreeMap<String, u64>, DbError> {
    let rows = c
        .query(
            "SELECT r.state, count(*) FROM agent_release r JOIN agents a ON a.agent_id = r.agent_id
             WHERE r.channel = $1 AND r.release = $2 AND a.revoked_at IS NULL GROUP BY r.state",
            &[&channel, &release],
        )
        .await?;
    rows.iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get::<_, i64>(1)? as u64)))
        .collect()
}

/// Non-revoked agents per version (`None`: not known yet, first).
pub async fn agents_by_version(
    c: &impl GenericClient,
) -> Result<Vec<(Option<String>, u64)>, DbError> {
    let rows = c
        .query(
            "SELECT version, count(*) FROM agents WHERE revoked_at IS NULL GROUP BY version
             ORDER BY version COLLATE \"C\" NULLS FIRST",
            &[],
        )
        .await?;
    rows.iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get::<_, i64>(1)? as u64)))
        .collect()
}

/// The newest error of each agent, newest first.
pub async fn newest_errors(
    c: &impl GenericClient,
    limit: u32,
) -> Result<Vec<AgentSummary>, DbError> {
    let rows = c
        .query(
            &format!(
                "SELECT {AGENT_COLUMNS} FROM agents
                 WHERE last_error_ts IS NOT NULL AND revoked_at IS NULL
                 ORDER BY last_error_ts DESC LIMIT $1"
            ),
            &[&(limit as i64)],
        )
        .await?;
    rows.iter().map(|r| agent_from_row(r, i64::MIN)).collect()
}

/// Non-revoked agents, and how many were heard from since `t` (µs).
pub async fn agent_counts(c: &impl GenericClient, since: i64) -> Result<(u64, u64), DbError> {
    let r = c
        .query_one(
            "SELECT count(*), count(*) FILTER (WHERE last_seen >= $1) FROM agents
             WHERE revoked_at IS NULL",
            &[&since],
        )
        .await?;
    Ok((
        r.try_get::<_, i64>(0)? as u64,
        r.try_get::<_, i64>(1)? as u64,
    ))
}

/// The twin of [`crate::db::queries::agent_with_events`]; run it in one
/// snapshot (a REPEATABLE READ transaction) for one moment's answer.
pub async fn agent_with_events(
    c: &impl GenericClient,
    agent_id: &str,
    stale_before: i64,
    f: &EventFilter,
) -> Result<crate::db::queries::AgentWithEvents, DbError> {
    Ok((
        agent(c, agent_id, stale_before).await?,
        events(c, agent_id, f).await?,
    ))
}

/// The twin of [`crate::db::queries::overview`]; see [`agent_with_events`].
pub async fn overview(
    c: &impl GenericClient,
    since: i64,
    errors: u32,
) -> Result<crate::db::queries::Overview, DbError> {
    Ok((
        agents_by_version(c).await?,
        agent_counts(c, since).await?,
        newest_errors(c, errors).await?,
    ))
}

/// The twin of [`crate::db::queries::gauges`]; see [`agent_with_events`].
pub async fn gauges(
    c: &impl GenericClient,
    since: i64,
) -> Result<crate::db::queries::GaugeCounts, DbError> {
    Ok((
        agents_by_version(c).await?,
        agent_counts(c, since).await?,
        super::outbox::count(c).await?,
    ))
}
