//! Attacks an unprivileged pull request can make on the fleet repo, each
//! performed against the real binary over a git repo with a `main` base
//! branch: what the PR check (`verify --sources --base`) says, and what CI
//! does after a merge (`sign --if-needed`, `publish`) if the PR got in anyway.

mod common;
use common::*;

const FORGED: u64 = u64::MAX - 1;

/// A fleet on main: stable on 1.0.0, signed (serial 1), published to
/// `<tmp>/www`, committed. Returns the fleet and the publish store.
fn on_main() -> (Fleet, String) {
    let f = Fleet::ready();
    f.ok(&["sign", "--key", &f.key("release")]);
    let www = f.tmp.path().join("www").to_string_lossy().into_owned();
    f.ok(&["publish", "--store", &www]);
    f.commit("stable: 1.0.0, signed");
    (f, www)
}

/// Opens a pull request branch with a real source change (stable to 1.1.0).
fn pull_request(f: &Fleet) {
    git(&f.repo, &["checkout", "-q", "-b", "pr"]);
    f.add_release("1.1.0", b"agent 1.1.0");
    f.rollout_stable("1.1.0");
}

/// The pull request is merged (say, the check was not required).
fn merge(f: &Fleet) {
    f.commit("the pull request");
    git(&f.repo, &["checkout", "-q", "main"]);
    git(&f.repo, &["merge", "-q", "--ff-only", "pr"]);
}

/// The attack: a pull request with a real change also edits the payload
/// of signed/manifest.json to serial 2^64-2, signatures as they were.
fn forged_pull_request() -> (Fleet, String) {
    let (f, www) = on_main();
    pull_request(&f);
    f.edit_signed_payload(|m| m["serial"] = FORGED.into());
    f.commit("the pull request");
    (f, www)
}

#[test]
fn forged_serial_is_refused_by_the_pull_request_check() {
    let (f, _) = forged_pull_request();
    // The sources alone are fine: the old check passed.
    f.ok(&["verify", "--sources"]);
    // Against its base, the edit under signed/ is named.
    let e = f.fails(&["verify", "--sources", "--base"]);
    assert!(
        e.contains("signed/manifest.json: this change changes it, but it does not verify")
            && e.contains("git checkout"),
        "{e}"
    );
    let e = f.fails(&["verify", "--sources", "--base", "main"]);
    assert!(e.contains("signed/manifest.json"), "{e}");
}

#[test]
fn forged_serial_is_never_signed_after_the_merge() {
    let (f, www) = forged_pull_request();
    merge(&f);
    // CI after the merge: the forged bytes never set the serial. Without
    // another verified copy, sign refuses …
    let e = f.fails(&["sign", "--key", &f.key("release"), "--if-needed"]);
    assert!(
        e.contains("signed/manifest.json: does not verify") && e.contains("--store"),
        "{e}"
    );
    assert_eq!(f.serial(), FORGED, "nothing was signed");
    // … and with the store's published copy it continues from serial 1.
    f.ok(&[
        "sign",
        "--key",
        &f.key("release"),
        "--if-needed",
        "--store",
        &www,
    ]);
    assert_eq!(f.serial(), 2);
    f.ok(&["verify"]);
    f.ok(&["publish", "--store", &www]);
}

#[test]
fn forged_serial_that_verifies_only_by_payload_is_not_up_to_date() {
    // No source change at all: the PR edits only the serial. `--if-needed`
    // used to call that "up to date" (no drift); it does not verify.
    let (f, www) = on_main();
    git(&f.repo, &["checkout", "-q", "-b", "pr"]);
    f.edit_signed_payload(|m| m["serial"] = FORGED.into());
    merge(&f);
    f.ok(&[
        "sign",
        "--key",
        &f.key("release"),
        "--if-needed",
        "--store",
        &www,
    ]);
    assert_eq!(f.serial(), 2);
}

#[test]
fn co_signers_refuse_a_serial_jump() {
    let f = Fleet::rooted(&["alice", "bob"], 2);
    f.add_release("1.0.0", b"one");
    f.rollout_stable("1.0.0");
    f.ok(&["sign", "--key", &f.key("alice")]);
    f.ok(&["sign", "--append", "--key", &f.key("bob")]);
    f.commit("serial 1, signed by both");
    pull_request(&f);

    // The honest flow: both sign in the pull request; the check passes once
    // the threshold is met, and says what is missing before.
    f.ok(&["sign", "--key", &f.key("alice")]);
    assert_eq!(f.serial(), 2);
    let e = f.fails(&["verify", "--sources", "--base"]);
    assert!(
        e.contains("signed/manifest.json") && e.contains("1 of 2"),
        "{e}"
    );
    f.ok(&["sign", "--append", "--key", &f.key("bob")]);
    f.ok(&["verify", "--sources", "--base"]);
    f.ok(&["verify", "--base"]);

    // One signer (or anyone) sets a huge serial on an envelope to co-sign:
    // the payload is what the sources compile to, serial aside.
    f.ok(&["sign", "--key", &f.key("alice")]);
    f.edit_signed_payload(|m| m["serial"] = FORGED.into());
    let e = f.fails(&["sign", "--append", "--key", &f.key("bob")]);
    assert!(
        e.contains(&format!("serial {FORGED} would jump more than 1000"))
            && e.contains("--allow-serial-jump"),
        "{e}"
    );
    let env: serde_json::Value = serde_json::from_str(&f.read("signed/manifest.json")).unwrap();
    assert_eq!(
        env["signatures"].as_array().unwrap().len(),
        1,
        "bob did not co-sign"
    );
}

