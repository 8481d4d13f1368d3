//! The install directory: versions side by side, and two symlinks.
//!
//! ```text
//! install_dir/
//!   versions/<v>/flotilla-agent    one directory per installed version
//!   current -> versions/<v>        what the service runs (ExecStart=…/current/flotilla-agent)
//!   previous -> versions/<v>       what flotilla-agent-rollback.service runs
//! ```
//!
//! - [`install_binary`] copies a verified download into `versions/<v>/`,
//!   hashing it again on the way (the state dir is not trusted twice), and
//!   makes it executable only after the hash matched.
//! - [`self_test`] runs `<new> self-test` and requires it to report exactly
//!   the version the manifest names, for this agent's target.
//! - [`point`] swaps a symlink atomically: a new link under a temporary name,
//!   `rename(2)` over the old one, fsync of the directory.
//! - [`prune`] removes old versions: each is first renamed to
//!   `versions/.trash-<v>` (atomic), then deleted; leftovers of a pass killed
//!   half-way are deleted by the next prune.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::fault;

/// The binary's file name inside `versions/<v>/`.
pub const BINARY: &str = "flotilla-agent";
/// How long a self-test may take.
pub const SELF_TEST_TIMEOUT: Duration = Duration::from_secs(60);

/// What `flotilla-agent self-test` prints (one JSON line on stdout).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SelfTestReport {
    /// The version the binary reports.
    pub version: String,
    /// The target it was built for.
    pub target: String,
    /// Whether its internal checks passed.
    pub ok: bool,
    /// Failed checks, if any.
    #[serde(default)]
    pub problems: Vec<String>,
}

/// `install_dir/versions/<v>`.
pub fn version_dir(install_dir: &Path, version: &str) -> PathBuf {
    install_dir.join("versions").join(version)
}

/// `install_dir/versions/<v>/flotilla-agent`.
pub fn binary_path(install_dir: &Path, version: &str) -> PathBuf {
    version_dir(install_dir, version).join(BINARY)
}

fn install_err(path: &Path, reason: impl std::fmt::Display) -> Error {
    Error::Install {
        path: path.to_owned(),
        reason: reason.to_string(),
    }
}

/// Copies the verified file `src` to `versions/<v>/flotilla-agent`,
/// checking SHA-256 and size again, and makes it executable (0755).
pub fn install_binary(
    src: &Path,
    install_dir: &Path,
    version: &str,
    sha256: &str,
    size: u64,
) -> Result<PathBuf> {
    let dir = version_dir(install_dir, version);
    fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let dest = dir.join(BINARY);
    let tmp = dir.join(format!(".{BINARY}.tmp"));
    let mut input = File::open(src).map_err(|e| Error::io(src, e))?;
    let mut out = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| Error::io(&tmp, e))?;
    let mut w = flotilla_signing::HashingWriter::new(&mut out);
    std::io::copy(&mut (&mut input).take(size + 1), &mut w).map_err(|e| Error::io(&tmp, e))?;
    let (_, summary) = w.finish();
    if summary.sha256 != sha256 || summary.size != size {
        let _ = fs::remove_file(&tmp);
        return Err(install_err(
            src,
            format!(
                "changed after verification: expected {sha256} ({size} bytes), found {} ({} bytes)",
                summary.sha256, summary.size
            ),
        ));
    }
    out.set_permissions(fs::Permissions::from_mode(0o755))
        .map_err(|e| Error::io(&tmp, e))?;
    out.sync_all().map_err(|e| Error::io(&tmp, e))?;
    drop(out);
    fs::rename(&tmp, &dest).map_err(|e| Error::io(&dest, e))?;
    flotilla_signing::fs::sync_dir(&dir).map_err(|e| Error::io(&dir, e))?;
    fault::point("after-install");
    Ok(dest)
}

