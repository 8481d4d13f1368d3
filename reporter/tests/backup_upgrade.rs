//! The reporter as a service: `backup` of a live database, and upgrades
//! (a database of the previous release is migrated and served; one newer
//! than the binary is refused).

mod common;

use std::collections::HashSet;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use common::{run_cli, wait_until, Binary};
use flotilla_protocol::api::{AgentList, EnrollResponse, EventPage, EventsAccepted};
use flotilla_protocol::{EventKind, EventStatus};
use flotilla_reporter::db::schema;
use uuid::Uuid;

const UNLIMITED: &str = "rate_limit_per_second = 1000000.0\nrate_limit_burst = 1000000.0\n";

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn backup_while_serving_holds_every_event_acknowledged_before_it() {
    let b = Binary::start(UNLIMITED);
    let http = reqwest::Client::new();
    let enrollment = b.token(&["--uses", "2"]);
    let mut tokens = Vec::new();
    for agent in ["web-1", "web-2"] {
        let r = b.enroll(&http, &enrollment, agent).await;
        assert_eq!(r.status(), 201);
        tokens.push((agent, r.json::<EnrollResponse>().await.unwrap().agent_token));
    }
    // Two agents post batches until told to stop, remembering what was
    // acknowledged.
    let acked: Arc<Mutex<Vec<Uuid>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for (agent, token) in tokens {
        let (http, url, acked, stop) = (http.clone(), b.url.clone(), acked.clone(), stop.clone());
        clients.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let events: Vec<_> = (0..50)
                    .map(|_| common::event(agent, EventKind::AgentStartup, EventStatus::Success))
                    .collect();
                let r = http
                    .post(format!("{url}/api/v1/events"))
                    .bearer_auth(&token)
                    .json(&serde_json::json!({ "events": events }))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
                assert_eq!(r.json::<EventsAccepted>().await.unwrap().new, 50);
                acked.lock().unwrap().extend(events.iter().map(|e| e.id));
            }
        }));
    }
    wait_until("a thousand events were acknowledged", || async {
        acked.lock().unwrap().len() >= 1_000
    })
    .await;
    let before: HashSet<Uuid> = acked.lock().unwrap().iter().copied().collect();
    let copy = b.dir.path().join("backup.sqlite");
    let copy_s = copy.to_str().unwrap().to_owned();
    let (ok, _, err) = tokio::task::spawn_blocking({
        let db = b.db.path().to_str().unwrap().to_owned();
        move || run_cli(&["backup", "--db", &db, "--to", &copy_s])
    })
    .await
    .unwrap();
    assert!(ok, "{err}");
    // Ingestion went on during the backup.
    let during = acked.lock().unwrap().len();
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    assert!(err.contains("backed up"), "{err}");

    assert_eq!(mode(&copy), 0o600);
    let conn = rusqlite::Connection::open(&copy).unwrap();
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    let journal: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(journal, "delete", "the copy is one file, without a WAL");
    let mut stmt = conn.prepare("SELECT id FROM events").unwrap();
    let stored: HashSet<Uuid> = stmt
        .query_map([], |r| r.get::<_, Vec<u8>>(0))
        .unwrap()
        .map(|id| Uuid::from_slice(&id.unwrap()).unwrap())
        .collect();
    let missing = before.difference(&stored).count();
    assert_eq!(
        missing, 0,
        "{missing} acknowledged events are not in the copy"
    );
    assert!(during >= before.len());
    drop(stmt);
    drop(conn);

    // An existing file is not replaced, unless --force.
    let kept = std::fs::read(&copy).unwrap();
    let (ok, _, err) = b.cli(&["backup", "--to", copy.to_str().unwrap()]);
    assert!(!ok);
    assert!(
        err.contains(&format!("{} exists", copy.display())) && err.contains("--force"),
        "{err}"
    );
    assert_eq!(std::fs::read(&copy).unwrap(), kept);
    let (ok, _, err) = b.cli(&["backup", "--force", "--to", copy.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert_ne!(std::fs::read(&copy).unwrap(), kept, "replaced");
    assert_eq!(mode(&copy), 0o600);
}

/// The tokens made with the fixture (see fixtures/README.md).
fn fixture_token(kind: &str) -> String {
    let text = std::fs::read_to_string(fixture("schema3.tokens")).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{kind} ")))
        .unwrap_or_else(|| panic!("no {kind} token"))
        .to_owned()
}

fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn user_version(db: &Path) -> u32 {
    rusqlite::Connection::open(db)
        .unwrap()
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap()
}

/// A database written by the previous release (schema 3, made by its
/// binary) is migrated to this binary's [`schema::VERSION`] and served:
/// the same agents, events and tokens.
#[tokio::test]
async fn a_database_of_the_previous_release_is_migrated_and_served() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db.sqlite");
    std::fs::copy(fixture("schema3.sqlite"), &db).unwrap();
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o600)).unwrap();
    let found = user_version(&db);
    assert!(
        found <= schema::VERSION,
        "the fixture is newer than the code"
    );
    let admin = dir.path().join("admin.token");
    std::fs::write(&admin, fixture_token("admin")).unwrap();
    std::fs::set_permissions(&admin, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (mut child, url) =
        common::spawn_serve(&common::TestDb::Sqlite(db.clone()), &admin, &[], None);
    assert_eq!(user_version(&db), schema::VERSION, "migrated from {found}");

    let http = reqwest::Client::new();
    let get = |path: &str, token: String| {
        let req = http.get(format!("{url}{path}")).bearer_auth(token);
        async move {
            let r = req.send().await.unwrap();
            assert_eq!(r.status(), 200);
            r
        }
    };
    let list: AgentList = get("/api/v1/agents?sort=agent_id", fixture_token("admin"))
        .await
        .json()
        .await
        .unwrap();
    let seen: Vec<_> = list
        .agents
        .iter()
        .map(|a| {
            (
                a.agent_id.as_str(),
                a.version.as_deref(),
                a.labels.get("role").map(String::as_str),
                a.event_count,
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("web-1", Some("1.1.0"), Some("web"), 4),
            ("web-2", Some("1.1.0"), Some("web"), 4)
        ]
    );
    let page: EventPage = get("/api/v1/agents/web-1/events", fixture_token("read"))
        .await
        .json()
        .await
        .unwrap();
    let kinds: Vec<_> = page.events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "update_healthcheck",
            "update_install",
            "manifest_check",
            "agent_startup"
        ]
    );
    // The agent's token still works.
    let agent = fixture_token("agent web-1");
    let e = common::event("web-1", EventKind::AgentStartup, EventStatus::Success);
    let r = http
        .post(format!("{url}/api/v1/events"))
        .bearer_auth(&agent)
        .json(&serde_json::json!({ "events": [e] }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (ok, list, err) = run_cli(&["token", "list", "--db", db.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(
        list.contains("fixture enroll") && list.contains("fixture read"),
        "{list}"
    );
    child.kill().unwrap();
    child.wait().unwrap();
}

/// Migrations are forward-only: a reporter older than its database
/// refuses it, saying what to do, and changes nothing.
#[test]
fn an_older_reporter_refuses_a_newer_database() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db.sqlite");
    let db_s = db.to_str().unwrap();
    assert!(run_cli(&["init", "--db", db_s]).0);
    let newer = schema::VERSION + 1;
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch(&format!("PRAGMA user_version = {newer}"))
        .unwrap();
    let expected = format!(
        "database {db_s}: schema version {newer} is newer than this reporter's {}; \
         migrations are forward-only",
        schema::VERSION
    );
    for args in [
        &["serve", "--listen", "127.0.0.1:0", "--db", db_s][..],
        &["token", "list", "--db", db_s],
        &["init", "--db", db_s],
    ] {
        let (ok, out, err) = run_cli(args);
        assert!(!ok, "{args:?}: {out}");
        assert!(!out.contains("listening"), "{out}");
        assert!(err.contains(&expected), "{args:?}: {err}");
    }
    assert_eq!(user_version(&db), newer);
}
