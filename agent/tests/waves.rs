//! The decision over a simulated fleet with a fake clock: 200 agent ids
//! against a 3-wave channel; `paused`, pins, downgrade policy and stepping
//! stones. The manifest is compiled from fleet-repo sources with the
//! protocol crate, as the publisher does.

use std::collections::BTreeMap;
use std::path::PathBuf;

use chrono::{DateTime, Duration, Utc};
use flotilla_agent::decide::{decide, Agent, Decision, DeferReason, Deferral};
use flotilla_protocol::wave::{bucket, slot};
use flotilla_protocol::{Manifest, Sources};
use semver::Version;

const SHA: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
const T: &str = "x86_64-unknown-linux-gnu";

fn start() -> DateTime<Utc> {
    "2026-03-01T00:00:00Z".parse().unwrap()
}

fn release(v: &str, min_from: Option<&str>) -> (PathBuf, String) {
    let min = min_from
        .map(|m| format!("min_from = \"{m}\"\n"))
        .unwrap_or_default();
    (
        format!("releases/{v}.toml").into(),
        format!("version = \"{v}\"\n{min}[artifacts.{T}]\npath = \"a/{v}\"\nsha256 = \"{SHA}\"\nsize = 1\n"),
    )
}

fn manifest(
    channel_extra: &str,
    pins: &str,
    target: &str,
    releases: &[(&str, Option<&str>)],
) -> Manifest {
    let mut files = vec![("fleet.toml".into(), "name = \"sim\"\n".to_string())];
    for (v, m) in releases {
        files.push(release(v, *m));
    }
    files.push((
        "channels/stable.toml".into(),
        format!(
            "release = \"{target}\"\nstart = \"2026-03-01T00:00:00Z\"\n{channel_extra}\n\
             [[waves]]\nname = \"canary\"\npercent = 10\nafter = \"0s\"\nspread = \"1h\"\n\
             [[waves]]\nname = \"early\"\npercent = 40\nafter = \"1d\"\nspread = \"6h\"\n\
             [[waves]]\nname = \"all\"\npercent = 100\nafter = \"3d\"\nspread = \"12h\"\n"
        ),
    ));
    files.push((
        "channels/beta.toml".into(),
        "release = \"1.0.0\"\nstart = \"2026-03-01T00:00:00Z\"\n".into(),
    ));
    files.push(("pins.toml".into(), pins.to_string()));
    let sources = Sources::from_files(files).unwrap();
    Manifest::compile(&sources, 1, start(), start() + Duration::days(30))
}

fn run(
    m: &Manifest,
    id: &str,
    labels: &BTreeMap<String, String>,
    version: &str,
    now: DateTime<Utc>,
) -> Decision {
    let v: Version = version.parse().unwrap();
    decide(
        m,
        &Agent {
            id,
            channel: "stable",
            labels,
            version: &v,
            target: T,
            blocked: None,
        },
        now,
    )
}

fn ids() -> Vec<String> {
    (0..200).map(|i| format!("host-{i:03}")).collect()
}

#[test]
fn fleet_of_200_becomes_eligible_exactly_as_the_wave_function_says() {
    let m = manifest("", "", "2.0.0", &[("1.0.0", None), ("2.0.0", None)]);
    let channel = &m.channels["stable"];
    let none = BTreeMap::new();
    let mut eligible_before = 0;
    let mut per_wave = BTreeMap::new();
    // Every 30 minutes over four days.
    for step in 0..=(4 * 48) {
        let now = start() + Duration::minutes(30 * step);
        let mut eligible = 0;
        for id in ids() {
            let s = slot(
                &channel.waves,
                channel.start,
                bucket("stable", "2.0.0", &id),
            )
            .unwrap();
            match run(&m, &id, &none, "1.0.0", now) {
                Decision::Update(p) => {
                    assert!(s.eligible_at <= now, "{id} updated before its turn");
                    assert_eq!(p.wave.as_deref(), Some(s.wave.as_str()));
                    assert_eq!(p.release.to_string(), "2.0.0");
                    eligible += 1;
                }
                Decision::Defer(Deferral {
                    reason: DeferReason::WaveNotOpen,
                    eligible_at,
                    wave,
                    ..
                }) => {
                    assert!(s.eligible_at > now, "{id} held after its turn");
                    assert_eq!(eligible_at, Some(s.eligible_at));
                    assert_eq!(wave.as_deref(), Some(s.wave.as_str()));
                }
                other => panic!("{id}: {other:?}"),
            }
            if step == 0 {
                *per_wave.entry(s.wave.clone()).or_insert(0) += 1;
            }
        }
        assert!(eligible >= eligible_before, "eligibility never goes back");
        eligible_before = eligible;
        // Before the second wave opens, only canaries can be eligible.
        if now < start() + Duration::days(1) {
            assert!(eligible <= per_wave["canary"]);
        }
    }
    assert_eq!(eligible_before, 200, "everyone is eligible at the end");
    assert!(
        per_wave["canary"] > 5 && per_wave["canary"] < 40,
        "{per_wave:?}"
    );
    // Already on the release: up to date.
    assert!(matches!(
        run(&m, "host-000", &none, "2.0.0", start()),
        Decision::UpToDate { .. }
    ));
}

