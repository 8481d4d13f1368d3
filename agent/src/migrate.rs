//! Pass step 2, before the config is loaded strictly: where the migrations
//! of [`crate::migrations`] meet the pass.
//!
//! The config may be in an older schema (or still under the legacy paths),
//! so this step reads only what it needs from it, leniently: the state dir,
//! and the `[migrations]` table. Defaults are relative to the install
//! prefix: the legacy config dir is `<config dir>/../flotilla-legacy`
//! (`/etc/flotilla-legacy` for `/etc/flotilla/agent.toml`), the legacy state
//! dir `<state dir>/../flotilla-legacy` (`/var/lib/flotilla-legacy`).
//!
//! ```toml
//! [migrations]
//! keep_backups = 3              # backups kept under state_dir/backups
//! retries = 3                   # failed runs per agent version before giving up
//! legacy_config_dir = "/etc/flotilla-legacy"
//! legacy_state_dir = "/var/lib/flotilla-legacy"
//! ```

use std::path::{Path, PathBuf};

use crate::migrations::Context;

/// Default state dir when the config names none (or cannot be read).
pub const DEFAULT_STATE_DIR: &str = "/var/lib/flotilla";

/// Builds the migration context for `config_path`, reading the config
/// leniently (an unreadable or invalid config still yields a context, so
/// detection can report the problem).
pub fn context(config_path: &Path, from_version: Option<String>, to_version: &str) -> Context {
    let doc = read_lenient(config_path).or_else(|| {
        // Not moved yet: the legacy copy tells where state lives.
        let legacy = default_legacy(config_path.parent().unwrap_or(Path::new("/")));
        read_lenient(&legacy.join(config_path.file_name().unwrap_or_default()))
    });
    let get_str = |table: Option<&str>, key: &str| -> Option<String> {
        let doc = doc.as_ref()?;
        let item = match table {
            Some(t) => doc.get(t)?.get(key)?,
            None => doc.get(key)?,
        };
        item.as_str().map(str::to_owned)
    };
    let get_int =
        |key: &str| -> Option<i64> { doc.as_ref()?.get("migrations")?.get(key)?.as_integer() };
    let state_dir = get_str(None, "state_dir")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            // Under a prefix: <prefix>/etc/flotilla/agent.toml → <prefix>/var/lib/flotilla.
            match config_path
                .parent()
                .and_then(Path::parent)
                .and_then(Path::parent)
            {
                Some(prefix) if config_path.ends_with("etc/flotilla/agent.toml") => {
                    prefix.join("var/lib/flotilla")
                }
                _ => PathBuf::from(DEFAULT_STATE_DIR),
            }
        });
    let legacy_config_dir = get_str(Some("migrations"), "legacy_config_dir")
        .map(PathBuf::from)
        .unwrap_or_else(|| default_legacy(config_path.parent().unwrap_or(Path::new("/"))));
    let legacy_state_dir = get_str(Some("migrations"), "legacy_state_dir")
        .map(PathBuf::from)
        .unwrap_or_else(|| default_legacy(&state_dir));
    let prefix = match config_path
        .parent()
        .and_then(Path::parent)
        .and_then(Path::parent)
    {
        Some(p) if config_path.ends_with("etc/flotilla/agent.toml") => p.to_owned(),
        _ => PathBuf::from("/"),
    };
    Context {
        prefix,
        config_path: config_path.to_owned(),
        state_dir,
        legacy_config_dir,
        legacy_state_dir,
        from_version,
        to_version: to_version.to_owned(),
        keep_backups: get_int("keep_backups").filter(|n| *n >= 1).unwrap_or(3) as usize,
        retries: get_int("retries").filter(|n| *n >= 1).unwrap_or(3) as u32,
    }
}

/// `<dir>/../flotilla-legacy`.
fn default_legacy(dir: &Path) -> PathBuf {
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
        let c = context(&cfg, None, "1.0.0");
        assert_eq!(c.state_dir, root.path().join("var/lib/flotilla"));
        assert_eq!(c.legacy_config_dir, root.path().join("etc/flotilla-legacy"));
        assert_eq!(
            c.legacy_state_dir,
            root.path().join("var/lib/flotilla-legacy")
        );
        assert_eq!((c.keep_backups, c.retries), (3, 3));
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
        let c = context(&root.path().join("etc/flotilla/agent.toml"), None, "1.0.0");
        assert_eq!(c.state_dir, root.path().join("state"));
        assert_eq!(c.legacy_state_dir, PathBuf::from("/old"));
        assert_eq!((c.keep_backups, c.retries), (5, 2));
    }
}
