//! Token buckets by key: per agent for `POST /api/v1/events`, per client
//! address for enrollment and for failed authentications. `burst` requests
//! at once, refilled at `per_second`. A flooding key gets 429 with
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

    /// Whether `key` has a request left, without taking it (for limits
    /// that count only failures: look first, [`check`](Self::check) on failure).
    pub fn peek(&self, key: &str) -> Result<(), Duration> {
        self.take_at(key, Instant::now(), false)
    }

    fn check_at(&self, key: &str, now: Instant) -> Result<(), Duration> {
        self.take_at(key, now, true)
    }

    fn take_at(&self, key: &str, now: Instant, take: bool) -> Result<(), Duration> {
        let RateLimit { per_second, burst } = self.limit;
        let mut map = self.buckets.lock().expect("rate limit lock");
        let Some(b) = map.get_mut(key) else {
            if take {
                map.insert(
                    key.to_owned(),
                    Bucket {
                        tokens: burst - 1.0,
                        at: now,
                    },
                );
            }
            return if burst >= 1.0 {
                Ok(())
            } else {
                Err(Duration::from_secs(3600))
            };
        };
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * per_second).min(burst);
        b.at = now;
        if b.tokens >= 1.0 {
            if take {
                b.tokens -= 1.0;
            }
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
        // peeking takes nothing
        for _ in 0..10 {
            assert!(r.peek("c").is_ok());
        }
        assert!(r.buckets.lock().unwrap().get("c").is_none());
    }
}
