//! The migrations this agent ships, in order.
//!
//! | id | what |
//! |---|---|
//! | `legacy-layout` | a previous install under the legacy paths (`/etc/flotilla-legacy`, `/var/lib/flotilla-legacy`, under the install prefix) moves to the current config dir and state dir; secrets (enrollment and agent tokens) move byte for byte, with their modes |
//! | `config-schema-2` | config schema 1 → 2: `[reporter] token_file` → `enrollment_token_file`; `[reporter] fail_open = bool` → `gate_unreachable = "proceed" \| "wait"` |
//! | `config-schema-3` | config schema 2 → 3: `[update] attempts` → `health_attempts`; `config_schema = 3` |
//! | `state-layout-2` | state dir layout 1 → 2: `events.jsonl` → `spool/events.jsonl` (merged by event id with a spool already there), `agent-id` → `agent_id`, `token` → `agent.token` (byte for byte, mode kept) |
//!
//! The config schema version is its own number ([`CONFIG_SCHEMA`]), written
//! in the file as `config_schema`, never derived from the agent version; a
//! file without it is schema 1. Config edits go through `toml_edit`, so
//! comments, ordering and tables this agent does not know are preserved.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::error::{Error, Result};
use super::{Context, Detection, Migration};

/// The config schema this agent reads.
pub const CONFIG_SCHEMA: i64 = 3;

/// The migrations of this agent, in the order they run.
pub fn registry() -> Vec<Box<dyn Migration>> {
    let mut r: Vec<Box<dyn Migration>> = vec![
        Box::new(LegacyLayout),
        Box::new(ConfigSchema { to: 2 }),
        Box::new(ConfigSchema { to: 3 }),
        Box::new(StateLayout),
    ];
    if let Some(label) = DEMO_FAILING_MIGRATION {
        r.push(Box::new(DemoFailing { label }));
    }
    r
}

/// Build-time knob for the demo and tests (with the cargo feature
/// `test-knobs`, `FLOTILLA_DEMO_FAILING_MIGRATION=key=value` when building):
/// adds a config migration that fails on hosts carrying that label, so a real
/// build shows a failed migration, its restored backup and the rollback.
/// Without the feature (every real build) it is `None`.
#[cfg(feature = "test-knobs")]
pub const DEMO_FAILING_MIGRATION: Option<&str> = option_env!("FLOTILLA_DEMO_FAILING_MIGRATION");
/// Always `None`: built without the feature `test-knobs`.
#[cfg(not(feature = "test-knobs"))]
pub const DEMO_FAILING_MIGRATION: Option<&str> = None;

/// A config migration that fails on hosts with a given label (see
/// [`DEMO_FAILING_MIGRATION`]). It touches the config before failing, so the
/// restore is real.
pub struct DemoFailing {
    /// `key=value`.
    pub label: &'static str,
}

impl DemoFailing {
    fn matches(&self, ctx: &Context) -> Result<bool> {
        let Some(doc) = ConfigSchema::read(ctx)? else {
            return Ok(false);
        };
        let (k, v) = self.label.split_once('=').unwrap_or((self.label, ""));
        Ok(doc
            .get("labels")
            .and_then(|l| l.get(k))
            .and_then(|x| x.as_str())
            .is_some_and(|x| x == v))
    }
}

impl Migration for DemoFailing {
    fn id(&self) -> &'static str {
        "demo-config-tuning"
    }

    fn detect(&self, ctx: &Context) -> Result<Detection> {
        if !self.matches(ctx)? {
            return Ok(Detection::NotNeeded);
        }
        Ok(Detection::Needed {
            reason: format!("hosts labelled {} get the new [tuning] table", self.label),
            paths: vec![ctx.config_path.clone()],
        })
    }

    fn execute(&self, ctx: &Context) -> Result<()> {
        let Some(mut doc) = ConfigSchema::read(ctx)? else {
            return Err(Error::Missing {
                path: ctx.config_path.clone(),
            });
        };
        doc["tuning"] = toml_edit::table();
        doc["tuning"]["io_depth"] = toml_edit::value(64);
        flotilla_signing::fs::write_atomic(&ctx.config_path, doc.to_string().as_bytes(), 0o600)
            .map_err(Error::io("writing", &ctx.config_path))?;
        Err(Error::Field {
            path: ctx.config_path.clone(),
            field: "tuning.io_depth".into(),
            reason: format!(
                "the database's io scheduler refuses io_depth = 64 (demo: this migration fails on hosts labelled {})",
                self.label
            ),
        })
    }
}

