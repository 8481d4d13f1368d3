//! TLS for the publisher's HTTP client ([`crate::reporter_client`]): a
//! rustls connector plugged into ureq.
//!
//! ureq is the blocking client the agent and the demo use too; the agent
//! builds it with OpenSSL. Turning on ureq's own `tls` feature here would
//! also switch it on in the agent whenever the workspace is built together
//! (cargo unifies features), so the publisher brings its connector instead:
//! rustls (already linked for object_store) with the ring provider, and the
//! operating system's CA certificates (`rustls-native-certs`: the
//! distribution's bundle, or `SSL_CERT_FILE` / `SSL_CERT_DIR`), so a reporter
//! behind an in-house CA works once that CA is installed on the host. The
//! certificates are loaded on the first `https://` connection only.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, OnceLock};

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

/// A ureq TLS connector over rustls and the system's CA certificates.
#[derive(Default)]
pub struct RustlsConnector(OnceLock<Result<Arc<ClientConfig>, String>>);

impl RustlsConnector {
    fn config(&self) -> Result<Arc<ClientConfig>, String> {
        self.0.get_or_init(make_config).clone()
    }
}

fn make_config() -> Result<Arc<ClientConfig>, String> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (valid, _invalid) = roots.add_parsable_certificates(found.certs);
    if valid == 0 {
        let why = found
            .errors
            .first()
            .map(|e| format!(": {e}"))
            .unwrap_or_default();
        return Err(format!(
            "no CA certificates found on this host{why} (install ca-certificates, or point SSL_CERT_FILE at a bundle)"
        ));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

impl ureq::TlsConnector for RustlsConnector {
    fn connect(
        &self,
        dns_name: &str,
        io: Box<dyn ureq::ReadWrite>,
    ) -> Result<Box<dyn ureq::ReadWrite>, ureq::Error> {
        let tls_err = |e: String| std::io::Error::other(format!("TLS: {e}"));
        let config = self.config().map_err(tls_err)?;
        let name = ServerName::try_from(dns_name.to_owned())
            .map_err(|e| tls_err(format!("{dns_name:?} is not a valid server name: {e}")))?;
        let conn = ClientConnection::new(config, name).map_err(|e| tls_err(e.to_string()))?;
        let mut stream = StreamOwned::new(conn, io);
        // Handshake now, so a bad certificate is reported as a connection
        // failure rather than in the middle of writing the request.
        while stream.conn.is_handshaking() {
            stream.conn.complete_io(&mut stream.sock)?;
        }
        Ok(Box::new(TlsStream(stream)))
    }
}

#[derive(Debug)]
struct TlsStream(StreamOwned<ClientConnection, Box<dyn ureq::ReadWrite>>);

impl ureq::ReadWrite for TlsStream {
    fn socket(&self) -> Option<&TcpStream> {
        self.0.get_ref().socket()
    }
}

impl Read for TlsStream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(buf)
    }
}

impl Write for TlsStream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}
