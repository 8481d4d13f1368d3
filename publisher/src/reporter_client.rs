//! A blocking client for the reporter's admin API, for `status` and `plan`.
//!
//! The routes and bodies are the reporter's (`flotilla_reporter`, types in
//! [`flotilla_protocol::api`]); this reads three of them:
//!
//! | call | route |
//! |---|---|
//! | [`ReporterClient::rollouts`] | `GET /api/v1/rollouts[?channel=C]` |
//! | [`ReporterClient::rollout`] | `GET /api/v1/rollouts/{channel}/{release}` |
//! | [`ReporterClient::agents`] | `GET /api/v1/agents?sort=agent_id&limit=1000&offset=N`, every page |
//!
//! Every call carries the admin token as `Authorization: Bearer`. The token
//! comes from a file (refused when group or others may read it, as the
//! publisher refuses such private keys) or from [`TOKEN_ENV`]; see
//! [`AdminToken::find`]. Errors name the URL and what went wrong, in the
//! operator's terms: a 401 is "the reporter refused the admin token", a
//! connection failure names the address that did not answer.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use flotilla_protocol::api::{AgentList, AgentSummary, ApiError, RolloutList, RolloutProgress};
use serde::de::DeserializeOwned;
use url::Url;

/// The environment variable `status` and `plan` read the admin token from
/// when no `--token-file` is given.
pub const TOKEN_ENV: &str = "FLOTILLA_REPORTER_TOKEN";

/// Largest answer read from the reporter.
const MAX_BODY: u64 = 64 * 1024 * 1024;
/// Agents per `GET /api/v1/agents` page (the reporter's maximum).
const AGENTS_PAGE: usize = 1000;

/// What went wrong talking to the reporter.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReporterError {
    /// No admin token was given.
    #[error("no admin token for the reporter: give --token-file F (mode 0600) or set {TOKEN_ENV}")]
    NoToken,
    /// The token file is unusable.
    #[error("{}: {reason}", path.display())]
    TokenFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The reporter URL is unusable.
    #[error("--reporter {url:?}: {reason}")]
    BadUrl {
        /// The URL as given.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// 401: the admin token is wrong, or the reporter has none configured.
    #[error("{url}: the reporter refused the admin token (HTTP 401: {message}); check --token-file or {TOKEN_ENV}, and the reporter's --admin-token-file")]
    Unauthorized {
        /// The request URL.
        url: String,
        /// The reporter's reason.
        message: String,
    },
    /// Any other HTTP error status.
    #[error("{url}: HTTP {status}: {message}")]
    Status {
        /// The request URL.
        url: String,
        /// The status code.
        status: u16,
        /// The reporter's reason (its `ApiError`), or the start of the body.
        message: String,
    },
    /// No HTTP answer at all: DNS, connection refused, TLS, timeout.
    #[error("cannot reach the reporter at {addr} ({url}): {reason}")]
    Unreachable {
        /// `host:port`.
        addr: String,
        /// The request URL.
        url: String,
        /// The transport error, with its causes.
        reason: String,
    },
    /// The answer could not be read or is not what the API promises.
    #[error("{url}: the reporter's answer is not a {what}: {reason}")]
    Body {
        /// The request URL.
        url: String,
        /// The expected type.
        what: &'static str,
        /// Why not.
        reason: String,
    },
}

/// The reporter's admin token. `Debug` does not show it.
#[derive(Clone)]
pub struct AdminToken(String);

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(…)")
    }
}

impl AdminToken {
    /// The token from `file` if given, else from `env` (the value of
    /// [`TOKEN_ENV`], which the caller reads); surrounding whitespace is
    /// dropped.
    pub fn find(file: Option<&Path>, env: Option<String>) -> Result<AdminToken, ReporterError> {
        match (file, env) {
            (Some(path), _) => AdminToken::from_file(path),
            (None, Some(v)) if !v.trim().is_empty() => Ok(AdminToken(v.trim().to_owned())),
            (None, _) => Err(ReporterError::NoToken),
        }
    }

