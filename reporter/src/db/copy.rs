//! `db copy`: moves a SQLite database's history, tokens and agents into a
//! PostgreSQL one, for an operator who outgrows one machine.
//!
//! The PostgreSQL database is migrated first. The SQLite file is read in
//! one read transaction (one consistent moment, safe while `serve` runs on
//! it) by a thread of its own, which streams each table in batches of
//! [`BATCH`] rows through a short queue: the events table is never held
//! in memory whole. Each batch is one multi-row `INSERT ... ON CONFLICT
//! (key)`, all in one PostgreSQL transaction, so a failed copy leaves
//! nothing behind and a second copy of the same file changes nothing (it
//! reports 0 new and 0 changed rows). Events never change, so a copied one
//! is left as it is (`DO NOTHING`); the other tables' rows do (an agent's
//! last report, a token's uses, a reopened halt), so a copied row that
//! differs from SQLite's now is updated to it (`DO UPDATE ... WHERE ... IS
//! DISTINCT FROM`): a copy again after stopping the old reporter brings
//! the last state. Rows deleted from SQLite since (pruned events, sent
//! notices, expired sessions) are not deleted from PostgreSQL. Rows keep their ids (event `seq`, halt and
//! outbox ids); the identity sequences are then moved past the highest, so
//! new rows never take a copied id. A row whose key is there already is
//! left as it is; a row that clashes on another unique key (an event
//! `seq`, a token hash held by another row) fails the copy rather than
//! being dropped in silence.

use std::path::Path;

use rusqlite::types::Value;

use super::pg::queries::{arg_refs, Arg};
use super::pg::{schema, Pg};
use crate::settings::Durability;
use crate::Error;

/// Rows per `INSERT` (times at most 20 columns: well under PostgreSQL's
/// 65,535 arguments).
pub const BATCH: usize = 500;

/// How one table went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableCopy {
    /// The table.
    pub table: &'static str,
    /// Rows read from SQLite.
    pub rows: u64,
    /// Rows PostgreSQL did not have yet.
    pub new: u64,
    /// Rows PostgreSQL had, with other values: updated to SQLite's.
    pub changed: u64,
}

/// What [`copy_sqlite_to_pg`] did, table by table.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CopyReport {
    /// Each table, in the order copied.
    pub tables: Vec<TableCopy>,
}

impl CopyReport {
    /// Rows read, in all.
    pub fn rows(&self) -> u64 {
        self.tables.iter().map(|t| t.rows).sum()
    }

    /// New rows, in all: 0 when the copy was made before.
    pub fn new_rows(&self) -> u64 {
        self.tables.iter().map(|t| t.new).sum()
    }

    /// Changed rows, in all: 0 when nothing changed since the last copy.
    pub fn changed_rows(&self) -> u64 {
        self.tables.iter().map(|t| t.changed).sum()
    }

    /// One table's line.
    pub fn table(&self, name: &str) -> Option<&TableCopy> {
        self.tables.iter().find(|t| t.table == name)
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Int,
    Text,
    Bytes,
}

struct Table {
    name: &'static str,
    columns: &'static [(&'static str, Kind)],
    /// The conflict target: the row's key.
    key: &'static str,
    /// The identity column whose sequence must pass the copied ids.
    identity: Option<&'static str>,
    /// Whether a copied row may change in SQLite later (all but events).
    mutable: bool,
}

use Kind::{Bytes, Int, Text};

