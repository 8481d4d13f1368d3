//! `flotilla-reporter backup`: a consistent copy of the live database,
//! taken with SQLite's online backup API while `serve` keeps writing.
//!
//! The sequence:
//!
//! 1. Open the database read-only (it must exist) and a new temporary
//!    file, mode 0600, beside the destination.
//! 2. Copy every page in one backup step: one read transaction, so the
//!    copy is the database as of one commit (everything acknowledged
//!    before it started is in it). In WAL mode the writer goes on
//!    meanwhile; only checkpoints wait for the copy to finish.
//! 3. Make the copy a single file (`journal_mode = DELETE`), check it
//!    (`PRAGMA quick_check`), fsync it.
//! 4. Move it into place: a hard link, which fails if the destination
//!    exists (so nothing is overwritten unless asked), or a rename over it
//!    with [`Overwrite::Replace`]. A failure at any step leaves no
//!    destination file and removes the temporary one.

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rusqlite::backup::{Backup, StepResult};
use rusqlite::Connection;

use crate::Error;

/// What to do when the destination exists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Overwrite {
    /// Refuse ([`Error::Exists`]): the default, so that a backup never
    /// replaces an older one by accident.
    Refuse,
    /// Replace it (atomically: a reader sees the old copy or the new one).
    Replace,
}

/// What a backup copied.
#[derive(Debug)]
pub struct Copied {
    /// The schema version of the copy.
    pub schema_version: u32,
    /// Events in the copy.
    pub events: u64,
    /// Its size, bytes.
    pub bytes: u64,
}

/// How long to retry while SQLite reports the source busy (it rarely is:
/// WAL readers do not wait for the writer).
const BUSY_PATIENCE: Duration = Duration::from_secs(60);

/// Copies the database at `src` to the new file `dest` (mode 0600).
pub fn backup(src: &Path, dest: &Path, overwrite: Overwrite) -> Result<Copied, Error> {
    if !src.try_exists().unwrap_or(true) {
        return Err(Error::NoDatabase {
            path: src.to_owned(),
        });
    }
    if overwrite == Overwrite::Refuse && dest.symlink_metadata().is_ok() {
        return Err(Error::Exists {
            path: dest.to_owned(),
        });
    }
    let tmp = temp_path(dest)?;
    let result = copy_to(src, &tmp).and_then(|copied| {
        place(&tmp, dest, overwrite)?;
        Ok(copied)
    });
    let _ = std::fs::remove_file(&tmp);
    result
}

/// `.NAME.partial.PID` beside `dest`.
fn temp_path(dest: &Path) -> Result<PathBuf, Error> {
    let name = dest.file_name().ok_or_else(|| Error::Config {
        path: dest.to_owned(),
        reason: "the backup's destination must name a file".into(),
    })?;
    let dir = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    Ok(dir.join(format!(
        ".{}.partial.{}",
        name.to_string_lossy(),
        std::process::id()
    )))
}

fn copy_to(src: &Path, tmp: &Path) -> Result<Copied, Error> {
    let io_err = |path: &Path| {
        let path = path.to_owned();
        move |source| Error::Io { path, source }
    };
    // Created 0600 before SQLite opens it, so no moment of a readable copy.
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(tmp)
        .map_err(io_err(tmp))?;
    let from = super::open_reader(src)?;
    let dest_err = |source| Error::Db {
        path: tmp.to_owned(),
        source,
    };
    let mut to = Connection::open(tmp).map_err(dest_err)?;
    {
        let src_err = |source| Error::Db {
            path: src.to_owned(),
            source,
        };
        let b = Backup::new(&from, &mut to).map_err(src_err)?;
        let started = Instant::now();
        loop {
            match b.step(-1).map_err(src_err)? {
                StepResult::Done => break,
                StepResult::More => {}
                StepResult::Busy | StepResult::Locked if started.elapsed() < BUSY_PATIENCE => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                _ => {
                    return Err(Error::Db {
                        path: src.to_owned(),
                        source: rusqlite::Error::SqliteFailure(
                            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
                            Some(format!(
                                "still busy after {}s; try again",
                                BUSY_PATIENCE.as_secs()
                            )),
                        ),
                    })
                }
            }
        }
    }
    drop(from);
    let check: String = to
        .query_row("PRAGMA journal_mode = DELETE", [], |r| r.get(0))
        .and_then(|_: String| to.query_row("PRAGMA quick_check", [], |r| r.get(0)))
        .map_err(dest_err)?;
    if check != "ok" {
        return Err(Error::Config {
            path: tmp.to_owned(),
            reason: format!("the copy fails SQLite's quick_check: {check}"),
        });
    }
    let schema_version: u32 = to
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(dest_err)?;
    let events: u64 = to
        .query_row("SELECT count(*) FROM events", [], |r| r.get(0))
        .unwrap_or(0);
    to.close().map_err(|(_, e)| dest_err(e))?;
    let f = std::fs::File::open(tmp).map_err(io_err(tmp))?;
    f.sync_all().map_err(io_err(tmp))?;
    let bytes = f.metadata().map_err(io_err(tmp))?.len();
    Ok(Copied {
        schema_version,
        events,
        bytes,
    })
}

/// Moves the finished copy to `dest`, and makes that durable.
fn place(tmp: &Path, dest: &Path, overwrite: Overwrite) -> Result<(), Error> {
    let placed = match overwrite {
        Overwrite::Refuse => std::fs::hard_link(tmp, dest),
        Overwrite::Replace => std::fs::rename(tmp, dest),
    };
    placed.map_err(|source| {
        if source.kind() == std::io::ErrorKind::AlreadyExists {
            Error::Exists {
                path: dest.to_owned(),
            }
        } else {
            Error::Io {
                path: dest.to_owned(),
                source,
            }
        }
    })?;
    let dir = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    flotilla_signing::fs::sync_dir(dir).map_err(|source| Error::Io {
        path: dir.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn copies_to_a_new_private_file_and_never_overwrites_unless_asked() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("r.db");
        let conn = super::super::open_writer(&db, Default::default()).unwrap();
        super::super::tokens::create(&conn, None, Some(1), "kept").unwrap();
        let to = dir.path().join("copy.sqlite");
        let c = backup(&db, &to, Overwrite::Refuse).unwrap();
        assert_eq!(c.schema_version, super::super::schema::VERSION);
        let mode = std::fs::metadata(&to).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let copy = Connection::open(&to).unwrap();
        let note: String = copy
            .query_row("SELECT note FROM enrollment_tokens", [], |r| r.get(0))
            .unwrap();
        assert_eq!(note, "kept");
        let mode: String = copy
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "delete", "the copy is one file");
        drop(copy);
        let before = std::fs::read(&to).unwrap();
        let e = backup(&db, &to, Overwrite::Refuse).unwrap_err();
        assert!(matches!(e, Error::Exists { .. }), "{e}");
        assert_eq!(std::fs::read(&to).unwrap(), before, "left as it was");
        backup(&db, &to, Overwrite::Replace).unwrap();
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains("partial"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }
}
