//! The systemd units in agent/dist/ pass `systemd-analyze verify`.
//!
//! scripts/test installs Debian's `systemd` package when systemd-analyze is
//! missing; this test fails (it does not skip) without it.

use std::process::Command;

use flotilla_agent::setup;

#[test]
fn systemd_units_pass_systemd_analyze_verify() {
    let dir = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_flotilla-agent");
    // The units as `install` writes them, with ExecStart pointing at a real
    // binary (verify checks that the command exists).
    let config = flotilla_agent::Config::parse(
        std::path::Path::new("/etc/flotilla/agent.toml"),
        "channel = \"stable\"\n[source]\ngit = \"https://git.example.com/fleet.git\"\n[artifacts]\nbase_url = \"https://a.example.com/\"\n",
    )
    .unwrap();
    let mut paths = Vec::new();
    for (name, text) in setup::render_units(&config) {
        if name.ends_with(".service") {
            assert!(
                text.contains("NoNewPrivileges=yes"),
                "{name} lacks hardening"
            );
        }
        let text = text
            .replace("/opt/flotilla/current/flotilla-agent", bin)
            .replace("/opt/flotilla/previous/flotilla-agent", bin);
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        paths.push(p);
    }
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .args(&paths)
        .output()
        .expect("systemd-analyze must be installed (Debian package `systemd`; scripts/test installs it)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "systemd-analyze verify failed:\n{stderr}"
    );
    let problems: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("flotilla-agent"))
        .collect();
    assert!(problems.is_empty(), "systemd-analyze complained:\n{stderr}");
}

#[test]
fn timer_has_the_required_schedule() {
    let timer = setup::UNITS
        .iter()
        .find(|(n, _)| *n == "flotilla-agent.timer")
        .unwrap()
        .1;
    for line in [
        "OnBootSec=",
        "OnUnitActiveSec=15min",
        "RandomizedDelaySec=",
        "Persistent=true",
    ] {
        assert!(timer.contains(line), "timer lacks {line}");
    }
    let service = setup::UNITS[0].1;
    assert!(service.contains("OnFailure=flotilla-agent-rollback.service"));
    assert!(setup::UNITS[2]
        .1
        .contains("/previous/flotilla-agent rollback"));
}
