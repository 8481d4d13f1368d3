//! The host layout, resolved once: where state lives, the legacy locations
//! the migrations move from, and the migrations' limits. The same rules
//! serve the migration pre-pass (which reads the config leniently, since it
//! may be in an older schema) and [`crate::Config::load`], so `run`,
//! `status` and `rollback` always agree on the state dir.
//!
//! Defaults follow the install prefix: for `<prefix>/etc/flotilla/agent.toml`
//! the state dir is `<prefix>/var/lib/flotilla` (`/var/lib/flotilla` for
//! `/etc/flotilla/agent.toml`); the legacy config dir is
//! `<config dir>/../flotilla-legacy`, the legacy state dir
//! `<state dir>/../flotilla-legacy`.
//!
//! ```toml
//! state_dir = "/var/lib/flotilla"
//! [migrations]
//! keep_backups = 3              # backups kept under state_dir/backups
//! retries = 3                   # failed runs per agent version before giving up
//! legacy_config_dir = "/etc/flotilla-legacy"
//! legacy_state_dir = "/var/lib/flotilla-legacy"
//! ```

use std::path::{Path, PathBuf};

/// The state dir when the config names none and is not under a prefix.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/flotilla";
/// Default `migrations.keep_backups`.
pub const DEFAULT_KEEP_BACKUPS: u32 = 3;
/// Default `migrations.retries`.
pub const DEFAULT_RETRIES: u32 = 3;

/// What the config says about the layout (all optional).
#[derive(Clone, Debug, Default)]
pub struct Settings {
    /// `state_dir`.
    pub state_dir: Option<PathBuf>,
    /// `migrations.keep_backups`.
    pub keep_backups: Option<u32>,
    /// `migrations.retries`.
    pub retries: Option<u32>,
    /// `migrations.legacy_config_dir`.
    pub legacy_config_dir: Option<PathBuf>,
    /// `migrations.legacy_state_dir`.
    pub legacy_state_dir: Option<PathBuf>,
}

/// The resolved layout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Prefix of every absolute path (`/` in production).
    pub prefix: PathBuf,
    /// The state dir.
    pub state_dir: PathBuf,
    /// Where a legacy install kept its config.
    pub legacy_config_dir: PathBuf,
    /// Where a legacy install kept its state.
    pub legacy_state_dir: PathBuf,
    /// Migration backups kept.
    pub keep_backups: usize,
    /// Failed migration runs per version before giving up.
    pub retries: u32,
}

