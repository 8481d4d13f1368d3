//! The real agent's spool delivering to the real reporter (its binary, a
//! SQLite file), with the reporter killed (SIGKILL) mid-stream and started
//! again on the same database: every event arrives, none is stored twice,
//! and the spool empties.

use std::collections::HashSet;
use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use flotilla_agent::spool::Spool;
use flotilla_protocol::api::EventPage;
use flotilla_protocol::{Event, EventKind, EventStatus, Severity};

use crate::support::bins;
use crate::support::fleet::Fleet;
use crate::support::host::Host;

const ADMIN: &str = "admin-token-for-the-delivery-test";

/// A `flotilla-reporter serve` child on a fixed port and database.
pub(crate) struct Reporter {
    pub(crate) child: Child,
    db: PathBuf,
    admin_file: PathBuf,
    port: u16,
    extra: Vec<String>,
}

impl Reporter {
    pub(crate) fn start(dir: &Path) -> Reporter {
        Reporter::start_with(dir, &[])
    }

    /// With more `serve` arguments (`--manifest`, `--trust-root`).
    pub(crate) fn start_with(dir: &Path, extra: &[String]) -> Reporter {
        let admin_file = dir.join("admin.token");
        fs::write(&admin_file, ADMIN).unwrap();
        fs::set_permissions(&admin_file, fs::Permissions::from_mode(0o600)).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let db = dir.join("reporter.db");
        let child = Self::spawn(&db, &admin_file, port, extra);
        Reporter {
            child,
            db,
            admin_file,
            port,
            extra: extra.to_vec(),
        }
    }

