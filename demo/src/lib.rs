//! `flotilla-demo`: a whole fleet on one machine, with the embedded defaults —
//! a local git fleet repo (`file://`), a local directory as the artifact
//! store, a SQLite reporter — driven through the real binaries.
//!
//! The sequence:
//!
//! 1. Build agent 1.0.0, 1.1.0 and 1.2.0 from this source (`FLOTILLA_VERSION`);
//!    1.2.0 carries a config migration that fails on hosts labelled
//!    `role=db` (`FLOTILLA_DEMO_FAILING_MIGRATION`, a build-time knob).
//! 2. Make release and root keys and a fleet repo with `flotilla-publisher`,
//!    publish 1.0.0, start `flotilla-reporter` with an enrollment token, and
//!    install N agents into separate temp roots, each with its own config,
//!    labels and state. Their passes run on a fast schedule: the same
//!    `current/flotilla-agent run` the systemd timer starts, and the previous
//!    version's `rollback` when a pass fails, as `OnFailure=` does.
//! 3. Roll out 1.1.0 by a signed commit (canary 10% → 50% → 100%, waves
//!    seconds apart) and show the progress per wave from the reporter.
//! 4. Roll out 1.2.0: the canary's `db` hosts fail the migration, roll back
//!    and report it; the gate closes; later waves never install 1.2.0.
//! 5. Print a summary, its last line machine-readable (`DEMO agents=…`),
//!    then serve the reporter until Ctrl-C (or exit with `--exit`). The temp
//!    dirs are removed on exit, unless `--keep`.

mod build;
mod fleet;
mod hosts;
mod reporter;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

pub use build::BuildOptions;
pub use hosts::Host;

/// How the demo runs.
#[derive(Clone, Debug)]
pub struct Options {
    /// Number of agents.
    pub agents: usize,
    /// Exit after the summary instead of serving.
    pub exit: bool,
    /// Keep the temp dir.
    pub keep: bool,
    /// Time between two passes of one agent.
    pub pass_interval: Duration,
    /// Where the reporter listens.
    pub listen: String,
    /// How the binaries are built.
    pub build: BuildOptions,
}

/// The three releases.
pub const V1: &str = "1.0.0";
/// The release rolled out first.
pub const V2: &str = "1.1.0";
/// The release whose migration fails on `db` hosts.
pub const V3: &str = "1.2.0";
/// The channel every host follows.
pub const CHANNEL: &str = "stable";

/// The outcome, as printed on the `DEMO` line.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Hosts.
    pub agents: usize,
    /// Hosts whose `current` is 1.1.0.
    pub on_v2: usize,
    /// Hosts whose `current` is 1.2.0.
    pub on_v3: usize,
    /// Hosts that rolled back from 1.2.0.
    pub rolled_back: usize,
    /// `open` or `closed`.
    pub gate_v3: String,
    /// Where that gate's thresholds came from: `manifest` when the reporter
    /// verified the signed manifest itself (`unknown` otherwise, and then
    /// the gate is closed for want of one).
    pub gate_source_v3: String,
    /// Hosts in the 1.2.0 canary wave.
    pub canary: usize,
    /// Hosts outside the canary that ever installed 1.2.0 (must be 0).
    pub beyond_canary_installed_v3: usize,
    /// migration_execution failed events in the reporter.
    pub migration_failed_events: usize,
    /// update_rollback events in the reporter.
    pub rollback_events: usize,
}

impl Summary {
    /// The machine-readable line.
    pub fn line(&self) -> String {
        format!(
            "DEMO agents={} on_{V2}={} on_{V3}={} rolled_back={} gate_{V3}={} gate_source_{V3}={} canary_{V3}={} beyond_canary_installed_{V3}={} migration_failed_events={} rollback_events={}",
            self.agents,
            self.on_v2,
            self.on_v3,
            self.rolled_back,
            self.gate_v3,
            self.gate_source_v3,
            self.canary,
            self.beyond_canary_installed_v3,
            self.migration_failed_events,
            self.rollback_events
        )
    }
}

