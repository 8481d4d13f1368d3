//! Downloading an artifact (docs/design.md, pass step 6), the rustup way.
//!
//! 1. The URL is the artifact base URL joined with the signed relative path;
//!    the path is checked again here ([`artifact_url`]): no `..`, no absolute
//!    path, no percent-encoding, and the joined URL must stay under the base.
//! 2. Bytes go to `state_dir/downloads/<sha256>.partial` (mode 0600, never
//!    executable). A partial file left by an earlier pass is re-hashed from
//!    disk and resumed with `Range: bytes=<len>-`; a server that answers 200
//!    instead of 206 restarts the file.
//! 3. The body is capped at the signed size: a `Content-Length` above it is
//!    refused before any byte is read, and a body that goes on past it is
//!    cut off, the partial file deleted.
//! 4. SHA-256 is computed while the bytes arrive, on a thread of its own
//!    (the network thread also writes the file), so hashing costs (almost)
//!    no wall time beyond the transfer when a core is free.
//! 5. Only when size and SHA-256 match is the file fsynced and renamed to
//!    `downloads/<sha256>`. A mismatch deletes it; a transport failure (stall,
//!    connection lost, short body) keeps it for the next pass to resume.
//!
//! Timeouts: connect, stall and the minimum rate (see [`crate::http`]);
//! `file://` URLs are read directly with the same cap and hashing.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use flotilla_protocol::sources::check_relative_path;
use flotilla_signing::StreamingHasher;
use url::Url;

use crate::error::{Error, Result, Transfer};
use crate::fault;
use crate::http::{MinRate, RateGuard};

/// Size of one transfer buffer.
const BUF: usize = 256 * 1024;
/// Buffers in flight between the network, hashing and writing threads.
const BUFFERS: usize = 8;
/// Writeback of the partial file is started every this many bytes, so the
/// fsync before the rename has little left to flush.
const WRITEBACK: u64 = 16 * 1024 * 1024;

/// The URL of an artifact: `base` joined with the signed relative `path`.
pub fn artifact_url(base: &str, path: &str) -> Result<Url> {
    let escapes = |reason: String| Error::PathEscapes {
        path: path.to_owned(),
        base: base.to_owned(),
        reason,
    };
    check_relative_path(path).map_err(escapes)?;
    if path.contains(['%', '?', '#']) {
        return Err(escapes(
            "percent-encoding, `?` and `#` are not allowed".into(),
        ));
    }
    let mut b = base.to_owned();
    if !b.ends_with('/') {
        b.push('/');
    }
    let base_url = Url::parse(&b).map_err(|e| escapes(format!("base URL: {e}")))?;
    let joined = base_url.join(path).map_err(|e| escapes(e.to_string()))?;
    if !joined.as_str().starts_with(base_url.as_str()) || joined.query().is_some() {
        return Err(escapes(format!("resolves to {joined}, outside the base")));
    }
    Ok(joined)
}

/// What to fetch and where.
pub struct Request<'a> {
    /// Artifact URL (http, https or file).
    pub url: &'a Url,
    /// Signed SHA-256 (lowercase hex).
    pub sha256: &'a str,
    /// Signed size.
    pub size: u64,
    /// `state_dir/downloads`.
    pub dir: &'a Path,
    /// The slowest transfer accepted (`update.min_rate`).
    pub min_rate: MinRate,
}

/// Where the time of a [`fetch`] went.
#[derive(Clone, Copy, Debug, Default)]
pub struct Phases {
    /// Opening the body, reading, hashing and writing it (until the last
    /// byte is written and hashed).
    pub transfer: Duration,
    /// The fsync of the file, the rename and the fsync of the directory:
    /// what makes the download durable (`curl -o` does none of it).
    pub sync: Duration,
}

/// Downloads and verifies; returns the verified file `dir/<sha256>`.
pub fn fetch(http: &ureq::Agent, req: &Request<'_>) -> Result<PathBuf> {
    fetch_timed(http, req).map(|(path, _)| path)
}