/// The `config_schema` of a config file, leniently: a missing key is 1; an
/// unreadable or unparsable file is `None`.
pub fn config_schema_of(path: &Path) -> Option<i64> {
    let text = fs::read_to_string(path).ok()?;
    let doc: toml_edit::DocumentMut = text.parse().ok()?;
    Some(
        doc.get("config_schema")
            .and_then(|v| v.as_integer())
            .unwrap_or(1),
    )
}

/// Moves a legacy install to the current paths.
pub struct LegacyLayout;

impl LegacyLayout {
    /// (legacy dir, current dir) pairs that exist on this host.
    fn pairs(ctx: &Context) -> Vec<(PathBuf, PathBuf)> {
        let config_dir = ctx
            .config_path
            .parent()
            .unwrap_or(Path::new("/"))
            .to_owned();
        [
            (ctx.legacy_config_dir.clone(), config_dir),
            (ctx.legacy_state_dir.clone(), ctx.state_dir.clone()),
        ]
        .into_iter()
        .filter(|(legacy, _)| legacy.is_dir())
        .collect()
    }
}

impl Migration for LegacyLayout {
    fn id(&self) -> &'static str {
        "legacy-layout"
    }

    fn detect(&self, ctx: &Context) -> Result<Detection> {
        let pairs = Self::pairs(ctx);
        if pairs.is_empty() {
            return Ok(Detection::NotNeeded);
        }
        let mut paths = Vec::new();
        for (legacy, current) in &pairs {
            paths.push(legacy.clone());
            for entry in fs::read_dir(legacy).map_err(Error::io("reading", legacy))? {
                let name = entry.map_err(Error::io("reading", legacy))?.file_name();
                paths.push(current.join(&name));
                paths.push(current.join(legacy_name(&name)));
            }
        }
        Ok(Detection::Needed {
            reason: format!(
                "legacy install found at {}",
                pairs
                    .iter()
                    .map(|(l, _)| l.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            paths,
        })
    }

    fn execute(&self, ctx: &Context) -> Result<()> {
        for (legacy, current) in Self::pairs(ctx) {
            fs::create_dir_all(&current).map_err(Error::io("creating", &current))?;
            for entry in fs::read_dir(&legacy).map_err(Error::io("reading", &legacy))? {
                let entry = entry.map_err(Error::io("reading", &legacy))?;
                let from = entry.path();
                let to = current.join(entry.file_name());
                crate::fault::point("legacy-layout-move");
                if !exists(&to)? {
                    move_path(&from, &to)?;
                } else if same_file_contents(&from, &to)? {
                    super::remove_any(&from).map_err(Error::io("removing", &from))?;
                } else {
                    // Both exist and differ: the current one wins, the legacy one is kept beside it.
                    move_path(&from, &current.join(legacy_name(&entry.file_name())))?;
                }
            }
            fs::remove_dir(&legacy).map_err(Error::io("removing", &legacy))?;
            flotilla_signing::fs::sync_dir(&current).map_err(Error::io("syncing", &current))?;
        }
        Ok(())
    }
}

fn legacy_name(name: &std::ffi::OsStr) -> String {
    format!("{}.legacy", name.to_string_lossy())
}

fn exists(p: &Path) -> Result<bool> {
    match fs::symlink_metadata(p) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::io("checking", p)(e)),
    }
}

fn same_file_contents(a: &Path, b: &Path) -> Result<bool> {
    let (ma, mb) = (
        fs::symlink_metadata(a).map_err(Error::io("checking", a))?,
        fs::symlink_metadata(b).map_err(Error::io("checking", b))?,
    );
    if !(ma.is_file() && mb.is_file()) || ma.len() != mb.len() {
        return Ok(false);
    }
    Ok(fs::read(a).map_err(Error::io("reading", a))?
        == fs::read(b).map_err(Error::io("reading", b))?)
}

/// Renames, or copies (keeping modes) and then removes across file systems.
fn move_path(from: &Path, to: &Path) -> Result<()> {
    match fs::rename(from, to) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(18) => {
            // EXDEV: another file system.
            let tmp = to.with_extension("migrating");
            super::remove_any(&tmp).map_err(Error::io("removing", &tmp))?;
            if let Err(e) = super::copy_tree(from, &tmp) {
                // Leave nothing half-copied behind.
                let _ = super::remove_any(&tmp);
                return Err(Error::io(format!("copying {} to", from.display()), &tmp)(e));
            }
            fs::rename(&tmp, to)
                .map_err(Error::io(format!("renaming {} to", tmp.display()), to))?;
            super::remove_any(from).map_err(Error::io("removing", from))
        }
        Err(e) => Err(Error::io(format!("moving {} to", from.display()), to)(e)),
    }
}

