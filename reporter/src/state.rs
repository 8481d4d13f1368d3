//! The state every handler shares.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use flotilla_protocol::api::{Gate, RolloutProgress};

use crate::channels::{self, ManifestStore};
use crate::db::pool::ReadPool;
use crate::db::queries;
use crate::db::writer::Writer;
use crate::db::DbError;
use crate::metrics::Metrics;
use crate::ratelimit::RateLimiter;
use crate::rollout::{self, ChannelInfo};
use crate::settings::Settings;
use crate::web::session::Sessions;

/// Cheap to clone.
#[derive(Clone)]
pub struct AppState(pub Arc<Inner>);

/// See [`AppState`].
pub struct Inner {
    /// The settings.
    pub settings: Settings,
    /// The writer.
    pub writer: Writer,
    /// The readers.
    pub reader: ReadPool,
    /// Metrics.
    pub metrics: Metrics,
    /// Per-agent ingestion limit.
    pub limiter: RateLimiter,
    /// The manifest copy.
    pub manifest: ManifestStore,
    /// Web sessions.
    pub sessions: Sessions,
    /// Enrollments per client address.
    pub enroll_limiter: RateLimiter,
    /// Failed authentications per client address.
    pub auth_limiter: RateLimiter,
    gates: Mutex<HashMap<(String, String), (Instant, Gate)>>,
    rollouts: Mutex<HashMap<(String, String), (Instant, RolloutProgress)>>,
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    /// Builds the state.
    pub fn new(
        settings: Settings,
        writer: Writer,
        reader: ReadPool,
        manifest: ManifestStore,
    ) -> AppState {
        AppState(Arc::new(Inner {
            limiter: RateLimiter::new(settings.rate_limit),
            sessions: Sessions::new(settings.session_ttl),
            enroll_limiter: RateLimiter::new(settings.enroll_rate_limit),
            auth_limiter: RateLimiter::new(settings.auth_failure_limit),
            settings,
            writer,
            reader,
            metrics: Metrics::default(),
            manifest,
            gates: Mutex::new(HashMap::new()),
            rollouts: Mutex::new(HashMap::new()),
        }))
    }

    async fn channel_info(&self, channel: &str, release: &str) -> Result<ChannelInfo, DbError> {
        let manifest = self.manifest.get();
        let reported = if manifest
            .as_ref()
            .is_some_and(|m| m.channels.contains_key(channel))
        {
            None
        } else {
            let (c, r) = (channel.to_owned(), release.to_owned());
            self.reader
                .read(move |conn| queries::reported_settings(conn, &c, &r))
                .await?
        };
        Ok(channels::channel_info(
            manifest.as_deref(),
            reported,
            channel,
            release,
        ))
    }

    /// The gate of a channel's release (reused for `rollout_cache`).
    pub async fn gate(&self, channel: &str, release: &str) -> Result<Gate, DbError> {
        let key = (channel.to_owned(), release.to_owned());
        if let Some((at, g)) = self.gates.lock().expect("gate cache").get(&key) {
            if at.elapsed() < self.settings.rollout_cache {
                return Ok(g.clone());
            }
        }
        let info = self.channel_info(channel, release).await?;
        let (c, r) = key.clone();
        let counts = self
            .reader
            .read(move |conn| queries::release_state_counts(conn, &c, &r))
            .await?;
        let g = rollout::gate(channel, release, &counts, &info);
        self.gates
            .lock()
            .expect("gate cache")
            .insert(key, (Instant::now(), g.clone()));
        Ok(g)
    }

    /// Rollout progress of a channel's release (reused for `rollout_cache`).
    pub async fn rollout(&self, channel: &str, release: &str) -> Result<RolloutProgress, DbError> {
        let key = (channel.to_owned(), release.to_owned());
        if let Some((at, p)) = self.rollouts.lock().expect("rollout cache").get(&key) {
            if at.elapsed() < self.settings.rollout_cache {
                return Ok(p.clone());
            }
        }
        let info = self.channel_info(channel, release).await?;
        let (c, r) = key.clone();
        let rows = self
            .reader
            .read(move |conn| queries::rollout_rows(conn, &c, &r))
            .await?;
        let stale = self.settings.stale_after.as_micros() as i64;
        let p = rollout::progress(
            channel,
            release,
            &rows,
            &info,
            crate::db::now_micros(),
            stale,
        );
        self.rollouts
            .lock()
            .expect("rollout cache")
            .insert(key, (Instant::now(), p.clone()));
        Ok(p)
    }

    /// Each channel's current release: the manifest's, else the newest one
    /// agents reported a rollout state for.
    pub async fn current_rollouts(&self) -> Result<Vec<(String, String)>, DbError> {
        let mut map = self.reader.read(queries::current_releases).await?;
        if let Some(m) = self.manifest.get() {
            for (name, c) in &m.channels {
                map.insert(name.clone(), c.release.to_string());
            }
        }
        Ok(map.into_iter().collect())
    }

    /// Drops cached gates and rollouts (after writes that change them, in tests).
    pub fn forget_cached(&self) {
        self.gates.lock().expect("gate cache").clear();
        self.rollouts.lock().expect("rollout cache").clear();
    }
}
