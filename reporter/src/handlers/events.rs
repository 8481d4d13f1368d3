//! `POST /api/v1/events`: a batch of the authenticated agent's events.
//!
//! In order: the agent token (401), the agent's rate limit (429 with
//! `Retry-After`), the body size (413 beyond [`MAX_BATCH_BYTES`]), the JSON
//! (400 naming the event index and field), the count (413 beyond
//! [`MAX_BATCH_EVENTS`]), each event's validation (400 with index and
//! field; a `ts` more than a day ahead is refused too), each event's
//! `agent_id` (403 when it is not the token's agent). Nothing of a refused
//! batch is stored. An accepted batch is answered once it is committed.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use chrono::Utc;
use flotilla_protocol::api::{EventBatch, EventsAccepted, MAX_BATCH_BYTES, MAX_BATCH_EVENTS};
use flotilla_protocol::{Event, EventKind, EventStatus, Severity};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::auth::AgentAuth;
use crate::db::ingest::Batch;
use crate::error::AppError;
use crate::state::AppState;

pub mod fast;

/// How far ahead of the reporter's clock an event may be.
const MAX_CLOCK_AHEAD: chrono::Duration = chrono::Duration::days(1);

/// The handler.
pub async fn post(
    State(st): State<AppState>,
    agent: AgentAuth,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<EventsAccepted>, AppError> {
    super::limit_agent(&st, &agent.agent_id)?;
    let body = body.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            st.metrics.rejected("too_large");
            AppError::too_large(format!("a batch is at most {MAX_BATCH_BYTES} bytes"))
        } else {
            st.metrics.rejected("invalid");
            AppError::new(r.status(), r.body_text())
        }
    })?;
    let batch = match fast::check(body.clone(), &agent.agent_id) {
        Some(batch) => batch,
        None => Batch::from_events(&check_slowly(&st, &body, &agent.agent_id)?),
    };
    let received = batch.rows.len();
    if received == 0 {
        return Ok(Json(EventsAccepted {
            received: 0,
            new: 0,
            duplicates: 0,
        }));
    }
    let now = crate::db::now_micros();
    let agent_id = agent.agent_id;
    let notifier = st.notifier.clone();
    let out = st.store.ingest(agent_id, batch, now, notifier).await?;
    if out.notices {
        st.notifier.wake();
    }
    st.metrics.ingested(out.new, out.duplicates);
    Ok(Json(EventsAccepted {
        received,
        new: out.new,
        duplicates: out.duplicates,
    }))
}

/// The reference checks, in the order the module doc gives: the events,
/// or the error that names the first problem. [`fast::check`] accepts
/// only what these accept; when it declines, these give the answer.
fn check_slowly(st: &AppState, body: &[u8], agent_id: &str) -> Result<Vec<Event>, AppError> {
    let events = parse(body).inspect_err(|e| {
        st.metrics
            .rejected(if e.status == StatusCode::PAYLOAD_TOO_LARGE {
                "too_large"
            } else {
                "invalid"
            })
    })?;
    let latest = Utc::now() + MAX_CLOCK_AHEAD;
    for (i, e) in events.iter().enumerate() {
        if let Err(err) = e.validate() {
            st.metrics.rejected("invalid");
            return Err(
                AppError::bad_request(format!("event {i}: {err}")).at(Some(i), Some(err.field))
            );
        }
        if e.ts > latest {
            st.metrics.rejected("invalid");
            return Err(AppError::bad_request(format!(
                "event {i}: ts: {} is more than a day ahead of the reporter's clock",
                e.ts
            ))
            .at(Some(i), Some("ts")));
        }
        if e.agent_id != agent_id {
            st.metrics.rejected("forbidden");
            return Err(AppError::forbidden(format!(
                "event {i}: agent_id: {:?} is not the authenticated agent {:?}",
                e.agent_id, agent_id
            ))
            .at(Some(i), Some("agent_id")));
        }
    }
    Ok(events)
}

