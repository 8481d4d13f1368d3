//! Release threshold 2 of 3 keys: one signature fails `verify`, two pass,
//! and the same key twice still counts once.

mod common;
use common::*;

#[test]
fn release_threshold_two_of_three_counts_distinct_keys() {
    let f = Fleet::rooted(&["r1", "r2", "r3"], 2);
    f.add_release("1.0.0", b"one");
    f.rollout_stable("1.0.0");

    let said = f.ok(&["sign", "--key", &f.key("r1")]);
    assert!(said.contains("1 of 2"), "{said}");
    let e = f.fails(&["verify"]);
    assert!(
        e.contains("signed/manifest.json") && e.contains("threshold not met: 1 of 2"),
        "{e}"
    );

    // The same key twice: the CLI refuses, and a hand-made duplicate does not count.
    let e = f.fails(&["sign", "--append", "--key", &f.key("r1")]);
    assert!(e.contains("already signed"), "{e}");
    let mut env: serde_json::Value = serde_json::from_str(&f.read("signed/manifest.json")).unwrap();
    let first = env["signatures"][0].clone();
    env["signatures"].as_array_mut().unwrap().push(first);
    f.write(
        "signed/manifest.json",
        &serde_json::to_string_pretty(&env).unwrap(),
    );
    let e = f.fails(&["verify"]);
    assert!(e.contains("1 of 2") && e.contains("duplicate"), "{e}");

    // Two distinct keys pass.
    f.ok(&["sign", "--key", &f.key("r1")]);
    let said = f.ok(&["sign", "--append", "--key", &f.key("r3")]);
    assert!(said.contains("threshold 2 met"), "{said}");
    f.ok(&["verify"]);
}

#[test]
fn key_outside_the_release_role_cannot_sign() {
    let f = Fleet::ready();
    f.keygen("stranger");
    let e = f.fails(&["sign", "--key", &f.key("stranger")]);
    assert!(e.contains("not a release key of root v1"), "{e}");
    // A root key is not a release key either.
    let e = f.fails(&["sign", "--key", &f.key("root")]);
    assert!(e.contains("not a release key"), "{e}");
}
