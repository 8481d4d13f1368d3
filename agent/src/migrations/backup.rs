//! One backup per migration run, restorable after a crash at any point.
//!
//! `state_dir/backups/<UTC time>-<from>-<to>/` holds `backup.json` (what was
//! saved and where it came from) and `files/<n>` (copies). A path that did not
//! exist before the run is recorded as absent, so restoring removes what the
//! run created. `backup.json` is written last: a directory without it is an
//! incomplete backup, which is deleted and never restored from. Restoring is
//! idempotent, so a crash during a restore is finished by the next pass.

use std::fs;
use std::io;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Name of the index file in a backup directory.
pub const INDEX: &str = "backup.json";

/// What a backup holds for one original path.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Saved {
    /// The path did not exist; restoring removes it.
    Absent,
    /// A file or directory tree, copied to `stored` (relative to the backup dir).
    Copied {
        /// Where the copy is, relative to the backup directory.
        stored: String,
    },
}

/// One entry of `backup.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The original absolute path.
    pub original: PathBuf,
    /// What was saved.
    pub saved: Saved,
}

/// `backup.json`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Index {
    /// Saved paths, in the order they were given.
    pub entries: Vec<Entry>,
}

/// Creates a backup of `paths` in `dir` (which must not exist yet). On any
/// error the partial directory is removed and the error returned: a run
/// whose backup cannot be written makes no change.
pub fn create(dir: &Path, paths: &[PathBuf]) -> io::Result<Index> {
    let result = (|| {
        fs::create_dir_all(dir.join("files"))?;
        let mut index = Index::default();
        for (n, p) in paths.iter().enumerate() {
            let saved = match fs::symlink_metadata(p) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => Saved::Absent,
                Err(e) => return Err(with_path(e, p)),
                Ok(_) => {
                    let stored = format!("files/{n}");
                    copy_tree(p, &dir.join(&stored)).map_err(|e| with_path(e, p))?;
                    Saved::Copied { stored }
                }
            };
            index.entries.push(Entry {
                original: p.clone(),
                saved,
            });
        }
        sync_tree(dir)?;
        let bytes = serde_json::to_vec_pretty(&index).map_err(io::Error::other)?;
        flotilla_signing::fs::write_atomic(&dir.join(INDEX), &bytes, 0o600)?;
        if let Some(parent) = dir.parent() {
            flotilla_signing::fs::sync_dir(parent)?;
        }
        Ok(index)
    })();
    if result.is_err() {
        let _ = fs::remove_dir_all(dir);
    }
    result
}

/// Reads a backup's index; `None` if the backup is incomplete.
pub fn read_index(dir: &Path) -> io::Result<Option<Index>> {
    match fs::read(dir.join(INDEX)) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(io::Error::other),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Puts every saved path back as it was (idempotent).
pub fn restore(dir: &Path) -> io::Result<()> {
    let index = read_index(dir)?.ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("{}: backup has no {INDEX}", dir.display()),
        )
    })?;
    for e in index.entries.iter().rev() {
        if unchanged(dir, e) {
            // Nothing to put back (and nothing to write: this also works
            // where the run failed for want of space or permission).
            continue;
        }
        remove_any(&e.original).map_err(|err| with_path(err, &e.original))?;
        if let Saved::Copied { stored } = &e.saved {
            if let Some(parent) = e.original.parent() {
                fs::create_dir_all(parent)?;
            }
            copy_tree(&dir.join(stored), &e.original).map_err(|err| with_path(err, &e.original))?;
            sync_tree(&e.original)?;
        }
        if let Some(parent) = e.original.parent() {
            let _ = flotilla_signing::fs::sync_dir(parent);
        }
    }
    Ok(())
}

/// Whether `e.original` is still exactly what the backup holds (a file with
/// the same bytes and mode, or still absent).
fn unchanged(dir: &Path, e: &Entry) -> bool {
    match &e.saved {
        Saved::Absent => {
            matches!(fs::symlink_metadata(&e.original), Err(err) if err.kind() == io::ErrorKind::NotFound)
        }
        Saved::Copied { stored } => {
            let stored = dir.join(stored);
            let (Ok(a), Ok(b)) = (
                fs::symlink_metadata(&e.original),
                fs::symlink_metadata(&stored),
            ) else {
                return false;
            };
            a.is_file()
                && b.is_file()
                && a.len() == b.len()
                && a.permissions().mode() == b.permissions().mode()
                && fs::read(&e.original).ok() == fs::read(&stored).ok()
        }
    }
}

