//! The schema, as an ordered list of migrations. `PRAGMA user_version` is
//! the number applied; each runs in its own transaction, so a crash leaves
//! either the old or the new version. A database newer than this binary is
//! refused rather than guessed at.

use std::path::Path;

use rusqlite::Connection;

use crate::Error;

/// The migrations; index + 1 is the version each one produces.
const MIGRATIONS: &[&str] = &[
    // 1: the initial schema.
    "
    CREATE TABLE enrollment_tokens (
        id          TEXT PRIMARY KEY,
        hash        TEXT NOT NULL UNIQUE,
        created_at  INTEGER NOT NULL,
        expires_at  INTEGER,
        max_uses    INTEGER,
        uses        INTEGER NOT NULL DEFAULT 0,
        revoked_at  INTEGER,
        note        TEXT NOT NULL DEFAULT ''
    );
    CREATE TABLE agents (
        agent_id       TEXT PRIMARY KEY,
        token_hash     TEXT UNIQUE,
        enrolled_with  TEXT,
        enrolled_at    INTEGER NOT NULL,
        revoked_at     INTEGER,
        labels         TEXT NOT NULL DEFAULT '{}',
        version        TEXT,
        channel        TEXT,
        wave           TEXT,
        state_ts       INTEGER NOT NULL DEFAULT 0,
        last_seen      INTEGER,
        last_error     TEXT,
        last_error_ts  INTEGER,
        event_count    INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX agents_last_seen ON agents(last_seen);
    CREATE INDEX agents_channel ON agents(channel);
    CREATE INDEX agents_last_error ON agents(last_error_ts);
    CREATE TABLE events (
        seq           INTEGER PRIMARY KEY,
        id            BLOB NOT NULL UNIQUE,
        agent_id      TEXT NOT NULL,
        ts            INTEGER NOT NULL,
        kind          TEXT NOT NULL,
        status        TEXT NOT NULL,
        severity      TEXT NOT NULL,
        component     TEXT NOT NULL,
        message       TEXT NOT NULL,
        from_version  TEXT,
        to_version    TEXT,
        channel       TEXT,
        wave          TEXT,
        details       TEXT NOT NULL
    );
    CREATE INDEX events_agent_ts ON events(agent_id, ts);
    CREATE INDEX events_ts ON events(ts);
    CREATE TABLE agent_release (
        channel   TEXT NOT NULL,
        release   TEXT NOT NULL,
        agent_id  TEXT NOT NULL,
        state     TEXT NOT NULL,
        wave      TEXT,
        ts        INTEGER NOT NULL,
        message   TEXT,
        PRIMARY KEY (channel, release, agent_id)
    ) WITHOUT ROWID;
    CREATE TABLE channel_settings (
        channel           TEXT NOT NULL,
        release           TEXT NOT NULL,
        max_failure_rate  REAL,
        min_reports       INTEGER,
        waves             TEXT,
        ts                INTEGER NOT NULL,
        PRIMARY KEY (channel, release)
    ) WITHOUT ROWID;
    ",
    // 2: event ids are unique per agent, not across agents (one agent's id
    // must not make another's event a "duplicate"); agents' thresholds are
    // no longer stored (they come from the verified manifest); an agent's
    // rollout rows are found by agent, to bound them.
    "
    CREATE TABLE events_v2 (
        seq           INTEGER PRIMARY KEY,
        id            BLOB NOT NULL,
        agent_id      TEXT NOT NULL,
        ts            INTEGER NOT NULL,
        kind          TEXT NOT NULL,
        status        TEXT NOT NULL,
        severity      TEXT NOT NULL,
        component     TEXT NOT NULL,
        message       TEXT NOT NULL,
        from_version  TEXT,
        to_version    TEXT,
        channel       TEXT,
        wave          TEXT,
        details       TEXT NOT NULL,
        UNIQUE (agent_id, id)
    );
    INSERT INTO events_v2 SELECT seq, id, agent_id, ts, kind, status, severity, component,
        message, from_version, to_version, channel, wave, details FROM events;
    DROP TABLE events;
    ALTER TABLE events_v2 RENAME TO events;
    CREATE INDEX events_agent_ts ON events(agent_id, ts);
    CREATE INDEX events_ts ON events(ts);
    DROP TABLE channel_settings;
    CREATE INDEX agent_release_agent ON agent_release(agent_id, ts);
    ",
    // 3 (access): token scopes (`enroll`, `read`), agents kept out by an
    // admin until readmitted, and agents counted per enrollment token.
    "
    ALTER TABLE enrollment_tokens ADD COLUMN scope TEXT NOT NULL DEFAULT 'enroll';
    ALTER TABLE agents ADD COLUMN blocked_at INTEGER;
    CREATE INDEX agents_enrolled_with ON agents(enrolled_with);
    ",
    // 4 (notify; applies after any other): the outbox of webhook notices,
    // one row per receiver, kept until it answered 2xx; what the notifier
    // last saw (gate states, the silent agents' watermark, expiry notices
    // sent). Rollbacks stored as info become warnings, as ingestion now
    // stores them (`ingest::stored_severity`).
    "
    UPDATE events SET severity = 'warning' WHERE kind = 'update_rollback' AND severity = 'info';
    CREATE TABLE notify_outbox (
        id          INTEGER PRIMARY KEY,
        receiver    TEXT NOT NULL,
        kind        TEXT NOT NULL,
        body        TEXT NOT NULL,
        created_at  INTEGER NOT NULL,
        next_at     INTEGER NOT NULL,
        attempts    INTEGER NOT NULL DEFAULT 0,
        last_error  TEXT
    );
    CREATE INDEX notify_outbox_next ON notify_outbox(next_at);
    CREATE TABLE notify_state (
        key    TEXT PRIMARY KEY,
        value  TEXT NOT NULL,
        ts     INTEGER NOT NULL
    ) WITHOUT ROWID;
    ",
    // 5 (levers): each agent's latest check-in (its state and why); the
    // operators' emergency stops, kept after they are reopened; and every
    // release each channel rolled out (history per channel).
    "
    ALTER TABLE agents ADD COLUMN host_state TEXT;
    ALTER TABLE agents ADD COLUMN host_reason TEXT;
    ALTER TABLE agents ADD COLUMN host_release TEXT;
    ALTER TABLE agents ADD COLUMN host_until INTEGER;
    ALTER TABLE agents ADD COLUMN checkin_ts INTEGER;
    CREATE INDEX agents_host_state ON agents(host_state);
    CREATE TABLE halts (
        id           INTEGER PRIMARY KEY,
        channel      TEXT NOT NULL,
        release      TEXT,
        reason       TEXT NOT NULL,
        closed_by    TEXT NOT NULL,
        closed_at    INTEGER NOT NULL,
        reopened_by  TEXT,
        reopened_at  INTEGER
    );
    CREATE UNIQUE INDEX halts_active ON halts(channel, IFNULL(release, ''))
        WHERE reopened_at IS NULL;
    CREATE TABLE rollout_history (
        channel     TEXT NOT NULL,
        release     TEXT NOT NULL,
        first_seen  INTEGER NOT NULL,
        last_seen   INTEGER NOT NULL,
        PRIMARY KEY (channel, release)
    ) WITHOUT ROWID;
    ",
    // 6 (replicas): web sessions are kept in the database, by the SHA-256 of
    // their id, so a login outlives a restart and, on PostgreSQL, works on
    // every replica.
    "
    CREATE TABLE web_sessions (
        hash        TEXT PRIMARY KEY,
        csrf        TEXT NOT NULL,
        expires_at  INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX web_sessions_expires ON web_sessions(expires_at);
    ",
];

/// The schema version this binary writes.
pub const VERSION: u32 = MIGRATIONS.len() as u32;

/// The schema version the database is at (for `GET /healthz` and `init`).
pub fn version(conn: &Connection) -> Result<u32, super::DbError> {
    Ok(conn.query_row("PRAGMA user_version", [], |r| r.get(0))?)
}

/// Brings the database to [`VERSION`].
pub fn migrate(conn: &mut Connection, path: &Path) -> Result<(), Error> {
    let db_err = |source| Error::Db {
        path: path.to_owned(),
        source,
    };
    loop {
        // The version is read inside a write transaction, so two processes
        // opening a new database at once (`serve` and `token create`) take
        // turns instead of both creating the tables.
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(db_err)?;
        let found: u32 = tx
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(db_err)?;
        if found > VERSION {
            return Err(Error::SchemaTooNew {
                path: path.to_owned(),
                found,
                known: VERSION,
            });
        }
        let Some(sql) = MIGRATIONS.get(found as usize) else {
            return Ok(());
        };
        tx.execute_batch(sql).map_err(db_err)?;
        tx.execute_batch(&format!("PRAGMA user_version = {}", found + 1))
            .map_err(db_err)?;
        tx.commit().map_err(db_err)?;
        tracing::info!(version = found + 1, "database migrated");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrates_once_and_refuses_newer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.db");
        let mut c = Connection::open(&path).unwrap();
        migrate(&mut c, &path).unwrap();
        migrate(&mut c, &path).unwrap();
        let v: u32 = c
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, VERSION);
        c.execute_batch("PRAGMA user_version = 99").unwrap();
        assert!(matches!(
            migrate(&mut c, &path),
            Err(Error::SchemaTooNew { found: 99, .. })
        ));
    }

    #[test]
    fn version_2_keeps_events_and_makes_ids_unique_per_agent() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.db");
        let c = Connection::open(&path).unwrap();
        c.execute_batch(MIGRATIONS[0]).unwrap();
        c.execute_batch("PRAGMA user_version = 1").unwrap();
        let ins = "INSERT INTO events (id, agent_id, ts, kind, status, severity, component,
                       message, details) VALUES (x'01', ?1, 1, 'k', 's', 'info', 'c', 'm', '{}')";
        c.execute(ins, ["a"]).unwrap();
        assert!(
            c.execute(ins, ["b"]).is_err(),
            "version 1: ids unique across agents"
        );
        drop(c);
        let mut c = Connection::open(&path).unwrap();
        migrate(&mut c, &path).unwrap();
        c.execute(ins, ["b"]).unwrap();
        assert!(c.execute(ins, ["a"]).is_err(), "still unique per agent");
        let n: i64 = c
            .query_row("SELECT count(*) FROM events", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 2);
    }

    #[test]
    fn two_processes_creating_the_database_at_once_take_turns() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.db");
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let path = path.clone();
                std::thread::spawn(move || {
                    let mut c = Connection::open(&path).unwrap();
                    c.busy_timeout(std::time::Duration::from_secs(10)).unwrap();
                    migrate(&mut c, &path)
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap().unwrap();
        }
    }
}
