//! The admin subcommands on a database (`init`, `token create|list|revoke`,
//! `agent revoke`), and what every command does with bad input: a missing
//! database, a token file others may read, an error on a pipe.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::{both, run_cli as run, Backend};

both!(
    #[tokio::test];
    token_subcommands_print_once_list_real_states_and_revoke,
);

async fn token_subcommands_print_once_list_real_states_and_revoke(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let db = backend.fresh(dir.path());
    // `ARGS --db ...`
    let run = |args: &[&str]| {
        let mut all: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        all.extend(db.args().iter().map(|a| a.to_str().unwrap().to_owned()));
        run(&all.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let (ok, _, err) = run(&["init"]);
    assert!(ok, "{err}");
    let (ok, token, err) = run(&[
        "token",
        "create",
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
    let (ok, short, _) = run(&["token", "create", "--expires", "1s"]);
    assert!(ok);
    assert!(!short.trim().is_empty());

    // expire the second one, revoke a third
    db.execute("UPDATE enrollment_tokens SET expires_at = 1 WHERE note = ''")
        .await;
    let (_, _, _) = run(&["token", "create", "--note", "to revoke"]);
    let id = &db
        .rows("SELECT id FROM enrollment_tokens WHERE note = 'to revoke'")
        .await[0][0];
    let (ok, _, err) = run(&["token", "revoke", id]);
    assert!(ok, "{err}");
    let (ok, _, err) = run(&["token", "revoke", "nope"]);
    assert!(!ok);
    assert!(err.contains("no token nope"), "{err}");

    let (ok, list, _) = run(&["token", "list"]);
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

    let (ok, _, err) = run(&["agent", "revoke", "ghost"]);
    assert!(!ok);
    assert!(err.contains("no agent ghost"), "{err}");
}

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// Issue 13: `token create --db ./db.sqlit` (a typo) made a new database
/// and printed a token the real reporter rejects; `token list` without
/// `--db` made ./flotilla-reporter.db.
#[test]
fn commands_other_than_serve_and_init_open_only_an_existing_database() {
    let dir = tempfile::tempdir().unwrap();
    let typo = dir.path().join("db.sqlit");
    let typo_s = typo.to_str().unwrap();
    for args in [
        &["token", "create", "--db", typo_s][..],
        &["token", "revoke", "--db", typo_s, "abc"],
        &["agent", "revoke", "--db", typo_s, "web-1"],
        &["backup", "--db", typo_s, "--to", "copy.sqlite"],
    ] {
        let (ok, out, err) = common::run_cli_in(dir.path(), args);
        assert!(!ok, "{args:?} succeeded: {out}");
        assert!(out.is_empty(), "{args:?} printed {out:?}");
        assert!(
            err.contains(&format!("database {typo_s} does not exist")) && err.contains("init --db"),
            "{args:?}: {err}"
        );
        assert!(!typo.exists(), "{args:?} created {typo_s}");
    }
    let (ok, _, err) = common::run_cli_in(dir.path(), &["token", "list"]);
    assert!(!ok);
    assert!(
        err.contains("database flotilla-reporter.db does not exist"),
        "{err}"
    );
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert!(left.is_empty(), "files were created: {left:?}");
}

/// New database files, and the WAL and shared-memory files SQLite makes
/// beside them, are 0600 whatever the umask (SQLite's own default is 0644).
#[test]
fn new_database_files_are_private() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("init.db");
    let (ok, _, err) = run(&["init", "--db", db.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert_eq!(mode(&db), 0o600);

    let b = common::Binary::start("");
    let token = b.token(&[]);
    assert!(token.starts_with("flotilla-enroll-"), "{token}");
    for suffix in ["", "-wal", "-shm"] {
        let f = std::path::PathBuf::from(format!("{}{suffix}", b.db.path().display()));
        assert_eq!(mode(&f), 0o600, "{}", f.display());
    }
}

/// Issue 13: `serve` took an admin token file anyone on the host could read.
#[test]
fn serve_refuses_an_admin_token_file_others_may_read() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("admin.token");
    common::write_admin_token(&token);
    let db = dir.path().join("r.db");
    for loose in [0o644, 0o640, 0o604] {
        std::fs::set_permissions(&token, std::fs::Permissions::from_mode(loose)).unwrap();
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_flotilla-reporter"))
            .args(["serve", "--listen", "127.0.0.1:0", "--db"])
            .arg(&db)
            .arg("--admin-token-file")
            .arg(&token)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // A server that starts says so on its first line: stop it then.
        let mut first = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().unwrap()),
            &mut first,
        )
        .unwrap();
        if !first.is_empty() {
            let _ = child.kill();
        }
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(first.is_empty(), "mode {loose:o}: it served: {first}");
        assert!(!out.status.success());
        let t = token.display();
        assert!(
            err.contains(&format!("{t}: the admin token file has mode 0{loose:o}"))
                && err.contains(&format!("run `chmod 600 {t}`")),
            "mode {loose:o}: {err}"
        );
    }
}

/// Issue 13: under systemd, stderr (journald) showed colour codes, and one
/// error said "unable to open database file" four times.
#[test]
fn errors_on_a_pipe_are_one_line_without_colour_each_cause_once() {
    let dir = tempfile::tempdir().unwrap();
    // A directory where the database should be: SQLite cannot open it.
    let db = dir.path().join("not-a-file");
    std::fs::create_dir(&db).unwrap();
    let db = db.to_str().unwrap();
    for args in [
        &["serve", "--listen", "127.0.0.1:0", "--db", db][..],
        &["token", "list", "--db", db],
    ] {
        let (ok, _, err) = run(args);
        assert!(!ok, "{args:?}");
        assert!(!err.contains('\x1b'), "{args:?}: colour codes in {err:?}");
        let last = err.lines().last().unwrap_or_default();
        assert_eq!(
            last,
            format!("flotilla-reporter: database {db}: unable to open database file"),
            "{args:?}: {err}"
        );
        let lower = err.to_lowercase();
        assert_eq!(lower.matches("unable to open").count(), 1, "{err}");
    }
    // `serve` logged a warning first (no --admin-token-file): plain too.
    let (_, _, err) = run(&["serve", "--listen", "127.0.0.1:0", "--db", db]);
    assert!(err.contains("WARN"), "{err}");
}

/// A config file's TOML error keeps the parser's snippet on its lines
/// (the only error that takes more than one).
#[test]
fn a_config_error_shows_the_parsers_snippet() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("reporter.toml");
    std::fs::write(&cfg, "retain_days = 30\nlisten = 3\n").unwrap();
    let (ok, _, err) = run(&["serve", "--config", cfg.to_str().unwrap()]);
    assert!(!ok);
    assert!(
        err.contains(&format!(
            "flotilla-reporter: {}: TOML parse error",
            cfg.display()
        )),
        "{err}"
    );
    let lines: Vec<&str> = err.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.trim_start().starts_with("2 | listen = 3"))
        .unwrap_or_else(|| panic!("no snippet line: {err}"));
    assert!(lines[at + 1].trim_end().ends_with('^'), "{err}");
}

