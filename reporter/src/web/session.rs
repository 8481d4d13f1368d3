//! Admin sessions of the web page.
//!
//! `POST /login` with the admin token makes a session: a random 256-bit id
//! in a cookie (`HttpOnly`, `SameSite=Strict`, `Path=/`, `Secure` when
//! `public_url` is https or `cookie_secure` says so) and a CSRF token that every state-changing form carries in a
//! hidden field. Sessions are stored in the database by the SHA-256 of their
//! id ([`crate::db::sessions`]), so a login outlives a restart and, with
//! several replicas, holds on each; retention deletes expired ones.
//!
//! This module knows nothing of the app's state; the extractor that finds a
//! request's [`WebSession`] in [`crate::state::AppState`] lives there.

use std::time::Duration;

use axum::http::header::COOKIE;
use axum::http::HeaderMap;

use crate::db::{now_micros, DbError};
use crate::store::Store;
use crate::tokens;

/// The session cookie's name.
pub const COOKIE_NAME: &str = "flotilla_session";

/// The session rules (lifetime, hashing, cookie) over the store's
/// `web_sessions`.
pub struct Sessions {
    ttl: Duration,
}

impl Sessions {
    /// Sessions that live `ttl` from login.
    pub fn new(ttl: Duration) -> Sessions {
        Sessions { ttl }
    }

    /// A new session, stored: its cookie value.
    pub async fn create(&self, store: &Store) -> Result<String, DbError> {
        let id = tokens::random_hex256();
        let ttl = i64::try_from(self.ttl.as_micros()).unwrap_or(i64::MAX);
        let expires_at = now_micros().saturating_add(ttl);
        store
            .session_create(tokens::hash(&id), tokens::random_hex256(), expires_at)
            .await?;
        Ok(id)
    }

    /// The session of a cookie value, if live.
    pub async fn get(&self, store: &Store, id: &str) -> Result<Option<WebSession>, DbError> {
        let csrf = store.session_get(tokens::hash(id), now_micros()).await?;
        Ok(csrf.map(|csrf| WebSession {
            id: id.to_owned(),
            csrf,
        }))
    }

    /// Ends a session.
    pub async fn remove(&self, store: &Store, id: &str) -> Result<(), DbError> {
        store.session_remove(tokens::hash(id)).await
    }

    /// Deletes expired sessions; how many.
    pub async fn expire(&self, store: &Store) -> Result<usize, DbError> {
        store.sessions_expire(now_micros()).await
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

    #[tokio::test]
    async fn session_lifecycle() {
        let dir = tempfile::tempdir().unwrap();
        let (store, running) =
            Store::open_sqlite(&dir.path().join("r.db"), Default::default(), 1).unwrap();
        let s = Sessions::new(Duration::from_secs(60));
        let id = s.create(&store).await.unwrap();
        let w = s.get(&store, &id).await.unwrap().unwrap();
        assert_eq!(w.csrf.len(), 64);
        assert!(s.cookie(&id, false).contains("HttpOnly; SameSite=Strict"));
        s.remove(&store, &id).await.unwrap();
        assert!(s.get(&store, &id).await.unwrap().is_none());
        let gone = Sessions::new(Duration::ZERO);
        let old = gone.create(&store).await.unwrap();
        assert!(gone.get(&store, &old).await.unwrap().is_none(), "expired");
        assert_eq!(gone.expire(&store).await.unwrap(), 1);
        drop(store);
        running.stop().await;
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
