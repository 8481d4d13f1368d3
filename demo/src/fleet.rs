//! The fleet repo, driven through `flotilla-publisher` as an operator would.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::build::Bins;
use crate::CHANNEL;

/// The demo's fleet repo, keys and artifact store.
pub struct Fleet {
    publisher: PathBuf,
    /// The fleet repo (a git repo).
    pub repo: PathBuf,
    /// The artifact store (a directory).
    pub store: PathBuf,
    keys: PathBuf,
    target: String,
    builds: Vec<(String, PathBuf)>,
}

impl Fleet {
    /// `init`, keys, root, fleet.toml pointing at the local store.
    pub fn create(bins: &Bins, root: &Path) -> Result<Fleet> {
        let f = Fleet {
            publisher: bins.publisher.clone(),
            repo: root.join("fleet"),
            store: root.join("store"),
            keys: root.join("keys"),
            target: bins.target.clone(),
            builds: [crate::V1, crate::V2, crate::V3]
                .iter()
                .map(|v| (v.to_string(), bins.agent(v)))
                .collect(),
        };
        std::fs::create_dir_all(&f.keys)?;
        std::fs::create_dir_all(&f.store)?;
        f.publisher(&["init", path(&f.repo), "--fleet", "demo"])?;
        for k in ["root", "release"] {
            let out = f.keys.join(format!("{k}.pem"));
            f.publisher(&["keygen", "--out", path(&out)])?;
        }
        f.publisher(&[
            "root",
            "init",
            "--root-key",
            path(&f.keys.join("root.pub.pem")),
            "--release-key",
            path(&f.keys.join("release.pub.pem")),
        ])?;
        f.publisher(&["root", "sign", "--key", path(&f.keys.join("root.pem"))])?;
        let fleet_toml = format!(
            "# The demo fleet: artifacts come from a local directory.\nname = \"demo\"\nartifact_base_urls = [\"file://{}/\"]\nmanifest_expires = \"7d\"\n",
            f.store.display()
        );
        std::fs::write(f.repo.join("fleet.toml"), fleet_toml)?;
        Ok(f)
    }

    /// `release add` of one of the agent builds into the local store.
    pub fn add_release(&self, version: &str) -> Result<()> {
        let file = &self
            .builds
            .iter()
            .find(|(v, _)| v == version)
            .context("no such build")?
            .1;
        self.publisher(&[
            "release",
            "add",
            "--version",
            version,
            "--target",
            &self.target,
            "--file",
            path(file),
            "--store",
            path(&self.store),
            "--notes",
            &format!("demo release {version}"),
        ])
    }

    /// `rollout set` on the demo channel, starting now.
    pub fn rollout(&self, version: &str, waves: &str, halt: Option<(f64, u32)>) -> Result<()> {
        let mut args = vec![
            "rollout".to_string(),
            "set".into(),
            "--channel".into(),
            CHANNEL.into(),
            "--release".into(),
            version.into(),
            "--start".into(),
            "now".into(),
            "--waves".into(),
            waves.into(),
        ];
        if let Some((rate, min)) = halt {
            args.extend([
                "--max-failure-rate".into(),
                rate.to_string(),
                "--min-reports".into(),
                min.to_string(),
            ]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.publisher(&args)
    }

    /// `verify --sources`, `sign`, `verify`, then a git commit: what CI does
    /// when a pull request merges.
    pub fn sign_and_commit(&self, message: &str) -> Result<()> {
        self.publisher(&["verify", "--sources"])?;
        self.publisher(&["sign", "--key", path(&self.keys.join("release.pem"))])?;
        self.publisher(&["verify"])?;
        git(&self.repo, &["add", "-A"])?;
        git(&self.repo, &["commit", "-q", "-m", message])
    }

    /// The signed manifest, for the reporter's `--manifest`.
    pub fn manifest_path(&self) -> PathBuf {
        self.repo.join("signed/manifest.json")
    }

    /// The signed root agents ship with.
    pub fn root_path(&self) -> PathBuf {
        self.repo.join("root/1.root.json")
    }

    fn publisher(&self, args: &[&str]) -> Result<()> {
        let out = Command::new(&self.publisher)
            .args(args)
            .arg("--repo")
            .arg(&self.repo)
            .output()
            .with_context(|| format!("running flotilla-publisher {}", args.join(" ")))?;
        if !out.status.success() {
            bail!(
                "flotilla-publisher {} failed:\n{}{}",
                args.join(" "),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }
}

fn git(repo: &Path, args: &[&str]) -> Result<()> {
    let out = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args([
            "-c",
            "user.name=Flotilla Demo",
            "-c",
            "user.email=demo@flotilla.invalid",
        ])
        .args(args)
        .output()
        .context("running git")?;
    if !out.status.success() {
        bail!(
            "git {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

fn path(p: &Path) -> &str {
    p.to_str().expect("demo paths are UTF-8")
}
