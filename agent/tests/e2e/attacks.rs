//! The attack matrix: each attack is refused with an event, and the host
//! keeps running v1 (and keeps passing).

use chrono::{Duration, Utc};
use flotilla_protocol::api::details;
use flotilla_protocol::{EventKind, EventStatus};
use flotilla_signing::PrivateKey;
use serde_json::json;

use crate::support::bins;
use crate::support::fleet::{next_serial, Fleet, TARGET};
use crate::support::host::Host;
use crate::support::http::{Knob, Server};

struct Scene {
    _tmp: tempfile::TempDir,
    fleet: Fleet,
    server: Server,
    host: Host,
}

/// v1 and v2 released, channel on v2, the host on v1 reading the static
/// HTTP store (`http`) or the repo over file://.
fn scene(http: bool) -> Scene {
    let tmp = tempfile::tempdir().unwrap();
    let fleet = crate::update::fleet_v1_v2(tmp.path());
    let server = Server::start(&fleet.store);
    let source = if http {
        format!("url = \"{}\"", server.url())
    } else {
        format!("git = \"{}\"", fleet.file_url())
    };
    let host = Host::new(
        &tmp.path().join("host"),
        &bins::agent("v1"),
        "1.0.0",
        &fleet.root1(),
        &source,
        &server.url(),
        "",
    );
    Scene {
        _tmp: tmp,
        fleet,
        server,
        host,
    }
}

impl Scene {
    /// A pass that must leave v1 running with no pending update, and an
    /// event of `kind`/`status` whose message contains `needle`.
    fn refused(&self, kind: EventKind, status: EventStatus, needle: &str) {
        let before = self.host.events_of(kind, status).len();
        self.host.pass();
        assert_eq!(self.host.current(), "1.0.0");
        assert_eq!(self.host.running_version(), "1.0.0");
        assert!(self.host.state().get("pending").is_none());
        let ev = self.host.events_of(kind, status);
        assert_eq!(ev.len(), before + 1, "expected a new {kind}/{status} event");
        let e = ev.last().unwrap();
        assert!(
            e.message.contains(needle),
            "{kind}/{status}: {:?} lacks {needle:?}",
            e.message
        );
        assert!(e.details.contains_key("error_chain"));
    }

    /// Another pass: still refused, still v1.
    fn still_v1(&self) {
        self.host.pass();
        assert_eq!(self.host.running_version(), "1.0.0");
        assert!(self.host.state().get("pending").is_none());
    }

    fn artifact(&self) -> String {
        format!("/{}", self.fleet.artifact_path("2.0.0"))
    }

    fn v2_len(&self) -> usize {
        std::fs::metadata(bins::agent("v2")).unwrap().len() as usize
    }
}

#[test]
fn rejects_artifact_with_wrong_hash() {
    let s = scene(true);
    s.server
        .knob(&s.artifact(), Knob::Bytes(vec![7u8; s.v2_len()]));
    s.refused(
        EventKind::UpdateVerify,
        EventStatus::Failed,
        "SHA-256 mismatch",
    );
    s.still_v1();
    assert_eq!(
        std::fs::read_dir(s.host.state_dir.join("downloads"))
            .unwrap()
            .count(),
        0
    );
}

#[test]
fn rejects_artifact_with_wrong_size() {
    let s = scene(true);
    s.server.knob(&s.artifact(), Knob::Bytes(vec![7u8; 1000]));
    s.refused(EventKind::UpdateDownload, EventStatus::Failed, "1000 of");
    s.still_v1();
}

#[test]
fn cuts_off_endless_body_at_the_signed_size() {
    let s = scene(true);
    s.server.knob(&s.artifact(), Knob::Endless);
    s.refused(
        EventKind::UpdateDownload,
        EventStatus::Failed,
        "exceeds the signed size",
    );
    s.still_v1();
}

#[test]
fn rejects_manifest_signed_by_unknown_key() {
    let s = scene(true);
    let stranger = PrivateKey::generate();
    let env = s.fleet.craft(|_| {}, &[&stranger]);
    s.fleet.put_manifest(&env);
    s.refused(
        EventKind::ManifestCheck,
        EventStatus::Rejected,
        "threshold not met",
    );
    s.still_v1();
}

