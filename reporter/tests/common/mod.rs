//! Test helpers: a reporter on 127.0.0.1:0 with its database in a temp dir.
#![allow(dead_code)]

pub mod pg;

use std::ffi::OsString;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use flotilla_protocol::api::{EnrollRequest, EnrollResponse};
use flotilla_protocol::{Event, EventKind, EventStatus};
use flotilla_reporter::settings::{DbTarget, RateLimit, Secret, Settings};
use flotilla_reporter::store::Store;
use tokio::sync::oneshot;

pub const ADMIN: &str = "admin-token-for-tests-0123456789";

/// A database backend the integration tests run on.
#[derive(Clone, Debug)]
pub enum Backend {
    /// A SQLite file in the test's temp dir.
    Sqlite,
    /// A fresh database on the test server ([`pg::server`]).
    Postgres(pg::TestPg),
}

impl Backend {
    /// PostgreSQL, or `None` (after saying so) when there is no test
    /// server and none is required.
    pub fn postgres(test: &str) -> Option<Backend> {
        pg::server(test).map(Backend::Postgres)
    }

    /// The schema version a migrated database of this backend has.
    pub fn schema_version(&self) -> u32 {
        match self {
            Backend::Sqlite => flotilla_reporter::db::schema::VERSION,
            Backend::Postgres(_) => flotilla_reporter::db::pg::schema::VERSION,
        }
    }

    /// A new, empty database: `dir/reporter.db`, or a fresh PostgreSQL
    /// database.
    pub fn fresh(&self, dir: &Path) -> TestDb {
        match self {
            Backend::Sqlite => TestDb::Sqlite(dir.join("reporter.db")),
            Backend::Postgres(srv) => TestDb::Postgres {
                url: srv.fresh_database(),
                password_file: srv.password_file.clone(),
                ca_file: srv.ca_file.clone(),
                password: srv.password.clone(),
            },
        }
    }
}

/// Runs each `async fn NAME(backend: Backend)` listed as a test on both
/// backends: `sqlite::NAME` and `postgres::NAME` (skipped, saying so,
/// without a PostgreSQL test server unless `FLOTILLA_REQUIRE_PG` is set).
///
/// `both!(#[tokio::test]; first, second);`
#[allow(unused_macros)]
macro_rules! both {
    (#[$attr:meta]; $($name:ident),+ $(,)?) => {
        mod sqlite {
            $(
                #[$attr]
                async fn $name() {
                    super::$name($crate::common::Backend::Sqlite).await
                }
            )+
        }
        mod postgres {
            $(
                #[$attr]
                async fn $name() {
                    if let Some(b) = $crate::common::Backend::postgres(stringify!($name)) {
                        super::$name(b).await
                    }
                }
            )+
        }
    };
}
#[allow(unused_imports)]
pub(crate) use both;

/// One test's database on either backend.
#[derive(Clone, Debug)]
pub enum TestDb {
    /// A SQLite file.
    Sqlite(PathBuf),
    /// A PostgreSQL database on the test server.
    Postgres {
        /// Its URL (no password).
        url: String,
        /// The password's file (0600).
        password_file: PathBuf,
        /// The server's CA, when it has TLS on.
        ca_file: Option<PathBuf>,
        /// The password, for the tests' own connections.
        password: String,
    },
}

