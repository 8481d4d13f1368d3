//! The agent's config file (`/etc/flotilla/agent.toml` unless `--config`
//! says otherwise).
//!
//! ```toml
//! config_schema = 3                  # the layout of this file; see CONFIG_SCHEMA
//! agent_id = "web-01"                # optional; default: a UUID made once, kept in state_dir/agent_id
//! channel = "stable"
//! labels = { role = "web", site = "ams1" }
//! trust_root = "/etc/flotilla/root.json"
//! state_dir = "/var/lib/flotilla"
//! install_dir = "/opt/flotilla"      # versions/<v>/flotilla-agent, and the `current` symlink
//! # target = "x86_64-unknown-linux-gnu"   # default: the triple this agent was built for
//!
//! [source]
//! git = "https://git.example.com/ops/fleet.git"   # file://, git://, https://
//! branch = "main"
//! # url = "https://updates.example.com/fleet/"    # or: the static store, over HTTP
//!
//! [artifacts]
//! base_url = "https://updates.example.com/artifacts/"   # http(s):// or file://
//!
//! [reporter]                          # optional
//! url = "https://reporter.example.com"
//! enrollment_token_file = "/etc/flotilla/enroll.token"
//! gate_unreachable = "proceed"        # or "wait"
//!
//! [update]
//! health_attempts = 3
//! keep_versions = 2
//! connect_timeout = "10s"
//! stall_timeout = "30s"
//! min_rate = 1024                     # bytes/s averaged over each stall_timeout; 0: off
//!
//! [migrations]                        # optional; see crate::migrate
//! keep_backups = 3
//! retries = 3
//! # legacy_config_dir = "/etc/flotilla-legacy"
//! # legacy_state_dir = "/var/lib/flotilla-legacy"
//! ```
//!
//! Parsing is strict: an unknown field is an error naming the file and the
//! field (a typo never passes silently). `config_schema` is the version of
//! this file's layout, a number of its own that never follows the agent's
//! version; a file without it is schema 1. The migration framework bumps it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use flotilla_protocol::sources::{parse_strict, valid_name};
use flotilla_protocol::HumanDuration;
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::layout::{self, Layout};
use crate::version::TARGET;

/// The config layout this build reads and writes.
pub const CONFIG_SCHEMA: u32 = crate::migrations::builtin::CONFIG_SCHEMA as u32;

/// Where the config lives unless `--config` says otherwise.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/flotilla/agent.toml";

/// The parsed, validated config.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// The file it was read from.
    pub path: PathBuf,
    /// The layout version of the file ([`CONFIG_SCHEMA`] at most).
    pub config_schema: u32,
    /// Explicit agent id, if the file sets one.
    pub agent_id: Option<String>,
    /// The channel this agent follows.
    pub channel: String,
    /// Labels pins may match on.
    pub labels: BTreeMap<String, String>,
    /// The shipped trust anchor (a signed root envelope).
    pub trust_root: PathBuf,
    /// Where state, downloads, the spool and the git mirror live.
    pub state_dir: PathBuf,
    /// Where versions are installed and `current` points.
    pub install_dir: PathBuf,
    /// The target triple of the artifacts this agent installs.
    pub target: String,
    /// Where the signed manifest comes from.
    pub source: Source,
    /// Base URL artifact paths are joined to.
    pub artifacts_base_url: String,
    /// The reporter, if any.
    pub reporter: Option<Reporter>,
    /// Update behaviour.
    pub update: Update,
    /// The host layout: state dir, legacy locations, migration limits
    /// (resolved by the same rules as the migration pre-pass).
    pub layout: Layout,
}

/// Where the manifest comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// A fleet repo, fetched with git2 (file://, git://, https://).
    Git {
        /// Remote URL.
        url: String,
        /// Branch whose tip is read.
        branch: String,
    },
    /// A static store over HTTP(S): `<url>/manifest.json`, `<url>/root/N.root.json`.
    Http {
        /// Base URL (a trailing `/` is implied).
        url: String,
    },
}

/// What to do when the reporter's halt gate cannot be asked.
/// Security- and safety-relevant, so an enum rather than a bool.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GateUnreachable {
    /// Install anyway: a dead reporter never stops updates (default).
    #[default]
    Proceed,
    /// Defer the update until the gate answers.
    Wait,
}

