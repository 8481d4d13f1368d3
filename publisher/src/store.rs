//! The store: where artifacts are uploaded and where `publish` puts the
//! signed metadata for agents that pull over HTTP.
//!
//! Store URLs:
//!
//! - a local directory, as a path or `file:///abs/path` (object_store's
//!   `LocalFileSystem`; the embedded default, and what a web server or CDN
//!   can serve as it is);
//! - `s3://bucket/prefix`, configured from the standard environment
//!   variables: `AWS_ENDPOINT_URL` (or `AWS_ENDPOINT`) for MinIO, Ceph, R2 or
//!   s3s; `AWS_REGION` / `AWS_DEFAULT_REGION`; `AWS_ACCESS_KEY_ID`,
//!   `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`; `AWS_ALLOW_HTTP=true` for
//!   a plain-HTTP endpoint. Requests are path-style
//!   (`<endpoint>/<bucket>/<key>`) unless
//!   `AWS_VIRTUAL_HOSTED_STYLE_REQUEST=true`.
//!
//! # Layout under the store URL
//!
//! ```text
//! <store>/manifest.json                               signed/manifest.json (DSSE envelope), by `publish`
//! <store>/root/<N>.root.json                          every root version 1..N, by `publish`
//! <store>/flotilla-agent/<version>/<target>/flotilla-agent   artifacts, by `release add`
//! ```
//!
//! Artifact keys are the `path` recorded in `releases/<version>.toml`, so
//! when the store is served over HTTP at `https://updates.example.com/fleet/`,
//! that URL is both the agent's `[source] url` (it fetches
//! `<url>/manifest.json` and `<url>/root/<N>.root.json`) and its
//! `[artifacts] base_url` (it fetches `<base_url>/<path>`).
//!
//! Objects are immutable once uploaded: `release add` never overwrites an
//! artifact with different content (the same content is a no-op). It checks
//! before uploading; two publishers racing to upload different files under
//! the same new key are not detected by the store (S3 has no create-only
//! multipart upload), but `verify --check-artifacts` catches the result.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use flotilla_signing::{HashSummary, StreamingHasher};
use futures::StreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, PutPayload, WriteMultipart};
use tokio::io::AsyncReadExt;

use crate::{Error, Result};

/// Size of one part of a multipart upload (S3 needs at least 5 MiB).
pub const PART_SIZE: usize = 8 << 20;
/// Parts in flight at once during an upload.
pub const MAX_CONCURRENT_PARTS: usize = 4;

/// An opened store.
pub struct Store {
    inner: Arc<dyn ObjectStore>,
    prefix: ObjPath,
    url: String,
    rt: tokio::runtime::Runtime,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("url", &self.url).finish()
    }
}

/// What an upload did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Uploaded {
    /// The object was written.
    New,
    /// An identical object was already there; nothing was written.
    AlreadyPresent,
}

/// How an object in the store compares with what was signed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ObjectCheck {
    /// Same size and SHA-256.
    Matches,
    /// No such object.
    Missing,
    /// Different content.
    Differs {
        /// What the store holds.
        found: HashSummary,
    },
}

