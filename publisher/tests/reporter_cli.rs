//! `status` and `plan` against a real reporter (in-process, on
//! 127.0.0.1:0, its database in a temp dir): agents enrolled and events
//! posted through the reporter's HTTP API, then the real
//! `flotilla-publisher` binary run and its output read.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use chrono::{DateTime, Utc};
use common::reporter::Reporter;
use common::{bin, git, stderr, Fleet};
use flotilla_protocol::api::RolloutList;
use flotilla_protocol::wave;
use flotilla_protocol::{Event, EventKind, EventStatus, Sources};

/// An update event about release 2.0.0 on channel stable, with the
/// channel's thresholds as the agent copies them from the manifest.
fn update(agent: &str, kind: EventKind, status: EventStatus, wave: &str) -> Event {
    let mut e = Event::new(agent, kind, status, "update", format!("{kind} {status}"));
    e.channel = Some("stable".into());
    e.wave = Some(wave.into());
    e.from_version = Some("1.0.0".into());
    e.to_version = Some("2.0.0".into());
    if kind == EventKind::UpdateRollback {
        e.from_version = Some("2.0.0".into());
        e.to_version = Some("1.0.0".into());
    }
    e.details.insert("max_failure_rate".into(), 0.3.into());
    e.details.insert("min_reports".into(), 2.into());
    e.details
        .insert("waves".into(), serde_json::json!(["canary", "all"]));
    e
}