/// `[reporter]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reporter {
    /// Base URL of the reporter.
    pub url: String,
    /// Enrollment token file (used by event delivery).
    pub enrollment_token_file: Option<PathBuf>,
    /// Policy when the gate cannot be asked.
    pub gate_unreachable: GateUnreachable,
}

/// `[update]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Update {
    /// Failed health checks of a new version before it is rolled back.
    pub health_attempts: u32,
    /// Installed versions kept (the current one and the previous one at least).
    pub keep_versions: u32,
    /// TCP/TLS connect timeout for manifest, gate and artifact requests.
    pub connect_timeout: Duration,
    /// A transfer that receives nothing for this long is abandoned (and
    /// resumed on a later pass).
    pub stall_timeout: Duration,
    /// A transfer (manifest, root, artifact; HTTP or git) that averages
    /// fewer bytes a second than this over a `stall_timeout`-long window is
    /// abandoned: a trickling server cannot hold a pass forever. 0: no
    /// minimum.
    pub min_rate: u64,
}

impl Update {
    /// The minimum transfer rate, for [`crate::http::RateGuard`].
    pub fn min_rate(&self) -> crate::http::MinRate {
        crate::http::MinRate {
            bytes_per_sec: self.min_rate,
            window: self.stall_timeout,
        }
    }
}

impl Default for Update {
    fn default() -> Self {
        Update {
            health_attempts: 3,
            keep_versions: 2,
            connect_timeout: Duration::from_secs(10),
            stall_timeout: Duration::from_secs(30),
            min_rate: 1024,
        }
    }
}

#[derive(Deserialize)]
struct RawConfig {
    config_schema: Option<u32>,
    agent_id: Option<String>,
    channel: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    trust_root: Option<PathBuf>,
    state_dir: Option<PathBuf>,
    install_dir: Option<PathBuf>,
    target: Option<String>,
    source: Option<RawSource>,
    artifacts: Option<RawArtifacts>,
    reporter: Option<RawReporter>,
    #[serde(default)]
    update: RawUpdate,
    #[serde(default)]
    migrations: RawMigrations,
}

/// `[migrations]`: read leniently by [`Layout::lenient`] before the config
/// loads, and strictly here, both resolved by [`Layout::resolve`].
#[derive(Default, Deserialize)]
struct RawMigrations {
    keep_backups: Option<u32>,
    retries: Option<u32>,
    legacy_config_dir: Option<PathBuf>,
    legacy_state_dir: Option<PathBuf>,
}

#[derive(Deserialize)]
struct RawSource {
    git: Option<String>,
    branch: Option<String>,
    url: Option<String>,
}

#[derive(Deserialize)]
struct RawArtifacts {
    base_url: Option<String>,
}

#[derive(Deserialize)]
struct RawReporter {
    url: String,
    enrollment_token_file: Option<PathBuf>,
    #[serde(default)]
    gate_unreachable: GateUnreachable,
}

#[derive(Default, Deserialize)]
struct RawUpdate {
    health_attempts: Option<u32>,
    keep_versions: Option<u32>,
    connect_timeout: Option<HumanDuration>,
    stall_timeout: Option<HumanDuration>,
    min_rate: Option<u64>,
}

