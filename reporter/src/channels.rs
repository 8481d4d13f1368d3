//! Channel settings: the gate's thresholds, waves and releases come only
//! from a manifest this reporter verified itself.
//!
//! `serve --manifest PATH|URL --trust-root PATH` reads the signed manifest
//! (`signed/manifest.json` of a fleet repo checkout, or a store's
//! `manifest.json` as `flotilla-publisher publish` lays it out) every
//! `manifest_refresh`, and verifies it with
//! [`flotilla_protocol::trust::verify_manifest`], exactly as an agent does:
//! the root chain is walked from the trust root (then from the newest root
//! verified so far) through `root/<n>.root.json` next to the manifest (for a
//! manifest in a directory named `signed`, the `root/` beside that
//! directory), the release keys' threshold is checked, and so are expiry
//! and the serial (never below the highest verified, the same serial only
//! with the same payload). Each document is read with a size cap
//! ([`MAX_METADATA`]), HTTP with connect and read timeouts, and a whole
//! refresh within [`REFRESH_DEADLINE`].
//!
//! A manifest that does not verify is not used: the last verified one is
//! kept, and why the new one was refused is logged, shown on the page and in
//! every gate's `reason`. Agents' `details` never set thresholds or waves.
//!
//! **Without a verified manifest the gate is closed** (and so is the gate of
//! a channel or release the verified manifest does not name): nothing an
//! agent reports can open it. See [`channel_info`].

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use flotilla_protocol::api::SettingsSource;
use flotilla_protocol::trust::{verify_manifest, TrustError};
use flotilla_protocol::Manifest;
use flotilla_signing::{Envelope, TrustedRoot};
use tokio::io::AsyncReadExt;

use crate::rollout::ChannelInfo;

/// Largest manifest or root document read, in bytes (the agent's cap).
pub const MAX_METADATA: u64 = 16 * 1024 * 1024;
/// Connect timeout of an HTTP fetch.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest silence while reading an HTTP answer.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// A whole refresh (manifest and every root) ends within this.
pub const REFRESH_DEADLINE: Duration = Duration::from_secs(60);
/// Most roots walked in one refresh.
const MAX_ROOTS_PER_WALK: u64 = 1024;

/// What is known of the manifest: the last verified one and the last
/// refusal.
#[derive(Clone, Debug, Default)]
pub struct ManifestStatus {
    /// `--manifest` was given.
    pub configured: bool,
    /// The newest verified manifest.
    pub verified: Option<Arc<Manifest>>,
    /// SHA-256 of its payload.
    pub digest: Option<String>,
    /// When it was verified.
    pub verified_at: Option<DateTime<Utc>>,
    /// Why the latest refresh was refused or failed, if it was.
    pub error: Option<String>,
}

impl ManifestStatus {
    /// Why no threshold is known, when no manifest is verified.
    pub fn missing_reason(&self) -> String {
        match (&self.configured, &self.error) {
            (false, _) => "no verified manifest: the reporter runs without \
                 --manifest and --trust-root, so the gate stays closed"
                .to_owned(),
            (true, Some(e)) => {
                format!("no verified manifest yet, so the gate stays closed: {e}")
            }
            (true, None) => "no verified manifest yet, so the gate stays closed".to_owned(),
        }
    }
}

/// The manifest state every handler reads.
#[derive(Clone, Default)]
pub struct ManifestStore {
    status: Arc<RwLock<ManifestStatus>>,
    root: Arc<RwLock<Option<TrustedRoot>>>,
}

impl ManifestStore {
    /// A store for a configured `--manifest`.
    pub fn configured() -> ManifestStore {
        let s = ManifestStore::default();
        s.status.write().expect("manifest lock").configured = true;
        s
    }

    /// The manifest last verified.
    pub fn get(&self) -> Option<Arc<Manifest>> {
        self.status.read().expect("manifest lock").verified.clone()
    }

    /// The newest verified root: its version and expiry.
    pub fn root_expiry(&self) -> Option<(u64, DateTime<Utc>)> {
        let r = self.root.read().expect("manifest lock");
        r.as_ref().map(|r| (r.version(), r.root().expires))
    }

    /// Everything known.
    pub fn status(&self) -> ManifestStatus {
        self.status.read().expect("manifest lock").clone()
    }

    fn accept(&self, m: Manifest, digest: String, root: TrustedRoot) {
        let mut s = self.status.write().expect("manifest lock");
        s.verified = Some(Arc::new(m));
        s.digest = Some(digest);
        s.verified_at = Some(Utc::now());
        s.error = None;
        *self.root.write().expect("manifest lock") = Some(root);
    }

    fn refuse(&self, e: String) {
        self.status.write().expect("manifest lock").error = Some(e);
    }