#[test]
fn rejects_manifest_below_release_threshold() {
    let s = scene(false);
    // Rotate to root 2 (signed by old and new root keys) whose release role
    // needs 2 of 2 keys; the manifest carries only one.
    let root_key = s.fleet.private("root");
    let second = PrivateKey::generate();
    let release = s.fleet.private("release");
    s.fleet
        .put_new_root(2, &[&root_key], &[&release, &second], 2, &[&root_key]);
    let m = s.fleet.craft(next_serial, &[&release]);
    s.fleet.put_manifest(&m);
    s.refused(
        EventKind::ManifestCheck,
        EventStatus::Rejected,
        "1 of 2 required",
    );
    s.still_v1();
}

#[test]
fn rejects_expired_manifest() {
    let s = scene(true);
    let release = s.fleet.private("release");
    let env = s.fleet.craft(
        |v| {
            next_serial(v);
            v["expires"] = json!(Utc::now() - Duration::hours(1));
        },
        &[&release],
    );
    s.fleet.put_manifest(&env);
    s.refused(EventKind::ManifestCheck, EventStatus::Rejected, "expired");
    s.still_v1();
}

#[test]
fn rejects_replayed_older_serial_over_git() {
    let s = scene(false);
    // Serial 1 names 2.0.0; hold this host on 1.0.0 with a pin (serial 2).
    let old = s.fleet.envelope();
    let id = format!("host-{}", s.host.dir.file_name().unwrap().to_string_lossy());
    s.fleet
        .publisher(&["pin", "add", "--agent", &id, "--release", "1.0.0"]);
    s.fleet.sign();
    assert!(s.host.pass().contains("pinned to 1.0.0"));
    // The older manifest (no pin: it would move the host to 2.0.0) comes back.
    s.fleet.put_manifest(&old);
    s.refused(
        EventKind::ManifestCheck,
        EventStatus::Rejected,
        "below the highest serial",
    );
    s.still_v1();
}

#[test]
fn rejects_stale_manifest_from_a_mirror() {
    let s = scene(true);
    let id = format!("host-{}", s.host.dir.file_name().unwrap().to_string_lossy());
    let stale = std::fs::read(s.fleet.store.join("manifest.json")).unwrap();
    s.fleet
        .publisher(&["pin", "add", "--agent", &id, "--release", "1.0.0"]);
    s.fleet.sign();
    assert!(s.host.pass().contains("pinned to 1.0.0"));
    // A mirror that has not caught up serves the previous manifest.
    s.server.knob("/manifest.json", Knob::Bytes(stale));
    s.refused(
        EventKind::ManifestCheck,
        EventStatus::Rejected,
        "replayed or stale",
    );
    s.still_v1();
}

#[test]
fn rejects_mix_and_match_release_entry_altered_after_signing() {
    let s = scene(true);
    // Point 2.0.0's entry at the v1 build, keeping the original signatures.
    let v1 =
        flotilla_signing::hash_reader(std::fs::File::open(bins::agent("v1")).unwrap()).unwrap();
    let original = s.fleet.envelope();
    let mut env = s.fleet.craft(
        |v| {
            let a = &mut v["releases"]["2.0.0"]["artifacts"][TARGET];
            a["sha256"] = json!(v1.sha256);
            a["size"] = json!(v1.size);
            a["path"] = json!(s.fleet.artifact_path("1.0.0"));
        },
        &[],
    );
    env.signatures = original.signatures.clone();
    s.fleet.put_manifest(&env);
    s.refused(
        EventKind::ManifestCheck,
        EventStatus::Rejected,
        "threshold not met",
    );
    s.still_v1();
}

#[test]
fn rejects_root_rotation_signed_only_by_new_keys() {
    let s = scene(false);
    let new_root = PrivateKey::generate();
    let new_release = PrivateKey::generate();
    s.fleet
        .put_new_root(2, &[&new_root], &[&new_release], 1, &[&new_root]);
    let m = s.fleet.craft(next_serial, &[&new_release]);
    s.fleet.put_manifest(&m);
    s.refused(
        EventKind::ManifestCheck,
        EventStatus::Rejected,
        "root/2.root.json rejected",
    );
    s.still_v1();
    assert!(
        !s.host.state_dir.join("root.json").exists(),
        "root 2 must not be trusted"
    );
}