impl Config {
    /// Reads and validates the config at `path`.
    pub fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Config {
            path: path.to_owned(),
            field: None,
            reason: format!("cannot read the config: {e}"),
        })?;
        Self::parse(path, &text)
    }

    /// Parses and validates config text; `path` is used in errors.
    pub fn parse(path: &Path, text: &str) -> Result<Config> {
        let raw: RawConfig = parse_strict(path, text).map_err(|e| match e {
            flotilla_protocol::Error::Invalid { field, reason, .. } => Error::Config {
                path: path.to_owned(),
                field: Some(field),
                reason,
            },
            other => Error::Config {
                path: path.to_owned(),
                field: None,
                reason: strip_file(&other.to_string(), path),
            },
        })?;
        let bad = |field: &str, reason: String| Error::Config {
            path: path.to_owned(),
            field: Some(field.to_owned()),
            reason,
        };
        // Required fields are checked here, after parse_strict has reported
        // unknown ones: a misspelt `chanel` is named as such.
        let missing = |field: &str| bad(field, "missing (required)".into());
        let channel = raw.channel.ok_or_else(|| missing("channel"))?;
        let raw_source = raw.source.ok_or_else(|| missing("source"))?;
        let base_url = raw
            .artifacts
            .and_then(|a| a.base_url)
            .ok_or_else(|| missing("artifacts.base_url"))?;
        let config_schema = raw.config_schema.unwrap_or(1);
        if config_schema == 0 || config_schema > CONFIG_SCHEMA {
            return Err(bad(
                "config_schema",
                format!("{config_schema} is not a layout this agent reads (1 to {CONFIG_SCHEMA}); a newer agent wrote it"),
            ));
        }
        if let Some(id) = &raw.agent_id {
            if !flotilla_protocol::event::valid_agent_id(id) {
                return Err(bad(
                    "agent_id",
                    format!(
                        "{id:?} must be {} (the reporter enrolls only such ids)",
                        flotilla_protocol::event::AGENT_ID_RULE
                    ),
                ));
            }
        }
        if !valid_name(&channel) {
            return Err(bad(
                "channel",
                format!("{channel:?} must be 1-64 of A-Z a-z 0-9 . _ -"),
            ));
        }
        let abs = |field: &str, p: Option<PathBuf>, default: &str| -> Result<PathBuf> {
            let p = p.unwrap_or_else(|| PathBuf::from(default));
            if p.is_absolute() {
                Ok(p)
            } else {
                Err(bad(
                    field,
                    format!("{} must be an absolute path", p.display()),
                ))
            }
        };
        let trust_root = abs("trust_root", raw.trust_root, "/etc/flotilla/root.json")?;
        if let Some(p) = &raw.state_dir {
            abs("state_dir", Some(p.clone()), layout::DEFAULT_STATE_DIR)?;
        }
        let layout = Layout::resolve(
            path,
            layout::Settings {
                state_dir: raw.state_dir,
                keep_backups: raw.migrations.keep_backups,
                retries: raw.migrations.retries,
                legacy_config_dir: raw.migrations.legacy_config_dir,
                legacy_state_dir: raw.migrations.legacy_state_dir,
            },
        )
        .map_err(|(field, reason)| bad(field, reason))?;
        let state_dir = layout.state_dir.clone();
        let install_dir = abs("install_dir", raw.install_dir, "/opt/flotilla")?;
        let target = raw.target.unwrap_or_else(|| TARGET.to_owned());
        if !valid_name(&target) {
            return Err(bad("target", format!("{target:?} must be a target triple")));
        }
        let source = match (raw_source.git, raw_source.url) {
            (Some(git), None) => {
                if !["file://", "git://", "https://", "http://"]
                    .iter()
                    .any(|s| git.starts_with(s))
                {
                    return Err(bad(
                        "source.git",
                        format!("{git:?} must be a file://, git:// or https:// URL"),
                    ));
                }
                let branch = raw_source.branch.unwrap_or_else(|| "main".into());
                if branch.is_empty() || branch.contains("..") || branch.starts_with('-') {
                    return Err(bad(
                        "source.branch",
                        format!("{branch:?} is not a branch name"),
                    ));
                }
                Source::Git { url: git, branch }
            }
            (None, Some(url)) => {
                if raw_source.branch.is_some() {
                    return Err(bad(
                        "source.branch",
                        "only applies to a `git` source".into(),
                    ));
                }
                check_url(&url, &["http://", "https://"]).map_err(|r| bad("source.url", r))?;
                Source::Http { url }
            }
            _ => {
                return Err(bad(
                    "source",
                    "set exactly one of `git` (a fleet repo) or `url` (a static store)".into(),
                ))
            }
        };
        check_url(&base_url, &["http://", "https://", "file://"])
            .map_err(|r| bad("artifacts.base_url", r))?;
        let reporter = match raw.reporter {
            None => None,
            Some(r) => {
                check_url(&r.url, &["http://", "https://"]).map_err(|e| bad("reporter.url", e))?;
                Some(Reporter {
                    url: r.url,
                    enrollment_token_file: r.enrollment_token_file,
                    gate_unreachable: r.gate_unreachable,
                })
            }
        };
        let d = Update::default();
        let update = Update {
            health_attempts: raw.update.health_attempts.unwrap_or(d.health_attempts),
            keep_versions: raw.update.keep_versions.unwrap_or(d.keep_versions),
            connect_timeout: raw
                .update
                .connect_timeout
                .map(|h| h.0)
                .unwrap_or(d.connect_timeout),
            stall_timeout: raw
                .update
                .stall_timeout
                .map(|h| h.0)
                .unwrap_or(d.stall_timeout),
            min_rate: raw.update.min_rate.unwrap_or(d.min_rate),
        };
        if update.health_attempts == 0 {
            return Err(bad("update.health_attempts", "must be at least 1".into()));
        }
        if update.keep_versions < 2 {
            return Err(bad(
                "update.keep_versions",
                format!(
                    "{} must be at least 2 (the current version and the previous one)",
                    update.keep_versions
                ),
            ));
        }
        for (field, v) in [
            ("update.connect_timeout", update.connect_timeout),
            ("update.stall_timeout", update.stall_timeout),
        ] {
            if v.is_zero() {
                return Err(bad(field, "must be longer than 0s".into()));
            }
        }
        Ok(Config {
            path: path.to_owned(),
            config_schema,
            agent_id: raw.agent_id,
            channel,
            labels: raw.labels,
            trust_root,
            state_dir,
            install_dir,
            target,
            source,
            artifacts_base_url: base_url,
            reporter,
            update,
            layout,
        })
    }
}

