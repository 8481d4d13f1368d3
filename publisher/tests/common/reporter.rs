//! A real reporter for the tests that talk to one (`status`, `plan`, the
//! template's plan step): in-process on 127.0.0.1:0, its database in a temp
//! dir; agents enroll and post events through its HTTP API.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::Duration;

use flotilla_protocol::api::{EnrollRequest, EventBatch};
use flotilla_protocol::Event;
use flotilla_reporter::settings::{RateLimit, Secret, Settings};

pub const ADMIN: &str = "admin-token-for-publisher-tests-0123";

/// Where the reporter's verified manifest starts stable's rollout.
pub const START: &str = "2020-01-01T00:00:00Z";

/// The waves of stable's 2.0.0 rollout in the reporter's manifest.
pub fn stable_waves() -> Vec<flotilla_protocol::Wave> {
    serde_json::from_value(serde_json::json!([
        {"name": "canary", "percent": 50.0, "after": "0s", "spread": "0s"},
        {"name": "all", "percent": 100.0, "after": "1d", "spread": "0s"},
    ]))
    .unwrap()
}

/// Writes a fleet's signed metadata as `publish` lays it out, for the
/// reporter to verify itself (`--manifest`, `--trust-root`): stable rolls
/// out 2.0.0 in [`stable_waves`] and halts above 30% failures after 2
/// reports. Returns (manifest, trust root).
fn signed_store(dir: &std::path::Path) -> (PathBuf, PathBuf) {
    use flotilla_signing::{Envelope, PrivateKey, Root, ROOT_PAYLOAD_TYPE};
    let (root_key, release_key) = (PrivateKey::generate(), PrivateKey::generate());
    let now = chrono::Utc::now();
    let root = Root::new(
        1,
        now + chrono::Duration::days(365),
        &[root_key.public_key()],
        1,
        &[release_key.public_key()],
        1,
    )
    .unwrap();
    let mut env = Envelope::new(ROOT_PAYLOAD_TYPE, &root.to_payload());
    env.sign(&root_key).unwrap();
    std::fs::create_dir_all(dir.join("root")).unwrap();
    let root_path = dir.join("root/1.root.json");
    std::fs::write(&root_path, env.to_json_pretty()).unwrap();
    let manifest = serde_json::json!({
        "fleet": "prod", "serial": 1, "issued": now,
        "expires": now + chrono::Duration::days(30),
        "releases": {"2.0.0": {"version": "2.0.0", "artifacts": {}}},
        "channels": {"stable": {
            "release": "2.0.0", "start": START,
            "max_failure_rate": 0.3, "min_reports": 2, "waves": stable_waves(),
        }},
    });
    let mut env = Envelope::new(
        flotilla_protocol::MANIFEST_PAYLOAD_TYPE,
        manifest.to_string().as_bytes(),
    );
    env.sign(&release_key).unwrap();
    let manifest_path = dir.join("manifest.json");
    std::fs::write(&manifest_path, env.to_json_pretty()).unwrap();
    (manifest_path, root_path)
}

/// A reporter served from its own runtime; stopped on drop.
pub struct Reporter {
    pub url: String,
    pub db: PathBuf,
    pub dir: tempfile::TempDir,
    pub rt: tokio::runtime::Runtime,
    pub stop: Option<tokio::sync::oneshot::Sender<()>>,
    pub task: Option<tokio::task::JoinHandle<()>>,
    pub enrollment: String,
    /// A read-scoped token: what CI's plan and status steps hold.
    pub read: String,
}

impl Reporter {
    pub fn start() -> Reporter {
        let dir = tempfile::tempdir().unwrap();
        let (manifest, trust_root) = signed_store(&dir.path().join("store"));
        let settings = Settings {
            db: dir.path().join("reporter.db").into(),
            manifest: Some(manifest.display().to_string()),
            trust_root: Some(trust_root),
            admin_token: Some(Secret::new(ADMIN)),
            rate_limit: RateLimit {
                per_second: 1000.0,
                burst: 1000.0,
            },
            rollout_cache: Duration::ZERO,
            ..Settings::default()
        };
        let db = dir.path().join("reporter.db");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = rt.spawn(async move {
            flotilla_reporter::launch_with_tcp_listener(settings, listener, async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
        });
        // The listener is bound; wait until the database answers too.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while ureq::get(&format!("{url}/healthz")).call().is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "reporter never answered"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let conn = flotilla_reporter::db::open_writer(&db, Default::default()).unwrap();
        let (_, enrollment) =
            flotilla_reporter::db::tokens::create(&conn, None, None, "publisher tests").unwrap();
        let (_, read) =
            flotilla_reporter::db::tokens::create_read(&conn, None, "publisher tests").unwrap();
        // status and plan get a read token, as in CI: never the admin token.
        let token_file = dir.path().join("read.token");
        std::fs::write(&token_file, format!("{read}\n")).unwrap();
        std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();
        Reporter {
            url,
            db,
            dir,
            rt,
            stop: Some(stop),
            task: Some(task),
            enrollment,
            read,
        }
    }

    pub fn token_file(&self) -> String {
        self.dir
            .path()
            .join("read.token")
            .to_string_lossy()
            .into_owned()
    }

    /// Enrolls an agent as the agent does; returns its agent token.
    pub fn enroll(
        &self,
        id: &str,
        channel: &str,
        version: &str,
        labels: &[(&str, &str)],
    ) -> String {
        let req = EnrollRequest {
            enrollment_token: self.enrollment.clone(),
            agent_id: id.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            version: Some(version.into()),
            channel: Some(channel.into()),
            agent_token: None,
        };
        let r = ureq::post(&format!("{}/api/v1/enroll", self.url))
            .set("Content-Type", "application/json")
            .send_string(&serde_json::to_string(&req).unwrap())
            .unwrap();
        let v: serde_json::Value = serde_json::from_reader(r.into_reader()).unwrap();
        v["agent_token"].as_str().unwrap().to_owned()
    }

    pub fn post(&self, token: &str, events: Vec<Event>) {
        let body = serde_json::to_string(&EventBatch { events }).unwrap();
        let r = ureq::post(&format!("{}/api/v1/events", self.url))
            .set("Authorization", &format!("Bearer {token}"))
            .set("Content-Type", "application/json")
            .send_string(&body)
            .unwrap();
        assert_eq!(r.status(), 200);
    }

    /// POSTs `body` with the admin token; the answer's JSON.
    pub fn admin_post(&self, path: &str, body: serde_json::Value) -> serde_json::Value {
        let r = ureq::post(&format!("{}{path}", self.url))
            .set("Authorization", &format!("Bearer {ADMIN}"))
            .set("Content-Type", "application/json")
            .send_string(&body.to_string())
            .unwrap();
        serde_json::from_reader(r.into_reader()).unwrap()
    }

    pub fn admin_json<T: serde::de::DeserializeOwned>(&self, path: &str) -> T {
        let r = ureq::get(&format!("{}{path}", self.url))
            .set("Authorization", &format!("Bearer {ADMIN}"))
            .call()
            .unwrap();
        serde_json::from_reader(r.into_reader()).unwrap()
    }
}

impl Drop for Reporter {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = self.rt.block_on(t);
        }
        let _ = &self.db;
    }
}
