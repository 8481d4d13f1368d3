//! `POST /api/v1/events` has two ways to check a batch: the fast path
//! (`handlers::events::fast`: strings borrowed from the body, `details`
//! kept as sent) and the reference path (`Event::validate` and the
//! handler's own checks), which answers whenever the fast one declines.
//! They must not disagree: this test feeds two real reporters the same
//! generated batches, one as sent (the fast path takes what it can) and one
//! with the first event's `details` padded with whitespace (the same JSON
//! value, but too large as sent for the fast path, so the reference path
//! answers), and requires the same answer (accepted with the same counts,
//! or refused with the same status) and the same stored rows (events, the
//! agent's derived state, its rollout rows) after every batch.

mod common;

use axum::body::Bytes;
use common::Server;
use flotilla_protocol::api::MAX_BATCH_EVENTS;
use flotilla_protocol::event::{MAX_DETAILS, MAX_MESSAGE, MAX_SHORT};
use flotilla_protocol::{Event, EventKind, EventStatus, Severity};
use flotilla_reporter::handlers::events::fast;
use serde_json::{json, Value};

/// Whitespace enough to make the fast path decline (it takes `details` of
/// at most `MAX_DETAILS / 5` bytes as sent) and the reference path accept
/// (its limit is on the re-serialised value, which drops whitespace).
const PAD: usize = MAX_DETAILS / 4;

/// The same batch for the reference path: the first `details` object
/// padded with whitespace.
fn padded(body: &[u8]) -> Vec<u8> {
    let key = b"\"details\":{";
    match body.windows(key.len()).position(|w| w == key) {
        Some(i) => {
            let at = i + key.len();
            let mut out = body[..at].to_vec();
            out.extend(std::iter::repeat_n(b' ', PAD));
            out.extend_from_slice(&body[at..]);
            out
        }
        None => body.to_vec(),
    }
}

/// A small deterministic generator (xorshift64*): the same cases every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len())]
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
    /// A short string with some of JSON's and UTF-8's harder characters.
    fn text(&mut self, max: usize) -> String {
        const BITS: &[&str] = &[
            "a", "Z", "0", " ", "-", ".", "\"", "\\", "/", "\n", "\t", "\u{1f}", "é", "日本", "😀",
            "\u{2028}", "\u{feff}",
        ];
        let n = self.below(max + 1);
        (0..n).map(|_| *self.pick(BITS)).collect()
    }
}

/// A valid event of agent `a`, varied by `rng`.
fn valid(rng: &mut Rng) -> Value {
    let kind = *rng.pick(&EventKind::ALL);
    let status = *rng.pick(kind.statuses());
    let mut e = Event::new("a", kind, status, "component", rng.text(40));
    e.component = format!("c{}", rng.text(8));
    e.severity = *rng.pick(&[
        Severity::Info,
        Severity::Warning,
        Severity::Error,
        Severity::Critical,
    ]);
    e.ts -= chrono::Duration::seconds(rng.below(1_000_000) as i64);
    let version = |rng: &mut Rng| format!("1.{}.{}", rng.below(5), rng.below(5));
    if rng.chance(60) {
        e.from_version = Some(version(rng));
    }
    if rng.chance(60) {
        e.to_version = Some(version(rng));
    }
    if rng.chance(70) {
        e.channel = Some(rng.pick(&["stable", "beta", "edge"]).to_string());
    }
    if rng.chance(50) {
        e.wave = Some(rng.pick(&["canary", "half", "all"]).to_string());
    }
    let d = &mut e.details;
    if rng.chance(50) {
        d.insert("release".into(), json!(version(rng)));
    }
    if rng.chance(50) {
        d.insert("agent_version".into(), json!(version(rng)));
    }
    if rng.chance(20) {
        d.insert("labels".into(), json!({"role": rng.pick(&["web", "db"])}));
    }
    if rng.chance(40) {
        d.insert(
            "nested".into(),
            json!({"x": [1, -2, 2.5, true, null, rng.text(10)], "y": {"z": 1e15}}),
        );
    }
    if rng.chance(30) {
        d.insert(rng.text(6), json!(rng.text(20)));
    }
    serde_json::to_value(e).unwrap()
}