#[test]
fn refuses_artifact_path_escaping_the_base() {
    let s = scene(true);
    let release = s.fleet.private("release");
    let env = s.fleet.craft(
        |v| {
            next_serial(v);
            v["releases"]["2.0.0"]["artifacts"][TARGET]["path"] = json!("../../etc/flotilla-agent");
        },
        &[&release],
    );
    s.fleet.put_manifest(&env);
    s.refused(
        EventKind::UpdateDownload,
        EventStatus::Failed,
        "escapes the artifact base URL",
    );
    s.still_v1();
}

#[test]
fn abandons_stalled_download_and_resumes_it_next_pass() {
    let s = scene(true);
    s.server.knob(&s.artifact(), Knob::StallOnceAfter(300_000));
    s.refused(EventKind::UpdateDownload, EventStatus::Failed, "stalled");
    // The next pass resumes the partial file with Range and installs v2.
    assert!(s.host.pass().contains("installed 2.0.0"));
    let log = s.server.log();
    let resumed = log
        .iter()
        .find(|l| l.path == s.artifact() && l.headers.contains_key("range"))
        .expect("a Range request");
    assert_eq!(resumed.headers["range"], "bytes=300000-");
    assert_eq!(resumed.status, 206);
}

#[test]
fn recovers_from_a_compromised_release_key_by_rotating_it_out() {
    let s = scene(false);
    let id = format!("host-{}", s.host.dir.file_name().unwrap().to_string_lossy());
    s.fleet
        .publisher(&["pin", "add", "--agent", &id, "--release", "1.0.0"]);
    s.fleet.sign();
    // The stolen release key signs a huge serial; the host takes it.
    let old = s.fleet.private("release");
    let huge = 1_000_000_000_000u64;
    let frozen = s.fleet.craft(|v| v["serial"] = json!(huge), &[&old]);
    s.fleet.put_manifest(&frozen);
    assert!(s.host.pass().contains("pinned to 1.0.0"));
    assert_eq!(s.host.state()["highest_serial"], huge);

    // Recovery: root 2 (signed by the root key) replaces the release key,
    // and the new key signs serial 1.
    let root_key = s.fleet.private("root");
    let new = PrivateKey::generate();
    s.fleet
        .put_new_root(2, &[&root_key], &[&new], 1, &[&root_key]);
    let first = s.fleet.craft(|v| v["serial"] = json!(1), &[&new]);
    s.fleet.put_manifest(&first);
    let out = s.host.pass();
    assert!(out.contains("pinned to 1.0.0"), "{out}");
    let st = s.host.state();
    assert_eq!(
        (&st["highest_serial"], &st["root_version"]),
        (&json!(1), &json!(2))
    );
    let accepted = s
        .host
        .events_of(EventKind::ManifestCheck, EventStatus::Success);
    let recovered = accepted.last().unwrap();
    assert!(
        recovered.message.contains("serial 1 accepted")
            && recovered.message.contains(&format!("forgot serial {huge}")),
        "{recovered:?}"
    );
    // The reporter learns which high-water mark was dropped, and only here.
    assert_eq!(recovered.details[details::FORGOT_SERIAL], json!(huge));
    assert!(accepted[..accepted.len() - 1]
        .iter()
        .all(|e| !e.details.contains_key(details::FORGOT_SERIAL)));

    // The old key's manifests are refused from now on, whatever the serial.
    let replay = s.fleet.craft(|v| v["serial"] = json!(huge + 1), &[&old]);
    s.fleet.put_manifest(&replay);
    s.refused(
        EventKind::ManifestCheck,
        EventStatus::Rejected,
        "threshold not met",
    );
    assert_eq!(s.host.state()["highest_serial"], 1);
    // And the new key's later serials still go through replay protection.
    let second = s.fleet.craft(|v| v["serial"] = json!(2), &[&new]);
    s.fleet.put_manifest(&second);
    s.host.pass();
    assert_eq!(s.host.state()["highest_serial"], 2);
    s.fleet.put_manifest(&first);
    s.refused(
        EventKind::ManifestCheck,
        EventStatus::Rejected,
        "below the highest serial",
    );
}