    /// Reads a token file, refusing one that group or others may read or
    /// write (the rule the publisher applies to private keys).
    pub fn from_file(path: &Path) -> Result<AdminToken, ReporterError> {
        let fail = |reason: String| ReporterError::TokenFile {
            path: path.to_owned(),
            reason,
        };
        let meta = std::fs::metadata(path).map_err(|e| fail(e.to_string()))?;
        if let Some(mode) = flotilla_signing::fs::loose_mode(&meta) {
            return Err(fail(format!(
                "admin token file {}",
                flotilla_signing::fs::loose_mode_advice(path, mode)
            )));
        }
        let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
        let token = text.trim();
        if token.is_empty() {
            return Err(fail("the admin token file is empty".into()));
        }
        Ok(AdminToken(token.to_owned()))
    }
}

/// A client for one reporter.
pub struct ReporterClient {
    base: Url,
    token: AdminToken,
    http: ureq::Agent,
}

impl std::fmt::Debug for ReporterClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReporterClient")
            .field("base", &self.base.as_str())
            .finish_non_exhaustive()
    }
}

impl ReporterClient {
    /// A client for the reporter at `base` (`http://` or `https://`; a path
    /// prefix such as `https://ops.example.com/reporter/` is kept).
    pub fn new(base: &str, token: AdminToken) -> Result<ReporterClient, ReporterError> {
        let bad = |reason: &str| ReporterError::BadUrl {
            url: base.to_owned(),
            reason: reason.to_owned(),
        };
        if !base.contains("://") {
            // `127.0.0.1:9` or `reporter.example.com`: the url crate would say
            // "relative URL without a base".
            return Err(bad(&format!(
                "no scheme: give http:// or https://, e.g. http://{base} (https:// for a \
                 reporter behind TLS)"
            )));
        }
        let mut url = Url::parse(base).map_err(|e| bad(&e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(bad(
                "expected http(s)://HOST[:PORT][/PREFIX], e.g. https://reporter.example.com",
            ));
        }
        url.set_query(None);
        url.set_fragment(None);
        if !url.path().ends_with('/') {
            let p = format!("{}/", url.path());
            url.set_path(&p);
        }
        let http = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(10))
            .timeout_read(Duration::from_secs(60))
            .timeout_write(Duration::from_secs(60))
            .user_agent(concat!("flotilla-publisher/", env!("CARGO_PKG_VERSION")))
            .tls_connector(Arc::new(crate::tls::RustlsConnector::default()))
            .build();
        Ok(ReporterClient {
            base: url,
            token,
            http,
        })
    }

    /// The reporter's base URL.
    pub fn base(&self) -> &Url {
        &self.base
    }

    /// `GET /api/v1/rollouts`: each channel's current rollout, or only
    /// `channel`'s.
    pub fn rollouts(&self, channel: Option<&str>) -> Result<RolloutList, ReporterError> {
        let mut url = self.url(&["api", "v1", "rollouts"]);
        if let Some(c) = channel {
            url.query_pairs_mut().append_pair("channel", c);
        }
        self.get(url, "rollout list")
    }

    /// `GET /api/v1/rollouts/{channel}/{release}`.
    pub fn rollout(&self, channel: &str, release: &str) -> Result<RolloutProgress, ReporterError> {
        self.get(
            self.url(&["api", "v1", "rollouts", channel, release]),
            "rollout progress",
        )
    }

