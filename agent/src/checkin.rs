//! The pass's check-in (pass step 8, after delivery): one small
//! `POST <reporter>/api/v1/checkin` saying the agent was seen and what its
//! pass decided ([`CheckIn`]: on release, waiting for its wave until T,
//! held by the gate, paused, pinned, rolled back, blocked, updating), so a
//! host whose passes change nothing still shows as reporting.
//!
//! It never fails the pass and never slows it by more than [`TIMEOUT`]:
//! errors are logged at debug level and forgotten, nothing is spooled (the
//! next pass checks in again). Without a reporter, or before the agent is
//! enrolled (no agent token), nothing is sent.

use std::time::Duration;

use chrono::{DateTime, Utc};
use flotilla_protocol::api::{paths, CheckIn, HostState};

use crate::config::Config;
use crate::pass::Ending;
use crate::state::StateDir;

/// The longest a check-in may take, connecting included.
pub const TIMEOUT: Duration = Duration::from_secs(2);

/// What the decision step found, when it decided (set by the pass).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Decided {
    /// The state.
    pub state: HostState,
    /// The release it is about.
    pub release: Option<String>,
    /// The agent's wave.
    pub wave: Option<String>,
    /// Until when it waits.
    pub until: Option<DateTime<Utc>>,
}

/// The check-in of a pass that ended with `outcome`; `decided`: what step 5
/// said, if the pass got that far. `None` for a pass that did nothing
/// (another one held the lock).
pub(crate) fn of_pass(
    outcome: &Ending,
    decided: Option<Decided>,
    channel: Option<&str>,
) -> Option<CheckIn> {
    let checkin = |state, release: Option<&str>| CheckIn {
        state,
        reason: outcome.describe(),
        release: release.map(str::to_owned),
        wave: None,
        until: None,
        version: Some(crate::version::VERSION.to_owned()),
        channel: channel.map(str::to_owned),
    };
    let mut c = match outcome {
        Ending::Busy => return None,
        Ending::UpToDate { release, pinned } => checkin(
            if *pinned {
                HostState::Pinned
            } else {
                HostState::OnRelease
            },
            Some(release),
        ),
        Ending::Deferred { .. } => checkin(HostState::Blocked, None),
        Ending::Installed { version } => checkin(HostState::Updating, Some(version)),
        Ending::Unhealthy { .. } | Ending::Waiting { .. } => checkin(HostState::Updating, None),
        Ending::RolledBack { from, .. } => checkin(HostState::RolledBack, Some(from)),
        Ending::Rejected { .. } | Ending::Failed { .. } => checkin(HostState::Blocked, None),
    };
    // Step 5's finer word holds unless the pass went on to something else.
    if let Some(d) = decided {
        if matches!(outcome, Ending::UpToDate { .. } | Ending::Deferred { .. }) {
            c.state = d.state;
            c.release = d.release.or(c.release);
            c.wave = d.wave;
            c.until = d.until;
        }
    }
    // The reporter bounds the reason; keep it whole up to there.
    if c.reason.len() > flotilla_protocol::host::MAX_REASON_BYTES {
        let mut end = flotilla_protocol::host::MAX_REASON_BYTES;
        while !c.reason.is_char_boundary(end) {
            end -= 1;
        }
        c.reason.truncate(end);
    }
    Some(c)
}

/// Pass step 8b: checks in for the pass that ended with `outcome` (see the
/// module doc); never fails.
pub(crate) fn send(
    config: &Config,
    state_dir: &StateDir,
    outcome: &Ending,
    decided: Option<Decided>,
    channel: Option<&str>,
) {
    let Some(rep) = &config.reporter else { return };
    let Some(c) = of_pass(outcome, decided, channel.or(Some(&config.channel))) else {
        return;
    };
    let Some(token) = crate::delivery::agent_token(state_dir.root()) else {
        return;
    };
    let http = match crate::http::client(config.update.connect_timeout.min(TIMEOUT), TIMEOUT) {
        Ok(h) => h,
        Err(e) => {
            tracing::debug!("check-in: {e}");
            return;
        }
    };
    let url = format!("{}{}", rep.url.trim_end_matches('/'), paths::CHECKIN);
    let body = serde_json::to_string(&c).expect("a check-in serialises");
    match http
        .post(&url)
        .timeout(TIMEOUT)
        .set("Authorization", &format!("Bearer {token}"))
        .set("Content-Type", "application/json")
        .send_string(&body)
    {
        Ok(_) => tracing::debug!(state = %c.state, "checked in"),
        Err(e) => tracing::debug!(
            "check-in to {} failed: {}",
            flotilla_protocol::redact_urls(&url),
            crate::http::describe(&e)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_decision_refines_what_the_outcome_says() {
        let waiting = Decided {
            state: HostState::Waiting,
            release: Some("2.0.0".into()),
            wave: Some("all".into()),
            until: Some(DateTime::<Utc>::UNIX_EPOCH),
        };
        let deferred = Ending::Deferred {
            reason: "2.0.0: turn at 1970".into(),
        };
        let c = of_pass(&deferred, Some(waiting.clone()), Some("stable")).unwrap();
        assert_eq!(c.state, HostState::Waiting);
        assert_eq!(c.wave.as_deref(), Some("all"));
        assert_eq!(c.reason, "update deferred: 2.0.0: turn at 1970");
        // an install that followed the decision is what counts
        let installed = Ending::Installed {
            version: "2.0.0".into(),
        };
        let c = of_pass(&installed, Some(waiting), None).unwrap();
        assert_eq!(c.state, HostState::Updating);
        assert!(of_pass(&Ending::Busy, None, None).is_none());
        // a pinned host says so, not "up to date"
        let pinned = Ending::UpToDate {
            release: "1.3.2".into(),
            pinned: true,
        };
        let c = of_pass(&pinned, None, Some("stable")).unwrap();
        assert_eq!(
            (c.state, c.reason.as_str()),
            (HostState::Pinned, "pinned to 1.3.2")
        );
        let on = Ending::UpToDate {
            release: "1.3.2".into(),
            pinned: false,
        };
        let c = of_pass(&on, None, Some("stable")).unwrap();
        assert_eq!(
            (c.state, c.reason.as_str()),
            (HostState::OnRelease, "up to date (1.3.2)")
        );
        let failed = Ending::Failed {
            reason: "x".repeat(5000),
        };
        let c = of_pass(&failed, None, None).unwrap();
        assert_eq!(c.state, HostState::Blocked);
        assert!(c.check().is_ok());
    }
}
