//! The agent's one HTTP client (ureq, blocking).
//!
//! TLS comes from the OpenSSL that is compiled into the binary (the same one
//! git2 uses): no TLS library is needed on the host, and there is only one
//! TLS stack in the binary. CA certificates are found the usual way
//! (openssl-probe: `SSL_CERT_FILE` / `SSL_CERT_DIR`, then the distribution's
//! bundle).
//!
//! Timeouts: `connect_timeout` for TCP + TLS setup; `stall_timeout` for every
//! single read and write, so a server that stops sending mid-body is
//! abandoned after that long without limiting how long a healthy transfer
//! may take. A server that keeps sending, but a trickle (a byte a second
//! resets every read timeout), is cut off by [`MinRate`]: a body that
//! averages less than `min_rate` bytes a second over a `stall_timeout`-long
//! window is abandoned.

use std::io::Read;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crate::error::Result;
use crate::version::VERSION;

/// Builds the client. TLS is set up on the first `https://` connection
/// (loading the CA bundle costs tens of milliseconds, which a pass over
/// plain HTTP or git never pays).
pub fn client(connect_timeout: Duration, stall_timeout: Duration) -> Result<ureq::Agent> {
    Ok(ureq::AgentBuilder::new()
        .timeout_connect(connect_timeout)
        .timeout_read(stall_timeout)
        .timeout_write(stall_timeout)
        .user_agent(&format!("flotilla-agent/{VERSION}"))
        .tls_connector(Arc::new(LazyTls::default()))
        .build())
}

/// The OpenSSL connector, made on first use.
#[derive(Default)]
struct LazyTls(OnceLock<std::result::Result<native_tls::TlsConnector, String>>);

impl ureq::TlsConnector for LazyTls {
    fn connect(
        &self,
        dns_name: &str,
        io: Box<dyn ureq::ReadWrite>,
    ) -> std::result::Result<Box<dyn ureq::ReadWrite>, ureq::Error> {
        match self
            .0
            .get_or_init(|| native_tls::TlsConnector::new().map_err(|e| e.to_string()))
        {
            Ok(tls) => ureq::TlsConnector::connect(tls, dns_name, io),
            Err(e) => Err(std::io::Error::other(format!("TLS setup: {e}")).into()),
        }
    }
}

/// A transport-level description of a ureq error (ureq's own text quotes
/// the URL; its credentials are removed).
pub fn describe(e: &ureq::Error) -> String {
    match e {
        ureq::Error::Status(code, resp) => format!("HTTP {code} {}", resp.status_text()),
        ureq::Error::Transport(t) => {
            flotilla_protocol::redact_urls(&flotilla_protocol::chain_text(t)).into_owned()
        }
    }
}

/// Whether an I/O error from a response body is a read timeout (a stall).
pub fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
    ) || e.to_string().contains("timed out")
}

/// The slowest transfer accepted (`update.min_rate` over windows of
/// `update.stall_timeout`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MinRate {
    /// Bytes per second; 0 turns the check off.
    pub bytes_per_sec: u64,
    /// The window the average is taken over.
    pub window: Duration,
}

impl MinRate {
    /// No minimum.
    pub const OFF: MinRate = MinRate {
        bytes_per_sec: 0,
        window: Duration::from_secs(30),
    };
}

/// A transfer that fell below its [`MinRate`]: the I/O error a
/// [`RateGuard`] returns (kind `TimedOut`), found again with [`too_slow`].
#[derive(Clone, Copy, Debug, thiserror::Error)]
#[error("transfer too slow: {bytes} bytes in {secs:.1}s ({rate:.1} bytes/s), below the minimum of {min} bytes/s (update.min_rate)", rate = *bytes as f64 / secs)]
pub struct TooSlow {
    /// Bytes received in the window.
    pub bytes: u64,
    /// Length of the window, in seconds.
    pub secs: f64,
    /// The minimum, bytes per second.
    pub min: u64,
}

/// Checks the average rate of a transfer over successive windows.
#[derive(Debug)]
pub struct RateCheck {
    min: MinRate,
    start: Instant,
    bytes: u64,
}

impl RateCheck {
    /// Starts the first window now.
    pub fn new(min: MinRate) -> Self {
        RateCheck {
            min,
            start: Instant::now(),
            bytes: 0,
        }
    }

    /// Counts `n` more bytes; an error once a whole window averaged below
    /// the minimum.
    pub fn add(&mut self, n: u64) -> std::result::Result<(), TooSlow> {
        self.bytes += n;
        if self.min.bytes_per_sec == 0 {
            return Ok(());
        }
        let secs = self.start.elapsed().as_secs_f64();
        if secs < self.min.window.as_secs_f64() {
            return Ok(());
        }
        if (self.bytes as f64) < self.min.bytes_per_sec as f64 * secs {
            return Err(TooSlow {
                bytes: self.bytes,
                secs,
                min: self.min.bytes_per_sec,
            });
        }
        self.start = Instant::now();
        self.bytes = 0;
        Ok(())
    }
}

/// A reader that fails with [`TooSlow`] when its [`RateCheck`] does.
pub struct RateGuard<R> {
    inner: R,
    check: RateCheck,
}

impl<R> RateGuard<R> {
    /// Guards `inner`, the first window starting now.
    pub fn new(inner: R, min: MinRate) -> Self {
        RateGuard {
            inner,
            check: RateCheck::new(min),
        }
    }
}

impl<R: Read> Read for RateGuard<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.check
            .add(n as u64)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::TimedOut, e))?;
        Ok(n)
    }
}

/// The [`TooSlow`] inside an I/O error from a [`RateGuard`], if that is
/// what it is.
pub fn too_slow(e: &std::io::Error) -> Option<TooSlow> {
    e.get_ref()?.downcast_ref::<TooSlow>().copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_check_refuses_a_window_below_the_minimum_and_off_means_off() {
        // A zero-length window is over at once: every count is judged.
        let min = MinRate {
            bytes_per_sec: u64::MAX,
            window: Duration::ZERO,
        };
        let started = |c: RateCheck| {
            // The clock must have moved for a rate to exist.
            while c.start.elapsed().is_zero() {
                std::hint::spin_loop();
            }
            c
        };
        let e = started(RateCheck::new(min)).add(1).unwrap_err();
        assert_eq!((e.bytes, e.min), (1, u64::MAX));
        assert!(e.to_string().contains("bytes/s"), "{e}");
        let mut off = RateCheck::new(MinRate {
            bytes_per_sec: 0,
            window: Duration::ZERO,
        });
        assert!(off.add(0).is_ok());
        // Through a reader: the error is an I/O error that `too_slow` finds.
        let mut guarded = RateGuard {
            inner: &b"abc"[..],
            check: started(RateCheck::new(min)),
        };
        let err = guarded.read(&mut [0u8; 8]).unwrap_err();
        assert_eq!(too_slow(&err).map(|s| s.bytes), Some(3));
    }
}
