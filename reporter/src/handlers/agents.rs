//! `GET /api/v1/agents`, `/api/v1/agents/{id}`, `/api/v1/agents/{id}/events`
//! (admin token).

use axum::extract::{Path, Query, RawQuery, State};
use axum::Json;
use flotilla_protocol::api::{AgentList, AgentSummary, EventPage, HostState};
use flotilla_protocol::{EventKind, HumanDuration};
use serde::Deserialize;

use super::{list, time_param};
use crate::auth::AdminAuth;
use crate::db::queries::{self, AgentFilter, AgentSort, EventFilter};
use crate::error::AppError;
use crate::state::AppState;

/// Query of `GET /api/v1/agents`. `label=key=value` (repeatable, every one
/// must match exactly) is read from the raw query by [`labels`].
#[derive(Debug, Default, Deserialize)]
pub struct AgentQuery {
    /// Substring of id, a label's key or value, or version; `key=value`
    /// matches that label exactly.
    pub q: Option<String>,
    /// Exact channel.
    pub channel: Option<String>,
    /// Exact version.
    pub version: Option<String>,
    /// Exact wave.
    pub wave: Option<String>,
    /// Comma-separated host states (`on_release`, `waiting`, `held`, …,
    /// `not_reporting`).
    pub state: Option<String>,
    /// Only agents not heard from for this long (`"1h"`).
    pub not_seen_for: Option<String>,
    /// `last_seen` (newest first, default), `-last_seen`, `agent_id`, `version`.
    pub sort: Option<String>,
    /// Page size (default 100, at most 1000).
    pub limit: Option<u32>,
    /// Rows to skip.
    pub offset: Option<u32>,
    /// Include revoked agents.
    pub include_revoked: Option<bool>,
}

/// The `label=key=value` parameters of a raw query string; 400 for one
/// without `=` between key and value.
pub fn labels(raw: Option<&str>) -> Result<Vec<(String, String)>, AppError> {
    let mut out = Vec::new();
    for (k, v) in form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
        if k != "label" || v.trim().is_empty() {
            continue;
        }
        match v.split_once('=') {
            Some((key, value)) if !key.trim().is_empty() => {
                out.push((key.trim().to_owned(), value.trim().to_owned()))
            }
            _ => {
                return Err(AppError::bad_request(format!(
                    "label: {v:?} is not key=value (for example label=role=db)"
                ))
                .at(None, Some("label")))
            }
        }
    }
    Ok(out)
}

impl AgentQuery {
    /// The database filter, or a 400 naming the parameter. `raw`: the
    /// query string (for the repeated `label`); agents not heard from within
    /// `stale_after` are "not reporting".
    pub fn filter(
        &self,
        raw: Option<&str>,
        stale_after: std::time::Duration,
    ) -> Result<AgentFilter, AppError> {
        let mut states = Vec::new();
        for s in list(&self.state) {
            match HostState::parse(&s) {
                Some(h) => states.push(h),
                None => {
                    let all: Vec<&str> = HostState::ALL.iter().map(|h| h.as_str()).collect();
                    return Err(AppError::bad_request(format!(
                        "state: {s:?} is not one of {}",
                        all.join(", ")
                    ))
                    .at(None, Some("state")));
                }
            }
        }
        let sort = match self.sort.as_deref().unwrap_or("last_seen") {
            "last_seen" | "" => AgentSort::LastSeenDesc,
            "-last_seen" => AgentSort::LastSeenAsc,
            "agent_id" => AgentSort::AgentId,
            "version" => AgentSort::Version,
            other => {
                return Err(AppError::bad_request(format!(
                    "sort: {other:?} is not one of last_seen, -last_seen, agent_id, version"
                ))
                .at(None, Some("sort")))
            }
        };
        let silent_since = match self.not_seen_for.as_deref().filter(|s| !s.is_empty()) {
            None => None,
            Some(s) => {
                let d: HumanDuration = s
                    .parse()
                    .map_err(|e: String| AppError::bad_request(e).at(None, Some("not_seen_for")))?;
                Some(crate::db::now_micros() - d.0.as_micros() as i64)
            }
        };
        let nonempty = |v: &Option<String>| v.clone().filter(|s| !s.trim().is_empty());
        Ok(AgentFilter {
            q: self.q.clone(),
            channel: nonempty(&self.channel),
            version: nonempty(&self.version),
            wave: nonempty(&self.wave),
            states,
            labels: labels(raw)?,
            stale_before: crate::db::now_micros() - stale_after.as_micros() as i64,
            silent_since,
            include_revoked: self.include_revoked.unwrap_or(false),
            sort,
            limit: self.limit.unwrap_or(100).clamp(1, 1000),
            offset: self.offset.unwrap_or(0),
        })
    }
}

