//! The event spool: events wait here until the reporter acknowledges them.
//!
//! Layout: `state_dir/spool/events.jsonl` (one JSON event per line) and
//! `state_dir/spool/meta.json` (how many events the bound has dropped).
//!
//! - Append-only: [`Spool::append_all`] writes whole lines and fsyncs once per
//!   call, so a pass's events are durable before it goes on.
//! - Crash-safe: a torn last record (a crash mid-write leaves a line without
//!   its newline, or one that does not parse) is detected on open, dropped and
//!   truncated away; it never poisons the records before it.
//! - Bounded: when the file grows past `max_bytes` (default 8 MiB) it is
//!   compacted to 3/4 of the bound, dropping the oldest `info` events first,
//!   then `warning`, then `error`, then `critical`; the counts are kept in
//!   `meta.json` and reported by [`Spool::stats`].
//! - Acknowledged events leave only through [`Spool::ack`], which rewrites the
//!   file atomically (temp + fsync + rename + fsync of the directory).
//!
//! The pass holds the state-dir lock, so there is one writer at a time.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use flotilla_protocol::{Event, Severity};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Default bound on the spool file.
pub const DEFAULT_MAX_BYTES: u64 = 8 * 1024 * 1024;

/// How many events the size bound has dropped, by severity.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DroppedCounts {
    /// Dropped `info` events.
    pub info: u64,
    /// Dropped `warning` events.
    pub warning: u64,
    /// Dropped `error` events.
    pub error: u64,
    /// Dropped `critical` events.
    pub critical: u64,
}

impl DroppedCounts {
    /// All dropped events.
    pub fn total(&self) -> u64 {
        self.info + self.warning + self.error + self.critical
    }

    fn count(&mut self, s: Severity) {
        match s {
            Severity::Info => self.info += 1,
            Severity::Warning => self.warning += 1,
            Severity::Error => self.error += 1,
            Severity::Critical => self.critical += 1,
        }
    }
}

/// What the spool holds.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpoolStats {
    /// Events waiting for delivery.
    pub events: usize,
    /// Size of the spool file.
    pub bytes: u64,
    /// Events dropped by the bound since the spool was created.
    pub dropped: DroppedCounts,
    /// Torn records dropped on open since the spool was created.
    pub torn_records: u64,
}

#[derive(Default, Serialize, Deserialize)]
struct Meta {
    dropped: DroppedCounts,
    #[serde(default)]
    torn_records: u64,
}

/// One record's place in the file, kept in memory so that compaction and
/// acknowledgement never re-parse JSON.
#[derive(Clone, Copy)]
struct Entry {
    id: Uuid,
    severity: Severity,
    len: u64,
}

/// The spool of one state dir.
pub struct Spool {
    dir: PathBuf,
    file: File,
    index: Vec<Entry>,
    bytes: u64,
    max_bytes: u64,
    meta: Meta,
}

impl Spool {
    /// Opens (creating if needed) `state_dir/spool/`, dropping a torn tail.
    pub fn open(state_dir: &Path) -> io::Result<Spool> {
        Self::open_with_limit(state_dir, DEFAULT_MAX_BYTES)
    }

    /// Like [`Spool::open`] with another size bound.
    pub fn open_with_limit(state_dir: &Path, max_bytes: u64) -> io::Result<Spool> {
        let dir = state_dir.join("spool");
        fs::create_dir_all(&dir)?;
        let path = dir.join("events.jsonl");
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)?;
        let mut meta: Meta = match fs::read(dir.join("meta.json")) {
            Ok(b) => serde_json::from_slice(&b).unwrap_or_default(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Meta::default(),
            Err(e) => return Err(e),
        };
        // Scan: keep whole, parseable lines; cut at the first torn one.
        let (index, torn) = scan(&mut file)?;
        let good_len: u64 = index.iter().map(|e| e.len).sum();
        if good_len < file.metadata()?.len() {
            file.set_len(good_len)?;
            file.sync_all()?;
        }
        meta.torn_records += torn;
        let spool = Spool {
            dir,
            file,
            index,
            bytes: good_len,
            max_bytes,
            meta,
        };
        if torn > 0 {
            spool.save_meta()?;
        }
        Ok(spool)
    }

