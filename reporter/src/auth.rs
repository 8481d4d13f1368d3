//! Authentication, as extractors, and who the client is.
//!
//! Credentials (`Authorization: Bearer …`):
//!
//! - the **admin** token (`--admin-token-file`): everything, and the web login;
//! - a **read** token (`flotilla-reporter token create --scope read`, stored
//!   as its SHA-256): only the GET routes the router marks [`ReadRoute`]
//!   (agents, rollouts, gate, metrics); anything else answers 403;
//! - an **agent** token of an enrolled, non-revoked agent.
//!
//! Extractors: [`AgentAuth`] (an agent), [`AdminAuth`] (the admin, or a read
//! token on a [`ReadRoute`]), [`GateAuth`] (any of the three).
//!
//! A missing, unknown or revoked token answers 401 with `WWW-Authenticate:
//! Bearer`. Wrong tokens are counted per client address ([`client_ip`]): an
//! address that made too many (`auth_failure_burst`, refilled at
//! `auth_failures_per_minute`) gets 429 until its bucket refills, *before*
//! its token is looked at. Other addresses, and so the admin's, are never
//! affected by it.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::http::{Extensions, HeaderMap, Method, StatusCode};

use crate::error::AppError;
use crate::state::AppState;
use crate::tokens;

/// The bearer token of a request, if any.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Whether `token` is the admin token.
pub fn is_admin(state: &AppState, token: &str) -> bool {
    state
        .settings
        .admin_token
        .as_ref()
        .is_some_and(|a| tokens::constant_time_eq(a.expose().as_bytes(), token.as_bytes()))
}

/// The client's address: the peer, or, when the peer is one of
/// `trusted_proxies`, the nearest address in `X-Forwarded-For` that is not a
/// trusted proxy (the header is read right to left: each proxy appends the
/// address it saw). Without a known peer (a router called in-process):
/// the unspecified address.
pub fn client_ip(state: &AppState, headers: &HeaderMap, ext: &Extensions) -> IpAddr {
    let peer = ext
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_canonical())
        .unwrap_or(IpAddr::V6(Ipv6Addr::UNSPECIFIED));
    let trusted = &state.settings.trusted_proxies;
    if !trusted.contains(&peer) {
        return peer;
    }
    let mut client = peer;
    for value in headers.get_all("x-forwarded-for").iter().rev() {
        let Ok(v) = value.to_str() else { return client };
        for hop in v.rsplit(',') {
            match hop.trim().parse::<IpAddr>() {
                Ok(ip) => {
                    client = ip.to_canonical();
                    if !trusted.contains(&client) {
                        return client;
                    }
                }
                // A hop we cannot read: the last one we could is the client.
                Err(_) => return client,
            }
        }
    }
    client
}

/// The key of an address in the per-address limits: an IPv6 address by its
/// /64 (one host usually holds a whole /64), an IPv4 address as it is.
pub fn limit_key(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
    }
}

/// Refuses with 429 when the client address has used up its failed
/// authentications; call before looking at the credential.
pub fn check_failures(state: &AppState, ip: IpAddr) -> Result<(), AppError> {
    state.auth_limiter.peek(&limit_key(ip)).map_err(|wait| {
        AppError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too many failed authentications from this address; wait and retry",
        )
        .retry_after(wait.as_secs().max(1))
    })
}

/// Counts one failed authentication of the client address.
pub fn count_failure(state: &AppState, ip: IpAddr) {
    let _ = state.auth_limiter.check(&limit_key(ip));
}

/// Marks a GET route a `read` token may use (the router adds it as an
/// extension to exactly those routes).
#[derive(Clone, Copy, Debug)]
pub struct ReadRoute;

/// A valid credential.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Credential {
    /// The admin token.
    Admin,
    /// A `read` token.
    Read,
    /// An agent token: the agent's id.
    Agent(String),
}

