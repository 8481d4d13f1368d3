//! Migrations with the real agent binary: a legacy install under
//! `etc/flotilla-legacy` and `var/lib/flotilla-legacy` with a schema-1
//! config, on a host laid out like a real one under a temp prefix
//! (`etc/flotilla/agent.toml`, `var/lib/flotilla`, `opt/flotilla`).

#[path = "support/mod.rs"]
mod support;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use flotilla_protocol::{Event, EventKind, EventStatus};
use support::bins;
use support::fleet::Fleet;
use support::host::output_retrying_busy;

/// An event the legacy agent spooled and never delivered.
const LEGACY_EVENT: &str = "{\"id\":\"0190a1b2-0000-7000-8000-00000000beef\",\"agent_id\":\"legacy-01\",\"ts\":\"2025-06-01T00:00:00Z\",\"kind\":\"agent_startup\",\"status\":\"success\",\"severity\":\"info\",\"component\":\"agent\",\"message\":\"legacy agent started\"}\n";

/// A host under a prefix, installed over a legacy layout.
struct Legacy {
    root: PathBuf,
    enroll_token: Vec<u8>,
    agent_token: Vec<u8>,
}

fn fleet(tmp: &Path) -> Fleet {
    let f = Fleet::new(tmp);
    f.release("1.0.0", &bins::agent("v1"), None);
    f.rollout("1.0.0", None, &[]);
    f.sign();
    f
}

