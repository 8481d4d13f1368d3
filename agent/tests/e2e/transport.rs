//! Hostile transports: a git host serving an oversized blob, a server that
//! trickles, and URLs that carry credentials.

use std::process::Output;
use std::time::Duration;

use flotilla_protocol::{EventKind, EventStatus, Severity};

use crate::support::bins;
use crate::support::fleet::{Fleet, GitDaemon};
use crate::support::host::Host;
use crate::support::http::{Knob, Server};
use crate::support::proxy::Trickle;

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn host(tmp: &std::path::Path, fleet: &Fleet, source: &str, base: &str, extra: &str) -> Host {
    Host::new(
        &tmp.join("host"),
        &bins::agent("v1"),
        "1.0.0",
        &fleet.root1(),
        source,
        base,
        extra,
    )
}

#[test]
fn git_source_refuses_an_oversized_manifest_blob_without_reading_it() {
    let tmp = tempfile::tempdir().unwrap();
    let fleet = crate::update::fleet_v1_v2(tmp.path());
    let server = Server::start(&fleet.store);
    // 17 MiB, a MiB over the cap (`MAX_METADATA`, 16 MiB, as for HTTP);
    // spaces compress well, so the repo stays small.
    let cap = 16 * 1024 * 1024;
    std::fs::write(
        fleet.repo.join("signed/manifest.json"),
        vec![b' '; cap + 1024 * 1024],
    )
    .unwrap();
    fleet.commit("a huge manifest");
    let h = host(
        tmp.path(),
        &fleet,
        &format!("git = \"{}\"", fleet.file_url()),
        &server.url(),
        "",
    );
    h.pass();
    assert_eq!(h.current(), "1.0.0");
    let failed = h.events_of(EventKind::ManifestCheck, EventStatus::Failed);
    let e = failed.last().expect("a failed manifest check");
    assert!(
        e.message.contains("signed/manifest.json")
            && e.message.contains(&format!("larger than {cap} bytes")),
        "{}",
        e.message
    );
}

#[test]
fn trickling_server_is_cut_off_below_the_minimum_rate() {
    let tmp = tempfile::tempdir().unwrap();
    let fleet = crate::update::fleet_v1_v2(tmp.path());
    let server = Server::start(&fleet.store);
    // 10 bytes a second: a byte well within every stall timeout (2s), far
    // below the minimum of 1000 bytes/s averaged over 2s.
    let h = host(
        tmp.path(),
        &fleet,
        &format!("url = \"{}\"", server.url()),
        &server.url(),
        "min_rate = 1000\n",
    );
    let gap = Duration::from_millis(100);

    // Metadata.
    server.knob("/manifest.json", Knob::Trickle(gap));
    let out = h.agent(&["run"], &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(h.current(), "1.0.0");
    let failed = h.events_of(EventKind::ManifestCheck, EventStatus::Failed);
    let e = failed.last().expect("a failed manifest check");
    let url = format!("{}manifest.json", server.url());
    assert!(
        e.message.contains(&url) && e.message.contains("bytes/s") && e.message.contains("too slow"),
        "{}",
        e.message
    );
    // An outage, retried on the next pass: a warning.
    assert_eq!(e.severity, Severity::Warning);

    // An artifact: abandoned the same way, the partial file kept.
    server.clear_knobs();
    let artifact = format!("/{}", fleet.artifact_path("2.0.0"));
    server.knob(&artifact, Knob::Trickle(gap));
    let out = h.agent(&["run"], &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(h.current(), "1.0.0");
    let failed = h.events_of(EventKind::UpdateDownload, EventStatus::Failed);
    let e = failed.last().expect("a failed download");
    assert!(
        e.message.contains(&artifact) && e.message.contains("too slow"),
        "{}",
        e.message
    );
    // Served at full speed again, the next pass installs.
    server.clear_knobs();
    assert!(h.pass().contains("installed 2.0.0"));
}

#[test]
fn trickling_git_server_is_cut_off_below_the_minimum_rate() {
    const TOKEN: &str = "s3cr3tT0ken";
    let tmp = tempfile::tempdir().unwrap();
    let fleet = crate::update::fleet_v1_v2(tmp.path());
    let server = Server::start(&fleet.store);
    let daemon = GitDaemon::start(fleet.repo.parent().unwrap());
    // A byte every 50ms, from the first byte of the ref advertisement on:
    // within every stall timeout (2s), far below 1000 bytes/s. libgit2's
    // transfer-progress callback would not even be called before the pack.
    let trickle = Trickle::start(daemon.port, Duration::from_millis(50));
    let url = format!("git://127.0.0.1:{}/fleet", trickle.port());
    let h = host(
        tmp.path(),
        &fleet,
        &format!(
            "git = \"{}\"\nbranch = \"main\"",
            url.replace("git://", &format!("git://deploy:{TOKEN}@"))
        ),
        &server.url(),
        "min_rate = 1000\n",
    );

    // The whole exchange at this pace takes minutes; the pass must give up
    // after about one window. The bound only keeps a regression from hanging.
    let mut cmd = std::process::Command::new(h.install_dir.join("current/flotilla-agent"));
    cmd.arg("--config").arg(&h.config).arg("run");
    let child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(child.wait_with_output()));
    let out = match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            let _ = std::process::Command::new("kill")
                .args(["-9", &pid.to_string()])
                .status();
            panic!("the pass was still running after 60s against a trickling git server");
        }
    };
    assert!(out.status.success(), "{}", text(&out));
    assert!(!text(&out).contains(TOKEN), "{}", text(&out));
    assert_eq!(h.current(), "1.0.0");
    let failed = h.events_of(EventKind::ManifestCheck, EventStatus::Failed);
    let e = failed.last().expect("a failed manifest check");
    let shown = url.replace("git://", "git://***@");
    assert!(
        e.message.contains(&shown)
            && e.message.contains("bytes/s")
            && e.message.contains("too slow"),
        "{}",
        e.message
    );
    assert!(!e.message.contains(TOKEN), "{}", e.message);
    assert_eq!(e.severity, Severity::Warning);

    // The lock is free again, and at full speed the next pass installs.
    drop(trickle);
    std::fs::write(
        &h.config,
        std::fs::read_to_string(&h.config)
            .unwrap()
            .replace(&url[6..], &daemon.url("fleet")[6..]),
    )
    .unwrap();
    assert!(h.pass().contains("installed 2.0.0"));
}

