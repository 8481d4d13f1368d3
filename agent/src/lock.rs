//! The state-dir lock: one pass at a time.
//!
//! `flock(LOCK_EX | LOCK_NB)` on `state_dir/lock`. The kernel drops the lock
//! when the process dies, so a pass killed at any point never leaves a stale
//! lock behind. A second pass that finds the lock taken exits 0.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::Path;

use crate::error::{Error, Result};

/// Held for the life of a pass.
#[derive(Debug)]
pub struct StateLock {
    _file: File,
}

impl StateLock {
    /// Takes the lock, or fails with [`Error::Busy`] if another process holds it.
    pub fn acquire(path: &Path) -> Result<StateLock> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        // SAFETY: flock on a valid, owned file descriptor.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
                return Err(Error::Busy {
                    path: path.to_owned(),
                });
            }
            return Err(Error::io(path, err));
        }
        Ok(StateLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_is_busy_until_first_drops() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("lock");
        let a = StateLock::acquire(&p).unwrap();
        assert!(matches!(StateLock::acquire(&p), Err(Error::Busy { .. })));
        drop(a);
        StateLock::acquire(&p).unwrap();
    }
}
