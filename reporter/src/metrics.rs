//! Prometheus metrics, kept in memory and rendered as text at `/metrics`.
//!
//! Counters: `flotilla_events_ingested_total` (new), `flotilla_events_duplicate_total`,
//! `flotilla_events_rejected_total{reason}`, `flotilla_batches_total`,
//! `flotilla_enrollments_total{result}`, `flotilla_http_requests_total{route,method,status}`;
//! histogram `flotilla_http_request_duration_seconds{route,method}`; gauges
//! computed at scrape time: `flotilla_agents{version}`, `flotilla_agents_reporting`,
//! `flotilla_agents_not_reporting`, `flotilla_gate_max_failure_rate{channel,release}`,
//! `flotilla_gate_closed{channel,release}` and `flotilla_gate_failure_rate{channel,release}`
//! (the verified manifest's channels; the rate only once an agent reported),
//! `flotilla_manifest_serial`, `flotilla_manifest_refused`,
//! `flotilla_manifest_verified_timestamp_seconds` (the last successful
//! refresh, 0: none); notifications: `flotilla_notifications_sent_total{receiver}`,
//! `flotilla_notifications_failed_total{receiver}` (attempts),
//! `flotilla_notifications_dropped_total{receiver,reason}` (`max_attempts`,
//! `max_age`, `max_rows`, `unknown_receiver`) and `flotilla_notifications_queued`.
//! `reporter/dist/alerts.yml` alerts on these; `reporter/dist/grafana-dashboard.json`
//! shows them.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use flotilla_protocol::api::{Gate, GateState};

/// Histogram bucket bounds, in seconds.
const BOUNDS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

#[derive(Default, Clone)]
struct Histogram {
    buckets: [u64; BOUNDS.len()],
    count: u64,
    sum: f64,
}

/// The in-memory metrics.
#[derive(Default)]
pub struct Metrics {
    events_new: AtomicU64,
    events_duplicate: AtomicU64,
    batches: AtomicU64,
    rejected: Mutex<BTreeMap<&'static str, u64>>,
    enrollments: Mutex<BTreeMap<&'static str, u64>>,
    http: Mutex<BTreeMap<(String, String), Histogram>>,
    statuses: Mutex<BTreeMap<(String, String, u16), u64>>,
}

/// Values computed from the database at scrape time.
#[derive(Default)]
pub struct Gauges {
    /// Agents per version.
    pub agents_by_version: Vec<(Option<String>, u64)>,
    /// Agents heard from within `stale_after`.
    pub agents_reporting: u64,
    /// Enrolled agents not heard from within `stale_after`.
    pub agents_not_reporting: u64,
    /// The gate of each channel's current release.
    pub gates: Vec<Gate>,
    /// The serial of the verified manifest, if any.
    pub manifest_serial: Option<u64>,
    /// The latest manifest copy was refused (or not read).
    pub manifest_refused: bool,
    /// When a manifest was last verified (a refresh that succeeded).
    pub manifest_verified_at: Option<chrono::DateTime<chrono::Utc>>,
    /// The notifier's counters.
    pub notify: crate::notify::Stats,
    /// Notices waiting in the outbox.
    pub notify_queued: u64,
}