#[test]
fn paused_channel_stops_everyone() {
    let m = manifest(
        "paused = true",
        "",
        "2.0.0",
        &[("1.0.0", None), ("2.0.0", None)],
    );
    let late = start() + Duration::days(30);
    for id in ids() {
        assert!(matches!(
            run(&m, &id, &BTreeMap::new(), "1.0.0", late),
            Decision::Defer(Deferral {
                reason: DeferReason::Paused,
                ..
            })
        ));
    }
}

#[test]
fn pins_hold_agents_and_move_labelled_ones_to_another_channel() {
    let pins = "[[pin]]\nagents = [\"host-007\"]\nrelease = \"1.0.0\"\n\n[[pin]]\nlabels = { role = \"db\" }\nchannel = \"beta\"\n";
    let m = manifest("", pins, "2.0.0", &[("1.0.0", None), ("2.0.0", None)]);
    let late = start() + Duration::days(30);
    let none = BTreeMap::new();
    assert!(matches!(
        run(&m, "host-007", &none, "1.0.0", late),
        Decision::UpToDate { .. }
    ));
    assert!(matches!(
        run(&m, "host-008", &none, "1.0.0", late),
        Decision::Update(_)
    ));
    let db: BTreeMap<String, String> = [("role".to_string(), "db".to_string())].into();
    match run(&m, "host-009", &db, "1.0.0", late) {
        Decision::UpToDate { channel, .. } => assert_eq!(channel, "beta"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn downgrade_is_refused_unless_the_channel_allows_it() {
    let late = start() + Duration::days(30);
    let none = BTreeMap::new();
    let m = manifest("", "", "1.0.0", &[("1.0.0", None), ("2.0.0", None)]);
    assert!(matches!(
        run(&m, "host-001", &none, "2.0.0", late),
        Decision::Defer(Deferral {
            reason: DeferReason::DowngradeRefused,
            ..
        })
    ));
    let m = manifest(
        "allow_downgrade = true",
        "",
        "1.0.0",
        &[("1.0.0", None), ("2.0.0", None)],
    );
    match run(&m, "host-001", &none, "2.0.0", late) {
        Decision::Update(p) => assert_eq!(p.release.to_string(), "1.0.0"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn stepping_stone_is_taken_first() {
    let late = start() + Duration::days(30);
    let none = BTreeMap::new();
    let m = manifest(
        "",
        "",
        "3.0.0",
        &[
            ("1.0.0", None),
            ("2.0.0", None),
            ("2.1.0", None),
            ("3.0.0", Some("2.0.0")),
        ],
    );
    // Only the channel's release and its stepping stones are compiled in;
    // 2.1.0 is not referenced, so 2.0.0 (min_from) is the stone.
    match run(&m, "host-001", &none, "1.0.0", late) {
        Decision::Update(p) => {
            assert_eq!(p.release.to_string(), "2.0.0");
            assert_eq!(p.final_release.to_string(), "3.0.0");
        }
        other => panic!("{other:?}"),
    }
    match run(&m, "host-001", &none, "2.0.0", late) {
        Decision::Update(p) => assert_eq!(p.release.to_string(), "3.0.0"),
        other => panic!("{other:?}"),
    }
}
