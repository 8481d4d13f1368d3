//! The reporter's halt gate: a closed gate defers, an open one lets the
//! update through; no reporter, an unreachable one or one that refuses the
//! agent does not stop updates (gate_unreachable = "proceed"), "wait" does.

use flotilla_protocol::{EventKind, EventStatus};

use crate::support::bins;
use crate::support::host::Host;
use crate::support::http::{Knob, Server};

fn host_with_reporter(
    tmp: &std::path::Path,
    reporter: &str,
    policy: &str,
) -> (Server, Host, crate::support::fleet::Fleet) {
    let fleet = crate::update::fleet_v1_v2(tmp);
    let server = Server::start(&fleet.store);
    let host = Host::new(
        &tmp.join("host"),
        &bins::agent("v1"),
        "1.0.0",
        &fleet.root1(),
        &format!("url = \"{}\"", server.url()),
        &server.url(),
        &format!("\n[reporter]\nurl = \"{reporter}\"\ngate_unreachable = \"{policy}\"\n"),
    );
    (server, host, fleet)
}

fn gate(state: &str) -> String {
    format!(
        r#"{{"channel":"stable","release":"2.0.0","state":"{state}","reports":10,"failed":5,"reason":"5 of 10 failed"}}"#
    )
}

#[test]
fn closed_gate_defers_and_open_gate_lets_the_update_through() {
    let tmp = tempfile::tempdir().unwrap();
    let reporter = Server::start(tmp.path());
    let (_s, host, _f) =
        host_with_reporter(tmp.path(), reporter.url().trim_end_matches('/'), "proceed");
    reporter.knob("/api/v1/gate/stable/2.0.0", Knob::Body(gate("closed")));
    let out = host.pass();
    assert!(out.contains("halt gate is closed"), "{out}");
    assert_eq!(host.current(), "1.0.0");
    assert_eq!(
        host.events_of(EventKind::UpdateDeferred, EventStatus::Info)
            .len(),
        1
    );
    // Unenrolled: no Authorization header. With a token: Bearer.
    assert!(!reporter.log()[0].headers.contains_key("authorization"));
    std::fs::write(host.state_dir.join("agent.token"), "ab".repeat(32)).unwrap();
    reporter.knob("/api/v1/gate/stable/2.0.0", Knob::Body(gate("open")));
    assert!(host.pass().contains("installed 2.0.0"));
    assert_eq!(
        reporter.log().last().unwrap().headers["authorization"],
        format!("Bearer {}", "ab".repeat(32))
    );
}

#[test]
fn updates_without_a_reporter_and_with_a_refusing_or_dead_one() {
    // Refusing: 401 for an agent it does not know.
    let tmp = tempfile::tempdir().unwrap();
    let reporter = Server::start(tmp.path());
    reporter.knob("/api/v1/gate/stable/2.0.0", Knob::Status(401));
    let (_s, host, _f) = host_with_reporter(tmp.path(), &reporter.url(), "proceed");
    assert!(host.pass().contains("installed 2.0.0"));
    // Dead: nothing listens.
    let tmp = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (_s, host, _f) =
        host_with_reporter(tmp.path(), &format!("http://127.0.0.1:{port}"), "proceed");
    assert!(host.pass().contains("installed 2.0.0"));
    // "wait" holds the update while the gate cannot be asked.
    let tmp = tempfile::tempdir().unwrap();
    let (_s, host, _f) =
        host_with_reporter(tmp.path(), &format!("http://127.0.0.1:{port}"), "wait");
    let out = host.pass();
    assert!(out.contains("cannot be asked"), "{out}");
    assert_eq!(host.current(), "1.0.0");
}