    /// Appends one event durably.
    pub fn append(&mut self, event: &Event) -> io::Result<()> {
        self.append_all(std::slice::from_ref(event))
    }

    /// Appends events durably with one write and one fsync, then enforces the bound.
    pub fn append_all(&mut self, events: &[Event]) -> io::Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let mut buf = Vec::with_capacity(events.len() * 512);
        let mut added = Vec::with_capacity(events.len());
        for e in events {
            let before = buf.len();
            serde_json::to_writer(&mut buf, e).map_err(io::Error::other)?;
            buf.push(b'\n');
            added.push(Entry {
                id: e.id,
                severity: e.severity,
                len: (buf.len() - before) as u64,
            });
        }
        self.file.write_all(&buf)?;
        self.file.sync_data()?;
        self.bytes += buf.len() as u64;
        self.index.extend(added);
        if self.bytes > self.max_bytes {
            self.compact()?;
        }
        Ok(())
    }

    /// Up to `max` events waiting for delivery, oldest first.
    pub fn pending(&self, max: usize) -> io::Result<Vec<Event>> {
        let mut out = Vec::new();
        let reader = BufReader::new(File::open(self.path())?);
        for line in reader.split(b'\n') {
            if out.len() == max {
                break;
            }
            out.push(serde_json::from_slice(&line?).map_err(io::Error::other)?);
        }
        Ok(out)
    }

    /// Removes acknowledged events; returns how many were removed.
    pub fn ack(&mut self, ids: &[Uuid]) -> io::Result<usize> {
        let ids: HashSet<&Uuid> = ids.iter().collect();
        let keep: Vec<bool> = self.index.iter().map(|e| !ids.contains(&e.id)).collect();
        let removed = keep.iter().filter(|k| !**k).count();
        if removed > 0 {
            self.rewrite(&keep)?;
        }
        Ok(removed)
    }

    /// Counts and sizes.
    pub fn stats(&self) -> SpoolStats {
        SpoolStats {
            events: self.index.len(),
            bytes: self.bytes,
            dropped: self.meta.dropped.clone(),
            torn_records: self.meta.torn_records,
        }
    }

    fn path(&self) -> PathBuf {
        self.dir.join("events.jsonl")
    }

    /// Drops the oldest events of the lowest severity first until the file
    /// is at 3/4 of the bound.
    fn compact(&mut self) -> io::Result<()> {
        let target = self.max_bytes / 4 * 3;
        let mut total = self.bytes;
        let mut keep = vec![true; self.index.len()];
        for sev in [
            Severity::Info,
            Severity::Warning,
            Severity::Error,
            Severity::Critical,
        ] {
            for (i, e) in self.index.iter().enumerate() {
                if total <= target {
                    break;
                }
                if e.severity == sev && keep[i] {
                    keep[i] = false;
                    total -= e.len;
                    self.meta.dropped.count(sev);
                }
            }
        }
        self.save_meta()?;
        self.rewrite(&keep)
    }

    /// Rewrites the file with the records whose `keep` flag is set, atomically.
    fn rewrite(&mut self, keep: &[bool]) -> io::Result<()> {
        let path = self.path();
        let old = fs::read(&path)?;
        let mut buf = Vec::with_capacity(old.len());
        let mut index = Vec::with_capacity(self.index.len());
        let mut off = 0usize;
        for (e, k) in self.index.iter().zip(keep) {
            let end = off + e.len as usize;
            if *k {
                buf.extend_from_slice(&old[off..end]);
                index.push(*e);
            }
            off = end;
        }
        flotilla_signing::fs::write_atomic(&path, &buf, 0o600)?;
        self.file = OpenOptions::new().read(true).append(true).open(&path)?;
        self.bytes = buf.len() as u64;
        self.index = index;
        Ok(())
    }

    fn save_meta(&self) -> io::Result<()> {
        let bytes = serde_json::to_vec(&self.meta).map_err(io::Error::other)?;
        flotilla_signing::fs::write_atomic(&self.dir.join("meta.json"), &bytes, 0o600)
    }
}

