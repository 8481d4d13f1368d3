use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::*;

fn ctx(root: &Path) -> Context {
    Context {
        prefix: root.to_owned(),
        config_path: root.join("etc/flotilla/agent.toml"),
        state_dir: root.join("var/lib/flotilla"),
        legacy_config_dir: root.join("etc/flotilla-legacy"),
        legacy_state_dir: root.join("var/lib/flotilla-legacy"),
        from_version: Some("1.0.0".into()),
        to_version: "1.1.0".into(),
        keep_backups: 3,
        retries: 3,
    }
}

/// Writes `text` to `file` when it does not hold it yet; fails on demand.
struct WriteFile {
    id: &'static str,
    file: &'static str,
    text: &'static str,
    fail: Arc<AtomicBool>,
}

impl Migration for WriteFile {
    fn id(&self) -> &'static str {
        self.id
    }
    fn detect(&self, ctx: &Context) -> Result<Detection> {
        let p = ctx.prefix.join(self.file);
        if fs::read_to_string(&p).ok().as_deref() == Some(self.text) {
            return Ok(Detection::NotNeeded);
        }
        Ok(Detection::Needed {
            reason: "differs".into(),
            paths: vec![p],
        })
    }
    fn execute(&self, ctx: &Context) -> Result<()> {
        let p = ctx.prefix.join(self.file);
        if self.fail.load(Ordering::SeqCst) {
            return Err(Error::io("writing", &p)(std::io::Error::other(
                "disk on fire",
            )));
        }
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, self.text).unwrap();
        Ok(())
    }
}

fn wf(
    id: &'static str,
    file: &'static str,
    text: &'static str,
) -> (Box<dyn Migration>, Arc<AtomicBool>) {
    let fail = Arc::new(AtomicBool::new(false));
    (
        Box::new(WriteFile {
            id,
            file,
            text,
            fail: fail.clone(),
        }),
        fail,
    )
}

fn backups(c: &Context) -> usize {
    fs::read_dir(c.backups_dir())
        .map(|d| d.count())
        .unwrap_or(0)
}

#[test]
fn fresh_install_needs_nothing_and_makes_no_backup() {
    let root = tempfile::tempdir().unwrap();
    let c = ctx(root.path());
    let r = run(&c, &builtin::registry()).unwrap();
    assert_eq!(r.outcome, RunOutcome::NothingToDo);
    assert!(!c.backups_dir().exists());
    let ev = r.events("a", &c, &Map::new());
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].status, EventStatus::NotNeeded);
}

#[test]
fn completed_migration_never_runs_again_and_backups_stay_bounded() {
    let root = tempfile::tempdir().unwrap();
    let c = ctx(root.path());
    let (m, _) = wf("m1", "etc/x", "one");
    let reg = vec![m];
    let r = run(&c, &reg).unwrap();
    assert!(matches!(r.outcome, RunOutcome::Completed { .. }), "{r:?}");
    assert_eq!(backups(&c), 1);
    // Someone changes the file back: a completed migration still never reruns.
    fs::write(root.path().join("etc/x"), "changed").unwrap();
    for _ in 0..50 {
        let r = run(&c, &reg).unwrap();
        assert_eq!(r.outcome, RunOutcome::NothingToDo);
        assert!(
            r.events("a", &c, &Map::new()).is_empty(),
            "no event noise when everything is completed"
        );
    }
    assert_eq!(backups(&c), 1);
    // New migrations in later versions make new backups, at most keep_backups remain.
    let ids = ["m2", "m3", "m4", "m5"];
    for id in ids {
        let (m, _) = wf(
            id,
            "etc/x",
            Box::leak(format!("{id}-text").into_boxed_str()),
        );
        run(&c, &[m]).unwrap();
    }
    assert_eq!(backups(&c), 3);
}

