//! The reporter: `flotilla-reporter serve` as a child process, and the few
//! API reads the demo shows.

use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use flotilla_protocol::api::{
    paths, AgentList, EventPage, Gate, GateState, RolloutList, RolloutProgress, SettingsSource,
};

use crate::build::Bins;

/// A running reporter.
pub struct Reporter {
    child: Child,
    bin: PathBuf,
    db: PathBuf,
    /// Its base URL.
    pub url: String,
    /// The admin token (web login and reads).
    pub admin_token: String,
    http: ureq::Agent,
}

impl Drop for Reporter {
    fn drop(&mut self) {
        // SIGTERM first so it shuts down cleanly; then make sure.
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Reporter {
    /// Starts `flotilla-reporter serve` and waits until `/healthz` answers.
    /// It verifies `manifest` itself, from `trust_root` (the root agents
    /// ship with) through the fleet repo's `root/`.
    pub fn start(
        bins: &Bins,
        root: &Path,
        listen: &str,
        manifest: &Path,
        trust_root: &Path,
    ) -> Result<Reporter> {
        let dir = root.join("reporter");
        std::fs::create_dir_all(&dir)?;
        let admin_token = random_hex(24)?;
        let token_file = dir.join("admin.token");
        std::fs::write(&token_file, &admin_token)?;
        std::fs::set_permissions(
            &token_file,
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )?;
        let listen = if listen.ends_with(":0") {
            // Pick the port here so the URL is known before the child starts.
            let l = TcpListener::bind(listen).with_context(|| format!("binding {listen}"))?;
            l.local_addr()?.to_string()
        } else {
            listen.to_owned()
        };
        let db = dir.join("reporter.db");
        // The demo changes the manifest every few seconds; re-read it often.
        let config = dir.join("reporter.toml");
        std::fs::write(&config, "manifest_refresh = \"1s\"\n")?;
        let log = std::fs::File::create(dir.join("reporter.log"))?;
        let child = Command::new(&bins.reporter)
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .arg("--db")
            .arg(&db)
            .arg("--listen")
            .arg(&listen)
            .arg("--admin-token-file")
            .arg(&token_file)
            .arg("--manifest")
            .arg(manifest)
            .arg("--trust-root")
            .arg(trust_root)
            .env("FLOTILLA_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting flotilla-reporter")?;
        let rep = Reporter {
            child,
            bin: bins.reporter.clone(),
            db,
            url: format!("http://{listen}"),
            admin_token,
            http: ureq::AgentBuilder::new()
                .timeout(Duration::from_secs(10))
                .build(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if rep.http.get(&format!("{}/healthz", rep.url)).call().is_ok() {
                return Ok(rep);
            }
            if Instant::now() > deadline {
                bail!(
                    "flotilla-reporter did not answer /healthz within 30 s; see {}",
                    dir.join("reporter.log").display()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `flotilla-reporter token create`: a fresh enrollment token.
    pub fn enrollment_token(&self) -> Result<String> {
        let out = Command::new(&self.bin)
            // Every demo host enrolls with this one token, within the day.
            .args(["token", "create", "--note", "flotilla-demo"])
            .args(["--expires", "1d", "--uses", "unlimited", "--db"])
            .arg(&self.db)
            .env("FLOTILLA_LOG", "warn")
            .output()
            .context("running flotilla-reporter token create")?;
        if !out.status.success() {
            bail!(
                "token create failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .map(str::to_owned)
            .context("token create printed no token")
    }

    fn get<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T> {
        let resp = self
            .http
            .get(&format!("{}{path}", self.url))
            .set("Authorization", &format!("Bearer {}", self.admin_token))
            .call()
            .with_context(|| format!("GET {path}"))?;
        let mut body = String::new();
        resp.into_reader()
            .take(16 << 20)
            .read_to_string(&mut body)?;
        serde_json::from_str(&body).with_context(|| format!("GET {path}: unexpected answer"))
    }

    /// How many agents the reporter knows.
    pub fn agents_known(&self) -> Result<usize> {
        Ok(self
            .get::<AgentList>(&format!("{}?limit=1", paths::AGENTS))?
            .total as usize)
    }

    /// The gate's state, `open` or `closed`.
    pub fn gate(&self, channel: &str, release: &str) -> Result<String> {
        let g: Gate = self.get(&paths::gate(channel, release))?;
        Ok(match g.state {
            GateState::Open => "open",
            GateState::Closed => "closed",
        }
        .to_owned())
    }

    /// Where the gate's thresholds came from: `manifest` (verified by the
    /// reporter) or `unknown`.
    pub fn gate_source(&self, channel: &str, release: &str) -> Result<String> {
        let g: Gate = self.get(&format!("/api/v1/gate/{channel}/{release}"))?;
        Ok(match g.settings_source {
            SettingsSource::Manifest => "manifest",
            _ => "unknown",
        }
        .to_owned())
    }

    /// Whether the reporter's verified manifest rolls `release` out on
    /// `channel` (it reads the signed manifest every second): until then
    /// it knows neither the release's waves nor its thresholds.
    pub fn rolls_out(&self, channel: &str, release: &str) -> Result<bool> {
        let l: RolloutList = self.get("/api/v1/rollouts")?;
        Ok(l.rollouts
            .iter()
            .any(|r| r.channel == channel && r.release == release))
    }

    /// How many events of `kind` (and `status`) one agent reported.
    pub fn count_events(&self, agent: &str, kind: &str, status: Option<&str>) -> Result<usize> {
        let mut q = format!("{}?kind={kind}&limit=500", paths::agent_events(agent));
        if let Some(s) = status {
            q.push_str(&format!("&status={s}"));
        }
        Ok(self.get::<EventPage>(&q)?.events.len())
    }

    /// The rollout progress per wave, as a small table with bars.
    pub fn progress_table(&self, channel: &str, release: &str) -> Result<String> {
        let p: RolloutProgress = self.get(&paths::rollout(channel, release))?;
        let mut out = format!(
            "  {channel} -> {release}   gate: {:?}{}\n",
            p.gate.state,
            p.failure_rate
                .map(|r| format!("   failure rate {:.0}%", r * 100.0))
                .unwrap_or_default()
        );
        for w in &p.waves {
            let total = w.agents.max(1);
            let width = 24u64;
            let done = (w.on_release * width / total) as usize;
            let bad = ((w.failed + w.rolled_back) * width / total) as usize;
            let bar = format!(
                "{}{}{}",
                "#".repeat(done),
                "x".repeat(bad.min(width as usize - done)),
                ".".repeat((width as usize).saturating_sub(done + bad))
            );
            out.push_str(&format!(
                "    {:<8} [{bar}] {:>3} agents: {:>3} on release, {:>3} installing, {:>3} waiting, {:>3} failed, {:>3} rolled back\n",
                w.wave, w.agents, w.on_release, w.installing, w.waiting, w.failed, w.rolled_back
            ));
        }
        Ok(out.trim_end().to_owned())
    }
}

fn random_hex(bytes: usize) -> Result<String> {
    let mut b = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut b)?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}
