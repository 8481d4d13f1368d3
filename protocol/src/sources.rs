//! The fleet repo's source files and their validation.
//!
//! ```text
//! fleet.toml              fleet name, artifact base URLs, reporter URL, manifest expiry
//! releases/<version>.toml one file per release: artifacts per target triple
//! channels/<name>.toml    the release a channel rolls out, start, waves, halt thresholds
//! pins.toml               agents or labels held on a release or moved to another channel
//! ```
//!
//! The same types are used in the compiled manifest. Sources are parsed
//! strictly ([`parse_strict`]: an unknown field is an error naming the file
//! and the field, so a typo never passes silently); the manifest is parsed
//! tolerantly, so old agents read manifests written by newer publishers.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use semver::Version;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::duration::HumanDuration;
use crate::error::{Error, Problems};

/// `fleet.toml`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Fleet {
    /// The fleet's name; copied into the manifest.
    pub name: String,
    /// Base URLs artifacts are downloaded from (agents may override theirs).
    #[serde(default)]
    pub artifact_base_urls: Vec<String>,
    /// The reporter's URL, if the fleet runs one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reporter_url: Option<String>,
    /// How long a signed manifest stays valid unless `sign --expires` says otherwise.
    #[serde(default = "default_manifest_expires")]
    pub manifest_expires: HumanDuration,
}

fn default_manifest_expires() -> HumanDuration {
    HumanDuration::from_secs(30 * 86_400)
}

/// `releases/<version>.toml`: one release and its artifacts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Release {
    /// Semantic version; must match the file name.
    pub version: Version,
    /// Stepping stone: agents below this version must first update to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_from: Option<Version>,
    /// Release notes for humans.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notes: Option<String>,
    /// Artifacts by target triple (e.g. `x86_64-unknown-linux-gnu`).
    pub artifacts: BTreeMap<String, Artifact>,
}

/// One build of a release for one target.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Artifact {
    /// Path relative to an artifact base URL; never absolute, never `..`.
    pub path: String,
    /// Lowercase hex SHA-256.
    pub sha256: String,
    /// Size in bytes; downloads are capped at it.
    pub size: u64,
}

/// Whether a channel may move agents to a lower version. A security-relevant
/// option, so an enum rather than a bare bool; written as `allow_downgrade = true`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "bool", into = "bool")]
pub enum DowngradePolicy {
    /// Agents never install a version lower than the one they run (default).
    #[default]
    Refuse,
    /// Agents follow the channel down (rolling a fleet back on purpose).
    Allow,
}

impl From<bool> for DowngradePolicy {
    fn from(b: bool) -> Self {
        if b {
            DowngradePolicy::Allow
        } else {
            DowngradePolicy::Refuse
        }
    }
}

impl From<DowngradePolicy> for bool {
    fn from(p: DowngradePolicy) -> bool {
        p == DowngradePolicy::Allow
    }
}

fn is_refuse(p: &DowngradePolicy) -> bool {
    *p == DowngradePolicy::Refuse
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// `channels/<name>.toml`: what a channel rolls out, and how fast.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Channel {
    /// The release this channel rolls out.
    pub release: Version,
    /// When the rollout starts; wave offsets are measured from here.
    pub start: DateTime<Utc>,
    /// A paused channel moves no agent.
    #[serde(default, skip_serializing_if = "is_false")]
    pub paused: bool,
    /// Whether agents may move to a lower version on this channel.
    #[serde(default, skip_serializing_if = "is_refuse")]
    pub allow_downgrade: DowngradePolicy,
    /// Halt: the gate closes when the failure rate exceeds this (0.0–1.0) …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_failure_rate: Option<f64>,
    /// … once at least this many agents have reported on the release.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_reports: Option<u32>,
    /// Waves, in order; percents are cumulative and end at 100.
    #[serde(default = "default_waves")]
    pub waves: Vec<Wave>,
}

/// One wave of a rollout.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Wave {
    /// Name shown in reports, e.g. `canary`.
    pub name: String,
    /// Cumulative share of the fleet, in percent (0 < percent <= 100).
    pub percent: f64,
    /// When the wave opens, measured from the channel's start.
    #[serde(default)]
    pub after: HumanDuration,
    /// Agents of the wave become eligible evenly over this long after it opens.
    #[serde(default)]
    pub spread: HumanDuration,
}

