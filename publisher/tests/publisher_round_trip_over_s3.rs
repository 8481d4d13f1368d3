//! A publisher round trip over a real S3 protocol server: `s3s-fs` on a
//! loopback port; `release add` uploads a 64 MiB artifact in parts,
//! `verify --check-artifacts` passes, `publish` writes the metadata; then the
//! object is altered in the store and `verify --check-artifacts` fails
//! naming it.
//!
//! Needs `s3s-fs` on PATH (`scripts/test` installs it); without it this test
//! fails, it does not skip.

mod common;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const ACCESS_KEY: &str = "flotilla-test";
const SECRET_KEY: &str = "flotilla-test-secret";
const BUCKET: &str = "updates";

struct S3sFs {
    child: Child,
    port: u16,
    data: PathBuf,
    log: PathBuf,
}

impl Drop for S3sFs {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl S3sFs {
    /// Starts s3s-fs serving `data` on a free loopback port and waits until
    /// the port accepts connections.
    fn start(dir: &Path) -> S3sFs {
        if let Err(e) = Command::new("s3s-fs").arg("--version").output() {
            panic!(
                "s3s-fs is required for the S3 round trip test and could not be run ({e}); \
                 install it with `cargo install --locked s3s-fs --version 0.14.1 --features binary` \
                 or run `scripts/test`, which does"
            );
        }
        let data = dir.join("s3-data");
        std::fs::create_dir_all(data.join(BUCKET)).unwrap();
        let log = dir.join("s3s-fs.log");
        for _attempt in 0..5 {
            // The port is free now; another process could take it before
            // s3s-fs binds it, in which case s3s-fs exits and we try again.
            let port = TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let logfile = std::fs::File::create(&log).unwrap();
            let mut child = Command::new("s3s-fs")
                .args(["--host", "127.0.0.1", "--port", &port.to_string()])
                .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
                .arg(&data)
                .env("RUST_LOG", "s3s=debug")
                .stdout(Stdio::from(logfile.try_clone().unwrap()))
                .stderr(Stdio::from(logfile))
                .spawn()
                .expect("spawn s3s-fs");
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return S3sFs {
                        child,
                        port,
                        data,
                        log,
                    };
                }
                if child.try_wait().unwrap().is_some() {
                    break; // lost the port race; retry with another
                }
                assert!(
                    Instant::now() < deadline,
                    "s3s-fs did not accept connections on port {port} within 30 s: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        panic!(
            "s3s-fs failed to start: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    fn env(&self) -> Vec<(String, String)> {
        [
            (
                "AWS_ENDPOINT_URL",
                format!("http://127.0.0.1:{}", self.port),
            ),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ALLOW_HTTP", "true".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }
}

/// 64 MiB of deterministic pseudo-random bytes.
fn artifact(path: &Path) {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut buf = Vec::with_capacity(64 << 20);
    while buf.len() < 64 << 20 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        buf.extend_from_slice(&x.to_le_bytes());
    }
    std::fs::write(path, buf).unwrap();
}

#[test]
fn round_trip_over_s3_detects_an_altered_artifact() {
    let mut f = Fleet::rooted(&["release"], 1);
    let s3 = S3sFs::start(f.tmp.path());
    f.env = s3.env();
    let store = format!("s3://{BUCKET}/fleet");
    let big = f.tmp.path().join("flotilla-agent");
    artifact(&big);
    let said = f.ok(&[
        "release",
        "add",
        "--version",
        "2.0.0",
        "--target",
        TARGET,
        "--file",
        big.to_str().unwrap(),
        "--store",
        &store,
    ]);
    assert!(
        said.contains("uploaded to s3://updates/fleet/flotilla-agent/2.0.0/"),
        "{said}"
    );
    let log = std::fs::read_to_string(&s3.log).unwrap();
    assert!(
        log.contains("CreateMultipartUpload")
            && log.contains("UploadPart")
            && log.contains("CompleteMultipartUpload"),
        "the 64 MiB artifact should go up in parts; s3s-fs log:\n{}",
        &log[..log.len().min(4000)]
    );
    let key = "fleet/flotilla-agent/2.0.0/x86_64-unknown-linux-gnu/flotilla-agent";
    let stored = s3.data.join(BUCKET).join(key);
    assert_eq!(std::fs::metadata(&stored).unwrap().len(), 64 << 20);

    f.rollout_stable("2.0.0");
    f.ok(&["sign", "--key", &f.key("release")]);
    f.ok(&["verify", "--check-artifacts", "--store", &store]);
    f.ok(&["publish", "--store", &store]);
    assert_eq!(
        std::fs::read_to_string(s3.data.join(BUCKET).join("fleet/manifest.json")).unwrap(),
        f.read("signed/manifest.json")
    );
    assert!(s3.data.join(BUCKET).join("fleet/root/1.root.json").exists());

    // Uploading the same file again is a no-op; another file is refused.
    let said = f.ok(&[
        "release",
        "add",
        "--version",
        "2.0.0",
        "--target",
        TARGET,
        "--file",
        big.to_str().unwrap(),
        "--store",
        &store,
    ]);
    assert!(said.contains("already in the store"), "{said}");
    let other = f.tmp.path().join("other");
    std::fs::write(&other, b"not the same build").unwrap();
    let e = f.fails(&[
        "release",
        "add",
        "--version",
        "2.0.1",
        "--target",
        TARGET,
        "--file",
        other.to_str().unwrap(),
        "--store",
        &store,
        "--path",
        "flotilla-agent/2.0.0/x86_64-unknown-linux-gnu/flotilla-agent",
    ]);
    assert!(e.contains("never overwritten"), "{e}");

    // Someone alters the object in the store (same size, one byte flipped).
    let mut bytes = std::fs::read(&stored).unwrap();
    bytes[40 << 20] ^= 0xff;
    std::fs::write(&stored, &bytes).unwrap();
    let e = f.fails(&["verify", "--check-artifacts", "--store", &store]);
    assert!(
        e.contains("s3://updates/fleet/flotilla-agent/2.0.0/x86_64-unknown-linux-gnu/flotilla-agent (release 2.0.0, x86_64-unknown-linux-gnu): the store has")
            && e.contains("were signed"),
        "{e}"
    );
    // And a missing object is named too.
    std::fs::remove_file(&stored).unwrap();
    let e = f.fails(&["verify", "--check-artifacts", "--store", &store]);
    assert!(
        e.contains("flotilla-agent/2.0.0/x86_64-unknown-linux-gnu/flotilla-agent")
            && e.contains("missing from the store"),
        "{e}"
    );
}