/// Keeps the newest `keep` complete backups under `backups_dir` (names sort
/// by time), deletes the rest and every incomplete one; `protect` counts as
/// kept and is never deleted.
/// Returns the deleted directories.
pub fn prune(backups_dir: &Path, keep: usize, protect: Option<&Path>) -> io::Result<Vec<PathBuf>> {
    let mut complete = Vec::new();
    let mut deleted = Vec::new();
    let entries = match fs::read_dir(backups_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(deleted),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let path = entry?.path();
        if !path.is_dir() {
            continue;
        }
        if path.join(INDEX).exists() || Some(path.as_path()) == protect {
            complete.push(path);
        } else {
            fs::remove_dir_all(&path)?;
            deleted.push(path);
        }
    }
    complete.sort();
    // `protect` counts toward `keep` but is never deleted.
    let mut excess = complete.len().saturating_sub(keep);
    for path in complete {
        if excess == 0 {
            break;
        }
        if Some(path.as_path()) == protect {
            continue;
        }
        fs::remove_dir_all(&path)?;
        deleted.push(path);
        excess -= 1;
    }
    Ok(deleted)
}

/// Removes a file, symlink or directory tree; absent is fine.
pub fn remove_any(p: &Path) -> io::Result<()> {
    match fs::symlink_metadata(p) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
        Ok(m) if m.is_dir() => fs::remove_dir_all(p),
        Ok(_) => fs::remove_file(p),
    }
}

/// Copies a file, symlink or directory tree, keeping permission bits.
pub fn copy_tree(from: &Path, to: &Path) -> io::Result<()> {
    let meta = fs::symlink_metadata(from)?;
    if meta.file_type().is_symlink() {
        symlink(fs::read_link(from)?, to)
    } else if meta.is_dir() {
        fs::create_dir_all(to)?;
        fs::set_permissions(to, fs::Permissions::from_mode(meta.permissions().mode()))?;
        for entry in fs::read_dir(from)? {
            let entry = entry?;
            copy_tree(&entry.path(), &to.join(entry.file_name()))?;
        }
        Ok(())
    } else {
        fs::copy(from, to)?;
        fs::set_permissions(to, fs::Permissions::from_mode(meta.permissions().mode()))?;
        Ok(())
    }
}

/// fsyncs every file and directory under `p`.
fn sync_tree(p: &Path) -> io::Result<()> {
    let meta = fs::symlink_metadata(p)?;
    if meta.file_type().is_symlink() {
        return Ok(());
    }
    if meta.is_dir() {
        for entry in fs::read_dir(p)? {
            sync_tree(&entry?.path())?;
        }
    }
    fs::File::open(p)?.sync_all()
}

fn with_path(e: io::Error, p: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", p.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backup_restore_round_trip_including_absent_paths() {
        let root = tempfile::tempdir().unwrap();
        let etc = root.path().join("etc");
        fs::create_dir_all(etc.join("sub")).unwrap();
        fs::write(etc.join("agent.toml"), b"config_schema = 1\n").unwrap();
        fs::write(etc.join("sub/token"), b"secret\n").unwrap();
        fs::set_permissions(etc.join("sub/token"), fs::Permissions::from_mode(0o600)).unwrap();
        let created_later = root.path().join("new.toml");
        let b = root.path().join("backups/1");
        create(&b, &[etc.clone(), created_later.clone()]).unwrap();

        // the run changes things
        fs::write(etc.join("agent.toml"), b"config_schema = 3\n").unwrap();
        fs::remove_file(etc.join("sub/token")).unwrap();
        fs::write(&created_later, b"x").unwrap();

        restore(&b).unwrap();
        restore(&b).unwrap(); // idempotent
        assert_eq!(
            fs::read(etc.join("agent.toml")).unwrap(),
            b"config_schema = 1\n"
        );
        assert_eq!(fs::read(etc.join("sub/token")).unwrap(), b"secret\n");
        let mode = fs::metadata(etc.join("sub/token"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
        assert!(!created_later.exists());
    }

    #[test]
    fn failed_backup_leaves_nothing() {
        let root = tempfile::tempdir().unwrap();
        let src = root.path().join("src");
        fs::create_dir(&src).unwrap();
        fs::write(src.join("f"), b"x").unwrap();
        // A dangling symlink inside a saved tree copies fine; a socket-free way
        // to fail mid-copy is a file where the copy's directory must go.
        let b = root.path().join("backups/1");
        fs::create_dir_all(b.join("files")).unwrap();
        fs::write(b.join("files/0"), b"in the way").unwrap();
        let err = create(&b, std::slice::from_ref(&src)).unwrap_err();
        assert!(err.to_string().contains("src"), "{err}");
        assert!(!b.exists(), "a failed backup leaves no directory behind");
    }

    #[test]
    fn prune_keeps_newest_and_drops_incomplete() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("backups");
        for name in ["2026-01-01", "2026-01-02", "2026-01-03", "2026-01-04"] {
            create(&dir.join(name), &[]).unwrap();
        }
        fs::create_dir_all(dir.join("2026-01-05")).unwrap(); // incomplete
        let deleted = prune(&dir, 2, None).unwrap();
        assert_eq!(deleted.len(), 3);
        let mut left: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, ["2026-01-03", "2026-01-04"]);
    }
}