/// The waves a channel gets when it names none: everyone at once.
pub fn default_waves() -> Vec<Wave> {
    vec![Wave {
        name: "all".into(),
        percent: 100.0,
        after: HumanDuration::default(),
        spread: HumanDuration::default(),
    }]
}

/// The waves `flotilla-publisher rollout set` writes when given none.
pub fn standard_waves() -> Vec<Wave> {
    let d = |s| HumanDuration::from_secs(s);
    vec![
        Wave {
            name: "canary".into(),
            percent: 5.0,
            after: d(0),
            spread: d(3_600),
        },
        Wave {
            name: "early".into(),
            percent: 25.0,
            after: d(86_400),
            spread: d(6 * 3_600),
        },
        Wave {
            name: "all".into(),
            percent: 100.0,
            after: d(3 * 86_400),
            spread: d(12 * 3_600),
        },
    ]
}

/// `pins.toml`: a list of `[[pin]]` tables.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PinsFile {
    /// The pins, first match wins.
    #[serde(default, rename = "pin")]
    pub pins: Vec<Pin>,
}

/// Holds matching agents on a release, or moves them to another channel.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Pin {
    /// Agent ids this pin applies to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub agents: Vec<String>,
    /// Labels an agent must all carry for this pin to apply.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Hold on this release.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<Version>,
    /// Or follow this channel instead of the agent's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// Why, for the reviewer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// What a matching pin does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PinTarget<'a> {
    /// Hold on a release.
    Release(&'a Version),
    /// Follow another channel.
    Channel(&'a str),
}

impl Pin {
    /// Whether this pin applies to an agent with this id and these labels.
    pub fn matches(&self, agent_id: &str, labels: &BTreeMap<String, String>) -> bool {
        let by_id = self.agents.iter().any(|a| a == agent_id);
        let by_labels =
            !self.labels.is_empty() && self.labels.iter().all(|(k, v)| labels.get(k) == Some(v));
        by_id || by_labels
    }

    /// What the pin does (validated pins have exactly one target).
    pub fn target(&self) -> Option<PinTarget<'_>> {
        match (&self.release, &self.channel) {
            (Some(r), None) => Some(PinTarget::Release(r)),
            (None, Some(c)) => Some(PinTarget::Channel(c)),
            _ => None,
        }
    }
}

/// Parses TOML into `T`, rejecting any field `T` does not know. The error
/// names the file and the dotted path of the unknown field.
pub fn parse_strict<T: DeserializeOwned>(file: &Path, text: &str) -> Result<T, Error> {
    let mut unknown = Vec::new();
    let de = toml::Deserializer::new(text);
    let value: T =
        serde_ignored::deserialize(de, |path| unknown.push(path.to_string())).map_err(|e| {
            Error::Parse {
                file: file.to_owned(),
                // The parser's snippet (line, source line, caret) stays
                // on its lines: flattened it no longer points anywhere.
                reason: e.to_string().trim_end().to_owned(),
            }
        })?;
    if let Some(field) = unknown.into_iter().next() {
        return Err(Error::invalid(file, field, "unknown field (typo?)"));
    }
    Ok(value)
}

/// All sources of a fleet repo, parsed and validated together.
#[derive(Clone, Debug, PartialEq)]
pub struct Sources {
    /// `fleet.toml`.
    pub fleet: Fleet,
    /// `releases/*.toml` by version.
    pub releases: BTreeMap<Version, Release>,
    /// `channels/*.toml` by channel name (the file stem).
    pub channels: BTreeMap<String, Channel>,
    /// `pins.toml`.
    pub pins: Vec<Pin>,
}

