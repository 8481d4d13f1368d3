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
//! may take.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

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

/// A transport-level description of a ureq error.
pub fn describe(e: &ureq::Error) -> String {
    match e {
        ureq::Error::Status(code, resp) => format!("HTTP {code} {}", resp.status_text()),
        ureq::Error::Transport(t) => flotilla_protocol::chain_text(t),
    }
}

/// Whether an I/O error from a response body is a read timeout (a stall).
pub fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
    ) || e.to_string().contains("timed out")
}