impl Store {
    /// Opens a store URL (see the module docs).
    pub fn open(url: &str) -> Result<Store> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| Error::io("tokio runtime", e))?;
        let store_err = |source| Error::Store {
            url: url.to_owned(),
            source,
        };
        let (inner, prefix): (Arc<dyn ObjectStore>, ObjPath) =
            if let Some(rest) = url.strip_prefix("s3://") {
                let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
                if bucket.is_empty() {
                    return Err(Error::Usage(format!("{url}: expected s3://bucket/prefix")));
                }
                let s3 = AmazonS3Builder::from_env()
                    .with_bucket_name(bucket)
                    .build()
                    .map_err(store_err)?;
                let prefix = ObjPath::parse(prefix.trim_matches('/')).map_err(|e| {
                    Error::Usage(format!("{url}: the prefix is not a valid object key: {e}"))
                })?;
                (Arc::new(s3), prefix)
            } else {
                let dir = local_dir(url)?;
                std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
                let local = LocalFileSystem::new_with_prefix(&dir).map_err(store_err)?;
                (Arc::new(local), ObjPath::default())
            };
        Ok(Store {
            inner,
            prefix,
            url: url.trim_end_matches('/').to_owned(),
            rt,
        })
    }

    /// The store URL as given.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// `<store url>/<rel>`, for messages.
    pub fn display(&self, rel: &str) -> String {
        format!("{}/{rel}", self.url)
    }

    fn key(&self, rel: &str) -> Result<ObjPath> {
        flotilla_protocol::sources::check_relative_path(rel)
            .map_err(|e| Error::Usage(format!("object key {e}")))?;
        let rel = ObjPath::parse(rel)
            .map_err(|e| Error::Usage(format!("{rel:?} is not a valid object key: {e}")))?;
        Ok(self.prefix.parts().chain(rel.parts()).collect())
    }

    fn err(&self, rel: &str) -> impl Fn(object_store::Error) -> Error + '_ {
        let url = self.display(rel);
        move |source| Error::Store {
            url: url.clone(),
            source,
        }
    }

    /// Reads a small object whole (metadata, not artifacts); `None` if missing.
    pub fn get_bytes(&self, rel: &str) -> Result<Option<Bytes>> {
        let key = self.key(rel)?;
        self.rt.block_on(async {
            match self.inner.get(&key).await {
                Ok(r) => Ok(Some(r.bytes().await.map_err(self.err(rel))?)),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(self.err(rel)(e)),
            }
        })
    }

    /// Writes a small object whole (metadata, not artifacts).
    pub fn put_bytes(&self, rel: &str, bytes: Vec<u8>) -> Result<()> {
        let key = self.key(rel)?;
        self.rt.block_on(async {
            self.inner
                .put(&key, PutPayload::from(bytes))
                .await
                .map_err(self.err(rel))?;
            Ok(())
        })
    }

    /// Streams an object through SHA-256; `None` if it does not exist.
    pub fn hash_object(&self, rel: &str) -> Result<Option<HashSummary>> {
        let key = self.key(rel)?;
        self.rt.block_on(self.hash_key(&key, rel))
    }

    async fn hash_key(&self, key: &ObjPath, rel: &str) -> Result<Option<HashSummary>> {
        let r = match self.inner.get(key).await {
            Ok(r) => r,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(self.err(rel)(e)),
        };
        let mut hasher = StreamingHasher::new();
        let mut stream = r.into_stream();
        while let Some(chunk) = stream.next().await {
            hasher.update(&chunk.map_err(self.err(rel))?);
        }
        Ok(Some(hasher.finish()))
    }

    /// Compares the object at `rel` with a signed size and SHA-256, streaming it.
    pub fn check(&self, rel: &str, size: u64, sha256: &str) -> Result<ObjectCheck> {
        Ok(match self.hash_object(rel)? {
            None => ObjectCheck::Missing,
            Some(found) if found.size == size && found.sha256.eq_ignore_ascii_case(sha256) => {
                ObjectCheck::Matches
            }
            Some(found) => ObjectCheck::Differs { found },
        })
    }

    /// Reads the object at `rel` whole, streamed through SHA-256 and capped
    /// at `size` bytes, and returns it only if its size and SHA-256 are the
    /// signed ones (an artifact that goes into a package).
    pub fn get_verified(&self, rel: &str, size: u64, sha256: &str) -> Result<Vec<u8>> {
        let key = self.key(rel)?;
        let what = self.display(rel);
        self.rt.block_on(async {
            let r = match self.inner.get(&key).await {
                Ok(r) => r,
                Err(object_store::Error::NotFound { .. }) => {
                    return Err(Error::Refused(format!("{what}: missing from the store")))
                }
                Err(e) => return Err(self.err(rel)(e)),
            };
            let mut hasher = StreamingHasher::new();
            let mut out = Vec::new();
            let mut stream = r.into_stream();
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(self.err(rel))?;
                if out.len() as u64 + chunk.len() as u64 > size {
                    return Err(Error::Refused(format!(
                        "{what}: longer than the {size} bytes that were signed"
                    )));
                }
                hasher.update(&chunk);
                out.extend_from_slice(&chunk);
            }
            let found = hasher.finish();
            if found.size != size || !found.sha256.eq_ignore_ascii_case(sha256) {
                return Err(Error::Refused(format!(
                    "{what}: the store has {} bytes with sha256 {}, but {size} bytes with sha256 {sha256} were signed",
                    found.size, found.sha256
                )));
            }
            Ok(out)
        })
    }

    /// Uploads `file` to `rel`, hashing it on the way (multipart in
    /// [`PART_SIZE`] parts for large files; a progress bar on stderr when it
    /// is a terminal). An existing object is never overwritten: with the same
    /// content this is a no-op, with different content an error.
    pub fn upload_file(&self, rel: &str, file: &Path) -> Result<(HashSummary, Uploaded)> {
        let key = self.key(rel)?;
        self.rt.block_on(async {
            match self.inner.head(&key).await {
                Ok(meta) => {
                    let local = hash_file(file)?;
                    let same = meta.size == local.size
                        && self.hash_key(&key, rel).await?.as_ref() == Some(&local);
                    if same {
                        return Ok((local, Uploaded::AlreadyPresent));
                    }
                    return Err(Error::Refused(format!(
                        "{} already exists with different content ({} bytes); objects are never overwritten: publish a new version or choose another --path",
                        self.display(rel),
                        meta.size
                    )));
                }
                Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(self.err(rel)(e)),
            }
            let summary = self.upload_new(&key, rel, file).await?;
            Ok((summary, Uploaded::New))
        })
    }

    async fn upload_new(&self, key: &ObjPath, rel: &str, file: &Path) -> Result<HashSummary> {
        let mut f = tokio::fs::File::open(file)
            .await
            .map_err(|e| Error::io(file, e))?;
        let len = f.metadata().await.map_err(|e| Error::io(file, e))?.len();
        let bar = progress_bar(len, rel);
        let mut hasher = StreamingHasher::new();
        let mut buf = vec![0u8; PART_SIZE];
        if len < PART_SIZE as u64 {
            let n = read_full(&mut f, &mut buf, file).await?;
            buf.truncate(n);
            hasher.update(&buf);
            self.inner
                .put(key, PutPayload::from(buf))
                .await
                .map_err(self.err(rel))?;
            bar.finish_and_clear();
            return Ok(hasher.finish());
        }
        let upload = self.inner.put_multipart(key).await.map_err(self.err(rel))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
        let result: Result<()> = async {
            loop {
                let n = read_full(&mut f, &mut buf, file).await?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                writer
                    .wait_for_capacity(MAX_CONCURRENT_PARTS)
                    .await
                    .map_err(self.err(rel))?;
                writer.put(Bytes::copy_from_slice(&buf[..n]));
                bar.inc(n as u64);
            }
            Ok(())
        }
        .await;
        if let Err(e) = result {
            let _ = writer.abort().await;
            return Err(e);
        }
        writer.finish().await.map_err(self.err(rel))?;
        bar.finish_and_clear();
        let summary = hasher.finish();
        if summary.size != len {
            return Err(Error::file(
                file,
                format!(
                    "changed while uploading ({len} bytes, then {})",
                    summary.size
                ),
            ));
        }
        Ok(summary)
    }
}

