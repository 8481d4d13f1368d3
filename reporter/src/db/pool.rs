//! A small pool of read-only connections. Queries run on tokio's blocking
//! threads; WAL lets them read while the writer commits.

use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::Connection;
use tokio::sync::Semaphore;

use super::DbError;
use crate::Error;

/// Read-only connections, shared.
#[derive(Clone)]
pub struct ReadPool {
    inner: Arc<Inner>,
}

struct Inner {
    conns: Mutex<Vec<Connection>>,
    permits: Semaphore,
}

impl ReadPool {
    /// Opens `n` read-only connections to `path`.
    pub fn open(path: &Path, n: usize) -> Result<ReadPool, Error> {
        let conns = (0..n.max(1))
            .map(|_| super::open_reader(path))
            .collect::<Result<Vec<_>, _>>()?;
        let n = conns.len();
        Ok(ReadPool {
            inner: Arc::new(Inner {
                conns: Mutex::new(conns),
                permits: Semaphore::new(n),
            }),
        })
    }

    /// Runs a quick query (an indexed lookup) right here on the calling
    /// thread when a connection is free, else like [`ReadPool::read`]. Saves
    /// the hop to a blocking thread on hot paths such as authentication.
    pub async fn read_quick<R, F>(&self, f: F) -> Result<R, DbError>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> Result<R, DbError> + Send + 'static,
    {
        if let Ok(permit) = self.inner.permits.try_acquire() {
            let conn = self.inner.conns.lock().expect("pool lock").pop();
            if let Some(conn) = conn {
                let r = f(&conn);
                self.inner.conns.lock().expect("pool lock").push(conn);
                drop(permit);
                return r;
            }
        }
        self.read(f).await
    }

    /// Runs `f` on a free connection.
    pub async fn read<R, F>(&self, f: F) -> Result<R, DbError>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> Result<R, DbError> + Send + 'static,
    {
        let _permit = self
            .inner
            .permits
            .acquire()
            .await
            .map_err(|_| DbError::Busy)?;
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let conn = inner
                .conns
                .lock()
                .expect("pool lock")
                .pop()
                .expect("a permit means a free connection");
            let r = f(&conn);
            inner.conns.lock().expect("pool lock").push(conn);
            r
        })
        .await
        .map_err(|_| DbError::Busy)?
    }
}
