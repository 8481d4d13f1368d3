//! A small HTTP/1.1 file server on 127.0.0.1:0 for the tests: serves a
//! directory with ETag / Last-Modified (304 on a match) and `Range: bytes=N-`
//! (206), and has knobs for the attack matrix: replace a path's bytes, send
//! an endless body, stall after N bytes, answer with a status, or serve a
//! fixed body (e.g. the reporter's gate). Every request is logged.

use std::collections::HashMap;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

/// How to answer a path.
#[derive(Clone, Debug)]
pub enum Knob {
    /// Serve these bytes instead of the file (with a correct Content-Length).
    Bytes(Vec<u8>),
    /// 200 without Content-Length and a body that never ends.
    Endless,
    /// Send the headers and this many bytes of the file, then stop sending
    /// (the connection stays open until the client gives up).
    StallAfter(u64),
    /// Like `StallAfter`, once; later requests are served normally.
    StallOnceAfter(u64),
    /// Answer with this status and an empty body.
    Status(u16),
    /// Answer 200 with this body (JSON etc.).
    Body(String),
    /// Send the headers, then the file one byte at a time with this pause
    /// between bytes (never long enough for a stall timeout), until the
    /// client hangs up.
    Trickle(std::time::Duration),
}

/// One logged request.
#[derive(Clone, Debug)]
pub struct Logged {
    /// The path.
    pub path: String,
    /// Request headers, lowercase names.
    pub headers: HashMap<String, String>,
    /// The status answered.
    pub status: u16,
}

#[derive(Default)]
struct Shared {
    knobs: HashMap<String, Knob>,
    log: Vec<Logged>,
}

/// The server; stops when dropped.
pub struct Server {
    port: u16,
    root: PathBuf,
    shared: Arc<Mutex<Shared>>,
    stop: Arc<AtomicBool>,
}

impl Server {
    /// Serves `root` on 127.0.0.1 with a free port.
    pub fn start(root: &Path) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let shared = Arc::new(Mutex::new(Shared::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (r, s, st) = (root.to_owned(), shared.clone(), stop.clone());
        thread::spawn(move || {
            for conn in listener.incoming() {
                if st.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (r, s, st) = (r.clone(), s.clone(), st.clone());
                thread::spawn(move || {
                    let _ = handle(conn, &r, &s, &st);
                });
            }
        });
        Server {
            port,
            root: root.to_owned(),
            shared,
            stop,
        }
    }

    /// `http://127.0.0.1:<port>/`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }

    /// The directory served.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Sets how `path` (e.g. "/manifest.json") is answered.
    pub fn knob(&self, path: &str, knob: Knob) {
        self.shared.lock().unwrap().knobs.insert(path.into(), knob);
    }

    /// Back to serving files.
    pub fn clear_knobs(&self) {
        self.shared.lock().unwrap().knobs.clear();
    }

    /// Requests so far.
    pub fn log(&self) -> Vec<Logged> {
        self.shared.lock().unwrap().log.clone()
    }

    /// Forgets the log.
    pub fn clear_log(&self) {
        self.shared.lock().unwrap().log.clear();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn http_date(t: std::time::SystemTime) -> String {
    let dt: chrono::DateTime<chrono::Utc> = t.into();
    dt.format("%a, %d %b %Y %H:%M:%S GMT").to_string()
}

fn handle(
    mut conn: TcpStream,
    root: &Path,
    shared: &Mutex<Shared>,
    stop: &AtomicBool,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_owned();
    let path = path.split('?').next().unwrap().to_owned();
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
        }
    }
    let knob = {
        let mut s = shared.lock().unwrap();
        let k = s.knobs.get(&path).cloned();
        if let Some(Knob::StallOnceAfter(_)) = k {
            s.knobs.remove(&path);
        }
        k
    };
    let log = |status: u16| {
        shared.lock().unwrap().log.push(Logged {
            path: path.clone(),
            headers: headers.clone(),
            status,
        });
    };
    let file = root.join(path.trim_start_matches('/'));
    match knob {
        Some(Knob::Status(code)) => {
            log(code);
            write!(
                conn,
                "HTTP/1.1 {code} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )?;
            return Ok(());
        }
        Some(Knob::Body(b)) => {
            log(200);
            write!(
                conn,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{b}",
                b.len()
            )?;
            return Ok(());
        }
        Some(Knob::Bytes(b)) => {
            log(200);
            write!(
                conn,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                b.len()
            )?;
            conn.write_all(&b)?;
            return Ok(());
        }
        Some(Knob::Endless) => {
            log(200);
            write!(conn, "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")?;
            let chunk = vec![0x5au8; 64 * 1024];
            while !stop.load(Ordering::SeqCst) {
                conn.write_all(&chunk)?;
            }
            return Ok(());
        }
        Some(Knob::Trickle(gap)) => {
            log(200);
            let bytes = fs::read(&file)?;
            write!(
                conn,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                bytes.len()
            )?;
            for b in bytes {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                conn.write_all(&[b])?;
                conn.flush()?;
                thread::sleep(gap);
            }
            return Ok(());
        }
        Some(Knob::StallAfter(n)) | Some(Knob::StallOnceAfter(n)) => {
            log(200);
            let bytes = fs::read(&file)?;
            write!(
                conn,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                bytes.len()
            )?;
            conn.write_all(&bytes[..(n as usize).min(bytes.len())])?;
            conn.flush()?;
            // Send nothing more; wait until the client hangs up.
            let mut sink = [0u8; 1024];
            while reader.read(&mut sink)? > 0 {}
            return Ok(());
        }
        None => {}
    }
    let meta = match fs::metadata(&file) {
        Ok(m) if m.is_file() && !path.contains("..") => m,
        _ => {
            log(404);
            write!(
                conn,
                "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )?;
            return Ok(());
        }
    };
    let mtime = meta.modified()?;
    let len = meta.len();
    let etag = format!(
        "\"{len:x}-{:x}\"",
        mtime
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let last_modified = http_date(mtime);
    let not_modified = headers.get("if-none-match") == Some(&etag)
        || (!headers.contains_key("if-none-match")
            && headers.get("if-modified-since") == Some(&last_modified));
    if not_modified {
        log(304);
        write!(
            conn,
            "HTTP/1.1 304 Not Modified\r\nETag: {etag}\r\nConnection: close\r\n\r\n"
        )?;
        return Ok(());
    }
    let start = headers
        .get("range")
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|n| n.parse::<u64>().ok());
    let mut f = fs::File::open(&file)?;
    match start {
        Some(s) if s >= len => {
            log(416);
            write!(conn, "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{len}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")?;
            Ok(())
        }
        Some(s) => {
            log(206);
            write!(
                conn,
                "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {s}-{}/{len}\r\nContent-Length: {}\r\nETag: {etag}\r\nConnection: close\r\n\r\n",
                len - 1,
                len - s
            )?;
            std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(s))?;
            std::io::copy(&mut f, &mut conn)?;
            Ok(())
        }
        None => {
            log(200);
            write!(
                conn,
                "HTTP/1.1 200 OK\r\nContent-Length: {len}\r\nETag: {etag}\r\nLast-Modified: {last_modified}\r\nAccept-Ranges: bytes\r\nConnection: close\r\n\r\n"
            )?;
            std::io::copy(&mut f, &mut conn)?;
            Ok(())
        }
    }
}
