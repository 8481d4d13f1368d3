//! The admin subcommands on a database: `token create|list|revoke`, `agent revoke`.

use std::process::Command;

fn run(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_flotilla-reporter"))
        .args(args)
        .env("FLOTILLA_LOG", "warn")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn token_subcommands_print_once_list_real_states_and_revoke() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("r.db");
    let db = db.to_str().unwrap();
    let (ok, token, err) = run(&[
        "token",
        "create",
        "--db",
        db,
        "--expires",
        "7d",
        "--uses",
        "3",
        "--note",
        "rack 4",
    ]);
    assert!(ok, "{err}");
    let token = token.trim();
    assert!(
        token.starts_with("flotilla-enroll-"),
        "stdout is the token only: {token:?}"
    );
    assert!(err.contains("shown only now"));
    let (ok, short, _) = run(&["token", "create", "--db", db, "--expires", "1s"]);
    assert!(ok);
    assert!(!short.trim().is_empty());

    // expire the second one, revoke a third
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.execute(
        "UPDATE enrollment_tokens SET expires_at = 1 WHERE note = ''",
        [],
    )
    .unwrap();
    let (_, _, _) = run(&["token", "create", "--db", db, "--note", "to revoke"]);
    let id: String = conn
        .query_row(
            "SELECT id FROM enrollment_tokens WHERE note = 'to revoke'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let (ok, _, err) = run(&["token", "revoke", "--db", db, &id]);
    assert!(ok, "{err}");
    let (ok, _, err) = run(&["token", "revoke", "--db", db, "nope"]);
    assert!(!ok);
    assert!(err.contains("no token nope"), "{err}");

    let (ok, list, _) = run(&["token", "list", "--db", db]);
    assert!(ok);
    let line = |note: &str| {
        list.lines()
            .find(|l| l.ends_with(note))
            .unwrap_or_else(|| panic!("{list}"))
            .to_owned()
    };
    assert!(line("rack 4").contains("active"), "{list}");
    assert!(line("rack 4").contains("0/3"), "{list}");
    assert!(line("to revoke").contains("revoked"), "{list}");
    assert!(list.contains("expired"), "{list}");
    assert!(!list.contains(token), "the secret is never shown again");

    let (ok, _, err) = run(&["agent", "revoke", "--db", db, "ghost"]);
    assert!(!ok);
    assert!(err.contains("no agent ghost"), "{err}");
}
