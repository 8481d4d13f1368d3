//! Test helpers: a reporter on 127.0.0.1:0 with its database in a temp dir.
#![allow(dead_code)]

pub mod pg;

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use flotilla_protocol::api::{EnrollRequest, EnrollResponse};
use flotilla_protocol::{Event, EventKind, EventStatus};
use flotilla_reporter::settings::{RateLimit, Secret, Settings};
use tokio::sync::oneshot;

pub const ADMIN: &str = "admin-token-for-tests-0123456789";

pub struct Server {
    pub url: String,
    pub db: PathBuf,
    pub http: reqwest::Client,
    pub dir: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Server {
    pub async fn start() -> Server {
        Server::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut Settings)) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Settings {
            db: dir.path().join("reporter.db").into(),
            admin_token: Some(Secret::new(ADMIN)),
            rate_limit: RateLimit {
                per_second: 1000.0,
                burst: 1000.0,
            },
            rollout_cache: Duration::ZERO,
            ..Settings::default()
        };
        tweak(&mut s);
        let db = s.db.sqlite_path().expect("a SQLite test server").to_owned();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            flotilla_reporter::launch_with_tcp_listener(s, listener, async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
        });
        let server = Server {
            url,
            db,
            http: reqwest::Client::new(),
            dir,
            stop: Some(stop),
            task: Some(task),
        };
        // The listener is bound, so requests queue until the server accepts;
        // wait for the database to be ready.
        wait_until("healthz answers", || async {
            server
                .http
                .get(server.url("/healthz"))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
        })
        .await;
        server
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.unwrap();
        }
    }

    /// A direct connection to the database (as the admin subcommands use).
    pub fn conn(&self) -> rusqlite::Connection {
        flotilla_reporter::db::open_writer(&self.db, Default::default()).unwrap()
    }

    /// A new enrollment token.
    pub fn enrollment_token(&self, uses: Option<u64>) -> (String, String) {
        let (info, secret) =
            flotilla_reporter::db::tokens::create(&self.conn(), None, uses, "test").unwrap();
        (info.id, secret)
    }

    pub async fn enroll_raw(&self, req: &EnrollRequest) -> reqwest::Response {
        self.http
            .post(self.url("/api/v1/enroll"))
            .json(req)
            .send()
            .await
            .unwrap()
    }

    /// Enrolls `agent_id` with a fresh enrollment token; returns its agent token.
    pub async fn enroll(&self, agent_id: &str) -> String {
        let (_, token) = self.enrollment_token(None);
        let r = self.enroll_raw(&enroll_request(&token, agent_id)).await;
        assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
        r.json::<EnrollResponse>().await.unwrap().agent_token
    }

    pub async fn post_events(&self, token: &str, events: &[Event]) -> reqwest::Response {
        self.http
            .post(self.url("/api/v1/events"))
            .bearer_auth(token)
            .json(&serde_json::json!({ "events": events }))
            .send()
            .await
            .unwrap()
    }

    /// `POST /api/v1/checkin` with `body` as the agent `token`.
    pub async fn checkin(&self, token: &str, body: serde_json::Value) -> reqwest::Response {
        self.http
            .post(self.url("/api/v1/checkin"))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    pub async fn admin_get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(self.url(path))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap()
    }

    pub async fn admin_json<T: serde::de::DeserializeOwned>(&self, path: &str) -> T {
        let r = self.admin_get(path).await;
        assert!(r.status().is_success(), "{path}: {}", r.status());
        r.json().await.unwrap()
    }
}

pub fn enroll_request(token: &str, agent_id: &str) -> EnrollRequest {
    EnrollRequest {
        enrollment_token: token.to_owned(),
        agent_id: agent_id.to_owned(),
        labels: [("role".to_owned(), "web".to_owned())].into(),
        version: Some("1.0.0".into()),
        channel: Some("stable".into()),
        agent_token: None,
    }
}