#[test]
fn credentials_in_urls_never_reach_events_logs_or_status() {
    const TOKEN: &str = "s3cr3tT0ken";
    let tmp = tempfile::tempdir().unwrap();
    let fleet = crate::update::fleet_v1_v2(tmp.path());
    let server = Server::start(&fleet.store);
    let with_token = server
        .url()
        .replace("http://", &format!("http://deploy:{TOKEN}@"));
    let shown = server.url().replace("http://", "http://***@");
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let h = host(
        tmp.path(),
        &fleet,
        &format!("url = \"{with_token}\""),
        &with_token,
        &format!("\n[reporter]\nurl = \"http://deploy:{TOKEN}@127.0.0.1:{closed}\"\n"),
    );
    let mut outputs = Vec::new();
    // A pass that downloads and installs (URLs in success events), one
    // whose manifest fetch fails (the URL in an error), and `status`.
    let out = h.agent(&["run"], &[("FLOTILLA_LOG", "debug")]);
    assert!(text(&out).contains("installed 2.0.0"), "{}", text(&out));
    outputs.push(text(&out));
    server.knob("/manifest.json", Knob::Status(500));
    outputs.push(text(&h.agent(&["run"], &[("FLOTILLA_LOG", "debug")])));
    outputs.push(text(&h.agent(&["status"], &[])));
    outputs.push(text(&h.agent(&["status", "--json"], &[])));

    // A git source with a token, on a host that answers 404.
    std::fs::write(
        &h.config,
        std::fs::read_to_string(&h.config).unwrap().replace(
            &format!("url = \"{with_token}\"\n\n[artifacts]"),
            &format!("git = \"{with_token}fleet.git\"\n\n[artifacts]"),
        ),
    )
    .unwrap();
    outputs.push(text(&h.agent(&["run"], &[("FLOTILLA_LOG", "debug")])));
    outputs.push(text(&h.agent(&["status"], &[])));

    let spool = std::fs::read_to_string(h.state_dir.join("spool/events.jsonl")).unwrap();
    let state = std::fs::read_to_string(h.state_dir.join("state.json")).unwrap();
    for (what, t) in outputs
        .iter()
        .map(|o| ("output", o.as_str()))
        .chain([("spool", spool.as_str()), ("state.json", state.as_str())])
    {
        assert!(!t.contains(TOKEN), "{what} shows the token:\n{t}");
    }
    // The URLs are there, without their credentials.
    assert!(spool.contains(&format!("{shown}manifest.json")), "{spool}");
    assert!(spool.contains(&format!("{shown}fleet.git")), "{spool}");
    assert!(
        spool.contains(&format!("{shown}{}", fleet.artifact_path("2.0.0"))),
        "{spool}"
    );
}