/// Runs `<binary> self-test --config <config>` and checks that it reports
/// `expected_version` for `target`.
pub fn self_test(binary: &Path, config: &Path, expected_version: &str, target: &str) -> Result<()> {
    let fail = |reason: String| Error::SelfTest {
        binary: binary.to_owned(),
        reason,
    };
    let mut child = Command::new(binary)
        .arg("self-test")
        .arg("--config")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| fail(format!("cannot start: {e}")))?;
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    std::thread::spawn(move || {
        let mut out = Vec::new();
        let mut err = Vec::new();
        let _ = (&mut stdout).take(1 << 20).read_to_end(&mut out);
        let _ = (&mut stderr).take(1 << 20).read_to_end(&mut err);
        let _ = tx.send((out, err));
    });
    let (out, err) = match rx.recv_timeout(SELF_TEST_TIMEOUT) {
        Ok(o) => o,
        Err(_) => {
            // SAFETY: signalling our own child by pid.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            let _ = child.wait();
            return Err(fail(format!("no answer within {SELF_TEST_TIMEOUT:?}")));
        }
    };
    let status = child.wait().map_err(|e| fail(e.to_string()))?;
    let stderr = String::from_utf8_lossy(&err).trim().to_owned();
    if !status.success() {
        return Err(fail(format!("exited with {status}: {stderr}")));
    }
    let line = String::from_utf8_lossy(&out);
    let report: SelfTestReport = serde_json::from_str(line.trim())
        .map_err(|e| fail(format!("unreadable report {:?}: {e}", line.trim())))?;
    if report.version != expected_version {
        return Err(fail(format!(
            "reports version {:?}, but the manifest names {expected_version:?}",
            report.version
        )));
    }
    if report.target != target {
        return Err(fail(format!(
            "was built for {}, this host runs {target}",
            report.target
        )));
    }
    if !report.ok {
        return Err(fail(format!(
            "checks failed: {}",
            report.problems.join("; ")
        )));
    }
    Ok(())
}

/// Points `install_dir/<link>` at `versions/<version>` atomically.
pub fn point(install_dir: &Path, link: &str, version: &str) -> Result<()> {
    let target = Path::new("versions").join(version);
    let path = install_dir.join(link);
    let tmp = install_dir.join(format!(".{link}.tmp.{}", std::process::id()));
    let _ = fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&target, &tmp).map_err(|e| Error::io(&tmp, e))?;
    fs::rename(&tmp, &path).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        Error::io(&path, e)
    })?;
    flotilla_signing::fs::sync_dir(install_dir).map_err(|e| Error::io(install_dir, e))
}

/// The version `install_dir/<link>` points at, if it is a link into `versions/`.
pub fn pointed(install_dir: &Path, link: &str) -> Option<String> {
    let t = fs::read_link(install_dir.join(link)).ok()?;
    let mut parts = t.components().rev();
    let v = parts.next()?.as_os_str().to_str()?.to_owned();
    (parts.next()?.as_os_str() == "versions").then_some(v)
}

/// Installed versions (directories under `versions/` holding a binary).
pub fn installed(install_dir: &Path) -> Vec<String> {
    let Ok(entries) = fs::read_dir(install_dir.join("versions")) else {
        return Vec::new();
    };
    let mut out: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().map(str::to_owned))
        .filter(|n| !n.starts_with('.'))
        .filter(|n| binary_path(install_dir, n).exists())
        .collect();
    out.sort_by(|a, b| cmp_versions(b, a));
    out
}

fn cmp_versions(a: &str, b: &str) -> std::cmp::Ordering {
    match (semver::Version::parse(a), semver::Version::parse(b)) {
        (Ok(x), Ok(y)) => x.cmp(&y),
        _ => a.cmp(b),
    }
}

