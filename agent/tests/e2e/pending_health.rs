//! A pending update's health is its own (state dir, trust root, able to
//! run): a mirror serving an old or corrupt manifest during the new
//! version's first passes is reported and retried, and never rolls the
//! release back (which would close the halt gate for the whole channel).

use flotilla_protocol::{EventKind, EventStatus};

use crate::support::bins;
use crate::support::host::Host;
use crate::support::http::{Knob, Server};

/// v1 installs v2 over the HTTP store; then, before v2's first pass, the
/// mirror starts serving `bad` as its manifest (`None`: the manifest the
/// host accepted before the newest, i.e. a stale one).
fn mirror_misbehaves_during_the_health_check(bad: Option<&[u8]>) {
    let tmp = tempfile::tempdir().unwrap();
    let fleet = crate::update::fleet_v1_v2(tmp.path());
    let stale = std::fs::read(fleet.store.join("manifest.json")).unwrap();
    // A newer serial naming the same release: the one v1 installs v2 from.
    fleet.publisher(&[
        "pin",
        "add",
        "--agent",
        "someone-else",
        "--release",
        "1.0.0",
    ]);
    fleet.sign();
    let server = Server::start(&fleet.store);
    let host = Host::new(
        &tmp.path().join("host"),
        &bins::agent("v1"),
        "1.0.0",
        &fleet.root1(),
        &format!("url = \"{}\"", server.url()),
        &server.url(),
        "",
    );
    let out = host.pass();
    assert!(out.contains("installed 2.0.0"), "{out}");

    server.knob(
        "/manifest.json",
        Knob::Bytes(bad.map(<[u8]>::to_vec).unwrap_or(stale)),
    );
    // More passes than the update has health attempts (2 by default).
    for _ in 0..3 {
        host.pass();
        assert_eq!(host.current(), "2.0.0");
        assert_eq!(host.running_version(), "2.0.0");
        let st = host.state();
        assert_eq!(st["pending"]["to"], "2.0.0", "{st}");
        assert!(st.get("blocked").is_none(), "{st}");
    }
    assert!(host
        .events_of(EventKind::UpdateRollback, EventStatus::Success)
        .is_empty());
    assert!(
        host.events_of(EventKind::UpdateHealthcheck, EventStatus::Failed)
            .is_empty(),
        "a manifest problem counted against the release"
    );
    let refused: Vec<_> = host
        .events()
        .into_iter()
        .filter(|e| e.kind == EventKind::ManifestCheck && e.status != EventStatus::Success)
        .collect();
    assert_eq!(
        refused.len(),
        1,
        "reported once, when it starts: {refused:?}"
    );

    // The mirror catches up: v2 is healthy and commits.
    server.clear_knobs();
    host.pass();
    let st = host.state();
    assert_eq!(st["committed"], "2.0.0", "{st}");
    assert!(st.get("pending").is_none(), "{st}");
    assert_eq!(
        host.events_of(EventKind::UpdateHealthcheck, EventStatus::Success)
            .len(),
        1
    );
}

#[test]
fn a_stale_manifest_during_the_health_check_does_not_roll_back() {
    mirror_misbehaves_during_the_health_check(None);
}

#[test]
fn a_corrupt_manifest_during_the_health_check_does_not_roll_back() {
    mirror_misbehaves_during_the_health_check(Some(b"{\"payloadType\": \"garbage"));
}