fn esc(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Metrics {
    /// A batch was stored.
    pub fn ingested(&self, new: usize, duplicates: usize) {
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.events_new.fetch_add(new as u64, Ordering::Relaxed);
        self.events_duplicate
            .fetch_add(duplicates as u64, Ordering::Relaxed);
    }

    /// A batch (or request) was refused.
    pub fn rejected(&self, reason: &'static str) {
        *self
            .rejected
            .lock()
            .expect("metrics")
            .entry(reason)
            .or_default() += 1;
    }

    /// An enrollment was answered.
    pub fn enrollment(&self, result: &'static str) {
        *self
            .enrollments
            .lock()
            .expect("metrics")
            .entry(result)
            .or_default() += 1;
    }

    /// An HTTP request finished.
    pub fn request(&self, route: &str, method: &str, status: u16, took: Duration) {
        let secs = took.as_secs_f64();
        {
            let mut h = self.http.lock().expect("metrics");
            let h = h.entry((route.to_owned(), method.to_owned())).or_default();
            h.count += 1;
            h.sum += secs;
            for (i, b) in BOUNDS.iter().enumerate() {
                if secs <= *b {
                    h.buckets[i] += 1;
                }
            }
        }
        *self
            .statuses
            .lock()
            .expect("metrics")
            .entry((route.to_owned(), method.to_owned(), status))
            .or_default() += 1;
    }

    /// Events stored so far by this process.
    pub fn events_new(&self) -> u64 {
        self.events_new.load(Ordering::Relaxed)
    }

    /// The text exposition format.
    pub fn render(&self, g: &Gauges) -> String {
        let mut o = String::new();
        let counter = |o: &mut String, name: &str, help: &str, v: u64| {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
        };
        counter(
            &mut o,
            "flotilla_events_ingested_total",
            "Events stored for the first time.",
            self.events_new.load(Ordering::Relaxed),
        );
        counter(
            &mut o,
            "flotilla_events_duplicate_total",
            "Events received again (redelivery), not stored twice.",
            self.events_duplicate.load(Ordering::Relaxed),
        );
        counter(
            &mut o,
            "flotilla_batches_total",
            "Event batches stored.",
            self.batches.load(Ordering::Relaxed),
        );
        let _ = writeln!(
            o,
            "# HELP flotilla_events_rejected_total Event batches refused, by reason.\n# TYPE flotilla_events_rejected_total counter"
        );
        for (reason, v) in self.rejected.lock().expect("metrics").iter() {
            let _ = writeln!(
                o,
                "flotilla_events_rejected_total{{reason=\"{reason}\"}} {v}"
            );
        }
        let _ = writeln!(
            o,
            "# HELP flotilla_enrollments_total Enrollment requests, by result.\n# TYPE flotilla_enrollments_total counter"
        );
        for (result, v) in self.enrollments.lock().expect("metrics").iter() {
            let _ = writeln!(o, "flotilla_enrollments_total{{result=\"{result}\"}} {v}");
        }
        let _ = writeln!(
            o,
            "# HELP flotilla_http_requests_total HTTP requests, by route and status.\n# TYPE flotilla_http_requests_total counter"
        );
        for ((route, method, status), v) in self.statuses.lock().expect("metrics").iter() {
            let _ = writeln!(
                o,
                "flotilla_http_requests_total{{route=\"{}\",method=\"{method}\",status=\"{status}\"}} {v}",
                esc(route)
            );
        }
        let _ = writeln!(
            o,
            "# HELP flotilla_http_request_duration_seconds Time to answer, by route.\n# TYPE flotilla_http_request_duration_seconds histogram"
        );
        for ((route, method), h) in self.http.lock().expect("metrics").iter() {
            let l = format!("route=\"{}\",method=\"{method}\"", esc(route));
            for (i, b) in BOUNDS.iter().enumerate() {
                let _ = writeln!(
                    o,
                    "flotilla_http_request_duration_seconds_bucket{{{l},le=\"{b}\"}} {}",
                    h.buckets[i]
                );
            }
            let _ = writeln!(
                o,
                "flotilla_http_request_duration_seconds_bucket{{{l},le=\"+Inf\"}} {}\nflotilla_http_request_duration_seconds_sum{{{l}}} {}\nflotilla_http_request_duration_seconds_count{{{l}}} {}",
                h.count, h.sum, h.count
            );
        }
        let _ = writeln!(
            o,
            "# HELP flotilla_agents Enrolled agents, by the version they run.\n# TYPE flotilla_agents gauge"
        );
        for (v, n) in &g.agents_by_version {
            let _ = writeln!(
                o,
                "flotilla_agents{{version=\"{}\"}} {n}",
                esc(v.as_deref().unwrap_or("unknown"))
            );
        }
        let _ = writeln!(
            o,
            "# HELP flotilla_agents_reporting Agents heard from lately.\n# TYPE flotilla_agents_reporting gauge\nflotilla_agents_reporting {}",
            g.agents_reporting
        );
        let _ = writeln!(
            o,
            "# HELP flotilla_agents_not_reporting Enrolled agents not heard from within stale_after.\n# TYPE flotilla_agents_not_reporting gauge\nflotilla_agents_not_reporting {}",
            g.agents_not_reporting
        );
        let _ = writeln!(
            o,
            "# HELP flotilla_gate_closed 1 when the halt gate of a channel's current release is closed.\n# TYPE flotilla_gate_closed gauge"
        );
        let _ = writeln!(
            o,
            "# HELP flotilla_manifest_serial Serial of the manifest the reporter verified (0: none).\n# TYPE flotilla_manifest_serial gauge\nflotilla_manifest_serial {}",
            g.manifest_serial.unwrap_or(0)
        );
        let _ = writeln!(
            o,
            "# HELP flotilla_manifest_refused 1 when the latest manifest copy was refused or not read.\n# TYPE flotilla_manifest_refused gauge\nflotilla_manifest_refused {}",
            u8::from(g.manifest_refused)
        );
        for gate in &g.gates {
            let _ = writeln!(
                o,
                "flotilla_gate_closed{{channel=\"{}\",release=\"{}\"}} {}",
                esc(&gate.channel),
                esc(&gate.release),
                u8::from(gate.state == GateState::Closed)
            );
        }
        let _ = writeln!(
            o,
            "# HELP flotilla_gate_failure_rate Failed / reported agents of a channel's current release.\n# TYPE flotilla_gate_failure_rate gauge"
        );
        for gate in &g.gates {
            if let Some(rate) = gate.failure_rate {
                let _ = writeln!(
                    o,
                    "flotilla_gate_failure_rate{{channel=\"{}\",release=\"{}\"}} {rate}",
                    esc(&gate.channel),
                    esc(&gate.release),
                );
            }
        }
        let _ = writeln!(
            o,
            "# HELP flotilla_gate_max_failure_rate The manifest's max_failure_rate of a channel's current release.\n# TYPE flotilla_gate_max_failure_rate gauge"
        );
        for gate in &g.gates {
            if let Some(max) = gate.max_failure_rate {
                let _ = writeln!(
                    o,
                    "flotilla_gate_max_failure_rate{{channel=\"{}\",release=\"{}\"}} {max}",
                    esc(&gate.channel),
                    esc(&gate.release),
                );
            }
        }
        let _ = writeln!(
            o,
            "# HELP flotilla_manifest_verified_timestamp_seconds When the manifest was last read and verified (0: never).\n# TYPE flotilla_manifest_verified_timestamp_seconds gauge\nflotilla_manifest_verified_timestamp_seconds {}",
            g.manifest_verified_at.map_or(0, |t| t.timestamp())
        );
        let per_receiver = |o: &mut String, name: &str, help: &str, rows: &[(String, u64)]| {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} counter");
            for (r, v) in rows {
                let _ = writeln!(o, "{name}{{receiver=\"{}\"}} {v}", esc(r));
            }
        };
        per_receiver(
            &mut o,
            "flotilla_notifications_sent_total",
            "Notifications delivered (the receiver answered 2xx).",
            &g.notify.sent,
        );
        per_receiver(
            &mut o,
            "flotilla_notifications_failed_total",
            "Notification delivery attempts that failed (retried later).",
            &g.notify.failed,
        );
        let _ = writeln!(
            o,
            "# HELP flotilla_notifications_dropped_total Notifications dropped undelivered, by reason.\n# TYPE flotilla_notifications_dropped_total counter"
        );
        for (r, why, v) in &g.notify.dropped {
            let _ = writeln!(
                o,
                "flotilla_notifications_dropped_total{{receiver=\"{}\",reason=\"{why}\"}} {v}",
                esc(r)
            );
        }
        let _ = writeln!(
            o,
            "# HELP flotilla_notifications_queued Notifications waiting for delivery.\n# TYPE flotilla_notifications_queued gauge\nflotilla_notifications_queued {}",
            g.notify_queued
        );
        o
    }
}
