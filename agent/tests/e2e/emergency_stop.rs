//! The real agent against the real reporter (its binary, verifying the
//! fleet's signed manifest): every pass checks in with what it decided, and
//! an operator's emergency stop (`POST /api/v1/halts`) holds the agent at
//! its next gate check, with who and why, until it is reopened.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use flotilla_protocol::api::{AgentSummary, Halt, HostState};

use crate::delivery::Reporter;
use crate::support::bins;
use crate::support::host::Host;

fn agent(r: &Reporter, id: &str) -> AgentSummary {
    serde_json::from_reader(r.get(&format!("/api/v1/agents/{id}")).into_reader()).unwrap()
}

/// Polls the reporter until `id` is as `ok` says (check-ins are written
/// within about a second).
fn wait_for(
    r: &Reporter,
    id: &str,
    what: &str,
    ok: impl Fn(&AgentSummary) -> bool,
) -> AgentSummary {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let a = agent(r, id);
        if ok(&a) {
            return a;
        }
        assert!(Instant::now() < deadline, "{id} never {what}: {a:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn wait_for_state(r: &Reporter, id: &str, state: HostState) -> AgentSummary {
    wait_for(r, id, &format!("checked in as {state}"), |a| {
        a.state == Some(state)
    })
}

#[test]
fn a_manual_halt_holds_the_agent_until_reopened_and_each_pass_checks_in() {
    let tmp = tempfile::tempdir().unwrap();
    let fleet = crate::update::fleet_v1_v2(tmp.path());
    let reporter = Reporter::start_with(
        tmp.path(),
        &[
            "--manifest".into(),
            fleet.store.join("manifest.json").display().to_string(),
            "--trust-root".into(),
            fleet.root1().display().to_string(),
        ],
    );
    let enroll = tmp.path().join("enroll.token");
    fs::write(&enroll, reporter.enrollment_token()).unwrap();
    fs::set_permissions(&enroll, fs::Permissions::from_mode(0o600)).unwrap();
    let host = Host::new(
        &tmp.path().join("h1"),
        &bins::agent("v1"),
        "1.0.0",
        &fleet.root1(),
        &format!("git = \"{}\"\nbranch = \"main\"", fleet.file_url()),
        &format!("file://{}/", fleet.store.display()),
        &format!(
            "\n[reporter]\nurl = \"{}\"\nenrollment_token_file = \"{}\"\ngate_unreachable = \"wait\"\n",
            reporter.url(),
            enroll.display()
        ),
    );
    let id = "host-h1";

    // An operator stops stable before the agent ever asks.
    let h: Halt = serde_json::from_reader(
        reporter
            .post(
                "/api/v1/halts",
                r#"{"channel":"stable","reason":"2.0.0 corrupts the cache","by":"ops"}"#,
            )
            .into_reader(),
    )
    .unwrap();

    // Pass 1: not enrolled yet, so the gate cannot be asked ("wait"); the
    // pass enrolls and checks in as held.
    let out = host.pass();
    assert!(out.contains("cannot be asked"), "{out}");
    wait_for_state(&reporter, id, HostState::Held);
    // Pass 2: enrolled; the gate answers the operator's halt.
    let out = host.pass();
    assert!(
        out.contains("manually halted by ops (admin token)")
            && out.contains("2.0.0 corrupts the cache"),
        "{out}"
    );
    assert_eq!(host.current(), "1.0.0");
    let a = wait_for(
        &reporter,
        id,
        "checked in as held by the manual halt",
        |a| {
            a.state == Some(HostState::Held)
                && a.reason
                    .as_deref()
                    .unwrap_or("")
                    .contains("manually halted by ops")
        },
    );
    assert_eq!(a.state_release.as_deref(), Some("2.0.0"));
    let seen = a.last_seen.unwrap();

    // Reopened: the next pass installs.
    reporter.post(&format!("/api/v1/halts/{}/reopen", h.id), "{}");
    let out = host.pass();
    assert!(out.contains("installed 2.0.0"), "{out}");
    wait_for_state(&reporter, id, HostState::Updating);
    // The new version's pass commits it and checks in on release; a pass
    // that changes nothing after that still moves last_seen.
    host.pass();
    let a = wait_for_state(&reporter, id, HostState::OnRelease);
    assert!(a.last_seen.unwrap() > seen);
    let before = a.last_seen.unwrap();
    host.pass();
    let deadline = Instant::now() + Duration::from_secs(30);
    while agent(&reporter, id).last_seen.unwrap() <= before {
        assert!(
            Instant::now() < deadline,
            "an idle pass did not move last_seen"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // Pinned where it is: the pass, `status` and the check-in all say
    // "pinned to", not "up to date" (issue 12).
    fleet.publisher(&["pin", "add", "--agent", id, "--release", "2.0.0"]);
    fleet.sign();
    let out = host.pass();
    assert!(out.contains("pinned to 2.0.0"), "{out}");
    let a = wait_for_state(&reporter, id, HostState::Pinned);
    assert_eq!(a.reason.as_deref(), Some("pinned to 2.0.0"));
    let status = host.agent(&["status"], &[]);
    let status = String::from_utf8_lossy(&status.stdout);
    assert!(status.contains("pinned to 2.0.0"), "{status}");
}