/// Returns the index of the good prefix and how many torn records follow it.
fn scan(file: &mut File) -> io::Result<(Vec<Entry>, u64)> {
    file.seek(SeekFrom::Start(0))?;
    let mut reader = BufReader::new(&*file);
    let mut index = Vec::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = reader.read_until(b'\n', &mut line)?;
        if n == 0 {
            return Ok((index, 0));
        }
        let parsed = match line.last() {
            Some(b'\n') => serde_json::from_slice::<Event>(&line[..n - 1]).ok(),
            _ => None,
        };
        let Some(e) = parsed else {
            // A torn or corrupt record: it and everything after it are dropped.
            let rest = reader.bytes().filter(|b| matches!(b, Ok(b'\n'))).count() as u64;
            return Ok((index, 1 + rest));
        };
        index.push(Entry {
            id: e.id,
            severity: e.severity,
            len: n as u64,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_protocol::{EventKind, EventStatus};

    fn ev(i: usize, status: EventStatus) -> Event {
        let kind = if status == EventStatus::Failed {
            EventKind::UpdateDownload
        } else {
            EventKind::UpdateDeferred
        };
        Event::new("web-01", kind, status, "test", format!("event {i}"))
    }

    #[test]
    fn append_pending_ack_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path()).unwrap();
        let events: Vec<Event> = (0..10).map(|i| ev(i, EventStatus::Info)).collect();
        s.append_all(&events).unwrap();
        let p = s.pending(4).unwrap();
        assert_eq!(p, events[..4]);
        let ids: Vec<Uuid> = p.iter().map(|e| e.id).collect();
        assert_eq!(s.ack(&ids).unwrap(), 4);
        assert_eq!(s.ack(&ids).unwrap(), 0);
        drop(s);
        let s = Spool::open(dir.path()).unwrap();
        assert_eq!(s.stats().events, 6);
        assert_eq!(s.pending(100).unwrap(), events[4..]);
    }

    #[test]
    fn torn_last_record_is_dropped_not_poisoning() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path()).unwrap();
        let events: Vec<Event> = (0..3).map(|i| ev(i, EventStatus::Info)).collect();
        s.append_all(&events).unwrap();
        drop(s);
        // Simulate a crash mid-write: half a record, no newline.
        let path = dir.path().join("spool/events.jsonl");
        let full = serde_json::to_vec(&ev(9, EventStatus::Info)).unwrap();
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&full[..full.len() / 2]).unwrap();
        drop(f);
        let mut s = Spool::open(dir.path()).unwrap();
        assert_eq!(s.pending(10).unwrap(), events);
        assert_eq!(s.stats().torn_records, 1);
        // and appending after recovery yields whole records
        let e = ev(4, EventStatus::Info);
        s.append(&e).unwrap();
        drop(s);
        let s = Spool::open(dir.path()).unwrap();
        assert_eq!(s.pending(10).unwrap().last(), Some(&e));
        assert_eq!(s.stats().events, 4);
    }

    #[test]
    fn bound_drops_info_before_errors_under_100k_events() {
        let dir = tempfile::tempdir().unwrap();
        let max = 256 * 1024;
        let mut s = Spool::open_with_limit(dir.path(), max).unwrap();
        let mut errors = Vec::new();
        for chunk in 0..1000 {
            let batch: Vec<Event> = (0..100)
                .map(|i| {
                    let status = if (chunk * 100 + i) % 1000 == 0 {
                        EventStatus::Failed
                    } else {
                        EventStatus::Info
                    };
                    ev(chunk * 100 + i, status)
                })
                .collect();
            errors.extend(
                batch
                    .iter()
                    .filter(|e| e.status == EventStatus::Failed)
                    .map(|e| e.id),
            );
            s.append_all(&batch).unwrap();
            assert!(
                s.stats().bytes <= max,
                "bound exceeded: {}",
                s.stats().bytes
            );
        }
        let st = s.stats();
        assert_eq!(errors.len(), 100);
        assert_eq!(st.dropped.error, 0, "errors must be dropped last");
        assert!(st.dropped.info > 90_000, "{st:?}");
        assert_eq!(st.dropped.total() + st.events as u64, 100_000);
        let kept: HashSet<Uuid> = s
            .pending(usize::MAX)
            .unwrap()
            .iter()
            .map(|e| e.id)
            .collect();
        assert!(errors.iter().all(|id| kept.contains(id)));
        let on_disk = fs::metadata(dir.path().join("spool/events.jsonl"))
            .unwrap()
            .len();
        assert_eq!(on_disk, st.bytes);
    }
}
