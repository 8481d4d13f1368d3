//! `reporter/dist`: the Prometheus alerting rules pass `promtool check
//! rules` and their unit tests (`promtool test rules alerts.test.yml`),
//! and every metric the rules and the Grafana dashboard name is one the
//! reporter serves.

mod common;

use common::{both, Backend};

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

both!(
    #[tokio::test];
    the_rules_and_the_dashboard_name_only_metrics_the_reporter_serves,
);

fn dist() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("dist")
}

/// `promtool` (Debian's prometheus package; `scripts/test` extracts it),
/// `$FLOTILLA_PROMTOOL` first.
fn promtool() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("FLOTILLA_PROMTOOL") {
        return Some(p.into());
    }
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("promtool"))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        assert!(
            std::env::var_os("FLOTILLA_SKIP_PROMTOOL_TESTS").is_some(),
            "promtool is not installed (bash scripts/test installs it from Debian's \
             prometheus package), or set FLOTILLA_SKIP_PROMTOOL_TESTS=1"
        );
    }
    found
}

fn run(promtool: &Path, args: &[&str]) {
    let out = Command::new(promtool)
        .args(args)
        .current_dir(dist())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "promtool {args:?}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_alert_rules_check_and_pass_their_unit_tests() {
    let Some(p) = promtool() else {
        eprintln!("skipped: no promtool");
        return;
    };
    run(&p, &["check", "rules", "alerts.yml"]);
    run(&p, &["test", "rules", "alerts.test.yml"]);
}

/// `flotilla_…` names in `text`, without histogram suffixes.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("flotilla_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let name = tail[..end]
            .trim_end_matches("_bucket")
            .trim_end_matches("_sum")
            .trim_end_matches("_count");
        names.insert(name.to_owned());
        rest = &tail[end..];
    }
    names
}

async fn the_rules_and_the_dashboard_name_only_metrics_the_reporter_serves(backend: Backend) {
    let s = common::Server::on(&backend).await;
    let served = s.admin_get("/metrics").await.text().await.unwrap();
    let served: BTreeSet<String> = served
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .map(str::to_owned)
        .collect();
    for file in ["alerts.yml", "alerts.test.yml", "grafana-dashboard.json"] {
        let text = std::fs::read_to_string(dist().join(file)).unwrap();
        let named = metric_names(&text);
        assert!(named.len() > 3, "{file}: {named:?}");
        let unknown: Vec<_> = named.difference(&served).collect();
        assert!(
            unknown.is_empty(),
            "{file} names {unknown:?}, not in /metrics"
        );
    }
    let dash: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dist().join("grafana-dashboard.json")).unwrap(),
    )
    .unwrap();
    assert!(dash["panels"].as_array().unwrap().len() >= 10);
    s.stop().await;
}
