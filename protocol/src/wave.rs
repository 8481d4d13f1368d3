//! The wave function: which wave an agent belongs to, and when its turn comes.
//!
//! 1. `bucket = u64_be(SHA-256("flotilla-wave\0" channel "\0" release "\0" agent_id)[0..8]) mod 10000`.
//!    Hashing the release in re-shuffles the fleet for every release, so the
//!    same hosts are not always the canaries.
//! 2. The agent belongs to the first wave whose `percent × 100` exceeds its
//!    bucket; that wave covers buckets `[low, high)`, `low` being the previous
//!    wave's bound.
//! 3. The wave opens at `start + after`; the agent's turn comes at
//!    `open + spread × (bucket − low) / (high − low)`.
//!
//! Step 3 spreads eligibility evenly across each wave's own range. (Bottlerocket
//! multiplies the spread by the absolute bucket, which piles later waves onto
//! their end time; `tests::bottlerocket_formula_is_not_uniform` shows the difference.)

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use crate::sources::Wave;

/// Number of buckets; a percent maps to `percent × 100` buckets.
pub const BUCKETS: u32 = 10_000;

/// The agent's bucket in `0..10000` for a channel's release.
pub fn bucket(channel: &str, release: &str, agent_id: &str) -> u32 {
    let mut h = Sha256::new();
    h.update(b"flotilla-wave\0");
    h.update(channel.as_bytes());
    h.update(b"\0");
    h.update(release.as_bytes());
    h.update(b"\0");
    h.update(agent_id.as_bytes());
    let d = h.finalize();
    let first = u64::from_be_bytes(d[..8].try_into().expect("8 bytes"));
    (first % BUCKETS as u64) as u32
}

/// The upper bucket bound of a cumulative percent.
pub fn bound(percent: f64) -> u32 {
    ((percent * 100.0).round() as u32).min(BUCKETS)
}

/// Where an agent stands in a rollout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Slot {
    /// Index of the wave in the channel's list.
    pub index: usize,
    /// The wave's name.
    pub wave: String,
    /// The agent's bucket.
    pub bucket: u32,
    /// When the wave opens.
    pub opens_at: DateTime<Utc>,
    /// When this agent may install.
    pub eligible_at: DateTime<Utc>,
}

/// Places `bucket` in `waves` of a rollout that started at `start`.
/// Returns `None` only if the waves do not reach the bucket (invalid waves).
pub fn slot(waves: &[Wave], start: DateTime<Utc>, bucket: u32) -> Option<Slot> {
    let mut low = 0u32;
    for (index, w) in waves.iter().enumerate() {
        let high = bound(w.percent);
        if bucket < high {
            let opens_at = start + w.after.to_chrono();
            let width = (high - low).max(1) as u128;
            let spread_ns = w.spread.0.as_nanos();
            let offset_ns = spread_ns * (bucket - low) as u128 / width;
            let offset = chrono::Duration::nanoseconds(offset_ns.min(i64::MAX as u128) as i64);
            return Some(Slot {
                index,
                wave: w.name.clone(),
                bucket,
                opens_at,
                eligible_at: opens_at + offset,
            });
        }
        low = high;
    }
    None
}