impl TestDb {
    /// `sqlite` or `postgres`, for messages.
    pub fn name(&self) -> &'static str {
        match self {
            TestDb::Sqlite(_) => "sqlite",
            TestDb::Postgres { .. } => "postgres",
        }
    }

    /// The SQLite file; panics on PostgreSQL (for the SQLite-only tests).
    pub fn path(&self) -> &Path {
        match self {
            TestDb::Sqlite(p) => p,
            TestDb::Postgres { .. } => panic!("a SQLite-only test on PostgreSQL"),
        }
    }

    /// The command-line arguments naming it: `--db ...` (and the password
    /// and CA files).
    pub fn args(&self) -> Vec<OsString> {
        match self {
            TestDb::Sqlite(p) => vec!["--db".into(), p.into()],
            TestDb::Postgres {
                url,
                password_file,
                ca_file,
                ..
            } => {
                let mut a: Vec<OsString> = vec![
                    "--db".into(),
                    url.into(),
                    "--db-password-file".into(),
                    password_file.into(),
                ];
                if let Some(ca) = ca_file {
                    a.extend(["--db-ca-file".into(), ca.into()]);
                }
                a
            }
        }
    }

    /// The [`DbTarget`] for an in-process server.
    pub fn target(&self) -> DbTarget {
        match self {
            TestDb::Sqlite(p) => DbTarget::Sqlite(p.clone()),
            TestDb::Postgres {
                url, password_file, ..
            } => DbTarget::Postgres {
                url: url.clone(),
                password_file: Some(password_file.clone()),
            },
        }
    }

    /// Points `s` at this database.
    pub fn configure(&self, s: &mut Settings) {
        s.db = self.target();
        if let TestDb::Postgres { ca_file, .. } = self {
            s.db_ca_file = ca_file.clone();
        }
    }

    /// Runs `f` on a [`Store`] of this database (created when missing, as
    /// `serve` would), then waits for its writes to be committed: the
    /// admin commands' way in, without a process.
    pub async fn with_store<T, F, Fut>(&self, f: F) -> T
    where
        F: FnOnce(Store) -> Fut,
        Fut: Future<Output = T>,
    {
        let mut s = Settings::default();
        self.configure(&mut s);
        let (store, running) = Store::open(&s)
            .await
            .unwrap_or_else(|e| panic!("{}: opening the store: {e}", self.name()));
        let r = f(store).await;
        running.stop().await;
        r
    }

    /// Runs `sql` (a statement both SQLite and PostgreSQL accept, values
    /// inline) on the database; the rows it changed.
    pub async fn execute(&self, sql: &str) -> u64 {
        match self {
            TestDb::Sqlite(p) => {
                let conn = flotilla_reporter::db::open_writer(p, Default::default()).unwrap();
                conn.execute(sql, [])
                    .unwrap_or_else(|e| panic!("{sql}: {e}")) as u64
            }
            TestDb::Postgres { .. } => self
                .pg()
                .await
                .execute(sql, &[])
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}")),
        }
    }

    /// The integer `sql` (e.g. a `count(*)`, on both backends) answers.
    pub async fn scalar(&self, sql: &str) -> i64 {
        match self {
            TestDb::Sqlite(p) => flotilla_reporter::db::open_reader(p)
                .unwrap()
                .query_row(sql, [], |r| r.get(0))
                .unwrap_or_else(|e| panic!("{sql}: {e}")),
            TestDb::Postgres { .. } => self
                .pg()
                .await
                .query_one(sql, &[])
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"))
                .get(0),
        }
    }

    /// The rows `sql` answers, every column TEXT (`CAST(n AS TEXT)` for
    /// a number, on both backends).
    pub async fn rows(&self, sql: &str) -> Vec<Vec<String>> {
        match self {
            TestDb::Sqlite(p) => {
                let conn = flotilla_reporter::db::open_reader(p).unwrap();
                let mut st = conn.prepare(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
                let n = st.column_count();
                st.query_map([], |r| (0..n).map(|i| r.get(i)).collect())
                    .unwrap()
                    .map(|r| r.unwrap_or_else(|e| panic!("{sql}: {e}")))
                    .collect()
            }
            TestDb::Postgres { .. } => self
                .pg()
                .await
                .query(sql, &[])
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"))
                .iter()
                .map(|r| (0..r.len()).map(|i| r.get(i)).collect())
                .collect(),
        }
    }

    /// The ids of every stored event.
    pub async fn event_ids(&self) -> Vec<uuid::Uuid> {
        const SQL: &str = "SELECT id FROM events";
        let ids: Vec<Vec<u8>> = match self {
            TestDb::Sqlite(p) => {
                let conn = flotilla_reporter::db::open_reader(p).unwrap();
                let mut st = conn.prepare(SQL).unwrap();
                st.query_map([], |r| r.get(0))
                    .unwrap()
                    .map(|r| r.unwrap())
                    .collect()
            }
            TestDb::Postgres { .. } => self
                .pg()
                .await
                .query(SQL, &[])
                .await
                .unwrap()
                .iter()
                .map(|r| r.get(0))
                .collect(),
        };
        ids.iter()
            .map(|id| uuid::Uuid::from_slice(id).unwrap())
            .collect()
    }

    /// A plain connection of the test's own (the test server has no TLS
    /// on its loopback URL).
    async fn pg(&self) -> tokio_postgres::Client {
        let TestDb::Postgres { url, password, .. } = self else {
            unreachable!("pg() on SQLite")
        };
        let mut config: tokio_postgres::Config = url.parse().unwrap();
        config.password(password);
        let (client, conn) = config.connect(tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(conn);
        client
    }
}

pub struct Server {
    pub url: String,
    pub db: TestDb,
    pub http: reqwest::Client,
    pub dir: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Server {
    /// On SQLite.
    pub async fn start() -> Server {
        Server::start_with(|_| {}).await
    }

    /// On SQLite, with `tweak`ed settings.
    pub async fn start_with(tweak: impl FnOnce(&mut Settings)) -> Server {
        Server::on_with(&Backend::Sqlite, tweak).await
    }

    /// On a fresh database of `backend`.
    pub async fn on(backend: &Backend) -> Server {
        Server::on_with(backend, |_| {}).await
    }

    /// On a fresh database of `backend`, with `tweak`ed settings.
    pub async fn on_with(backend: &Backend, tweak: impl FnOnce(&mut Settings)) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let db = backend.fresh(dir.path());
        Server::start_in(dir, db, tweak).await
    }

    /// On `db` (which may outlive the server), with `tweak`ed settings.
    pub async fn on_db(db: &TestDb, tweak: impl FnOnce(&mut Settings)) -> Server {
        Server::start_in(tempfile::tempdir().unwrap(), db.clone(), tweak).await
    }

    async fn start_in(
        dir: tempfile::TempDir,
        db: TestDb,
        tweak: impl FnOnce(&mut Settings),
    ) -> Server {
        let mut s = Settings {
            admin_token: Some(Secret::new(ADMIN)),
            rate_limit: RateLimit {
                per_second: 1000.0,
                burst: 1000.0,
            },
            rollout_cache: Duration::ZERO,
            ..Settings::default()
        };
        db.configure(&mut s);
        tweak(&mut s);
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

    /// A direct connection to the SQLite database (for the SQLite-only
    /// tests).
    pub fn conn(&self) -> rusqlite::Connection {
        flotilla_reporter::db::open_writer(self.db.path(), Default::default()).unwrap()
    }

    /// A new enrollment token (no expiry, `uses` agents): id and secret.
    pub async fn enrollment_token(&self, uses: Option<u64>) -> (String, String) {
        let (info, secret) = self
            .db
            .with_store(|st| async move { st.token_create(None, uses, "test".into()).await })
            .await
            .unwrap();
        (info.id, secret)
    }

    /// Every token, as `token list` reads them.
    pub async fn tokens(&self) -> Vec<flotilla_reporter::db::tokens::TokenInfo> {
        self.db
            .with_store(|st| async move { st.tokens_list().await })
            .await
            .unwrap()
    }

    /// Runs `f` on a store of the server's database (an admin command's
    /// way in), e.g. `s.store(|st| async move { st.revoke_agent(id).await })`.
    pub async fn store<T, F, Fut>(&self, f: F) -> T
    where
        F: FnOnce(Store) -> Fut,
        Fut: Future<Output = T>,
    {
        self.db.with_store(f).await
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
        let (_, token) = self.enrollment_token(None).await;
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
    db: &TestDb,
    admin: &std::path::Path,
    extra: &[&str],
    nofile: Option<u64>,
) -> (std::process::Child, String) {
    use std::io::BufRead;
    use std::os::unix::process::CommandExt;
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_flotilla-reporter"));
    cmd.args(["serve", "--listen", "127.0.0.1:0"])
        .args(db.args())
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

/// The real binary serving a fresh database, with the admin token [`ADMIN`]
/// and `config` as its `--config` file; killed on drop.
pub struct Binary {
    pub child: std::process::Child,
    pub url: String,
    pub db: TestDb,
    pub dir: tempfile::TempDir,
}

impl Binary {
    /// On SQLite.
    pub fn start(config: &str) -> Binary {
        Binary::start_with(config, None)
    }

    /// On SQLite, with at most `nofile` file descriptors.
    pub fn start_with(config: &str, nofile: Option<u64>) -> Binary {
        Binary::on_with(&Backend::Sqlite, config, nofile)
    }

    /// On a fresh database of `backend`.
    pub fn on(backend: &Backend, config: &str) -> Binary {
        Binary::on_with(backend, config, None)
    }

    /// On a fresh database of `backend`, with at most `nofile` file
    /// descriptors.
    pub fn on_with(backend: &Backend, config: &str, nofile: Option<u64>) -> Binary {
        let dir = tempfile::tempdir().unwrap();
        let db = backend.fresh(dir.path());
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
            .args(self.db.args())
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
