//! Benchmark `fleet_sim_100k`: the decision (pins, channel, wave function,
//! stepping stones) over 100,000 simulated agents against the standard
//! 3-wave channel.
//!
//! Prints `BENCH fleet_sim_100k decide_us_per_agent= wave_share_max_err_pp= spread_ks=`:
//! the mean time of one `decide` call; the largest difference, in
//! percentage points, between a wave's share of the fleet and its declared
//! share; the largest Kolmogorov-Smirnov distance between a wave's
//! eligibility times and the uniform distribution over its spread.

use std::collections::BTreeMap;
use std::time::Instant;

use chrono::{DateTime, Duration, Utc};
use flotilla_agent::decide::{decide, Agent, Decision, DeferReason};
use flotilla_protocol::sources::standard_waves;
use flotilla_protocol::wave::ks_distance_uniform;
use flotilla_protocol::{Manifest, Sources};

const N: usize = 100_000;
const T: &str = "x86_64-unknown-linux-gnu";

fn main() {
    let sha = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    let rel = |v: &str| {
        (
            format!("releases/{v}.toml").into(),
            format!("version = \"{v}\"\n[artifacts.{T}]\npath = \"a/{v}\"\nsha256 = \"{sha}\"\nsize = 1\n"),
        )
    };
    let mut channel = String::from("release = \"2.0.0\"\nstart = \"2026-03-01T00:00:00Z\"\n");
    for w in standard_waves() {
        channel += &format!(
            "[[waves]]\nname = \"{}\"\npercent = {}\nafter = \"{}\"\nspread = \"{}\"\n",
            w.name, w.percent, w.after, w.spread
        );
    }
    let sources = Sources::from_files(vec![
        ("fleet.toml".into(), "name = \"sim\"\n".to_string()),
        rel("1.0.0"),
        rel("2.0.0"),
        ("channels/stable.toml".into(), channel),
        (
            "pins.toml".into(),
            "[[pin]]\nlabels = { role = \"db\" }\nrelease = \"1.0.0\"\n".into(),
        ),
    ])
    .expect("sources");
    let start: DateTime<Utc> = "2026-03-01T00:00:00Z".parse().unwrap();
    let m = Manifest::compile(&sources, 1, start, start + Duration::days(30));
    let waves = m.channels["stable"].waves.clone();
    let ids: Vec<String> = (0..N).map(|i| format!("host-{i:06}")).collect();
    let labels = BTreeMap::new();
    let version: semver::Version = "1.0.0".parse().unwrap();
    // Far in the future: every agent's slot is known and eligible.
    let late = start + Duration::days(30);
    let t0 = Instant::now();
    let mut per_wave: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for id in &ids {
        let d = decide(
            &m,
            &Agent {
                id,
                channel: "stable",
                labels: &labels,
                version: &version,
                target: T,
                blocked: None,
            },
            late,
        );
        match d {
            Decision::Update(p) => {
                let w = waves
                    .iter()
                    .find(|w| Some(&w.name) == p.wave.as_ref())
                    .unwrap();
                let open = start + w.after.to_chrono();
                let spread = w.spread.0.as_secs_f64();
                let at = p.eligible_at.unwrap();
                let x = if spread == 0.0 {
                    0.0
                } else {
                    (at - open).num_milliseconds() as f64 / 1000.0 / spread
                };
                per_wave.entry(w.name.clone()).or_default().push(x);
            }
            Decision::Defer(d) if d.reason == DeferReason::WaveNotOpen => unreachable!(),
            other => panic!("{id}: {other:?}"),
        }
    }
    let us = t0.elapsed().as_secs_f64() * 1e6 / N as f64;
    let mut low = 0.0;
    let mut max_err: f64 = 0.0;
    let mut max_ks: f64 = 0.0;
    for w in &waves {
        let xs = per_wave.get_mut(&w.name).unwrap();
        let share = xs.len() as f64 * 100.0 / N as f64;
        max_err = max_err.max((share - (w.percent - low)).abs());
        low = w.percent;
        if !w.spread.0.is_zero() {
            max_ks = max_ks.max(ks_distance_uniform(xs));
        }
    }
    println!(
        "BENCH fleet_sim_100k decide_us_per_agent={us:.3} wave_share_max_err_pp={max_err:.3} spread_ks={max_ks:.4}"
    );
}
