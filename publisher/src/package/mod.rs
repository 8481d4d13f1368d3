//! `package`: installers for a fleet's hosts and for its reporter.
//!
//! - [`agent`]: the agent package of one fleet. Sequence: verify the signed
//!   manifest against the fleet's root chain
//!   ([`crate::history::Snapshot::verify_manifest`], i.e.
//!   [`flotilla_protocol::trust::verify_manifest`]); take the channel's
//!   release and its artifact for the target; stream that artifact from the
//!   store through SHA-256 and compare size and hash with the signed ones;
//!   only then write the package.
//! - [`reporter`]: the reporter package (a local build of
//!   `flotilla-reporter`, its hardened unit, a default config).
//! - [`deb`]: the `.deb` format itself.
//!
//! Both packages ship the same documentation (the project's README, which
//! the units' `Documentation=` names), a Debian copyright file and a
//! changelog, so that `lintian` finds no error.

pub mod agent;
pub mod deb;
pub mod reporter;

use std::path::{Path, PathBuf};

use crate::{Error, Result};

pub use deb::Deb;

/// Who the package names as its maintainer unless told otherwise.
pub const DEFAULT_MAINTAINER: &str = "Flotilla fleet operators <fleet-ops@example.com>";

/// The README shipped in both packages, named by the units' `Documentation=`.
const README: &str = include_str!("../../../README.md");

/// `/usr/share/doc/<package>/`: README.md, copyright, changelog.gz.
fn docs(deb: &mut Deb, package: &str, version: &str, maintainer: &str, note: &str) -> Result<()> {
    let dir = format!("/usr/share/doc/{package}");
    deb.file(&format!("{dir}/README.md"), README, 0o644);
    deb.file(
        &format!("{dir}/copyright"),
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\
         Upstream-Name: flotilla\n\n\
         Files: *\n\
         Copyright: 2025-2026 The Flotilla authors\n\
         License: Apache-2.0\n \
         On Debian systems, the full text of the Apache License, Version 2.0,\n \
         can be found in /usr/share/common-licenses/Apache-2.0.\n",
        0o644,
    );
    let date = chrono::DateTime::from_timestamp(deb.mtime as i64, 0)
        .unwrap_or_default()
        .format("%a, %d %b %Y %H:%M:%S +0000");
    let changelog = format!(
        "{package} ({version}) unstable; urgency=medium\n\n  * {note}\n\n -- {maintainer}  {date}\n"
    );
    let gz = deb::gzip(changelog.as_bytes()).map_err(|e| Error::io("changelog.gz", e))?;
    deb.file(&format!("{dir}/changelog.gz"), gz, 0o644);
    Ok(())
}

/// Lintian overrides shipped in the package, one `tag [context]` a line;
/// the reasons are comments in the file.
fn lintian_overrides(deb: &mut Deb, package: &str, text: &str) {
    deb.file(
        &format!("/usr/share/lintian/overrides/{package}"),
        text.to_owned(),
        0o644,
    );
}

/// The Debian version of a release: its semantic version, with a
/// pre-release's `-` as `~` (sorting before the release, as semver does).
pub fn debian_version(v: &semver::Version) -> String {
    let mut s = format!("{}.{}.{}", v.major, v.minor, v.patch);
    if !v.pre.is_empty() {
        s.push('~');
        s.push_str(&v.pre.as_str().replace('-', "."));
    }
    if !v.build.is_empty() {
        s.push('+');
        s.push_str(v.build.as_str());
    }
    s
}

/// The mtime of every entry: `SOURCE_DATE_EPOCH` when set (reproducible
/// builds' convention), else `default`.
pub fn mtime(default: chrono::DateTime<chrono::Utc>) -> Result<u64> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(s) => s.trim().parse().map_err(|_| {
            Error::Usage(format!(
                "SOURCE_DATE_EPOCH={s:?} is not a number of seconds since 1970"
            ))
        }),
        Err(_) => Ok(default.timestamp().max(0) as u64),
    }
}

/// Writes `deb` to `out` (a file, or a directory, existing or ending in
/// `/`, to put `default_name` in)
/// atomically, mode 0600: an agent package holds an enrollment token.
/// Returns the path written.
pub fn write(deb: &Deb, out: &Path, default_name: &str) -> Result<PathBuf> {
    let as_dir = out.is_dir() || out.as_os_str().to_string_lossy().ends_with('/');
    let path = if as_dir {
        out.join(default_name)
    } else {
        out.to_owned()
    };
    let bytes = deb.build().map_err(|e| Error::io(&path, e))?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    flotilla_signing::fs::write_atomic(&path, &bytes, 0o600).map_err(|e| Error::io(&path, e))?;
    Ok(path)
}

/// A TOML basic string.
fn toml_str(s: &str) -> String {
    serde_json::to_string(s).expect("strings serialise")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debian_versions_sort_like_semver() {
        let v = |s: &str| debian_version(&semver::Version::parse(s).unwrap());
        assert_eq!(v("1.2.3"), "1.2.3");
        assert_eq!(v("2.0.0-rc.1"), "2.0.0~rc.1");
        assert_eq!(v("2.0.0-rc-1+b7"), "2.0.0~rc.1+b7");
    }
}