/// Runs the demo (see the crate docs).
pub fn run(opts: Options) -> Result<Summary> {
    if opts.agents < 2 {
        bail!("--agents must be at least 2");
    }
    let started = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        ctrlc::set_handler(move || stop.store(true, Ordering::SeqCst))
            .context("installing the Ctrl-C handler")?;
    }
    let tmp = tempfile::Builder::new()
        .prefix("flotilla-demo.")
        .tempdir()
        .context("making the temp dir")?;
    let root = tmp.path().to_owned();
    say(&format!("working in {}", root.display()));

    let bins = build::build_all(&workspace_root(), &root, &opts.build)?;
    say(&format!("built in {:.0?}", started.elapsed()));
    let t0 = Instant::now();

    let fleet = fleet::Fleet::create(&bins, &root)?;
    fleet.add_release(V1)?;
    fleet.rollout(V1, "all=100%@0s/0s", None)?;
    fleet.sign_and_commit("release 1.0.0 to everyone")?;
    say("fleet repo made: keys, root, release 1.0.0 signed and committed");

    let rep = reporter::Reporter::start(
        &bins,
        &root,
        &opts.listen,
        &fleet.manifest_path(),
        &fleet.root_path(),
    )?;
    let enroll_token = rep.enrollment_token()?;
    say(&format!("reporter up at {}", rep.url));

    let hosts = hosts::plan(opts.agents, &fleet, &rep.url, &root, &enroll_token)?;
    for h in &hosts {
        h.install(&bins.agent(V1))?;
    }
    say(&format!(
        "{} agents installed ({} labelled role=db)",
        hosts.len(),
        hosts.iter().filter(|h| h.db).count()
    ));
    let runner = hosts::Runner::start(hosts.clone(), opts.pass_interval, stop.clone());

    // Phase 1: everyone on 1.0.0 and reporting.
    wait_for(
        &stop,
        Duration::from_secs(120),
        "every agent to report on 1.0.0",
        || Ok(rep.agents_known()? >= hosts.len()),
    )?;
    say(&format!(
        "all {} agents report, on {V1} ({:.0?})",
        hosts.len(),
        t0.elapsed()
    ));

    // Phase 2: 1.1.0 in three waves.
    fleet.add_release(V2)?;
    fleet.rollout(
        V2,
        "canary=10%@0s/3s,half=50%@8s/3s,all=100%@16s/3s",
        Some((0.2, 1)),
    )?;
    fleet.sign_and_commit("roll out 1.1.0: canary 10%, half, all")?;
    say(&format!("rollout of {V2} committed and signed"));
    wait_for(
        &stop,
        Duration::from_secs(60),
        &format!("the reporter to verify the manifest of {V2}"),
        || rep.rolls_out(CHANNEL, V2),
    )?;
    let mut last = String::new();
    wait_for(
        &stop,
        Duration::from_secs(180),
        &format!("every agent on {V2}"),
        || {
            let table = rep.progress_table(CHANNEL, V2)?;
            if table != last {
                eprintln!("{table}");
                last = table;
            }
            Ok(hosts
                .iter()
                .all(|h| h.committed_version().as_deref() == Some(V2)))
        },
    )?;
    say(&format!("all agents on {V2} ({:.0?})", t0.elapsed()));

    // Phase 3: 1.2.0 fails on the canary's db hosts; the gate closes.
    fleet.add_release(V3)?;
    let later_wave_opens = Duration::from_secs(20);
    fleet.rollout(
        V3,
        "canary=10%@0s/2s,half=50%@20s/3s,all=100%@26s/3s",
        Some((0.1, 1)),
    )?;
    let v3_start = Instant::now();
    fleet.sign_and_commit("roll out 1.2.0")?;
    say(&format!(
        "rollout of {V3} committed and signed; its migration fails on role=db hosts"
    ));
    // Tables before the reporter verified the new manifest would show the
    // waves agents last reported (1.1.0's), not 1.2.0's.
    wait_for(
        &stop,
        Duration::from_secs(60),
        &format!("the reporter to verify the manifest of {V3}"),
        || rep.rolls_out(CHANNEL, V3),
    )?;
    let canary: Vec<&Host> = hosts.iter().filter(|h| h.in_v3_canary).collect();
    let db_canaries: Vec<&Host> = canary.iter().copied().filter(|h| h.db).collect();
    last.clear();
    wait_for(
        &stop,
        Duration::from_secs(180),
        "the 1.2.0 canary to settle and the later waves to open",
        || {
            let table = rep.progress_table(CHANNEL, V3)?;
            if table != last {
                eprintln!("{table}");
                last = table;
            }
            let settled = db_canaries.iter().all(|h| h.rolled_back_from(V3))
                && canary
                    .iter()
                    .filter(|h| !h.db)
                    .all(|h| h.committed_version().as_deref() == Some(V3));
            // Let the later waves' open times pass, plus a few passes, to show they hold.
            Ok(settled
                && rep.gate(CHANNEL, V3)? == "closed"
                && v3_start.elapsed() > later_wave_opens + Duration::from_secs(10))
        },
    )?;

    let summary = summarize(&hosts, &rep)?;
    runner.pause();
    eprintln!();
    eprintln!(
        "Summary after {:.0?} (plus {:.0?} of builds):",
        t0.elapsed(),
        started.elapsed() - t0.elapsed()
    );
    eprintln!("  hosts on {V2}: {}", summary.on_v2);
    eprintln!(
        "  hosts on {V3}: {} (the canary's web hosts)",
        summary.on_v3
    );
    eprintln!(
        "  rolled back from {V3}: {} (the canary's db hosts: migration failed, backup restored)",
        summary.rolled_back
    );
    eprintln!("  halt gate for {V3}: {}", summary.gate_v3);
    eprintln!(
        "  hosts beyond the canary that installed {V3}: {}",
        summary.beyond_canary_installed_v3
    );
    if !opts.exit {
        let db = db_canaries
            .first()
            .map(|h| h.id.clone())
            .unwrap_or_default();
        eprintln!();
        eprintln!("Reporter: {}/  (admin token: {})", rep.url, rep.admin_token);
        eprintln!("  fleet overview: {}/", rep.url);
        if !db.is_empty() {
            eprintln!("  a host whose migration failed: {}/agents/{db}", rep.url);
        }
        eprintln!("{}", ctrl_c_note(opts.keep, &root));
        runner.resume();
    }
    println!("{}", summary.line());
    if !opts.exit {
        while !stop.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(200));
        }
        eprintln!("stopping");
    }
    drop(runner);
    drop(rep);
    if opts.keep {
        let kept = tmp.keep();
        eprintln!("kept {}", kept.display());
    }
    Ok(summary)
}