fn check_url(url: &str, schemes: &[&str]) -> std::result::Result<(), String> {
    if !schemes.iter().any(|s| url.starts_with(s)) {
        return Err(format!(
            "{url:?} must start with one of {}",
            schemes.join(", ")
        ));
    }
    url::Url::parse(url).map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    Ok(())
}

fn strip_file(msg: &str, path: &Path) -> String {
    let prefix = format!("{}: ", path.display());
    msg.strip_prefix(&prefix).unwrap_or(msg).to_owned()
}

/// The config `install` writes when none exists (`agent_id` and `labels`
/// as given to `install --agent-id` / `--labels`), its paths under
/// `prefix` (`/` for a host's real install).
pub fn template(
    prefix: &Path,
    channel: &str,
    source: &Source,
    artifacts_base_url: &str,
    reporter_url: Option<&str>,
    agent_id: Option<&str>,
    labels: &BTreeMap<String, String>,
) -> String {
    let id_line = match agent_id {
        Some(id) => format!("agent_id = {}\n", toml_str(id)),
        None => {
            "# agent_id = \"web-01\"   # default: a UUID made once and kept in state_dir/agent_id\n"
                .to_owned()
        }
    };
    let labels = labels
        .iter()
        .map(|(k, v)| format!("{} = {}", toml_str(k), toml_str(v)))
        .collect::<Vec<_>>()
        .join(", ");
    let labels = if labels.is_empty() {
        "{}".to_owned()
    } else {
        format!("{{ {labels} }}")
    };
    let mut s = format!(
        "# flotilla-agent config; see `flotilla-agent --help` and the config reference in the README.\n\
         config_schema = {CONFIG_SCHEMA}\n\
         {id_line}\
         channel = {}\n\
         labels = {labels}\n\
         trust_root = {}\n\
         state_dir = {}\n\
         install_dir = {}\n\n[source]\n",
        toml_str(channel),
        path(prefix, "/etc/flotilla/root.json"),
        path(prefix, "/var/lib/flotilla"),
        path(prefix, "/opt/flotilla"),
    );
    match source {
        Source::Git { url, branch } => {
            s += &format!("git = {}\nbranch = {}\n", toml_str(url), toml_str(branch))
        }
        Source::Http { url } => s += &format!("url = {}\n", toml_str(url)),
    }
    s += &format!(
        "\n[artifacts]\nbase_url = {}\n",
        toml_str(artifacts_base_url)
    );
    if let Some(r) = reporter_url {
        s += &format!(
            "\n[reporter]\nurl = {}\nenrollment_token_file = {}\ngate_unreachable = \"proceed\"\n",
            toml_str(r),
            path(prefix, "/etc/flotilla/enroll.token"),
        );
    }
    s += "\n[update]\nhealth_attempts = 3\nkeep_versions = 2\n";
    s
}

/// A host path under `prefix`, as a TOML string.
fn path(prefix: &Path, host: &str) -> String {
    toml_str(&crate::setup::under(prefix, Path::new(host)).to_string_lossy())
}

