//! The reporter's halt gate: `GET <reporter>/api/v1/gate/{channel}/{release}`.
//!
//! Asked right before an install. The gate can only stop an update, never
//! start one. The agent sends its agent token (`state_dir/agent.token`,
//! written by enrollment) as a bearer token when it has one, and asks
//! without authentication otherwise. Any answer other than a parseable
//! [`Gate`] (no reporter, connection refused, 401/403 for an unknown agent,
//! 5xx, garbage) counts as *unreachable*, and the agent follows the
//! configured [`GateUnreachable`](crate::config::GateUnreachable) policy.

use std::io::Read;

use flotilla_protocol::api::{Gate, GateState};

/// What the gate said.
#[derive(Clone, Debug, PartialEq)]
pub enum GateAnswer {
    /// Install.
    Open,
    /// Wait: the release is failing on this channel.
    Closed(String),
    /// No usable answer.
    Unreachable(String),
}

/// Asks the gate of `channel`/`release` at `reporter_url`.
pub fn ask(
    http: &ureq::Agent,
    reporter_url: &str,
    channel: &str,
    release: &str,
    token: Option<&str>,
) -> GateAnswer {
    let url = format!(
        "{}{}",
        reporter_url.trim_end_matches('/'),
        flotilla_protocol::api::paths::gate(channel, release)
    );
    let shown = flotilla_protocol::redact_urls(&url);
    let mut req = http.get(&url);
    if let Some(t) = token {
        req = req.set("Authorization", &format!("Bearer {t}"));
    }
    let resp = match req.call() {
        Ok(r) => r,
        Err(e) => {
            return GateAnswer::Unreachable(format!("{shown}: {}", crate::http::describe(&e)))
        }
    };
    let mut body = Vec::new();
    if let Err(e) = resp.into_reader().take(1 << 20).read_to_end(&mut body) {
        return GateAnswer::Unreachable(format!("{shown}: {e}"));
    }
    match serde_json::from_slice::<Gate>(&body) {
        Ok(g) if g.state == GateState::Open => GateAnswer::Open,
        Ok(g) => GateAnswer::Closed(if g.reason.is_empty() {
            format!("{} of {} reports failed", g.failed, g.reports)
        } else {
            g.reason
        }),
        Err(e) => GateAnswer::Unreachable(format!("{shown}: not a gate answer: {e}")),
    }
}
