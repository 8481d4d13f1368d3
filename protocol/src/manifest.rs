//! The compiled manifest: what `flotilla-publisher sign` signs and agents obey.
//!
//! Payload type [`MANIFEST_PAYLOAD_TYPE`]. It holds the fleet name, a strictly
//! increasing `serial` (agents remember the highest they accepted and refuse
//! anything lower: no replay), `issued` and `expires`, the releases that
//! channels, pins or stepping stones still refer to, the channels and the pins.
//! Artifact paths stay relative to a base URL, so mirrors need no re-signing.
//!
//! Parsing is tolerant of unknown fields, so an old agent reads a manifest
//! written by a newer publisher.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use semver::Version;
use serde::{Deserialize, Serialize};

use crate::sources::{Channel, Pin, Release, Sources};

/// DSSE payload type of the compiled manifest.
pub const MANIFEST_PAYLOAD_TYPE: &str = "application/vnd.flotilla.manifest+json";

/// The compiled manifest.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// The fleet's name.
    pub fleet: String,
    /// Strictly increasing across signings.
    pub serial: u64,
    /// When it was compiled.
    pub issued: DateTime<Utc>,
    /// After this, agents reject it.
    pub expires: DateTime<Utc>,
    /// Artifact base URLs from fleet.toml (agents may use their own).
    #[serde(default)]
    pub artifact_base_urls: Vec<String>,
    /// The reporter's URL from fleet.toml.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reporter_url: Option<String>,
    /// Releases by version string.
    pub releases: BTreeMap<String, Release>,
    /// Channels by name.
    pub channels: BTreeMap<String, Channel>,
    /// Pins, first match wins.
    #[serde(default)]
    pub pins: Vec<Pin>,
}

impl Manifest {
    /// Compiles validated sources. Only releases that a channel or pin names,
    /// and their stepping stones (`min_from`, transitively), are included.
    pub fn compile(
        sources: &Sources,
        serial: u64,
        issued: DateTime<Utc>,
        expires: DateTime<Utc>,
    ) -> Manifest {
        let mut wanted: Vec<&Version> = sources.channels.values().map(|c| &c.release).collect();
        wanted.extend(sources.pins.iter().filter_map(|p| p.release.as_ref()));
        let mut releases = BTreeMap::new();
        while let Some(v) = wanted.pop() {
            if let Some(r) = sources.releases.get(v) {
                if releases.insert(v.to_string(), r.clone()).is_none() {
                    if let Some(m) = &r.min_from {
                        wanted.push(m);
                    }
                }
            }
        }
        Manifest {
            fleet: sources.fleet.name.clone(),
            serial,
            issued,
            expires,
            artifact_base_urls: sources.fleet.artifact_base_urls.clone(),
            reporter_url: sources.fleet.reporter_url.clone(),
            releases,
            channels: sources.channels.clone(),
            pins: sources.pins.clone(),
        }
    }

    /// The payload bytes to sign.
    pub fn to_payload(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).expect("manifest serialises");
        v.push(b'\n');
        v
    }

    /// Parses verified payload bytes; tolerant of unknown fields.
    pub fn from_payload(bytes: &[u8]) -> Result<Manifest, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    /// The same manifest with serial and timestamps zeroed, for "does the
    /// signed manifest match the sources?" comparisons.
    pub fn without_signing_fields(&self) -> Manifest {
        Manifest {
            serial: 0,
            issued: DateTime::<Utc>::UNIX_EPOCH,
            expires: DateTime::<Utc>::UNIX_EPOCH,
            ..self.clone()
        }
    }

    /// The release a channel names, if the manifest has it.
    pub fn channel_release(&self, channel: &str) -> Option<(&Channel, &Release)> {
        let c = self.channels.get(channel)?;
        let r = self.releases.get(&c.release.to_string())?;
        Some((c, r))
    }

    /// The release of a version, if present.
    pub fn release(&self, version: &Version) -> Option<&Release> {
        self.releases.get(&version.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn sources() -> Sources {
        let sha = "a".repeat(64);
        let rel = |v: &str, min: &str| {
            (
                PathBuf::from(format!("releases/{v}.toml")),
                format!("version = \"{v}\"\n{min}[artifacts.x86_64-unknown-linux-gnu]\npath = \"a/{v}\"\nsha256 = \"{sha}\"\nsize = 1\n"),
            )
        };
        Sources::from_files(vec![
            ("fleet.toml".into(), "name = \"f\"\n".into()),
            rel("1.0.0", ""),
            rel("2.0.0", ""),
            rel("3.0.0", "min_from = \"2.0.0\"\n"),
            (
                "channels/stable.toml".into(),
                "release = \"3.0.0\"\nstart = \"2026-01-01T00:00:00Z\"\n".into(),
            ),
        ])
        .unwrap()
    }

    #[test]
    fn compile_keeps_referenced_releases_and_stepping_stones() {
        let now = Utc::now();
        let m = Manifest::compile(&sources(), 7, now, now + chrono::Duration::days(1));
        let keys: Vec<&str> = m.releases.keys().map(|s| s.as_str()).collect();
        assert_eq!(keys, ["2.0.0", "3.0.0"]);
        assert_eq!(m.serial, 7);
        let back = Manifest::from_payload(&m.to_payload()).unwrap();
        assert_eq!(back, m);
        assert_eq!(
            back.channel_release("stable")
                .unwrap()
                .1
                .version
                .to_string(),
            "3.0.0"
        );
    }

    #[test]
    fn unknown_fields_are_tolerated() {
        let now = Utc::now();
        let m = Manifest::compile(&sources(), 1, now, now);
        let mut v: serde_json::Value = serde_json::from_slice(&m.to_payload()).unwrap();
        v["future_field"] = serde_json::json!({"x": 1});
        v["channels"]["stable"]["future"] = serde_json::json!(true);
        let back = Manifest::from_payload(&serde_json::to_vec(&v).unwrap()).unwrap();
        assert_eq!(back, m);
    }
}
