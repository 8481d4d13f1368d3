//! Shared helpers for the publisher's integration tests: they run the real
//! `flotilla-publisher` binary against fleet repos in temp dirs.
#![allow(dead_code)]

pub mod reporter;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const TARGET: &str = "x86_64-unknown-linux-gnu";

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_flotilla-publisher")
}

/// A temp dir with a fleet repo at `<tmp>/fleet`, keys under `<tmp>/keys`
/// and a local store at `<tmp>/store`.
pub struct Fleet {
    pub tmp: tempfile::TempDir,
    pub repo: PathBuf,
    pub store: PathBuf,
    pub env: Vec<(String, String)>,
}

impl Fleet {
    /// `init` only.
    pub fn init() -> Fleet {
        let tmp = tempfile::tempdir().unwrap();
        let repo = tmp.path().join("fleet");
        let store = tmp.path().join("store");
        std::fs::create_dir_all(tmp.path().join("keys")).unwrap();
        let f = Fleet {
            tmp,
            repo,
            store,
            env: Vec::new(),
        };
        let out = f.cmd(&["init", f.repo.to_str().unwrap(), "--fleet", "test-fleet"]);
        assert!(out.status.success(), "{}", stderr(&out));
        f
    }

    /// `init`, one root key and one release key (thresholds 1), root 1
    /// signed, release 1.0.0 in the local store, channel stable on it.
    pub fn ready() -> Fleet {
        let f = Fleet::rooted(&["release"], 1);
        f.add_release("1.0.0", b"agent 1.0.0");
        f.ok(&[
            "rollout",
            "set",
            "--channel",
            "stable",
            "--release",
            "1.0.0",
            "--start",
            "2026-01-01T00:00:00Z",
        ]);
        f
    }

    /// `init`, a root key and the named release keys with release threshold
    /// `threshold`, root 1 signed.
    pub fn rooted(release_keys: &[&str], threshold: u32) -> Fleet {
        let f = Fleet::init();
        f.keygen("root");
        let root = f.pubkey("root");
        let mut args = vec!["root".to_owned(), "init".into(), "--root-key".into(), root];
        for k in release_keys {
            f.keygen(k);
            args.extend(["--release-key".into(), f.pubkey(k)]);
        }
        args.extend(["--release-threshold".into(), threshold.to_string()]);
        f.ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
        f.ok(&["root", "sign", "--key", &f.key("root")]);
        f
    }

    /// `rollout set --channel stable --release <version>`.
    pub fn rollout_stable(&self, version: &str) {
        self.ok(&[
            "rollout",
            "set",
            "--channel",
            "stable",
            "--release",
            version,
        ]);
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.repo.join(rel)
    }

    pub fn key(&self, name: &str) -> String {
        self.tmp
            .path()
            .join(format!("keys/{name}.pem"))
            .to_string_lossy()
            .into_owned()
    }

    pub fn pubkey(&self, name: &str) -> String {
        self.tmp
            .path()
            .join(format!("keys/{name}.pub.pem"))
            .to_string_lossy()
            .into_owned()
    }

    pub fn store_url(&self) -> String {
        self.store.to_string_lossy().into_owned()
    }

    /// Makes a key pair; returns the key id printed on stdout.
    pub fn keygen(&self, name: &str) -> String {
        let out = self.cmd(&["keygen", "--out", &self.key(name)]);
        assert!(out.status.success(), "{}", stderr(&out));
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    /// Uploads `content` as release `version` to the local store.
    pub fn add_release(&self, version: &str, content: &[u8]) {
        let file = self.tmp.path().join(format!("agent-{version}"));
        std::fs::write(&file, content).unwrap();
        self.ok(&[
            "release",
            "add",
            "--version",
            version,
            "--target",
            TARGET,
            "--file",
            file.to_str().unwrap(),
            "--store",
            &self.store_url(),
        ]);
    }

    /// Runs the binary with `--repo <fleet>` appended.
    pub fn cmd(&self, args: &[&str]) -> Output {
        let mut c = Command::new(bin());
        c.args(args).arg("--repo").arg(&self.repo);
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c.output().unwrap()
    }

    /// Runs and expects success; returns stderr.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.cmd(args);
        assert!(
            out.status.success(),
            "flotilla-publisher {args:?} failed:\n{}",
            stderr(&out)
        );
        stderr(&out)
    }

    /// Runs and expects failure; returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.cmd(args);
        assert!(
            !out.status.success(),
            "flotilla-publisher {args:?} should have failed:\n{}",
            stderr(&out)
        );
        stderr(&out)
    }

    pub fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.path(rel)).unwrap()
    }

    pub fn write(&self, rel: &str, text: &str) {
        let p = self.path(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    /// The signed manifest's payload as JSON.
    pub fn manifest(&self) -> serde_json::Value {
        let env: serde_json::Value =
            serde_json::from_str(&self.read("signed/manifest.json")).unwrap();
        use base64::Engine as _;
        let payload = base64::engine::general_purpose::STANDARD
            .decode(env["payload"].as_str().unwrap())
            .unwrap();
        serde_json::from_slice(&payload).unwrap()
    }

    pub fn serial(&self) -> u64 {
        self.manifest()["serial"].as_u64().unwrap()
    }

    /// Commits the whole fleet repo on the current branch.
    pub fn commit(&self, msg: &str) {
        git(&self.repo, &["add", "--all"]);
        git(
            &self.repo,
            &[
                "-c",
                "user.name=t",
                "-c",
                "user.email=t@example.invalid",
                "commit",
                "-q",
                "--allow-empty",
                "-m",
                msg,
            ],
        );
    }

    /// Rewrites the payload of signed/manifest.json with `edit`, leaving its
    /// signatures as they were (what a pull request can do to the file).
    pub fn edit_signed_payload(&self, edit: impl FnOnce(&mut serde_json::Value)) {
        edit_signed_payload(&self.repo, edit);
    }
}

/// [`Fleet::edit_signed_payload`] for the fleet repo checked out at `repo`.
pub fn edit_signed_payload(repo: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let file = repo.join("signed/manifest.json");
    let mut env: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let mut m: serde_json::Value =
        serde_json::from_slice(&b64.decode(env["payload"].as_str().unwrap()).unwrap()).unwrap();
    edit(&mut m);
    env["payload"] = b64.encode(serde_json::to_vec(&m).unwrap()).into();
    std::fs::write(file, serde_json::to_string_pretty(&env).unwrap()).unwrap();
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Runs `git` in `dir`; panics on failure; returns stdout.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {}", stderr(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}
