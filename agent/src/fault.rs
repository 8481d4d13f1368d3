//! Fault injection for the crash-safety tests (test builds only).
//!
//! Built with the cargo feature `fault-injection`, [`point`] aborts the
//! process (no unwinding, no destructors, no buffered writes flushed: as close
//! to a power cut as a test can get) when the environment variable
//! `FLOTILLA_FAULT` names the point it is called with. Without the feature it
//! compiles to nothing and the variable is never read.
//!
//! Named points, in pass order:
//!
//! | point | where |
//! |---|---|
//! | `mid-download` | half of the artifact is in `<sha256>.partial` |
//! | `after-download` | the whole artifact is in `<sha256>.partial`, not verified |
//! | `after-verify` | size and SHA-256 matched, renamed to `downloads/<sha256>` |
//! | `after-install` | `versions/<v>/flotilla-agent` written, not yet self-tested |
//! | `after-state-write` | the pending update is recorded, `current` not swapped |
//! | `after-swap` | `current` points at the new version |
//! | `after-commit` | the new version's commit is recorded, old versions not pruned |
//! | `during-prune` | one old version moved aside, not yet deleted |
//! | `after-rollback-swap` | `current` points back at the old version, not yet recorded |

/// Every named point (the crash-safety test iterates over them).
pub const POINTS: &[&str] = &[
    "mid-download",
    "after-download",
    "after-verify",
    "after-install",
    "after-state-write",
    "after-swap",
    "after-commit",
    "during-prune",
    "after-rollback-swap",
];

/// Named points inside a migration run (the migration crash tests kill a
/// pass at each and check that the next passes recover):
/// `migration-after-backup` (the backup is written, nothing changed),
/// `legacy-layout-move`, `state-layout-move`, `config-schema-before-write`
/// (inside the built-in migrations), `migration-after-step` (one migration
/// completed and recorded).
pub const MIGRATION_POINTS: &[&str] = &[
    "migration-after-backup",
    "legacy-layout-move",
    "state-layout-move",
    "config-schema-before-write",
    "migration-after-step",
];

/// Aborts the process here if `FLOTILLA_FAULT` names this point (feature
/// `fault-injection` only).
#[inline]
pub fn point(name: &'static str) {
    #[cfg(feature = "fault-injection")]
    {
        debug_assert!(
            POINTS.contains(&name) || MIGRATION_POINTS.contains(&name),
            "unknown fault point {name}"
        );
        if std::env::var("FLOTILLA_FAULT").is_ok_and(|v| v == name) {
            eprintln!("flotilla-agent: fault injected at {name}");
            std::process::abort();
        }
    }
    #[cfg(not(feature = "fault-injection"))]
    let _ = name;
}