/// [`fetch`], also saying where its time went (for `examples/download`,
/// which the benchmark runs).
pub fn fetch_timed(http: &ureq::Agent, req: &Request<'_>) -> Result<(PathBuf, Phases)> {
    let started = Instant::now();
    fs::create_dir_all(req.dir).map_err(|e| Error::io(req.dir, e))?;
    let done = req.dir.join(req.sha256);
    let partial = req.dir.join(format!("{}.partial", req.sha256));
    // A verified file from an interrupted earlier pass: check it again.
    if done.exists() {
        let f = File::open(&done).map_err(|e| Error::io(&done, e))?;
        let s = flotilla_signing::hash_reader(f).map_err(|e| Error::io(&done, e))?;
        if s.sha256 == req.sha256 && s.size == req.size {
            return Ok((done, Phases::default()));
        }
        fs::remove_file(&done).map_err(|e| Error::io(&done, e))?;
    }
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&partial)
        .map_err(|e| Error::io(&partial, e))?;
    let mut have = file.metadata().map_err(|e| Error::io(&partial, e))?.len();
    if have > req.size {
        truncate(&mut file, &partial)?;
        have = 0;
    }
    let mut hasher = StreamingHasher::new();
    if have > 0 {
        // Re-hash what an earlier pass left, then append after it.
        let mut buf = vec![0u8; BUF];
        let mut left = have;
        file.seek(SeekFrom::Start(0))
            .map_err(|e| Error::io(&partial, e))?;
        while left > 0 {
            let n = file
                .read(&mut buf[..(left.min(BUF as u64) as usize)])
                .map_err(|e| Error::io(&partial, e))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            left -= n as u64;
        }
    }
    file.seek(SeekFrom::End(0))
        .map_err(|e| Error::io(&partial, e))?;
    let url = req.url.as_str();
    if have < req.size {
        let (mut reader, start) = open_body(http, req, have)?;
        if start != have {
            truncate(&mut file, &partial)?;
            hasher = StreamingHasher::new();
        }
        let result = copy_capped(&mut *reader, &mut file, hasher, start, req.size);
        hasher = match result {
            Ok(h) => h,
            Err(CopyError::TooLarge) => {
                let _ = fs::remove_file(&partial);
                return Err(Error::TooLarge {
                    url: url.to_owned(),
                    limit: req.size,
                });
            }
            Err(CopyError::Read(e)) => {
                let _ = file.sync_data();
                return Err(Error::Download {
                    url: url.to_owned(),
                    source: Transfer::body(e),
                    kept: true,
                });
            }
            Err(CopyError::Write(e)) => return Err(Error::io(&partial, e)),
        };
    }
    fault::point("after-download");
    let summary = hasher.finish();
    if summary.size != req.size {
        let _ = file.sync_data();
        return Err(Error::Download {
            url: url.to_owned(),
            source: Transfer::Short {
                got: summary.size,
                want: req.size,
            },
            kept: true,
        });
    }
    if summary.sha256 != req.sha256 {
        drop(file);
        let _ = fs::remove_file(&partial);
        return Err(Error::HashMismatch {
            url: url.to_owned(),
            expected: req.sha256.to_owned(),
            calculated: summary.sha256,
        });
    }
    let transferred = Instant::now();
    file.sync_all().map_err(|e| Error::io(&partial, e))?;
    drop(file);
    fs::rename(&partial, &done).map_err(|e| Error::io(&done, e))?;
    flotilla_signing::fs::sync_dir(req.dir).map_err(|e| Error::io(req.dir, e))?;
    let phases = Phases {
        transfer: transferred - started,
        sync: transferred.elapsed(),
    };
    fault::point("after-verify");
    Ok((done, phases))
}

fn truncate(file: &mut File, path: &Path) -> Result<()> {
    file.set_len(0).map_err(|e| Error::io(path, e))?;
    file.seek(SeekFrom::Start(0))
        .map_err(|e| Error::io(path, e))?;
    Ok(())
}