/// A setting the layout refuses: (field, reason).
pub type Refused = (&'static str, String);

impl Layout {
    /// Resolves `settings` for the config at `config_path`, with the
    /// defaults above; refuses a zero `keep_backups` or `retries`.
    pub fn resolve(config_path: &Path, settings: Settings) -> Result<Layout, Refused> {
        for (field, v) in [
            ("migrations.keep_backups", settings.keep_backups),
            ("migrations.retries", settings.retries),
        ] {
            if v == Some(0) {
                return Err((field, "must be at least 1".into()));
            }
        }
        let prefix = prefix_of(config_path);
        let state_dir = settings.state_dir.unwrap_or_else(|| match &prefix {
            Some(p) => p.join("var/lib/flotilla"),
            None => PathBuf::from(DEFAULT_STATE_DIR),
        });
        let legacy_config_dir = settings
            .legacy_config_dir
            .unwrap_or_else(|| legacy_beside(config_path.parent().unwrap_or(Path::new("/"))));
        let legacy_state_dir = settings
            .legacy_state_dir
            .unwrap_or_else(|| legacy_beside(&state_dir));
        Ok(Layout {
            prefix: prefix.unwrap_or_else(|| PathBuf::from("/")),
            state_dir,
            legacy_config_dir,
            legacy_state_dir,
            keep_backups: settings.keep_backups.unwrap_or(DEFAULT_KEEP_BACKUPS) as usize,
            retries: settings.retries.unwrap_or(DEFAULT_RETRIES),
        })
    }

    /// The layout as far as a config that may be old, invalid or still at
    /// its legacy place tells it: unreadable or refused settings fall back
    /// to the defaults (the strict load reports them).
    pub fn lenient(config_path: &Path) -> Layout {
        let doc = read_lenient(config_path).or_else(|| {
            // Not moved yet: the legacy copy tells where state lives.
            let legacy = legacy_beside(config_path.parent().unwrap_or(Path::new("/")));
            read_lenient(&legacy.join(config_path.file_name().unwrap_or_default()))
        });
        let top = |key: &str| doc.as_ref()?.get(key)?.as_str().map(PathBuf::from);
        let mig = |key: &str| doc.as_ref()?.get("migrations")?.get(key).cloned();
        let path = |key: &str| mig(key)?.as_str().map(PathBuf::from);
        // A refused limit (0) is the default here; the strict load names it.
        let int = |key: &str| {
            u32::try_from(mig(key)?.as_integer()?)
                .ok()
                .filter(|n| *n >= 1)
        };
        let settings = Settings {
            state_dir: top("state_dir"),
            keep_backups: int("keep_backups"),
            retries: int("retries"),
            legacy_config_dir: path("legacy_config_dir"),
            legacy_state_dir: path("legacy_state_dir"),
        };
        Layout::resolve(config_path, settings).expect("lenient settings are never refused")
    }
}

/// `<prefix>` of `<prefix>/etc/flotilla/agent.toml`, unless that is `/`.
fn prefix_of(config_path: &Path) -> Option<PathBuf> {
    if !config_path.ends_with("etc/flotilla/agent.toml") {
        return None;
    }
    config_path
        .parent()
        .and_then(Path::parent)
        .and_then(Path::parent)
        .map(Path::to_owned)
}

/// `<dir>/../flotilla-legacy`.
fn legacy_beside(dir: &Path) -> PathBuf {
    dir.parent()
        .unwrap_or(Path::new("/"))
        .join("flotilla-legacy")
}

fn read_lenient(path: &Path) -> Option<toml_edit::DocumentMut> {
    std::fs::read_to_string(path).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_the_prefix() {
        let root = tempfile::tempdir().unwrap();
        let cfg = root.path().join("etc/flotilla/agent.toml");
        let l = Layout::lenient(&cfg);
        assert_eq!(l.prefix, root.path());
        assert_eq!(l.state_dir, root.path().join("var/lib/flotilla"));
        assert_eq!(l.legacy_config_dir, root.path().join("etc/flotilla-legacy"));
        assert_eq!(
            l.legacy_state_dir,
            root.path().join("var/lib/flotilla-legacy")
        );
        assert_eq!((l.keep_backups, l.retries), (3, 3));
        let l = Layout::lenient(Path::new("/etc/flotilla/agent.toml"));
        assert_eq!(l.prefix, Path::new("/"));
        assert_eq!(l.state_dir, Path::new(DEFAULT_STATE_DIR));
    }

    #[test]
    fn config_settings_win_and_the_legacy_config_is_read() {
        let root = tempfile::tempdir().unwrap();
        let legacy = root.path().join("etc/flotilla-legacy");
        std::fs::create_dir_all(&legacy).unwrap();
        std::fs::write(
            legacy.join("agent.toml"),
            format!(
                "state_dir = \"{}/state\"\n[migrations]\nkeep_backups = 5\nretries = 2\nlegacy_state_dir = \"/old\"\n",
                root.path().display()
            ),
        )
        .unwrap();
        let l = Layout::lenient(&root.path().join("etc/flotilla/agent.toml"));
        assert_eq!(l.state_dir, root.path().join("state"));
        assert_eq!(l.legacy_state_dir, PathBuf::from("/old"));
        assert_eq!((l.keep_backups, l.retries), (5, 2));
    }

    #[test]
    fn refused_limits_are_defaulted_leniently_and_refused_strictly() {
        let root = tempfile::tempdir().unwrap();
        let cfg = root.path().join("agent.toml");
        std::fs::write(&cfg, "[migrations]\nretries = 0\nkeep_backups = 4\n").unwrap();
        let l = Layout::lenient(&cfg);
        assert_eq!((l.keep_backups, l.retries), (4, 3));
        let refused = Layout::resolve(
            &cfg,
            Settings {
                retries: Some(0),
                ..Settings::default()
            },
        )
        .unwrap_err();
        assert_eq!(refused.0, "migrations.retries");
    }
}