/// One step of the config schema.
pub struct ConfigSchema {
    /// The schema this step produces.
    pub to: i64,
}

impl ConfigSchema {
    fn read(ctx: &Context) -> Result<Option<toml_edit::DocumentMut>> {
        let text = match fs::read_to_string(&ctx.config_path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io("reading", &ctx.config_path)(e)),
        };
        Ok(Some(parse_toml(&text, &ctx.config_path)?))
    }
}

fn parse_toml(text: &str, path: &Path) -> Result<toml_edit::DocumentMut> {
    text.parse().map_err(|source| Error::Toml {
        path: path.to_owned(),
        source,
    })
}

fn schema(doc: &toml_edit::DocumentMut, path: &Path) -> Result<i64> {
    let bad = |reason: String| Error::Field {
        path: path.to_owned(),
        field: "config_schema".into(),
        reason,
    };
    match doc.get("config_schema") {
        None => Ok(1),
        Some(v) => match v.as_integer() {
            Some(n) if (1..=CONFIG_SCHEMA).contains(&n) => Ok(n),
            Some(n) => Err(bad(format!(
                "{n} is newer than this agent understands ({CONFIG_SCHEMA})"
            ))),
            None => Err(bad("must be an integer".into())),
        },
    }
}

impl Migration for ConfigSchema {
    fn id(&self) -> &'static str {
        match self.to {
            2 => "config-schema-2",
            3 => "config-schema-3",
            _ => "config-schema-unknown",
        }
    }

    fn detect(&self, ctx: &Context) -> Result<Detection> {
        // A legacy config not yet moved is migrated after the move.
        let legacy = ctx
            .legacy_config_dir
            .join(ctx.config_path.file_name().unwrap_or_default());
        let doc = match Self::read(ctx)? {
            Some(doc) => doc,
            None if legacy.exists() => {
                let text = fs::read_to_string(&legacy).map_err(Error::io("reading", &legacy))?;
                parse_toml(&text, &legacy)?
            }
            None => return Ok(Detection::NotNeeded),
        };
        let found = schema(&doc, &ctx.config_path)?;
        if found >= self.to {
            return Ok(Detection::NotNeeded);
        }
        Ok(Detection::Needed {
            reason: format!("config schema {found} is older than {}", self.to),
            paths: vec![ctx.config_path.clone()],
        })
    }

    fn execute(&self, ctx: &Context) -> Result<()> {
        let Some(mut doc) = Self::read(ctx)? else {
            return Err(Error::Missing {
                path: ctx.config_path.clone(),
            });
        };
        if schema(&doc, &ctx.config_path)? >= self.to {
            return Ok(()); // done before a crash
        }
        match self.to {
            2 => {
                if let Some(rep) = doc.get_mut("reporter").and_then(|t| t.as_table_like_mut()) {
                    if let Some(v) = rep.remove("token_file") {
                        rep.insert("enrollment_token_file", v);
                    }
                    if let Some(v) = rep.remove("fail_open") {
                        let proceed = v.as_bool().ok_or_else(|| Error::Field {
                            path: ctx.config_path.clone(),
                            field: "reporter.fail_open".into(),
                            reason: "must be true or false".into(),
                        })?;
                        rep.insert(
                            "gate_unreachable",
                            toml_edit::value(if proceed { "proceed" } else { "wait" }),
                        );
                    }
                }
            }
            3 => {
                if let Some(upd) = doc.get_mut("update").and_then(|t| t.as_table_like_mut()) {
                    if let Some(v) = upd.remove("attempts") {
                        upd.insert("health_attempts", v);
                    }
                }
            }
            n => {
                return Err(Error::Field {
                    path: ctx.config_path.clone(),
                    field: "config_schema".into(),
                    reason: format!("this agent has no migration to schema {n}"),
                })
            }
        }
        doc["config_schema"] = toml_edit::value(self.to);
        crate::fault::point("config-schema-before-write");
        let mode = fs::metadata(&ctx.config_path)
            .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o7777)
            .unwrap_or(0o600);
        flotilla_signing::fs::write_atomic(&ctx.config_path, doc.to_string().as_bytes(), mode)
            .map_err(Error::io("writing", &ctx.config_path))
    }
}

/// The state dir's layout 1 (agents before 1.0 kept everything flat) moves
/// to layout 2. Runs after `legacy-layout`, which brings an old state dir
/// over unchanged.
pub struct StateLayout;

