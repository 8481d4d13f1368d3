//! The rows of the differential tests, made in SQLite through the SQLite
//! functions (enroll, ingest, tokens), and the comparison of every query's
//! answers between a SQLite database and a PostgreSQL one.

use std::collections::BTreeMap;
use std::path::Path;

use chrono::{Duration, TimeZone, Utc};
use flotilla_protocol::api::{EnrollRequest, HostState};
use flotilla_protocol::{Event, EventKind, EventStatus, Severity};
use flotilla_reporter::db::ingest::{ingest, Batch};
use flotilla_reporter::db::queries::{AgentFilter, AgentSort, EventFilter};
use flotilla_reporter::db::{self, pg, queries, to_micros};
use flotilla_reporter::notify::Notifier;
use flotilla_reporter::settings::Durability;

/// The base time of the fixture's events, µs.
pub fn t0() -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 1, 12, 0, 0).unwrap()
}

/// Agents whose ids sort differently by bytes than by a locale, one with
/// LIKE's special characters, and one never heard from.
pub const AGENTS: &[&str] = &[
    "Web-01", "web-02", "web_03", "a-1", "aB", "Z9", "db%01", "quiet",
];

fn event(agent: &str, kind: EventKind, status: EventStatus, secs: i64) -> Event {
    let mut e = Event::new(
        agent,
        kind,
        status,
        "test",
        format!("{kind} {status} {secs}"),
    );
    e.ts = t0() + Duration::seconds(secs);
    e.channel = Some(
        if agent.starts_with('d') {
            "beta"
        } else {
            "stable"
        }
        .into(),
    );
    e
}

/// Makes the fixture in the SQLite database at `path`; returns the
/// connection.
pub fn build_sqlite(path: &Path) -> rusqlite::Connection {
    let conn = db::open_writer(path, Durability::ProcessCrash).unwrap();
    let (tok, secret) = db::tokens::create(&conn, None, Some(100), "fleet").unwrap();
    db::tokens::create(
        &conn,
        Some(std::time::Duration::from_secs(60)),
        Some(1),
        "spare",
    )
    .unwrap();
    db::tokens::create_read(&conn, None, "grafana").unwrap();
    let notifier = Notifier::default();
    for (i, id) in AGENTS.iter().enumerate() {
        let mut labels = BTreeMap::new();
        labels.insert(
            "role".to_owned(),
            if i % 2 == 0 { "web" } else { "db" }.to_owned(),
        );
        labels.insert("site".to_owned(), format!("AMS{}", i % 3));
        if i == 6 {
            labels.insert("note".to_owned(), "50%_off".to_owned());
        }
        if i == 5 {
            // SQLite's LIKE folds ASCII only: "ZÜRICH" must not find it.
            labels.insert("city".to_owned(), "Zürich".to_owned());
        }
        let req = EnrollRequest {
            enrollment_token: secret.clone(),
            agent_id: (*id).to_owned(),
            labels,
            version: (i % 3 != 0).then(|| format!("1.{}.0", i % 2)),
            channel: Some(
                if id.starts_with('d') {
                    "beta"
                } else {
                    "stable"
                }
                .into(),
            ),
            agent_token: None,
        };
        db::enroll::enroll(&conn, &req, None, t0())
            .unwrap()
            .unwrap_or_else(|r| panic!("{id}: {r:?}"));
        if *id == "quiet" {
            continue;
        }
        let mut batch = Vec::new();
        // Many events, several sharing a timestamp (the cursor's seq decides).
        let n = if i == 0 { 130 } else { 12 + i as i64 };
        for k in 0..n {
            let (kind, status) = match k % 6 {
                0 => (EventKind::UpdateDownload, EventStatus::Failed),
                1 => (EventKind::UpdateInstall, EventStatus::Success),
                2 => (EventKind::UpdateHealthcheck, EventStatus::Success),
                3 => (EventKind::MigrationExecution, EventStatus::Failed),
                _ => (EventKind::ManifestCheck, EventStatus::Success),
            };
            let mut e = event(id, kind, status, k / 3 + i as i64 * 1000);
            if kind.to_string().starts_with("update") {
                e.from_version = Some("1.0.0".into());
                e.to_version = Some(if i % 2 == 0 { "2.0.0" } else { "2.1.0" }.into());
                e.wave = Some(format!("w{}", i % 3));
            }
            if k % 7 == 0 {
                e.severity = Severity::Warning;
            }
            batch.push(e);
        }
        let now = to_micros(t0() + Duration::seconds(i as i64 * 1000 + 500));
        ingest(&conn, id, &Batch::from_events(&batch), now, &notifier).unwrap();
    }
    // Host states as check-ins leave them, and one revoked agent.
    conn.execute_batch(
        "UPDATE agents SET host_state = 'held', host_release = '2.0.0', host_reason = 'gate'
           WHERE agent_id IN ('Web-01', 'a-1');
         UPDATE agents SET host_state = 'on_release', host_release = '2.1.0'
           WHERE agent_id IN ('web-02', 'aB');
         UPDATE agents SET channel = 'beta' WHERE agent_id = 'Z9';",
    )
    .unwrap();
    db::tokens::revoke_agent(&conn, "web_03").unwrap();
    db::tokens::revoke(&conn, &tok.id).ok();
    conn
}