/// The carrier of every batch: a valid event with a `details` object, so
/// that [`padded`] has something to pad.
fn carrier(rng: &mut Rng) -> Value {
    let mut e = valid(rng);
    e["details"]["carrier"] = json!(true);
    e
}

fn batch(events: &[Value]) -> Vec<u8> {
    serde_json::to_vec(&json!({ "events": events })).unwrap()
}

/// A batch of a carrier and `e`, with `edit` applied to `e`.
fn one(rng: &mut Rng, edit: impl FnOnce(&mut Value)) -> Vec<u8> {
    let mut e = valid(rng);
    edit(&mut e);
    batch(&[carrier(rng), e])
}

/// A batch of a carrier and a valid event whose text has `from` replaced
/// by `to` (for what a `Value` cannot express: escapes, duplicate keys).
fn raw(rng: &mut Rng, from: &str, to: &str) -> Vec<u8> {
    let mut e = valid(rng);
    e["details"]["release"] = json!("1.2.3");
    e["channel"] = json!("stable");
    let text = serde_json::to_string(&e).unwrap();
    assert!(text.contains(from), "{from} in {text}");
    let c = serde_json::to_string(&carrier(rng)).unwrap();
    format!("{{\"events\":[{c},{}]}}", text.replacen(from, to, 1)).into_bytes()
}

