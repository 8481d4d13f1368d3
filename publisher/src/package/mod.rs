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
//! - [`deb`]: the `.deb` format itself, and [`Deb`], the list of files
//!   and scripts both formats are written from;
//! - [`rpm`]: the `.rpm` format, from the same list.
//!
//! Both packages ship the same documentation (the project's README, which
//! the units' `Documentation=` names), a Debian copyright file and a
//! changelog, so that `lintian` finds no error.

pub mod agent;
pub mod deb;
pub mod reporter;
pub mod rpm;

use std::path::{Path, PathBuf};

use crate::{Error, Result};

pub use deb::Deb;

/// Who the package names as its maintainer unless told otherwise.
pub const DEFAULT_MAINTAINER: &str = "Flotilla fleet operators <fleet-ops@example.com>";

/// The README shipped in both packages, named by the units' `Documentation=`.
const README: &str = include_str!("../../../README.md");

/// What a package says about itself, in every format: Debian's control
/// fields and rpm's header tags are both written from this.
#[derive(Clone, Debug)]
pub struct About {
    /// The package name (`flotilla-agent`).
    pub name: &'static str,
    /// The package version ([`debian_version`]; rpm takes it as it is).
    pub version: String,
    /// The Rust target triple of the build.
    pub target: String,
    /// `Maintainer` (rpm: `Packager`).
    pub maintainer: String,
    /// The one-line summary.
    pub summary: String,
    /// The long description, lines joined by `\n`.
    pub description: String,
    /// The changelog's one entry.
    pub note: String,
}

impl About {
    /// The Debian architecture of the build.
    pub fn deb_arch(&self) -> Result<&'static str> {
        deb_architecture(&self.target)
    }

    /// The `control` fields of the `.deb` (`Installed-Size` is added when
    /// it is built).
    pub fn control(&self) -> Result<Vec<(&'static str, String)>> {
        let mut description = self.summary.clone();
        for line in self.description.lines() {
            description.push_str("\n ");
            description.push_str(line);
        }
        Ok(vec![
            ("Package", self.name.into()),
            ("Version", self.version.clone()),
            ("Architecture", self.deb_arch()?.into()),
            ("Maintainer", self.maintainer.clone()),
            ("Section", "admin".into()),
            ("Priority", "optional".into()),
            ("Depends", "libc6".into()),
            ("Description", description),
        ])
    }

    /// `<name>_<version>_<arch>.deb`.
    pub fn deb_file_name(&self) -> Result<String> {
        Ok(format!(
            "{}_{}_{}.deb",
            self.name,
            self.version,
            self.deb_arch()?
        ))
    }
}

/// The Debian architecture of `--target`, or a usage error.
pub fn deb_architecture(target: &str) -> Result<&'static str> {
    deb::architecture(target).ok_or_else(|| {
        Error::Usage(format!(
            "--target {target}: no Debian architecture for this target"
        ))
    })
}

/// `/usr/share/doc/<package>/`: README.md, copyright, changelog.gz.
fn docs(deb: &mut Deb, about: &About) -> Result<()> {
    let note = &about.note;
    let (package, version, maintainer) = (about.name, &about.version, &about.maintainer);
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

/// A package format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Debian's `.deb` (Debian, Ubuntu).
    Deb,
    /// An `.rpm` (Fedora, RHEL and its rebuilds, openSUSE).
    Rpm,
}

/// The package file in `format`: its bytes and its usual file name.
pub fn render(format: Format, about: &About, deb: &Deb) -> Result<(Vec<u8>, String)> {
    match format {
        Format::Deb => {
            let name = about.deb_file_name()?;
            let bytes = deb.build().map_err(|e| Error::io(&name, e))?;
            Ok((bytes, name))
        }
        Format::Rpm => Ok((rpm::build(about, deb)?, rpm::file_name(about)?)),
    }
}

/// Writes the package `about`, `deb` in `format` to `out` (a file, or a
/// directory, existing or ending in `/`, to put the usual file name in)
/// atomically, mode 0600: an agent package holds an enrollment token.
/// Returns the path written.
pub fn write(format: Format, about: &About, deb: &Deb, out: &Path) -> Result<PathBuf> {
    let (bytes, default_name) = render(format, about, deb)?;
    let as_dir = out.is_dir() || out.as_os_str().to_string_lossy().ends_with('/');
    let path = if as_dir {
        out.join(default_name)
    } else {
        out.to_owned()
    };
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
