//! The TCP connection under every networked git fetch (`git://`, `http://`,
//! and `https://`, whose OpenSSL stream runs on top of it), registered with
//! libgit2 as its standard stream so that the agent, not libgit2, reads the
//! socket.
//!
//! libgit2's own socket knows a read timeout only, and its transfer-progress
//! callback fires per object or per 100 KiB of pack: a server that trickles
//! its ref advertisement, or an object, a byte at a time is never seen by
//! either. Here every read, from the first byte of the advertisement to the
//! last of the pack, goes through a [`RateCheck`]: a connection that averages
//! less than `update.min_rate` over a `stall_timeout`-long window fails with
//! [`TooSlow`], which [`take_too_slow`] hands to the git source. Each write
//! (a request of the client) starts a new window, so the server is judged
//! only for the time it is the one to speak. A read that waits longer than
//! `stall_timeout` fails too, and connecting gives up after
//! `connect_timeout`.

use std::cell::Cell;
use std::ffi::{c_char, c_int, c_uint, c_void, CStr, CString};
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use libgit2_sys as raw;

use crate::http::{MinRate, RateCheck, TooSlow};

/// What each new connection is held to.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    /// TCP connect timeout.
    pub connect: Duration,
    /// Longest wait for a single read or write.
    pub stall: Duration,
    /// The slowest transfer accepted.
    pub min_rate: MinRate,
}

static LIMITS: Mutex<Option<Limits>> = Mutex::new(None);

thread_local! {
    static SLOW: Cell<Option<TooSlow>> = const { Cell::new(None) };
}

/// Makes libgit2 use this stream for every later connection, with `limits`.
pub(crate) fn install(limits: Limits) -> Result<(), String> {
    *LIMITS.lock().unwrap_or_else(|p| p.into_inner()) = Some(limits);
    static REGISTERED: OnceLock<c_int> = OnceLock::new();
    let result = *REGISTERED.get_or_init(|| {
        raw::init();
        let mut reg = Registration {
            version: 1,
            init: Some(init),
            wrap: None,
        };
        // SAFETY: libgit2 is initialised; the registration is copied.
        unsafe { git_stream_register(GIT_STREAM_STANDARD, &mut reg) }
    });
    match result {
        0 => Ok(()),
        e => Err(format!("registering the git stream failed ({e})")),
    }
}

/// The [`TooSlow`] that ended this thread's last connection, if one did.
pub(crate) fn take_too_slow() -> Option<TooSlow> {
    SLOW.with(Cell::take)
}

const GIT_STREAM_STANDARD: c_int = 1;

/// `git_stream_registration` (git2/sys/stream.h).
#[repr(C)]
struct Registration {
    version: c_int,
    init: Option<unsafe extern "C" fn(*mut *mut RawStream, *const c_char, *const c_char) -> c_int>,
    wrap: Option<unsafe extern "C" fn(*mut *mut RawStream, *mut RawStream, *const c_char) -> c_int>,
}

/// `git_stream` (git2/sys/stream.h); `flags` holds the bit fields
/// `encrypted` and `proxy_support`, both 0 here.
#[repr(C)]
struct RawStream {
    version: c_int,
    flags: c_uint,
    timeout: c_int,
    connect_timeout: c_int,
    connect: Option<unsafe extern "C" fn(*mut RawStream) -> c_int>,
    certificate: Option<unsafe extern "C" fn(*mut *mut raw::git_cert, *mut RawStream) -> c_int>,
    set_proxy: Option<unsafe extern "C" fn(*mut RawStream, *const raw::git_proxy_options) -> c_int>,
    read: Option<unsafe extern "C" fn(*mut RawStream, *mut c_void, usize) -> isize>,
    write: Option<unsafe extern "C" fn(*mut RawStream, *const c_char, usize, c_int) -> isize>,
    close: Option<unsafe extern "C" fn(*mut RawStream) -> c_int>,
    free: Option<unsafe extern "C" fn(*mut RawStream)>,
}

extern "C" {
    fn git_stream_register(kind: c_int, registration: *mut Registration) -> c_int;
}

/// A connection: the `git_stream` header first, so libgit2's pointer is
/// this struct's.
#[repr(C)]
struct Stream {
    raw: RawStream,
    host: String,
    port: String,
    limits: Limits,
    tcp: Option<TcpStream>,
    check: RateCheck,
}

fn fail(message: &str) -> c_int {
    let text = CString::new(message.replace('\0', " ")).unwrap_or_default();
    // SAFETY: a valid C string; libgit2 copies it.
    unsafe { raw::git_error_set_str(raw::GIT_ERROR_NET as c_int, text.as_ptr()) };
    -1
}