    /// Reads and verifies `source` once; on success the manifest replaces
    /// the current one, otherwise the current one is kept and the error
    /// recorded (and returned).
    pub async fn refresh(&self, source: &Source, anchor: &TrustedRoot) -> Result<u64, String> {
        let start = self
            .root
            .read()
            .expect("manifest lock")
            .clone()
            .filter(|r| r.version() > anchor.version())
            .unwrap_or_else(|| anchor.clone());
        let (highest, digest) = {
            let s = self.status.read().expect("manifest lock");
            (s.verified.as_ref().map(|m| m.serial), s.digest.clone())
        };
        let result = match tokio::time::timeout(REFRESH_DEADLINE, source.load(start)).await {
            Ok(r) => r,
            Err(_) => Err(format!(
                "{}: not read and verified within {} s",
                source.manifest,
                REFRESH_DEADLINE.as_secs()
            )),
        }
        .and_then(|v| {
            let serial = v.manifest.serial;
            match highest {
                Some(h) if serial < h => Err(format!(
                    "{}: serial {serial} is below serial {h}, already verified (a replay)",
                    source.manifest
                )),
                Some(h) if serial == h && digest.as_deref() != Some(v.digest.as_str()) => {
                    Err(format!(
                        "{}: serial {serial} again, with another payload than the one verified",
                        source.manifest
                    ))
                }
                _ => Ok(v),
            }
        });
        match result {
            Ok(v) => {
                let serial = v.manifest.serial;
                self.accept(v.manifest, v.digest, v.root);
                Ok(serial)
            }
            Err(e) => {
                self.refuse(e.clone());
                Err(e)
            }
        }
    }
}

/// Loads the trust root the reporter starts from (a self-signed root, as
/// shipped to agents).
pub fn load_trust_root(path: &Path) -> Result<TrustedRoot, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    Envelope::from_json(&bytes)
        .and_then(|env| TrustedRoot::from_anchor(&env))
        .map_err(|e| format!("{}: not a trust root: {e}", path.display()))
}

/// Where the manifest and its roots are read from.
#[derive(Clone, Debug)]
pub struct Source {
    /// As given: a path or an http(s) URL.
    pub manifest: String,
    http: Option<reqwest::Client>,
}

/// What [`Source::load`] verified.
struct Loaded {
    manifest: Manifest,
    digest: String,
    root: TrustedRoot,
}

impl Source {
    /// A source for `--manifest`.
    pub fn new(manifest: &str) -> Result<Source, String> {
        let http = if is_url(manifest) {
            Some(
                reqwest::Client::builder()
                    .connect_timeout(CONNECT_TIMEOUT)
                    .read_timeout(READ_TIMEOUT)
                    .timeout(REFRESH_DEADLINE)
                    .build()
                    .map_err(|e| format!("{manifest}: {e}"))?,
            )
        } else {
            None
        };
        Ok(Source {
            manifest: manifest.to_owned(),
            http,
        })
    }

    /// Where `root/<n>.root.json` is: next to the manifest, or next to its
    /// `signed/` directory.
    pub fn root_location(&self, n: u64) -> String {
        let dir = match self.manifest.rsplit_once('/') {
            Some((dir, _)) => dir,
            None => ".",
        };
        let dir = match dir.rsplit_once('/') {
            Some((up, "signed")) => up,
            None if dir == "signed" => ".",
            _ => dir,
        };
        format!("{dir}/root/{n}.root.json")
    }

    async fn read(&self, location: &str) -> Result<Option<Vec<u8>>, String> {
        match &self.http {
            Some(c) => fetch_capped(c, location).await,
            None => read_file_capped(Path::new(location)).await,
        }
    }

    async fn load(&self, start: TrustedRoot) -> Result<Loaded, String> {
        let envelope = self
            .read(&self.manifest)
            .await?
            .ok_or_else(|| format!("{}: not found", self.manifest))?;
        // Roots are read ahead (the walk itself is synchronous).
        let mut roots: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
        let first = start.version() + 1;
        for n in first..first + MAX_ROOTS_PER_WALK {
            match self.read(&self.root_location(n)).await? {
                Some(b) => {
                    roots.insert(n, b);
                }
                None => break,
            }
        }
        let v = verify_manifest(
            start,
            |n| Ok::<_, String>(roots.remove(&n)),
            &envelope,
            Utc::now(),
        )
        .map_err(|e| match e {
            TrustError::Fetch { version, source } => {
                format!("{}: {source}", self.root_location(version))
            }
            TrustError::Rejected { what, source } => {
                format!(
                    "{}: refused: {what}: {}",
                    self.manifest,
                    flotilla_protocol::chain_text(&source)
                )
            }
        })?;
        Ok(Loaded {
            manifest: v.manifest,
            digest: v.digest,
            root: v.root,
        })
    }
}

fn is_url(s: &str) -> bool {
    s.starts_with("http://") || s.starts_with("https://")
}

