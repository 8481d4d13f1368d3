//! The state every handler shares.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Redirect, Response};
use flotilla_protocol::api::{Gate, RolloutProgress};

use crate::channels::{self, ManifestStore};
use crate::db::DbError;
use crate::metrics::Metrics;
use crate::notify::Notifier;
use crate::ratelimit::RateLimiter;
use crate::rollout::{self, ChannelInfo};
use crate::settings::Settings;
use crate::store::Store;
use crate::web::session::{cookie_value, Sessions, WebSession};

/// Cheap to clone.
#[derive(Clone)]
pub struct AppState(pub Arc<Inner>);

/// See [`AppState`].
pub struct Inner {
    /// The settings.
    pub settings: Settings,
    /// The database.
    pub store: Store,
    /// This reporter among the replicas sharing a database: the holder
    /// named in the leases it takes (host, process id and a random part).
    pub replica: String,
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
    /// Outgoing notifications.
    pub notifier: Notifier,
    /// Check-ins waiting to be written.
    pub checkins: crate::checkin::CheckIns,
    /// The active manual halts.
    pub halts: crate::halts::Board,
    gates: Cache<Gate>,
    rollouts: Cache<RolloutProgress>,
}

/// Most gates (and as many rollouts) kept in memory.
pub const MAX_CACHED: usize = 256;

type Cache<T> = Mutex<HashMap<(String, String), (Instant, T)>>;

fn cached<T: Clone>(cache: &Cache<T>, key: &(String, String), ttl: Duration) -> Option<T> {
    let c = cache.lock().expect("cache");
    c.get(key)
        .filter(|(at, _)| at.elapsed() < ttl)
        .map(|(_, v)| v.clone())
}

fn remember<T>(cache: &Cache<T>, key: (String, String), value: T, ttl: Duration) {
    let mut c = cache.lock().expect("cache");
    if c.len() >= MAX_CACHED && !c.contains_key(&key) {
        c.retain(|_, (at, _)| at.elapsed() < ttl);
        if c.len() >= MAX_CACHED {
            c.clear();
        }
    }
    c.insert(key, (Instant::now(), value));
}

/// See [`Inner::replica`].
fn replica_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default();
    let random = &crate::tokens::random_hex256()[..8];
    format!("{host}:{}:{random}", std::process::id())
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    /// Builds the state.
    pub fn new(settings: Settings, store: Store, manifest: ManifestStore) -> AppState {
        AppState(Arc::new(Inner {
            limiter: RateLimiter::new(settings.rate_limit),
            sessions: Sessions::new(settings.session_ttl),
            enroll_limiter: RateLimiter::new(settings.enroll_rate_limit),
            auth_limiter: RateLimiter::new(settings.auth_failure_limit),
            notifier: Notifier::new(settings.notify.clone()),
            settings,
            store,
            replica: replica_id(),
            metrics: Metrics::default(),
            manifest,
            checkins: Default::default(),
            halts: Default::default(),
            gates: Mutex::new(HashMap::new()),
            rollouts: Mutex::new(HashMap::new()),
        }))
    }

    fn channel_info(&self, channel: &str, release: &str) -> ChannelInfo {
        channels::channel_info(&self.manifest.status(), channel, release)
    }

    /// Only pairs the verified manifest names are cached (anyone with a
    /// token can ask about any name), and at most [`MAX_CACHED`] of them.
    fn cacheable(&self, channel: &str, release: &str) -> bool {
        channels::is_known(self.manifest.get().as_deref(), channel, release)
    }

    /// The gate of a channel's release (reused for `rollout_cache`), closed
    /// by an operator's halt if one holds ([`crate::halts::apply`]).
    pub async fn gate(&self, channel: &str, release: &str) -> Result<Gate, DbError> {
        let g = self.computed_gate(channel, release).await?;
        Ok(crate::halts::apply(g, self.halts.find(channel, release)))
    }

    /// The gate as the failure rate and the manifest make it.
    async fn computed_gate(&self, channel: &str, release: &str) -> Result<Gate, DbError> {
        let key = (channel.to_owned(), release.to_owned());
        if let Some(g) = cached(&self.gates, &key, self.settings.rollout_cache) {
            return Ok(g);
        }
        let info = self.channel_info(channel, release);
        let (c, r) = key.clone();
        let counts = self.store.release_state_counts(c, r).await?;
        let g = rollout::gate(channel, release, &counts, &info);
        if self.cacheable(channel, release) {
            self.notifier.observe_gate(&self.store, &g);
            remember(&self.gates, key, g.clone(), self.settings.rollout_cache);
        }
        Ok(g)
    }

    /// Rollout progress of a channel's release (reused for `rollout_cache`),
    /// its gate closed by an operator's halt if one holds.
    pub async fn rollout(&self, channel: &str, release: &str) -> Result<RolloutProgress, DbError> {
        let mut p = self.computed_rollout(channel, release).await?;
        p.gate = crate::halts::apply(p.gate, self.halts.find(channel, release));
        Ok(p)
    }

    async fn computed_rollout(
        &self,
        channel: &str,
        release: &str,
    ) -> Result<RolloutProgress, DbError> {
        let key = (channel.to_owned(), release.to_owned());
        if let Some(p) = cached(&self.rollouts, &key, self.settings.rollout_cache) {
            return Ok(p);
        }
        let info = self.channel_info(channel, release);
        let (c, r) = key.clone();
        let rows = self.store.rollout_rows(c, r).await?;
        let stale = self.settings.stale_after.as_micros() as i64;
        let p = rollout::progress(
            channel,
            release,
            &rows,
            &info,
            crate::db::now_micros(),
            stale,
            self.halts.find(channel, release).is_some(),
        );
        if self.cacheable(channel, release) {
            self.notifier.observe_gate(&self.store, &p.gate);
            remember(&self.rollouts, key, p.clone(), self.settings.rollout_cache);
        }
        Ok(p)
    }

    /// Agents not heard from since this (µs) are "not reporting".
    pub fn stale_before(&self) -> i64 {
        crate::db::now_micros() - self.settings.stale_after.as_micros() as i64
    }

    /// Each channel's current release: the verified manifest's (nothing
    /// without one; agents' reports never name a rollout).
    pub fn current_rollouts(&self) -> Vec<(String, String)> {
        self.manifest
            .get()
            .map(|m| {
                m.channels
                    .iter()
                    .map(|(name, c)| (name.clone(), c.release.to_string()))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// A request's admin session; without one, a redirect to the login page.
impl FromRequestParts<AppState> for WebSession {
    type Rejection = Response;
    async fn from_request_parts(parts: &mut Parts, st: &AppState) -> Result<Self, Response> {
        let Some(c) = cookie_value(&parts.headers) else {
            return Err(Redirect::to("/login").into_response());
        };
        match st.sessions.get(&st.store, &c).await {
            Ok(Some(s)) => Ok(s),
            Ok(None) => Err(Redirect::to("/login").into_response()),
            Err(e) => Err(crate::error::AppError::from(e).into_response()),
        }
    }
}
