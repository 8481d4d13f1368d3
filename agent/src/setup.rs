//! `flotilla-agent install`: lays down what a host needs, idempotently.
//!
//! 1. The config, if absent (from the given channel, source and artifact
//!    URL); an existing config is kept as it is.
//! 2. The trust root, if absent (it must verify as an anchor first); an
//!    existing one is never replaced by a different one: rotating trust is
//!    what root rotations are for.
//! 3. The systemd units (`agent/dist/`, with the config's paths), rewritten
//!    only when they differ.
//! 4. This binary as `install_dir/versions/<v>/flotilla-agent`, and the
//!    `current` (and `previous`) symlinks if absent; the state dir.
//!
//! `prefix` (default `/`) applies to every path: where each file is written
//! and the paths a new config and the units name. An agent installed with
//! `--prefix /tmp/root` runs from there (`--config
//! /tmp/root/etc/flotilla/agent.toml`) and touches nothing outside it. A
//! config that already exists is kept as it is, its paths with it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use flotilla_signing::{Envelope, TrustedRoot};

use crate::config::{self, Config, Source};
use crate::error::{Error, Result};
use crate::state::StateDir;
use crate::version::VERSION;
use crate::versions;

/// The units, as shipped in `agent/dist/`.
pub const UNITS: [(&str, &str); 3] = [
    (
        "flotilla-agent.service",
        include_str!("../dist/flotilla-agent.service"),
    ),
    (
        "flotilla-agent.timer",
        include_str!("../dist/flotilla-agent.timer"),
    ),
    (
        "flotilla-agent-rollback.service",
        include_str!("../dist/flotilla-agent-rollback.service"),
    ),
];

/// What to install.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Root under which everything is written.
    pub prefix: PathBuf,
    /// The config path as the host sees it (written under `prefix`).
    pub config_path: PathBuf,
    /// For a new config: the channel.
    pub channel: Option<String>,
    /// For a new config: the source.
    pub source: Option<Source>,
    /// For a new config: the artifact base URL.
    pub artifacts: Option<String>,
    /// For a new config: the reporter URL.
    pub reporter: Option<String>,
    /// A signed root to install as the trust anchor.
    pub trust_root: Option<PathBuf>,
    /// For a new config: the agent id (checked with
    /// [`flotilla_protocol::event::valid_agent_id`]).
    pub agent_id: Option<String>,
    /// For a new config: the labels.
    pub labels: BTreeMap<String, String>,
}

/// Joins a host path under `prefix`.
pub fn under(prefix: &Path, path: &Path) -> PathBuf {
    prefix.join(path.strip_prefix("/").unwrap_or(path))
}

fn write_if_changed(path: &Path, bytes: &[u8], mode: u32) -> Result<bool> {
    if std::fs::read(path).ok().as_deref() == Some(bytes) {
        return Ok(false);
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    flotilla_signing::fs::write_atomic(path, bytes, mode).map_err(|e| Error::io(path, e))?;
    Ok(true)
}

/// The units with the config's paths.
pub fn render_units(config: &Config) -> Vec<(&'static str, String)> {
    UNITS
        .iter()
        .map(|(name, text)| {
            let t = text
                .replace("/etc/flotilla/agent.toml", &config.path.to_string_lossy())
                .replace("/opt/flotilla", &config.install_dir.to_string_lossy())
                .replace("/var/lib/flotilla", &config.state_dir.to_string_lossy());
            (*name, t)
        })
        .collect()
}

/// Installs; returns one line per thing done or kept.
pub fn install(opts: &Options) -> Result<Vec<String>> {
    let mut report = Vec::new();
    let cfg_file = under(&opts.prefix, &opts.config_path);
    if let Some(id) = &opts.agent_id {
        if !flotilla_protocol::event::valid_agent_id(id) {
            return Err(Error::Config {
                path: cfg_file,
                field: Some("agent_id".into()),
                reason: format!(
                    "--agent-id {id:?} is not a valid agent id: 1-{} bytes of A-Z a-z 0-9 . _ - : @",
                    flotilla_protocol::event::MAX_AGENT_ID
                ),
            });
        }
    }
    if cfg_file.exists() {
        report.push(format!("kept config {}", cfg_file.display()));
    } else {
        let missing: Vec<&str> = [
            ("--channel", opts.channel.is_none()),
            ("--git or --url", opts.source.is_none()),
            ("--artifacts", opts.artifacts.is_none()),
        ]
        .iter()
        .filter(|(_, m)| *m)
        .map(|(f, _)| *f)
        .collect();
        if !missing.is_empty() {
            return Err(Error::Config {
                path: cfg_file,
                field: None,
                reason: format!("no config yet; to write one, give {}", missing.join(", ")),
            });
        }
        let text = config::template(
            &opts.prefix,
            opts.channel.as_deref().unwrap_or_default(),
            opts.source.as_ref().expect("checked"),
            opts.artifacts.as_deref().unwrap_or_default(),
            opts.reporter.as_deref(),
            opts.agent_id.as_deref(),
            &opts.labels,
        );
        Config::parse(&cfg_file, &text)?;
        write_if_changed(&cfg_file, text.as_bytes(), 0o644)?;
        report.push(format!("wrote config {}", cfg_file.display()));
    }
    // Its paths are the host's, the prefix already in them.
    let config = Config::load(&cfg_file)?;

    let root_file = config.trust_root.clone();
    match &opts.trust_root {
        Some(src) => {
            let bytes = std::fs::read(src).map_err(|e| Error::io(src, e))?;
            Envelope::from_json(&bytes)
                .and_then(|env| TrustedRoot::from_anchor(&env))
                .map_err(|source| Error::TrustRoot {
                    path: src.clone(),
                    source,
                })?;
            match std::fs::read(&root_file) {
                Ok(existing) if existing == bytes => {
                    report.push(format!("kept trust root {}", root_file.display()))
                }
                Ok(_) => {
                    return Err(Error::Install {
                        path: root_file,
                        reason: "a different trust root is installed; refusing to replace it (rotate roots in the fleet repo instead, or remove the file by hand)".into(),
                    })
                }
                Err(_) => {
                    write_if_changed(&root_file, &bytes, 0o644)?;
                    report.push(format!("wrote trust root {}", root_file.display()));
                }
            }
        }
        None if root_file.exists() => {
            report.push(format!("kept trust root {}", root_file.display()))
        }
        None => {
            return Err(Error::Install {
                path: root_file,
                reason: "no trust root installed; give --trust-root FILE (root/1.root.json of the fleet repo)".into(),
            })
        }
    }

    for (name, text) in render_units(&config) {
        let path = under(&opts.prefix, Path::new("/etc/systemd/system")).join(name);
        let verb = if write_if_changed(&path, text.as_bytes(), 0o644)? {
            "wrote"
        } else {
            "kept"
        };
        report.push(format!("{verb} unit {}", path.display()));
    }

    let install_dir = config.install_dir.clone();
    let bin = versions::install_self(&install_dir, VERSION)?;
    report.push(format!("installed {}", bin.display()));
    for link in ["current", "previous"] {
        if versions::pointed(&install_dir, link).is_none() {
            versions::point(&install_dir, link, VERSION)?;
            report.push(format!(
                "pointed {}/{link} at {VERSION}",
                install_dir.display()
            ));
        }
    }
    StateDir::new(&config.state_dir).create()?;
    Ok(report)
}
