//! Load generator for `scripts/bench.d/40-reporter.sh` (runs in its own
//! process, against a `flotilla-reporter serve` on loopback).
//!
//! - `ingest`: enrolls agents, posts batches of `--batch` events from
//!   `--concurrency` connections as fast as the reporter acknowledges them;
//!   prints events/s.
//! - `raw`: the same rows into a fresh database with the reporter's schema
//!   and pragmas, by a plain prepared `INSERT` in transactions of `--batch`
//!   rows, each transaction one agent's (as each HTTP batch is); prints
//!   rows/s. The baseline for `ingest`.
//! - `latency`: an open-loop load of `--rate` batches/s of `--batch` events
//!   for `--secs`; latency is measured from each request's *scheduled* time
//!   (no coordinated omission); prints p50/p99 and the server's RSS (at
//!   the start, the end, and its maximum sampled every second; every minute
//!   a line on stderr). With `--checkin-rate N`, the same agents also check
//!   in (`POST /api/v1/checkin`) at N/s, open loop as well, and the
//!   check-ins' own p50/p99 are printed too (`checkin_p50_ms=`).

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use flotilla_protocol::api::{EnrollRequest, EnrollResponse};
use flotilla_protocol::{Event, EventKind, EventStatus};

#[derive(Parser)]
enum Cmd {
    Ingest {
        #[arg(long)]
        url: String,
        #[arg(long)]
        enroll_token: String,
        #[arg(long, default_value_t = 64)]
        agents: usize,
        #[arg(long, default_value_t = 100)]
        batch: usize,
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
        #[arg(long, default_value_t = 10.0)]
        secs: f64,
    },
    Raw {
        #[arg(long)]
        db: PathBuf,
        #[arg(long, default_value_t = 100)]
        batch: usize,
        #[arg(long, default_value_t = 500_000)]
        rows: usize,
    },
    Latency {
        #[arg(long)]
        url: String,
        #[arg(long)]
        enroll_token: String,
        #[arg(long, default_value_t = 1000)]
        agents: usize,
        #[arg(long, default_value_t = 20)]
        batch: usize,
        #[arg(long, default_value_t = 1100.0)]
        rate: f64,
        #[arg(long, default_value_t = 20.0)]
        secs: f64,
        #[arg(long)]
        server_pid: Option<u32>,
        #[arg(long, default_value_t = 0.0)]
        checkin_rate: f64,
    },
}

/// A pass's check-in, as an agent waiting for its wave sends it.
const CHECKIN: &[u8] = br#"{"state":"waiting","reason":"update deferred: 1.5.0: this agent's turn in its wave has not come (turn at 2030-01-01 14:00:00 UTC)","release":"1.5.0","wave":"all","until":"2030-01-01T14:00:00Z","version":"1.4.2","channel":"stable"}"#;

async fn checkin(http: &reqwest::Client, url: &str, token: &str) {
    let r = http
        .post(format!("{url}/api/v1/checkin"))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(CHECKIN)
        .send()
        .await
        .expect("check-in");
    assert_eq!(r.status(), 202, "{}", r.text().await.unwrap_or_default());
    let _ = r.bytes().await;
}

/// Open-loop check-ins at `rate`/s for `secs`: their latencies, ms.
async fn checkins(
    http: reqwest::Client,
    url: String,
    agents: Arc<Vec<(String, String)>>,
    rate: f64,
    secs: f64,
) -> Vec<f64> {
    let total = (rate * secs) as usize;
    let interval = Duration::from_secs_f64(1.0 / rate);
    let start = tokio::time::Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let mut lat = Vec::with_capacity(total);
    for i in 0..total {
        let at = start + interval * i as u32;
        tokio::time::sleep_until(at).await;
        let (http, url, agents) = (http.clone(), url.clone(), agents.clone());
        tasks.spawn(async move {
            let (_, t) = &agents[(i * 7 + 3) % agents.len()];
            checkin(&http, &url, t).await;
            at.elapsed().as_secs_f64() * 1000.0
        });
        while let Some(r) = tasks.try_join_next() {
            lat.push(r.unwrap());
        }
    }
    while let Some(r) = tasks.join_next().await {
        lat.push(r.unwrap());
    }
    lat.sort_by(|a, b| a.total_cmp(b));
    lat
}

/// A realistic event: a manifest check with a little context.
fn make_event(agent: &str, i: usize) -> Event {
    let mut e = Event::new(
        agent,
        EventKind::ManifestCheck,
        EventStatus::Success,
        "manifest",
        format!("manifest serial {i} accepted, nothing to do"),
    );
    e.channel = Some("stable".into());
    e.wave = Some("all".into());
    e.details.insert("agent_version".into(), "1.4.2".into());
    e.details.insert("serial".into(), (i as u64).into());
    e.details.insert(
        "source".into(),
        "https://git.example.com/ops/fleet.git".into(),
    );
    e
}

