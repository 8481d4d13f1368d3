//! `release add`: upload an artifact (hashing it on the way) and record it in
//! `releases/<version>.toml`.
//!
//! Sequence: check the artifact path; refuse early if the release file
//! already records a *different* artifact for the target; upload (or, with no
//! store, only hash the file); then add `[artifacts.<target>]` to the release
//! file, creating it if needed and keeping its comments. A release is
//! immutable once recorded: the same file again is a no-op, anything else an
//! error.

use std::path::{Path, PathBuf};

use flotilla_protocol::sources::{check_relative_path, parse_strict, valid_name};
use flotilla_protocol::{Artifact, Release};
use semver::Version;
use toml_edit::{value, DocumentMut, Item, Table};

use crate::store::{hash_file, Uploaded};
use crate::{Error, Repo, Result, Store};

/// The default object key (and `path`) of an artifact.
pub fn default_artifact_path(version: &Version, target: &str) -> String {
    format!("flotilla-agent/{version}/{target}/flotilla-agent")
}

/// What `release add` is asked to do.
#[derive(Clone, Debug)]
pub struct AddRelease<'a> {
    /// The release's version.
    pub version: Version,
    /// Target triple.
    pub target: String,
    /// The local file.
    pub file: &'a Path,
    /// Object key / relative path; default [`default_artifact_path`].
    pub path: Option<String>,
    /// Stepping stone.
    pub min_from: Option<Version>,
    /// Release notes.
    pub notes: Option<String>,
}

/// What `release add` did.
#[derive(Clone, Debug)]
pub struct Added {
    /// `releases/<version>.toml`.
    pub file: PathBuf,
    /// The recorded artifact.
    pub artifact: Artifact,
    /// Whether the store got a new object (`None`: no store given).
    pub uploaded: Option<Uploaded>,
    /// Whether the release file changed.
    pub changed: bool,
}

/// Runs `release add`; `store` is `None` when the operator uploads the file
/// themselves (the file is only hashed).
pub fn add(repo: &Repo, store: Option<&Store>, req: &AddRelease<'_>) -> Result<Added> {
    let rel_file = PathBuf::from(format!("releases/{}.toml", req.version));
    if !valid_name(&req.target) {
        return Err(Error::Usage(format!(
            "--target {:?}: expected a target triple such as x86_64-unknown-linux-gnu",
            req.target
        )));
    }
    let path = req
        .path
        .clone()
        .unwrap_or_else(|| default_artifact_path(&req.version, &req.target));
    check_relative_path(&path).map_err(|e| Error::Usage(format!("--path {e}")))?;
    if let (Some(m), v) = (&req.min_from, &req.version) {
        if m >= v {
            return Err(Error::Usage(format!(
                "--min-from {m} must be lower than --version {v}"
            )));
        }
    }

    let existing = match std::fs::read_to_string(repo.path(&rel_file)) {
        Ok(text) => Some(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(Error::io(&rel_file, e)),
    };
    let recorded = match &existing {
        Some(text) => parse_strict::<Release>(&rel_file, text)?
            .artifacts
            .get(&req.target)
            .cloned(),
        None => None,
    };
    if let Some(a) = &recorded {
        if a.path != path {
            return Err(Error::Refused(format!(
                "{}: already records {} at {:?}; releases are immutable: publish a new version",
                rel_file.display(),
                req.target,
                a.path
            )));
        }
    }

    let (summary, uploaded) = match store {
        Some(s) => {
            let (sum, up) = s.upload_file(&path, req.file)?;
            (sum, Some(up))
        }
        None => (hash_file(req.file)?, None),
    };
    let artifact = Artifact {
        path,
        sha256: summary.sha256,
        size: summary.size,
    };
    if let Some(a) = recorded {
        if a != artifact {
            return Err(Error::Refused(format!(
                "{}: already records a different {} artifact (sha256 {}); releases are immutable: publish a new version",
                rel_file.display(),
                req.target,
                a.sha256
            )));
        }
        return Ok(Added {
            file: rel_file,
            artifact,
            uploaded,
            changed: false,
        });
    }

    let mut doc = match &existing {
        Some(text) => text
            .parse::<DocumentMut>()
            .map_err(|e| Error::file(&rel_file, e))?,
        None => {
            let mut d = DocumentMut::new();
            d.decor_mut().set_prefix(format!(
                "# Release {}: one [artifacts.<target>] table per build.\n# Written by `flotilla-publisher release add`; review, never edit hashes by hand.\n",
                req.version
            ));
            d["version"] = value(req.version.to_string());
            d
        }
    };
    if let Some(m) = &req.min_from {
        set_once(&mut doc, "min_from", &m.to_string(), &rel_file)?;
    }
    if let Some(n) = &req.notes {
        set_once(&mut doc, "notes", n, &rel_file)?;
    }
    if doc.get("artifacts").is_none() {
        let mut t = Table::new();
        t.set_implicit(true);
        doc["artifacts"] = Item::Table(t);
    }
    let mut t = Table::new();
    t["path"] = value(artifact.path.clone());
    t["sha256"] = value(artifact.sha256.clone());
    t["size"] = value(
        i64::try_from(artifact.size)
            .map_err(|_| Error::file(req.file, "larger than 2^63 bytes"))?,
    );
    doc["artifacts"][req.target.as_str()] = Item::Table(t);
    let text = doc.to_string();
    parse_strict::<Release>(&rel_file, &text)?;
    repo.write_file(&rel_file, text.as_bytes())?;
    Ok(Added {
        file: rel_file,
        artifact,
        uploaded,
        changed: true,
    })
}

fn set_once(doc: &mut DocumentMut, key: &str, val: &str, file: &Path) -> Result<()> {
    match doc.get(key).and_then(|i| i.as_str()) {
        Some(old) if old != val => Err(Error::Refused(format!(
            "{}: {key} is already {old:?}; edit the file by pull request to change it",
            file.display()
        ))),
        Some(_) => Ok(()),
        None => {
            doc[key] = value(val);
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_targets_to_one_release_file_and_refuses_changes() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repo::new(dir.path());
        let f = dir.path().join("bin");
        std::fs::write(&f, b"agent build").unwrap();
        let v: Version = "1.2.0".parse().unwrap();
        let req = |target: &str| AddRelease {
            version: v.clone(),
            target: target.into(),
            file: &f,
            path: None,
            min_from: None,
            notes: Some("fixes".into()),
        };
        let a = add(&repo, None, &req("x86_64-unknown-linux-gnu")).unwrap();
        assert!(a.changed);
        add(&repo, None, &req("aarch64-unknown-linux-gnu")).unwrap();
        let again = add(&repo, None, &req("aarch64-unknown-linux-gnu")).unwrap();
        assert!(!again.changed);
        let text = std::fs::read_to_string(dir.path().join("releases/1.2.0.toml")).unwrap();
        let r: Release = parse_strict(Path::new("r"), &text).unwrap();
        assert_eq!(r.artifacts.len(), 2);
        assert_eq!(
            r.artifacts["aarch64-unknown-linux-gnu"].path,
            "flotilla-agent/1.2.0/aarch64-unknown-linux-gnu/flotilla-agent"
        );
        std::fs::write(&f, b"another build").unwrap();
        let e = add(&repo, None, &req("aarch64-unknown-linux-gnu"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("releases/1.2.0.toml") && e.contains("immutable"),
            "{e}"
        );
        let mut bad = req("x86_64-unknown-linux-musl");
        bad.path = Some("../evil".into());
        assert!(add(&repo, None, &bad).is_err());
    }
}