/// Issue 14: `--db` takes a PostgreSQL URL; its password comes from a file
/// others may not read, never the command line; a database that cannot be
/// reached is an error naming it (never the password), and no SQLite file
/// named like the URL is made.
#[test]
fn serve_takes_a_postgres_url_with_a_private_password_file() {
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("db.password");
    std::fs::write(&pw, "s3cret\n").unwrap();
    let url = "postgres://flotilla@127.0.0.1:1/flotilla";
    let serve = |mode: u32| {
        std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(mode)).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_flotilla-reporter"))
            .current_dir(dir.path())
            .args(["serve", "--listen", "127.0.0.1:0", "--db", url])
            .arg("--db-password-file")
            .arg(&pw)
            .output()
            .unwrap();
        assert!(!out.status.success());
        String::from_utf8(out.stderr).unwrap()
    };
    let err = serve(0o644);
    assert!(
        err.contains(&format!(
            "{}: the database password file has mode 0644",
            pw.display()
        )),
        "{err}"
    );
    let err = serve(0o600);
    assert!(
        err.contains(&format!("database {url}: no database connection")),
        "{err}"
    );
    assert!(err.contains("Connection refused"), "{err}");
    assert!(!err.contains("s3cret"), "{err}");
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        1,
        "no SQLite file was made for the URL"
    );
    let (ok, help, _) = common::run_cli(&["serve", "--help"]);
    assert!(ok);
    assert!(help.contains("postgres://"), "{help}");
}
