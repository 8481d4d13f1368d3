//! The reporter package: a build of `flotilla-reporter` as a hardened
//! systemd service.
//!
//! ```text
//! /usr/bin/flotilla-reporter                              0755  the build given
//! /etc/flotilla/reporter.toml                             0644  db, listen, admin token, manifest (conffile)
//! /etc/flotilla/reporter-root.json                        0644  the fleet's newest root, with --manifest (conffile)
//! /usr/lib/systemd/system/flotilla-reporter.service       reporter/dist/, as it is
//! /usr/lib/sysusers.d/flotilla-reporter.conf              the service user
//! /usr/share/doc/flotilla-reporter/                       README.md, copyright, changelog.gz
//! ```
//!
//! The postinst (`scripts/reporter.postinst`) makes the service user and
//! the admin token `/etc/flotilla/reporter-admin.token` (mode 0600, root's,
//! never replaced), then enables and starts the service. The unit hands the
//! token to the service with `LoadCredential=`, so the config names it at
//! `/run/credentials/flotilla-reporter.service/admin.token`.

use std::net::SocketAddr;
use std::path::PathBuf;

use super::{toml_str, About, Deb};
use crate::history::Snapshot;
use crate::{Error, Repo, Result};

/// The config the unit names.
pub const CONFIG: &str = "/etc/flotilla/reporter.toml";
/// The trust root the config names (with a manifest).
pub const TRUST_ROOT: &str = "/etc/flotilla/reporter-root.json";
/// The admin token the postinst makes.
pub const ADMIN_TOKEN: &str = "/etc/flotilla/reporter-admin.token";
/// Where the service reads the admin token (`LoadCredential=`).
pub const ADMIN_CREDENTIAL: &str = "/run/credentials/flotilla-reporter.service/admin.token";
/// The database, in the unit's `StateDirectory=`.
pub const DB: &str = "/var/lib/flotilla-reporter/db.sqlite";

/// The unit, as shipped in `reporter/dist/`.
pub const UNIT: &str = include_str!("../../../reporter/dist/flotilla-reporter.service");
const SYSUSERS: &str = include_str!("../../../reporter/dist/flotilla-reporter.sysusers");
const POSTINST: &str = include_str!("scripts/reporter.postinst");
const PRERM: &str = include_str!("scripts/reporter.prerm");
const POSTRM: &str = include_str!("scripts/reporter.postrm");

const LINTIAN_OVERRIDES: &str = "\
# The scripts are written by `flotilla-publisher package`, not debhelper:
# they call systemctl as debhelper's snippets do (enable and start on the
# first install, stop and disable on removal, only when systemd runs), and
# `systemctl --root` offline under DPKG_ROOT, which deb-systemd-helper lacks.
flotilla-reporter: maintainer-script-calls-systemctl *
";

/// What goes into the reporter package.
#[derive(Clone, Debug)]
pub struct Options {
    /// The `flotilla-reporter` build to ship.
    pub binary: PathBuf,
    /// Its version.
    pub version: semver::Version,
    /// The target it was built for.
    pub target: String,
    /// `listen`.
    pub listen: SocketAddr,
    /// `public_url`.
    pub public_url: Option<String>,
    /// `manifest`: the signed manifest (URL or path); the fleet's root is
    /// shipped with it.
    pub manifest: Option<String>,
    /// The package's `Maintainer`.
    pub maintainer: String,
}

/// A package ready to be written.
#[derive(Debug)]
pub struct Built {
    /// What it says about itself.
    pub about: About,
    /// The package.
    pub deb: Deb,
}

/// Assembles the package (nothing is written).
pub fn build(repo: &Repo, opts: &Options) -> Result<Built> {
    super::deb_architecture(&opts.target)?;
    if let Some(u) = &opts.public_url {
        if !(u.starts_with("https://") || u.starts_with("http://")) {
            return Err(Error::Usage(format!(
                "--public-url {u:?}: give an http:// or https:// URL"
            )));
        }
    }
    let binary = std::fs::read(&opts.binary).map_err(|e| Error::io(&opts.binary, e))?;
    if !binary.starts_with(b"\x7fELF") {
        return Err(Error::file(
            &opts.binary,
            "not an ELF executable: give the flotilla-reporter build (target/release/flotilla-reporter)",
        ));
    }
    let root = match &opts.manifest {
        None => None,
        Some(_) => {
            let chain = Snapshot::work_tree(repo)?;
            let newest = repo.root_chain()?.version();
            Some(
                chain
                    .roots
                    .get(&newest)
                    .cloned()
                    .ok_or_else(|| Error::file(Repo::root_rel(newest), "missing"))?,
            )
        }
    };
    let about = About {
        name: "flotilla-reporter",
        version: super::debian_version(&opts.version),
        target: opts.target.clone(),
        maintainer: opts.maintainer.clone(),
        summary: "Flotilla reporter: event history, rollout progress, halt gate".into(),
        description: "Runs flotilla-reporter as a hardened systemd service with its own\n\
                      user and state directory; the admin token is made at install\n\
                      (/etc/flotilla/reporter-admin.token, mode 0600)."
            .into(),
        note: format!("flotilla-reporter {}.", opts.version),
    };
    let mut d = Deb {
        mtime: binary_mtime(&opts.binary)?,
        control: about.control()?,
        ..Deb::default()
    };
    d.file("/usr/bin/flotilla-reporter", binary, 0o755);
    d.conffile(CONFIG, config(opts), 0o644);
    if let Some(bytes) = root {
        d.conffile(TRUST_ROOT, bytes, 0o644);
    }
    d.file(
        "/usr/lib/systemd/system/flotilla-reporter.service",
        UNIT,
        0o644,
    );
    d.file(
        "/usr/lib/sysusers.d/flotilla-reporter.conf",
        SYSUSERS,
        0o644,
    );
    super::docs(&mut d, &about)?;
    super::lintian_overrides(&mut d, about.name, LINTIAN_OVERRIDES);
    d.scripts = vec![
        ("postinst", POSTINST.into()),
        ("prerm", PRERM.into()),
        ("postrm", POSTRM.into()),
    ];
    Ok(Built { deb: d, about })
}

/// `SOURCE_DATE_EPOCH`, else the build's mtime.
fn binary_mtime(path: &std::path::Path) -> Result<u64> {
    let modified = std::fs::metadata(path)
        .and_then(|m| m.modified())
        .map_err(|e| Error::io(path, e))?;
    super::mtime(modified.into())
}

/// `/etc/flotilla/reporter.toml`.
fn config(opts: &Options) -> String {
    let mut s = format!(
        "# flotilla-reporter config, written by `flotilla-publisher package --reporter`;\n\
         # every key: `flotilla-reporter serve --help`. dpkg keeps local edits.\n\
         db = \"{DB}\"\n\
         # {ADMIN_TOKEN}, handed over by the unit's LoadCredential=\n\
         admin_token_file = \"{ADMIN_CREDENTIAL}\"\n\
         listen = \"{}\"\n",
        opts.listen
    );
    if let Some(u) = &opts.public_url {
        s += &format!("public_url = {}\n", toml_str(u));
    }
    match &opts.manifest {
        Some(m) => {
            s += &format!(
                "manifest = {}\ntrust_root = \"{TRUST_ROOT}\"\n",
                toml_str(m)
            );
        }
        None => {
            s += "# Until a verified manifest is set, every gate is closed:\n\
                  # manifest = \"https://updates.example.com/fleet/manifest.json\"\n\
                  # trust_root = \"/etc/flotilla/reporter-root.json\"\n"
        }
    }
    s
}
