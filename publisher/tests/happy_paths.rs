//! The everyday commands end to end: init, keygen, rollout, pin, sign,
//! verify, publish; serials increase; `--append` is the two-person rule;
//! drift and downgrades are reported.

mod common;
use std::os::unix::fs::PermissionsExt;

use common::*;

#[test]
fn init_creates_a_committed_fleet_repo_from_the_template() {
    let f = Fleet::init();
    let log = git(&f.repo, &["log", "--oneline"]);
    assert_eq!(log.lines().count(), 1, "{log}");
    assert!(git(&f.repo, &["status", "--porcelain"]).is_empty());
    assert!(f.read("fleet.toml").contains("name = \"test-fleet\""));
    for file in [
        ".github/workflows/verify.yml",
        ".github/workflows/publish.yml",
        ".gitlab-ci.yml",
        "README.md",
        "pins.toml",
    ] {
        assert!(f.path(file).exists(), "{file}");
    }
    // The fresh repo validates as it is, and init refuses a non-empty dir.
    f.ok(&["verify", "--sources"]);
    let out = f.cmd(&["init", f.repo.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("not empty"), "{}", stderr(&out));
}

#[test]
fn keygen_writes_a_0600_key_and_prints_its_id() {
    let f = Fleet::init();
    let id = f.keygen("alice");
    assert_eq!(id.len(), 64);
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
    let meta = std::fs::metadata(f.key("alice")).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert!(f.tmp.path().join("keys/alice.pub.pem").exists());
    let out = f.cmd(&["keygen", "--out", &f.key("alice")]);
    assert!(!out.status.success(), "keygen must not overwrite");
}

#[test]
fn sign_serial_strictly_increases_and_verify_passes() {
    let f = Fleet::ready();
    f.ok(&["verify", "--sources"]);
    f.ok(&["sign", "--key", &f.key("release")]);
    assert_eq!(f.serial(), 1);
    f.ok(&["verify", "--check-artifacts", "--store", &f.store_url()]);
    f.ok(&["sign", "--key", &f.key("release")]);
    assert_eq!(f.serial(), 2);
    let m = f.manifest();
    assert_eq!(m["fleet"], "test-fleet");
    assert_eq!(m["channels"]["stable"]["release"], "1.0.0");
    assert_eq!(m["channels"]["stable"]["waves"][0]["name"], "canary");
    // --if-needed: nothing changed, nothing signed.
    let said = f.ok(&["sign", "--key", &f.key("release"), "--if-needed"]);
    assert!(said.contains("up to date"), "{said}");
    assert_eq!(f.serial(), 2);
    // … unless it expires within --renew-before.
    f.ok(&[
        "sign",
        "--key",
        &f.key("release"),
        "--if-needed",
        "--renew-before",
        "60d",
    ]);
    assert_eq!(f.serial(), 3);
}

#[test]
fn verify_reports_drift_after_an_unsigned_change() {
    let f = Fleet::ready();
    f.ok(&["sign", "--key", &f.key("release")]);
    f.ok(&["verify"]);
    f.add_release("1.1.0", b"agent 1.1.0");
    f.rollout_stable("1.1.0");
    f.ok(&["verify", "--sources"]);
    let e = f.fails(&["verify"]);
    assert!(
        e.contains("signed/manifest.json: does not match the sources")
            && e.contains("channels/stable.toml")
            && e.contains("releases/1.1.0.toml"),
        "{e}"
    );
    f.ok(&["sign", "--key", &f.key("release")]);
    f.ok(&["verify", "--check-artifacts", "--store", &f.store_url()]);
}

#[test]
fn append_co_signs_only_what_the_sources_compile_to() {
    let f = Fleet::rooted(&["alice", "bob"], 2);
    f.add_release("1.0.0", b"one");
    f.rollout_stable("1.0.0");
    let e = f.fails(&["sign", "--append", "--key", &f.key("bob")]);
    assert!(e.contains("nothing to co-sign"), "{e}");
    f.ok(&["sign", "--key", &f.key("alice")]);
    let serial = f.serial();
    // Alice changes the sources after signing: Bob must not co-sign.
    f.ok(&["rollout", "pause", "--channel", "stable"]);
    let e = f.fails(&["sign", "--append", "--key", &f.key("bob")]);
    assert!(
        e.contains("refusing to co-sign") && e.contains("channels/stable.toml"),
        "{e}"
    );
    f.ok(&["rollout", "resume", "--channel", "stable"]);
    f.ok(&["sign", "--append", "--key", &f.key("bob")]);
    assert_eq!(f.serial(), serial, "--append keeps the serial");
    f.ok(&["verify"]);
}

#[test]
fn downgrade_is_refused_unless_the_channel_allows_it() {
    let f = Fleet::ready();
    f.add_release("1.1.0", b"agent 1.1.0");
    f.rollout_stable("1.1.0");
    f.ok(&["sign", "--key", &f.key("release")]);
    // rollout set refuses to go down …
    let e = f.fails(&[
        "rollout",
        "set",
        "--channel",
        "stable",
        "--release",
        "1.0.0",
    ]);
    assert!(e.contains("1.0.0 is lower than the signed 1.1.0"), "{e}");
    assert!(f
        .read("channels/stable.toml")
        .contains("release = \"1.1.0\""));
    // … and so do verify and sign when the file is edited by hand.
    let text = f
        .read("channels/stable.toml")
        .replace("release = \"1.1.0\"", "release = \"1.0.0\"");
    f.write("channels/stable.toml", &text);
    let e = f.fails(&["verify", "--sources"]);
    assert!(
        e.contains("channels/stable.toml: release: 1.0.0 is lower than the signed 1.1.0"),
        "{e}"
    );
    let e = f.fails(&["sign", "--key", &f.key("release")]);
    assert!(e.contains("lower than the signed"), "{e}");
    // With allow_downgrade it is a deliberate rollback.
    f.ok(&[
        "rollout",
        "set",
        "--channel",
        "stable",
        "--release",
        "1.0.0",
        "--allow-downgrade",
    ]);
    assert!(f
        .read("channels/stable.toml")
        .contains("allow_downgrade = true"));
    f.ok(&["sign", "--key", &f.key("release")]);
    f.ok(&["verify"]);
    // The permission does not linger into the next rollout.
    f.rollout_stable("1.1.0");
    assert!(!f.read("channels/stable.toml").contains("allow_downgrade"));
}

#[test]
fn rollout_and_pin_edits_keep_comments() {
    let f = Fleet::ready();
    let text = f.read("channels/stable.toml").replace(
        "[[waves]]\nname = \"canary\"",
        "# keep this note\n[[waves]]\nname = \"canary\"",
    );
    f.write("channels/stable.toml", &text);
    f.ok(&[
        "rollout",
        "set",
        "--channel",
        "stable",
        "--release",
        "1.0.0",
        "--max-failure-rate",
        "0.05",
        "--min-reports",
        "3",
    ]);
    let ch = f.read("channels/stable.toml");
    assert!(
        ch.contains("# keep this note")
            && ch.contains("max_failure_rate = 0.05")
            && ch.contains("min_reports = 3"),
        "{ch}"
    );
    f.ok(&[
        "rollout",
        "set",
        "--channel",
        "stable",
        "--release",
        "1.0.0",
        "--waves",
        "first=10%@0s/2h,all=100%@1d/12h",
    ]);
    let ch = f.read("channels/stable.toml");
    assert!(
        ch.contains("name = \"first\"") && !ch.contains("canary"),
        "{ch}"
    );
    f.ok(&["rollout", "pause", "--channel", "stable"]);
    assert!(f.read("channels/stable.toml").contains("paused = true"));
    f.ok(&["rollout", "resume", "--channel", "stable"]);
    assert!(!f.read("channels/stable.toml").contains("paused"));
    let e = f.fails(&["rollout", "pause", "--channel", "nope"]);
    assert!(e.contains("channels/nope.toml"), "{e}");

    f.ok(&[
        "pin",
        "add",
        "--agent",
        "db-01",
        "--agent",
        "db-02",
        "--release",
        "1.0.0",
        "--note",
        "schema",
    ]);
    f.ok(&["pin", "add", "--label", "site=ams1", "--channel", "stable"]);
    let e = f.fails(&["pin", "add", "--agent", "x", "--release", "9.9.9"]);
    assert!(e.contains("pins.toml") && e.contains("9.9.9"), "{e}");
    let out = f.cmd(&["pin", "list"]);
    let list = String::from_utf8(out.stdout).unwrap();
    assert!(
        list.contains("0  agents db-01,db-02: held on release 1.0.0  # schema"),
        "{list}"
    );
    assert!(
        list.contains("1  labels site=ams1: follow channel stable"),
        "{list}"
    );
    let pins = f.read("pins.toml");
    assert!(pins.starts_with("# Pins hold agents"), "{pins}");
    f.ok(&["pin", "remove", "--agent", "db-01"]);
    f.ok(&["pin", "remove", "1"]);
    let list = String::from_utf8(f.cmd(&["pin", "list"]).stdout).unwrap();
    assert_eq!(
        list.trim(),
        "0  agents db-02: held on release 1.0.0  # schema"
    );
    f.ok(&["sign", "--key", &f.key("release")]);
    assert_eq!(f.manifest()["pins"][0]["agents"][0], "db-02");
    f.ok(&["verify"]);
}

#[test]
fn publish_uploads_roots_and_manifest_and_refuses_a_stale_checkout() {
    let f = Fleet::ready();
    let out = f.tmp.path().join("www");
    let www = out.to_str().unwrap();
    let e = f.fails(&["publish", "--store", www]);
    assert!(
        e.contains("refusing to publish") && e.contains("signed/manifest.json: missing"),
        "{e}"
    );
    f.ok(&["sign", "--key", &f.key("release")]);
    let stale = f.read("signed/manifest.json");
    f.ok(&["sign", "--key", &f.key("release")]);
    f.ok(&["publish", "--store", www]);
    assert_eq!(
        std::fs::read_to_string(out.join("manifest.json")).unwrap(),
        f.read("signed/manifest.json")
    );
    assert_eq!(
        std::fs::read_to_string(out.join("root/1.root.json")).unwrap(),
        f.read("root/1.root.json")
    );
    // Publishing again is fine; an older manifest is refused.
    f.ok(&["publish", "--store", &format!("file://{www}")]);
    f.write("signed/manifest.json", &stale);
    let e = f.fails(&["publish", "--store", www]);
    assert!(
        e.contains("has serial 2, newer than signed/manifest.json's 1"),
        "{e}"
    );
}

#[test]
fn release_add_records_once_and_never_overwrites_the_store() {
    let f = Fleet::ready();
    // Same version, same file: a no-op.
    let said = {
        let file = f.tmp.path().join("agent-1.0.0");
        f.ok(&[
            "release",
            "add",
            "--version",
            "1.0.0",
            "--target",
            TARGET,
            "--file",
            file.to_str().unwrap(),
            "--store",
            &f.store_url(),
        ])
    };
    assert!(
        said.contains("already in the store") && said.contains("already records it"),
        "{said}"
    );
    // A second target joins the same release file.
    let arm = f.tmp.path().join("arm");
    std::fs::write(&arm, b"arm build").unwrap();
    f.ok(&[
        "release",
        "add",
        "--version",
        "1.0.0",
        "--target",
        "aarch64-unknown-linux-gnu",
        "--file",
        arm.to_str().unwrap(),
        "--store",
        &f.store_url(),
    ]);
    let r = f.read("releases/1.0.0.toml");
    assert!(
        r.contains("[artifacts.aarch64-unknown-linux-gnu]")
            && r.contains("[artifacts.x86_64-unknown-linux-gnu]"),
        "{r}"
    );
    // Another file under an existing object key is refused, and nothing changes.
    let other = f.tmp.path().join("other");
    std::fs::write(&other, b"different build").unwrap();
    let e = f.fails(&[
        "release",
        "add",
        "--version",
        "2.0.0",
        "--target",
        TARGET,
        "--file",
        other.to_str().unwrap(),
        "--store",
        &f.store_url(),
        "--path",
        "flotilla-agent/1.0.0/x86_64-unknown-linux-gnu/flotilla-agent",
    ]);
    assert!(e.contains("never overwritten"), "{e}");
    assert!(!f.path("releases/2.0.0.toml").exists());
    let stored = std::fs::read(
        f.store
            .join("flotilla-agent/1.0.0/x86_64-unknown-linux-gnu/flotilla-agent"),
    )
    .unwrap();
    assert_eq!(stored, b"agent 1.0.0");
}