/// Every table, in the order copied.
const TABLES: &[Table] = &[
    Table {
        name: "enrollment_tokens",
        columns: &[
            ("id", Text),
            ("hash", Text),
            ("created_at", Int),
            ("expires_at", Int),
            ("max_uses", Int),
            ("uses", Int),
            ("revoked_at", Int),
            ("note", Text),
            ("scope", Text),
        ],
        key: "id",
        identity: None,
        mutable: true,
    },
    Table {
        name: "agents",
        columns: &[
            ("agent_id", Text),
            ("token_hash", Text),
            ("enrolled_with", Text),
            ("enrolled_at", Int),
            ("revoked_at", Int),
            ("labels", Text),
            ("version", Text),
            ("channel", Text),
            ("wave", Text),
            ("state_ts", Int),
            ("last_seen", Int),
            ("last_error", Text),
            ("last_error_ts", Int),
            ("event_count", Int),
            ("blocked_at", Int),
            ("host_state", Text),
            ("host_reason", Text),
            ("host_release", Text),
            ("host_until", Int),
            ("checkin_ts", Int),
        ],
        key: "agent_id",
        identity: None,
        mutable: true,
    },
    Table {
        name: "events",
        columns: &[
            ("seq", Int),
            ("id", Bytes),
            ("agent_id", Text),
            ("ts", Int),
            ("kind", Text),
            ("status", Text),
            ("severity", Text),
            ("component", Text),
            ("message", Text),
            ("from_version", Text),
            ("to_version", Text),
            ("channel", Text),
            ("wave", Text),
            ("details", Text),
        ],
        key: "agent_id, id",
        identity: Some("seq"),
        mutable: false,
    },
    Table {
        name: "agent_release",
        columns: &[
            ("channel", Text),
            ("release", Text),
            ("agent_id", Text),
            ("state", Text),
            ("wave", Text),
            ("ts", Int),
            ("message", Text),
        ],
        key: "channel, release, agent_id",
        identity: None,
        mutable: true,
    },
    Table {
        name: "halts",
        columns: &[
            ("id", Int),
            ("channel", Text),
            ("release", Text),
            ("reason", Text),
            ("closed_by", Text),
            ("closed_at", Int),
            ("reopened_by", Text),
            ("reopened_at", Int),
        ],
        key: "id",
        identity: Some("id"),
        mutable: true,
    },
    Table {
        name: "rollout_history",
        columns: &[
            ("channel", Text),
            ("release", Text),
            ("first_seen", Int),
            ("last_seen", Int),
        ],
        key: "channel, release",
        identity: None,
        mutable: true,
    },
    Table {
        name: "notify_outbox",
        columns: &[
            ("id", Int),
            ("receiver", Text),
            ("kind", Text),
            ("body", Text),
            ("created_at", Int),
            ("next_at", Int),
            ("attempts", Int),
            ("last_error", Text),
        ],
        key: "id",
        identity: Some("id"),
        mutable: true,
    },
    Table {
        name: "notify_state",
        columns: &[("key", Text), ("value", Text), ("ts", Int)],
        key: "key",
        identity: None,
        mutable: true,
    },
    Table {
        name: "web_sessions",
        columns: &[("hash", Text), ("csrf", Text), ("expires_at", Int)],
        key: "hash",
        identity: None,
        mutable: true,
    },
];

/// A batch of one table's rows, from the reading thread.
type Rows = (usize, Vec<Vec<Value>>);

/// Copies every table of the SQLite database at `sqlite_path` (which must
/// exist; an older schema is migrated, as `serve` would) into `pg`.
pub async fn copy_sqlite_to_pg(sqlite_path: &Path, pg: &Pg) -> Result<CopyReport, Error> {
    schema::migrate(pg).await?;
    let conn = super::open_existing(sqlite_path, Durability::ProcessCrash)?;
    let (tx_rows, mut rx_rows) = tokio::sync::mpsc::channel::<Result<Rows, Error>>(2);
    let path = sqlite_path.to_owned();
    let reader = std::thread::spawn(move || {
        if let Err(e) = read_tables(&conn, &path, &tx_rows) {
            // The receiver may be gone (the copy failed there): nothing to tell.
            let _ = tx_rows.blocking_send(Err(e));
        }
    });
    let result = async {
        let mut client = pg.client().await?;
        let tx = client.transaction().await?;
        let mut report = CopyReport {
            tables: TABLES
                .iter()
                .map(|t| TableCopy {
                    table: t.name,
                    rows: 0,
                    new: 0,
                    changed: 0,
                })
                .collect(),
        };
        while let Some(batch) = rx_rows.recv().await {
            let (i, rows) = match batch {
                Ok(b) => b,
                Err(e) => return Ok(Err(e)),
            };
            let (new, changed) = insert(&tx, &TABLES[i], &rows).await?;
            report.tables[i].rows += rows.len() as u64;
            report.tables[i].new += new;
            report.tables[i].changed += changed;
        }
        for t in TABLES {
            if let Some(col) = t.identity {
                let seq = format!("pg_get_serial_sequence('{}', '{col}')", t.name);
                tx.execute(
                    &format!(
                        "SELECT setval({seq}, GREATEST((SELECT COALESCE(max({col}), 0) + 1 FROM {}),
                             nextval({seq})), false)",
                        t.name
                    ),
                    &[],
                )
                .await?;
            }
        }
        tx.commit().await?;
        Ok::<_, super::DbError>(Ok(report))
    }
    .await;
    // Ends the reader if the copy failed before it was done.
    drop(rx_rows);
    let _ = reader.join();
    match result {
        Ok(r) => r,
        Err(e) => Err(pg.error(e)),
    }
}

