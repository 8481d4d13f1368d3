//! The common case of `POST /api/v1/events`, without copies: the batch is
//! parsed with its strings borrowed from the body (a [`Batch`] keeps them
//! as spans of it), `details` is checked the way `serde_json::Value`
//! would parse it but kept as the sender's text, and every check of
//! [`super::check_slowly`] is applied. Anything unusual (a parse error, a
//! failed check, a large `details`) makes [`check`] decline, and the
//! reference path answers, so both accept exactly the same batches.

use std::borrow::Cow;
use std::fmt;

use axum::body::Bytes;
use chrono::{DateTime, Utc};
use flotilla_protocol::api::{details as keys, MAX_BATCH_EVENTS};
use flotilla_protocol::event::{has_nul, valid_agent_id, MAX_DETAILS, MAX_MESSAGE, MAX_SHORT};
use flotilla_protocol::{EventKind, EventStatus, Severity};
use serde::de::{Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use uuid::Uuid;

use super::MAX_CLOCK_AHEAD;
use crate::db::ingest::{Batch, Row, Text, SPECIAL_KEYS};
use crate::db::to_micros;

#[derive(Deserialize)]
struct WireBatch<'a> {
    #[serde(borrow)]
    events: Vec<WireEvent<'a>>,
}

/// [`flotilla_protocol::Event`], borrowing.
#[derive(Deserialize)]
struct WireEvent<'a> {
    id: Uuid,
    #[serde(borrow)]
    agent_id: Cow<'a, str>,
    ts: DateTime<Utc>,
    kind: EventKind,
    status: EventStatus,
    severity: Severity,
    #[serde(borrow)]
    component: Cow<'a, str>,
    #[serde(borrow)]
    message: Cow<'a, str>,
    #[serde(default, borrow)]
    from_version: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    to_version: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    channel: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    wave: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    details: Details<'a>,
}

/// `details` as sent (`None`: absent, an empty object).
#[derive(Default)]
struct Details<'a>(Option<&'a RawValue>);

impl<'de: 'a, 'a> Deserialize<'de> for Details<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        <&'a RawValue>::deserialize(d).map(|r| Details(Some(r)))
    }
}

/// What [`crate::db::ingest`] reads from `details`, found while checking
/// that it parses as a JSON object.
#[derive(Default)]
struct Scan<'a> {
    release: Option<Cow<'a, str>>,
    agent_version: Option<Cow<'a, str>>,
    special: bool,
}

impl<'de> Deserialize<'de> for Scan<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Scan<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Scan<'de>, A::Error> {
                let mut s = Scan::default();
                while let Some(Str(k)) = m.next_key()? {
                    match &*k {
                        keys::RELEASE => s.release = m.next_value::<MaybeStr>()?.0,
                        keys::AGENT_VERSION => s.agent_version = m.next_value::<MaybeStr>()?.0,
                        k => {
                            s.special |= SPECIAL_KEYS.contains(&k);
                            m.next_value::<Any>()?;
                        }
                    }
                }
                Ok(s)
            }
        }
        d.deserialize_map(V)
    }
}

/// A string, borrowed when it has no escapes.
struct Str<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Str<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Str<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Str<'de>, E> {
                Ok(Str(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Str<'de>, E> {
                Ok(Str(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(V)
    }
}

/// Any JSON value, parsed as `serde_json::Value` would (numbers in
/// range, strings well escaped, the same depth limit) but not kept; the
/// string, if it is one.
struct MaybeStr<'a>(Option<Cow<'a, str>>);
/// Any JSON value, as [`MaybeStr`], not kept.
struct Any;

impl<'de> Deserialize<'de> for Any {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(AnyVisitor).map(|_| Any)
    }
}

impl<'de> Deserialize<'de> for MaybeStr<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(AnyVisitor).map(MaybeStr)
    }
}

struct AnyVisitor;

impl<'de> Visitor<'de> for AnyVisitor {
    type Value = Option<Cow<'de, str>>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Some(Cow::Borrowed(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Some(Cow::Owned(v.to_owned())))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<Self::Value, A::Error> {
        while s.next_element::<Any>()?.is_some() {}
        Ok(None)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Self::Value, A::Error> {
        while m.next_key::<Any>()?.is_some() {
            m.next_value::<Any>()?;
        }
        Ok(None)
    }
}

/// `details` larger than this (as sent) go the reference way: its size
/// limit is on the *re-serialised* text, which can be up to 4.5 times
/// the sent one (`1e15` becomes `1000000000000000.0`).
const RAW_DETAILS_FAST: usize = MAX_DETAILS / 5;

/// The batch, if every check passes; `None` to let the reference path decide.
pub fn check(body: Bytes, agent_id: &str) -> Option<Batch> {
    let rows = rows(&body, agent_id)?;
    Some(Batch { body, rows })
}

