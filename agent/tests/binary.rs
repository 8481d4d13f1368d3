//! The binary carries its own TLS: no libssl/libcrypto needed on the host.

#[test]
fn binary_needs_no_tls_library_on_the_host() {
    let out = std::process::Command::new("ldd")
        .arg(env!("CARGO_BIN_EXE_flotilla-agent"))
        .output()
        .expect("ldd runs");
    let libs = String::from_utf8_lossy(&out.stdout);
    assert!(!libs.is_empty());
    for tls in ["libssl", "libcrypto", "libgnutls", "libnss3"] {
        assert!(!libs.contains(tls), "links {tls}:\n{libs}");
    }
}

#[test]
fn tls_connector_initialises_with_the_builtin_openssl() {
    // What the agent's HTTP client makes on its first https:// connection.
    native_tls::TlsConnector::new().expect("TLS connector");
}