/// `GET /api/v1/agents`.
pub async fn list_agents(
    _: AdminAuth,
    State(st): State<AppState>,
    Query(q): Query<AgentQuery>,
    RawQuery(raw): RawQuery,
) -> Result<Json<AgentList>, AppError> {
    let f = q.filter(raw.as_deref(), st.settings.stale_after)?;
    let (agents, total) = st.store.agents(f).await?;
    Ok(Json(AgentList { agents, total }))
}

/// `GET /api/v1/agents/{id}`.
pub async fn get_agent(
    _: AdminAuth,
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<AgentSummary>, AppError> {
    let id2 = id.clone();
    let stale = st.stale_before();
    st.store
        .agent(id2, stale)
        .await?
        .map(Json)
        .ok_or_else(|| AppError::not_found(format!("no agent {id}")))
}

/// Query of `GET /api/v1/agents/{id}/events`.
#[derive(Debug, Default, Deserialize)]
pub struct EventQuery {
    /// Comma-separated kinds; `migration` stands for both migration kinds,
    /// `update` for every `update_*` kind.
    pub kind: Option<String>,
    /// Comma-separated statuses.
    pub status: Option<String>,
    /// Comma-separated severities.
    pub severity: Option<String>,
    /// RFC 3339: events at or after.
    pub since: Option<String>,
    /// RFC 3339: events before.
    pub until: Option<String>,
    /// From a previous page's `next_cursor`.
    pub cursor: Option<String>,
    /// Page size (default 100, at most 1000).
    pub limit: Option<u32>,
}

fn expand_kinds(v: &Option<String>) -> Result<Vec<String>, AppError> {
    let mut out = Vec::new();
    for k in list(v) {
        match k.as_str() {
            "migration" => out.extend(
                EventKind::ALL
                    .iter()
                    .filter(|k| k.is_migration())
                    .map(|k| k.as_str().to_owned()),
            ),
            "update" => out.extend(
                EventKind::ALL
                    .iter()
                    .map(|k| k.as_str())
                    .filter(|k| k.starts_with("update_"))
                    .map(str::to_owned),
            ),
            other if EventKind::ALL.iter().any(|k| k.as_str() == other) => out.push(k),
            other => {
                return Err(
                    AppError::bad_request(format!("kind: {other:?} is not an event kind"))
                        .at(None, Some("kind")),
                )
            }
        }
    }
    Ok(out)
}

fn known(field: &str, values: Vec<String>, allowed: &[&str]) -> Result<Vec<String>, AppError> {
    for v in &values {
        if !allowed.contains(&v.as_str()) {
            return Err(AppError::bad_request(format!(
                "{field}: {v:?} is not one of {}",
                allowed.join(", ")
            ))
            .at(None, Some(field)));
        }
    }
    Ok(values)
}

impl EventQuery {
    /// The database filter, or a 400 naming the parameter.
    pub fn filter(&self) -> Result<EventFilter, AppError> {
        let before = match self.cursor.as_deref().filter(|s| !s.is_empty()) {
            None => None,
            Some(c) => Some(queries::decode_cursor(c).ok_or_else(|| {
                AppError::bad_request("cursor: not a cursor from a previous page")
                    .at(None, Some("cursor"))
            })?),
        };
        Ok(EventFilter {
            kinds: expand_kinds(&self.kind)?,
            statuses: known(
                "status",
                list(&self.status),
                &[
                    "success",
                    "failed",
                    "rejected",
                    "info",
                    "not_needed",
                    "partial",
                ],
            )?,
            severities: known(
                "severity",
                list(&self.severity),
                &["info", "warning", "error", "critical"],
            )?,
            since: time_param("since", &self.since)?,
            until: time_param("until", &self.until)?,
            before,
            limit: self.limit.unwrap_or(100).clamp(1, 1000),
        })
    }
}

/// `GET /api/v1/agents/{id}/events`.
pub async fn agent_events(
    _: AdminAuth,
    State(st): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<EventQuery>,
) -> Result<Json<EventPage>, AppError> {
    let f = q.filter()?;
    let id2 = id.clone();
    let stale = st.stale_before();
    let (agent, (events, next_cursor)) = st.store.agent_with_events(id2, stale, f).await?;
    if agent.is_none() {
        return Err(AppError::not_found(format!("no agent {id}")));
    }
    Ok(Json(EventPage {
        events,
        next_cursor,
    }))
}
