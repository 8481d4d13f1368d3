//! `rollout set|pause|resume`: comment-preserving edits of
//! `channels/<name>.toml`.
//!
//! `rollout set` writes the release, start, halt thresholds and waves (the
//! given ones; otherwise the file's own; for a new file
//! [`flotilla_protocol::sources::standard_waves`]). `allow_downgrade` is set
//! only when asked for on this very command and removed otherwise, so a
//! permission to go down never lingers into the next rollout. Every edit is
//! validated with the whole repo and undone if anything fails.

use std::path::PathBuf;

use chrono::{DateTime, SecondsFormat, Utc};
use flotilla_protocol::sources::{standard_waves, valid_name};
use flotilla_protocol::{DowngradePolicy, Wave};
use semver::Version;
use toml_edit::{value, ArrayOfTables, DocumentMut, Item, Table};

use crate::{verify, Error, Repo, Result};

/// What `rollout set` writes.
#[derive(Clone, Debug)]
pub struct RolloutSpec {
    /// The release to roll out.
    pub release: Version,
    /// When wave offsets start counting.
    pub start: DateTime<Utc>,
    /// New waves; `None` keeps the file's (or the standard ones).
    pub waves: Option<Vec<Wave>>,
    /// Halt: failure rate that closes the gate.
    pub max_failure_rate: Option<f64>,
    /// Halt: reports needed before the rate counts.
    pub min_reports: Option<u32>,
    /// Whether this rollout may move agents down.
    pub allow_downgrade: DowngradePolicy,
}

/// `channels/<name>.toml`, relative, after checking the name.
pub fn channel_file(channel: &str) -> Result<PathBuf> {
    if !valid_name(channel) {
        return Err(Error::Usage(format!(
            "--channel {channel:?}: names are 1-64 of A-Z a-z 0-9 . _ -"
        )));
    }
    Ok(PathBuf::from(format!("channels/{channel}.toml")))
}

fn read_doc(repo: &Repo, rel: &PathBuf) -> Result<Option<DocumentMut>> {
    match std::fs::read_to_string(repo.path(rel)) {
        Ok(text) => Ok(Some(
            text.parse::<DocumentMut>()
                .map_err(|e| Error::file(rel, e.to_string().trim_end()))?,
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(rel, e)),
    }
}

/// Writes `rollout set` into the channel's file.
pub fn set(repo: &Repo, channel: &str, spec: &RolloutSpec) -> Result<PathBuf> {
    let rel = channel_file(channel)?;
    let mut doc = match read_doc(repo, &rel)? {
        Some(d) => d,
        None => {
            let mut d = DocumentMut::new();
            d.decor_mut().set_prefix(format!(
                "# Channel {channel:?}: the release it rolls out and how fast.\n# Waves: cumulative percent of the fleet, `after` from `start`, eligibility spread evenly over `spread`.\n"
            ));
            d
        }
    };
    doc["release"] = value(spec.release.to_string());
    doc["start"] = value(spec.start.to_rfc3339_opts(SecondsFormat::Secs, true));
    match spec.allow_downgrade {
        DowngradePolicy::Allow => doc["allow_downgrade"] = value(true),
        DowngradePolicy::Refuse => {
            doc.remove("allow_downgrade");
        }
    }
    if let Some(r) = spec.max_failure_rate {
        doc["max_failure_rate"] = value(r);
    }
    if let Some(n) = spec.min_reports {
        doc["min_reports"] = value(i64::from(n));
    }
    let waves = match &spec.waves {
        Some(w) => Some(w.clone()),
        None if doc.get("waves").is_none() => Some(standard_waves()),
        None => None,
    };
    if let Some(waves) = waves {
        doc.remove("waves");
        doc["waves"] = Item::ArrayOfTables(waves_table(&waves));
    }
    let text = doc.to_string();
    repo.replace_source_validated(&rel, &text, |sources| {
        let problems = match repo.signed_manifest()? {
            Some(signed) => verify::downgrades(&signed.manifest, sources),
            None => Vec::new(),
        };
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Error::Refused(problems.join("\n")))
        }
    })?;
    Ok(rel)
}

/// Sets or clears `paused` on an existing channel.
pub fn set_paused(repo: &Repo, channel: &str, paused: bool) -> Result<PathBuf> {
    let rel = channel_file(channel)?;
    let mut doc = read_doc(repo, &rel)?.ok_or_else(|| {
        Error::file(
            &rel,
            "not found; create the channel with `flotilla-publisher rollout set`",
        )
    })?;
    if paused {
        doc["paused"] = value(true);
    } else {
        doc.remove("paused");
    }
    repo.replace_source_validated(&rel, &doc.to_string(), |_| Ok(()))?;
    Ok(rel)
}

fn waves_table(waves: &[Wave]) -> ArrayOfTables {
    let mut out = ArrayOfTables::new();
    for w in waves {
        let mut t = Table::new();
        t["name"] = value(w.name.clone());
        if w.percent.fract() == 0.0 {
            t["percent"] = value(w.percent as i64);
        } else {
            t["percent"] = value(w.percent);
        }
        t["after"] = value(w.after.to_string());
        t["spread"] = value(w.spread.to_string());
        out.push(t);
    }
    out
}