/// A TOML basic string.
fn toml_str(s: &str) -> String {
    serde_json::to_string(s).expect("strings serialise")
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
channel = "stable"
state_dir = "/tmp/s"
[source]
git = "file:///srv/fleet"
[artifacts]
base_url = "http://127.0.0.1/a/"
"#;

    #[test]
    fn the_state_dir_under_a_prefix_is_the_migrations_one() {
        // `run` locks the state dir the migration pre-pass resolves;
        // `status` and `rollback` use the loaded config's: the same one.
        let root = tempfile::tempdir().unwrap();
        let path = root.path().join("etc/flotilla/agent.toml");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let text = GOOD.replace("state_dir = \"/tmp/s\"\n", "");
        std::fs::write(&path, &text).unwrap();
        let c = Config::load(&path).unwrap();
        assert_eq!(c.state_dir, root.path().join("var/lib/flotilla"));
        assert_eq!(c.layout, Layout::lenient(&path));
    }

    fn err(text: &str) -> String {
        Config::parse(Path::new("/etc/flotilla/agent.toml"), text)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn defaults_apply() {
        let c = Config::parse(Path::new("a.toml"), GOOD).unwrap();
        assert_eq!(c.config_schema, 1);
        assert_eq!(c.target, TARGET);
        assert_eq!(c.install_dir, Path::new("/opt/flotilla"));
        assert_eq!(
            c.source,
            Source::Git {
                url: "file:///srv/fleet".into(),
                branch: "main".into()
            }
        );
        assert_eq!(c.update, Update::default());
        assert!(c.reporter.is_none());
    }

    #[test]
    fn unknown_field_names_file_and_field() {
        let e = err(&format!("{GOOD}\n[update]\nhealth_atempts = 2\n"));
        assert!(e.contains("/etc/flotilla/agent.toml"), "{e}");
        assert!(e.contains("update.health_atempts"), "{e}");
        let e = err(&GOOD.replace("channel", "chanel"));
        assert!(
            e.contains("/etc/flotilla/agent.toml") && e.contains("chanel"),
            "{e}"
        );
    }

    #[test]
    fn invalid_values_name_the_field() {
        let e = err(&GOOD.replace("\"stable\"", "\"st able\""));
        assert!(e.contains("agent.toml: channel:"), "{e}");
        let e = err(&GOOD.replace("/tmp/s", "relative/dir"));
        assert!(e.contains("state_dir"), "{e}");
        let e = err(&GOOD.replace("git = ", "url = \"http://x/\"\ngit = "));
        assert!(e.contains("source:"), "{e}");
        let e = err(&GOOD.replace("http://127.0.0.1", "ftp://127.0.0.1"));
        assert!(e.contains("artifacts.base_url"), "{e}");
        let e = err(&format!("config_schema = 9\n{GOOD}"));
        assert!(e.contains("config_schema"), "{e}");
        let e = err(&format!(
            "{GOOD}[reporter]\nurl = \"http://r\"\ngate_unreachable = \"maybe\"\n"
        ));
        assert!(e.contains("gate_unreachable") || e.contains("maybe"), "{e}");
        let e = err(&format!("{GOOD}[update]\nkeep_versions = 1\n"));
        assert!(e.contains("update.keep_versions"), "{e}");
        let e = err("channel = \"x\"\n");
        assert!(e.contains("source"), "{e}");
        // The reporter would never enroll it, so the agent refuses it too.
        let e = err(&format!("agent_id = \"web/01\"\n{GOOD}"));
        assert!(e.contains("agent_id") && e.contains("A-Z a-z 0-9"), "{e}");
    }

    #[test]
    fn template_parses() {
        for src in [
            Source::Git {
                url: "https://git.example.com/fleet.git".into(),
                branch: "main".into(),
            },
            Source::Http {
                url: "https://u.example.com/fleet/".into(),
            },
        ] {
            let t = template(
                Path::new("/"),
                "stable",
                &src,
                "https://a.example.com/",
                Some("https://r.example.com"),
                None,
                &BTreeMap::new(),
            );
            let c = Config::parse(Path::new("t.toml"), &t).unwrap();
            assert_eq!(c.source, src);
            assert_eq!((c.agent_id, c.labels.len()), (None, 0));
            let labels = BTreeMap::from([
                ("role".to_owned(), "web".to_owned()),
                ("site".to_owned(), "ams \"1\"".to_owned()),
            ]);
            let t = template(
                Path::new("/"),
                "stable",
                &src,
                "https://a.example.com/",
                Some("https://r.example.com"),
                Some("web-01"),
                &labels,
            );
            let c = Config::parse(Path::new("t.toml"), &t).unwrap();
            assert_eq!((c.agent_id.as_deref(), c.labels), (Some("web-01"), labels));
            assert_eq!(c.config_schema, CONFIG_SCHEMA);
            assert_eq!(
                c.reporter.unwrap().gate_unreachable,
                GateUnreachable::Proceed
            );
        }
    }
}