fn rows(body: &[u8], agent_id: &str) -> Option<Vec<Row>> {
    // One UTF-8 check of the whole body, rather than one per string.
    let wire: WireBatch = serde_json::from_str(std::str::from_utf8(body).ok()?).ok()?;
    if wire.events.len() > MAX_BATCH_EVENTS {
        return None;
    }
    let latest = Utc::now() + MAX_CLOCK_AHEAD;
    let range = body.as_ptr_range();
    let text = |s: &Cow<str>| match s {
        Cow::Borrowed(b) if range.contains(&b.as_ptr()) => {
            let start = b.as_ptr() as usize - range.start as usize;
            Text::Span(start as u32, (start + b.len()) as u32)
        }
        _ => Text::Owned((**s).into()),
    };
    let short = |s: &Option<Cow<str>>| {
        s.as_ref()
            .is_some_and(|s| s.len() > MAX_SHORT || has_nul(s))
    };
    let mut rows = Vec::with_capacity(wire.events.len());
    for e in &wire.events {
        // `Event::validate`, then the handler's own checks.
        if !e.kind.statuses().contains(&e.status)
            || !valid_agent_id(&e.agent_id)
            || e.message.len() > MAX_MESSAGE
            || e.component.len() > MAX_SHORT
            || has_nul(&e.message)
            || has_nul(&e.component)
            || short(&e.from_version)
            || short(&e.to_version)
            || short(&e.channel)
            || short(&e.wave)
            || e.ts > latest
            || e.agent_id != agent_id
        {
            return None;
        }
        let (details, scan) = match e.details.0 {
            None => (Text::Owned("{}".into()), Scan::default()),
            Some(raw) => {
                let raw = raw.get();
                if raw.len() > RAW_DETAILS_FAST || !raw.starts_with('{') {
                    return None;
                }
                let scan: Scan = serde_json::from_str(raw).ok()?;
                (text(&Cow::Borrowed(raw)), scan)
            }
        };
        rows.push(Row {
            id: *e.id.as_bytes(),
            ts: to_micros(e.ts),
            kind: e.kind,
            status: e.status,
            severity: e.severity,
            component: text(&e.component),
            message: text(&e.message),
            from_version: e.from_version.as_ref().map(text),
            to_version: e.to_version.as_ref().map(text),
            channel: e.channel.as_ref().map(text),
            wave: e.wave.as_ref().map(text),
            details,
            release: scan.release.as_ref().map(text),
            agent_version: scan.agent_version.as_ref().map(text),
            special: scan.special,
        });
    }
    Some(rows)
}

#[cfg(test)]
mod tests {
    use flotilla_protocol::Event;
    use serde_json::{json, Map, Value};

    use super::*;

    /// What the reference path makes of `body` for agent `a`.
    fn reference(body: &[u8]) -> Option<Vec<Event>> {
        let events = super::super::parse(body).ok()?;
        let latest = Utc::now() + MAX_CLOCK_AHEAD;
        events
            .iter()
            .all(|e| e.validate().is_ok() && e.ts <= latest && e.agent_id == "a")
            .then_some(events)
    }

    /// Checks that the fast path accepts only what the reference accepts,
    /// making the same rows; returns whether it accepted.
    fn same(body: Vec<u8>) -> bool {
        let text: String = String::from_utf8_lossy(&body).chars().take(400).collect();
        let fast = check(Bytes::from(body.clone()), "a");
        let slow = reference(&body);
        assert!(slow.is_some() || fast.is_none(), "{text}");
        let (Some(fast), Some(slow)) = (fast, slow) else {
            return false;
        };
        let want = Batch::from_events(&slow);
        assert_eq!(fast.rows.len(), want.rows.len());
        for (f, w) in fast.rows.iter().zip(&want.rows) {
            let t = |b: &Batch, x: &Text| b.text(x).to_owned();
            let o = |b: &Batch, x: &Option<Text>| x.as_ref().map(|x| b.text(x).to_owned());
            assert_eq!(
                (f.id, f.ts, f.kind, f.status, f.severity),
                (w.id, w.ts, w.kind, w.status, w.severity)
            );
            assert_eq!(t(&fast, &f.component), t(&want, &w.component));
            assert_eq!(t(&fast, &f.message), t(&want, &w.message));
            assert_eq!(o(&fast, &f.from_version), o(&want, &w.from_version));
            assert_eq!(o(&fast, &f.to_version), o(&want, &w.to_version));
            assert_eq!(o(&fast, &f.channel), o(&want, &w.channel));
            assert_eq!(o(&fast, &f.wave), o(&want, &w.wave));
            assert_eq!(o(&fast, &f.release), o(&want, &w.release), "{text}");
            assert_eq!(o(&fast, &f.agent_version), o(&want, &w.agent_version));
            assert_eq!(f.special, w.special, "{text}");
            let stored: Map<String, Value> = serde_json::from_str(fast.text(&f.details)).unwrap();
            let wanted: Map<String, Value> = serde_json::from_str(want.text(&w.details)).unwrap();
            assert_eq!(stored, wanted, "{text}");
        }
        true
    }