/// (layout-1 name, layout-2 name) under the state dir.
pub const STATE_LAYOUT_1: &[(&str, &str)] = &[
    ("events.jsonl", "spool/events.jsonl"),
    ("agent-id", "agent_id"),
    ("token", "agent.token"),
];

impl StateLayout {
    /// Layout-1 files in `dir`, as (old, new) paths under the state dir.
    fn present_in(dir: &Path, state_dir: &Path) -> Result<Vec<(PathBuf, PathBuf)>> {
        let mut out = Vec::new();
        for (old, new) in STATE_LAYOUT_1 {
            if exists(&dir.join(old))? {
                out.push((state_dir.join(old), state_dir.join(new)));
            }
        }
        Ok(out)
    }

    fn present(ctx: &Context) -> Result<Vec<(PathBuf, PathBuf)>> {
        Self::present_in(&ctx.state_dir, &ctx.state_dir)
    }
}

impl Migration for StateLayout {
    fn id(&self) -> &'static str {
        "state-layout-2"
    }

    fn detect(&self, ctx: &Context) -> Result<Detection> {
        // A legacy state dir not yet moved is converted after the move.
        let mut present = Self::present(ctx)?;
        if present.is_empty() && ctx.legacy_state_dir.is_dir() {
            present = Self::present_in(&ctx.legacy_state_dir, &ctx.state_dir)?;
        }
        if present.is_empty() {
            return Ok(Detection::NotNeeded);
        }
        let mut paths = Vec::new();
        for (old, new) in &present {
            paths.push(old.clone());
            paths.push(new.clone());
            paths.push(new.with_file_name(legacy_name(new.file_name().unwrap_or_default())));
        }
        Ok(Detection::Needed {
            reason: format!(
                "state dir {} has layout 1 ({})",
                ctx.state_dir.display(),
                present
                    .iter()
                    .map(|(o, _)| o.file_name().unwrap_or_default().to_string_lossy())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            paths,
        })
    }

    fn execute(&self, ctx: &Context) -> Result<()> {
        for (old, new) in Self::present(ctx)? {
            crate::fault::point("state-layout-move");
            let dir = new.parent().unwrap_or(&ctx.state_dir).to_owned();
            fs::create_dir_all(&dir).map_err(Error::io("creating", &dir))?;
            if !exists(&new)? {
                move_path(&old, &new)?;
            } else if new.ends_with("spool/events.jsonl") {
                merge_spool(&old, &new)?;
                fs::remove_file(&old).map_err(Error::io("removing", &old))?;
            } else if same_file_contents(&old, &new)? {
                fs::remove_file(&old).map_err(Error::io("removing", &old))?;
            } else {
                // Both exist and differ: the current one wins, the old one is kept beside it.
                move_path(
                    &old,
                    &new.with_file_name(legacy_name(new.file_name().unwrap_or_default())),
                )?;
            }
            flotilla_signing::fs::sync_dir(&dir).map_err(Error::io("syncing", &dir))?;
        }
        flotilla_signing::fs::sync_dir(&ctx.state_dir)
            .map_err(Error::io("syncing", &ctx.state_dir))?;
        Ok(())
    }
}

/// Appends to the spool `into` the whole records of `from` whose event id it
/// does not hold yet (so a run repeated after a crash adds nothing twice); a
/// torn or unparsable line in `from` is skipped.
fn merge_spool(from: &Path, into: &Path) -> Result<()> {
    fn id_of(line: &str) -> Option<String> {
        let v: serde_json::Value = serde_json::from_str(line).ok()?;
        Some(v.get("id")?.as_str()?.to_owned())
    }
    let current = fs::read_to_string(into).map_err(Error::io("reading", into))?;
    let old = fs::read_to_string(from).map_err(Error::io("reading", from))?;
    let known: std::collections::HashSet<String> = current.lines().filter_map(id_of).collect();
    let mut merged = String::with_capacity(current.len() + old.len());
    // A torn last record of the current spool is cut, as the spool itself would.
    for line in current.lines().filter(|l| id_of(l).is_some()) {
        merged.push_str(line);
        merged.push('\n');
    }
    for line in old.lines() {
        if id_of(line).is_some_and(|id| !known.contains(&id)) {
            merged.push_str(line);
            merged.push('\n');
        }
    }
    let mode = fs::metadata(into)
        .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o7777)
        .unwrap_or(0o600);
    flotilla_signing::fs::write_atomic(into, merged.as_bytes(), mode)
        .map_err(Error::io("writing", into))
}
