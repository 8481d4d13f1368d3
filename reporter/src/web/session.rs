//! Admin sessions of the web page.
//!
//! `POST /login` with the admin token makes a session: a random 256-bit id
//! in a cookie (`HttpOnly`, `SameSite=Strict`, `Path=/`, `Secure` when
//! `public_url` is https or `cookie_secure` says so) and a CSRF token that every state-changing form carries in a
//! hidden field. Sessions live in memory (a restart logs everybody out) and
//! are stored by the SHA-256 of their id.
//!
//! This module knows nothing of the app's state; the extractor that finds a
//! request's [`WebSession`] in [`crate::state::AppState`] lives there.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::header::COOKIE;
use axum::http::HeaderMap;

use crate::tokens;

/// The session cookie's name.
pub const COOKIE_NAME: &str = "flotilla_session";

#[derive(Clone)]
struct Entry {
    csrf: String,
    expires: Instant,
}

/// The live sessions.
pub struct Sessions {
    ttl: Duration,
    map: Mutex<HashMap<String, Entry>>,
}

impl Sessions {
    /// No sessions yet.
    pub fn new(ttl: Duration) -> Sessions {
        Sessions {
            ttl,
            map: Mutex::new(HashMap::new()),
        }
    }

    /// A new session: its cookie value.
    pub fn create(&self) -> String {
        let id = tokens::random_hex256();
        self.map.lock().expect("sessions").insert(
            tokens::hash(&id),
            Entry {
                csrf: tokens::random_hex256(),
                expires: Instant::now() + self.ttl,
            },
        );
        id
    }

    /// The session of a cookie value, if live.
    pub fn get(&self, id: &str) -> Option<WebSession> {
        let map = self.map.lock().expect("sessions");
        let e = map.get(&tokens::hash(id))?;
        (e.expires > Instant::now()).then(|| WebSession {
            id: id.to_owned(),
            csrf: e.csrf.clone(),
        })
    }

    /// Ends a session.
    pub fn remove(&self, id: &str) {
        self.map.lock().expect("sessions").remove(&tokens::hash(id));
    }

    /// Drops expired sessions.
    pub fn expire(&self) {
        let now = Instant::now();
        self.map
            .lock()
            .expect("sessions")
            .retain(|_, e| e.expires > now);
    }

    /// The `Set-Cookie` value for a new session.
    pub fn cookie(&self, id: &str, secure: bool) -> String {
        format!(
            "{COOKIE_NAME}={id}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}{}",
            self.ttl.as_secs(),
            if secure { "; Secure" } else { "" }
        )
    }
}

/// The `Set-Cookie` value that ends a session.
pub fn clear_cookie() -> String {
    format!("{COOKIE_NAME}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0")
}

/// A logged-in admin.
#[derive(Clone, Debug)]
pub struct WebSession {
    /// The cookie value.
    pub id: String,
    /// The CSRF token of this session.
    pub csrf: String,
}

/// The session cookie's value, if sent.
pub fn cookie_value(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE_NAME)
        .map(|(_, v)| v.to_owned())
}

/// Whether a form POST comes from this site: the `Origin` header, when the
/// browser sends one, must name the host the request was sent to. With
/// `SameSite=Strict` cookies and CSRF tokens this is a third line of defence.
pub fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get("origin").and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let Some(host) = headers.get("host").and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let bare = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        .unwrap_or("");
    bare == host
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_lifecycle() {
        let s = Sessions::new(Duration::from_secs(60));
        let id = s.create();
        let w = s.get(&id).unwrap();
        assert_eq!(w.csrf.len(), 64);
        assert!(s.cookie(&id, false).contains("HttpOnly; SameSite=Strict"));
        s.remove(&id);
        assert!(s.get(&id).is_none());
        let mut h = HeaderMap::new();
        h.insert("cookie", format!("a=b; {COOKIE_NAME}=xyz").parse().unwrap());
        assert_eq!(cookie_value(&h).as_deref(), Some("xyz"));
        h.insert("host", "127.0.0.1:8080".parse().unwrap());
        assert!(same_origin(&h));
        h.insert("origin", "http://127.0.0.1:8080".parse().unwrap());
        assert!(same_origin(&h));
        h.insert("origin", "http://evil.example".parse().unwrap());
        assert!(!same_origin(&h));
    }
}
