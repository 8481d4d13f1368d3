//! Delivery: the spool's events go to the reporter, within a time budget.
//!
//! Sequence, on every pass (after the update work, DESIGN step 8):
//!
//! 1. No agent token yet (`state_dir/agent.token`, mode 0600)? Enroll with the
//!    enrollment token file: `POST /api/v1/enroll`. The agent makes its own
//!    256-bit token and keeps it in `agent.token.pending` *before* asking, so
//!    a retry after a lost answer sends the same token and the reporter
//!    recognises it; on success the token moves to `agent.token`.
//!    Enrollment that fails is reported in the outcome; events stay spooled
//!    and the update work is never held up by it (updates need no registration).
//! 2. Send the oldest pending events in batches of at most 500
//!    (`POST /api/v1/events`, Bearer agent token). Acknowledged events (new
//!    or duplicate) leave the spool; nothing else does.
//! 3. Failures: a transport error or 5xx is retried with exponential backoff;
//!    429 waits `Retry-After`; 413 halves the batch; 400 naming one event
//!    drops that event (the reporter will never take it; it is counted); 401
//!    forgets the agent token so the next pass enrolls again; a reporter that
//!    refuses connections is left for the next pass at once. All of it stops
//!    when the budget (default 5 s) is spent: a dead reporter costs a pass at
//!    most the budget, and the events wait for the next pass.
//!
//! The reporter deduplicates by event id, so a batch that was stored but whose
//! answer got lost is simply sent again.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use flotilla_protocol::api::{
    is_agent_token_shaped, ApiError, EnrollRequest, EnrollResponse, EventBatch, EventsAccepted,
    MAX_BATCH_EVENTS,
};
use uuid::Uuid;

use crate::config::Config;
use crate::events::Events;
use crate::spool::Spool;
use crate::state::StateDir;

/// File under the state dir holding the agent token.
pub const TOKEN_FILE: &str = "agent.token";
/// File under the state dir holding the token of an enrollment in flight.
pub const PENDING_TOKEN_FILE: &str = "agent.token.pending";
/// Default time budget of one delivery.
pub const DEFAULT_BUDGET: Duration = Duration::from_secs(5);

/// What delivery needs to know.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The reporter's base URL.
    pub reporter_url: String,
    /// The enrollment token file, if the agent has one.
    pub enrollment_token_file: Option<PathBuf>,
    /// The state dir (for the agent token).
    pub state_dir: PathBuf,
    /// This agent's id.
    pub agent_id: String,
    /// Labels sent on enrollment.
    pub labels: BTreeMap<String, String>,
    /// Version sent on enrollment.
    pub version: String,
    /// Channel sent on enrollment.
    pub channel: String,
    /// Time budget for the whole delivery.
    pub budget: Duration,
}

/// What a delivery did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Delivered {
    /// Enrolled during this delivery.
    pub enrolled_now: bool,
    /// Requests sent with events.
    pub batches: usize,
    /// Events acknowledged and removed from the spool.
    pub acked: usize,
    /// Events the reporter refused for good (400) and that were dropped.
    pub rejected: usize,
    /// Events still spooled.
    pub remaining: usize,
    /// Why delivery stopped early, if it did.
    pub error: Option<String>,
}

/// The agent token, if the agent is enrolled.
pub fn agent_token(state_dir: &Path) -> Option<String> {
    let t = std::fs::read_to_string(state_dir.join(TOKEN_FILE)).ok()?;
    let t = t.trim();
    (!t.is_empty()).then(|| t.to_owned())
}