/// # Safety
/// Called by libgit2 with valid C strings and a place for the stream.
unsafe extern "C" fn init(
    out: *mut *mut RawStream,
    host: *const c_char,
    port: *const c_char,
) -> c_int {
    let text = |p: *const c_char| unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned();
    let Some(limits) = *LIMITS.lock().unwrap_or_else(|p| p.into_inner()) else {
        return fail("git stream used before its limits were set");
    };
    let stream = Box::new(Stream {
        raw: RawStream {
            version: 1,
            flags: 0,
            timeout: 0,
            connect_timeout: 0,
            connect: Some(connect),
            certificate: None,
            set_proxy: None,
            read: Some(read),
            write: Some(write),
            close: Some(close),
            free: Some(free),
        },
        host: text(host),
        port: text(port),
        limits,
        tcp: None,
        check: RateCheck::new(limits.min_rate),
    });
    unsafe { *out = Box::into_raw(stream).cast() };
    0
}

/// # Safety
/// `s` is a stream made by [`init`], used by one thread at a time.
unsafe fn this<'a>(s: *mut RawStream) -> &'a mut Stream {
    unsafe { &mut *s.cast::<Stream>() }
}

unsafe extern "C" fn connect(s: *mut RawStream) -> c_int {
    let s = unsafe { this(s) };
    SLOW.with(|c| c.set(None));
    let Ok(port) = s.port.parse::<u16>() else {
        return fail(&format!("invalid port {:?}", s.port));
    };
    let addrs = match (s.host.as_str(), port).to_socket_addrs() {
        Ok(a) => a,
        Err(e) => return fail(&format!("resolving {}: {e}", s.host)),
    };
    let mut last = format!("{}: no address", s.host);
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, s.limits.connect) {
            Ok(tcp) => {
                let stall = Some(s.limits.stall).filter(|d| !d.is_zero());
                if let Err(e) = tcp
                    .set_read_timeout(stall)
                    .and_then(|()| tcp.set_write_timeout(stall))
                {
                    return fail(&format!("{addr}: {e}"));
                }
                let _ = tcp.set_nodelay(true);
                s.tcp = Some(tcp);
                s.check = RateCheck::new(s.limits.min_rate);
                return 0;
            }
            Err(e) if e.kind() == ErrorKind::TimedOut => {
                last = format!(
                    "connecting to {addr} timed out after {:?} (update.connect_timeout)",
                    s.limits.connect
                )
            }
            Err(e) => last = format!("failed to connect to {addr}: {e}"),
        }
    }
    fail(&last)
}

fn stalled(s: &Stream, e: &std::io::Error) -> String {
    if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) {
        format!(
            "{}:{}: no data for {:?} (update.stall_timeout)",
            s.host, s.port, s.limits.stall
        )
    } else {
        format!("{}:{}: {e}", s.host, s.port)
    }
}

unsafe extern "C" fn read(s: *mut RawStream, buf: *mut c_void, len: usize) -> isize {
    let s = unsafe { this(s) };
    let Some(tcp) = s.tcp.as_mut() else {
        return fail("read before connect") as isize;
    };
    // SAFETY: libgit2 hands a buffer of `len` writable bytes.
    let buf = unsafe { std::slice::from_raw_parts_mut(buf.cast::<u8>(), len) };
    let n = loop {
        match tcp.read(buf) {
            Ok(n) => break n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return fail(&stalled(s, &e)) as isize,
        }
    };
    if let Err(slow) = s.check.add(n as u64) {
        SLOW.with(|c| c.set(Some(slow)));
        return fail(&slow.to_string()) as isize;
    }
    n as isize
}

unsafe extern "C" fn write(
    s: *mut RawStream,
    data: *const c_char,
    len: usize,
    _flags: c_int,
) -> isize {
    let s = unsafe { this(s) };
    let Some(tcp) = s.tcp.as_mut() else {
        return fail("write before connect") as isize;
    };
    // SAFETY: libgit2 hands `len` readable bytes.
    let data = unsafe { std::slice::from_raw_parts(data.cast::<u8>(), len) };
    loop {
        match tcp.write(data) {
            Ok(n) => {
                // The client spoke: the server's turn, and its window, starts.
                s.check = RateCheck::new(s.limits.min_rate);
                return n as isize;
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return fail(&stalled(s, &e)) as isize,
        }
    }
}

unsafe extern "C" fn close(s: *mut RawStream) -> c_int {
    if let Some(tcp) = unsafe { this(s) }.tcp.take() {
        let _ = tcp.shutdown(Shutdown::Both);
    }
    0
}

unsafe extern "C" fn free(s: *mut RawStream) {
    // SAFETY: made by `Box::into_raw` in `init`; libgit2 frees it once.
    drop(unsafe { Box::from_raw(s.cast::<Stream>()) });
}