async fn credential(state: &AppState, token: &str) -> Result<Option<Credential>, AppError> {
    if is_admin(state, token) {
        return Ok(Some(Credential::Admin));
    }
    let t = token.to_owned();
    if token.starts_with(tokens::READ_PREFIX) {
        let now = chrono::Utc::now();
        let ok = state.store.read_token_active(t, now).await?;
        return Ok(ok.then_some(Credential::Read));
    }
    if !flotilla_protocol::api::is_agent_token_shaped(token) {
        return Ok(None);
    }
    Ok(state.store.agent_for_token(t).await?.map(Credential::Agent))
}

/// The request's credential: 429 if its address failed too often, 401 if
/// it has none or a wrong one (counted as a failure).
pub async fn authenticate(parts: &Parts, state: &AppState) -> Result<Credential, AppError> {
    let ip = client_ip(state, &parts.headers, &parts.extensions);
    check_failures(state, ip)?;
    let Some(token) = bearer(&parts.headers) else {
        return Err(AppError::unauthorized("missing bearer token"));
    };
    match credential(state, token).await? {
        Some(c) => Ok(c),
        None => {
            count_failure(state, ip);
            Err(AppError::unauthorized("unknown, expired or revoked token"))
        }
    }
}

fn read_token_refused(what: &str) -> AppError {
    AppError::forbidden(format!(
        "a read token cannot {what}; it only reads agents, rollouts, the gate and metrics"
    ))
}

/// An authenticated agent.
#[derive(Clone, Debug)]
pub struct AgentAuth {
    /// Its id.
    pub agent_id: String,
}

impl FromRequestParts<AppState> for AgentAuth {
    type Rejection = AppError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        let refused = |e: AppError| {
            state.metrics.rejected(match e.status {
                StatusCode::TOO_MANY_REQUESTS => "rate_limited",
                StatusCode::FORBIDDEN => "forbidden",
                _ => "unauthorized",
            });
            e
        };
        match authenticate(parts, state).await.map_err(refused)? {
            Credential::Agent(agent_id) => Ok(AgentAuth { agent_id }),
            Credential::Read => Err(refused(read_token_refused("send events"))),
            Credential::Admin => Err(refused(AppError::unauthorized(
                "this route takes an agent token",
            ))),
        }
    }
}

/// The admin; or a `read` token on a GET route marked [`ReadRoute`].
#[derive(Clone, Copy, Debug)]
pub struct AdminAuth;

impl FromRequestParts<AppState> for AdminAuth {
    type Rejection = AppError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        if state.settings.admin_token.is_none() && bearer(&parts.headers).is_none() {
            return Err(AppError::unauthorized(
                "no admin token is configured (--admin-token-file)",
            ));
        }
        match authenticate(parts, state).await? {
            Credential::Admin => Ok(AdminAuth),
            Credential::Read
                if matches!(parts.method, Method::GET | Method::HEAD)
                    && parts.extensions.get::<ReadRoute>().is_some() =>
            {
                Ok(AdminAuth)
            }
            Credential::Read => Err(read_token_refused("use this route")),
            Credential::Agent(_) => Err(AppError::unauthorized(
                "this route takes the admin token or a read token",
            )),
        }
    }
}

/// The admin, a read token or any enrolled agent.
#[derive(Clone, Debug)]
pub enum GateAuth {
    /// The admin token.
    Admin,
    /// A read token.
    Read,
    /// An agent token.
    Agent(String),
}

impl FromRequestParts<AppState> for GateAuth {
    type Rejection = AppError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        Ok(match authenticate(parts, state).await? {
            Credential::Admin => GateAuth::Admin,
            Credential::Read => GateAuth::Read,
            Credential::Agent(a) => GateAuth::Agent(a),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_is_limited_per_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        assert_eq!(limit_key(a), limit_key(b));
        assert_eq!(limit_key("192.0.2.7".parse().unwrap()), "192.0.2.7");
    }
}
