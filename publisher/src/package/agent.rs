//! The agent package of one fleet: what a host installs to join it.
//!
//! Sequence:
//! 1. verify `signed/manifest.json` against the root chain as an agent
//!    would ([`Snapshot::verify_manifest`]: walk, thresholds, expiry);
//! 2. take the channel's release (or the one asked for, which must be in the
//!    signed manifest) and its artifact for the target;
//! 3. read that artifact from the store, streamed through SHA-256 and capped
//!    at the signed size ([`Store::get_verified`]); anything else is refused;
//! 4. write the package.
//!
//! What the package installs (it owns only these; the agent's own install
//! layout, `/opt/flotilla/versions/`, `current` and `previous`, is made by
//! the postinst from the bootstrap copy and belongs to the agent):
//!
//! ```text
//! /usr/lib/flotilla-agent/flotilla-agent         0755  the verified build (bootstrap copy)
//! /etc/flotilla/agent.toml                       0644  channel, source, artifacts, reporter, labels (conffile)
//! /etc/flotilla/root.json                        0644  the newest root of the chain (conffile)
//! /etc/flotilla/enroll.token                     0600  the enrollment token (conffile), with a reporter
//! /usr/lib/systemd/system/flotilla-agent{.service,.timer,-rollback.service}   agent/dist/ as they are
//! /usr/share/doc/flotilla-agent/                 README.md, copyright, changelog.gz
//! ```
//!
//! Maintainer scripts: `scripts/agent.{postinst,prerm,postrm}`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use chrono::{DateTime, Utc};
use flotilla_protocol::sources::valid_name;

use super::{toml_str, About, Deb};
use crate::history::Snapshot;
use crate::{Error, Repo, Result, Store};

/// Where the bootstrap copy of the agent is installed.
pub const BOOTSTRAP: &str = "/usr/lib/flotilla-agent/flotilla-agent";
/// The config the units name.
pub const CONFIG: &str = "/etc/flotilla/agent.toml";
/// The trust root the config names.
pub const TRUST_ROOT: &str = "/etc/flotilla/root.json";
/// The enrollment token the config names.
pub const ENROLL_TOKEN: &str = "/etc/flotilla/enroll.token";
/// The config layout written (flotilla-agent's `CONFIG_SCHEMA`); agents
/// older than schema 3 cannot read it.
pub const CONFIG_SCHEMA: u32 = 3;

/// The units, as shipped in `agent/dist/`.
pub const UNITS: [(&str, &str); 3] = [
    (
        "flotilla-agent.service",
        include_str!("../../../agent/dist/flotilla-agent.service"),
    ),
    (
        "flotilla-agent.timer",
        include_str!("../../../agent/dist/flotilla-agent.timer"),
    ),
    (
        "flotilla-agent-rollback.service",
        include_str!("../../../agent/dist/flotilla-agent-rollback.service"),
    ),
];

const POSTINST: &str = include_str!("scripts/agent.postinst");
const PRERM: &str = include_str!("scripts/agent.prerm");
const POSTRM: &str = include_str!("scripts/agent.postrm");

/// Tags lintian reports that are what this package means to do.
const LINTIAN_OVERRIDES: &str = "\
# The enrollment token is a secret: only root may read it.
flotilla-agent: non-standard-file-perm 0600 != 0644 [etc/flotilla/enroll.token]
# The scripts are written by `flotilla-publisher package`, not debhelper:
# they call systemctl as debhelper's snippets do (enable and start on the
# first install, stop and disable on removal, only when systemd runs), and
# `systemctl --root` offline under DPKG_ROOT, which deb-systemd-helper lacks.
flotilla-agent: maintainer-script-calls-systemctl *
";

/// Where the agent reads the manifest from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// The store served over HTTP(S) (`[source] url`).
    Http(String),
    /// The fleet repo (`[source] git`, `branch`).
    Git {
        /// Remote URL.
        url: String,
        /// Branch.
        branch: String,
    },
}

