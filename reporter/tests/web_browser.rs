//! The web page in headless Chromium, driven over WebDriver (chromedriver):
//! log in, see the fleet overview, open an agent with a failed migration,
//! filter to migration events, expand the error and read its text.
//! Screenshots go to `$CARGO_TARGET_TMPDIR/screenshots/`.

mod common;

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine;
use chrono::Utc;
use common::{update, wait_until, Server};
use flotilla_protocol::{Event, EventKind, EventStatus, Severity};
use serde_json::{json, Value};

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A minimal WebDriver client.
struct Driver {
    http: reqwest::Client,
    base: String,
    child: Child,
    _profile: tempfile::TempDir,
}

impl Driver {
    async fn start() -> Option<Driver> {
        let Ok(path) = which("chromedriver") else {
            assert!(
                std::env::var_os("FLOTILLA_SKIP_BROWSER_TESTS").is_some(),
                "chromedriver is not installed (apt-get install chromium chromium-driver), \
                 or set FLOTILLA_SKIP_BROWSER_TESTS=1"
            );
            return None;
        };
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(path)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let http = reqwest::Client::new();
        let base = format!("http://127.0.0.1:{port}");
        wait_until("chromedriver is ready", || async {
            match http.get(format!("{base}/status")).send().await {
                Ok(r) => r
                    .json::<Value>()
                    .await
                    .is_ok_and(|v| v["value"]["ready"] == true),
                Err(_) => false,
            }
        })
        .await;
        let profile = tempfile::tempdir().unwrap();
        let mut d = Driver {
            http,
            base,
            child,
            _profile: profile,
        };
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": which("chromium").unwrap_or_else(|_| "/usr/bin/chromium".into()),
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--disable-background-networking", "--disable-component-update", "--disable-sync",
                         "--no-first-run", "--window-size=1280,1000",
                         format!("--user-data-dir={}", d._profile.path().display())]
            }
        }}});
        let v = d.call("POST", "/session", caps).await;
        let id = v["sessionId"].as_str().expect("a session id").to_owned();
        d.base = format!("{}/session/{id}", d.base);
        Some(d)
    }

    async fn call(&self, method: &str, path: &str, body: Value) -> Value {
        let url = format!("{}{path}", self.base);
        let req = match method {
            "GET" => self.http.get(url),
            "DELETE" => self.http.delete(url),
            _ => self.http.post(url).json(&body),
        };
        let v: Value = req.send().await.unwrap().json().await.unwrap();
        if v["value"].get("error").is_some() {
            panic!("webdriver {method} {path}: {}", v["value"]);
        }
        v["value"].clone()
    }

    async fn goto(&self, url: &str) {
        self.call("POST", "/url", json!({ "url": url })).await;
    }

    async fn url(&self) -> String {
        self.call("GET", "/url", Value::Null)
            .await
            .as_str()
            .unwrap()
            .to_owned()
    }

    async fn find_all(&self, css: &str) -> Vec<String> {
        let v = self
            .call(
                "POST",
                "/elements",
                json!({"using": "css selector", "value": css}),
            )
            .await;
        v.as_array()
            .unwrap()
            .iter()
            .map(|e| e[ELEMENT].as_str().unwrap().to_owned())
            .collect()
    }

    /// Waits for an element to appear and returns it.
    async fn find(&self, css: &str) -> String {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(el) = self.find_all(css).await.into_iter().next() {
                return el;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {css} on {}",
                self.url().await
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn text(&self, el: &str) -> String {
        self.call("GET", &format!("/element/{el}/text"), Value::Null)
            .await
            .as_str()
            .unwrap_or("")
            .to_owned()
    }

    async fn click(&self, el: &str) {
        self.call("POST", &format!("/element/{el}/click"), json!({}))
            .await;
    }

    async fn type_into(&self, el: &str, text: &str) {
        self.call(
            "POST",
            &format!("/element/{el}/value"),
            json!({ "text": text }),
        )
        .await;
    }

    async fn property(&self, el: &str, name: &str) -> Value {
        self.call(
            "GET",
            &format!("/element/{el}/property/{name}"),
            Value::Null,
        )
        .await
    }

    async fn screenshot(&self, name: &str) -> std::path::PathBuf {
        let b64 = self.call("GET", "/screenshot", Value::Null).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(b64.as_str().unwrap())
            .unwrap();
        let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        path
    }

    async fn quit(mut self) {
        let _ = self.http.delete(&self.base).send().await;
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn which(bin: &str) -> Result<String, ()> {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|d| d.join(bin))
        .find(|p| p.is_file())
        .map(|p| p.display().to_string())
        .ok_or(())
}

/// A small fleet mid-rollout; `db-01` failed a migration.
/// Returns db-01's agent token.
async fn seed(s: &Server) -> String {
    use EventKind::*;
    use EventStatus::*;
    let now = Utc::now();
    let with = |mut e: Event, mins: i64| {
        e.ts = now - chrono::Duration::minutes(mins);
        e
    };
    for i in 1..=8 {
        let id = format!("web-{i:02}");
        let t = s.enroll(&id).await;
        let wave = match i {
            1..=3 => "canary",
            4..=5 => "early",
            _ => "all",
        };
        let mut evs = vec![with(update(&id, UpdateDeferred, Info, "2.0.0", wave), 50)];
        if i <= 3 {
            evs.push(with(
                update(&id, UpdateDownload, Success, "2.0.0", wave),
                40,
            ));
            evs.push(with(update(&id, UpdateInstall, Success, "2.0.0", wave), 39));
            let mut h = with(update(&id, UpdateHealthcheck, Success, "2.0.0", wave), 38);
            h.details.insert("agent_version".into(), "2.0.0".into());
            evs.push(h);
        } else if i == 4 {
            evs.push(with(update(&id, UpdateDownload, Success, "2.0.0", wave), 5));
        } else {
            let mut h = with(update(&id, AgentStartup, Success, "2.0.0", wave), 1);
            h.details.insert("agent_version".into(), "1.0.0".into());
            evs.push(h);
        }
        assert_eq!(s.post_events(&t, &evs).await.status(), 200);
        if i >= 6 {
            let c = json!({"state": "waiting", "reason": "wave all opens at 2030-01-01 14:00 UTC",
                "release": "2.0.0", "wave": "all", "until": "2030-01-01T14:00:00Z"});
            assert_eq!(s.checkin(&t, c).await.status(), 202);
        }
    }
    let t = s.enroll("db-01").await;
    let mut evs = vec![
        with(
            update("db-01", UpdateDownload, Success, "2.0.0", "canary"),
            30,
        ),
        with(
            update("db-01", UpdateInstall, Success, "2.0.0", "canary"),
            29,
        ),
    ];
    let mut det = with(
        update("db-01", MigrationDetection, Success, "2.0.0", "canary"),
        28,
    );
    det.message = "2 migrations needed: config-v2, state-layout-3".into();
    det.details
        .insert("migrations".into(), json!(["config-v2", "state-layout-3"]));
    evs.push(det);
    let mut failed = with(
        update("db-01", MigrationExecution, Failed, "2.0.0", "canary"),
        27,
    );
    failed.severity = Severity::Error;
    failed.component = "migration".into();
    failed.message = "migration config-v2 failed; backup restored".into();
    failed.details.insert(
        "error_chain".into(),
        json!([
            "migration config-v2 failed",
            "rewriting /etc/flotilla/agent.toml",
            "Permission denied (os error 13)"
        ]),
    );
    failed.details.insert(
        "system".into(),
        json!({"os": "Debian GNU/Linux 12", "kernel": "6.1.0-18-amd64", "arch": "x86_64",
               "state_dir_free_bytes": 12_884_901_888u64, "host_uptime_s": 273_600}),
    );
    failed
        .details
        .insert("backup".into(), "/var/lib/flotilla/backups/0007".into());
    evs.push(failed);
    let mut rb = with(
        update("db-01", UpdateRollback, Success, "2.0.0", "canary"),
        26,
    );
    // As agents have sent it: info. The reporter stores it as a warning.
    rb.severity = Severity::Info;
    rb.message = "rolled back to 1.0.0".into();
    rb.details
        .insert("labels".into(), json!({"role": "db", "site": "ams1"}));
    evs.push(rb);
    assert_eq!(s.post_events(&t, &evs).await.status(), 200);
    let c = json!({"state": "rolled_back",
        "reason": "2.0.0 rolled back here, waiting for another release", "release": "2.0.0"});
    assert_eq!(s.checkin(&t, c).await.status(), 202);
    // check-ins are written within a second
    common::wait_until("the check-ins are written", || async {
        let a: flotilla_protocol::api::AgentSummary = s.admin_json("/api/v1/agents/db-01").await;
        a.reason.is_some()
    })
    .await;
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_logs_in_and_reads_a_failed_migration_in_headless_chromium() {
    let dir = tempfile::tempdir().unwrap();
    let fleet = common::SignedFleet::new(dir.path());
    fleet.publish("2.0.0", 0.2, 3);
    let s = Server::start_with(|st| fleet.configure(st)).await;
    let db_token = seed(&s).await;
    let Some(d) = Driver::start().await else {
        eprintln!("skipped: no chromedriver");
        return;
    };

    // Not logged in: the overview sends us to the login form.
    d.goto(&s.url("/")).await;
    assert!(d.url().await.ends_with("/login"));
    let field = d.find("#token").await;
    d.type_into(&field, "wrong-token-wrong-token").await;
    d.click(&d.find("#login").await).await;
    let err = d.find("#login-error").await;
    assert!(d.text(&err).await.contains("Wrong admin token"));
    let field = d.find("#token").await;
    d.type_into(&field, common::ADMIN).await;
    d.click(&d.find("#login").await).await;

    // The fleet overview.
    let total = d.find("#agents-total").await;
    assert_eq!(d.text(&total).await, "9");
    let rollout = d.text(&d.find("section.rollout").await).await;
    assert!(rollout.contains("stable → 2.0.0"), "{rollout}");
    assert!(rollout.contains("gate open") || rollout.contains("gate closed"));
    let versions = d.text(&d.find("#versions").await).await;
    assert!(
        versions.contains("2.0.0") && versions.contains("1.0.0"),
        "{versions}"
    );
    let errors = d.text(&d.find("#errors").await).await;
    assert!(errors.contains("db-01"), "{errors}");
    // a rollout is running, so the page refreshes itself
    let body = d.find("body").await;
    assert_eq!(d.property(&body, "dataset").await["refresh"], "1");
    let shot = d.screenshot("overview").await;
    eprintln!("screenshot: {}", shot.display());

    // The emergency stop from the page: close stable's gate with a reason...
    d.click(&d.find("section.rollout details.halt-form summary").await)
        .await;
    let reason = d.find("section.rollout form.stop input.reason").await;
    d.type_into(&reason, "2.0.0 corrupts the cache").await;
    d.type_into(
        &d.find("section.rollout form.stop input[name='by']").await,
        "alice",
    )
    .await;
    d.click(&d.find("section.rollout form.stop button.stop").await)
        .await;
    // ... see it on the overview, the gate closed and the rollout halted ...
    let halts = d.text(&d.find("#halts").await).await;
    assert!(
        halts.contains("stable")
            && halts.contains("2.0.0 corrupts the cache")
            && halts.contains("alice (web page)"),
        "{halts}"
    );
    let card = d.find("section.rollout").await;
    let text = d.text(&card).await;
    assert!(
        text.contains("gate closed") && text.contains("Emergency stop by alice (web page)"),
        "{text}"
    );
    assert!(
        text.contains("rollout pause --channel stable"),
        "the options: {text}"
    );
    assert_eq!(d.property(&card, "dataset").await["phase"], "halted");
    let g: flotilla_protocol::api::Gate = s.admin_json("/api/v1/gate/stable/2.0.0").await;
    assert!(
        g.reason.starts_with("manually halted by alice (web page)"),
        "{}",
        g.reason
    );
    let shot = d.screenshot("overview-halted").await;
    eprintln!("screenshot: {}", shot.display());
    // ... and reopen it.
    d.click(&d.find("section.rollout form.reopen button.reopen").await)
        .await;
    d.find("section.rollout details.halt-form").await;
    assert!(d.find_all("#halts").await.is_empty());
    let g: flotilla_protocol::api::Gate = s.admin_json("/api/v1/gate/stable/2.0.0").await;
    assert!(g.halt.is_none(), "{}", g.reason);

    // The agents table, searched, then the agent with the failed migration.
    d.click(&d.find("header nav a[href='/agents']").await).await;
    let q = d.find("#q").await;
    d.type_into(&q, "db-\u{E007}").await; // Enter submits
    wait_until("the search applied", || async {
        d.url().await.contains("q=db-")
    })
    .await;
    let rows = d.find_all("#agents-table tbody tr").await;
    assert_eq!(rows.len(), 1);
    // Each host's state and why.
    let state = d
        .text(
            &d.find("#agents-table tr[data-agent='db-01'] td.state")
                .await,
        )
        .await;
    assert!(
        state.contains("rolled back") && state.contains("waiting for another release"),
        "{state}"
    );
    // A label filter narrows the list to exactly that label.
    d.goto(&s.url("/agents")).await;
    assert_eq!(d.find_all("#agents-table tbody tr").await.len(), 9);
    let waiting = d
        .text(
            &d.find("#agents-table tr[data-agent='web-07'] td.state")
                .await,
        )
        .await;
    assert!(
        waiting.contains("waiting for its wave until 2030-01-01 14:00 UTC"),
        "{waiting}"
    );
    let label = d.find("#label").await;
    d.type_into(&label, "role=db\u{E007}").await;
    wait_until("the label filter applied", || async {
        d.url().await.contains("label=role%3Ddb")
    })
    .await;
    let rows = d.find_all("#agents-table tbody tr").await;
    assert_eq!(rows.len(), 1, "only db-01 has role=db");
    d.click(&d.find("#agents-table a[href='/agents/db-01']").await)
        .await;
    d.find("#timeline").await;
    assert!(d.find_all("li.event").await.len() >= 5);

    // Filter to migration events: the select applies itself (plain JS).
    d.click(&d.find("#kind option[value='migration']").await)
        .await;
    wait_until("the kind filter applied", || async {
        d.url().await.contains("kind=migration")
    })
    .await;
    let items = d.find_all("#timeline li.event").await;
    assert_eq!(items.len(), 2, "detection and execution");
    assert!(d.find_all("#timeline li.event.update").await.is_empty());

    // The failed migration's error details are open from the start.
    let failed = d.find("#timeline li.event.migration.sev-error").await;
    let text = d.text(&failed).await;
    assert!(text.contains("migration config-v2 failed; backup restored"));
    assert!(text.contains("Permission denied (os error 13)"), "{text}");
    assert!(text.contains("rewriting /etc/flotilla/agent.toml"));
    assert!(text.contains("Debian GNU/Linux 12"), "system info shown");
    assert!(
        text.contains("12.0 GiB") && text.contains("3d 4h"),
        "system facts in human units: {text}"
    );
    // The absolute time beside the relative one.
    let at = (Utc::now() - chrono::Duration::minutes(27))
        .format("%Y-%m-%d")
        .to_string();
    assert!(
        text.contains(&at) && text.contains("UTC") && text.contains("m ago)"),
        "{text}"
    );
    let summary = d.find("#timeline li.event.sev-error details summary").await;
    d.click(&summary).await;
    let details = d.find("#timeline li.event.sev-error details").await;
    assert_eq!(
        d.property(&details, "open").await,
        json!(false),
        "a click closes it"
    );

    // "warning and worse" shows the rollback an agent sent as info.
    d.goto(&s.url("/agents/db-01?severity=warning,error,critical"))
        .await;
    d.find("#timeline").await;
    let kinds: Vec<String> = {
        let mut v = Vec::new();
        for el in d.find_all("#timeline li.event").await {
            v.push(d.text(&el).await);
        }
        v
    };
    assert!(
        kinds
            .iter()
            .any(|t| t.contains("update_rollback") && t.contains("warning")),
        "{kinds:?}"
    );
    let shot = d.screenshot("agent-history").await;
    eprintln!("screenshot: {}", shot.display());

    // The open page updates itself: a new event arrives without a reload,
    // the kind filter stays and the details stay as the reader left them
    // (closed here: failures start open).
    d.goto(&s.url("/agents/db-01?kind=migration")).await;
    d.find("#timeline").await;
    assert_eq!(d.find_all("#timeline li.event").await.len(), 2);
    let summary = d.find("#timeline li.event.sev-error details summary").await;
    d.click(&summary).await;
    let details = d.find("#timeline li.event.sev-error details").await;
    assert_eq!(d.property(&details, "open").await, json!(false));
    let js = |script: &str| {
        d.call(
            "POST",
            "/execute/sync",
            json!({"script": script, "args": []}),
        )
    };
    js("window.flotillaStayed = 1; return 1;").await;
    let mut fresh = update(
        "db-01",
        EventKind::MigrationDetection,
        EventStatus::Success,
        "2.1.0",
        "canary",
    );
    fresh.message = "a migration for 2.1.0 found, live".into();
    assert_eq!(s.post_events(&db_token, &[fresh]).await.status(), 200);
    wait_until("the new event shows on the open page", || async {
        d.find_all("#timeline li.event").await.len() == 3
    })
    .await;
    let text = d.text(&d.find("#timeline").await).await;
    assert!(text.contains("a migration for 2.1.0 found, live"), "{text}");
    assert!(d.url().await.contains("kind=migration"), "the filter stays");
    let details = d.find("#timeline li.event.sev-error details").await;
    assert_eq!(
        d.property(&details, "open").await,
        json!(false),
        "still closed, as the reader left it"
    );
    assert_eq!(
        js("return window.flotillaStayed || 0;").await,
        json!(1),
        "<main> was swapped, the page not reloaded"
    );

    // Logging out ends the session.
    d.click(&d.find("form.logout button").await).await;
    wait_until("logged out", || async { d.url().await.ends_with("/login") }).await;
    d.goto(&s.url("/agents/db-01")).await;
    assert!(d.url().await.ends_with("/login"));

    d.quit().await;
    s.stop().await;
}
