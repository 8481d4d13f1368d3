//! Real binaries for the tests: agent builds with distinct compiled-in
//! versions (and a broken one), and the publisher.
//!
//! Each variant is built once with `cargo build -p flotilla-agent --features
//! fault-injection,test-knobs` and `FLOTILLA_VERSION` set, in the same target dir the
//! tests were built in (only the agent crate recompiles), and copied to
//! `<target>/agent-test-bins/<variant>/flotilla-agent`. A stamp of the
//! sources lets later test runs reuse the copies; a lock file serialises
//! test processes; a `OnceLock` serialises threads.

use std::collections::BTreeMap;
use std::fs;
use std::hash::{Hash, Hasher};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The variants: (name, version, broken health check, the label on which a
/// config migration of this build fails — `FLOTILLA_DEMO_FAILING_MIGRATION`).
pub const VARIANTS: &[(&str, &str, bool, Option<&str>)] = &[
    ("v1", "1.0.0", false, None),
    ("v2", "2.0.0", false, None),
    ("v3-broken", "3.0.0", true, None),
    ("v4", "4.0.0", false, None),
    ("v5-db-migration-fails", "5.0.0", false, Some("role=db")),
];

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// The target dir the tests were built in.
pub fn target_dir() -> PathBuf {
    if let Ok(t) = std::env::var("CARGO_TARGET_DIR") {
        return PathBuf::from(t);
    }
    // <target>/debug/deps/<test-binary>
    let exe = std::env::current_exe().unwrap();
    exe.ancestors().nth(3).unwrap().to_owned()
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

fn stamp(extra: &str) -> String {
    let mut files = Vec::new();
    let ws = workspace();
    for dir in ["agent/src", "agent/dist", "signing/src", "protocol/src"] {
        walk(&ws.join(dir), &mut files);
    }
    for f in [
        "agent/Cargo.toml",
        "agent/build.rs",
        "Cargo.lock",
        "Cargo.toml",
    ] {
        files.push(ws.join(f));
    }
    files.sort();
    let mut h = std::collections::hash_map::DefaultHasher::new();
    extra.hash(&mut h);
    for f in files {
        if let Ok(m) = fs::metadata(&f) {
            f.hash(&mut h);
            m.len().hash(&mut h);
            m.modified().ok().hash(&mut h);
        }
    }
    format!("{:016x}", h.finish())
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            walk(&p, out);
        } else {
            out.push(p);
        }
    }
}

struct FileLock(fs::File);
impl FileLock {
    fn take(path: &Path) -> FileLock {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        let f = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .unwrap();
        // SAFETY: flock on an owned fd; released when the file closes.
        assert_eq!(unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) }, 0);
        FileLock(f)
    }
}

fn build_all() -> BTreeMap<String, PathBuf> {
    let out_root = target_dir().join("agent-test-bins");
    let _lock = FileLock::take(&out_root.join(".lock"));
    let mut out = BTreeMap::new();
    for (name, version, broken, failing) in VARIANTS {
        let dir = out_root.join(name);
        let bin = dir.join("flotilla-agent");
        let want = stamp(&format!("{name}/{version}/{broken}/{failing:?}"));
        let stamp_file = dir.join("stamp");
        if bin.exists() && fs::read_to_string(&stamp_file).ok().as_deref() == Some(want.as_str()) {
            out.insert(name.to_string(), bin);
            continue;
        }
        let mut cmd = Command::new(cargo());
        cmd.current_dir(workspace())
            .args([
                "build",
                "--quiet",
                "-p",
                "flotilla-agent",
                "--bin",
                "flotilla-agent",
            ])
            .args(["--features", "fault-injection,test-knobs"])
            .env("CARGO_TARGET_DIR", target_dir())
            .env("FLOTILLA_VERSION", version);
        if *broken {
            cmd.env("FLOTILLA_TEST_BREAK_HEALTH", "1");
        } else {
            cmd.env_remove("FLOTILLA_TEST_BREAK_HEALTH");
        }
        match failing {
            Some(label) => cmd.env("FLOTILLA_DEMO_FAILING_MIGRATION", label),
            None => cmd.env_remove("FLOTILLA_DEMO_FAILING_MIGRATION"),
        };
        let status = cmd.status().expect("cargo runs");
        assert!(status.success(), "building agent {name} failed");
        fs::create_dir_all(&dir).unwrap();
        let tmp = dir.join(".flotilla-agent.tmp");
        fs::copy(target_dir().join("debug/flotilla-agent"), &tmp).unwrap();
        // Debug info makes the binary ~100 MiB; the tests copy, upload,
        // download and hash it many times.
        let _ = Command::new("strip")
            .arg("--strip-debug")
            .arg(&tmp)
            .status();
        fs::rename(&tmp, &bin).unwrap();
        fs::write(&stamp_file, &want).unwrap();
        out.insert(name.to_string(), bin);
    }
    out
}

/// The agent binary of a variant (a name in [`VARIANTS`]).
pub fn agent(name: &str) -> PathBuf {
    static BUILT: OnceLock<BTreeMap<String, PathBuf>> = OnceLock::new();
    BUILT.get_or_init(build_all)[name].clone()
}

/// The flotilla-publisher binary (built on first use).
pub fn publisher() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| workspace_bin("flotilla-publisher"))
        .clone()
}

/// The flotilla-reporter binary (built on first use).
pub fn reporter() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| workspace_bin("flotilla-reporter"))
        .clone()
}

/// Builds the binary of the workspace package of the same name.
fn workspace_bin(name: &str) -> PathBuf {
    let _lock = FileLock::take(&target_dir().join("agent-test-bins/.lock"));
    let status = Command::new(cargo())
        .current_dir(workspace())
        .args(["build", "--quiet", "-p", name, "--bin", name])
        .env("CARGO_TARGET_DIR", target_dir())
        .status()
        .expect("cargo runs");
    assert!(status.success(), "building {name} failed");
    target_dir().join("debug").join(name)
}