/// What goes into an agent package.
#[derive(Clone, Debug)]
pub struct Options {
    /// The channel the host follows.
    pub channel: String,
    /// The release to ship; default: the channel's.
    pub release: Option<String>,
    /// The target triple of the build to ship.
    pub target: String,
    /// Where the agent reads the manifest.
    pub source: Source,
    /// `[artifacts] base_url`.
    pub artifacts: String,
    /// `[reporter] url`.
    pub reporter: Option<String>,
    /// The enrollment token file to ship (with a reporter).
    pub enrollment_token: Option<PathBuf>,
    /// The host's labels.
    pub labels: BTreeMap<String, String>,
    /// The package's `Maintainer`.
    pub maintainer: String,
    /// The time expiry is judged at.
    pub now: DateTime<Utc>,
}

/// A package ready to be written.
#[derive(Debug)]
pub struct Built {
    /// What it says about itself.
    pub about: About,
    /// The package.
    pub deb: Deb,
    /// The release shipped.
    pub version: String,
    /// The serial of the manifest it was verified with.
    pub serial: u64,
    /// The fleet.
    pub fleet: String,
}

/// Verifies the release and assembles the package (nothing is written).
pub fn build(repo: &Repo, store: &Store, opts: &Options) -> Result<Built> {
    check(opts)?;
    super::deb_architecture(&opts.target)?;
    let snapshot = Snapshot::work_tree(repo)?;
    let verified = snapshot
        .verify_manifest(opts.now)
        .and_then(|v| {
            v.ok_or_else(|| {
                Error::file(
                    crate::repo::SIGNED_MANIFEST,
                    "missing; sign the fleet repo first (`flotilla-publisher sign`)",
                )
            })
        })
        .map_err(|e| {
            Error::Refused(format!(
                "{e}\nrefusing to package: the manifest does not verify against the fleet's root chain"
            ))
        })?;
    let manifest = &verified.manifest;
    let channel = manifest.channels.get(&opts.channel).ok_or_else(|| {
        Error::Usage(format!(
            "--channel {}: not in the signed manifest (channels: {})",
            opts.channel,
            manifest
                .channels
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        ))
    })?;
    let version = opts
        .release
        .clone()
        .unwrap_or_else(|| channel.release.to_string());
    let release = manifest.releases.get(&version).ok_or_else(|| {
        Error::Usage(format!(
            "--release {version}: not in the signed manifest (releases: {})",
            manifest
                .releases
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        ))
    })?;
    let artifact = release.artifacts.get(&opts.target).ok_or_else(|| {
        Error::Usage(format!(
            "release {version} has no build for --target {} (targets: {})",
            opts.target,
            release
                .artifacts
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        ))
    })?;
    let binary = store
        .get_verified(&artifact.path, artifact.size, &artifact.sha256)
        .map_err(|e| Error::Refused(format!("{e}\nrefusing to package release {version}")))?;
    let root = verified.root.version();
    let root_bytes = snapshot
        .roots
        .get(&root)
        .cloned()
        .ok_or_else(|| Error::file(Repo::root_rel(root), "missing"))?;

    let about = About {
        name: "flotilla-agent",
        version: super::debian_version(&release.version),
        target: opts.target.clone(),
        maintainer: opts.maintainer.clone(),
        summary: format!(
            "Flotilla agent for fleet {}, channel {}",
            manifest.fleet, opts.channel
        ),
        description: format!(
            "Installs flotilla-agent {version}, verified against the fleet's\n\
             root at manifest serial {}, with its config, trust root{}\n\
             and systemd timer. From then on the agent updates itself under\n\
             /opt/flotilla; the package owns only the bootstrap copy, the\n\
             config and the units.",
            manifest.serial,
            if opts.reporter.is_some() {
                ", enrollment token"
            } else {
                ""
            }
        ),
        note: format!(
            "flotilla-agent {version} for fleet {}, channel {}.",
            manifest.fleet, opts.channel
        ),
    };
    let mut d = Deb {
        mtime: super::mtime(manifest.issued)?,
        control: about.control()?,
        ..Deb::default()
    };
    d.file(BOOTSTRAP, binary, 0o755);
    d.conffile(CONFIG, config(opts, &manifest.fleet), 0o644);
    d.conffile(TRUST_ROOT, root_bytes, 0o644);
    if let Some(path) = &opts.enrollment_token {
        d.conffile(ENROLL_TOKEN, read_token(path)?, 0o600);
    }
    for (name, text) in UNITS {
        d.file(&format!("/usr/lib/systemd/system/{name}"), text, 0o644);
    }
    super::docs(&mut d, &about)?;
    super::lintian_overrides(&mut d, about.name, LINTIAN_OVERRIDES);
    d.scripts = vec![
        ("postinst", POSTINST.replace("@VERSION@", &version)),
        ("prerm", PRERM.into()),
        ("postrm", POSTRM.into()),
    ];
    Ok(Built {
        deb: d,
        about,
        version,
        serial: manifest.serial,
        fleet: manifest.fleet.clone(),
    })
}