/// Parses a batch; on failure finds the event and field to blame.
pub fn parse(body: &[u8]) -> Result<Vec<Event>, AppError> {
    match serde_json::from_slice::<EventBatch>(body) {
        Ok(b) if b.events.len() > MAX_BATCH_EVENTS => Err(too_many(b.events.len())),
        Ok(b) => Ok(b.events),
        Err(e) => Err(locate(body, e)),
    }
}

fn too_many(n: usize) -> AppError {
    AppError::too_large(format!(
        "the batch holds {n} events, at most {MAX_BATCH_EVENTS}"
    ))
    .at(None, Some("events"))
}

fn locate(body: &[u8], whole: serde_json::Error) -> AppError {
    let v: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return AppError::bad_request(format!("the body is not JSON: {e}")),
    };
    let Some(events) = v.get("events") else {
        return AppError::bad_request("the body must be an object with an \"events\" array")
            .at(None, Some("events"));
    };
    let Some(events) = events.as_array() else {
        return AppError::bad_request("\"events\" must be an array").at(None, Some("events"));
    };
    if events.len() > MAX_BATCH_EVENTS {
        return too_many(events.len());
    }
    for (i, ev) in events.iter().enumerate() {
        if let Some((field, reason)) = blame(ev) {
            return AppError::bad_request(format!("event {i}: {field}: {reason}"))
                .at(Some(i), Some(field));
        }
    }
    AppError::bad_request(format!("the batch does not parse: {whole}"))
}

fn check<T: DeserializeOwned>(v: &Value) -> Result<(), String> {
    serde_json::from_value::<T>(v.clone())
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// The first field of an event that does not parse, and why.
fn blame(ev: &Value) -> Option<(&'static str, String)> {
    let Some(obj) = ev.as_object() else {
        return Some(("event", "must be an object".into()));
    };
    type Check = fn(&Value) -> Result<(), String>;
    let required: [(&'static str, Check); 8] = [
        ("id", check::<uuid::Uuid>),
        ("agent_id", check::<String>),
        ("ts", check::<chrono::DateTime<Utc>>),
        ("kind", check::<EventKind>),
        ("status", check::<EventStatus>),
        ("severity", check::<Severity>),
        ("component", check::<String>),
        ("message", check::<String>),
    ];
    for (field, f) in required {
        match obj.get(field) {
            None => return Some((field, "missing".into())),
            Some(v) => {
                if let Err(e) = f(v) {
                    return Some((field, e));
                }
            }
        }
    }
    let optional: [(&'static str, Check); 5] = [
        ("from_version", check::<Option<String>>),
        ("to_version", check::<Option<String>>),
        ("channel", check::<Option<String>>),
        ("wave", check::<Option<String>>),
        ("details", check::<serde_json::Map<String, Value>>),
    ];
    for (field, f) in optional {
        if let Some(v) = obj.get(field) {
            if let Err(e) = f(v) {
                return Some((field, e));
            }
        }
    }
    if let Err(e) = check::<Event>(ev) {
        return Some(("event", e));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(agent: &str) -> Value {
        serde_json::to_value(Event::new(
            agent,
            EventKind::AgentStartup,
            EventStatus::Success,
            "agent",
            "hi",
        ))
        .unwrap()
    }

    #[test]
    fn names_the_bad_event_and_field() {
        let mut bad = event("a");
        bad["kind"] = "agent_exploded".into();
        let body = serde_json::json!({"events": [event("a"), event("a"), bad]});
        let e = parse(body.to_string().as_bytes()).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert_eq!(e.body.event_index, Some(2));
        assert_eq!(e.body.field.as_deref(), Some("kind"));
        assert!(e.body.error.contains("agent_exploded"), "{}", e.body.error);

        let mut missing = event("a");
        missing.as_object_mut().unwrap().remove("ts");
        let body = serde_json::json!({"events": [missing]});
        let e = parse(body.to_string().as_bytes()).unwrap_err();
        assert_eq!(
            (e.body.event_index, e.body.field.as_deref()),
            (Some(0), Some("ts"))
        );

        let e = parse(b"{\"events\": 3}").unwrap_err();
        assert_eq!(e.body.field.as_deref(), Some("events"));
        assert!(parse(b"nope").is_err());
    }
}
