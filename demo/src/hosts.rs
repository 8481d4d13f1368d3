//! The demo's hosts: each a temp root with its own config, labels, state and
//! install dir, and a runner that starts their passes on a fast schedule.

use std::collections::BTreeSet;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use flotilla_protocol::wave;

use crate::fleet::Fleet;
use crate::{CHANNEL, V3};

/// One host of the demo fleet.
#[derive(Clone, Debug)]
pub struct Host {
    /// Its agent id.
    pub id: String,
    /// Labelled `role=db` (1.2.0's migration fails there).
    pub db: bool,
    /// In the canary wave of the 1.2.0 rollout.
    pub in_v3_canary: bool,
    /// Its root (what `/` is for it).
    pub root: PathBuf,
    /// Versions seen at `current` after its passes.
    seen: Arc<Mutex<BTreeSet<String>>>,
}

/// Share of the 1.2.0 rollout's canary wave, in percent (as in the rollout).
const CANARY_PERCENT: f64 = 10.0;

/// Picks `n` agent ids so that the 1.2.0 canary has `max(1, n/10)` hosts,
/// labels the first canary host (and every other one) `role=db`, and every
/// third host beyond the canary too, and lays out their roots.
pub fn plan(
    n: usize,
    fleet: &Fleet,
    reporter: &str,
    root: &Path,
    enroll_token: &str,
) -> Result<Vec<Host>> {
    let canary_size = ((n as f64 * CANARY_PERCENT / 100.0).round() as usize).max(1);
    let bound = wave::bound(CANARY_PERCENT);
    let mut canary = Vec::new();
    let mut rest = Vec::new();
    let mut k = 0;
    while canary.len() < canary_size || rest.len() < n - canary_size {
        let id = format!("host-{k:03}");
        if wave::bucket(CHANNEL, V3, &id) < bound {
            if canary.len() < canary_size {
                canary.push(id);
            }
        } else if rest.len() < n - canary_size {
            rest.push(id);
        }
        k += 1;
    }
    let branch = git_branch(&fleet.repo)?;
    let mut hosts = Vec::new();
    for (i, id) in canary.into_iter().enumerate() {
        hosts.push(Host::new(id, i % 2 == 0, true, root));
    }
    for (i, id) in rest.into_iter().enumerate() {
        hosts.push(Host::new(id, i % 3 == 0, false, root));
    }
    hosts.sort_by(|a, b| a.id.cmp(&b.id));
    for h in &hosts {
        h.write_config(fleet, &branch, reporter, enroll_token)?;
    }
    Ok(hosts)
}

fn git_branch(repo: &Path) -> Result<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(["symbolic-ref", "--short", "HEAD"])
        .output()?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned()).map(|b| {
        if b.is_empty() {
            "main".into()
        } else {
            b
        }
    })
}

impl Host {
    fn new(id: String, db: bool, in_v3_canary: bool, root: &Path) -> Host {
        Host {
            root: root.join("hosts").join(&id),
            id,
            db,
            in_v3_canary,
            seen: Arc::default(),
        }
    }

    fn config_path(&self) -> PathBuf {
        self.root.join("etc/flotilla/agent.toml")
    }

    fn install_dir(&self) -> PathBuf {
        self.root.join("opt/flotilla")
    }

    fn write_config(
        &self,
        fleet: &Fleet,
        branch: &str,
        reporter: &str,
        enroll_token: &str,
    ) -> Result<()> {
        let etc = self.root.join("etc/flotilla");
        std::fs::create_dir_all(&etc)?;
        std::fs::create_dir_all(self.root.join("var/lib/flotilla"))?;
        std::fs::copy(fleet.root_path(), etc.join("root.json"))
            .context("copying the trust root")?;
        std::fs::write(etc.join("enroll.token"), enroll_token)?;
        std::fs::set_permissions(
            etc.join("enroll.token"),
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )?;
        let r = self.root.display();
        let config = format!(
            r#"# {id}: one host of the demo fleet
config_schema = 3
agent_id = "{id}"
channel = "{CHANNEL}"
labels = {{ role = "{role}", site = "demo-{site}" }}
trust_root = "{r}/etc/flotilla/root.json"
state_dir = "{r}/var/lib/flotilla"
install_dir = "{r}/opt/flotilla"

[source]
git = "file://{repo}"
branch = "{branch}"

[artifacts]
base_url = "file://{store}/"

[reporter]
url = "{reporter}"
enrollment_token_file = "{r}/etc/flotilla/enroll.token"
gate_unreachable = "wait"
"#,
            id = self.id,
            role = if self.db { "db" } else { "web" },
            site = if self.id.ends_with(['0', '2', '4', '6', '8']) {
                "ams1"
            } else {
                "fra1"
            },
            repo = fleet.repo.display(),
            store = fleet.store.display(),
        );
        std::fs::write(self.config_path(), config)?;
        Ok(())
    }