    fn spawn(db: &Path, admin_file: &Path, port: u16, extra: &[String]) -> Child {
        let mut child = Command::new(bins::reporter())
            .arg("serve")
            .arg("--db")
            .arg(db)
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--admin-token-file")
            .arg(admin_file)
            .args(["--retain-per-agent", "1000000"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // It prints the address once it listens.
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(line.starts_with("listening on"), "reporter said {line:?}");
        child
    }

    /// SIGKILL, then a new process on the same port and database.
    fn kill_and_restart(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        self.child = Self::spawn(&self.db, &self.admin_file, self.port, &self.extra);
    }

    pub(crate) fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub(crate) fn get(&self, path: &str) -> ureq::Response {
        ureq::get(&format!("{}{path}", self.url()))
            .set("Authorization", &format!("Bearer {ADMIN}"))
            .call()
            .unwrap()
    }

    /// `flotilla_events_ingested_total` of this process (0 while it cannot answer).
    fn ingested(&self) -> u64 {
        let Ok(resp) = ureq::get(&format!("{}/metrics", self.url()))
            .set("Authorization", &format!("Bearer {ADMIN}"))
            .call()
        else {
            return 0;
        };
        let text = resp.into_string().unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix("flotilla_events_ingested_total "))
            .map(|v| v.trim().parse::<f64>().unwrap() as u64)
            .unwrap_or(0)
    }

    /// Every stored event id of one agent, paging through the API.
    fn event_ids(&self, agent: &str) -> Vec<String> {
        let mut ids = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut path = format!("/api/v1/agents/{agent}/events?limit=500");
            if let Some(c) = &cursor {
                path.push_str(&format!("&cursor={c}"));
            }
            let page: EventPage = serde_json::from_reader(self.get(&path).into_reader()).unwrap();
            ids.extend(page.events.iter().map(|e| e.id.to_string()));
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => return ids,
            }
        }
    }

    /// POSTs `body` as JSON with the admin token.
    pub(crate) fn post(&self, path: &str, body: &str) -> ureq::Response {
        ureq::post(&format!("{}{path}", self.url()))
            .set("Authorization", &format!("Bearer {ADMIN}"))
            .set("Content-Type", "application/json")
            .send_string(body)
            .unwrap()
    }

    pub(crate) fn enrollment_token(&self) -> String {
        let out = Command::new(bins::reporter())
            .args(["token", "create", "--db"])
            .arg(&self.db)
            .args(["--uses", "1", "--note", "delivery test"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }
}

impl Drop for Reporter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn spool_reaches_the_real_reporter_across_a_sigkill_restart() {
    const BACKLOG: usize = 6_000;
    let tmp = tempfile::tempdir().unwrap();
    let mut reporter = Reporter::start(tmp.path());
    let fleet = Fleet::new(tmp.path());
    fleet.release("1.0.0", &bins::agent("v1"), None);
    fleet.rollout("1.0.0", None, &[]);
    fleet.sign();
    let enroll = tmp.path().join("enroll.token");
    fs::write(&enroll, reporter.enrollment_token()).unwrap();
    fs::set_permissions(&enroll, fs::Permissions::from_mode(0o600)).unwrap();
    let host = Host::new(
        &tmp.path().join("h1"),
        &bins::agent("v1"),
        "1.0.0",
        &fleet.root1(),
        &format!("git = \"{}\"\nbranch = \"main\"", fleet.file_url()),
        &format!("file://{}/", fleet.store.display()),
        &format!(
            "\n[reporter]\nurl = \"{}\"\nenrollment_token_file = \"{}\"\n",
            reporter.url(),
            enroll.display()
        ),
    );
    let agent_id = "host-h1";

    // A backlog the agent kept while it could not deliver: 12 batches.
    let mut sent: HashSet<String> = HashSet::new();
    {
        let mut spool = Spool::open(&host.state_dir).unwrap();
        let events: Vec<Event> = (0..BACKLOG)
            .map(|i| {
                let mut e = Event::new(
                    agent_id,
                    EventKind::UpdateDeferred,
                    EventStatus::Info,
                    "decide",
                    format!("backlog event {i}"),
                );
                if i % 10 == 0 {
                    e.severity = Severity::Warning;
                }
                e
            })
            .collect();
        sent.extend(events.iter().map(|e| e.id.to_string()));
        spool.append_all(&events).unwrap();
    }

    // A pass delivers; the reporter dies as soon as the first batch is durable.
    let mut pass = Command::new(host.install_dir.join("current/flotilla-agent"))
        .arg("--config")
        .arg(&host.config)
        .arg("run")
        .env_remove("FLOTILLA_FAULT")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    while reporter.ingested() == 0 {
        assert!(
            pass.try_wait().unwrap().is_none(),
            "the pass ended before the reporter stored anything"
        );
        std::thread::yield_now();
    }
    reporter.child.kill().unwrap();
    reporter.child.wait().unwrap();
    assert!(
        pass.wait().unwrap().success(),
        "a dead reporter does not fail the pass"
    );
    let left = Spool::open(&host.state_dir).unwrap().stats().events;
    // (Whether the batch in flight was acknowledged before the kill or only
    // made durable is up to timing; either way nothing may be lost or doubled.)
    assert!(left > 0, "the reporter died mid-stream, so events wait");

    // The same database again; passes deliver the rest.
    reporter.kill_and_restart();
    for _ in 0..10 {
        host.pass();
        if Spool::open(&host.state_dir).unwrap().stats().events == 0 {
            break;
        }
    }
    assert_eq!(
        Spool::open(&host.state_dir).unwrap().stats().events,
        0,
        "the spool empties once the reporter is back"
    );

    // Nothing lost, nothing doubled.
    let stored = reporter.event_ids(agent_id);
    let unique: HashSet<String> = stored.iter().cloned().collect();
    assert_eq!(unique.len(), stored.len(), "an event is stored twice");
    let missing: Vec<&String> = sent.difference(&unique).collect();
    assert!(missing.is_empty(), "{} backlog events lost", missing.len());
    // The agent's own events (startup, manifest check) arrived too.
    assert!(stored.len() > BACKLOG, "{}", stored.len());
    let agent: serde_json::Value = serde_json::from_reader(
        reporter
            .get(&format!("/api/v1/agents/{agent_id}"))
            .into_reader(),
    )
    .unwrap();
    assert_eq!(agent["version"], "1.0.0", "{agent}");
}