/// Opens the body from offset `have` (or from 0 if the server will not
/// resume); returns the reader and the offset it starts at.
fn open_body(
    http: &ureq::Agent,
    req: &Request<'_>,
    have: u64,
) -> Result<(Box<dyn Read + Send>, u64)> {
    let url = req.url.as_str();
    let dl = |source: Transfer| Error::Download {
        url: url.to_owned(),
        source,
        kept: false,
    };
    if req.url.scheme() == "file" {
        let path = req
            .url
            .to_file_path()
            .map_err(|_| dl(Transfer::Refused("not a local file path".into())))?;
        let file_err = |source| {
            dl(Transfer::File {
                path: path.clone(),
                source,
            })
        };
        let mut f = File::open(&path).map_err(file_err)?;
        let len = f.metadata().map_err(file_err)?.len();
        if len > req.size {
            return Err(Error::TooLarge {
                url: url.to_owned(),
                limit: req.size,
            });
        }
        f.seek(SeekFrom::Start(have)).map_err(file_err)?;
        return Ok((Box::new(f), have));
    }
    let mut r = http.get(url).set("Accept-Encoding", "identity");
    if have > 0 {
        r = r.set("Range", &format!("bytes={have}-"));
    }
    let resp = match r.call() {
        Ok(resp) => resp,
        Err(ureq::Error::Status(416, _)) if have > 0 => {
            // The server cannot resume from there: start over.
            return open_body(http, req, 0).map(|(r, _)| (r, 0));
        }
        Err(e) => return Err(dl(Transfer::Http(Box::new(e)))),
    };
    let start = match resp.status() {
        206 => {
            let ok = resp
                .header("Content-Range")
                .and_then(|cr| cr.strip_prefix("bytes "))
                .and_then(|cr| cr.split('-').next())
                .and_then(|s| s.trim().parse::<u64>().ok())
                == Some(have);
            if !ok {
                // A range other than the one asked for: start over.
                return open_body(http, req, 0);
            }
            have
        }
        200 => 0,
        s => return Err(dl(Transfer::Refused(format!("unexpected HTTP {s}")))),
    };
    if let Some(len) = resp
        .header("Content-Length")
        .and_then(|l| l.trim().parse::<u64>().ok())
    {
        if start + len > req.size {
            return Err(Error::TooLarge {
                url: url.to_owned(),
                limit: req.size,
            });
        }
    }
    Ok((
        Box::new(RateGuard::new(resp.into_reader(), req.min_rate)),
        start,
    ))
}

enum CopyError {
    TooLarge,
    Read(std::io::Error),
    Write(std::io::Error),
}

/// Copies `reader` to `file` (which already holds `start` bytes fed to
/// `hasher`), stopping with `TooLarge` as soon as more than `size` bytes in
/// total arrive.
///
/// Two stages on two threads pass the same buffers along: this thread reads
/// the network and writes each buffer to the file (starting its writeback
/// now and then); a second thread hashes the buffers in order and hands them
/// back. SHA-256 (SHA-NI, about 1 GB/s on the Xeons we measured) costs about
/// as much CPU as the receive and write copies together, so on two cores the
/// two halves run side by side. In alternating rounds on two quiet cores
/// this measured 0.88-0.97x `curl -o` (median of 10 rounds) against
/// 0.91-1.00x for three threads (read | hash | write); see
/// docs/benchmarks.md.
fn copy_capped(
    reader: &mut dyn Read,
    file: &mut File,
    hasher: StreamingHasher,
    start: u64,
    size: u64,
) -> std::result::Result<StreamingHasher, CopyError> {
    let (hash_tx, hash_rx) = mpsc::sync_channel::<(Vec<u8>, usize)>(BUFFERS);
    let (empty_tx, empty_rx) = mpsc::channel::<Vec<u8>>();
    let out: &File = file;
    std::thread::scope(|scope| {
        let hashing = scope.spawn(move || {
            let mut hasher = hasher;
            for (buf, n) in hash_rx {
                hasher.update(&buf[..n]);
                // The reader may have finished; the buffer is then dropped.
                let _ = empty_tx.send(buf);
            }
            hasher
        });
        let result = read_capped(reader, out, &hash_tx, &empty_rx, start, size);
        drop(hash_tx);
        let hasher = hashing.join().expect("hashing thread does not panic");
        result.map(|()| hasher)
    })
}