/// GET `url`, at most [`MAX_METADATA`] bytes; 404, 403 and 410 are `None`.
async fn fetch_capped(client: &reqwest::Client, url: &str) -> Result<Option<Vec<u8>>, String> {
    let mut resp = client
        .get(url)
        .send()
        .await
        .map_err(|e| format!("{url}: {}", flotilla_protocol::chain_text(&e)))?;
    if matches!(resp.status().as_u16(), 404 | 403 | 410) {
        return Ok(None);
    }
    if !resp.status().is_success() {
        return Err(format!("{url}: HTTP {}", resp.status()));
    }
    let too_big = || format!("{url}: larger than {MAX_METADATA} bytes");
    if resp.content_length().is_some_and(|l| l > MAX_METADATA) {
        return Err(too_big());
    }
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| {
        format!(
            "{url}: reading the body: {}",
            flotilla_protocol::chain_text(&e)
        )
    })? {
        if (out.len() + chunk.len()) as u64 > MAX_METADATA {
            return Err(too_big());
        }
        out.extend_from_slice(&chunk);
    }
    Ok(Some(out))
}

/// Reads a file, at most [`MAX_METADATA`] bytes; a missing file is `None`.
async fn read_file_capped(path: &Path) -> Result<Option<Vec<u8>>, String> {
    let f = match tokio::fs::File::open(path).await {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let mut out = Vec::new();
    f.take(MAX_METADATA + 1)
        .read_to_end(&mut out)
        .await
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if out.len() as u64 > MAX_METADATA {
        return Err(format!(
            "{}: larger than {MAX_METADATA} bytes",
            path.display()
        ));
    }
    Ok(Some(out))
}

/// Keeps `store` current from `source` until the process ends (the first
/// refresh is the caller's).
pub async fn refresh_loop(
    store: ManifestStore,
    source: Source,
    anchor: TrustedRoot,
    every: Duration,
) {
    let mut tick = tokio::time::interval(every.max(Duration::from_secs(1)));
    tick.tick().await;
    let mut last = store.get().map(|m| m.serial);
    loop {
        tick.tick().await;
        match store.refresh(&source, &anchor).await {
            Ok(serial) => {
                if last != Some(serial) {
                    tracing::info!(serial, "verified manifest loaded");
                }
                last = Some(serial);
            }
            Err(e) => tracing::warn!(error = %e, "manifest refused; keeping the last verified one"),
        }
    }
}

/// What is known about `channel` for `release`: only what the verified
/// manifest says. The pair is *known* when the manifest has the channel and
/// the release (the channel's release, a stepping stone or a pinned one);
/// then the channel's thresholds apply, and for the channel's own release
/// its waves too. Otherwise [`ChannelInfo::missing`] says why the gate is
/// closed.
pub fn channel_info(status: &ManifestStatus, channel: &str, release: &str) -> ChannelInfo {
    let Some(m) = status.verified.as_deref() else {
        return ChannelInfo::missing(status.missing_reason());
    };
    let Some(c) = m.channels.get(channel) else {
        return ChannelInfo::missing(format!(
            "the verified manifest (serial {}) has no channel {channel:?}, so the gate stays closed",
            m.serial
        ));
    };
    if !m.releases.contains_key(release) {
        return ChannelInfo::missing(format!(
            "the verified manifest (serial {}) has no release {release:?} (channel {channel:?} \
             rolls out {}), so the gate stays closed",
            m.serial, c.release
        ));
    }
    let own = c.release.to_string() == release;
    ChannelInfo {
        source: SettingsSource::Manifest,
        max_failure_rate: c.max_failure_rate,
        min_reports: c.min_reports,
        waves: if own {
            c.waves.iter().map(|w| w.name.clone()).collect()
        } else {
            Vec::new()
        },
        wave_function: own.then(|| (c.waves.clone(), c.start)),
        missing: None,
    }
}

/// Whether (`channel`, `release`) is a pair the verified manifest names.
pub fn is_known(manifest: Option<&Manifest>, channel: &str, release: &str) -> bool {
    manifest.is_some_and(|m| m.channels.contains_key(channel) && m.releases.contains_key(release))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roots_are_next_to_the_manifest_or_its_signed_directory() {
        let s = |m: &str| Source {
            manifest: m.into(),
            http: None,
        };
        assert_eq!(
            s("https://u.example/fleet/manifest.json").root_location(2),
            "https://u.example/fleet/root/2.root.json"
        );
        assert_eq!(
            s("/srv/fleet/signed/manifest.json").root_location(3),
            "/srv/fleet/root/3.root.json"
        );
        assert_eq!(
            s("signed/manifest.json").root_location(3),
            "./root/3.root.json"
        );
        assert_eq!(s("manifest.json").root_location(1), "./root/1.root.json");
    }

    #[test]
    fn nothing_verified_means_closed_with_a_reason() {
        let st = ManifestStatus::default();
        let i = channel_info(&st, "stable", "1.0.0");
        assert!(i.missing.as_deref().unwrap().contains("--trust-root"));
        let st = ManifestStatus {
            configured: true,
            error: Some("bad signature".into()),
            ..Default::default()
        };
        let i = channel_info(&st, "stable", "1.0.0");
        assert!(i.missing.as_deref().unwrap().contains("bad signature"));
    }
}