/// A stale line between the agents' last reports.
pub fn stale_before() -> i64 {
    to_micros(t0() + Duration::seconds(3500))
}

/// Every filter of the agents list the differential tests ask.
pub fn agent_filters() -> Vec<AgentFilter> {
    let base = AgentFilter {
        stale_before: stale_before(),
        limit: 100,
        ..AgentFilter::default()
    };
    let mut out = Vec::new();
    let qs = [
        None,
        Some("web"),
        Some("WEB"),
        Some("ams1"),
        Some("%"),
        Some("_"),
        Some("b%0"),
        Some("role=db"),
        Some("site = AMS2"),
        Some("=db"),
        Some("2.1"),
        Some("nothing"),
    ];
    for q in qs {
        for sort in [
            AgentSort::LastSeenDesc,
            AgentSort::LastSeenAsc,
            AgentSort::AgentId,
            AgentSort::Version,
        ] {
            out.push(AgentFilter {
                q: q.map(str::to_owned),
                sort,
                ..base.clone()
            });
        }
    }
    let more = [
        AgentFilter {
            channel: Some("beta".into()),
            ..base.clone()
        },
        AgentFilter {
            version: Some("1.1.0".into()),
            ..base.clone()
        },
        AgentFilter {
            wave: Some("w1".into()),
            ..base.clone()
        },
        AgentFilter {
            states: vec![HostState::NotReporting],
            ..base.clone()
        },
        AgentFilter {
            states: vec![HostState::Held, HostState::OnRelease],
            ..base.clone()
        },
        AgentFilter {
            states: vec![HostState::NotReporting, HostState::Held],
            ..base.clone()
        },
        AgentFilter {
            labels: vec![
                ("role".into(), "web".into()),
                ("site".into(), "AMS0".into()),
            ],
            ..base.clone()
        },
        AgentFilter {
            labels: vec![("site".into(), "ams0".into())],
            ..base.clone()
        },
        AgentFilter {
            silent_since: Some(stale_before()),
            ..base.clone()
        },
        AgentFilter {
            include_revoked: true,
            sort: AgentSort::AgentId,
            ..base.clone()
        },
    ];
    out.extend(more);
    // Pages.
    for offset in [0, 3, 6, 9] {
        for sort in [
            AgentSort::AgentId,
            AgentSort::Version,
            AgentSort::LastSeenAsc,
        ] {
            out.push(AgentFilter {
                limit: 3,
                offset,
                sort,
                include_revoked: true,
                ..base.clone()
            });
        }
    }
    out
}