/// Enrolls if needed, then sends the spool (see the module docs).
pub fn deliver(http: &ureq::Agent, s: &Settings, spool: &mut Spool) -> Delivered {
    let deadline = Instant::now() + s.budget;
    let mut out = Delivered::default();
    let base = s.reporter_url.trim_end_matches('/');
    let token = match agent_token(&s.state_dir) {
        Some(t) => t,
        None => match enroll(http, s, base, deadline) {
            Ok(t) => {
                out.enrolled_now = true;
                t
            }
            Err(e) => {
                out.error = Some(e);
                out.remaining = spool.stats().events;
                return out;
            }
        },
    };
    let mut batch_size = MAX_BATCH_EVENTS;
    let mut backoff = Duration::from_millis(100);
    loop {
        let pending = match spool.pending(batch_size) {
            Ok(p) => p,
            Err(e) => {
                out.error = Some(format!("reading the spool: {e}"));
                break;
            }
        };
        if pending.is_empty() {
            break;
        }
        let Some(left) = deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
        else {
            out.error = Some("time budget spent".into());
            break;
        };
        let body = serde_json::to_string(&EventBatch {
            events: pending.clone(),
        })
        .expect("events serialise");
        out.batches += 1;
        let res = http
            .post(&format!("{base}{}", flotilla_protocol::api::paths::EVENTS))
            .timeout(left)
            .set("Authorization", &format!("Bearer {token}"))
            .set("Content-Type", "application/json")
            .send_string(&body);
        let ids: Vec<Uuid> = pending.iter().map(|e| e.id).collect();
        match res {
            Ok(resp) => {
                let accepted: Option<EventsAccepted> = resp
                    .into_string()
                    .ok()
                    .and_then(|b| serde_json::from_str(&b).ok());
                match accepted {
                    Some(a) if a.received == ids.len() => match spool.ack(&ids) {
                        Ok(n) => out.acked += n,
                        Err(e) => {
                            out.error = Some(format!("acknowledging in the spool: {e}"));
                            break;
                        }
                    },
                    _ => {
                        out.error =
                            Some("reporter answered 2xx without a valid acknowledgement".into());
                        break;
                    }
                }
                backoff = Duration::from_millis(100);
            }
            Err(ureq::Error::Status(code, resp)) => {
                let retry_after = resp
                    .header("Retry-After")
                    .and_then(|v| v.trim().parse::<u64>().ok());
                let api: Option<ApiError> = resp
                    .into_string()
                    .ok()
                    .and_then(|b| serde_json::from_str(&b).ok());
                let reason = api.as_ref().map(|a| a.error.clone()).unwrap_or_default();
                match code {
                    400 | 403 => match api
                        .and_then(|a| a.event_index)
                        .and_then(|i| ids.get(i).copied())
                    {
                        Some(bad) => {
                            tracing::warn!(event = %bad, %reason, "reporter refused an event; dropping it");
                            if spool.ack(&[bad]).is_err() {
                                out.error = Some(format!("reporter refused event {bad}: {reason}"));
                                break;
                            }
                            out.rejected += 1;
                        }
                        None => {
                            out.error = Some(format!("reporter refused the batch (400): {reason}"));
                            break;
                        }
                    },
                    413 if batch_size > 1 => batch_size = (batch_size / 2).max(1),
                    401 => {
                        let _ = std::fs::remove_file(s.state_dir.join(TOKEN_FILE));
                        out.error = Some(format!("reporter does not know this agent's token (401): {reason}; will enroll again"));
                        break;
                    }
                    429 => {
                        let wait = Duration::from_secs(retry_after.unwrap_or(1));
                        if !sleep_within(wait, deadline) {
                            out.error = Some("rate limited by the reporter (429)".into());
                            break;
                        }
                    }
                    _ if code >= 500 => {
                        if !sleep_within(backoff, deadline) {
                            out.error = Some(format!("reporter error {code}: {reason}"));
                            break;
                        }
                        backoff = (backoff * 2).min(Duration::from_secs(2));
                    }
                    _ => {
                        out.error = Some(format!("reporter answered {code}: {reason}"));
                        break;
                    }
                }
            }
            Err(e) => {
                // Nobody listening (or no such host): the reporter is down;
                // the events wait for the next pass rather than this one
                // spending its budget on it. Other transport errors (a reset,
                // a timeout) are retried with backoff within the budget.
                let down = matches!(
                    e.kind(),
                    ureq::ErrorKind::ConnectionFailed | ureq::ErrorKind::Dns
                );
                if down || !sleep_within(backoff, deadline) {
                    out.error = Some(format!(
                        "reporter unreachable: {}",
                        crate::http::describe(&e)
                    ));
                    break;
                }
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
    }
    out.remaining = spool.stats().events;
    out
}

fn enroll(
    http: &ureq::Agent,
    s: &Settings,
    base: &str,
    deadline: Instant,
) -> Result<String, String> {
    let Some(file) = &s.enrollment_token_file else {
        return Err("not enrolled and no enrollment_token_file configured".into());
    };
    let enrollment_token = std::fs::read_to_string(file)
        .map_err(|e| format!("reading the enrollment token {}: {e}", file.display()))?
        .trim()
        .to_owned();
    // The agent makes its token itself and keeps it before enrolling, so a
    // retried enrollment whose answer was lost sends the same token again
    // and the reporter recognises it.
    let pending = s.state_dir.join(PENDING_TOKEN_FILE);
    let agent_token = match std::fs::read_to_string(&pending) {
        Ok(t) if is_agent_token_shaped(t.trim()) => t.trim().to_owned(),
        _ => {
            let t = flotilla_signing::random_hex256();
            flotilla_signing::fs::write_atomic(&pending, t.as_bytes(), 0o600)
                .map_err(|e| format!("saving {}: {e}", pending.display()))?;
            t
        }
    };
    let req = EnrollRequest {
        enrollment_token,
        agent_id: s.agent_id.clone(),
        labels: s.labels.clone(),
        version: Some(s.version.clone()),
        channel: Some(s.channel.clone()),
        agent_token: Some(agent_token),
    };
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err("time budget spent before enrolling".into());
    }
    let res = http
        .post(&format!("{base}{}", flotilla_protocol::api::paths::ENROLL))
        .timeout(left)
        .set("Content-Type", "application/json")
        .send_string(&serde_json::to_string(&req).expect("serialises"));
    let resp = match res {
        Ok(r) => r,
        Err(ureq::Error::Status(code, r)) => {
            let reason = r
                .into_string()
                .ok()
                .and_then(|b| serde_json::from_str::<ApiError>(&b).ok())
                .map(|a| a.error)
                .unwrap_or_default();
            return Err(format!("enrollment refused ({code}): {reason}"));
        }
        Err(e) => {
            return Err(format!(
                "reporter unreachable for enrollment: {}",
                crate::http::describe(&e)
            ))
        }
    };
    let body = resp
        .into_string()
        .map_err(|e| format!("reading the enrollment answer: {e}"))?;
    let er: EnrollResponse =
        serde_json::from_str(&body).map_err(|e| format!("enrollment answer is not valid: {e}"))?;
    flotilla_signing::fs::write_atomic(
        &s.state_dir.join(TOKEN_FILE),
        er.agent_token.as_bytes(),
        0o600,
    )
    .map_err(|e| format!("saving the agent token: {e}"))?;
    let _ = std::fs::remove_file(&pending);
    Ok(er.agent_token)
}

/// Sleeps `d` if that ends before `deadline`; says whether it did.
fn sleep_within(d: Duration, deadline: Instant) -> bool {
    if Instant::now() + d >= deadline {
        return false;
    }
    std::thread::sleep(d);
    true
}

/// Pass step 8: enroll if needed and deliver the spool to the reporter
/// within a time budget. Called at the end of every pass, after the update
/// work, so a dead reporter never delays an update.
pub(crate) fn for_pass(config: &Config, state_dir: &StateDir, events: &mut Events) {
    let Some(rep) = &config.reporter else {
        return;
    };
    let settings = Settings {
        reporter_url: rep.url.clone(),
        enrollment_token_file: rep.enrollment_token_file.clone(),
        state_dir: state_dir.root().to_owned(),
        agent_id: events.agent_id().to_owned(),
        labels: config.labels.clone(),
        version: crate::version::VERSION.to_owned(),
        channel: config.channel.clone(),
        budget: DEFAULT_BUDGET,
    };
    let http = match crate::http::client(
        config.update.connect_timeout.min(Duration::from_secs(5)),
        config.update.stall_timeout,
    ) {
        Ok(h) => h,
        Err(e) => {
            tracing::warn!("event delivery: {e}");
            return;
        }
    };
    let Some(spool) = events.spool_mut() else {
        return;
    };
    let out = deliver(&http, &settings, spool);
    match &out.error {
        Some(err) => tracing::warn!(
            acked = out.acked,
            remaining = out.remaining,
            "event delivery stopped: {err}"
        ),
        None => tracing::debug!(acked = out.acked, "events delivered"),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::sync::{Arc, Mutex};

    use flotilla_protocol::{Event, EventKind, EventStatus};

    use super::*;

    /// What the stub reporter does with the n-th events request (1-based).
    #[derive(Clone, Copy)]
    enum Act {
        Ok,
        /// Stores the batch, then drops the connection: the answer is lost.
        StoreThenHangUp,
        /// Answers 500 without storing.
        Fail,
    }

    #[derive(Default)]
    struct Stub {
        stored: HashMap<Uuid, u32>,
        requests: usize,
        enrolls: usize,
    }

    fn serve(script: Vec<Act>) -> (String, Arc<Mutex<Stub>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let stub = Arc::new(Mutex::new(Stub::default()));
        let st = stub.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                handle(conn, &st, &script);
            }
        });
        (url, stub)
    }

    fn handle(mut conn: TcpStream, st: &Mutex<Stub>, script: &[Act]) {
        let mut reader = BufReader::new(conn.try_clone().unwrap());
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let path = line.split_whitespace().nth(1).unwrap_or("").to_owned();
        let mut len = 0;
        loop {
            let mut h = String::new();
            reader.read_line(&mut h).unwrap();
            if h == "\r\n" || h.is_empty() {
                break;
            }
            if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                len = v.trim().parse().unwrap();
            }
        }
        let mut body = vec![0; len];
        reader.read_exact(&mut body).unwrap();
        let reply = |conn: &mut TcpStream, code: u16, body: String| {
            let _ = write!(conn, "HTTP/1.1 {code} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
        };
        let mut s = st.lock().unwrap();
        if path == "/api/v1/enroll" {
            s.enrolls += 1;
            let req: EnrollRequest = serde_json::from_slice(&body).unwrap();
            let token = req.agent_token.unwrap();
            assert!(is_agent_token_shaped(&token));
            return reply(
                &mut conn,
                200,
                format!(r#"{{"agent_id":"web-01","agent_token":"{token}"}}"#),
            );
        }
        s.requests += 1;
        let act = script.get(s.requests - 1).copied().unwrap_or(Act::Ok);
        if let Act::Fail = act {
            return reply(&mut conn, 500, r#"{"error":"database is busy"}"#.into());
        }
        let batch: EventBatch = serde_json::from_slice(&body).unwrap();
        let mut new = 0;
        for e in &batch.events {
            let c = s.stored.entry(e.id).or_insert(0);
            *c += 1;
            if *c == 1 {
                new += 1;
            }
        }
        if let Act::StoreThenHangUp = act {
            return; // connection dropped, no answer
        }
        let n = batch.events.len();
        reply(
            &mut conn,
            200,
            format!(r#"{{"received":{n},"new":{new},"duplicates":{}}}"#, n - new),
        );
    }

    fn settings(url: &str, state: &Path, token_file: Option<PathBuf>) -> Settings {
        Settings {
            reporter_url: url.into(),
            enrollment_token_file: token_file,
            state_dir: state.to_owned(),
            agent_id: "web-01".into(),
            labels: BTreeMap::new(),
            version: "1.0.0".into(),
            channel: "stable".into(),
            budget: Duration::from_secs(10),
        }
    }

    fn fill(spool: &mut Spool, n: usize) -> Vec<Uuid> {
        let events: Vec<Event> = (0..n)
            .map(|i| {
                Event::new(
                    "web-01",
                    EventKind::UpdateDeferred,
                    EventStatus::Info,
                    "test",
                    format!("e{i}"),
                )
            })
            .collect();
        spool.append_all(&events).unwrap();
        events.iter().map(|e| e.id).collect()
    }

    #[test]
    fn redelivery_after_a_reporter_failing_mid_batch_loses_and_doubles_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("enroll.token");
        std::fs::write(&token, "enroll-me\n").unwrap();
        let (url, stub) = serve(vec![Act::Ok, Act::StoreThenHangUp, Act::Fail, Act::Ok]);
        let mut spool = Spool::open(dir.path()).unwrap();
        let ids = fill(&mut spool, 1_200);
        let http = ureq::AgentBuilder::new().build();
        let s = settings(&url, dir.path(), Some(token));
        let mut rounds = 0;
        while spool.stats().events > 0 {
            let out = deliver(&http, &s, &mut spool);
            rounds += 1;
            assert!(rounds < 5, "{out:?}");
        }
        let st = stub.lock().unwrap();
        assert_eq!(st.enrolls, 1);
        assert_eq!(st.stored.len(), 1_200, "nothing lost");
        assert!(ids.iter().all(|id| st.stored.contains_key(id)));
        // The batch whose answer was lost was sent twice; the reporter's dedup
        // by id is what keeps it single, and nothing else was sent twice.
        assert_eq!(st.stored.values().filter(|c| **c == 2).count(), 500);
        assert!(st.stored.values().all(|c| *c <= 2));
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(dir.path().join(TOKEN_FILE))
                .unwrap()
                .permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn dead_reporter_costs_at_most_the_budget_and_keeps_events() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(TOKEN_FILE), "tok").unwrap();
        // A port nobody listens on.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut spool = Spool::open(dir.path()).unwrap();
        fill(&mut spool, 10);
        let mut s = settings(&format!("http://127.0.0.1:{port}"), dir.path(), None);
        s.budget = Duration::from_secs(60);
        let out = deliver(&ureq::AgentBuilder::new().build(), &s, &mut spool);
        // A refused connection is not retried within the pass.
        assert_eq!(out.batches, 1);
        assert!(out.error.unwrap().contains("unreachable"));
        assert_eq!(out.remaining, 10);
    }

    #[test]
    fn not_enrolled_without_token_file_keeps_events() {
        let dir = tempfile::tempdir().unwrap();
        let (url, stub) = serve(vec![]);
        let mut spool = Spool::open(dir.path()).unwrap();
        fill(&mut spool, 3);
        let out = deliver(
            &ureq::AgentBuilder::new().build(),
            &settings(&url, dir.path(), None),
            &mut spool,
        );
        assert!(out.error.unwrap().contains("not enrolled"));
        assert_eq!(out.remaining, 3);
        assert_eq!(stub.lock().unwrap().requests, 0);
    }
}
