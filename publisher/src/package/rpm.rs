//! The `.rpm` format, written with the `rpm` crate (pure Rust; a fresh
//! build machine has no rpmbuild).
//!
//! An rpm package carries the same files as the `.deb` ([`Deb`] is the
//! list both are written from), with these differences:
//!
//! - the Debian-only files (lintian overrides) are left out;
//! - conffiles are `%config(noreplace)`: rpm keeps local edits and puts
//!   the package's new version beside them as `.rpmnew`;
//! - files under `/usr/share/doc` are `%doc`;
//! - the directories of the package's own (every parent whose name holds
//!   `flotilla`) are owned, the system's (`/usr`, `/etc`, ...) are not;
//! - the maintainer scripts become scriptlets ([`scriptlet`]): `%post`,
//!   `%preun`, `%postun` run the Debian `postinst`, `prerm`, `postrm` with
//!   rpm's argument (how many instances remain) turned into dpkg's, so one
//!   script holds each rule. rpm has no purge: erasing leaves the state.
//!
//! Deterministic: every time in the package (build time, file mtimes) is
//! the one given, the build host is `localhost`, and the payload is gzip.
//!
//! The package is not signed with OpenPGP: the build it holds is verified
//! against the fleet's root before it is packaged, and a host's agent
//! verifies every update itself. An operator who serves the packages from
//! a dnf repository signs them there (`rpmsign --addsign`).

use rpm::{BuildConfig, CompressionWithLevel, Dependency, FileOptions, PackageBuilder, Scriptlet};

use super::deb::Entry;
use super::{About, Deb};
use crate::{Error, Result};

/// rpm's architecture name for a Rust target triple, if it has one.
pub fn architecture(target: &str) -> Option<&'static str> {
    let arch = target.split('-').next()?;
    Some(match arch {
        "x86_64" => "x86_64",
        "aarch64" => "aarch64",
        "armv7" => "armv7hl",
        "i686" => "i686",
        "i586" => "i586",
        "riscv64gc" => "riscv64",
        "powerpc64le" => "ppc64le",
        "s390x" => "s390x",
        _ => return None,
    })
}

/// The rpm architecture of `--target`, or a usage error.
pub fn rpm_architecture(target: &str) -> Result<&'static str> {
    architecture(target).ok_or_else(|| {
        Error::Usage(format!(
            "--target {target}: no rpm architecture for this target"
        ))
    })
}

/// `<name>-<version>-1.<arch>.rpm`, as rpmbuild names it.
pub fn file_name(about: &About) -> Result<String> {
    Ok(format!(
        "{}-{}-1.{}.rpm",
        about.name,
        about.version,
        rpm_architecture(&about.target)?
    ))
}

/// A Debian maintainer script as an rpm scriptlet: a prelude that turns
/// rpm's `$1` (the number of instances installed once the operation is
/// done) into the arguments dpkg gives, then the script itself.
///
/// | scriptlet | `$1`  | runs as          |
/// |-----------|-------|------------------|
/// | `%post`   | 1     | `postinst configure ""` (first install) |
/// | `%post`   | 2+    | `postinst configure upgrade` |
/// | `%preun`  | 0     | `prerm remove`   |
/// | `%preun`  | 1+    | `prerm upgrade`  |
/// | `%postun` | 0     | `postrm remove`  |
/// | `%postun` | 1+    | `postrm upgrade` |
pub fn scriptlet(deb_name: &str, script: &str) -> Option<Scriptlet> {
    let prelude = match deb_name {
        "postinst" => {
            "if [ \"$1\" -gt 1 ]; then set -- configure upgrade; else set -- configure \"\"; fi\n"
        }
        "prerm" | "postrm" => "if [ \"$1\" -eq 0 ]; then set -- remove; else set -- upgrade; fi\n",
        _ => return None,
    };
    let body = match script.split_once('\n') {
        Some((first, rest)) if first.starts_with("#!") => rest,
        _ => script,
    };
    Some(
        Scriptlet::new(format!(
            "# rpm's argument as dpkg's (flotilla-publisher package --type rpm)\n{prelude}{body}"
        ))
        .prog(vec!["/bin/sh"]),
    )
}

