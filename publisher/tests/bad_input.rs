//! Bad input gets a clear error naming the file: a typo field, wave percents
//! that do not end at 100, an artifact path with `..`, a corrupted
//! signed/manifest.json, a private key file others can read.

mod common;
use common::*;

#[test]
fn typo_field_in_channel_names_file_and_field() {
    let f = Fleet::ready();
    let text = f
        .read("channels/stable.toml")
        .replace("spread = \"1h\"", "sprad = \"1h\"");
    f.write("channels/stable.toml", &text);
    let e = f.fails(&["verify", "--sources"]);
    assert!(
        e.contains("channels/stable.toml") && e.contains("sprad"),
        "{e}"
    );
    assert!(e.contains("unknown field"), "{e}");
    let e = f.fails(&["sign", "--key", &f.key("release")]);
    assert!(
        e.contains("channels/stable.toml") && e.contains("sprad"),
        "{e}"
    );
}

#[test]
fn wave_percents_not_ending_at_100_name_the_file() {
    let f = Fleet::ready();
    let text = f
        .read("channels/stable.toml")
        .replace("percent = 100", "percent = 90");
    f.write("channels/stable.toml", &text);
    let e = f.fails(&["verify", "--sources"]);
    assert!(
        e.contains("channels/stable.toml: waves[2].percent: the last wave must reach 100"),
        "{e}"
    );
    // The same mistake on the command line is refused, and nothing is written.
    let before = f.read("channels/stable.toml");
    let e = f.fails(&[
        "rollout",
        "set",
        "--channel",
        "beta",
        "--release",
        "1.0.0",
        "--waves",
        "a=5%@0s/1h,b=50%@1d/1h",
    ]);
    assert!(
        e.contains("channels/beta.toml") && e.contains("must reach 100"),
        "{e}"
    );
    assert!(!f.path("channels/beta.toml").exists());
    assert_eq!(f.read("channels/stable.toml"), before);
}

#[test]
fn artifact_path_with_dotdot_is_rejected() {
    let f = Fleet::ready();
    let text = f.read("releases/1.0.0.toml").replace(
        "flotilla-agent/1.0.0/x86_64-unknown-linux-gnu/flotilla-agent",
        "../../etc/flotilla-agent",
    );
    f.write("releases/1.0.0.toml", &text);
    let e = f.fails(&["verify", "--sources"]);
    assert!(
        e.contains("releases/1.0.0.toml: artifacts.x86_64-unknown-linux-gnu.path")
            && e.contains("\"..\""),
        "{e}"
    );
    // `release add --path` refuses it before uploading anything.
    let file = f.tmp.path().join("bin");
    std::fs::write(&file, b"x").unwrap();
    let e = f.fails(&[
        "release",
        "add",
        "--version",
        "2.0.0",
        "--target",
        TARGET,
        "--file",
        file.to_str().unwrap(),
        "--store",
        &f.store_url(),
        "--path",
        "a/../../b",
    ]);
    assert!(e.contains("--path") && e.contains(".."), "{e}");
    assert!(!f.path("releases/2.0.0.toml").exists());
}

#[test]
fn corrupted_signed_manifest_names_the_file() {
    let f = Fleet::ready();
    f.ok(&["sign", "--key", &f.key("release")]);
    let text = f.read("signed/manifest.json");
    f.write("signed/manifest.json", &text[..text.len() / 2]);
    let e = f.fails(&["verify"]);
    assert!(
        e.contains("signed/manifest.json: malformed DSSE envelope"),
        "{e}"
    );
    let e = f.fails(&["sign", "--key", &f.key("release")]);
    assert!(e.contains("signed/manifest.json"), "{e}");
    // A valid envelope whose payload was edited: the signature no longer verifies.
    f.write("signed/manifest.json", &text);
    let mut env: serde_json::Value = serde_json::from_str(&text).unwrap();
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let payload = String::from_utf8(b64.decode(env["payload"].as_str().unwrap()).unwrap()).unwrap();
    env["payload"] = b64
        .encode(
            payload
                .replace("\"paused\"", "\"pause\"")
                .replace("test-fleet", "evil-fleet"),
        )
        .into();
    f.write(
        "signed/manifest.json",
        &serde_json::to_string(&env).unwrap(),
    );
    let e = f.fails(&["verify"]);
    assert!(
        e.contains("signed/manifest.json") && e.contains("invalid signature"),
        "{e}"
    );
}

#[test]
fn private_key_with_loose_permissions_names_the_file() {
    let f = Fleet::ready();
    chmod(std::path::Path::new(&f.key("release")), 0o644);
    let e = f.fails(&["sign", "--key", &f.key("release")]);
    assert!(e.contains("release.pem") && e.contains("chmod 600"), "{e}");
    chmod(std::path::Path::new(&f.key("root")), 0o640);
    let e = f.fails(&["root", "sign", "--key", &f.key("root")]);
    assert!(
        e.contains("root.pem") && e.contains("readable by others"),
        "{e}"
    );
    // A file that is not a key at all is named too.
    let junk = f.tmp.path().join("keys/junk.pem");
    std::fs::write(&junk, "not a key\n").unwrap();
    chmod(&junk, 0o600);
    let e = f.fails(&["sign", "--key", junk.to_str().unwrap()]);
    assert!(e.contains("junk.pem"), "{e}");
}