/// The network and file stage of [`copy_capped`]: fills buffers (recycled
/// through `empty`), writes each to `out` and sends it on to be hashed,
/// until the body ends, an error, or the cap.
fn read_capped(
    reader: &mut dyn Read,
    mut out: &File,
    full: &mpsc::SyncSender<(Vec<u8>, usize)>,
    empty: &mpsc::Receiver<Vec<u8>>,
    start: u64,
    size: u64,
) -> std::result::Result<(), CopyError> {
    let mut spare: Vec<Vec<u8>> = (0..BUFFERS).map(|_| vec![0u8; BUF]).collect();
    let mut total = start;
    let mut flushed = start;
    let half = size / 2;
    loop {
        let mut buf = match empty.try_recv() {
            Ok(b) => b,
            Err(_) => match spare.pop() {
                Some(b) => b,
                None => empty
                    .recv()
                    .expect("the hashing thread runs until the sender is dropped"),
            },
        };
        let (n, read_err) = fill(reader, &mut buf);
        if n == 0 {
            return match read_err {
                Some(e) => Err(CopyError::Read(e)),
                None => Ok(()),
            };
        }
        let allowed = size - total;
        let take = (n as u64).min(allowed) as usize;
        let before = total;
        out.write_all(&buf[..take]).map_err(CopyError::Write)?;
        total += take as u64;
        if total - flushed >= WRITEBACK {
            start_writeback(out, flushed, total - flushed);
            flushed = total;
        }
        full.send((buf, take))
            .expect("the hashing thread runs until the sender is dropped");
        if take < n {
            return Err(CopyError::TooLarge);
        }
        if let Some(e) = read_err {
            // What arrived before the error is on disk, for the next pass to resume.
            return Err(CopyError::Read(e));
        }
        if before < half && total >= half {
            fault::point("mid-download");
        }
        if total == size {
            // Anything beyond the signed size is an error; probe for one byte.
            let mut probe = [0u8; 1];
            return match reader.read(&mut probe) {
                Ok(0) => Ok(()),
                Ok(_) => Err(CopyError::TooLarge),
                Err(e) => Err(CopyError::Read(e)),
            };
        }
    }
}

/// Asks the kernel to start writing a range of `file` back to disk without
/// waiting for it (Linux `sync_file_range(SYNC_FILE_RANGE_WRITE)`): the
/// transfer goes on while the disk catches up, and the final fsync is short.
/// Durability still comes from that fsync; this only moves work earlier.
fn start_writeback(file: &File, offset: u64, len: u64) {
    use std::os::unix::io::AsRawFd;
    // SAFETY: a valid fd owned by `file`; the call only schedules I/O.
    unsafe {
        libc::sync_file_range(
            file.as_raw_fd(),
            offset as libc::off64_t,
            len as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        );
    }
}

/// Reads until `buf` is full, the stream ends, or an error; returns what
/// was read and the error, if any (the bytes before it still count).
fn fill(reader: &mut dyn Read, buf: &mut [u8]) -> (usize, Option<std::io::Error>) {
    let mut n = 0;
    while n < buf.len() {
        match reader.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return (n, Some(e)),
        }
    }
    (n, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn artifact_urls_stay_under_the_base() {
        let u = artifact_url("http://h/a/", "agent/1.0/flotilla-agent").unwrap();
        assert_eq!(u.as_str(), "http://h/a/agent/1.0/flotilla-agent");
        let u = artifact_url("http://h/a", "x").unwrap();
        assert_eq!(u.as_str(), "http://h/a/x");
        for bad in [
            "../x",
            "/etc/passwd",
            "a/../../x",
            "%2e%2e/x",
            "a/%2e%2e/%2e%2e/x",
            "x?y",
            "http://evil/x",
            "//evil/x",
        ] {
            assert!(artifact_url("http://h/a/", bad).is_err(), "{bad}");
        }
    }

    fn sha(bytes: &[u8]) -> String {
        flotilla_signing::hash_reader(bytes).unwrap().sha256
    }

    #[test]
    fn file_urls_download_resume_and_cap() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("art");
        let body: Vec<u8> = (0..700_000u32).map(|i| (i % 251) as u8).collect();
        fs::write(&src, &body).unwrap();
        let url = Url::from_file_path(&src).unwrap();
        let dl = dir.path().join("dl");
        let http = ureq::agent();
        let digest = sha(&body);
        // a partial file from an earlier pass is resumed
        fs::create_dir_all(&dl).unwrap();
        fs::write(dl.join(format!("{digest}.partial")), &body[..1000]).unwrap();
        let req = Request {
            url: &url,
            sha256: &digest,
            size: body.len() as u64,
            dir: &dl,
            min_rate: MinRate::OFF,
        };
        let out = fetch(&http, &req).unwrap();
        assert_eq!(fs::read(&out).unwrap(), body);
        // wrong hash: deleted, error names both digests
        fs::remove_file(&out).unwrap();
        let wrong = "0".repeat(64);
        let err = fetch(
            &http,
            &Request {
                sha256: &wrong,
                ..req
            },
        )
        .unwrap_err();
        assert!(matches!(err, Error::HashMismatch { .. }), "{err}");
        assert!(err.to_string().contains(&digest));
        assert_eq!(fs::read_dir(&dl).unwrap().count(), 0);
        // larger than signed
        let err = fetch(&http, &Request { size: 10, ..req }).unwrap_err();
        assert!(matches!(err, Error::TooLarge { .. }), "{err}");
    }
}