async fn enroll(http: &reqwest::Client, url: &str, token: &str, n: usize) -> Vec<(String, String)> {
    let mut out = Vec::with_capacity(n);
    let mut tasks = tokio::task::JoinSet::new();
    let run = std::process::id();
    for i in 0..n {
        let (http, url, token) = (http.clone(), url.to_owned(), token.to_owned());
        tasks.spawn(async move {
            let id = format!("bench-{run}-{i:06}");
            let r = http
                .post(format!("{url}/api/v1/enroll"))
                .json(&EnrollRequest {
                    enrollment_token: token,
                    agent_id: id.clone(),
                    labels: Default::default(),
                    version: Some("1.4.2".into()),
                    channel: Some("stable".into()),
                    agent_token: None,
                })
                .send()
                .await
                .expect("enroll");
            assert!(r.status().is_success(), "enroll: {}", r.status());
            let t = r.json::<EnrollResponse>().await.unwrap().agent_token;
            (id, t)
        });
        if tasks.len() >= 32 {
            out.push(tasks.join_next().await.unwrap().unwrap());
        }
    }
    while let Some(r) = tasks.join_next().await {
        out.push(r.unwrap());
    }
    out
}

/// A batch body, written by hand (not through serde) so the load generator
/// spends little CPU on the machine it shares with the reporter. The events
/// are those of [`make_event`], each with a fresh UUIDv7.
fn body(agent: &str, batch: usize, seq: usize) -> Vec<u8> {
    use std::io::Write;
    let ts = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let mut out = Vec::with_capacity(batch * 420 + 16);
    out.extend_from_slice(b"{\"events\":[");
    for i in 0..batch {
        if i > 0 {
            out.push(b',');
        }
        let n = seq * batch + i;
        write!(
            out,
            "{{\"id\":\"{}\",\"agent_id\":\"{agent}\",\"ts\":\"{ts}\",\"kind\":\"manifest_check\",\
             \"status\":\"success\",\"severity\":\"info\",\"component\":\"manifest\",\
             \"message\":\"manifest serial {n} accepted, nothing to do\",\"channel\":\"stable\",\
             \"wave\":\"all\",\"details\":{{\"agent_version\":\"1.4.2\",\"serial\":{n},\
             \"source\":\"https://git.example.com/ops/fleet.git\"}}}}",
            uuid::Uuid::now_v7().hyphenated()
        )
        .unwrap();
    }
    out.extend_from_slice(b"]}");
    out
}

async fn post(http: &reqwest::Client, url: &str, token: &str, body: Vec<u8>) {
    let r = http
        .post(format!("{url}/api/v1/events"))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
    let _ = r.bytes().await;
}

fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

#[cfg(test)]
mod tests {
    #[test]
    fn hand_written_body_parses() {
        let b = super::body("a", 3, 7);
        let v: flotilla_protocol::api::EventBatch = serde_json::from_slice(&b).unwrap();
        assert_eq!(v.events.len(), 3);
        assert!(v.events.iter().all(|e| e.validate().is_ok()));
    }
}

