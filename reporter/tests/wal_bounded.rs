//! The WAL stays bounded under writes that never pause: the checkpoint
//! thread catches up and hands the writer a short final checkpoint, after
//! which the WAL starts over from its beginning instead of growing, and it
//! is rewritten in place (never larger than `journal_size_limit`).

use std::path::Path;

use flotilla_reporter::db::{self, checkpoint::Checkpointer, writer::Writer, WAL_LIMIT};

fn wal_len(db: &Path) -> u64 {
    std::fs::metadata(db.with_extension("db-wal"))
        .map(|m| m.len())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wal_starts_over_under_steady_writes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.db");
    let conn = db::open_writer(&path, Default::default()).unwrap();
    db::disable_autocheckpoint(&conn).unwrap();
    conn.execute_batch("CREATE TABLE blobs (b BLOB NOT NULL)")
        .unwrap();
    let checkpointer = Checkpointer::start(&path).unwrap();
    let (writer, thread) = Writer::start(conn, Some(checkpointer.state.clone()));

    // More than the WAL's size limit, in transactions of 64 KB: without a
    // restart the WAL would hold all of it.
    let job = 16 * 4000;
    let total = WAL_LIMIT + (64 << 20);
    let mut written = 0u64;
    let mut largest = 0u64;
    while written < total {
        writer
            .run(|c| {
                let mut insert =
                    c.prepare_cached("INSERT INTO blobs (b) VALUES (zeroblob(4000))")?;
                for _ in 0..16 {
                    insert.execute([])?;
                }
                Ok(())
            })
            .await
            .unwrap();
        written += job;
        largest = largest.max(wal_len(&path));
    }
    let db_len = std::fs::metadata(&path).unwrap().len();
    assert!(
        db_len > 64 << 20,
        "checkpoints copied the rows into the database file ({db_len} bytes)"
    );
    assert!(
        largest <= WAL_LIMIT,
        "the WAL grew to {largest} bytes while {written} bytes were written; limit {WAL_LIMIT}"
    );
    drop(writer);
    thread.join().unwrap();
    checkpointer.stop();
    assert_eq!(wal_len(&path), 0, "shutdown leaves an empty WAL");
}