/// What Ctrl-C will do, as the demo says it while it serves.
fn ctrl_c_note(keep: bool, root: &std::path::Path) -> String {
    if keep {
        format!(
            "Agents keep running their passes. Ctrl-C stops everything; {} is kept (--keep).",
            root.display()
        )
    } else {
        format!(
            "Agents keep running their passes. Ctrl-C stops everything and removes {}.",
            root.display()
        )
    }
}

fn summarize(hosts: &[Host], rep: &reporter::Reporter) -> Result<Summary> {
    let mut s = Summary {
        agents: hosts.len(),
        gate_v3: rep.gate(CHANNEL, V3)?,
        gate_source_v3: rep.gate_source(CHANNEL, V3)?,
        ..Summary::default()
    };
    for h in hosts {
        match h.committed_version().as_deref() {
            Some(V2) => s.on_v2 += 1,
            Some(V3) => s.on_v3 += 1,
            _ => {}
        }
        if h.rolled_back_from(V3) {
            s.rolled_back += 1;
        }
        if h.in_v3_canary {
            s.canary += 1;
        } else if h.ever_installed(V3) {
            s.beyond_canary_installed_v3 += 1;
        }
        s.migration_failed_events +=
            rep.count_events(&h.id, "migration_execution", Some("failed"))?;
        s.rollback_events += rep.count_events(&h.id, "update_rollback", None)?;
    }
    Ok(s)
}

/// Polls `cond` every 250 ms until it holds, Ctrl-C, or `limit`.
fn wait_for(
    stop: &AtomicBool,
    limit: Duration,
    what: &str,
    mut cond: impl FnMut() -> Result<bool>,
) -> Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        if cond()? {
            return Ok(());
        }
        if stop.load(Ordering::SeqCst) {
            bail!("interrupted while waiting for {what}");
        }
        if Instant::now() > deadline {
            bail!("gave up after {limit:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn say(msg: &str) {
    eprintln!("==> {msg}");
}

/// The workspace this demo was built from.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("demo/ has a parent")
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn with_keep_ctrl_c_does_not_claim_to_remove_the_temp_dir() {
        let root = std::path::Path::new("/tmp/flotilla-demo-x");
        assert!(ctrl_c_note(false, root).contains("removes /tmp/flotilla-demo-x"));
        let kept = ctrl_c_note(true, root);
        assert!(!kept.contains("removes"), "{kept}");
        assert!(kept.contains("/tmp/flotilla-demo-x is kept"), "{kept}");
    }
}