fn check(opts: &Options) -> Result<()> {
    if !valid_name(&opts.channel) {
        return Err(Error::Usage(format!(
            "--channel {:?} must be 1-64 of A-Z a-z 0-9 . _ -",
            opts.channel
        )));
    }
    for (k, v) in &opts.labels {
        if !valid_name(k) || v.is_empty() || v.chars().any(char::is_control) {
            return Err(Error::Usage(format!(
                "--label {k}={v}: a label is KEY=VALUE, KEY 1-64 of A-Z a-z 0-9 . _ -, VALUE not empty"
            )));
        }
    }
    let url = |flag: &str, u: &str, schemes: &[&str]| {
        if schemes.iter().any(|s| u.starts_with(s)) {
            Ok(())
        } else {
            Err(Error::Usage(format!(
                "{flag} {u:?}: give a {} URL",
                schemes.join(" or ")
            )))
        }
    };
    match &opts.source {
        Source::Http(u) => url("--source-url", u, &["http://", "https://"])?,
        Source::Git { url: u, .. } => {
            url("--git", u, &["https://", "http://", "git://", "file://"])?
        }
    }
    url(
        "--artifacts",
        &opts.artifacts,
        &["http://", "https://", "file://"],
    )?;
    if let Some(r) = &opts.reporter {
        url("--reporter-url", r, &["http://", "https://"])?;
        if opts.enrollment_token.is_none() {
            return Err(Error::Usage(
                "--reporter-url needs --enrollment-token-file: the host enrolls with it".into(),
            ));
        }
    }
    Ok(())
}

/// The enrollment token, one line.
fn read_token(path: &std::path::Path) -> Result<Vec<u8>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let token = text.trim();
    if token.is_empty() || token.contains(char::is_whitespace) {
        return Err(Error::file(
            path,
            "expected one enrollment token (`flotilla-reporter token create` prints one)",
        ));
    }
    Ok(format!("{token}\n").into_bytes())
}

/// `/etc/flotilla/agent.toml`.
fn config(opts: &Options, fleet: &str) -> String {
    let labels: Vec<String> = opts
        .labels
        .iter()
        .map(|(k, v)| format!("{} = {}", toml_str(k), toml_str(v)))
        .collect();
    let mut s = format!(
        "# flotilla-agent config for fleet {fleet}, written by `flotilla-publisher package`.\n\
         # dpkg keeps local edits of this file; see the config reference in the README.\n\
         config_schema = {CONFIG_SCHEMA}\n\
         # agent_id = \"web-01\"   # default: a UUID made once and kept in state_dir/agent_id\n\
         channel = {}\n\
         labels = {{ {} }}\n\
         trust_root = \"{TRUST_ROOT}\"\n\
         state_dir = \"/var/lib/flotilla\"\n\
         install_dir = \"/opt/flotilla\"\n\n[source]\n",
        toml_str(&opts.channel),
        labels.join(", ")
    );
    match &opts.source {
        Source::Http(url) => s += &format!("url = {}\n", toml_str(url)),
        Source::Git { url, branch } => {
            s += &format!("git = {}\nbranch = {}\n", toml_str(url), toml_str(branch))
        }
    }
    s += &format!("\n[artifacts]\nbase_url = {}\n", toml_str(&opts.artifacts));
    if let Some(r) = &opts.reporter {
        s += &format!(
            "\n[reporter]\nurl = {}\nenrollment_token_file = \"{ENROLL_TOKEN}\"\ngate_unreachable = \"proceed\"\n",
            toml_str(r)
        );
    }
    s
}
