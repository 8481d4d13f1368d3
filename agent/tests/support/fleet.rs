//! A fleet repo made with the real `flotilla-publisher`, and the artifact
//! store next to it (`store/`: artifacts, plus `manifest.json` and `root/`
//! after `publish`, for HTTP sources). Attack fixtures are crafted from the
//! same keys with the signing and protocol libraries.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use flotilla_signing::{Envelope, PrivateKey};

use super::bins;

/// The target triple the test agents are built for.
pub const TARGET: &str = flotilla_agent::version::TARGET;

/// A fleet repo and its store.
pub struct Fleet {
    /// The fleet repo (a git work tree).
    pub repo: PathBuf,
    /// Keys: root.pem, release.pem (+ .pub.pem).
    pub keys: PathBuf,
    /// The artifact store, also the static HTTP store after `publish`.
    pub store: PathBuf,
}

/// Runs a command, panicking with its output on failure.
pub fn sh(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl Fleet {
    /// `init`, keys, root 1 signed, committed.
    pub fn new(base: &Path) -> Fleet {
        let f = Fleet {
            repo: base.join("fleet"),
            keys: base.join("keys"),
            store: base.join("store"),
        };
        fs::create_dir_all(&f.keys).unwrap();
        fs::create_dir_all(&f.store).unwrap();
        sh(Command::new(bins::publisher())
            .arg("init")
            .arg(&f.repo)
            .args(["--fleet", "test"]));
        for k in ["root", "release"] {
            f.publisher(&["keygen", "--out", f.key(k).to_str().unwrap()]);
        }
        f.publisher(&[
            "root",
            "init",
            "--root-key",
            f.pubkey("root").to_str().unwrap(),
            "--release-key",
            f.pubkey("release").to_str().unwrap(),
        ]);
        f.publisher(&["root", "sign", "--key", f.key("root").to_str().unwrap()]);
        f.commit("root 1");
        f
    }

    /// Path of a private key.
    pub fn key(&self, name: &str) -> PathBuf {
        self.keys.join(format!("{name}.pem"))
    }

    /// Path of a public key.
    pub fn pubkey(&self, name: &str) -> PathBuf {
        self.keys.join(format!("{name}.pub.pem"))
    }

    /// Loads a private key.
    pub fn private(&self, name: &str) -> PrivateKey {
        PrivateKey::load(&self.key(name)).unwrap()
    }

    /// Runs the publisher on the repo.
    pub fn publisher(&self, args: &[&str]) -> String {
        sh(Command::new(bins::publisher())
            .arg("--repo")
            .arg(&self.repo)
            .args(args))
    }

    /// `git add -A && git commit` in the repo.
    pub fn commit(&self, msg: &str) {
        sh(Command::new("git")
            .current_dir(&self.repo)
            .args(["add", "-A"]));
        sh(Command::new("git").current_dir(&self.repo).args([
            "-c",
            "user.name=test",
            "-c",
            "user.email=test@example.invalid",
            "commit",
            "-q",
            "--allow-empty",
            "-m",
            msg,
        ]));
    }

    /// `release add` of an agent build, uploaded to the store.
    pub fn release(&self, version: &str, bin: &Path, min_from: Option<&str>) {
        let mut args = vec![
            "release",
            "add",
            "--version",
            version,
            "--target",
            TARGET,
            "--file",
            bin.to_str().unwrap(),
            "--store",
            self.store.to_str().unwrap(),
        ];
        if let Some(m) = min_from {
            args.extend(["--min-from", m]);
        }
        self.publisher(&args);
    }

    /// `rollout set` with one wave open to everyone now (unless `waves`),
    /// plus extra flags.
    pub fn rollout(&self, release: &str, waves: Option<&str>, extra: &[&str]) {
        let mut args = vec![
            "rollout",
            "set",
            "--channel",
            "stable",
            "--release",
            release,
            "--start",
            "2020-01-01T00:00:00Z",
            "--waves",
            waves.unwrap_or("all=100%@0s/0s"),
        ];
        args.extend(extra);
        self.publisher(&args);
    }

    /// `sign`, commit, `publish` to the store.
    pub fn sign(&self) {
        self.publisher(&["sign", "--key", self.key("release").to_str().unwrap()]);
        self.commit("sign");
        self.publisher(&["publish", "--store", self.store.to_str().unwrap()]);
    }

    /// The fleet repo as a file:// URL.
    pub fn file_url(&self) -> String {
        format!("file://{}", self.repo.display())
    }

    /// root/1.root.json (the agents' trust anchor).
    pub fn root1(&self) -> PathBuf {
        self.repo.join("root/1.root.json")
    }

    /// The signed manifest envelope in the repo.
    pub fn envelope(&self) -> Envelope {
        Envelope::from_json(&fs::read(self.repo.join("signed/manifest.json")).unwrap()).unwrap()
    }

    /// Replaces signed/manifest.json (repo, committed; and store) with `env`.
    pub fn put_manifest(&self, env: &Envelope) {
        let text = env.to_json_pretty();
        fs::write(self.repo.join("signed/manifest.json"), &text).unwrap();
        fs::write(self.store.join("manifest.json"), &text).unwrap();
        self.commit("crafted manifest");
    }

    /// Writes root/<n>.root.json (repo, committed; and store).
    pub fn put_root(&self, n: u64, env: &Envelope) {
        let text = env.to_json_pretty();
        fs::write(self.repo.join(format!("root/{n}.root.json")), &text).unwrap();
        fs::create_dir_all(self.store.join("root")).unwrap();
        fs::write(self.store.join(format!("root/{n}.root.json")), &text).unwrap();
        self.commit("crafted root");
    }
}

/// For [`Fleet::craft`]: the next serial.
pub fn next_serial(v: &mut serde_json::Value) {
    v["serial"] = serde_json::json!(v["serial"].as_u64().unwrap() + 1);
}

/// Serves a directory with `git daemon` on loopback.
pub struct GitDaemon {
    child: std::process::Child,
    /// Its port.
    pub port: u16,
}

impl GitDaemon {
    /// Starts `git daemon` exporting `base`; returns once the port accepts.
    pub fn start(base: &Path) -> GitDaemon {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        // Run git-daemon itself (not through the `git` wrapper, which would
        // leave it orphaned when killed).
        let exec_path = sh(Command::new("git").arg("--exec-path")).trim().to_owned();
        let child = Command::new(Path::new(&exec_path).join("git-daemon"))
            .arg("--reuseaddr")
            .arg(format!("--base-path={}", base.display()))
            .arg("--export-all")
            .arg(format!("--port={port}"))
            .arg("--listen=127.0.0.1")
            .arg(base)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "git daemon did not start"
            );
            std::thread::yield_now();
        }
        GitDaemon { child, port }
    }

    /// `git://127.0.0.1:<port>/<name>`.
    pub fn url(&self, name: &str) -> String {
        format!("git://127.0.0.1:{}/{name}", self.port)
    }
}