    /// Installs `binary` as the current version, as `flotilla-agent install` would.
    pub fn install(&self, binary: &Path) -> Result<()> {
        let v = crate::V1;
        let dir = self.install_dir().join("versions").join(v);
        std::fs::create_dir_all(&dir)?;
        std::fs::copy(binary, dir.join("flotilla-agent"))?;
        symlink(
            Path::new("versions").join(v),
            self.install_dir().join("current"),
        )?;
        self.seen.lock().unwrap().insert(v.to_owned());
        Ok(())
    }

    fn link(&self, name: &str) -> Option<String> {
        let target = std::fs::read_link(self.install_dir().join(name)).ok()?;
        Some(target.file_name()?.to_string_lossy().into_owned())
    }

    /// The version `current` points at.
    pub fn committed_version(&self) -> Option<String> {
        self.link("current")
    }

    /// Whether `current` ever pointed at `version` after a pass.
    pub fn ever_installed(&self, version: &str) -> bool {
        self.seen.lock().unwrap().contains(version)
    }

    /// Installed `version` once and runs an older one now.
    pub fn rolled_back_from(&self, version: &str) -> bool {
        self.ever_installed(version) && self.committed_version().as_deref() != Some(version)
    }

    /// One pass, as the timer starts it; a failed pass runs the previous
    /// version's `rollback`, as `OnFailure=` does.
    fn pass(&self) {
        let log = || {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.root.join("agent.log"))
                .map(Stdio::from)
                .unwrap_or_else(|_| Stdio::null())
        };
        let bin = self.install_dir().join("current/flotilla-agent");
        let ok = Command::new(&bin)
            .arg("run")
            .arg("--config")
            .arg(self.config_path())
            .env("FLOTILLA_LOG", "warn")
            .stdout(log())
            .stderr(log())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            let prev = self.install_dir().join("previous/flotilla-agent");
            if prev.exists() {
                let _ = Command::new(prev)
                    .arg("rollback")
                    .arg("--config")
                    .arg(self.config_path())
                    .env("FLOTILLA_LOG", "warn")
                    .stdout(log())
                    .stderr(log())
                    .status();
            }
        }
        if let Some(v) = self.committed_version() {
            self.seen.lock().unwrap().insert(v);
        }
    }
}

/// Runs every host's passes, each every `interval`, on a few threads.
pub struct Runner {
    paused: Arc<AtomicBool>,
    done: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Runner {
    /// Starts the passes.
    pub fn start(hosts: Vec<Host>, interval: Duration, stop: Arc<AtomicBool>) -> Runner {
        let queue: Arc<Mutex<Vec<(Instant, usize)>>> = Arc::new(Mutex::new(
            (0..hosts.len()).map(|i| (Instant::now(), i)).collect(),
        ));
        let hosts = Arc::new(hosts);
        let paused = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicBool::new(false));
        let workers = std::thread::available_parallelism()
            .map(|n| n.get() * 2)
            .unwrap_or(4)
            .min(hosts.len());
        let threads = (0..workers)
            .map(|_| {
                let (queue, hosts, paused, done, stop) = (
                    queue.clone(),
                    hosts.clone(),
                    paused.clone(),
                    done.clone(),
                    stop.clone(),
                );
                std::thread::spawn(move || loop {
                    if done.load(Ordering::SeqCst) || stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let next = {
                        let mut q = queue.lock().unwrap();
                        q.sort();
                        match q.first() {
                            Some((due, _))
                                if *due <= Instant::now() && !paused.load(Ordering::SeqCst) =>
                            {
                                Some(q.remove(0).1)
                            }
                            _ => None,
                        }
                    };
                    match next {
                        Some(i) => {
                            hosts[i].pass();
                            queue.lock().unwrap().push((Instant::now() + interval, i));
                        }
                        None => std::thread::sleep(Duration::from_millis(20)),
                    }
                })
            })
            .collect();
        Runner {
            paused,
            done,
            threads,
        }
    }

    /// Holds new passes (running ones finish).
    pub fn pause(&self) {
        self.paused.store(true, Ordering::SeqCst);
    }

    /// Lets passes run again.
    pub fn resume(&self) {
        self.paused.store(false, Ordering::SeqCst);
    }
}

impl Drop for Runner {
    fn drop(&mut self) {
        self.done.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
