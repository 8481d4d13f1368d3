//! A token bucket per agent for `POST /api/v1/events`: `burst` requests at
//! once, refilled at `per_second`. A flooding agent gets 429 with
//! `Retry-After`; the others are unaffected.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::settings::RateLimit;

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// The buckets.
pub struct RateLimiter {
    limit: RateLimit,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl RateLimiter {
    /// Buckets with `limit`.
    pub fn new(limit: RateLimit) -> RateLimiter {
        RateLimiter {
            limit,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one request from `key`'s bucket, or says how long to wait.
    pub fn check(&self, key: &str) -> Result<(), Duration> {
        self.check_at(key, Instant::now())
    }

    fn check_at(&self, key: &str, now: Instant) -> Result<(), Duration> {
        let RateLimit { per_second, burst } = self.limit;
        let mut map = self.buckets.lock().expect("rate limit lock");
        let b = map.entry(key.to_owned()).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * per_second).min(burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else if per_second > 0.0 {
            Err(Duration::from_secs_f64(
                ((1.0 - b.tokens) / per_second).min(3600.0),
            ))
        } else {
            Err(Duration::from_secs(3600))
        }
    }

    /// Forgets buckets that are full again (idle agents), keeping memory
    /// bounded by the agents active lately.
    pub fn forget_full(&self) {
        let RateLimit { per_second, burst } = self.limit;
        let now = Instant::now();
        self.buckets
            .lock()
            .expect("rate limit lock")
            .retain(|_, b| {
                b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * per_second < burst
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refill() {
        let r = RateLimiter::new(RateLimit {
            per_second: 2.0,
            burst: 3.0,
        });
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(r.check_at("a", t0).is_ok());
        }
        let wait = r.check_at("a", t0).unwrap_err();
        assert!(wait <= Duration::from_millis(500) && wait > Duration::ZERO);
        assert!(r.check_at("b", t0).is_ok(), "other agents are unaffected");
        assert!(r.check_at("a", t0 + Duration::from_millis(600)).is_ok());
    }
}
