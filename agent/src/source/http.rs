//! A static store (S3 bucket, CDN, mirror, any web server) as a source.
//!
//! `GET <url>/manifest.json` is conditional: the ETag and Last-Modified of
//! the last *accepted* manifest go out as `If-None-Match` /
//! `If-Modified-Since`, and `304 Not Modified` means nothing new (the cached
//! `state_dir/manifest.json` is verified again). Roots are
//! `GET <url>/root/<n>.root.json`; 404, 403 (what S3 answers for a missing
//! key without list permission) and 410 end the chain. A body larger than
//! [`MAX_METADATA`] is refused, and so is one that arrives slower than
//! `update.min_rate`.

use std::io::Read;

use serde::{Deserialize, Serialize};

use super::{Fetched, ManifestSource, MAX_METADATA};
use crate::error::{Error, Result, Transfer};
use crate::http::{MinRate, RateGuard};
use crate::state::StateDir;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct HttpCache {
    url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    etag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last_modified: Option<String>,
}

/// A static store reached over HTTP(S).
pub struct HttpSource {
    base: String,
    state: StateDir,
    http: ureq::Agent,
    min_rate: MinRate,
    fetched: Option<HttpCache>,
}

impl HttpSource {
    /// A source at `base` (a trailing `/` is implied).
    pub fn new(base: &str, state: &StateDir, http: ureq::Agent, min_rate: MinRate) -> Self {
        let mut base = base.to_owned();
        if !base.ends_with('/') {
            base.push('/');
        }
        HttpSource {
            base,
            state: state.clone(),
            http,
            min_rate,
            fetched: None,
        }
    }

    fn cache(&self, url: &str) -> Option<HttpCache> {
        // Only ask conditionally if the accepted manifest is still on disk.
        if !self.state.manifest_file().exists() {
            return None;
        }
        let bytes = std::fs::read(self.state.http_cache_file()).ok()?;
        let c: HttpCache = serde_json::from_slice(&bytes).ok()?;
        (c.url == url).then_some(c)
    }

    fn get(&self, url: &str, cache: Option<&HttpCache>) -> Result<Option<ureq::Response>> {
        let mut req = self.http.get(url);
        if let Some(c) = cache {
            if let Some(e) = &c.etag {
                req = req.set("If-None-Match", e);
            }
            if let Some(m) = &c.last_modified {
                req = req.set("If-Modified-Since", m);
            }
        }
        match req.call() {
            Ok(r) => Ok(Some(r)),
            Err(ureq::Error::Status(404 | 403 | 410, _)) => Ok(None),
            Err(e) => Err(Error::Fetch {
                url: url.to_owned(),
                source: Transfer::Http(Box::new(e)),
            }),
        }
    }
}

fn body(url: &str, resp: ureq::Response, min_rate: MinRate) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    RateGuard::new(resp.into_reader(), min_rate)
        .take(MAX_METADATA + 1)
        .read_to_end(&mut out)
        .map_err(|e| Error::Fetch {
            url: url.to_owned(),
            source: Transfer::body(e),
        })?;
    if out.len() as u64 > MAX_METADATA {
        return Err(Error::Fetch {
            url: url.to_owned(),
            source: Transfer::Refused(format!("larger than {MAX_METADATA} bytes")),
        });
    }
    Ok(out)
}

impl ManifestSource for HttpSource {
    fn fetch(&mut self) -> Result<Fetched> {
        let url = format!("{}manifest.json", self.base);
        let cache = self.cache(&url);
        let resp = self
            .get(&url, cache.as_ref())?
            .ok_or_else(|| Error::Fetch {
                url: url.clone(),
                source: Transfer::Refused(
                    "not found (HTTP 404); has the fleet been published?".into(),
                ),
            })?;
        if resp.status() == 304 {
            return Ok(Fetched::Unchanged);
        }
        if resp.status() != 200 {
            return Err(Error::Fetch {
                url,
                source: Transfer::Refused(format!("unexpected HTTP {}", resp.status())),
            });
        }
        let next = HttpCache {
            url: url.clone(),
            etag: resp.header("ETag").map(str::to_owned),
            last_modified: resp.header("Last-Modified").map(str::to_owned),
        };
        let envelope = body(&url, resp, self.min_rate)?;
        self.fetched = Some(next);
        Ok(Fetched::New {
            envelope,
            origin: flotilla_protocol::redact_urls(&url).into_owned(),
        })
    }

    fn root(&mut self, n: u64) -> Result<Option<Vec<u8>>> {
        let url = format!("{}root/{n}.root.json", self.base);
        match self.get(&url, None)? {
            None => Ok(None),
            Some(r) if r.status() == 200 => body(&url, r, self.min_rate).map(Some),
            Some(r) => Err(Error::Fetch {
                url,
                source: Transfer::Refused(format!("unexpected HTTP {}", r.status())),
            }),
        }
    }

    fn accepted(&mut self) -> Result<()> {
        if let Some(c) = self.fetched.take() {
            if c.etag.is_some() || c.last_modified.is_some() {
                let bytes = serde_json::to_vec(&c).expect("cache serialises");
                self.state.write(&self.state.http_cache_file(), &bytes)?;
            }
        }
        Ok(())
    }
}
