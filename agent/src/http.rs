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

use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::version::VERSION;

/// Builds the client.
pub fn client(connect_timeout: Duration, stall_timeout: Duration) -> Result<ureq::Agent> {
    let tls = native_tls::TlsConnector::new().map_err(|e| Error::Fetch {
        url: "(TLS setup)".into(),
        reason: e.to_string(),
    })?;
    Ok(ureq::AgentBuilder::new()
        .timeout_connect(connect_timeout)
        .timeout_read(stall_timeout)
        .timeout_write(stall_timeout)
        .user_agent(&format!("flotilla-agent/{VERSION}"))
        .tls_connector(Arc::new(tls))
        .build())
}

/// A transport-level description of a ureq error.
pub fn describe(e: &ureq::Error) -> String {
    match e {
        ureq::Error::Status(code, resp) => format!("HTTP {code} {}", resp.status_text()),
        ureq::Error::Transport(t) => {
            let mut s = t.to_string();
            let mut src = std::error::Error::source(t);
            while let Some(c) = src {
                let text = c.to_string();
                if !s.contains(&text) {
                    s.push_str(": ");
                    s.push_str(&text);
                }
                src = c.source();
            }
            s
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