/// Runs the publisher with `args` (and `env`), in `dir`.
fn publisher(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(bin());
    c.current_dir(dir)
        .args(args)
        .env_remove("FLOTILLA_REPORTER_TOKEN");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn ok(out: Output) -> String {
    assert!(out.status.success(), "failed:\n{}", stderr(&out));
    stdout(&out)
}

/// The counts of a wave's row of the status table (agents, on release,
/// installing, failed, rolled back, waiting, not reporting).
fn row(table: &str, wave: &str) -> Vec<u64> {
    let line = table
        .lines()
        .find(|l| l.split_whitespace().next() == Some(wave))
        .unwrap_or_else(|| panic!("no row {wave} in:\n{table}"));
    line.split_whitespace()
        .skip(1)
        .take(7)
        .map(|n| n.parse().unwrap())
        .collect()
}

/// Five agents of a 2.0.0 rollout on stable: one healthy and one failed
/// install in the canary, one rolled back, one installing and one deferred
/// in wave `all`, one enrolled but never heard from.
fn rollout_with_failures(r: &Reporter) {
    use EventKind::*;
    use EventStatus::*;
    let mut healthy = update("a1", UpdateHealthcheck, Success, "canary");
    healthy
        .details
        .insert("agent_version".into(), "2.0.0".into());
    let plan = [
        ("a1", healthy),
        ("a2", update("a2", UpdateInstall, Failed, "canary")),
        ("a3", update("a3", UpdateRollback, Success, "all")),
        ("a4", update("a4", UpdateDownload, Success, "all")),
        ("a5", update("a5", UpdateDeferred, Info, "all")),
    ];
    for (id, e) in plan {
        let t = r.enroll(id, "stable", "1.0.0", &[("role", "web")]);
        r.post(&t, vec![e]);
    }
    r.enroll("a6", "stable", "1.0.0", &[("role", "web")]);
}

/// Whether the silent agent a6 falls in stable's canary or in wave all, as
/// (canary, all) counts of 0 or 1.
fn a6_in() -> (u64, u64) {
    let b = wave::bucket("stable", "2.0.0", "a6");
    let s = wave::slot(
        &common::reporter::stable_waves(),
        common::reporter::START.parse().unwrap(),
        b,
    )
    .unwrap();
    if s.index == 0 {
        (1, 0)
    } else {
        (0, 1)
    }
}

#[test]
fn status_shows_each_wave_and_the_closed_gate() {
    let r = Reporter::start();
    rollout_with_failures(&r);
    let tmp = tempfile::tempdir().unwrap();
    let args = [
        "status",
        "--reporter",
        &r.url,
        "--token-file",
        &r.token_file(),
    ];
    let table = ok(publisher(tmp.path(), &args, &[]));

    assert!(
        table.contains("channel stable  release 2.0.0  (6 agents, halted)"),
        "{table}"
    );
    // A halted rollout names the operator's options.
    assert!(
        table.contains("halted: agents wait at their next gate check. Options:")
            && table.contains("flotilla-publisher rollout pause --channel stable")
            && table.contains("flotilla-publisher pin add --agent ID --release VERSION"),
        "{table}"
    );
    assert!(
        table.contains("gate CLOSED (agents wait): failure rate 66.7% (2 of 3) is above 30.0%"),
        "{table}"
    );
    assert!(
        table.contains(
            "max_failure_rate 30.0%, min_reports 2 (from the reporter's copy of the signed manifest)"
        ),
        "{table}"
    );
    // a6 never reported: its wave is the manifest's wave function's.
    let (c, a) = a6_in();
    //                          agents on inst fail rb wait silent
    assert_eq!(row(&table, "canary"), [2 + c, 1, 0, 1, 0, 0, c], "{table}");
    assert_eq!(row(&table, "all"), [3 + a, 0, 1, 0, 1, 1, a], "{table}");
    assert!(!table.contains("unknown"), "{table}");
    assert_eq!(row(&table, "total"), [6, 1, 1, 1, 1, 1, 1], "{table}");
    assert!(
        table.contains("[##########!!!!!!!!!!]  50%"),
        "canary bar: {table}"
    );
    assert!(
        table.contains("failure rate 66.7% (2 of 3 reports)"),
        "{table}"
    );

    // --json is the reporter's own RolloutList; --channel and --release narrow it.
    let json = ok(publisher(
        tmp.path(),
        &[&args[..], &["--json"]].concat(),
        &[],
    ));
    let list: RolloutList = serde_json::from_str(&json).unwrap();
    let direct: RolloutList = r.admin_json("/api/v1/rollouts");
    assert_eq!(list, direct);
    let one = ok(publisher(
        tmp.path(),
        &[
            &args[..],
            &["--channel", "stable", "--release", "2.0.0", "--json"],
        ]
        .concat(),
        &[],
    ));
    let one: RolloutList = serde_json::from_str(&one).unwrap();
    assert_eq!(one.rollouts, direct.rollouts);

    // An operator's emergency stop shows, with who, when and why.
    let h = r.admin_post(
        "/api/v1/halts",
        serde_json::json!({"channel": "stable", "reason": "disk full on db hosts", "by": "carol"}),
    );
    let table = ok(publisher(tmp.path(), &args, &[]));
    assert!(
        table.contains(&format!(
            "emergency stop #{} by carol (admin token) at ",
            h["id"]
        )) && table.contains(": disk full on db hosts"),
        "{table}"
    );
    assert!(
        table.contains("gate CLOSED (agents wait): manually halted by carol"),
        "{table}"
    );
    assert!(
        table.contains(&format!("POST /api/v1/halts/{}/reopen", h["id"])),
        "{table}"
    );

    let out = publisher(
        tmp.path(),
        &[&args[..], &["--channel", "beta"]].concat(),
        &[],
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no rollout on channel beta"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn status_reads_the_token_from_the_environment_and_the_url_from_fleet_toml() {
    let r = Reporter::start();
    rollout_with_failures(&r);
    let f = Fleet::init();
    let commented = "# reporter_url = \"https://reporter.example.com\"";
    let fleet = f.read("fleet.toml");
    assert!(fleet.contains(commented), "{fleet}");
    let fleet = fleet.replace(commented, &format!("reporter_url = \"{}\"", r.url));
    f.write("fleet.toml", &fleet);
    let table = ok(publisher(
        &f.repo,
        &["status", "--channel", "stable"],
        &[("FLOTILLA_REPORTER_TOKEN", r.read.as_str())],
    ));
    let (c, _) = a6_in();
    assert_eq!(row(&table, "canary"), [2 + c, 1, 0, 1, 0, 0, c], "{table}");
}

#[test]
fn reporter_errors_name_the_url_and_the_cause() {
    let r = Reporter::start();
    let tmp = tempfile::tempdir().unwrap();
    let wrong = tmp.path().join("wrong.token");
    std::fs::write(&wrong, "not-the-admin-token").unwrap();
    std::fs::set_permissions(&wrong, std::fs::Permissions::from_mode(0o600)).unwrap();
    let wrong = wrong.to_str().unwrap();

    // 401
    let out = publisher(
        tmp.path(),
        &["status", "--reporter", &r.url, "--token-file", wrong],
        &[],
    );
    assert!(!out.status.success());
    let e = stderr(&out);
    assert!(
        e.contains("the reporter refused the admin token") && e.contains("HTTP 401"),
        "{e}"
    );
    assert!(e.contains(&format!("{}/api/v1/rollouts", r.url)), "{e}");

    // a token file others may read is refused before anything is sent
    std::fs::set_permissions(wrong, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = publisher(
        tmp.path(),
        &["status", "--reporter", &r.url, "--token-file", wrong],
        &[],
    );
    let e = stderr(&out);
    assert!(!out.status.success());
    assert!(e.contains("mode 0644") && e.contains("chmod 600"), "{e}");

    // no token at all
    let out = publisher(tmp.path(), &["status", "--reporter", &r.url], &[]);
    assert!(stderr(&out).contains("no admin token"), "{}", stderr(&out));

    // nothing listening
    let url = unreachable_url();
    let out = publisher(
        tmp.path(),
        &[
            "status",
            "--reporter",
            &url,
            "--token-file",
            &r.token_file(),
        ],
        &[],
    );
    assert!(!out.status.success());
    let e = stderr(&out);
    assert!(
        e.contains(&format!(
            "cannot reach the reporter at {} ({url}/api/v1/rollouts): Connection Failed",
            &url["http://".len()..]
        )),
        "{e}"
    );
}

#[test]
fn https_to_a_plain_http_reporter_fails_in_the_tls_handshake() {
    let r = Reporter::start();
    let tmp = tempfile::tempdir().unwrap();
    let https = r.url.replace("http://", "https://");
    let out = publisher(
        tmp.path(),
        &[
            "status",
            "--reporter",
            &https,
            "--token-file",
            &r.token_file(),
        ],
        &[],
    );
    assert!(!out.status.success());
    let e = stderr(&out);
    assert!(
        e.contains(&format!(
            "cannot reach the reporter at {}",
            &r.url["http://".len()..]
        )),
        "{e}"
    );
}

/// The URL of a port nothing listens on.
fn unreachable_url() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("http://{}", l.local_addr().unwrap())
}

/// A fleet repo whose main branch rolls out 1.0.0 on stable and beta, and a
/// branch `change` that moves stable to 2.0.0 with new waves and pins
/// role=db agents on 1.0.0.
fn fleet_with_a_change() -> Fleet {
    let f = Fleet::ready();
    f.add_release("2.0.0", b"agent 2.0.0");
    f.ok(&[
        "rollout",
        "set",
        "--channel",
        "beta",
        "--release",
        "1.0.0",
        "--start",
        "2026-01-01T00:00:00Z",
    ]);
    commit(&f.repo, "base");
    git(&f.repo, &["checkout", "-q", "-b", "change"]);
    f.ok(&[
        "rollout",
        "set",
        "--channel",
        "stable",
        "--release",
        "2.0.0",
        "--start",
        "2026-03-01T00:00:00Z",
        "--waves",
        "canary=50%@0s/2h,all=100%@1d/6h",
    ]);
    f.ok(&["pin", "add", "--label", "role=db", "--release", "1.0.0"]);
    commit(&f.repo, "stable: 2.0.0; hold the databases");
    f
}

fn commit(dir: &Path, msg: &str) {
    git(dir, &["add", "-A"]);
    git(
        dir,
        &[
            "-c",
            "user.name=test",
            "-c",
            "user.email=test@example.invalid",
            "commit",
            "-q",
            "-m",
            msg,
        ],
    );
}

/// 24 web agents on 1.0.0 (they move), web-99 on 2.0.0 already, two
/// databases (db-01 on 1.0.0, db-02 on 0.9.0) and beta-01 on beta.
fn enroll_fleet(r: &Reporter) -> Vec<String> {
    let mut web = Vec::new();
    for i in 1..=24 {
        let id = format!("web-{i:02}");
        r.enroll(&id, "stable", "1.0.0", &[("role", "web")]);
        web.push(id);
    }
    r.enroll("web-99", "stable", "2.0.0", &[("role", "web")]);
    r.enroll("db-01", "stable", "1.0.0", &[("role", "db")]);
    r.enroll("db-02", "stable", "0.9.0", &[("role", "db")]);
    r.enroll("beta-01", "beta", "1.0.0", &[("role", "web")]);
    web
}

#[test]
fn plan_puts_each_agent_in_its_wave_at_the_agents_own_time() {
    let r = Reporter::start();
    let web = enroll_fleet(&r);
    let f = fleet_with_a_change();
    let now = "2026-02-01T00:00:00Z";
    let base = [
        "plan",
        "--reporter",
        &r.url,
        "--token-file",
        &r.token_file(),
        "--now",
        now,
    ];
    let text = ok(publisher(&f.repo, &base, &[]));
    let json: serde_json::Value = serde_json::from_str(&ok(publisher(
        &f.repo,
        &[&base[..], &["--json"]].concat(),
        &[],
    )))
    .unwrap();

    // What the agents compute, from the head's own channel file.
    let head = Sources::load_dir(&f.repo).unwrap();
    let stable = &head.channels["stable"];
    let mut expected: Vec<Vec<(DateTime<Utc>, String)>> = vec![Vec::new(); stable.waves.len()];
    for id in &web {
        let b = wave::bucket("stable", "2.0.0", id);
        let s = wave::slot(&stable.waves, stable.start, b).unwrap();
        expected[s.index].push((s.eligible_at, id.clone()));
    }
    for e in &mut expected {
        e.sort();
    }
    assert!(
        expected.iter().all(|e| !e.is_empty()),
        "24 agents fill both waves"
    );

    let sec = &json["channels"][0];
    assert_eq!(sec["channel"], "stable");
    assert_eq!(
        (sec["from_release"].as_str(), sec["to_release"].as_str()),
        (Some("1.0.0"), Some("2.0.0"))
    );
    for (i, want) in expected.iter().enumerate() {
        let w = &sec["waves"][i];
        let got: Vec<(DateTime<Utc>, String)> = w["agents"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| {
                (
                    a["eligible_at"].as_str().unwrap().parse().unwrap(),
                    a["agent_id"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        assert_eq!(&got, want, "wave {}", w["name"]);
    }
    assert_eq!(
        sec["unaffected"],
        serde_json::json!({"already_on_release": 1, "pinned_elsewhere": 2, "unchanged": 0})
    );

    // The text says the same: the change, each wave's opening, the agents
    // with their turns to the second, capped at ten per wave.
    assert!(
        text.contains("channel stable: release 1.0.0 → 2.0.0"),
        "{text}"
    );
    assert!(
        text.contains("start: 2026-01-01T00:00:00+00:00 → 2026-03-01T00:00:00+00:00"),
        "{text}"
    );
    assert!(
        text.contains("merge-base of HEAD and main"),
        "the default base: {text}"
    );
    let names = ["canary", "all"];
    let opens = [
        "2026-03-01 00:00:00 UTC (in 28d)",
        "2026-03-02 00:00:00 UTC (in 29d)",
    ];
    for (i, want) in expected.iter().enumerate() {
        let header = format!(
            "wave {} (to {}%): opens {}, spread {}",
            names[i],
            [50, 100][i],
            opens[i],
            ["2h", "6h"][i]
        );
        assert!(text.contains(&header), "{header}\n{text}");
        assert!(text.contains(&format!("{} agents\n", want.len())), "{text}");
        for (k, (at, id)) in want.iter().enumerate() {
            let line = format!(
                "{id}  1.0.0 → 2.0.0  eligible {}",
                at.format("%Y-%m-%d %H:%M:%S UTC")
            );
            assert_eq!(text.contains(&line), k < 10, "{line}\n{text}");
        }
        if want.len() > 10 {
            assert!(
                text.contains(&format!(
                    "… and {} more (--all lists every agent)",
                    want.len() - 10
                )),
                "{text}"
            );
        }
    }
    assert!(
        text.contains("unaffected: 1 already on 2.0.0, 2 pinned elsewhere"),
        "{text}"
    );
    // The new pin moves db-02 at once; db-01 runs 1.0.0 already.
    assert!(
        text.contains("pin 0 (new): labels role=db: held on release 1.0.0"),
        "{text}"
    );
    assert!(
        text.contains("1 agent moves to 1.0.0 at their next pass"),
        "{text}"
    );
    assert!(text.contains("db-02  0.9.0 → 1.0.0\n"), "{text}");
    assert!(text.contains("unaffected: 1 already on 1.0.0"), "{text}");
    assert!(
        text.contains("+ pin 0: labels role=db: held on release 1.0.0"),
        "{text}"
    );
    assert!(
        !text.contains("beta-01") && !text.contains("channel beta"),
        "{text}"
    );
    assert!(
        text.contains("25 agents move; 1 other agent is not touched by this change."),
        "{text}"
    );

    // --all lists every agent; --base and --head name revisions explicitly.
    let all = ok(publisher(&f.repo, &[&base[..], &["--all"]].concat(), &[]));
    for id in &web {
        assert!(
            all.contains(&format!("{id}  1.0.0 → 2.0.0  eligible")),
            "{id}"
        );
    }
    assert!(!all.contains("more (--all"), "{all}");
    let explicit = ok(publisher(
        &f.repo,
        &[&base[..], &["--base", "main", "--head", "HEAD", "--json"]].concat(),
        &[],
    ));
    let explicit: serde_json::Value = serde_json::from_str(&explicit).unwrap();
    assert_eq!(explicit["channels"], json["channels"]);
    assert_eq!(explicit["pins"], json["pins"]);
}

#[test]
fn plan_without_changes_moves_nobody_and_reporter_errors_are_clear() {
    let r = Reporter::start();
    enroll_fleet(&r);
    let f = fleet_with_a_change();
    let args = [
        "plan",
        "--reporter",
        &r.url,
        "--token-file",
        &r.token_file(),
    ];
    let text = ok(publisher(
        &f.repo,
        &[&args[..], &["--base", "HEAD"]].concat(),
        &[],
    ));
    assert!(text.contains("no channel or pin changes"), "{text}");

    // Pausing the channel in the work tree: nobody moves, all are held.
    f.ok(&["rollout", "pause", "--channel", "stable"]);
    let text = ok(publisher(
        &f.repo,
        &[&args[..], &["--base", "HEAD"]].concat(),
        &[],
    ));
    assert!(text.contains("paused: no → yes"), "{text}");
    assert!(
        text.contains("held, 24 agents: the channel is paused"),
        "{text}"
    );

    let url = unreachable_url();
    let out = publisher(
        &f.repo,
        &["plan", "--reporter", &url, "--token-file", &r.token_file()],
        &[],
    );
    assert!(!out.status.success());
    let e = stderr(&out);
    assert!(e.contains("cannot reach the reporter at 127.0.0.1:"), "{e}");

    let out = publisher(
        &f.repo,
        &["plan", "--reporter", &r.url],
        &[("FLOTILLA_REPORTER_TOKEN", "wrong")],
    );
    assert!(!out.status.success());
    let e = stderr(&out);
    assert!(e.contains("the reporter refused the admin token"), "{e}");
    assert!(e.contains(&format!("{}/api/v1/agents", r.url)), "{e}");
}

#[test]
fn verify_warns_about_waves_too_thin_for_the_gate_as_plan_does() {
    let r = Reporter::start();
    enroll_fleet(&r);
    let f = fleet_with_a_change();
    // A 2% canary of 26 stable agents (the databases are pinned) holds
    // about none, and the gate needs 5 reports to judge.
    f.ok(&[
        "rollout",
        "set",
        "--channel",
        "stable",
        "--release",
        "2.0.0",
        "--start",
        "2026-03-01T00:00:00Z",
        "--waves",
        "canary=2%@0s/2h,all=100%@1d/6h",
        "--max-failure-rate",
        "0.3",
        "--min-reports",
        "5",
    ]);
    let token = r.token_file();
    let out = publisher(
        &f.repo,
        &[
            "verify",
            "--sources",
            "--reporter",
            &r.url,
            "--token-file",
            &token,
        ],
        &[],
    );
    assert!(
        out.status.success(),
        "a warning is not a failure: {}",
        stderr(&out)
    );
    let said = stderr(&out);
    let warning = said
        .lines()
        .find(|l| l.starts_with("WARNING: channels/stable.toml: wave canary (2%) has "))
        .unwrap_or_else(|| panic!("no thin-wave warning:\n{said}"));
    assert!(
        warning.contains("fewer than min_reports 5") && warning.contains("before wave all opens"),
        "{warning}"
    );
    // `plan` says the same thing under its channel: one rule.
    let plan = ok(publisher(
        &f.repo,
        &["plan", "--reporter", &r.url, "--token-file", &token],
        &[],
    ));
    let rule = warning.trim_start_matches("WARNING: channels/stable.toml: ");
    assert!(plan.contains(&format!("WARNING: {rule}")), "{plan}");

    // Without --reporter verify asks nobody and warns about nothing.
    let out = publisher(&f.repo, &["verify", "--sources"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains("WARNING"), "{}", stderr(&out));
    // Enough agents for the gate: no warning.
    f.ok(&[
        "rollout",
        "set",
        "--channel",
        "stable",
        "--release",
        "2.0.0",
        "--start",
        "2026-03-01T00:00:00Z",
        "--waves",
        "canary=50%@0s/2h,all=100%@1d/6h",
        "--min-reports",
        "2",
    ]);
    let out = publisher(
        &f.repo,
        &[
            "verify",
            "--sources",
            "--reporter",
            &r.url,
            "--token-file",
            &token,
        ],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains("WARNING"), "{}", stderr(&out));
}