#[test]
fn failed_step_restores_backup_and_retries_are_bounded() {
    let root = tempfile::tempdir().unwrap();
    let c = ctx(root.path());
    fs::create_dir_all(root.path().join("etc")).unwrap();
    fs::write(root.path().join("etc/a"), "original a").unwrap();
    let (m1, _) = wf("m1", "etc/a", "new a");
    let (m2, fail) = wf("m2", "etc/b", "new b");
    fail.store(true, Ordering::SeqCst);
    let reg = vec![m1, m2];
    for attempt in 1..=3 {
        let r = run(&c, &reg).unwrap();
        let RunOutcome::Failed { id, restored, .. } = &r.outcome else {
            panic!("{r:?}")
        };
        assert_eq!((id.as_str(), *restored), ("m2", true), "attempt {attempt}");
        assert_eq!(
            fs::read_to_string(root.path().join("etc/a")).unwrap(),
            "original a"
        );
        assert!(!root.path().join("etc/b").exists());
        let ev = r.events("a", &c, &Map::new());
        let exec = ev
            .iter()
            .find(|e| e.kind == EventKind::MigrationExecution)
            .unwrap();
        assert_eq!(exec.status, EventStatus::Failed);
        assert_eq!(
            exec.details["error_chain"],
            serde_json::json!([
                "migration m2 to 1.1.0 failed",
                format!("writing {}", root.path().join("etc/b").display()),
                "disk on fire"
            ])
        );
    }
    let st = MigrationState::load(&c.state_dir).unwrap();
    assert!(
        st.completed.is_empty(),
        "a restored run forgets its completions"
    );
    assert_eq!(st.attempts["1.1.0"], 3);
    let r = run(&c, &reg).unwrap();
    assert_eq!(
        r.outcome,
        RunOutcome::RetriesExhausted {
            attempts: 3,
            first_notice: true
        }
    );
    assert_eq!(
        r.events("a", &c, &Map::new())
            .iter()
            .filter(|e| e.kind == EventKind::MigrationExecution)
            .count(),
        1
    );
    let r = run(&c, &reg).unwrap();
    assert_eq!(
        r.outcome,
        RunOutcome::RetriesExhausted {
            attempts: 3,
            first_notice: false
        }
    );
    assert!(r
        .events("a", &c, &Map::new())
        .iter()
        .all(|e| e.kind != EventKind::MigrationExecution));
    assert!(backups(&c) <= 3);
    // A new version tries again.
    let mut c2 = c.clone();
    c2.to_version = "1.2.0".into();
    fail.store(false, Ordering::SeqCst);
    assert!(matches!(
        run(&c2, &reg).unwrap().outcome,
        RunOutcome::Completed { .. }
    ));
}

#[test]
fn unwritable_backup_aborts_before_any_change() {
    let root = tempfile::tempdir().unwrap();
    let c = ctx(root.path());
    fs::create_dir_all(&c.state_dir).unwrap();
    // A file where the backups dir should be: the backup cannot be created.
    fs::write(c.backups_dir(), "not a dir").unwrap();
    fs::create_dir_all(root.path().join("etc")).unwrap();
    fs::write(root.path().join("etc/a"), "original").unwrap();
    let (m, _) = wf("m1", "etc/a", "new");
    let r = run(&c, &[m]).unwrap();
    assert!(
        matches!(r.outcome, RunOutcome::BackupFailed { .. }),
        "{r:?}"
    );
    assert_eq!(
        fs::read_to_string(root.path().join("etc/a")).unwrap(),
        "original"
    );
    assert!(r.failed());
}

#[test]
fn interrupted_run_resumes_with_its_own_backup() {
    let root = tempfile::tempdir().unwrap();
    let c = ctx(root.path());
    fs::create_dir_all(root.path().join("etc")).unwrap();
    fs::write(root.path().join("etc/a"), "original a").unwrap();
    let (m1, _) = wf("m1", "etc/a", "new a");
    let (m2, _) = wf("m2", "etc/b", "new b");
    let reg = vec![m1, m2];
    // Simulate a crash after m1 completed: backup made, state says in progress.
    let bdir = c.backups_dir().join("20260101T000000.000Z-1.0.0-1.1.0");
    backup::create(
        &bdir,
        &[root.path().join("etc/a"), root.path().join("etc/b")],
    )
    .unwrap();
    fs::write(root.path().join("etc/a"), "new a").unwrap();
    let mut st = MigrationState::default();
    st.completed.insert(
        "m1".into(),
        Completed {
            at: Utc::now(),
            by_version: "1.1.0".into(),
        },
    );
    st.in_progress = Some(InProgress {
        backup: "backups/20260101T000000.000Z-1.0.0-1.1.0".into(),
        from_version: Some("1.0.0".into()),
        to_version: "1.1.0".into(),
        started: Utc::now(),
        completed: vec!["m1".into()],
    });
    st.save(&c.state_dir).unwrap();
    let r = run(&c, &reg).unwrap();
    assert!(
        matches!(&r.outcome, RunOutcome::Completed { ids, .. } if ids == &["m2"]),
        "{r:?}"
    );
    assert_eq!(backups(&c), 1, "resuming makes no second backup");
    // The rollback of 1.1.0 restores the whole run, m1 included.
    assert!(restore_last_run(&c.state_dir, "1.1.0").unwrap());
    assert_eq!(
        fs::read_to_string(root.path().join("etc/a")).unwrap(),
        "original a"
    );
    assert!(!root.path().join("etc/b").exists());
    assert!(MigrationState::load(&c.state_dir)
        .unwrap()
        .completed
        .is_empty());
}