/// The `.rpm` bytes of `about` with the files and scripts of `deb`.
pub fn build(about: &About, deb: &Deb) -> Result<Vec<u8>> {
    let arch = rpm_architecture(&about.target)?;
    let mtime = u32::try_from(deb.mtime).map_err(|_| {
        Error::Usage(format!(
            "SOURCE_DATE_EPOCH {}: past what rpm can hold (2106)",
            deb.mtime
        ))
    })?;
    let fail = |e: rpm::Error| Error::Refused(format!("building the {} rpm: {e}", about.name));
    let mut b = PackageBuilder::new(
        about.name,
        &about.version,
        "Apache-2.0",
        arch,
        &about.summary,
    );
    b.using_config(
        BuildConfig::v4()
            // zlib's default level, as the .deb's data.tar.gz (rpm's 9
            // takes much longer on a whole agent build for little gain).
            .compression(CompressionWithLevel::Gzip(6))
            .source_date(mtime),
    )
    .release("1")
    .description(&about.description)
    .build_host("localhost")
    .packager(&about.maintainer)
    .vendor("Flotilla")
    .group("System Environment/Daemons")
    .add_changelog_entry(
        format!("{} - {}-1", about.maintainer, about.version),
        format!("- {}", about.note),
        mtime,
    )
    .requires(Dependency::script_post("/bin/sh"))
    .requires(Dependency::script_preun("/bin/sh"))
    .requires(Dependency::script_postun("/bin/sh"));

    let mut dirs = std::collections::BTreeSet::new();
    for (path, entry) in &deb.files {
        if path.starts_with("/usr/share/lintian/") {
            continue;
        }
        let Entry::File { data, mode } = entry else {
            continue;
        };
        let mut p = path.as_str();
        while let Some((parent, _)) = p.rsplit_once('/') {
            if parent.is_empty() {
                break;
            }
            let dir_name = parent.rsplit('/').next().unwrap_or_default();
            if dir_name.contains("flotilla") {
                dirs.insert(parent.to_owned());
            }
            p = parent;
        }
        let mut opts = FileOptions::new(path.clone())
            .permissions(*mode as u16)
            .user("root")
            .group("root");
        if deb.conffiles.contains(path) {
            opts = opts.config().noreplace();
        } else if path.starts_with("/usr/share/doc/") {
            opts = opts.doc();
        }
        b.with_file_contents(data.clone(), opts).map_err(fail)?;
    }
    for dir in dirs {
        b.with_dir_entry(
            FileOptions::dir(dir)
                .permissions(0o755)
                .user("root")
                .group("root"),
        )
        .map_err(fail)?;
    }
    for (name, text) in &deb.scripts {
        let s = scriptlet(name, text);
        match *name {
            "postinst" => b.post_install_script(s.expect("postinst maps")),
            "prerm" => b.pre_uninstall_script(s.expect("prerm maps")),
            "postrm" => b.post_uninstall_script(s.expect("postrm maps")),
            other => {
                return Err(Error::Refused(format!(
                    "maintainer script {other}: no rpm scriptlet for it"
                )))
            }
        };
    }
    let package = b.build().map_err(fail)?;
    let mut out = Vec::new();
    package.write(&mut out).map_err(fail)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn architectures_and_names() {
        assert_eq!(architecture("x86_64-unknown-linux-gnu"), Some("x86_64"));
        assert_eq!(architecture("aarch64-unknown-linux-musl"), Some("aarch64"));
        assert_eq!(architecture("wasm32-unknown-unknown"), None);
    }

    #[test]
    fn scriptlets_pass_dpkg_arguments() {
        let s = scriptlet("postinst", "#!/bin/sh\nset -e\necho \"$1/$2\"\n").unwrap();
        let run = |script: &str, arg: &str| {
            let out = std::process::Command::new("/bin/sh")
                .args(["-c", script, "sh", arg])
                .output()
                .unwrap();
            String::from_utf8(out.stdout).unwrap()
        };
        assert_eq!(run(&s.script, "1"), "configure/\n");
        assert_eq!(run(&s.script, "2"), "configure/upgrade\n");
        let s = scriptlet("prerm", "echo \"$1\"\n").unwrap();
        assert_eq!(run(&s.script, "0"), "remove\n");
        assert_eq!(run(&s.script, "1"), "upgrade\n");
        assert!(scriptlet("preinst", "").is_none());
    }
}