impl Sources {
    /// Reads and validates the sources under `dir`, collecting every problem.
    pub fn load_dir(dir: &Path) -> Result<Sources, Problems> {
        let mut files = Vec::new();
        let mut problems = Vec::new();
        let mut read = |rel: PathBuf, required: bool, problems: &mut Vec<Error>| {
            match std::fs::read_to_string(dir.join(&rel)) {
                Ok(text) => files.push((rel, text)),
                Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => problems.push(Error::Io { file: rel, source }),
            }
        };
        read("fleet.toml".into(), true, &mut problems);
        read("pins.toml".into(), false, &mut problems);
        for sub in ["releases", "channels"] {
            match std::fs::read_dir(dir.join(sub)) {
                Ok(entries) => {
                    let mut names: Vec<PathBuf> = entries
                        .filter_map(|e| e.ok())
                        .map(|e| PathBuf::from(sub).join(e.file_name()))
                        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
                        .collect();
                    names.sort();
                    for n in names {
                        read(n, true, &mut problems);
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => problems.push(Error::Io {
                    file: sub.into(),
                    source,
                }),
            }
        }
        match Self::from_files(files) {
            Ok(s) if problems.is_empty() => Ok(s),
            Ok(_) => Err(Problems(problems)),
            Err(Problems(more)) => {
                problems.extend(more);
                Err(Problems(problems))
            }
        }
    }

    /// Parses and validates sources given as (path relative to the repo, text).
    pub fn from_files(
        files: impl IntoIterator<Item = (PathBuf, String)>,
    ) -> Result<Sources, Problems> {
        let mut problems = Vec::new();
        let mut fleet = None;
        let mut releases = BTreeMap::new();
        let mut channels = BTreeMap::new();
        let mut pins = Vec::new();
        for (rel, text) in files {
            let dir = rel.parent().and_then(|p| p.to_str()).unwrap_or("");
            let stem = rel
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or("")
                .to_owned();
            match (dir, rel.to_str().unwrap_or("")) {
                (_, "fleet.toml") => match parse_strict::<Fleet>(&rel, &text) {
                    Ok(f) => fleet = Some(f),
                    Err(e) => problems.push(e),
                },
                (_, "pins.toml") => match parse_strict::<PinsFile>(&rel, &text) {
                    Ok(p) => pins = p.pins,
                    Err(e) => problems.push(e),
                },
                ("releases", _) => match parse_strict::<Release>(&rel, &text) {
                    Ok(r) => {
                        if r.version.to_string() != stem {
                            problems.push(Error::invalid(
                                &rel,
                                "version",
                                format!("is {} but the file is named {stem}.toml", r.version),
                            ));
                        }
                        releases.insert(r.version.clone(), (rel.clone(), r));
                    }
                    Err(e) => problems.push(e),
                },
                ("channels", _) => match parse_strict::<Channel>(&rel, &text) {
                    Ok(c) => {
                        channels.insert(stem, (rel.clone(), c));
                    }
                    Err(e) => problems.push(e),
                },
                _ => {}
            }
        }
        let fleet = match fleet {
            Some(f) => {
                problems.extend(validate_fleet(Path::new("fleet.toml"), &f));
                Some(f)
            }
            None => {
                if !problems.iter().any(|p| matches!(p, Error::Io { file, .. } | Error::Parse { file, .. } if file == Path::new("fleet.toml"))) {
                    problems.push(Error::invalid("fleet.toml", "name", "fleet.toml is missing"));
                }
                None
            }
        };
        for (rel, r) in releases.values() {
            problems.extend(validate_release(rel, r));
        }
        let versions: BTreeSet<&Version> = releases.keys().collect();
        for (name, (rel, c)) in &channels {
            problems.extend(validate_channel(rel, name, c, &versions));
        }
        for (i, p) in pins.iter().enumerate() {
            problems.extend(validate_pin(
                Path::new("pins.toml"),
                i,
                p,
                &versions,
                &channels,
            ));
        }
        match fleet {
            Some(fleet) if problems.is_empty() => Ok(Sources {
                fleet,
                releases: releases.into_iter().map(|(v, (_, r))| (v, r)).collect(),
                channels: channels.into_iter().map(|(n, (_, c))| (n, c)).collect(),
                pins,
            }),
            _ => Err(Problems(problems)),
        }
    }
}

/// Checks a name used for channels and the fleet: `[A-Za-z0-9._-]`, 1–64 chars.
pub fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        && !s.starts_with('.')
}

/// Checks an artifact path: relative, `/`-separated, no `.`/`..`/empty parts.
pub fn check_relative_path(path: &str) -> Result<(), String> {
    if path.is_empty() {
        return Err("is empty".into());
    }
    if path.starts_with('/') {
        return Err(format!(
            "{path:?} is absolute; artifact paths are relative to a base URL"
        ));
    }
    if path.contains('\\') || path.contains('\0') || path.contains("://") {
        return Err(format!(
            "{path:?} must be a plain relative path with / separators"
        ));
    }
    for part in path.split('/') {
        if part.is_empty() || part == "." || part == ".." {
            return Err(format!(
                "{path:?} has a {part:?} component; `..`, `.` and empty parts are not allowed"
            ));
        }
    }
    Ok(())
}

fn validate_fleet(file: &Path, f: &Fleet) -> Vec<Error> {
    let mut out = Vec::new();
    if !valid_name(&f.name) {
        out.push(Error::invalid(
            file,
            "name",
            format!("{:?} must be 1-64 of A-Z a-z 0-9 . _ -", f.name),
        ));
    }
    for (i, u) in f.artifact_base_urls.iter().enumerate() {
        if !(u.starts_with("http://") || u.starts_with("https://") || u.starts_with("file://")) {
            out.push(Error::invalid(
                file,
                format!("artifact_base_urls[{i}]"),
                format!("{u:?} must be an http://, https:// or file:// URL"),
            ));
        }
    }
    if f.manifest_expires.0.is_zero() {
        out.push(Error::invalid(
            file,
            "manifest_expires",
            "must be longer than 0s",
        ));
    }
    out
}

fn validate_release(file: &Path, r: &Release) -> Vec<Error> {
    let mut out = Vec::new();
    if r.artifacts.is_empty() {
        out.push(Error::invalid(
            file,
            "artifacts",
            "a release needs at least one artifact",
        ));
    }
    if let Some(m) = &r.min_from {
        if m >= &r.version {
            out.push(Error::invalid(
                file,
                "min_from",
                format!("{m} must be lower than the release's version {}", r.version),
            ));
        }
    }
    for (target, a) in &r.artifacts {
        let field = |f: &str| format!("artifacts.{target}.{f}");
        if !valid_name(target) {
            out.push(Error::invalid(
                file,
                format!("artifacts.{target}"),
                "target must be a target triple such as x86_64-unknown-linux-gnu",
            ));
        }
        if let Err(e) = check_relative_path(&a.path) {
            out.push(Error::invalid(file, field("path"), e));
        }
        if !(a.sha256.len() == 64
            && a.sha256
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
        {
            out.push(Error::invalid(
                file,
                field("sha256"),
                format!("{:?} must be 64 lowercase hex characters", a.sha256),
            ));
        }
    }
    out
}

fn validate_channel(
    file: &Path,
    name: &str,
    c: &Channel,
    versions: &BTreeSet<&Version>,
) -> Vec<Error> {
    let mut out = Vec::new();
    if !valid_name(name) {
        out.push(Error::invalid(
            file,
            "(file name)",
            format!("channel name {name:?} must be 1-64 of A-Z a-z 0-9 . _ -"),
        ));
    }
    if !versions.contains(&c.release) {
        out.push(Error::invalid(
            file,
            "release",
            format!("{} has no releases/{}.toml", c.release, c.release),
        ));
    }
    if let Some(r) = c.max_failure_rate {
        if !(0.0..=1.0).contains(&r) {
            out.push(Error::invalid(
                file,
                "max_failure_rate",
                format!("{r} must be between 0.0 and 1.0"),
            ));
        }
    }
    if c.min_reports == Some(0) {
        out.push(Error::invalid(file, "min_reports", "must be at least 1"));
    }
    if c.waves.is_empty() {
        out.push(Error::invalid(
            file,
            "waves",
            "a channel needs at least one wave",
        ));
    }
    let mut names = BTreeSet::new();
    let mut last_pct = 0.0;
    let mut last_after = HumanDuration::default();
    for (i, w) in c.waves.iter().enumerate() {
        let field = |f: &str| format!("waves[{i}].{f}");
        if w.name.is_empty() || !names.insert(w.name.as_str()) {
            out.push(Error::invalid(
                file,
                field("name"),
                format!("{:?} must be non-empty and unique", w.name),
            ));
        }
        if !(w.percent > last_pct && w.percent <= 100.0 && w.percent.is_finite()) {
            out.push(Error::invalid(file, field("percent"), format!("{} must be above the previous wave's {last_pct} and at most 100 (percents are cumulative)", w.percent)));
        }
        if (w.percent * 100.0).fract().abs() > 1e-9 {
            out.push(Error::invalid(
                file,
                field("percent"),
                format!("{} has more than two decimals", w.percent),
            ));
        }
        if w.after < last_after {
            out.push(Error::invalid(
                file,
                field("after"),
                format!(
                    "{} is earlier than the previous wave's {last_after}",
                    w.after
                ),
            ));
        }
        last_pct = w.percent;
        last_after = w.after;
    }
    if let Some(last) = c.waves.last() {
        if last.percent != 100.0 {
            out.push(Error::invalid(
                file,
                format!("waves[{}].percent", c.waves.len() - 1),
                format!("the last wave must reach 100, not {}", last.percent),
            ));
        }
    }
    out
}

fn validate_pin(
    file: &Path,
    i: usize,
    p: &Pin,
    versions: &BTreeSet<&Version>,
    channels: &BTreeMap<String, (PathBuf, Channel)>,
) -> Vec<Error> {
    let mut out = Vec::new();
    let field = |f: &str| format!("pin[{i}].{f}");
    if p.agents.is_empty() && p.labels.is_empty() {
        out.push(Error::invalid(
            file,
            field("agents"),
            "a pin needs `agents` or `labels`",
        ));
    }
    match (&p.release, &p.channel) {
        (Some(_), Some(_)) | (None, None) => out.push(Error::invalid(
            file,
            field("release"),
            "a pin sets exactly one of `release` or `channel`",
        )),
        (Some(v), None) if !versions.contains(v) => out.push(Error::invalid(
            file,
            field("release"),
            format!("{v} has no releases/{v}.toml"),
        )),
        (None, Some(c)) if !channels.contains_key(c) => out.push(Error::invalid(
            file,
            field("channel"),
            format!("{c:?} has no channels/{c}.toml"),
        )),
        _ => {}
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn base_files() -> Vec<(PathBuf, String)> {
        vec![
            ("fleet.toml".into(), "name = \"demo\"\nartifact_base_urls = [\"https://x.example/a/\"]\n".into()),
            (
                "releases/1.0.0.toml".into(),
                format!("version = \"1.0.0\"\n[artifacts.x86_64-unknown-linux-gnu]\npath = \"agent/1.0.0/flotilla-agent\"\nsha256 = \"{SHA}\"\nsize = 0\n"),
            ),
            (
                "channels/stable.toml".into(),
                "release = \"1.0.0\"\nstart = \"2026-01-01T00:00:00Z\"\n[[waves]]\nname = \"canary\"\npercent = 5\nafter = \"0s\"\nspread = \"1h\"\n[[waves]]\nname = \"all\"\npercent = 100\nafter = \"1d\"\nspread = \"6h\"\n".into(),
            ),
            ("pins.toml".into(), "[[pin]]\nagents = [\"db-01\"]\nrelease = \"1.0.0\"\n".into()),
        ]
    }

    fn with(path: &str, text: &str) -> Vec<(PathBuf, String)> {
        let mut files = base_files();
        for f in files.iter_mut() {
            if f.0 == Path::new(path) {
                f.1 = text.into();
            }
        }
        files
    }

    fn err(files: Vec<(PathBuf, String)>) -> String {
        Sources::from_files(files).unwrap_err().to_string()
    }

    #[test]
    fn good_sources_load() {
        let s = Sources::from_files(base_files()).unwrap();
        assert_eq!(s.fleet.name, "demo");
        assert_eq!(s.channels["stable"].waves.len(), 2);
        assert_eq!(s.pins.len(), 1);
    }

    #[test]
    fn typo_field_names_file_and_field() {
        let text = base_files()[2].1.replace("start =", "strat =");
        let e = err(with(
            "channels/stable.toml",
            &format!("start = \"2026-01-01T00:00:00Z\"\n{text}"),
        ));
        assert!(e.contains("channels/stable.toml"), "{e}");
        assert!(e.contains("strat"), "{e}");
        let e = err(with(
            "channels/stable.toml",
            &base_files()[2]
                .1
                .replace("spread = \"1h\"", "sprad = \"1h\""),
        ));
        assert!(
            e.contains("channels/stable.toml") && e.contains("waves") && e.contains("sprad"),
            "{e}"
        );
    }

    #[test]
    fn percents_must_end_at_100_and_increase() {
        let e = err(with(
            "channels/stable.toml",
            &base_files()[2].1.replace("percent = 100", "percent = 90"),
        ));
        assert!(
            e.contains("channels/stable.toml: waves[1].percent: the last wave must reach 100"),
            "{e}"
        );
        let e = err(with(
            "channels/stable.toml",
            &base_files()[2].1.replace("percent = 5", "percent = 100"),
        ));
        assert!(e.contains("waves[1].percent"), "{e}");
    }

    #[test]
    fn after_never_decreases() {
        let e = err(with(
            "channels/stable.toml",
            &base_files()[2]
                .1
                .replace("after = \"1d\"", "after = \"0s\"")
                .replace(
                    "after = \"0s\"\nspread = \"1h\"",
                    "after = \"2d\"\nspread = \"1h\"",
                ),
        ));
        assert!(e.contains("waves[1].after"), "{e}");
    }

    #[test]
    fn artifact_path_traversal_rejected() {
        let e = err(with(
            "releases/1.0.0.toml",
            &base_files()[1]
                .1
                .replace("agent/1.0.0/flotilla-agent", "../../etc/passwd"),
        ));
        assert!(
            e.contains("releases/1.0.0.toml: artifacts.x86_64-unknown-linux-gnu.path"),
            "{e}"
        );
        for bad in ["/etc/passwd", "a//b", "a/./b", "a\\b", "a/.."] {
            assert!(check_relative_path(bad).is_err(), "{bad}");
        }
        assert!(check_relative_path("a/b-1.0/c").is_ok());
    }

    #[test]
    fn bad_sha_semver_and_missing_release() {
        let e = err(with(
            "releases/1.0.0.toml",
            &base_files()[1].1.replace(SHA, "abc"),
        ));
        assert!(e.contains("sha256"), "{e}");
        let e = err(with(
            "releases/1.0.0.toml",
            &base_files()[1]
                .1
                .replace("version = \"1.0.0\"", "version = \"1.0\""),
        ));
        assert!(e.contains("releases/1.0.0.toml"), "{e}");
        let e = err(with(
            "channels/stable.toml",
            &base_files()[2]
                .1
                .replace("release = \"1.0.0\"", "release = \"2.0.0\""),
        ));
        assert!(
            e.contains("channels/stable.toml: release: 2.0.0 has no releases/2.0.0.toml"),
            "{e}"
        );
        let e = err(with(
            "pins.toml",
            "[[pin]]\nagents = [\"x\"]\nchannel = \"nope\"\n",
        ));
        assert!(e.contains("pins.toml: pin[0].channel"), "{e}");
    }

    #[test]
    fn load_dir_reads_the_tree() {
        let dir = tempfile::tempdir().unwrap();
        for (rel, text) in base_files() {
            let p = dir.path().join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        let s = Sources::load_dir(dir.path()).unwrap();
        assert_eq!(s.releases.len(), 1);
        std::fs::remove_file(dir.path().join("fleet.toml")).unwrap();
        let e = Sources::load_dir(dir.path()).unwrap_err().to_string();
        assert!(e.contains("fleet.toml"), "{e}");
    }

    #[test]
    fn pins_match_by_id_or_all_labels() {
        let mut labels = BTreeMap::new();
        labels.insert("role".to_string(), "db".to_string());
        let p = Pin {
            agents: vec![],
            labels: labels.clone(),
            release: None,
            channel: Some("beta".into()),
            note: None,
        };
        assert!(p.matches("x", &labels));
        assert!(!p.matches("x", &BTreeMap::new()));
        assert_eq!(p.target(), Some(PinTarget::Channel("beta")));
    }
}