    /// Every agent the reporter knows (revoked ones left out), by id,
    /// reading `GET /api/v1/agents` page by page.
    pub fn agents(&self) -> Result<Vec<AgentSummary>, ReporterError> {
        let mut all: Vec<AgentSummary> = Vec::new();
        loop {
            let mut url = self.url(&["api", "v1", "agents"]);
            url.query_pairs_mut()
                .append_pair("sort", "agent_id")
                .append_pair("limit", &AGENTS_PAGE.to_string())
                .append_pair("offset", &all.len().to_string());
            let page: AgentList = self.get(url, "agent list")?;
            let n = page.agents.len();
            all.extend(page.agents);
            if n < AGENTS_PAGE || all.len() as u64 >= page.total {
                break;
            }
        }
        // An agent enrolling between two pages shifts the offsets by one.
        all.dedup_by(|a, b| a.agent_id == b.agent_id);
        Ok(all)
    }

    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .expect("http(s) URLs have a path")
            .pop_if_empty()
            .extend(segments);
        url
    }

    fn get<T: DeserializeOwned>(&self, url: Url, what: &'static str) -> Result<T, ReporterError> {
        let shown = url.to_string();
        let answer = self
            .http
            .request_url("GET", &url)
            .set("Authorization", &format!("Bearer {}", self.token.0))
            .set("Accept", "application/json")
            .call();
        let resp = match answer {
            Ok(r) => r,
            Err(ureq::Error::Status(status, resp)) => {
                let message = error_message(resp);
                return Err(if status == 401 {
                    ReporterError::Unauthorized {
                        url: shown,
                        message,
                    }
                } else {
                    ReporterError::Status {
                        url: shown,
                        status,
                        message,
                    }
                });
            }
            Err(ureq::Error::Transport(t)) => {
                let reason = crate::error::chain_text(&t);
                // ureq starts its message with the URL, which is said already.
                let reason = match reason.strip_prefix(&format!("{shown}: ")) {
                    Some(rest) => rest.to_owned(),
                    None => reason,
                };
                return Err(ReporterError::Unreachable {
                    addr: address(&url),
                    url: shown,
                    reason,
                });
            }
        };
        let body = read_body(resp).map_err(|e| ReporterError::Body {
            url: shown.clone(),
            what,
            reason: e.to_string(),
        })?;
        serde_json::from_slice(&body).map_err(|e| ReporterError::Body {
            url: shown,
            what,
            reason: e.to_string(),
        })
    }
}

fn read_body(resp: ureq::Response) -> std::io::Result<Vec<u8>> {
    let mut body = Vec::new();
    resp.into_reader()
        .take(MAX_BODY + 1)
        .read_to_end(&mut body)?;
    if body.len() as u64 > MAX_BODY {
        return Err(std::io::Error::other(format!(
            "larger than {} MiB",
            MAX_BODY >> 20
        )));
    }
    Ok(body)
}

/// The reporter's `ApiError` message; else the status text and the start
/// of the body on one line (a proxy's error page, another service).
fn error_message(resp: ureq::Response) -> String {
    let status_text = resp.status_text().to_owned();
    let body = read_body(resp).unwrap_or_default();
    if let Ok(e) = serde_json::from_slice::<ApiError>(&body) {
        return e.error;
    }
    let text = String::from_utf8_lossy(&body);
    let words: Vec<&str> = text.split_whitespace().collect();
    if words.is_empty() {
        return status_text;
    }
    let mut snippet: String = words.join(" ").chars().take(100).collect();
    if snippet.len() < words.join(" ").len() {
        snippet.push('…');
    }
    format!("{status_text}; not an answer of a Flotilla reporter (is the URL right?): {snippet}")
}

fn address(url: &Url) -> String {
    let host = url.host_str().unwrap_or("?");
    match url.port_or_known_default() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn client(base: &str) -> Result<ReporterClient, ReporterError> {
        ReporterClient::new(base, AdminToken("t".into()))
    }

    #[test]
    fn urls_keep_a_prefix_and_escape_segments() {
        let c = client("https://ops.example.com/reporter").unwrap();
        assert_eq!(
            c.url(&["api", "v1", "rollouts", "a b", "1.0.0"]).as_str(),
            "https://ops.example.com/reporter/api/v1/rollouts/a%20b/1.0.0"
        );
        let c = client("http://127.0.0.1:8080/").unwrap();
        assert_eq!(
            c.url(&["api", "v1", "agents"]).as_str(),
            "http://127.0.0.1:8080/api/v1/agents"
        );
        assert!(client("ftp://x").is_err());
        assert!(client("reporter.example.com").is_err());
    }

    #[test]
    fn token_from_file_env_or_neither() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("t");
        std::fs::write(&f, "  secret\n").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o640)).unwrap();
        let e = AdminToken::find(Some(&f), None).unwrap_err().to_string();
        assert!(e.contains("mode 0640") && e.contains("chmod 600"), "{e}");
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(
            AdminToken::find(Some(&f), Some("env".into())).unwrap().0,
            "secret"
        );
        assert_eq!(
            AdminToken::find(None, Some(" env ".into())).unwrap().0,
            "env"
        );
        assert!(matches!(
            AdminToken::find(None, Some("".into())),
            Err(ReporterError::NoToken)
        ));
        assert_eq!(
            format!("{:?}", AdminToken("secret".into())),
            "AdminToken(…)"
        );
    }
}