/// The directory of a local store URL (a path or `file://`).
fn local_dir(url: &str) -> Result<PathBuf> {
    if url.starts_with("file://") {
        let u = url::Url::parse(url).map_err(|e| Error::Usage(format!("{url}: {e}")))?;
        return u
            .to_file_path()
            .map_err(|_| Error::Usage(format!("{url}: not a local file URL")));
    }
    if url.contains("://") {
        return Err(Error::Usage(format!(
            "{url}: unsupported store URL; use a directory, file:///path or s3://bucket/prefix"
        )));
    }
    Ok(PathBuf::from(url))
}

/// Fills `buf` unless the file ends first; returns the bytes read.
async fn read_full(f: &mut tokio::fs::File, buf: &mut [u8], path: &Path) -> Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        let n = f
            .read(&mut buf[filled..])
            .await
            .map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    Ok(filled)
}

/// SHA-256 and size of a local file, streamed.
pub fn hash_file(path: &Path) -> Result<HashSummary> {
    let f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    flotilla_signing::hash_reader(f).map_err(|e| Error::io(path, e))
}

fn progress_bar(len: u64, what: &str) -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(len);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_message(what.to_owned());
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_upload_is_immutable_and_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("store").to_str().unwrap()).unwrap();
        let a = dir.path().join("a");
        std::fs::write(&a, vec![7u8; PART_SIZE + 100]).unwrap();
        let (sum, up) = store.upload_file("x/1/a", &a).unwrap();
        assert_eq!(up, Uploaded::New);
        assert_eq!(sum.size, PART_SIZE as u64 + 100);
        assert_eq!(sum, hash_file(&a).unwrap());
        assert_eq!(
            store.upload_file("x/1/a", &a).unwrap().1,
            Uploaded::AlreadyPresent
        );
        let b = dir.path().join("b");
        std::fs::write(&b, b"other").unwrap();
        let e = store.upload_file("x/1/a", &b).unwrap_err().to_string();
        assert!(
            e.contains("x/1/a") && e.contains("never overwritten"),
            "{e}"
        );
        assert_eq!(
            store.check("x/1/a", sum.size, &sum.sha256).unwrap(),
            ObjectCheck::Matches
        );
        assert_eq!(
            store.check("x/1/b", 1, &sum.sha256).unwrap(),
            ObjectCheck::Missing
        );
        assert!(store.upload_file("../a", &b).is_err());
    }

    #[test]
    fn file_urls_and_bad_schemes() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("file://{}", dir.path().join("s").display());
        let store = Store::open(&url).unwrap();
        store.put_bytes("m.json", b"{}".to_vec()).unwrap();
        assert_eq!(std::fs::read(dir.path().join("s/m.json")).unwrap(), b"{}");
        assert!(Store::open("ftp://x/y").is_err());
    }
}
