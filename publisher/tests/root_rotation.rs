//! Root rotation 1 -> 2 -> 3 verifies; a root 2 signed only by the new keys
//! is rejected; an expired root is rejected.

mod common;
use common::*;

#[test]
fn root_rotation_one_two_three_verifies() {
    let f = Fleet::ready();
    f.ok(&["sign", "--key", &f.key("release")]);
    f.ok(&["verify"]);

    // 1 -> 2: new root key and new release key.
    f.keygen("root2");
    f.keygen("release2");
    f.ok(&[
        "root",
        "rotate",
        "--root-key",
        &f.pubkey("root2"),
        "--release-key",
        &f.pubkey("release2"),
    ]);
    let e = f.fails(&["verify"]);
    assert!(
        e.contains("root/2.root.json") && e.contains("threshold not met"),
        "{e}"
    );
    // A key of neither root 2 nor root 1 cannot sign root 2.
    let e = f.fails(&["root", "sign", "--key", &f.key("release2")]);
    assert!(e.contains("not a root key of root v2 or v1"), "{e}");
    f.ok(&["root", "sign", "--key", &f.key("root2")]);
    let said = f.ok(&["root", "sign", "--key", &f.key("root")]);
    assert!(
        said.contains("the previous root's root keys: threshold 1 met"),
        "{said}"
    );
    // Root 2 verifies; the manifest was signed by the old release key, which
    // root 2 no longer trusts.
    let e = f.fails(&["verify"]);
    assert!(
        e.contains("signed/manifest.json") && e.contains("release (root v2)"),
        "{e}"
    );
    let e = f.fails(&["sign", "--key", &f.key("release")]);
    assert!(e.contains("not a release key of root v2"), "{e}");
    f.ok(&["sign", "--key", &f.key("release2")]);
    f.ok(&["verify"]);

    // 2 -> 3: only the root key changes; release keys are kept.
    f.keygen("root3");
    f.ok(&["root", "rotate", "--root-key", &f.pubkey("root3")]);
    f.ok(&["root", "sign", "--key", &f.key("root2")]);
    f.ok(&["root", "sign", "--key", &f.key("root3")]);
    f.ok(&["verify"]);
    f.ok(&["sign", "--key", &f.key("release2")]);
    f.ok(&["verify"]);
    assert!(f.path("root/3.root.json").exists());
}

#[test]
fn root_signed_only_by_new_keys_is_rejected() {
    let f = Fleet::ready();
    f.ok(&["sign", "--key", &f.key("release")]);
    f.keygen("root2");
    f.ok(&["root", "rotate", "--root-key", &f.pubkey("root2")]);
    f.ok(&["root", "sign", "--key", &f.key("root2")]);
    let e = f.fails(&["verify"]);
    assert!(
        e.contains(
            "root/2.root.json: root v2 signed by trusted root v1 role threshold not met: 0 of 1"
        ),
        "{e}"
    );
    // And the next rotation is refused until root 2 verifies.
    let e = f.fails(&["root", "rotate", "--expires", "30d"]);
    assert!(
        e.contains("root v2 must verify before it can be rotated"),
        "{e}"
    );
    // Only the old key: also rejected (needs the new root's own keys too).
    let f2 = Fleet::ready();
    f2.keygen("root2");
    f2.ok(&["root", "rotate", "--root-key", &f2.pubkey("root2")]);
    f2.ok(&["root", "sign", "--key", &f2.key("root")]);
    let e = f2.fails(&["verify", "--now", "2026-06-01T00:00:00Z"]);
    assert!(
        e.contains("root/2.root.json: root v2 signed by its own root keys"),
        "{e}"
    );
}

#[test]
fn expired_root_is_rejected() {
    let f = Fleet::ready();
    f.ok(&["sign", "--key", &f.key("release"), "--expires", "3000d"]);
    f.ok(&["verify"]);
    // Root 1 lives 365 days by default; three years later it has expired.
    let later = (chrono::Utc::now() + chrono::Duration::days(3 * 365)).to_rfc3339();
    let e = f.fails(&["verify", "--now", &later]);
    assert!(
        e.contains("root/1.root.json: root version 1 expired at"),
        "{e}"
    );
    let e = f.fails(&["sign", "--key", &f.key("release"), "--now", &later]);
    assert!(e.contains("root version 1 expired"), "{e}");
    // A root rotated with a short expiry expires too.
    f.keygen("root2");
    f.ok(&[
        "root",
        "rotate",
        "--root-key",
        &f.pubkey("root2"),
        "--expires",
        "1d",
    ]);
    f.ok(&["root", "sign", "--key", &f.key("root")]);
    f.ok(&["root", "sign", "--key", &f.key("root2")]);
    f.ok(&["verify"]);
    let in_two_days = (chrono::Utc::now() + chrono::Duration::days(2)).to_rfc3339();
    let e = f.fails(&["verify", "--now", &in_two_days]);
    assert!(
        e.contains("root/2.root.json: root version 2 expired"),
        "{e}"
    );
}