/// Kolmogorov–Smirnov distance between samples in `[0, 1]` and the uniform
/// distribution on `[0, 1]`. Sorts `samples`.
pub fn ks_distance_uniform(samples: &mut [f64]) -> f64 {
    samples.sort_by(|a, b| a.total_cmp(b));
    let n = samples.len() as f64;
    let mut d: f64 = 0.0;
    for (i, &x) in samples.iter().enumerate() {
        let lo = i as f64 / n;
        let hi = (i + 1) as f64 / n;
        d = d.max((x - lo).abs()).max((hi - x).abs());
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::duration::HumanDuration;

    fn wave(name: &str, percent: f64, after: u64, spread: u64) -> Wave {
        Wave {
            name: name.into(),
            percent,
            after: HumanDuration::from_secs(after),
            spread: HumanDuration::from_secs(spread),
        }
    }

    fn start() -> DateTime<Utc> {
        "2026-01-01T00:00:00Z".parse().unwrap()
    }

    #[test]
    fn bucket_is_stable_and_in_range() {
        let b = bucket("stable", "1.2.0", "web-01");
        assert_eq!(b, bucket("stable", "1.2.0", "web-01"));
        assert!(b < BUCKETS);
        // a different release reshuffles
        let moved = (0..1000)
            .filter(|i| {
                bucket("stable", "1.2.0", &format!("a{i}"))
                    != bucket("stable", "1.3.0", &format!("a{i}"))
            })
            .count();
        assert!(moved > 990, "{moved}");
    }

    #[test]
    fn slot_boundaries() {
        let waves = [wave("canary", 5.0, 0, 3600), wave("all", 100.0, 86_400, 0)];
        let s = slot(&waves, start(), 0).unwrap();
        assert_eq!((s.index, s.eligible_at), (0, start()));
        let s = slot(&waves, start(), 499).unwrap();
        assert_eq!(s.index, 0);
        assert_eq!(
            s.eligible_at,
            start() + chrono::Duration::nanoseconds(3_600_000_000_000 * 499 / 500)
        );
        let s = slot(&waves, start(), 500).unwrap();
        assert_eq!(
            (s.index, s.eligible_at),
            (1, start() + chrono::Duration::days(1))
        );
        assert_eq!(slot(&waves, start(), 9_999).unwrap().index, 1);
        assert!(slot(&[wave("half", 50.0, 0, 0)], start(), 5_000).is_none());
    }

    /// Over 100,000 synthetic agents every wave receives its share within 0.5
    /// percentage points.
    #[test]
    fn wave_shares_within_half_a_point() {
        let waves = crate::sources::standard_waves();
        let n = 100_000;
        let mut counts = vec![0u32; waves.len()];
        for i in 0..n {
            let b = bucket("stable", "1.2.0", &format!("host-{i:06}"));
            counts[slot(&waves, start(), b).unwrap().index] += 1;
        }
        let mut low = 0.0;
        for (w, c) in waves.iter().zip(&counts) {
            let want = w.percent - low;
            let got = *c as f64 * 100.0 / n as f64;
            assert!((got - want).abs() < 0.5, "{}: {got:.3}% vs {want}%", w.name);
            low = w.percent;
        }
    }

    fn offsets_per_wave(
        waves: &[Wave],
        n: usize,
        formula: impl Fn(&Wave, u32, u32, u32) -> f64,
    ) -> Vec<Vec<f64>> {
        let mut per = vec![Vec::new(); waves.len()];
        for i in 0..n {
            let b = bucket("stable", "1.2.0", &format!("host-{i:06}"));
            let s = slot(waves, start(), b).unwrap();
            let low = if s.index == 0 {
                0
            } else {
                bound(waves[s.index - 1].percent)
            };
            let high = bound(waves[s.index].percent);
            per[s.index].push(formula(&waves[s.index], b, low, high));
        }
        per
    }

    /// Within each wave, eligibility times are uniform over
    /// `[open, open + spread]`: Kolmogorov–Smirnov distance < 0.01.
    ///
    /// The KS distance of n truly uniform samples is about 0.87/√n, so a
    /// wave needs well over 10,000 members for 0.01 to test the formula
    /// rather than sampling noise: these waves hold 25%, 25% and 50% of
    /// 100,000 agents.
    #[test]
    fn eligibility_is_uniform_within_each_wave() {
        let waves = [
            wave("canary", 25.0, 0, 3_600),
            wave("early", 50.0, 86_400, 6 * 3_600),
            wave("all", 100.0, 3 * 86_400, 12 * 3_600),
        ];
        let per = offsets_per_wave(&waves, 100_000, |w, b, _, _| {
            let s = slot(&waves, start(), b).unwrap();
            (s.eligible_at - s.opens_at).num_nanoseconds().unwrap() as f64
                / w.spread.0.as_nanos() as f64
        });
        for (w, mut xs) in waves.iter().zip(per) {
            assert!(xs.iter().all(|x| (0.0..=1.0).contains(x)));
            let d = ks_distance_uniform(&mut xs);
            assert!(
                d < 0.01,
                "{}: KS distance {d:.4} over {} agents",
                w.name,
                xs.len()
            );
        }
    }

    /// Bottlerocket's formula (`spread × bucket / high`) is far from uniform
    /// for every wave after the first: what ours avoids.
    #[test]
    fn bottlerocket_formula_is_not_uniform() {
        let waves = [
            wave("canary", 25.0, 0, 3_600),
            wave("early", 50.0, 0, 3_600),
            wave("all", 100.0, 0, 3_600),
        ];
        let per = offsets_per_wave(&waves, 100_000, |_, b, _, high| b as f64 / high as f64);
        let mut later = per[2].clone();
        let d = ks_distance_uniform(&mut later);
        assert!(d > 0.4, "bottlerocket KS {d}");
    }
}
