//! v1 -> v2 commits; v2 -> broken v3 rolls back to v2 and is not retried
//! until a new serial names a different release (v4).

use flotilla_protocol::{EventKind, EventStatus};

use crate::support::bins;
use crate::support::fleet::{Fleet, GitDaemon};
use crate::support::host::Host;
use crate::support::http::Server;

/// A fleet with v1 and v2 released and the channel on v2.
pub fn fleet_v1_v2(base: &std::path::Path) -> Fleet {
    let fleet = Fleet::new(base);
    fleet.release("1.0.0", &bins::agent("v1"), None);
    fleet.release("2.0.0", &bins::agent("v2"), None);
    fleet.rollout("2.0.0", None, &[]);
    fleet.sign();
    fleet
}

fn full_cycle(source: impl FnOnce(&Fleet, &Server) -> String) {
    let tmp = tempfile::tempdir().unwrap();
    let fleet = fleet_v1_v2(tmp.path());
    let artifacts = Server::start(&fleet.store);
    let source = source(&fleet, &artifacts);
    let host = Host::new(
        &tmp.path().join("host"),
        &bins::agent("v1"),
        "1.0.0",
        &fleet.root1(),
        &source,
        &artifacts.url(),
        "",
    );

    // v1 installs v2 and swaps it in.
    let out = host.pass();
    assert!(out.contains("installed 2.0.0"), "{out}");
    assert_eq!(host.current(), "2.0.0");
    assert_eq!(host.state()["pending"]["to"], "2.0.0");
    // v2's first pass checks its health and commits.
    host.pass();
    assert_eq!(host.running_version(), "2.0.0");
    let st = host.state();
    assert_eq!(st["committed"], "2.0.0");
    assert!(st.get("pending").is_none(), "{st}");
    assert_eq!(
        host.events_of(EventKind::UpdateHealthcheck, EventStatus::Success)
            .len(),
        1
    );
    for kind in [
        EventKind::UpdateDownload,
        EventKind::UpdateVerify,
        EventKind::UpdateInstall,
    ] {
        let ev = host.events_of(kind, EventStatus::Success);
        assert_eq!(ev.len(), 1, "{kind}");
        assert_eq!(ev[0].to_version.as_deref(), Some("2.0.0"));
        assert_eq!(ev[0].from_version.as_deref(), Some("1.0.0"));
        assert_eq!(ev[0].wave.as_deref(), Some("all"));
        assert_eq!(ev[0].channel.as_deref(), Some("stable"));
    }
    // Nothing new: an idle pass stays on v2.
    assert!(host.pass().contains("up to date"));
    let out = host.agent(&["status", "--json"], &[]);
    assert!(out.status.success());
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["version"], "2.0.0");
    assert_eq!(status["current"], "2.0.0");
    assert_eq!(status["decision"]["target"], "2.0.0");
    assert!(status["manifest_serial"].as_u64().unwrap() >= 1);
    assert!(status["last_error"].is_null());

    // v2 -> broken v3: installed, fails its health check twice, rolled back.
    fleet.release("3.0.0", &bins::agent("v3-broken"), None);
    fleet.rollout("3.0.0", None, &[]);
    fleet.sign();
    assert!(host.pass().contains("installed 3.0.0"));
    assert_eq!(host.running_version(), "3.0.0");
    let out = host.pass();
    assert!(out.contains("1 attempt(s) left"), "{out}");
    let out = host.pass();
    assert!(out.contains("rolled back from 3.0.0 to 2.0.0"), "{out}");
    assert_eq!(host.running_version(), "2.0.0");
    let rb = host.events_of(EventKind::UpdateRollback, EventStatus::Success);
    assert_eq!(rb.len(), 1);
    assert_eq!(rb[0].from_version.as_deref(), Some("3.0.0"));
    assert_eq!(rb[0].to_version.as_deref(), Some("2.0.0"));
    assert_eq!(
        host.events_of(EventKind::UpdateHealthcheck, EventStatus::Failed)
            .len(),
        2
    );
    assert_eq!(host.state()["blocked"]["version"], "3.0.0");

    // Not retried: neither on the same manifest nor on a new serial that
    // still names 3.0.0.
    let out = host.pass();
    assert!(out.contains("failed its health check here"), "{out}");
    fleet.publisher(&[
        "pin",
        "add",
        "--agent",
        "someone-else",
        "--release",
        "2.0.0",
    ]);
    fleet.sign();
    let out = host.pass();
    assert!(out.contains("failed its health check here"), "{out}");
    assert_eq!(host.running_version(), "2.0.0");
    assert_eq!(
        host.events_of(EventKind::UpdateInstall, EventStatus::Success)
            .len(),
        2
    );

    // A new serial naming another release: v4 goes in and commits.
    fleet.release("4.0.0", &bins::agent("v4"), None);
    fleet.rollout("4.0.0", None, &[]);
    fleet.sign();
    assert!(host.pass().contains("installed 4.0.0"));
    host.pass();
    assert_eq!(host.running_version(), "4.0.0");
    let st = host.state();
    assert_eq!(st["committed"], "4.0.0");
    assert!(st.get("blocked").is_none(), "{st}");
    // keep_versions = 2: the committed version and the one before it.
    assert_eq!(host.installed(), ["2.0.0", "4.0.0"]);
}

#[test]
fn updates_commits_and_rolls_back_over_git_daemon() {
    let mut daemon = None;
    full_cycle(|fleet, _| {
        let d = GitDaemon::start(fleet.repo.parent().unwrap());
        let url = d.url("fleet");
        daemon = Some(d);
        format!("git = \"{url}\"\nbranch = \"main\"")
    });
    drop(daemon);
}

