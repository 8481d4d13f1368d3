//! Channel settings: where the gate's thresholds and the waves come from.
//!
//! 1. The copy of the signed manifest given with `--manifest PATH|URL`
//!    (re-read every `manifest_refresh`). Either the DSSE envelope
//!    (`signed/manifest.json`; its payload is decoded, **not verified**:
//!    the reporter holds no trust root, and the gate can only stop updates)
//!    or the bare compiled manifest JSON. When it names the channel, its
//!    `max_failure_rate`, `min_reports` and waves are used, and agents'
//!    waves are computed with the shared wave function.
//! 2. Otherwise, what agents reported in `details` (`max_failure_rate`,
//!    `min_reports`, `waves`; see [`flotilla_protocol::api::details`]) for
//!    that channel and release, the newest report winning; failing that,
//!    for the channel's newest release that has any.
//! 3. Otherwise nothing is known: the gate stays open.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use base64::Engine;
use flotilla_protocol::api::SettingsSource;
use flotilla_protocol::{Manifest, MANIFEST_PAYLOAD_TYPE};

use crate::db::queries::ReportedSettings;
use crate::rollout::ChannelInfo;

/// Largest manifest read, in bytes.
const MAX_MANIFEST: u64 = 16 * 1024 * 1024;

/// The latest manifest copy, if any.
#[derive(Clone, Default)]
pub struct ManifestStore {
    current: Arc<RwLock<Option<Arc<Manifest>>>>,
}

impl ManifestStore {
    /// The manifest last loaded.
    pub fn get(&self) -> Option<Arc<Manifest>> {
        self.current.read().expect("manifest lock").clone()
    }

    /// Replaces it.
    pub fn set(&self, m: Manifest) {
        *self.current.write().expect("manifest lock") = Some(Arc::new(m));
    }
}

/// Parses a manifest copy: a DSSE envelope or the compiled manifest.
pub fn parse_manifest(bytes: &[u8]) -> Result<Manifest, String> {
    let v: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    if let (Some(pt), Some(payload)) = (
        v.get("payloadType").and_then(|p| p.as_str()),
        v.get("payload").and_then(|p| p.as_str()),
    ) {
        if pt != MANIFEST_PAYLOAD_TYPE {
            return Err(format!(
                "payloadType is {pt:?}, expected {MANIFEST_PAYLOAD_TYPE:?}"
            ));
        }
        let raw = base64::engine::general_purpose::STANDARD
            .decode(payload)
            .map_err(|e| format!("payload: {e}"))?;
        return Manifest::from_payload(&raw).map_err(|e| format!("payload: {e}"));
    }
    serde_json::from_value(v).map_err(|e| e.to_string())
}

/// Reads a manifest copy from a path or an http(s) URL.
pub async fn load(source: &str) -> Result<Manifest, String> {
    let bytes = if source.starts_with("http://") || source.starts_with("https://") {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()
            .map_err(|e| e.to_string())?;
        let resp = client
            .get(source)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| format!("{source}: {e}"))?;
        if resp.content_length().is_some_and(|l| l > MAX_MANIFEST) {
            return Err(format!("{source}: larger than {MAX_MANIFEST} bytes"));
        }
        let b = resp.bytes().await.map_err(|e| format!("{source}: {e}"))?;
        if b.len() as u64 > MAX_MANIFEST {
            return Err(format!("{source}: larger than {MAX_MANIFEST} bytes"));
        }
        b.to_vec()
    } else {
        tokio::fs::read(source)
            .await
            .map_err(|e| format!("{source}: {e}"))?
    };
    parse_manifest(&bytes).map_err(|e| format!("{source}: {e}"))
}

/// Keeps `store` current from `source` until the process ends.
pub async fn refresh_loop(store: ManifestStore, source: String, every: Duration) {
    let mut tick = tokio::time::interval(every.max(Duration::from_secs(1)));
    loop {
        tick.tick().await;
        match load(&source).await {
            Ok(m) => {
                let serial = m.serial;
                let newer = store.get().is_none_or(|old| old.serial != serial);
                store.set(m);
                if newer {
                    tracing::info!(serial, "manifest loaded");
                }
            }
            Err(e) => tracing::warn!(error = %e, "manifest not loaded; keeping the last one"),
        }
    }
}

/// What is known about `channel` for `release`, per the order above.
pub fn channel_info(
    manifest: Option<&Manifest>,
    reported: Option<ReportedSettings>,
    channel: &str,
    release: &str,
) -> ChannelInfo {
    // A manifest copy speaks for the rollout it names; for any other release
    // (a stale copy, or the gate of an older rollout) agents' reports decide.
    if let Some(c) = manifest
        .and_then(|m| m.channels.get(channel))
        .filter(|c| c.release.to_string() == release)
    {
        let names = c.waves.iter().map(|w| w.name.clone()).collect();
        return ChannelInfo {
            source: SettingsSource::Manifest,
            max_failure_rate: c.max_failure_rate,
            min_reports: c.min_reports,
            waves: names,
            wave_function: Some((c.waves.clone(), c.start)),
        };
    }
    match reported {
        Some(r) => ChannelInfo {
            source: if r.max_failure_rate.is_some() || r.min_reports.is_some() {
                SettingsSource::Agents
            } else {
                SettingsSource::Unknown
            },
            max_failure_rate: r.max_failure_rate,
            min_reports: r.min_reports,
            waves: r.waves.unwrap_or_default(),
            wave_function: None,
        },
        None => ChannelInfo::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_payload_is_decoded() {
        let now = chrono::Utc::now();
        let m = Manifest {
            fleet: "f".into(),
            serial: 3,
            issued: now,
            expires: now,
            artifact_base_urls: vec![],
            reporter_url: None,
            releases: Default::default(),
            channels: Default::default(),
            pins: vec![],
        };
        let env = serde_json::json!({
            "payloadType": MANIFEST_PAYLOAD_TYPE,
            "payload": base64::engine::general_purpose::STANDARD.encode(m.to_payload()),
            "signatures": [],
        });
        let back = parse_manifest(env.to_string().as_bytes()).unwrap();
        assert_eq!(back.serial, 3);
        assert_eq!(parse_manifest(&m.to_payload()).unwrap().serial, 3);
        let bad = serde_json::json!({"payloadType": "x", "payload": ""});
        assert!(parse_manifest(bad.to_string().as_bytes()).is_err());
    }
}