/// The attack: a pull request with a real change replaces root 1 with the
/// attacker's own (their root key, listing CI's release key).
fn replaced_root_pull_request() -> (Fleet, String) {
    let (f, www) = on_main();
    let a = Fleet::init();
    a.keygen("evil-root");
    a.ok(&[
        "root",
        "init",
        "--root-key",
        &a.pubkey("evil-root"),
        "--release-key",
        &f.pubkey("release"),
    ]);
    a.ok(&["root", "sign", "--key", &a.key("evil-root")]);
    pull_request(&f);
    f.write("root/1.root.json", &a.read("root/1.root.json"));
    (f, www)
}

#[test]
fn replaced_root_is_refused_by_the_pull_request_check() {
    let (f, _) = replaced_root_pull_request();
    f.ok(&["verify", "--sources"]);
    let e = f.fails(&["verify", "--sources", "--base"]);
    assert!(
        e.contains("root/1.root.json: this change changes it") && e.contains("append-only"),
        "{e}"
    );
}

#[test]
fn replaced_root_is_never_published() {
    let (f, www) = replaced_root_pull_request();
    let published_root = std::fs::read(f.tmp.path().join("www/root/1.root.json")).unwrap();
    merge(&f);
    // CI signs (the release key is listed in both roots) and verifies, but
    // publish sees the rewrite of what hosts trust, and so does sign when
    // it reads the store.
    f.ok(&["sign", "--key", &f.key("release"), "--if-needed"]);
    f.ok(&["verify"]);
    let e = f.fails(&["publish", "--store", &www]);
    assert!(
        e.contains("root/1.root.json: this checkout changes it")
            && e.contains("refusing to publish"),
        "{e}"
    );
    let e = f.fails(&["sign", "--key", &f.key("release"), "--store", &www]);
    assert!(e.contains("root/1.root.json"), "{e}");
    assert_eq!(
        std::fs::read(f.tmp.path().join("www/root/1.root.json")).unwrap(),
        published_root,
        "the published root 1 is untouched"
    );
}

#[test]
fn new_root_that_does_not_chain_is_refused() {
    let (f, _) = on_main();
    pull_request(&f);
    // Root 2 signed by a new key only, not by root 1's root key.
    f.keygen("evil-root");
    f.ok(&["root", "rotate", "--root-key", &f.pubkey("evil-root")]);
    f.ok(&["root", "sign", "--key", &f.key("evil-root")]);
    f.ok(&["verify", "--sources"]);
    let e = f.fails(&["verify", "--sources", "--base"]);
    assert!(
        e.contains(
            "root/2.root.json: this change adds it, but it does not chain from root/1.root.json"
        ),
        "{e}"
    );
    // Deleting a root is refused too.
    std::fs::remove_file(f.path("root/2.root.json")).unwrap();
    std::fs::rename(f.path("root/1.root.json"), f.tmp.path().join("r1")).unwrap();
    let e = f.fails(&["verify", "--sources", "--base"]);
    assert!(
        e.contains("root/1.root.json: this change removes it"),
        "{e}"
    );
    std::fs::rename(f.tmp.path().join("r1"), f.path("root/1.root.json")).unwrap();
    f.ok(&["verify", "--sources", "--base"]);
}

#[test]
fn a_root_that_never_verified_may_still_be_signed() {
    // A rotation merged before it was signed: root 2 was never trusted, so
    // the pull request that signs it changes no trusted root.
    let (f, _) = on_main();
    f.keygen("root2");
    f.ok(&["root", "rotate", "--root-key", &f.pubkey("root2")]);
    f.commit("root 2, to be signed");
    git(&f.repo, &["checkout", "-q", "-b", "pr"]);
    f.ok(&["root", "sign", "--key", &f.key("root")]);
    f.ok(&["root", "sign", "--key", &f.key("root2")]);
    f.ok(&["verify", "--sources", "--base"]);
    // Root 1 is still fixed.
    let text = f.read("root/1.root.json");
    f.write("root/1.root.json", &format!("{text}\n"));
    let e = f.fails(&["verify", "--sources", "--base"]);
    assert!(
        e.contains("root/1.root.json: this change changes it"),
        "{e}"
    );
}

#[test]
fn publish_never_replaces_a_newer_or_unverified_manifest() {
    let (f, www) = on_main();
    f.ok(&["sign", "--key", &f.key("release")]);
    f.ok(&["publish", "--store", &www]);
    let serial2 = std::fs::read(f.tmp.path().join("www/manifest.json")).unwrap();
    // A checkout at serial 1 (the commit on main) is stale.
    git(&f.repo, &["checkout", "-q", "--", "signed/manifest.json"]);
    assert_eq!(f.serial(), 1);
    let e = f.fails(&["publish", "--store", &www]);
    assert!(e.contains("newer than signed/manifest.json's 1"), "{e}");
    // A store whose root 2 this checkout does not have is not rewound.
    f.write(
        "signed/manifest.json",
        std::str::from_utf8(&serial2).unwrap(),
    );
    f.keygen("root2");
    f.ok(&["root", "rotate", "--root-key", &f.pubkey("root2")]);
    f.ok(&["root", "sign", "--key", &f.key("root")]);
    f.ok(&["root", "sign", "--key", &f.key("root2")]);
    std::fs::rename(
        f.path("root/2.root.json"),
        f.tmp.path().join("www/root/2.root.json"),
    )
    .unwrap();
    let e = f.fails(&["publish", "--store", &www]);
    assert!(
        e.contains("root/2.root.json: this checkout removes it"),
        "{e}"
    );
    assert_eq!(
        std::fs::read(f.tmp.path().join("www/manifest.json")).unwrap(),
        serial2
    );
}
