//! `init`: lays down `fleet-repo-template/` (embedded in the binary) as a new
//! git repo with a first commit.
//!
//! The first commit is made with the `git` command-line tool, which is
//! always installed where fleet repos are edited; when no git identity is
//! configured, the commit is authored as `flotilla-publisher`.

use std::path::Path;
use std::process::Command;

use flotilla_protocol::sources::valid_name;

use crate::{Error, Result};

/// Every file of `fleet-repo-template/`, by path relative to it.
/// `tests/template_is_embedded.rs` fails when a file is missing here.
pub const FILES: &[(&str, &str)] = &[
    (
        "README.md",
        include_str!("../../fleet-repo-template/README.md"),
    ),
    (
        "fleet.toml",
        include_str!("../../fleet-repo-template/fleet.toml"),
    ),
    (
        "pins.toml",
        include_str!("../../fleet-repo-template/pins.toml"),
    ),
    (
        "root/README.md",
        include_str!("../../fleet-repo-template/root/README.md"),
    ),
    (
        "releases/README.md",
        include_str!("../../fleet-repo-template/releases/README.md"),
    ),
    (
        "channels/README.md",
        include_str!("../../fleet-repo-template/channels/README.md"),
    ),
    (
        "channels/stable.toml.example",
        include_str!("../../fleet-repo-template/channels/stable.toml.example"),
    ),
    (
        ".gitignore",
        include_str!("../../fleet-repo-template/.gitignore"),
    ),
    (
        ".github/workflows/verify.yml",
        include_str!("../../fleet-repo-template/.github/workflows/verify.yml"),
    ),
    (
        ".github/workflows/publish.yml",
        include_str!("../../fleet-repo-template/.github/workflows/publish.yml"),
    ),
    (
        ".gitlab-ci.yml",
        include_str!("../../fleet-repo-template/.gitlab-ci.yml"),
    ),
];

/// The fleet name the template's `fleet.toml` carries.
pub const TEMPLATE_FLEET_NAME: &str = "example-fleet";

/// Creates the fleet repo at `dir` (which must not exist or be empty).
pub fn init(dir: &Path, fleet: Option<&str>) -> Result<String> {
    let fleet = match fleet {
        Some(f) => f.to_owned(),
        None => dir
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or(TEMPLATE_FLEET_NAME)
            .to_owned(),
    };
    if !valid_name(&fleet) {
        return Err(Error::Usage(format!(
            "fleet name {fleet:?}: use 1-64 of A-Z a-z 0-9 . _ - (pass --fleet NAME)"
        )));
    }
    if let Ok(mut entries) = std::fs::read_dir(dir) {
        if entries.next().is_some() {
            return Err(Error::file(dir, "exists and is not empty"));
        }
    }
    for (rel, text) in FILES {
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        }
        let text = if *rel == "fleet.toml" {
            text.replace(
                &format!("name = \"{TEMPLATE_FLEET_NAME}\""),
                &format!("name = \"{fleet}\""),
            )
        } else {
            (*text).to_owned()
        };
        std::fs::write(&path, text).map_err(|e| Error::io(&path, e))?;
    }
    git(dir, &["init", "--quiet", "--initial-branch=main"])?;
    git(dir, &["add", "--all"])?;
    let has_identity = Command::new("git")
        .current_dir(dir)
        .args(["config", "user.email"])
        .output()
        .is_ok_and(|o| o.status.success() && !o.stdout.trim_ascii().is_empty());
    let mut commit: Vec<&str> = Vec::new();
    if !has_identity {
        commit.extend([
            "-c",
            "user.name=flotilla-publisher",
            "-c",
            "user.email=flotilla-publisher@localhost",
        ]);
    }
    let message = format!("fleet {fleet}: new fleet repo from flotilla-publisher init");
    commit.extend(["commit", "--quiet", "-m", &message]);
    git(dir, &commit)?;
    Ok(fleet)
}

fn git(dir: &Path, args: &[&str]) -> Result<()> {
    let out = Command::new("git")
        .current_dir(dir)
        .args(args)
        .output()
        .map_err(|e| Error::Git(format!("cannot run git (is it installed?): {e}")))?;
    if !out.status.success() {
        return Err(Error::Git(format!(
            "`git {}` in {} failed: {}",
            args.join(" "),
            dir.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}