/// Every event filter asked of each agent.
pub fn event_filters() -> Vec<EventFilter> {
    let base = EventFilter {
        limit: 7,
        ..EventFilter::default()
    };
    vec![
        base.clone(),
        EventFilter {
            limit: 500,
            ..base.clone()
        },
        EventFilter {
            kinds: vec!["update_download".into(), "manifest_check".into()],
            ..base.clone()
        },
        EventFilter {
            statuses: vec!["failed".into()],
            ..base.clone()
        },
        EventFilter {
            severities: vec!["warning".into()],
            ..base.clone()
        },
        EventFilter {
            since: Some(to_micros(t0() + Duration::seconds(5))),
            until: Some(to_micros(t0() + Duration::seconds(4020))),
            ..base.clone()
        },
    ]
}

/// Requires the same answers from every query function of both backends;
/// `min_pages`: how many pages Web-01's events must at least fill.
pub async fn assert_same_answers(s: &rusqlite::Connection, p: &pg::Pg, min_pages: usize) {
    let c = p.client().await.unwrap();
    let c = &**c;
    for f in agent_filters() {
        assert_eq!(
            queries::agents(s, &f).unwrap(),
            pg::queries::agents(c, &f).await.unwrap(),
            "agents {f:?}"
        );
    }
    for id in AGENTS.iter().copied().chain(["nobody"]) {
        for stale in [stale_before(), i64::MIN] {
            assert_eq!(
                queries::agent(s, id, stale).unwrap(),
                pg::queries::agent(c, id, stale).await.unwrap(),
                "agent {id}"
            );
        }
        for f in event_filters() {
            // Every page, following the cursor to the end.
            let mut f = f;
            let mut pages = 0;
            loop {
                let a = queries::events(s, id, &f).unwrap();
                let b = pg::queries::events(c, id, &f).await.unwrap();
                assert_eq!(a, b, "events of {id} {f:?}");
                pages += 1;
                match a.1 {
                    Some(cur) => f.before = queries::decode_cursor(&cur),
                    None => break,
                }
            }
            if id == "Web-01"
                && f.limit == 7
                && f.kinds.is_empty()
                && f.since.is_none()
                && f.statuses.is_empty()
                && f.severities.is_empty()
            {
                assert!(pages >= min_pages, "the pages were followed: {pages}");
            }
        }
    }
    for (ch, rel) in [
        ("stable", "2.0.0"),
        ("stable", "2.1.0"),
        ("beta", "2.0.0"),
        ("beta", "2.1.0"),
        ("none", "9"),
    ] {
        let mut a = queries::rollout_rows(s, ch, rel).unwrap();
        let mut b = pg::queries::rollout_rows(c, ch, rel).await.unwrap();
        // Neither backend promises an order here.
        a.sort_by(|x, y| x.agent_id.cmp(&y.agent_id));
        b.sort_by(|x, y| x.agent_id.cmp(&y.agent_id));
        assert_eq!(a, b, "rollout_rows {ch} {rel}");
        assert_eq!(
            queries::release_state_counts(s, ch, rel).unwrap(),
            pg::queries::release_state_counts(c, ch, rel).await.unwrap(),
            "release_state_counts {ch} {rel}"
        );
    }
    assert_eq!(
        queries::agents_by_version(s).unwrap(),
        pg::queries::agents_by_version(c).await.unwrap()
    );
    for n in [0, 2, 50] {
        assert_eq!(
            queries::newest_errors(s, n).unwrap(),
            pg::queries::newest_errors(c, n).await.unwrap(),
            "newest_errors {n}"
        );
    }
    for since in [i64::MIN, stale_before(), i64::MAX] {
        assert_eq!(
            queries::agent_counts(s, since).unwrap(),
            pg::queries::agent_counts(c, since).await.unwrap()
        );
    }
    assert_eq!(
        db::tokens::list(s).unwrap(),
        pg::tokens::list(c).await.unwrap()
    );
    assert_eq!(
        db::halts::list(s, 10).unwrap(),
        pg::halts::list(c, 10).await.unwrap()
    );
    for ch in [None, Some("stable"), Some("beta")] {
        for n in [1, 5] {
            assert_eq!(
                db::rollout_history::list(s, ch, n).unwrap(),
                pg::rollout_history::list(c, ch, n).await.unwrap()
            );
        }
    }
}
