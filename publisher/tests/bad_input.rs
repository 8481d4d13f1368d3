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

/// Issue 13: a `.pub.pem` given to `sign` was first refused for its mode
/// (0644 is right for a public key), then as "unexpected PEM type label".
#[test]
fn signing_with_a_public_key_says_it_is_one() {
    let f = Fleet::ready();
    let e = f.fails(&["sign", "--key", &f.pubkey("release")]);
    assert!(
        e.contains(&format!("{}: ", f.pubkey("release")))
            && e.contains("it is a public key; sign with the private key")
            && e.contains(&f.key("release")),
        "{e}"
    );
    assert!(!e.contains("chmod") && !e.contains("PEM type"), "{e}");
}

/// Issue 13: `--reporter 127.0.0.1:9` said "relative URL without a base".
#[test]
fn a_reporter_address_without_a_scheme_asks_for_http_or_https() {
    let f = Fleet::ready();
    let token = f.tmp.path().join("admin.token");
    std::fs::write(&token, "admin-token-0123456789abcdef").unwrap();
    chmod(&token, 0o600);
    let token = token.to_str().unwrap();
    for cmd in ["status", "plan"] {
        let e = f.fails(&[cmd, "--reporter", "127.0.0.1:9", "--token-file", token]);
        assert!(
            e.contains("127.0.0.1:9")
                && e.contains("give http:// or https://, e.g. http://127.0.0.1:9"),
            "{cmd}: {e}"
        );
        assert!(!e.contains("relative URL"), "{cmd}: {e}");
    }
}

/// Issue 13: TOML errors were flattened onto one line, so the parser's
/// caret pointed nowhere.
#[test]
fn toml_errors_keep_the_parsers_snippet_on_its_lines() {
    let f = Fleet::ready();
    f.write("channels/stable.toml", "release = \"1.0.0\"\nwaves = [\n");
    let e = f.fails(&["verify", "--sources"]);
    assert!(e.contains("channels/stable.toml"), "{e}");
    let lines: Vec<&str> = e.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.trim_start().starts_with("2 | waves = ["))
        .unwrap_or_else(|| panic!("no snippet line: {e}"));
    assert!(lines[at + 1].trim_end().ends_with('^'), "{e}");
}

fn help(f: &Fleet, args: &[&str]) -> String {
    let out = f.cmd(args);
    assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    String::from_utf8(out.stdout).unwrap()
}

/// Issue 13: `rollout pause --help` and `resume --help` both said "Name a
/// channel"; `pin list` had no description.
#[test]
fn each_subcommand_describes_itself() {
    let f = Fleet::init();
    let pause = help(&f, &["rollout", "pause", "--help"]);
    let resume = help(&f, &["rollout", "resume", "--help"]);
    assert!(pause.starts_with("Pause a channel"), "{pause}");
    assert!(resume.starts_with("Resume a paused channel"), "{resume}");
    let rollout = help(&f, &["rollout", "--help"]);
    let pin = help(&f, &["pin", "--help"]);
    for (text, line) in [
        (&rollout, "pause   Pause a channel"),
        (&rollout, "resume  Resume a paused channel"),
        (&pin, "list    List the pins of pins.toml"),
    ] {
        assert!(text.lines().any(|l| l.trim().starts_with(line)), "{text}");
    }
    assert!(!(pause + &resume).contains("Name a channel"));
}

/// Issue 13: the README said the default waves were "a day apart"; they
/// are what `rollout set` writes without --waves.
#[test]
fn the_readme_states_the_default_waves_of_the_code() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let text = readme.split_whitespace().collect::<Vec<_>>().join(" ");
    let waves = flotilla_protocol::sources::standard_waves();
    let said: Vec<String> = waves
        .iter()
        .map(|w| format!("{} {}%", w.name, w.percent))
        .collect();
    let expected = format!(
        "default: {} at once, {} after a day, {} after three days",
        said[0], said[1], said[2]
    );
    assert!(text.contains(&expected), "README lacks {expected:?}");
    let days: Vec<u64> = waves.iter().map(|w| w.after.0.as_secs() / 86_400).collect();
    assert_eq!(
        days,
        [0, 1, 3],
        "update the README's words for the new times"
    );
}