/// One multi-row insert (or update, where the row changed); how many rows
/// were new, and how many changed.
async fn insert(
    tx: &tokio_postgres::Transaction<'_>,
    t: &Table,
    rows: &[Vec<Value>],
) -> Result<(u64, u64), super::DbError> {
    if rows.is_empty() {
        return Ok((0, 0));
    }
    let n = rows.len();
    let names: Vec<&str> = t.columns.iter().map(|(c, _)| *c).collect();
    let mut args: Vec<Arg> = Vec::with_capacity(n * names.len());
    let mut tuples = Vec::with_capacity(n);
    for row in rows {
        let mut marks = Vec::with_capacity(row.len());
        for (v, (_, kind)) in row.iter().zip(t.columns) {
            args.push(to_pg(v, *kind));
            marks.push(format!("${}", args.len()));
        }
        tuples.push(format!("({})", marks.join(", ")));
    }
    let on_conflict = if t.mutable {
        let row = |side: &str| {
            names
                .iter()
                .map(|c| format!("{side}.{c}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let set: Vec<String> = names
            .iter()
            .map(|c| format!("{c} = excluded.{c}"))
            .collect();
        format!(
            "DO UPDATE SET {} WHERE ({}) IS DISTINCT FROM ({})",
            set.join(", "),
            row("t"),
            row("excluded")
        )
    } else {
        "DO NOTHING".to_owned()
    };
    // `xmax = 0`: the row version was inserted, not updated.
    let sql = format!(
        "INSERT INTO {} AS t ({}) VALUES {} ON CONFLICT ({}) {on_conflict}
         RETURNING (xmax = 0)",
        t.name,
        names.join(", "),
        tuples.join(", "),
        t.key
    );
    let rows = tx.query(&sql, &arg_refs(&args)).await?;
    let mut new = 0;
    for r in &rows {
        new += u64::from(r.try_get::<_, bool>(0)?);
    }
    Ok((new, rows.len() as u64 - new))
}

/// A SQLite value (checked against its column's kind) as a typed argument.
fn to_pg(v: &Value, kind: Kind) -> Arg {
    match (v, kind) {
        (Value::Integer(i), _) => Box::new(*i),
        (Value::Text(s), _) => Box::new(s.clone()),
        (Value::Blob(b), _) => Box::new(b.clone()),
        (_, Kind::Int) => Box::new(None::<i64>),
        (_, Kind::Text) => Box::new(None::<String>),
        (_, Kind::Bytes) => Box::new(None::<Vec<u8>>),
    }
}

/// Reads every table in one read transaction, sending batches.
fn read_tables(
    conn: &rusqlite::Connection,
    path: &Path,
    out: &tokio::sync::mpsc::Sender<Result<Rows, Error>>,
) -> Result<(), Error> {
    let db_err = |source| Error::Db {
        path: path.to_owned(),
        source,
    };
    conn.execute_batch("BEGIN").map_err(db_err)?;
    for (i, t) in TABLES.iter().enumerate() {
        let names: Vec<&str> = t.columns.iter().map(|(c, _)| *c).collect();
        let mut st = conn
            .prepare(&format!("SELECT {} FROM {}", names.join(", "), t.name))
            .map_err(db_err)?;
        let mut rows = st.query([]).map_err(db_err)?;
        let mut batch = Vec::with_capacity(BATCH);
        while let Some(r) = rows.next().map_err(db_err)? {
            let mut row = Vec::with_capacity(names.len());
            for (j, (name, kind)) in t.columns.iter().enumerate() {
                let v: Value = r.get(j).map_err(db_err)?;
                let fits = matches!(
                    (&v, kind),
                    (Value::Null, _)
                        | (Value::Integer(_), Kind::Int)
                        | (Value::Text(_), Kind::Text)
                        | (Value::Blob(_), Kind::Bytes)
                );
                if !fits {
                    return Err(db_err(rusqlite::Error::InvalidColumnType(
                        j,
                        format!("{}.{name}", t.name),
                        v.data_type(),
                    )));
                }
                row.push(v);
            }
            batch.push(row);
            if batch.len() == BATCH {
                let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
                if out.blocking_send(Ok((i, full))).is_err() {
                    return Ok(());
                }
            }
        }
        if !batch.is_empty() && out.blocking_send(Ok((i, batch))).is_err() {
            return Ok(());
        }
    }
    conn.execute_batch("COMMIT").map_err(db_err)?;
    Ok(())
}