/// Every case, in order (some depend on the ones before: duplicates).
fn cases() -> Vec<(String, Vec<u8>)> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut out: Vec<(String, Vec<u8>)> = Vec::new();
    let mut add = |name: &str, body: Vec<u8>| out.push((name.to_owned(), body));

    // Valid batches of 1 to 5 events.
    for i in 0..40 {
        let n = 1 + rng.below(5);
        let mut events = vec![carrier(&mut rng)];
        events.extend((1..n).map(|_| valid(&mut rng)));
        add(&format!("valid {i}"), batch(&events));
    }
    add("empty batch", br#"{"events":[]}"#.to_vec());
    add("not JSON", b"nope".to_vec());
    add("not UTF-8", b"{\"events\":[\"\xff\"]}".to_vec());
    add("events not a list", br#"{"events":{}}"#.to_vec());

    // Wrong types.
    for (field, v) in [
        ("id", json!(7)),
        ("agent_id", json!(1)),
        ("ts", json!(5)),
        ("kind", json!(3)),
        ("status", json!(true)),
        ("severity", json!("loud")),
        ("component", json!(["c"])),
        ("message", json!(1)),
        ("from_version", json!(1)),
        ("to_version", json!({})),
        ("channel", json!(5)),
        ("wave", json!(false)),
        ("details", json!([1, 2])),
        ("details", json!("x")),
        ("details", Value::Null),
        ("channel", Value::Null),
        ("wave", Value::Null),
    ] {
        add(
            &format!("{field} = {v}"),
            one(&mut rng, |e| e[field] = v.clone()),
        );
    }
    // A NUL character, which no text field may hold (PostgreSQL cannot
    // store it), but `details` may (it is JSON, escaped).
    for field in [
        "message",
        "component",
        "from_version",
        "to_version",
        "channel",
        "wave",
    ] {
        add(
            &format!("NUL in {field}"),
            one(&mut rng, |e| e[field] = json!("a\u{0}b")),
        );
    }
    add(
        "NUL in details",
        one(&mut rng, |e| e["details"]["x"] = json!("a\u{0}b")),
    );
    // Missing fields (the optional ones may be absent).
    for field in [
        "id",
        "agent_id",
        "ts",
        "kind",
        "status",
        "severity",
        "component",
        "message",
        "from_version",
        "to_version",
        "channel",
        "wave",
        "details",
    ] {
        add(
            &format!("without {field}"),
            one(&mut rng, |e| {
                e.as_object_mut().unwrap().remove(field);
            }),
        );
    }
    add(
        "an unknown field",
        one(&mut rng, |e| e["colour"] = json!("blue")),
    );

    // Sizes at and over the limits, in bytes (é is two).
    let limits: [(&str, usize); 6] = [
        ("message", MAX_MESSAGE),
        ("component", MAX_SHORT),
        ("from_version", MAX_SHORT),
        ("to_version", MAX_SHORT),
        ("channel", MAX_SHORT),
        ("wave", MAX_SHORT),
    ];
    for (field, max) in limits {
        for (label, s) in [
            ("at", "x".repeat(max)),
            ("over", "x".repeat(max + 1)),
            ("two-byte at", "é".repeat(max / 2)),
            ("two-byte over", format!("x{}", "é".repeat(max / 2))),
        ] {
            add(
                &format!("{field} {label} {max} bytes"),
                one(&mut rng, |e| e[field] = json!(s)),
            );
        }
    }
    for n in [MAX_DETAILS / 5 - 40, MAX_DETAILS - 20, MAX_DETAILS + 1] {
        add(
            &format!("details of about {n} bytes"),
            one(&mut rng, |e| e["details"] = json!({"blob": "y".repeat(n)})),
        );
    }
    add(
        "details of numbers that grow when re-serialised",
        one(&mut rng, |e| {
            e["details"] = json!({"n": vec![1e15; 1500]});
        }),
    );

    // Ids and timestamps.
    for id in [
        "not-a-uuid",
        "",
        "0190F3A0-7E4B-7C3D-8A2B-1234567890AB",
        "{0190f3a0-7e4b-7c3d-8a2b-1234567890ab}",
        "0190f3a07e4b7c3d8a2b1234567890ab",
        "urn:uuid:0190f3a0-7e4b-7c3d-8a2b-1234567890ab",
        "00000000-0000-0000-0000-000000000000",
    ] {
        add(
            &format!("id {id:?}"),
            one(&mut rng, |e| e["id"] = json!(id)),
        );
    }
    for ts in [
        "2999-01-01T00:00:00Z",
        "2024-01-01T00:00:00+02:00",
        "2024-01-01T00:00:00",
        "2024-01-01 00:00:00Z",
        "2024-01-01T00:00:00.123456789Z",
        "2016-12-31T23:59:60Z",
        "2024-02-30T00:00:00Z",
        "-0001-01-01T00:00:00Z",
        "yesterday",
        "",
    ] {
        add(
            &format!("ts {ts:?}"),
            one(&mut rng, |e| e["ts"] = json!(ts)),
        );
    }

    // Kinds and statuses.
    add(
        "an unknown kind",
        one(&mut rng, |e| e["kind"] = json!("nonsense")),
    );
    add(
        "a kind in capitals",
        one(&mut rng, |e| e["kind"] = json!("UPDATE_INSTALL")),
    );
    for kind in EventKind::ALL {
        for status in ["partial", "not_needed", "rejected", "success", "failed"] {
            add(
                &format!("{kind} {status}"),
                one(&mut rng, |e| {
                    e["kind"] = json!(kind);
                    e["status"] = json!(status);
                }),
            );
        }
    }

    // Agent ids: another agent's, and ones no agent may have.
    for id in ["b", "", "a ", " a", "A", "web/01", "a\n", "ä"] {
        add(
            &format!("agent_id {id:?}"),
            one(&mut rng, |e| e["agent_id"] = json!(id)),
        );
    }

    // Duplicates: within a batch, and a batch sent again.
    let e = valid(&mut rng);
    add("an event twice", batch(&[carrier(&mut rng), e.clone(), e]));
    let again = batch(&[carrier(&mut rng), valid(&mut rng)]);
    add("a batch", again.clone());
    add("the same batch again", again);

    // Batch sizes at and over the count limit (small events, so the
    // padded copy stays under the byte limit).
    for n in [MAX_BATCH_EVENTS, MAX_BATCH_EVENTS + 1] {
        let mut events = vec![carrier(&mut rng)];
        events.extend((1..n).map(|i| {
            let mut e = Event::new("a", EventKind::ManifestCheck, EventStatus::Success, "m", "");
            e.ts -= chrono::Duration::seconds(i as i64);
            serde_json::to_value(e).unwrap()
        }));
        add(&format!("{n} events"), batch(&events));
    }
    // Labels that are not a map of strings.
    for labels in [
        json!("web"),
        json!({"role": 5}),
        json!({"role": null}),
        json!([]),
    ] {
        add(
            &format!("labels {labels}"),
            one(&mut rng, |e| e["details"]["labels"] = labels.clone()),
        );
    }
    // Bytes that are not UTF-8 where the reference parser does not look
    // (an unknown field's string), and where it does.
    for (name, field) in [("an unknown field", "colour"), ("the message", "message")] {
        let mut body = one(&mut rng, |e| e[field] = json!("XX"));
        let at = body.windows(4).position(|w| w == b"\"XX\"").unwrap();
        body[at + 1] = 0xff;
        add(&format!("not UTF-8 in {name}"), body);
    }

    // Escapes and what a `Value` cannot say.
    let swaps: &[(&str, &str, &str)] = &[
        (
            "escaped agent_id",
            "\"agent_id\":\"a\"",
            "\"agent_id\":\"\\u0061\"",
        ),
        (
            "escaped other agent_id",
            "\"agent_id\":\"a\"",
            "\"agent_id\":\"\\u0062\"",
        ),
        (
            "escaped key and value",
            "\"release\":\"1.2.3\"",
            "\"rel\\u0065ase\":\"1.2.\\u0033\"",
        ),
        (
            "escaped channel",
            "\"channel\":\"stable\"",
            "\"channel\":\"st\\u0061ble\"",
        ),
        (
            "escaped kind",
            "\"kind\":\"",
            "\"kind\":\"\\u0061gent_startup\",\"x\":\"",
        ),
        (
            "a surrogate pair",
            "\"release\":\"1.2.3\"",
            "\"release\":\"\\ud83d\\ude00\"",
        ),
        (
            "a lone surrogate",
            "\"release\":\"1.2.3\"",
            "\"release\":\"\\ud800\"",
        ),
        (
            "a lone surrogate in the channel",
            "\"channel\":\"stable\"",
            "\"channel\":\"\\udc00\"",
        ),
        (
            "a bad escape",
            "\"release\":\"1.2.3\"",
            "\"release\":\"\\x\"",
        ),
        (
            "NUL escaped",
            "\"channel\":\"stable\"",
            "\"channel\":\"\\u0000\"",
        ),
        (
            "a duplicate details key",
            "\"release\":\"1.2.3\"",
            "\"release\":\"1\",\"release\":\"2\"",
        ),
        (
            "a duplicate details key of another type",
            "\"release\":\"1.2.3\"",
            "\"release\":\"1\",\"release\":false",
        ),
        (
            "a duplicate labels key",
            "\"release\":\"1.2.3\"",
            "\"labels\":{\"role\":\"web\"},\"labels\":{\"role\":\"db\"}",
        ),
        (
            "a duplicate event field",
            "\"kind\":",
            "\"kind\":\"agent_startup\",\"kind\":",
        ),
        (
            "a duplicate channel",
            "\"channel\":\"stable\"",
            "\"channel\":\"stable\",\"channel\":\"beta\"",
        ),
        (
            "a number out of range",
            "\"release\":\"1.2.3\"",
            "\"big\":1e400",
        ),
        (
            "numbers at the edges",
            "\"release\":\"1.2.3\"",
            "\"big\":1e15,\"n\":-0,\"u\":18446744073709551616,\"i\":-9223372036854775809",
        ),
        (
            "whitespace around details",
            "\"details\":{",
            "\"details\" : \n {  ",
        ),
    ];
    for (name, from, to) in swaps {
        add(name, raw(&mut rng, from, to));
    }
    let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
    add(
        "details nested deeper than the parser allows",
        raw(
            &mut rng,
            "\"release\":\"1.2.3\"",
            &format!("\"deep\":{deep}"),
        ),
    );
    out
}

/// A row of a query, as JSON values (`details` columns parsed, so that
/// the fast path's text as sent compares with the reference's re-serialised
/// one by what they mean).
fn rows(s: &Server, sql: &str) -> Vec<Vec<Value>> {
    let c = rusqlite::Connection::open_with_flags(
        s.db.path(),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let mut st = c.prepare(sql).unwrap();
    let names: Vec<String> = st.column_names().iter().map(|n| n.to_string()).collect();
    let n = names.len();
    st.query_map([], |r| {
        (0..n)
            .map(|i| {
                use rusqlite::types::ValueRef;
                Ok(match r.get_ref(i)? {
                    ValueRef::Null => Value::Null,
                    ValueRef::Integer(x) => json!(x),
                    ValueRef::Real(x) => json!(x),
                    ValueRef::Text(t) => {
                        let t = String::from_utf8_lossy(t).into_owned();
                        match names[i].as_str() {
                            "details" | "labels" => serde_json::from_str(&t)
                                .unwrap_or_else(|e| panic!("stored {} {t}: {e}", names[i])),
                            _ => json!(t),
                        }
                    }
                    ValueRef::Blob(b) => json!(b),
                })
            })
            .collect()
    })
    .unwrap()
    .collect::<Result<_, _>>()
    .unwrap()
}

/// What the reporter stored, less what depends on the moment of receipt.
fn stored(s: &Server) -> Vec<Vec<Vec<Value>>> {
    vec![
        rows(
            s,
            "SELECT id, agent_id, ts, kind, status, severity, component, message, from_version,
                    to_version, channel, wave, details FROM events ORDER BY seq",
        ),
        rows(
            s,
            "SELECT agent_id, labels, version, channel, wave, last_error, last_error_ts,
                    event_count FROM agents ORDER BY agent_id",
        ),
        rows(
            s,
            "SELECT channel, release, agent_id, state, wave, message FROM agent_release
             ORDER BY channel, release, agent_id",
        ),
    ]
}

async fn post(s: &Server, token: &str, body: Vec<u8>) -> (u16, Value) {
    let r = s
        .http
        .post(s.url("/api/v1/events"))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fast_path_answers_and_stores_as_the_reference_path_does() {
    let (fast_side, reference_side) = (Server::start().await, Server::start().await);
    let mut tokens = Vec::new();
    for s in [&fast_side, &reference_side] {
        let a = s.enroll("a").await;
        s.enroll("b").await;
        tokens.push(a);
    }
    let cases = cases();
    let (mut went_fast, mut accepted) = (0, 0);
    for (name, body) in cases {
        let slow = padded(&body);
        // The padded batch never goes the fast way (a batch with no
        // `details` to pad, such as an empty one, is sent as it is); the
        // other goes it whenever the fast path takes it.
        assert!(
            slow == body || fast::check(Bytes::from(slow.clone()), "a").is_none(),
            "{name}: the padded batch must go the reference way"
        );
        let fast_took = fast::check(Bytes::from(body.clone()), "a").is_some();
        went_fast += usize::from(fast_took);
        let (fs, fa) = post(&fast_side, &tokens[0], body).await;
        let (rs, ra) = post(&reference_side, &tokens[1], slow).await;
        assert_eq!(
            fs, rs,
            "{name}: the fast side answered {fs} {fa}, the reference side {rs} {ra}"
        );
        if fs == 200 {
            accepted += 1;
            assert_eq!(fa, ra, "{name}: the counts differ");
        } else {
            assert!(
                !fast_took,
                "{name}: the fast path took a batch refused with {fs}"
            );
        }
        let (f, r) = (stored(&fast_side), stored(&reference_side));
        for (table, (f, r)) in ["events", "agents", "agent_release"]
            .iter()
            .zip(f.iter().zip(&r))
        {
            assert_eq!(f, r, "{name}: the stored {table} differ");
        }
    }
    // The comparison means something only if both ways were taken often.
    assert!(
        went_fast >= 40,
        "only {went_fast} batches went the fast way"
    );
    assert!(accepted >= 60, "only {accepted} batches were accepted");
    assert!(
        !stored(&fast_side)[0].is_empty(),
        "events were stored on both sides"
    );
    fast_side.stop().await;
    reference_side.stop().await;
}