/// Keeps `keep` versions: those in `protect` (current, previous) first, then
/// the newest others except `unwanted` (a release rolled back from); removes
/// the rest. Returns the removed versions.
pub fn prune(
    install_dir: &Path,
    protect: &[&str],
    unwanted: Option<&str>,
    keep: usize,
) -> Result<Vec<String>> {
    let versions_dir = install_dir.join("versions");
    // Leftovers of an interrupted prune.
    if let Ok(entries) = fs::read_dir(&versions_dir) {
        for e in entries.filter_map(|e| e.ok()) {
            if e.file_name().to_string_lossy().starts_with(".trash-") {
                fs::remove_dir_all(e.path()).map_err(|err| Error::io(e.path(), err))?;
            }
        }
    }
    let all = installed(install_dir);
    let mut kept: Vec<&str> = protect
        .iter()
        .copied()
        .filter(|p| all.iter().any(|a| a == p))
        .collect();
    for v in &all {
        if kept.len() >= keep.max(protect.len()) {
            break;
        }
        if !kept.contains(&v.as_str()) && unwanted != Some(v.as_str()) {
            kept.push(v);
        }
    }
    let mut removed = Vec::new();
    for v in &all {
        if kept.contains(&v.as_str()) {
            continue;
        }
        let from = version_dir(install_dir, v);
        let trash = versions_dir.join(format!(".trash-{v}"));
        fs::rename(&from, &trash).map_err(|e| Error::io(&from, e))?;
        flotilla_signing::fs::sync_dir(&versions_dir).map_err(|e| Error::io(&versions_dir, e))?;
        fault::point("during-prune");
        fs::remove_dir_all(&trash).map_err(|e| Error::io(&trash, e))?;
        removed.push(v.clone());
    }
    Ok(removed)
}

/// Copies the running executable to `versions/<v>/flotilla-agent` (used by
/// `install`); a no-op if an identical file is already there.
pub fn install_self(install_dir: &Path, version: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe().map_err(|e| Error::io("/proc/self/exe", e))?;
    let dest = binary_path(install_dir, version);
    let src_bytes = fs::read(&exe).map_err(|e| Error::io(&exe, e))?;
    if fs::read(&dest).ok().as_deref() == Some(&src_bytes[..]) {
        return Ok(dest);
    }
    let dir = version_dir(install_dir, version);
    fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let tmp = dir.join(format!(".{BINARY}.tmp"));
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o755)
        .open(&tmp)
        .map_err(|e| Error::io(&tmp, e))?;
    f.write_all(&src_bytes).map_err(|e| Error::io(&tmp, e))?;
    f.set_permissions(fs::Permissions::from_mode(0o755))
        .map_err(|e| Error::io(&tmp, e))?;
    f.sync_all().map_err(|e| Error::io(&tmp, e))?;
    fs::rename(&tmp, &dest).map_err(|e| Error::io(&dest, e))?;
    flotilla_signing::fs::sync_dir(&dir).map_err(|e| Error::io(&dir, e))?;
    Ok(dest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake(install: &Path, v: &str) {
        let d = version_dir(install, v);
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join(BINARY), v).unwrap();
    }

    #[test]
    fn point_and_prune() {
        let dir = tempfile::tempdir().unwrap();
        let i = dir.path();
        for v in ["1.0.0", "2.0.0", "3.0.0", "10.0.0"] {
            fake(i, v);
        }
        point(i, "current", "3.0.0").unwrap();
        point(i, "previous", "1.0.0").unwrap();
        assert_eq!(pointed(i, "current").as_deref(), Some("3.0.0"));
        point(i, "current", "2.0.0").unwrap();
        assert_eq!(pointed(i, "current").as_deref(), Some("2.0.0"));
        assert_eq!(installed(i), ["10.0.0", "3.0.0", "2.0.0", "1.0.0"]);
        fs::create_dir_all(i.join("versions/.trash-0.1.0")).unwrap();
        let removed = prune(i, &["2.0.0", "1.0.0"], None, 2).unwrap();
        assert_eq!(removed, ["10.0.0", "3.0.0"]);
        assert_eq!(installed(i), ["2.0.0", "1.0.0"]);
        assert!(!i.join("versions/.trash-0.1.0").exists());
    }
}
