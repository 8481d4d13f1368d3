//! Builds the binaries the demo runs, from this source, in release mode:
//! the publisher and reporter once, the agent once per version.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::{V1, V2, V3};

/// Paths of the built binaries.
pub struct Bins {
    /// flotilla-publisher.
    pub publisher: PathBuf,
    /// flotilla-reporter.
    pub reporter: PathBuf,
    /// Directory holding `<version>/flotilla-agent`.
    agents: PathBuf,
    /// The target triple the agents were built for.
    pub target: String,
}

impl Bins {
    /// The agent build of `version`.
    pub fn agent(&self, version: &str) -> PathBuf {
        self.agents.join(version).join("flotilla-agent")
    }
}

/// Builds everything into `<workspace>/target/demo` (its own target dir, so
/// the demo never waits for the lock of the build that started it) and
/// copies the agent builds under `root/builds/`.
pub fn build_all(workspace: &Path, root: &Path) -> Result<Bins> {
    let target_dir = workspace.join("target").join("demo");
    crate::say("building flotilla-publisher and flotilla-reporter (release)");
    cargo(
        workspace,
        &target_dir,
        &["-p", "flotilla-publisher", "-p", "flotilla-reporter"],
        &[],
    )?;
    let agents = root.join("builds");
    for (version, failing) in [(V1, false), (V2, false), (V3, true)] {
        crate::say(&format!(
            "building flotilla-agent {version}{}",
            if failing {
                " (its config migration fails on role=db hosts)"
            } else {
                ""
            }
        ));
        let mut env = vec![("FLOTILLA_VERSION", version)];
        if failing {
            env.push(("FLOTILLA_DEMO_FAILING_MIGRATION", "role=db"));
        }
        cargo(workspace, &target_dir, &["-p", "flotilla-agent"], &env)?;
        let dir = agents.join(version);
        std::fs::create_dir_all(&dir)?;
        std::fs::copy(
            target_dir.join("release/flotilla-agent"),
            dir.join("flotilla-agent"),
        )
        .with_context(|| format!("copying the {version} build"))?;
    }
    Ok(Bins {
        publisher: target_dir.join("release/flotilla-publisher"),
        reporter: target_dir.join("release/flotilla-reporter"),
        agents,
        target: host_triple()?,
    })
}

fn cargo(workspace: &Path, target_dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace)
        .args(["build", "--release", "--quiet", "--target-dir"])
        .arg(target_dir)
        .args(args)
        .env_remove("FLOTILLA_VERSION")
        .env_remove("FLOTILLA_DEMO_FAILING_MIGRATION");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let status = cmd.status().context("running cargo")?;
    if !status.success() {
        bail!("cargo build {} failed", args.join(" "));
    }
    Ok(())
}

fn host_triple() -> Result<String> {
    let out = Command::new(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into()))
        .arg("-vV")
        .output()
        .context("running rustc -vV")?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_owned))
        .context("rustc -vV printed no host triple")
}