pub fn event(agent: &str, kind: EventKind, status: EventStatus) -> Event {
    let mut e = Event::new(agent, kind, status, "test", format!("{kind} {status}"));
    e.channel = Some("stable".into());
    e
}

/// An update event about `release` in `wave`.
pub fn update(
    agent: &str,
    kind: EventKind,
    status: EventStatus,
    release: &str,
    wave: &str,
) -> Event {
    let mut e = event(agent, kind, status);
    e.from_version = Some("1.0.0".into());
    e.to_version = Some(release.into());
    e.wave = Some(wave.into());
    if kind == EventKind::UpdateRollback {
        e.from_version = Some(release.into());
        e.to_version = Some("1.0.0".into());
    }
    e
}

/// Polls `cond` until it holds (at most 30 s).
pub async fn wait_until<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if cond().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Writes the admin token [`ADMIN`] to `path`, mode 0600 (`serve` refuses
/// a token file group or others may read).
pub fn write_admin_token(path: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, ADMIN).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// `flotilla-reporter ARGS`, stdin closed, stderr piped: success, stdout,
/// stderr.
pub fn run_cli(args: &[&str]) -> (bool, String, String) {
    run_cli_in(std::path::Path::new("."), args)
}

/// [`run_cli`] in the working directory `cwd`.
pub fn run_cli_in(cwd: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_flotilla-reporter"))
        .args(args)
        .current_dir(cwd)
        .env("FLOTILLA_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// Starts the real `flotilla-reporter serve` on 127.0.0.1:0 with `db`, the
/// admin token file `admin` and `extra` arguments; at most `nofile` file
/// descriptors if given. Returns the child and its URL (read from its
/// first line, `listening on ADDR`).
pub fn spawn_serve(
    db: &std::path::Path,
    admin: &std::path::Path,
    extra: &[&str],
    nofile: Option<u64>,
) -> (std::process::Child, String) {
    use std::io::BufRead;
    use std::os::unix::process::CommandExt;
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_flotilla-reporter"));
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--db"])
        .arg(db)
        .arg("--admin-token-file")
        .arg(admin)
        .args(extra)
        .env("FLOTILLA_LOG", "warn")
        .stdout(std::process::Stdio::piped());
    if let Some(n) = nofile {
        // SAFETY: setrlimit is async-signal-safe; nothing else runs here.
        unsafe {
            cmd.pre_exec(move || {
                let lim = libc::rlimit {
                    rlim_cur: n,
                    rlim_max: n,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let mut child = cmd.spawn().unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();
    (child, format!("http://{addr}"))
}

/// The real binary serving a temp database, with the admin token [`ADMIN`]
/// and `config` as its `--config` file; killed on drop.
pub struct Binary {
    pub child: std::process::Child,
    pub url: String,
    pub db: PathBuf,
    pub dir: tempfile::TempDir,
}

impl Binary {
    pub fn start(config: &str) -> Binary {
        Binary::start_with(config, None)
    }

    pub fn start_with(config: &str, nofile: Option<u64>) -> Binary {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("reporter.db");
        let admin = dir.path().join("admin.token");
        write_admin_token(&admin);
        let cfg = dir.path().join("reporter.toml");
        std::fs::write(&cfg, config).unwrap();
        let (child, url) = spawn_serve(&db, &admin, &["--config", cfg.to_str().unwrap()], nofile);
        Binary {
            child,
            url,
            db,
            dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    /// `flotilla-reporter ARGS --db DB`: success, stdout, stderr.
    pub fn cli(&self, args: &[&str]) -> (bool, String, String) {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_flotilla-reporter"))
            .args(args)
            .arg("--db")
            .arg(&self.db)
            .env("FLOTILLA_LOG", "warn")
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    }

    /// `token create ARGS`: the secret printed on stdout.
    pub fn token(&self, args: &[&str]) -> String {
        let mut all = vec!["token", "create"];
        all.extend_from_slice(args);
        let (ok, out, err) = self.cli(&all);
        assert!(ok, "token create {args:?}: {err}");
        out.trim().to_owned()
    }

    /// `POST /api/v1/enroll` of `agent_id` with `token`.
    pub async fn enroll(
        &self,
        http: &reqwest::Client,
        token: &str,
        agent_id: &str,
    ) -> reqwest::Response {
        http.post(self.url("/api/v1/enroll"))
            .json(&enroll_request(token, agent_id))
            .send()
            .await
            .unwrap()
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A fleet's signed metadata laid out as `flotilla-publisher publish` lays
/// out a store: `<dir>/manifest.json` and `<dir>/root/<n>.root.json`, with a
/// root key and a release key of its own.
pub struct SignedFleet {
    pub dir: PathBuf,
    pub root_key: flotilla_signing::PrivateKey,
    pub release_key: flotilla_signing::PrivateKey,
    pub serial: std::cell::Cell<u64>,
}

impl SignedFleet {
    /// Writes root 1 under `dir`.
    pub fn new(dir: &std::path::Path) -> SignedFleet {
        let f = SignedFleet {
            dir: dir.to_owned(),
            root_key: flotilla_signing::PrivateKey::generate(),
            release_key: flotilla_signing::PrivateKey::generate(),
            serial: std::cell::Cell::new(0),
        };
        std::fs::create_dir_all(dir.join("root")).unwrap();
        let root = flotilla_signing::Root::new(
            1,
            chrono::Utc::now() + chrono::Duration::days(365),
            &[f.root_key.public_key()],
            1,
            &[f.release_key.public_key()],
            1,
        )
        .unwrap();
        let mut env = flotilla_signing::Envelope::new(
            flotilla_signing::ROOT_PAYLOAD_TYPE,
            &root.to_payload(),
        );
        env.sign(&f.root_key).unwrap();
        std::fs::write(f.root_path(), env.to_json_pretty()).unwrap();
        f
    }

    /// The trust root (`--trust-root`).
    pub fn root_path(&self) -> PathBuf {
        self.dir.join("root/1.root.json")
    }

    /// The manifest (`--manifest`).
    pub fn manifest_path(&self) -> PathBuf {
        self.dir.join("manifest.json")
    }

    /// Points settings at this fleet.
    pub fn configure(&self, s: &mut Settings) {
        s.manifest = Some(self.manifest_path().display().to_string());
        s.trust_root = Some(self.root_path());
        s.manifest_refresh = Duration::from_secs(1);
    }

    /// The envelope of a manifest rolling `release` out on `stable` with
    /// these thresholds (canary 50%, then all after a day), signed by `key`.
    pub fn envelope(
        &self,
        key: &flotilla_signing::PrivateKey,
        release: &str,
        max_failure_rate: f64,
        min_reports: u32,
    ) -> Vec<u8> {
        self.serial.set(self.serial.get() + 1);
        let now = chrono::Utc::now();
        let payload = serde_json::json!({
            "fleet": "test",
            "serial": self.serial.get(),
            "issued": now,
            "expires": now + chrono::Duration::days(7),
            "releases": {
                release: {"version": release, "artifacts": {}}
            },
            "channels": {
                "stable": {
                    "release": release,
                    "start": "2026-01-01T00:00:00Z",
                    "max_failure_rate": max_failure_rate,
                    "min_reports": min_reports,
                    "waves": [
                        {"name": "canary", "percent": 50.0, "after": "0s", "spread": "0s"},
                        {"name": "all", "percent": 100.0, "after": "1d", "spread": "0s"}
                    ]
                }
            }
        });
        let mut env = flotilla_signing::Envelope::new(
            flotilla_protocol::MANIFEST_PAYLOAD_TYPE,
            payload.to_string().as_bytes(),
        );
        env.sign(key).unwrap();
        env.to_json_pretty().into_bytes()
    }

    /// Signs and writes a manifest with the release key.
    pub fn publish(&self, release: &str, max_failure_rate: f64, min_reports: u32) {
        let env = self.envelope(&self.release_key, release, max_failure_rate, min_reports);
        std::fs::write(self.manifest_path(), env).unwrap();
    }
}