#[tokio::main]
async fn main() {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()
        .unwrap();
    match Cmd::parse() {
        Cmd::Ingest {
            url,
            enroll_token,
            agents,
            batch,
            concurrency,
            secs,
        } => {
            let agents = Arc::new(enroll(&http, &url, &enroll_token, agents).await);
            // warm up the connections and the database
            for (id, t) in agents.iter().take(concurrency) {
                post(&http, &url, t, body(id, batch, 0)).await;
            }
            let done = Arc::new(AtomicU64::new(0));
            let start = Instant::now();
            let deadline = start + Duration::from_secs_f64(secs);
            let mut tasks = tokio::task::JoinSet::new();
            for w in 0..concurrency {
                let (http, url, agents, done) =
                    (http.clone(), url.clone(), agents.clone(), done.clone());
                tasks.spawn(async move {
                    let mut seq = 1;
                    let mut a = w;
                    while Instant::now() < deadline {
                        let (id, t) = &agents[a % agents.len()];
                        post(&http, &url, t, body(id, batch, seq)).await;
                        done.fetch_add(batch as u64, Ordering::Relaxed);
                        seq += 1;
                        a += concurrency;
                    }
                });
            }
            while tasks.join_next().await.is_some() {}
            let took = start.elapsed().as_secs_f64();
            let n = done.load(Ordering::Relaxed);
            println!(
                "events={n} secs={took:.2} events_per_s={:.0}",
                n as f64 / took
            );
        }
        Cmd::Raw { db, batch, rows } => {
            let conn = flotilla_reporter::db::open_writer(&db, Default::default()).unwrap();
            if let Ok(extra) = std::env::var("RAW_SQL") {
                conn.execute_batch(&extra).unwrap();
            }
            // Like the HTTP load: each transaction holds one agent's batch,
            // 64 agents in turn.
            let events: Vec<Event> = (0..rows)
                .map(|i| make_event(&format!("raw-{:03}", (i / batch) % 64), i))
                .collect();
            let start = Instant::now();
            for chunk in events.chunks(batch) {
                let tx = conn.unchecked_transaction().unwrap();
                {
                    let mut st = tx
                        .prepare_cached(
                            "INSERT INTO events (id, agent_id, ts, kind, status, severity, component,
                                 message, from_version, to_version, channel, wave, details)
                             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
                        )
                        .unwrap();
                    for e in chunk {
                        st.execute(rusqlite::params![
                            e.id.as_bytes().as_slice(),
                            e.agent_id,
                            e.ts.timestamp_micros(),
                            e.kind.as_str(),
                            e.status.as_str(),
                            e.severity.as_str(),
                            e.component,
                            e.message,
                            e.from_version,
                            e.to_version,
                            e.channel,
                            e.wave,
                            serde_json::to_string(&e.details).unwrap(),
                        ])
                        .unwrap();
                    }
                }
                tx.commit().unwrap();
            }
            let took = start.elapsed().as_secs_f64();
            println!(
                "rows={rows} batch={batch} secs={took:.2} rows_per_s={:.0}",
                rows as f64 / took
            );
        }
        Cmd::Latency {
            url,
            enroll_token,
            agents,
            batch,
            rate,
            secs,
            server_pid,
            checkin_rate,
        } => {
            let agents = Arc::new(enroll(&http, &url, &enroll_token, agents).await);
            for (id, t) in agents.iter().take(64) {
                post(&http, &url, t, body(id, batch, 0)).await;
            }
            let rss_start = server_pid.map(rss_mib).unwrap_or(0.0);
            let rss_max = Arc::new(std::sync::Mutex::new(rss_start));
            let sampler = server_pid.map(|pid| {
                let rss_max = rss_max.clone();
                tokio::spawn(async move {
                    let t0 = Instant::now();
                    let mut tick = tokio::time::interval(Duration::from_secs(1));
                    for s in 0u64.. {
                        tick.tick().await;
                        let r = rss_mib(pid);
                        let mut m = rss_max.lock().unwrap();
                        *m = m.max(r);
                        if s > 0 && s % 60 == 0 {
                            eprintln!("t={:.0}s rss_mib={r:.1}", t0.elapsed().as_secs_f64());
                        }
                    }
                })
            });
            let checkin_load = (checkin_rate > 0.0).then(|| {
                tokio::spawn(checkins(
                    http.clone(),
                    url.clone(),
                    agents.clone(),
                    checkin_rate,
                    secs,
                ))
            });
            let total = (rate * secs) as usize;
            let interval = Duration::from_secs_f64(1.0 / rate);
            let start = tokio::time::Instant::now();
            let mut tasks = tokio::task::JoinSet::new();
            let mut lat = Vec::with_capacity(total);
            for i in 0..total {
                let at = start + interval * i as u32;
                tokio::time::sleep_until(at).await;
                let (http, url, agents) = (http.clone(), url.clone(), agents.clone());
                tasks.spawn(async move {
                    let (id, t) = &agents[i % agents.len()];
                    post(&http, &url, t, body(id, batch, i + 1)).await;
                    at.elapsed().as_secs_f64() * 1000.0
                });
                while let Some(r) = tasks.try_join_next() {
                    lat.push(r.unwrap());
                }
            }
            while let Some(r) = tasks.join_next().await {
                lat.push(r.unwrap());
            }
            let achieved = total as f64 / start.elapsed().as_secs_f64();
            let rss_end = server_pid.map(rss_mib).unwrap_or(0.0);
            if let Some(s) = sampler {
                s.abort();
            }
            let rss_max = rss_max.lock().unwrap().max(rss_end);
            lat.sort_by(|a, b| a.total_cmp(b));
            if let Some(c) = checkin_load {
                let c = c.await.unwrap();
                print!(
                    "checkins={} checkin_p50_ms={:.2} checkin_p99_ms={:.2} ",
                    c.len(),
                    percentile(&c, 0.5),
                    percentile(&c, 0.99)
                );
            }
            println!(
                "requests={total} achieved_rate={achieved:.0} p50_ms={:.2} p99_ms={:.2} max_ms={:.2} rss_mib_start={rss_start:.1} rss_mib_end={rss_end:.1} rss_mib_max={rss_max:.1}",
                percentile(&lat, 0.5),
                percentile(&lat, 0.99),
                lat.last().copied().unwrap_or(0.0)
            );
        }
    }
}