const SCHEMA1: &str = r#"# web tier agent
agent_id = "web-01"
channel = "stable"

[reporter]
url = "http://127.0.0.1:9"
token_file = "/etc/flotilla/enroll.token" # issued by ops
fail_open = false

[update]
attempts = 5

[site.custom]
rack = "b7"
"#;

#[test]
fn config_schema_1_to_3_keeps_comments_and_unknown_tables() {
    let root = tempfile::tempdir().unwrap();
    let c = ctx(root.path());
    fs::create_dir_all(c.config_path.parent().unwrap()).unwrap();
    fs::write(&c.config_path, SCHEMA1).unwrap();
    let r = run(&c, &builtin::registry()).unwrap();
    let RunOutcome::Completed { ids, .. } = &r.outcome else {
        panic!("{r:?}")
    };
    assert_eq!(ids, &["config-schema-2", "config-schema-3"]);
    let text = fs::read_to_string(&c.config_path).unwrap();
    assert!(text.contains("# web tier agent"), "{text}");
    assert!(text.contains("# issued by ops"), "{text}");
    assert!(
        text.contains("enrollment_token_file = \"/etc/flotilla/enroll.token\""),
        "{text}"
    );
    assert!(text.contains("gate_unreachable = \"wait\""), "{text}");
    assert!(text.contains("health_attempts = 5"), "{text}");
    assert!(
        text.contains("[site.custom]") && text.contains("rack = \"b7\""),
        "{text}"
    );
    assert!(
        !text.contains("token_file = \"/etc") || text.contains("enrollment_token_file"),
        "{text}"
    );
    assert_eq!(builtin::config_schema_of(&c.config_path), Some(3));
    // Second run: nothing.
    assert_eq!(
        run(&c, &builtin::registry()).unwrap().outcome,
        RunOutcome::NothingToDo
    );
}

/// A failed step's report names the migration, the version, the file, the
/// field and the cause, outermost first, in the event's message and chain.
#[test]
fn a_failed_migration_names_its_step_the_file_and_the_cause() {
    let root = tempfile::tempdir().unwrap();
    let c = ctx(root.path());
    fs::create_dir_all(c.config_path.parent().unwrap()).unwrap();
    let config = "[reporter]\nurl = \"https://r.example\"\nfail_open = \"maybe\"\n";
    fs::write(&c.config_path, config).unwrap();
    let r = run(&c, &builtin::registry()).unwrap();
    let RunOutcome::Failed {
        id,
        chain,
        restored,
        ..
    } = &r.outcome
    else {
        panic!("{r:?}")
    };
    assert_eq!((id.as_str(), *restored), ("config-schema-2", true));
    let file = c.config_path.display().to_string();
    assert_eq!(
        chain,
        &vec![
            "migration config-schema-2 to 1.1.0 failed".to_owned(),
            format!("{file}: reporter.fail_open: must be true or false"),
        ]
    );
    let ev = r.events("a", &c, &Map::new());
    let exec = ev
        .iter()
        .find(|e| e.kind == EventKind::MigrationExecution)
        .unwrap();
    assert_eq!(
        exec.message,
        format!(
            "migration config-schema-2 to 1.1.0 failed: {file}: reporter.fail_open: must be \
             true or false; backup restored, host left as it was"
        )
    );
    assert_eq!(exec.details["error_chain"], serde_json::json!(chain));
    assert_eq!(fs::read_to_string(&c.config_path).unwrap(), config);

    // An io cause keeps its source: the file, then what the system said.
    let e = Error::Step {
        id: "config-schema-3".into(),
        version: "1.1.0".into(),
        source: Box::new(Error::io("writing", &c.config_path)(std::io::Error::from(
            std::io::ErrorKind::PermissionDenied,
        ))),
    };
    let chain = flotilla_protocol::chain(&e);
    assert_eq!(chain[1], format!("writing {file}"));
    assert!(chain[2].contains("permission denied"), "{chain:?}");
    // A config that is not TOML: the file, then the parser's complaint.
    fs::write(&c.config_path, "[reporter\n").unwrap();
    let r = run(&c, &builtin::registry()).unwrap();
    let Some((_, Detected::Failed(chain))) = r
        .detections
        .iter()
        .find(|(_, d)| matches!(d, Detected::Failed(_)))
    else {
        panic!("{r:?}")
    };
    assert_eq!(chain[0], format!("{file}: not valid TOML"));
    assert!(chain.len() > 1, "the parser's complaint is kept: {chain:?}");
}

