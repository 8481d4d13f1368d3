//! A new version whose config migration fails on this host: the failed step
//! is undone from the backup, the host rolls back to the version it ran,
//! which finds its config byte for byte as it left it, and the release is not
//! tried again. Hosts the migration does not concern update normally.
//!
//! v5 is a real build with `FLOTILLA_DEMO_FAILING_MIGRATION=role=db`: its
//! extra config migration writes the config and then fails on hosts
//! labelled `role = "db"`.

use std::fs;

use flotilla_protocol::{EventKind, EventStatus};

use crate::support::bins;
use crate::support::fleet::Fleet;
use crate::support::host::Host;
use crate::support::http::Server;

fn host(tmp: &std::path::Path, name: &str, role: &str, fleet: &Fleet, server: &Server) -> Host {
    Host::new(
        &tmp.join(name),
        &bins::agent("v1"),
        "1.0.0",
        &fleet.root1(),
        &format!("git = \"{}\"\nbranch = \"main\"", fleet.file_url()),
        &server.url(),
        // A comment: a restore must bring it back exactly.
        &format!("\n# racked in row 7\n[labels]\nrole = \"{role}\"\n"),
    )
}

#[test]
fn a_version_whose_migration_fails_rolls_back_and_restores_the_config() {
    let tmp = tempfile::tempdir().unwrap();
    let fleet = Fleet::new(tmp.path());
    fleet.release("1.0.0", &bins::agent("v1"), None);
    fleet.release("5.0.0", &bins::agent("v5-db-migration-fails"), None);
    fleet.rollout("5.0.0", None, &[]);
    fleet.sign();
    let server = Server::start(&fleet.store);
    let db = host(tmp.path(), "db", "db", &fleet, &server);
    let web = host(tmp.path(), "web", "web", &fleet, &server);
    let db_config = fs::read(&db.config).unwrap();

    // Both install 5.0.0 and swap it in.
    for h in [&db, &web] {
        let out = h.pass();
        assert!(out.contains("installed 5.0.0"), "{out}");
        assert_eq!(h.running_version(), "5.0.0");
    }

    // web: nothing to migrate, the health check commits 5.0.0, no backup.
    web.pass();
    assert_eq!(web.state()["committed"], "5.0.0");
    assert!(!web.state_dir.join("backups").exists());
    assert!(web
        .events_of(EventKind::MigrationExecution, EventStatus::Failed)
        .is_empty());

    // db: 5.0.0's first pass runs its migrations; one fails; rolled back.
    let out = db.pass();
    assert!(out.contains("rolled back from 5.0.0 to 1.0.0"), "{out}");
    assert_eq!(db.current(), "1.0.0");
    assert_eq!(db.running_version(), "1.0.0");
    assert_eq!(
        fs::read(&db.config).unwrap(),
        db_config,
        "the config is restored byte for byte"
    );
    let failed = db.events_of(EventKind::MigrationExecution, EventStatus::Failed);
    assert_eq!(failed.len(), 1, "{:?}", db.events());
    let f = &failed[0];
    assert_eq!(f.to_version.as_deref(), Some("5.0.0"));
    assert_eq!(f.from_version.as_deref(), Some("1.0.0"));
    assert_eq!(f.details["restored"], true);
    let chain = f.details["error_chain"].to_string();
    assert!(chain.contains("io_depth"), "{chain}");
    assert!(f.details["migration_ids"]
        .to_string()
        .contains("demo-config-tuning"));
    assert!(f.details["system"].get("hostname").is_some());
    let rb = db.events_of(EventKind::UpdateRollback, EventStatus::Success);
    assert_eq!(rb.len(), 1, "{:?}", db.events());
    assert_eq!(rb[0].from_version.as_deref(), Some("5.0.0"));
    assert_eq!(rb[0].to_version.as_deref(), Some("1.0.0"));
    assert_eq!(rb[0].severity, flotilla_protocol::Severity::Warning);
    let st = db.state();
    assert_eq!(st["blocked"]["version"], "5.0.0");
    assert_eq!(st["blocked"]["cause"], "migration");
    assert!(st.get("pending").is_none(), "{st}");

    // 1.0.0 runs on as before; 5.0.0 is not tried again, so no second
    // migration attempt and no second backup.
    for _ in 0..3 {
        let out = db.pass();
        // The deferral names the real cause, not a health check.
        assert!(
            out.contains("failed a migration here and was rolled back"),
            "{out}"
        );
        assert!(!out.contains("health check"), "{out}");
        assert_eq!(db.current(), "1.0.0");
    }
    assert_eq!(
        db.events_of(EventKind::UpdateInstall, EventStatus::Success)
            .len(),
        1
    );
    assert_eq!(
        fs::read_dir(db.state_dir.join("backups")).unwrap().count(),
        1,
        "one backup for the one failed run"
    );
    assert_eq!(fs::read(&db.config).unwrap(), db_config);
}
