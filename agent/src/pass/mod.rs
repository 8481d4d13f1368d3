//! One pass of the agent (`flotilla-agent run`), docs/design.md, "The agent".
//! `run_locked` reads as this sequence; each step lives in its own file.
//!
//! 1. Lock the state dir (`flock`); if another pass holds it, exit 0.
//!    Load `state.json`, the agent id, the spool; emit `agent_startup` on
//!    the first pass of a version.
//! 2. Migrations (`migration.rs`, [`crate::migrations`]): before the config
//!    is loaded strictly, since they may move or rewrite it. A failure is
//!    reported; a pending version whose migration failed is rolled back and
//!    the backup restored, a committed one keeps running.
//! 3. Finish or undo a pending update (`pending.rs`, a state machine over
//!    the pending update's phase, and `health.rs`): an interrupted rollback
//!    is completed; an update killed before its swap is dropped and redone;
//!    the new binary's first pass through `current` checks its own health
//!    (state dir writable, trust root valid). Healthy, and the manifest
//!    verifies: commit (record, then prune to `keep_versions`). Unhealthy:
//!    one attempt fewer; at zero, roll back (the migration backup restored,
//!    `current` back to the old version, the release blocked until a newer
//!    serial names another). A manifest that cannot be fetched or is refused
//!    (an outage, a stale or corrupt mirror) is reported and retried on the
//!    next pass, and counts against nothing.
//! 4. Fetch the manifest (git2 or conditional HTTP), walk the root chain,
//!    check thresholds, expiry and serial (`manifest.rs`, [`crate::trust`]).
//!    A refused manifest is a `manifest_check` event, and the agent keeps
//!    running what it has.
//! 5. Decide (`decision.rs`, [`crate::decide`]): pins, channel, `paused`,
//!    wave and spread, downgrade policy, stepping stones, blocked release;
//!    then the halt gate (`crate::gate`).
//! 6. Download and verify (`update.rs`, [`crate::download`]).
//! 7. Install as `versions/<v>/flotilla-agent`, run its `self-test`, record
//!    the pending update (`phase = swapping`, attempts left), point
//!    `previous` at the running version and swap `current` atomically, and
//!    end the pass: the next start runs the new version, which does step 3.
//! 8. Enrollment and event delivery within a time budget
//!    (`crate::delivery`), then the check-in (`crate::checkin`: seen, and
//!    what the pass decided; at most 2 s, never an error), and `state.json` saved with the pass's last
//!    error; a pass that changed nothing but when it checked writes only
//!    `checked.json`, without fsync ([`StateDir::save_pass`]).
//!
//! Events are emitted at every step, each built by one constructor of
//! `Events`; repeated identical failures of the manifest check and
//! unchanged deferrals are reported once (when they start) rather than on
//! every 15-minute tick, so a long outage does not flood the spool.

mod decision;
mod ending;
mod health;
mod manifest;
mod migration;
mod pending;
mod update;

use std::path::Path;

use chrono::{DateTime, Utc};

use self::decision::Next;
pub use self::ending::Ending;
use self::migration::Migrated;
pub use self::pending::rollback;
use self::pending::Step;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::events::Events;
use crate::layout::Layout;
use crate::lock::StateLock;
use crate::spool::Spool;
use crate::state::{State, StateDir};
use crate::version::VERSION;

/// Runs one pass with the config at hand, at the current time.
pub fn run(config: &Config) -> Result<Ending> {
    run_at(config, Utc::now())
}

/// `flotilla-agent run`: the whole pass from the config file's path. The
/// migrations run before the config is loaded strictly, since they may have
/// to move or rewrite it (legacy paths, an older `config_schema`). A config
/// that still does not load is reported in the spool and returned as the
/// error.
pub fn run_file(config_path: &Path) -> Result<Ending> {
    let now = Utc::now();
    // 1. Lock the state dir.
    let Some((sd, lock)) = lock(&Layout::lenient(config_path).state_dir)? else {
        return Ok(Ending::Busy);
    };
    // 2. Migrations, then the config, strictly.
    let migrated = migration::run(config_path, &sd);
    let config = match Config::load(config_path) {
        Ok(c) => c,
        Err(e) => {
            migration::record_without_config(&sd, &migrated, &e);
            return Err(e);
        }
    };
    run_locked(&config, sd, lock, now, migrated)
}