/// A port nobody listens on: the reporter is down.
fn dead_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Legacy {
    fn new(tmp: &Path, fleet: &Fleet) -> Legacy {
        let root = tmp.join("host");
        let r = root.display().to_string();
        let legacy_etc = root.join("etc/flotilla-legacy");
        let legacy_var = root.join("var/lib/flotilla-legacy");
        fs::create_dir_all(&legacy_etc).unwrap();
        fs::create_dir_all(&legacy_var).unwrap();
        let config = format!(
            r#"# legacy agent config (schema 1: no config_schema key)
agent_id = "legacy-01"
channel = "stable"
trust_root = "{r}/etc/flotilla/root.json"
state_dir = "{r}/var/lib/flotilla"
install_dir = "{r}/opt/flotilla"

[source]
git = "{git}"
branch = "main"

[artifacts]
base_url = "file://{store}/"

[reporter]
url = "http://127.0.0.1:{port}"
token_file = "{r}/etc/flotilla/enroll.token"   # renamed in schema 2
fail_open = true

[update]
attempts = 2
"#,
            git = fleet.file_url(),
            store = fleet.store.display(),
            port = dead_port(),
        );
        fs::write(legacy_etc.join("agent.toml"), config).unwrap();
        fs::copy(fleet.root1(), legacy_etc.join("root.json")).unwrap();
        let enroll_token: Vec<u8> = (0..=255u8).rev().collect();
        fs::write(legacy_etc.join("enroll.token"), &enroll_token).unwrap();
        fs::set_permissions(
            legacy_etc.join("enroll.token"),
            fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        let agent_token =
            b"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef".to_vec();
        // The legacy state dir has state layout 1: the agent token as
        // `token`, undelivered events in `events.jsonl`.
        fs::write(legacy_var.join("token"), &agent_token).unwrap();
        fs::set_permissions(legacy_var.join("token"), fs::Permissions::from_mode(0o600)).unwrap();
        fs::write(legacy_var.join("events.jsonl"), LEGACY_EVENT).unwrap();
        let vdir = root.join("opt/flotilla/versions/1.0.0");
        fs::create_dir_all(&vdir).unwrap();
        fs::copy(bins::agent("v1"), vdir.join("flotilla-agent")).unwrap();
        std::os::unix::fs::symlink("versions/1.0.0", root.join("opt/flotilla/current")).unwrap();
        Legacy {
            root,
            enroll_token,
            agent_token,
        }
    }

    fn config(&self) -> PathBuf {
        self.root.join("etc/flotilla/agent.toml")
    }

    fn state(&self) -> PathBuf {
        self.root.join("var/lib/flotilla")
    }

    fn run(&self, env: &[(&str, &str)]) -> Output {
        let mut cmd = Command::new(self.root.join("opt/flotilla/current/flotilla-agent"));
        cmd.arg("--config")
            .arg(self.config())
            .arg("run")
            .env_remove("FLOTILLA_FAULT");
        for (k, v) in env {
            cmd.env(k, v);
        }
        output_retrying_busy(&mut cmd)
    }

    fn pass(&self) -> String {
        let out = self.run(&[]);
        assert!(
            out.status.success(),
            "pass failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn events(&self) -> Vec<Event> {
        fs::read_to_string(self.state().join("spool/events.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn events_of(&self, kind: EventKind, status: EventStatus) -> Vec<Event> {
        self.events()
            .into_iter()
            .filter(|e| e.kind == kind && e.status == status)
            .collect()
    }

    fn backups(&self) -> usize {
        fs::read_dir(self.state().join("backups"))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    /// The host is fully migrated: current paths, schema 3, secrets intact.
    fn assert_migrated(&self) {
        let cfg = fs::read_to_string(self.config()).unwrap();
        assert!(cfg.contains("config_schema = 3"), "{cfg}");
        assert!(cfg.contains("enrollment_token_file"), "{cfg}");
        assert!(cfg.contains("gate_unreachable = \"proceed\""), "{cfg}");
        assert!(cfg.contains("health_attempts = 2"), "{cfg}");
        assert!(
            cfg.contains("# renamed in schema 2"),
            "comments are kept: {cfg}"
        );
        assert_eq!(
            fs::read(self.root.join("etc/flotilla/enroll.token")).unwrap(),
            self.enroll_token
        );
        assert_eq!(
            fs::read(self.state().join("agent.token")).unwrap(),
            self.agent_token
        );
        let mode = fs::metadata(self.root.join("etc/flotilla/enroll.token"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(!self.root.join("etc/flotilla-legacy").exists());
        assert!(!self.root.join("var/lib/flotilla-legacy").exists());
        // State layout 2: the old spool's event is in the current spool, once.
        assert!(!self.state().join("token").exists());
        assert!(!self.state().join("events.jsonl").exists());
        let legacy_events = self
            .events()
            .into_iter()
            .filter(|e| e.message == "legacy agent started")
            .count();
        assert_eq!(legacy_events, 1, "the legacy spool's event, once");
    }

    /// The host is exactly as it was installed (legacy layout, nothing moved).
    fn assert_untouched(&self) {
        assert!(!self.config().exists());
        let legacy = self.root.join("etc/flotilla-legacy");
        assert_eq!(
            fs::read(legacy.join("enroll.token")).unwrap(),
            self.enroll_token
        );
        assert!(fs::read_to_string(legacy.join("agent.toml"))
            .unwrap()
            .contains("fail_open = true"));
        assert_eq!(
            fs::read(self.root.join("var/lib/flotilla-legacy/token")).unwrap(),
            self.agent_token
        );
    }
}

fn du(dir: &Path) -> u64 {
    let mut total = 0;
    for e in fs::read_dir(dir).unwrap().flatten() {
        let m = e.metadata().unwrap();
        total += if m.is_dir() { du(&e.path()) } else { m.len() };
    }
    total
}

/// The seed bug: no migration loop. 1,000 passes of an agent that is not
/// enrolled, whose reporter is down: one migration, one backup, and a state
/// dir that does not grow.
#[test]
fn legacy_install_migrates_once_and_a_thousand_passes_stay_flat() {
    let tmp = tempfile::tempdir().unwrap();
    let fleet = fleet(tmp.path());
    let host = Legacy::new(tmp.path(), &fleet);
    host.pass();
    host.assert_migrated();
    assert_eq!(host.backups(), 1);
    let detected = host.events_of(EventKind::MigrationDetection, EventStatus::Success);
    assert_eq!(detected.len(), 1);
    let executed = host.events_of(EventKind::MigrationExecution, EventStatus::Success);
    assert_eq!(executed.len(), 1);
    assert_eq!(
        executed[0].details["migration_ids"],
        serde_json::json!([
            "legacy-layout",
            "config-schema-2",
            "config-schema-3",
            "state-layout-2"
        ])
    );
    for key in [
        "hostname",
        "kernel",
        "state_dir_free_bytes",
        "agent_uptime_ms",
    ] {
        assert!(
            executed[0].details["system"].get(key).is_some(),
            "system.{key} missing"
        );
    }
    host.pass();
    let size_after_2 = du(&host.state());
    for _ in 0..998 {
        host.pass();
    }
    assert_eq!(host.backups(), 1, "no backup beyond the first migration");
    let size_after_1000 = du(&host.state());
    assert!(
        size_after_1000 <= size_after_2 + 4096,
        "state dir grew from {size_after_2} to {size_after_1000} bytes"
    );
    assert_eq!(
        host.events_of(EventKind::MigrationExecution, EventStatus::Success)
            .len(),
        1
    );
    assert!(
        !fs::read_dir(host.state())
            .unwrap()
            .any(|e| e.unwrap().file_name() == "agent.token.pending")
            || host.state().join("agent.token").exists()
    );
}

#[test]
fn invalid_config_is_reported_and_left_as_it_was() {
    let tmp = tempfile::tempdir().unwrap();
    let fleet = fleet(tmp.path());
    let host = Legacy::new(tmp.path(), &fleet);
    // Not a legacy install: only a config at the current path, and it is broken.
    fs::remove_dir_all(host.root.join("etc/flotilla-legacy")).unwrap();
    fs::remove_dir_all(host.root.join("var/lib/flotilla-legacy")).unwrap();
    fs::create_dir_all(host.config().parent().unwrap()).unwrap();
    let garbage = "agent_id = [\"unclosed\n";
    fs::write(host.config(), garbage).unwrap();
    let out = host.run(&[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("agent.toml"), "{err}");
    assert_eq!(fs::read_to_string(host.config()).unwrap(), garbage);
    let failed = host.events_of(EventKind::MigrationDetection, EventStatus::Failed);
    assert_eq!(failed.len(), 1, "{:?}", host.events());
    assert!(
        failed[0].message.contains("agent.toml"),
        "{}",
        failed[0].message
    );
    assert!(failed[0].details["errors"][0]["error_chain"].is_array());
    assert_eq!(
        host.events_of(EventKind::AgentStartup, EventStatus::Failed)
            .len(),
        1
    );
    assert_eq!(host.backups(), 0);
}

/// Runs the agent as `nobody`, so that permission bits bite even in a
/// root-run CI.
#[test]
fn permission_denied_on_the_config_dir_restores_and_reports() {
    let tmp = tempfile::tempdir().unwrap();
    let fleet = fleet(tmp.path());
    let host = Legacy::new(tmp.path(), &fleet);
    // nobody owns the host but not the (new) config dir.
    chown_r(tmp.path(), 65534);
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let etc = host.root.join("etc/flotilla");
    fs::create_dir_all(&etc).unwrap();
    fs::set_permissions(&etc, fs::Permissions::from_mode(0o755)).unwrap();
    // The binary was just copied: make sure it can be executed before setpriv
    // does (see output_retrying_busy).
    let version = output_retrying_busy(
        Command::new(host.root.join("opt/flotilla/current/flotilla-agent")).arg("version"),
    );
    assert!(version.status.success());
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(host.root.join("opt/flotilla/current/flotilla-agent"))
        .arg("--config")
        .arg(host.config())
        .arg("run")
        .env_remove("FLOTILLA_FAULT")
        .output()
        .expect("setpriv (util-linux) runs the agent as nobody");
    assert!(
        !out.status.success(),
        "the config cannot be moved, so it cannot load"
    );
    host.assert_untouched();
    let failed = host.events_of(EventKind::MigrationExecution, EventStatus::Failed);
    assert_eq!(failed.len(), 1, "{:?}", host.events());
    let chain = failed[0].details["error_chain"].to_string();
    assert!(chain.contains("Permission denied"), "{chain}");
    assert_eq!(failed[0].details["restored"], true);
    assert!(failed[0].details["paths"]
        .to_string()
        .contains("flotilla-legacy"));
}

fn chown_r(p: &Path, uid: u32) {
    std::os::unix::fs::lchown(p, Some(uid), Some(uid)).unwrap();
    if fs::symlink_metadata(p).unwrap().is_dir() {
        for e in fs::read_dir(p).unwrap().flatten() {
            chown_r(&e.path(), uid);
        }
    }
}

/// A full disk where the migrated config goes: a 64 KiB tmpfs, filled.
#[test]
fn full_disk_on_the_config_dir_restores_and_reports() {
    let tmp = tempfile::tempdir().unwrap();
    let fleet = fleet(tmp.path());
    let host = Legacy::new(tmp.path(), &fleet);
    // The legacy-layout step moves the files; the schema steps then rewrite
    // the config where it landed. Put the current config dir on a full tmpfs.
    let etc = host.root.join("etc/flotilla");
    fs::create_dir_all(&etc).unwrap();
    let _mount = Mount::tmpfs(&etc, "64k");
    let filler = etc.join(".filler");
    let _ = fs::write(&filler, vec![0u8; 64 * 1024]);
    let out = host.run(&[]);
    assert!(
        !out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let failed = host.events_of(EventKind::MigrationExecution, EventStatus::Failed);
    assert_eq!(failed.len(), 1, "{:?}", host.events());
    let chain = failed[0].details["error_chain"].to_string();
    assert!(chain.contains("No space left on device"), "{chain}");
    assert_eq!(failed[0].details["restored"], true);
    host.assert_untouched();
}

/// A tmpfs mounted for the length of a test.
struct Mount(PathBuf);

impl Mount {
    fn tmpfs(at: &Path, size: &str) -> Mount {
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .expect("mount runs");
        assert!(
            ok.success(),
            "mounting a tmpfs needs root (CI and the dev machines run as root)"
        );
        Mount(at.to_owned())
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// A pass killed in the middle of each migration step; the next passes
/// finish the job with the same backup.
#[test]
fn crash_in_every_migration_step_recovers() {
    for point in flotilla_agent::migrations::FAULT_POINTS {
        let tmp = tempfile::tempdir().unwrap();
        let fleet = fleet(tmp.path());
        let host = Legacy::new(tmp.path(), &fleet);
        let out = host.run(&[("FLOTILLA_FAULT", point)]);
        assert!(
            !out.status.success(),
            "{point}: the fault point was not reached"
        );
        // Recovery: a few passes converge.
        let mut ok = false;
        for _ in 0..3 {
            if host.run(&[]).status.success() {
                ok = true;
                break;
            }
        }
        assert!(ok, "{point}: passes do not recover");
        host.assert_migrated();
        assert_eq!(host.backups(), 1, "{point}: one backup for the whole run");
        let state: serde_json::Value =
            serde_json::from_slice(&fs::read(host.state().join("migrations.json")).unwrap())
                .unwrap();
        assert!(state["in_progress"].is_null(), "{point}: {state}");
        for id in [
            "legacy-layout",
            "config-schema-2",
            "config-schema-3",
            "state-layout-2",
        ] {
            assert!(
                state["completed"].get(id).is_some(),
                "{point}: {id} not recorded: {state}"
            );
        }
    }
}