    fn event() -> Value {
        let mut e = Event::new(
            "a",
            EventKind::UpdateInstall,
            EventStatus::Success,
            "install",
            "installed 1.2.3",
        );
        e.to_version = Some("1.2.3".into());
        e.channel = Some("stable".into());
        e.details.insert("agent_version".into(), "1.2.2".into());
        e.details.insert("release".into(), "1.2.3".into());
        serde_json::to_value(e).unwrap()
    }

    fn with(f: impl Fn(&mut Value)) -> Vec<u8> {
        let mut e = event();
        f(&mut e);
        serde_json::to_vec(&json!({ "events": [event(), e] })).unwrap()
    }

    #[test]
    fn accepts_exactly_what_the_reference_accepts() {
        assert!(same(with(|_| {})));
        assert!(same(br#"{"events":[]}"#.to_vec()));
        assert!(same(br#"{"events":[], "extra": 1}"#.to_vec()));
        same(b"nope".to_vec());
        same(br#"{"events":{}}"#.to_vec());
        assert!(same(with(
            |e| e["message"] = "quote \" and \\ and \u{e9} \n".into()
        )));
        same(with(|e| e["component"] = "c".repeat(MAX_SHORT + 1).into()));
        same(with(|e| e["message"] = "m".repeat(MAX_MESSAGE + 1).into()));
        same(with(|e| e["wave"] = "w".repeat(MAX_SHORT + 1).into()));
        same(with(|e| e["message"] = "nul \u{0} here".into()));
        same(with(|e| e["channel"] = "st\u{0}able".into()));
        same(with(|e| e["agent_id"] = "b".into()));
        same(with(|e| e["agent_id"] = "".into()));
        same(with(|e| e["status"] = "partial".into()));
        same(with(|e| e["kind"] = "nonsense".into()));
        same(with(|e| e["ts"] = "2999-01-01T00:00:00Z".into()));
        same(with(|e| e["ts"] = "2024-01-01T00:00:00+02:00".into()));
        same(with(|e| e["ts"] = "yesterday".into()));
        same(with(|e| e["channel"] = Value::Null));
        assert!(same(with(|e| {
            e.as_object_mut().unwrap().remove("details");
        })));
        same(with(|e| e["details"] = Value::Null));
        same(with(|e| e["details"] = json!([1, 2])));
        same(with(|e| e["details"] = json!("x")));
        same(with(|e| {
            e["details"] = json!({"release": 3, "agent_version": null})
        }));
        assert!(same(with(
            |e| e["details"] = json!({"labels": {"role": "web"}, "x": [1, {"y": 2.5}]})
        )));
        same(with(|e| {
            e["details"] = json!({"waves": ["a", "b"], "min_reports": 3})
        }));
        same(with(|e| e["details"] = json!({"max_failure_rate": 0.1})));
        same(with(|e| {
            e["details"] = json!({"blob": "y".repeat(MAX_DETAILS)})
        }));
        same(with(|e| {
            e["details"] = json!({"blob": "y".repeat(RAW_DETAILS_FAST)})
        }));
        let e = serde_json::to_string(&event()).unwrap();
        for (from, to) in [
            // escapes in keys and values, duplicates, numbers out of range
            ("\"release\":\"1.2.3\"", "\"rel\\u0065ase\":\"1.2.\\u0033\""),
            (
                "\"release\":\"1.2.3\"",
                "\"release\":\"1\",\"release\":\"2\"",
            ),
            (
                "\"release\":\"1.2.3\"",
                "\"release\":\"1\",\"release\":false",
            ),
            ("\"release\":\"1.2.3\"", "\"big\":1e400"),
            (
                "\"release\":\"1.2.3\"",
                "\"big\":1e15, \"n\": -0, \"u\": 18446744073709551616",
            ),
            ("\"release\":\"1.2.3\"", "\"bad\":\"\\ud800\""),
            ("\"release\":\"1.2.3\"", "\"bad\":\"\\x\""),
            ("\"kind\":", "\"kind\":\"agent_startup\",\"kind\":"),
            ("\"details\":{", "\"details\" : \n {  "),
        ] {
            assert!(e.contains(from), "{from}");
            let b = format!("{{\"events\":[{}]}}", e.replacen(from, to, 1)).into_bytes();
            let ok = same(b.clone());
            assert_eq!(ok, reference(&b).is_some(), "{to}");
        }
    }
}