/// Runs one pass as if it were `now` (tests inject the clock).
pub fn run_at(config: &Config, now: DateTime<Utc>) -> Result<Ending> {
    let Some((sd, lock)) = lock(&config.state_dir)? else {
        return Ok(Ending::Busy);
    };
    let migrated = migration::run(&config.path, &sd);
    run_locked(config, sd, lock, now, migrated)
}

/// Step 1: the state dir, created if need be, and its lock; `None` when
/// another pass holds it.
fn lock(state_dir: &Path) -> Result<Option<(StateDir, StateLock)>> {
    let sd = StateDir::new(state_dir);
    sd.create()?;
    match StateLock::acquire(&sd.lock_file()) {
        Err(Error::Busy { .. }) => Ok(None),
        other => Ok(Some((sd, other?))),
    }
}

/// The pass, with the lock held and the migrations run.
fn run_locked(
    config: &Config,
    sd: StateDir,
    _lock: StateLock,
    now: DateTime<Utc>,
    migrated: Migrated,
) -> Result<Ending> {
    // 1. State, agent id, spool; `agent_startup` on a version's first pass.
    let mut pass = Pass::open(config, sd, now)?;
    let first_of_version = pass.startup();
    // 2. The migrations' report; a failure is acted on.
    let outcome = match pass.report_migrations(&migrated, first_of_version) {
        Some(e) => pass.migration_failed(e),
        // 3-7.
        None => pass.work(),
    };
    let outcome = match outcome {
        Ok(o) => o,
        Err(e) => {
            pass.state.last_error = Some(e.to_string());
            let _ = pass.sd.save(&pass.state);
            return Err(e);
        }
    };
    // 8. Deliver events, check in; save the state.
    crate::delivery::for_pass(config, &pass.sd, &mut pass.ev);
    crate::checkin::send(
        config,
        &pass.sd,
        &outcome,
        pass.decided.take(),
        pass.ev.channel.as_deref(),
    );
    pass.state.last_error = outcome.error();
    // An idle pass changes only when it checked: no fsync for that.
    pass.sd.save_pass(&pass.loaded, &pass.state)?;
    Ok(outcome)
}

/// One pass's working set.
struct Pass<'a> {
    config: &'a Config,
    sd: StateDir,
    state: State,
    /// The state as the pass found it.
    loaded: State,
    ev: Events,
    http: ureq::Agent,
    now: DateTime<Utc>,
    /// What step 5 decided, for the check-in.
    decided: Option<crate::checkin::Decided>,
}

impl<'a> Pass<'a> {
    fn open(config: &'a Config, sd: StateDir, now: DateTime<Utc>) -> Result<Self> {
        let state = sd.load()?;
        let agent_id = sd
            .agent_id(config.agent_id.as_deref(), true)?
            .expect("created");
        let spool = match Spool::open(sd.root()) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!("{}: cannot open the event spool: {e}", sd.root().display());
                None
            }
        };
        let ev = Events::new(spool, &agent_id, Some(&config.channel));
        let http = crate::http::client(config.update.connect_timeout, config.update.stall_timeout)?;
        Ok(Pass {
            config,
            sd,
            loaded: state.clone(),
            state,
            ev,
            http,
            now,
            decided: None,
        })
    }

    /// `agent_startup` on the first pass of this version; returns whether
    /// this is that pass.
    fn startup(&mut self) -> bool {
        if self.state.started_version.as_deref() == Some(VERSION) {
            return false;
        }
        self.ev.agent_started(self.sd.root(), self.config);
        self.state.started_version = Some(VERSION.into());
        true
    }

    /// Steps 3-7.
    fn work(&mut self) -> Result<Ending> {
        // 3. Finish or undo a pending update.
        let checked = match self.settle_pending()? {
            Step::Done(o) => return Ok(o),
            Step::Continue(v) => v,
        };
        // 4. The manifest (already verified by a health check that passed).
        let verified = match checked {
            Some(v) => v,
            None => match self.check_manifest() {
                Ok(v) => v,
                Err(e) => return Ok(self.manifest_failed(e)),
            },
        };
        // 5. Decide; the halt gate.
        let (plan, serial) = match self.decide(&verified) {
            Next::Done(o) => return Ok(o),
            Next::Update(plan, serial) => (plan, serial),
        };
        // 6-7. Download, verify, install, swap.
        self.update(&plan, serial)
    }
}