#[test]
fn invalid_config_is_a_detection_failure_with_the_file_named() {
    let root = tempfile::tempdir().unwrap();
    let c = ctx(root.path());
    fs::create_dir_all(c.config_path.parent().unwrap()).unwrap();
    fs::write(&c.config_path, "agent_id = [unclosed").unwrap();
    let r = run(&c, &builtin::registry()).unwrap();
    assert_eq!(r.outcome, RunOutcome::NothingToDo);
    let ev = r.events("a", &c, &Map::new());
    assert_eq!(ev[0].kind, EventKind::MigrationDetection);
    assert_eq!(ev[0].status, EventStatus::Failed);
    assert!(ev[0].message.contains("agent.toml"), "{}", ev[0].message);
    assert_eq!(
        fs::read_to_string(&c.config_path).unwrap(),
        "agent_id = [unclosed"
    );
}

#[test]
fn legacy_layout_moves_secrets_byte_for_byte() {
    let root = tempfile::tempdir().unwrap();
    let c = ctx(root.path());
    fs::create_dir_all(&c.legacy_config_dir).unwrap();
    fs::create_dir_all(&c.legacy_state_dir).unwrap();
    let token: Vec<u8> = (0..=255u8).collect();
    fs::write(c.legacy_config_dir.join("agent.toml"), SCHEMA1).unwrap();
    fs::write(c.legacy_config_dir.join("enroll.token"), &token).unwrap();
    fs::set_permissions(
        c.legacy_config_dir.join("enroll.token"),
        fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    fs::write(c.legacy_state_dir.join("agent.token"), b"agent-secret\n").unwrap();
    let r = run(&c, &builtin::registry()).unwrap();
    let RunOutcome::Completed { ids, .. } = &r.outcome else {
        panic!("{r:?}")
    };
    assert_eq!(
        ids,
        &["legacy-layout", "config-schema-2", "config-schema-3"]
    );
    let etc = c.config_path.parent().unwrap();
    assert_eq!(fs::read(etc.join("enroll.token")).unwrap(), token);
    let mode = fs::metadata(etc.join("enroll.token"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    assert_eq!(
        fs::read(c.state_dir.join("agent.token")).unwrap(),
        b"agent-secret\n"
    );
    assert!(!c.legacy_config_dir.exists() && !c.legacy_state_dir.exists());
    assert_eq!(builtin::config_schema_of(&c.config_path), Some(3));
    // and a rollback puts the legacy install back as it was
    assert!(restore_last_run(&c.state_dir, "1.1.0").unwrap());
    assert_eq!(
        fs::read(c.legacy_config_dir.join("enroll.token")).unwrap(),
        token
    );
    assert_eq!(
        fs::read_to_string(c.legacy_config_dir.join("agent.toml")).unwrap(),
        SCHEMA1
    );
    assert!(!c.config_path.exists());
}

fn spool_line(id: &str) -> String {
    format!(
        "{{\"id\":\"{id}\",\"agent_id\":\"a\",\"ts\":\"2026-01-01T00:00:00Z\",\"kind\":\"agent_startup\",\"status\":\"success\",\"severity\":\"info\",\"component\":\"agent\",\"message\":\"m\"}}\n"
    )
}

#[test]
fn state_layout_1_moves_to_layout_2_keeping_secrets_and_events() {
    let root = tempfile::tempdir().unwrap();
    let c = ctx(root.path());
    fs::create_dir_all(&c.state_dir).unwrap();
    let token: Vec<u8> = (0..=255u8).rev().collect();
    fs::write(c.state_dir.join("token"), &token).unwrap();
    fs::set_permissions(c.state_dir.join("token"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::write(c.state_dir.join("agent-id"), "old-id\n").unwrap();
    let a = "0190a1b2-0000-7000-8000-000000000001";
    let b = "0190a1b2-0000-7000-8000-000000000002";
    // A layout-1 spool with two events and a torn tail; the current spool
    // already holds one of them (as after a crash mid-merge).
    fs::write(
        c.state_dir.join("events.jsonl"),
        format!("{}{}{{\"id\":\"torn", spool_line(a), spool_line(b)),
    )
    .unwrap();
    fs::create_dir_all(c.state_dir.join("spool")).unwrap();
    fs::write(c.state_dir.join("spool/events.jsonl"), spool_line(a)).unwrap();

    let r = run(&c, &builtin::registry()).unwrap();
    let RunOutcome::Completed { ids, .. } = &r.outcome else {
        panic!("{r:?}")
    };
    assert_eq!(ids, &["state-layout-2"]);
    assert_eq!(fs::read(c.state_dir.join("agent.token")).unwrap(), token);
    let mode = fs::metadata(c.state_dir.join("agent.token"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    assert_eq!(
        fs::read_to_string(c.state_dir.join("agent_id")).unwrap(),
        "old-id\n"
    );
    assert_eq!(
        fs::read_to_string(c.state_dir.join("spool/events.jsonl")).unwrap(),
        format!("{}{}", spool_line(a), spool_line(b))
    );
    for old in ["token", "agent-id", "events.jsonl"] {
        assert!(!c.state_dir.join(old).exists(), "{old} left behind");
    }
    // The merged spool opens with both events pending.
    let spool = crate::spool::Spool::open(&c.state_dir).unwrap();
    assert_eq!(spool.pending(10).unwrap().len(), 2);
    // Done once: the next run has nothing to do.
    assert_eq!(
        run(&c, &builtin::registry()).unwrap().outcome,
        RunOutcome::NothingToDo
    );
}

#[test]
fn state_layout_keeps_a_differing_current_file_and_the_old_one_beside_it() {
    let root = tempfile::tempdir().unwrap();
    let c = ctx(root.path());
    fs::create_dir_all(&c.state_dir).unwrap();
    fs::write(c.state_dir.join("agent-id"), "old-id").unwrap();
    fs::write(c.state_dir.join("agent_id"), "new-id").unwrap();
    run(&c, &builtin::registry()).unwrap();
    assert_eq!(
        fs::read_to_string(c.state_dir.join("agent_id")).unwrap(),
        "new-id"
    );
    assert_eq!(
        fs::read_to_string(c.state_dir.join("agent_id.legacy")).unwrap(),
        "old-id"
    );
    // A rollback restores layout 1 exactly.
    assert!(restore_last_run(&c.state_dir, "1.1.0").unwrap());
    assert_eq!(
        fs::read_to_string(c.state_dir.join("agent-id")).unwrap(),
        "old-id"
    );
    assert!(!c.state_dir.join("agent_id.legacy").exists());
}

/// Moves the config aside, puts a plain file where its directory was (so
/// the backup cannot be put back, even by root), then fails.
struct Wreck;

impl Migration for Wreck {
    fn id(&self) -> &'static str {
        "wreck"
    }
    fn detect(&self, ctx: &Context) -> Result<Detection> {
        Ok(Detection::Needed {
            reason: "always".into(),
            paths: vec![ctx.config_path.clone()],
        })
    }
    fn execute(&self, ctx: &Context) -> Result<()> {
        let dir = ctx.config_path.parent().unwrap();
        fs::remove_dir_all(dir).unwrap();
        fs::write(dir, "not a directory").unwrap();
        Err(Error::io("writing", dir)(std::io::Error::other(
            "half-way through",
        )))
    }
}

#[test]
fn a_failed_restore_keeps_the_run_for_the_rollback() {
    let root = tempfile::tempdir().unwrap();
    let c = ctx(root.path());
    fs::create_dir_all(c.config_path.parent().unwrap()).unwrap();
    fs::write(&c.config_path, "schema = 1\n").unwrap();
    let r = run(&c, &[Box::new(Wreck) as Box<dyn Migration>]).unwrap();
    let RunOutcome::Failed {
        restored,
        restore_error,
        backup,
        ..
    } = &r.outcome
    else {
        panic!("{r:?}")
    };
    assert!(!restored);
    assert!(
        restore_error[0].starts_with("restoring the backup"),
        "{restore_error:?}"
    );
    assert!(backup.exists(), "the backup of a failed restore is kept");
    // Reported, critical, with the restore's error.
    let ev = r.events("a", &c, &Map::new());
    let exec = ev
        .iter()
        .find(|e| e.kind == EventKind::MigrationExecution)
        .unwrap();
    assert_eq!(exec.severity, Severity::Critical);
    assert_eq!(exec.details["restored"], false);
    assert!(exec.details["restore_error_chain"].is_array());
    // The run stays recorded, not restored.
    let st = MigrationState::load(&c.state_dir).unwrap();
    let last = st.last_run.expect("the run is kept");
    assert!(!last.restored);
    assert_eq!(last.restore_error, *restore_error);
    // Once the obstruction is gone, the rollback's restore finds the backup.
    fs::remove_file(c.config_path.parent().unwrap()).unwrap();
    assert!(restore_last_run(&c.state_dir, "1.1.0").unwrap());
    assert_eq!(fs::read_to_string(&c.config_path).unwrap(), "schema = 1\n");
    assert!(MigrationState::load(&c.state_dir)
        .unwrap()
        .last_run
        .is_none());
}