#[test]
fn updates_commits_and_rolls_back_over_file_url() {
    full_cycle(|fleet, _| format!("git = \"{}\"\nbranch = \"main\"", fleet.file_url()));
}

#[test]
fn updates_commits_and_rolls_back_over_static_http_store() {
    full_cycle(|_, server| format!("url = \"{}\"", server.url()));
}

#[test]
fn idle_http_pass_asks_conditionally() {
    let tmp = tempfile::tempdir().unwrap();
    let fleet = Fleet::new(tmp.path());
    fleet.release("1.0.0", &bins::agent("v1"), None);
    fleet.rollout("1.0.0", None, &[]);
    fleet.sign();
    let server = Server::start(&fleet.store);
    let host = Host::new(
        &tmp.path().join("host"),
        &bins::agent("v1"),
        "1.0.0",
        &fleet.root1(),
        &format!("url = \"{}\"", server.url()),
        &server.url(),
        "",
    );
    assert!(host.pass().contains("up to date"));
    server.clear_log();
    assert!(host.pass().contains("up to date"));
    let log = server.log();
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(log[0].path, "/manifest.json");
    assert!(log[0].headers.contains_key("if-none-match"));
    assert_eq!(log[0].status, 304);
    // One manifest_check event for the first acceptance only.
    assert_eq!(
        host.events_of(EventKind::ManifestCheck, EventStatus::Success)
            .len(),
        1
    );
}

#[test]
fn install_is_idempotent_under_a_prefix() {
    let tmp = tempfile::tempdir().unwrap();
    let fleet = Fleet::new(tmp.path());
    let prefix = tmp.path().join("root");
    let run = || {
        let out = std::process::Command::new(bins::agent("v1"))
            .args(["install", "--prefix"])
            .arg(&prefix)
            .args([
                "--channel",
                "stable",
                "--git",
                "https://git.example.com/fleet.git",
            ])
            .args(["--artifacts", "https://a.example.com/"])
            .args(["--agent-id", "web-01", "--labels", "role=web,site=ams1"])
            .arg("--trust-root")
            .arg(fleet.root1())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let first = run();
    assert!(first.contains("wrote config"), "{first}");
    assert!(first.contains("wrote unit"), "{first}");
    let second = run();
    assert!(!second.contains("wrote"), "{second}");
    assert!(prefix
        .join("opt/flotilla/versions/1.0.0/flotilla-agent")
        .exists());
    assert_eq!(
        std::fs::read_link(prefix.join("opt/flotilla/current")).unwrap(),
        std::path::Path::new("versions/1.0.0")
    );
    let cfg = std::fs::read_to_string(prefix.join("etc/flotilla/agent.toml")).unwrap();
    assert!(cfg.contains("config_schema = 3"));
    let config = flotilla_agent::Config::parse(std::path::Path::new("agent.toml"), &cfg).unwrap();
    assert_eq!(config.agent_id.as_deref(), Some("web-01"));
    assert_eq!(
        config.labels.into_iter().collect::<Vec<_>>(),
        [
            ("role".to_owned(), "web".to_owned()),
            ("site".to_owned(), "ams1".to_owned())
        ]
    );
    assert!(prefix
        .join("etc/systemd/system/flotilla-agent.timer")
        .exists());
    // Every path the config and the units name is under the prefix, so the
    // installed agent runs from there and touches nothing outside it.
    let p = prefix.canonicalize().unwrap();
    let installed = flotilla_agent::Config::load(&prefix.join("etc/flotilla/agent.toml")).unwrap();
    for (what, path) in [
        ("trust_root", &installed.trust_root),
        ("state_dir", &installed.state_dir),
        ("install_dir", &installed.install_dir),
    ] {
        assert!(
            path.starts_with(&prefix) || path.starts_with(&p),
            "{what}: {}",
            path.display()
        );
    }
    let unit =
        std::fs::read_to_string(prefix.join("etc/systemd/system/flotilla-agent.service")).unwrap();
    assert!(
        unit.contains(&format!(
            "{}/opt/flotilla/current/flotilla-agent",
            prefix.display()
        )),
        "{unit}"
    );
    let out = std::process::Command::new(bins::agent("v1"))
        .arg("--config")
        .arg(prefix.join("etc/flotilla/agent.toml"))
        .arg("status")
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.lines()
            .any(|l| l.starts_with("current:") && l.trim_end().ends_with("1.0.0")),
        "status reads the prefixed install: {said}"
    );
    assert!(prefix.join("var/lib/flotilla").is_dir());
    // A different trust root is never installed over the existing one.
    let other = tmp.path().join("other-root.json");
    let f2 = Fleet::new(&tmp.path().join("f2"));
    std::fs::copy(f2.root1(), &other).unwrap();
    let out = std::process::Command::new(bins::agent("v1"))
        .args(["install", "--prefix"])
        .arg(&prefix)
        .arg("--trust-root")
        .arg(&other)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("refusing to replace"));
    // A bad agent id or label list is refused before anything is written.
    let fresh = tmp.path().join("fresh");
    for (flag, value, says) in [
        ("--agent-id", "web/01", "agent_id"),
        ("--labels", "role", "not key=value"),
    ] {
        let out = std::process::Command::new(bins::agent("v1"))
            .args(["install", "--prefix"])
            .arg(&fresh)
            .args(["--channel", "stable", "--url", "https://u.example.com/"])
            .args(["--artifacts", "https://a.example.com/", flag, value])
            .arg("--trust-root")
            .arg(fleet.root1())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(says), "{err}");
        assert!(!fresh.exists(), "{flag} {value}: something was written");
    }
}
