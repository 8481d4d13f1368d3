//! Builds the binaries the demo runs, from this source (release mode unless
//! told otherwise): the publisher and reporter once, the agent once per
//! version.

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

/// How the demo's binaries are built.
#[derive(Clone, Debug)]
pub struct BuildOptions {
    /// Release builds (the default) or the dev profile (faster to build where
    /// a dev build of the workspace exists already, e.g. in the tests).
    pub release: bool,
    /// The cargo target dir [default: `<workspace>/target/demo`, its own, so
    /// the demo never waits for the lock of the build that started it].
    pub target_dir: Option<PathBuf>,
}

impl Default for BuildOptions {
    fn default() -> Self {
        BuildOptions {
            release: true,
            target_dir: None,
        }
    }
}

/// Builds everything and copies the agent builds under `root/builds/`.
pub fn build_all(workspace: &Path, root: &Path, opts: &BuildOptions) -> Result<Bins> {
    let target_dir = opts
        .target_dir
        .clone()
        .unwrap_or_else(|| workspace.join("target").join("demo"));
    let (profile_flag, out_dir) = if opts.release {
        (Some("--release"), target_dir.join("release"))
    } else {
        (None, target_dir.join("debug"))
    };
    let mode = if opts.release { "release" } else { "dev" };
    crate::say(&format!(
        "building flotilla-publisher and flotilla-reporter ({mode})"
    ));
    let cargo = |args: &[&str], env: &[(&str, &str)]| {
        let mut all: Vec<&str> = profile_flag.into_iter().collect();
        all.extend_from_slice(args);
        cargo(workspace, &target_dir, &all, env)
    };
    cargo(
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
        let mut args = vec!["-p", "flotilla-agent", "--bin", "flotilla-agent"];
        if failing {
            // The knob is read only by builds with the feature `test-knobs`.
            env.push(("FLOTILLA_DEMO_FAILING_MIGRATION", "role=db"));
            args.extend(["--features", "test-knobs"]);
        }
        cargo(&args, &env)?;
        let dir = agents.join(version);
        std::fs::create_dir_all(&dir)?;
        let bin = dir.join("flotilla-agent");
        std::fs::copy(out_dir.join("flotilla-agent"), &bin)
            .with_context(|| format!("copying the {version} build"))?;
        if !opts.release {
            // Debug info makes a dev build ~100 MiB; every host gets a copy.
            let _ = Command::new("strip")
                .arg("--strip-debug")
                .arg(&bin)
                .status();
        }
    }
    Ok(Bins {
        publisher: out_dir.join("flotilla-publisher"),
        reporter: out_dir.join("flotilla-reporter"),
        agents,
        target: host_triple()?,
    })
}

fn cargo(workspace: &Path, target_dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace)
        .args(["build", "--quiet", "--target-dir"])
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