impl Drop for GitDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Fleet {
    /// The current signed manifest's payload, changed by `edit`, signed by
    /// `signers` (serial and expiry as `edit` leaves them).
    pub fn craft(
        &self,
        edit: impl FnOnce(&mut serde_json::Value),
        signers: &[&PrivateKey],
    ) -> Envelope {
        let payload = self.envelope().payload_bytes().unwrap();
        let mut v: serde_json::Value = serde_json::from_slice(&payload).unwrap();
        edit(&mut v);
        let bytes = serde_json::to_vec_pretty(&v).unwrap();
        let mut env = Envelope::new(flotilla_protocol::MANIFEST_PAYLOAD_TYPE, &bytes);
        for k in signers {
            env.sign(k).unwrap();
        }
        env
    }

    /// Writes root `n` (expiring in 30 days): `root_keys` with threshold 1,
    /// `release_keys` with `release_threshold`, signed by `signers`.
    pub fn put_new_root(
        &self,
        n: u64,
        root_keys: &[&PrivateKey],
        release_keys: &[&PrivateKey],
        release_threshold: u32,
        signers: &[&PrivateKey],
    ) {
        let public = |ks: &[&PrivateKey]| ks.iter().map(|k| k.public_key()).collect::<Vec<_>>();
        let root = flotilla_signing::Root::new(
            n,
            chrono::Utc::now() + chrono::Duration::days(30),
            &public(root_keys),
            1,
            &public(release_keys),
            release_threshold,
        )
        .unwrap();
        let mut env = Envelope::new(flotilla_signing::ROOT_PAYLOAD_TYPE, &root.to_payload());
        for k in signers {
            env.sign(k).unwrap();
        }
        self.put_root(n, &env);
    }

    /// The artifact path of a release for this target, as signed.
    pub fn artifact_path(&self, version: &str) -> String {
        format!("flotilla-agent/{version}/{TARGET}/flotilla-agent")
    }
}
