//! Crash safety: a pass killed (abort, no cleanup) at every named fault
//! point; the following passes converge to a committed version, never to a
//! broken install.

use std::os::unix::process::ExitStatusExt;

use flotilla_agent::fault::POINTS;

use crate::support::bins;
use crate::support::host::Host;
use crate::support::http::Server;

/// Runs passes with FLOTILLA_FAULT=`point` until one is killed there;
/// returns how many passes that took.
fn crash_at(host: &Host, point: &str) -> usize {
    for n in 1..=6 {
        let out = host.agent(&["run"], &[("FLOTILLA_FAULT", point)]);
        if out.status.signal() == Some(libc::SIGABRT) {
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(err.contains(&format!("fault injected at {point}")), "{err}");
            return n;
        }
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    panic!("the pass never reached fault point {point}");
}

/// Passes until nothing changes; asserts a consistent, committed install.
fn settle(host: &Host) -> String {
    let mut last = String::new();
    for _ in 0..8 {
        host.pass();
        let st = host.state();
        let now = format!("{}|{}", host.current(), st.get("pending").is_some());
        if now == last {
            break;
        }
        last = now;
    }
    let st = host.state();
    assert!(st.get("pending").is_none(), "still pending: {st}");
    let current = host.current();
    assert_eq!(st["committed"], current.as_str(), "{st}");
    assert_eq!(host.running_version(), current);
    assert!(host
        .install_dir
        .join("versions")
        .join(&current)
        .join("flotilla-agent")
        .exists());
    // No leftovers of interrupted work.
    for e in std::fs::read_dir(host.install_dir.join("versions"))
        .unwrap()
        .flatten()
    {
        let name = e.file_name().to_string_lossy().into_owned();
        assert!(!name.starts_with(".trash-"), "left over: {name}");
    }
    current
}

fn host_for(
    tmp: &std::path::Path,
    channel_release: &str,
) -> (crate::support::fleet::Fleet, Server, Host) {
    let fleet = crate::update::fleet_v1_v2(tmp);
    if channel_release == "3.0.0" {
        fleet.release("3.0.0", &bins::agent("v3-broken"), None);
        fleet.rollout("3.0.0", None, &[]);
        fleet.sign();
    }
    let server = Server::start(&fleet.store);
    let host = Host::new(
        &tmp.join("host"),
        &bins::agent("v1"),
        "1.0.0",
        &fleet.root1(),
        &format!("git = \"{}\"", fleet.file_url()),
        &server.url(),
        "",
    );
    // An old version for the commit's prune to remove.
    let old = host.install_dir.join("versions/0.9.0");
    std::fs::create_dir_all(&old).unwrap();
    std::fs::copy(bins::agent("v1"), old.join("flotilla-agent")).unwrap();
    (fleet, server, host)
}

#[test]
fn converges_after_a_crash_at_every_fault_point() {
    for point in POINTS {
        let tmp = tempfile::tempdir().unwrap();
        let broken = *point == "after-rollback-swap";
        let (_fleet, _server, host) = host_for(tmp.path(), if broken { "3.0.0" } else { "2.0.0" });
        crash_at(&host, point);
        let end = settle(&host);
        if broken {
            // v3 fails its health check: back on v1, v3 blocked.
            assert_eq!(end, "1.0.0", "{point}");
            assert_eq!(host.state()["blocked"]["version"], "3.0.0", "{point}");
        } else {
            assert_eq!(end, "2.0.0", "{point}");
        }
        if *point == "mid-download" {
            // The partial file was resumed, not fetched again from 0.
            assert!(
                _server
                    .log()
                    .iter()
                    .any(|l| l.headers.contains_key("range")),
                "{point}"
            );
        }
        if matches!(*point, "after-commit" | "during-prune") {
            assert!(!host.installed().contains(&"0.9.0".to_string()), "{point}");
        }
    }
}

#[test]
fn rollback_service_restores_the_previous_version() {
    // The new binary cannot even start: the rollback unit runs the previous
    // binary's `rollback`.
    let tmp = tempfile::tempdir().unwrap();
    let (_fleet, _server, host) = host_for(tmp.path(), "2.0.0");
    assert!(host.pass().contains("installed 2.0.0"));
    std::fs::write(
        host.install_dir.join("versions/2.0.0/flotilla-agent"),
        b"#!/bin/sh\nexit 127\n",
    )
    .unwrap();
    assert!(!host.agent(&["run"], &[]).status.success());
    let out = std::process::Command::new(host.install_dir.join("previous/flotilla-agent"))
        .arg("--config")
        .arg(&host.config)
        .arg("rollback")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("rolled back from 2.0.0 to 1.0.0"));
    assert_eq!(host.running_version(), "1.0.0");
    assert_eq!(host.state()["blocked"]["version"], "2.0.0");
    // Without a pending update, rollback does nothing.
    let out = host.agent(&["rollback"], &[]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("no pending update"));
}
