//! Steps 6-7: download and verify the artifact ([`crate::download`]),
//! install it as `versions/<v>/flotilla-agent`, run its `self-test`, record
//! the pending update (`phase = swapping`, attempts left), point `previous`
//! at the running version and swap `current` atomically. The next start
//! runs the new version, whose first pass checks its health (step 3).

use flotilla_protocol::EventKind;

use super::{Ending, Pass};
use crate::decide::Plan;
use crate::download;
use crate::error::{Error, Result};
use crate::fault;
use crate::state::{Blocked, Pending, Phase};
use crate::version::VERSION;
use crate::versions;

impl Pass<'_> {
    /// Downloads, verifies, installs and swaps in `plan`'s release.
    pub(super) fn update(&mut self, plan: &Plan, serial: u64) -> Result<Ending> {
        let to = plan.release.to_string();
        let a = &plan.artifact;
        let url = match download::artifact_url(&self.config.artifacts_base_url, &a.path) {
            Ok(u) => u,
            Err(e) => return Ok(self.step_failed(EventKind::UpdateDownload, e, &to)),
        };
        let dir = self.sd.downloads();
        let req = download::Request {
            url: &url,
            sha256: &a.sha256,
            size: a.size,
            dir: &dir,
            min_rate: self.config.update.min_rate(),
        };
        let file = match download::fetch(&self.http, &req) {
            Ok(f) => f,
            Err(e @ Error::HashMismatch { .. }) => {
                return Ok(self.step_failed(EventKind::UpdateVerify, e, &to))
            }
            Err(e) => return Ok(self.step_failed(EventKind::UpdateDownload, e, &to)),
        };
        self.ev.downloaded(&to, &url, a, serial);
        let install_dir = &self.config.install_dir;
        let installed = versions::install_binary(&file, install_dir, &to, &a.sha256, a.size)
            .and_then(|bin| versions::self_test(&bin, &self.config.path, &to, &self.config.target));
        if let Err(e) = installed {
            if matches!(e, Error::SelfTest { .. }) {
                let _ = std::fs::remove_dir_all(versions::version_dir(install_dir, &to));
                self.state.blocked = Some(Blocked {
                    version: to.clone(),
                    serial,
                    reason: e.to_string(),
                    cause: crate::state::BlockCause::SelfTest,
                    at: self.now,
                });
            }
            return Ok(self.step_failed(EventKind::UpdateInstall, e, &to));
        }
        // The running version must be installed too, or there is nothing to roll back to.
        if !versions::binary_path(install_dir, VERSION).exists() {
            if let Err(e) = versions::install_self(install_dir, VERSION) {
                return Ok(self.step_failed(EventKind::UpdateInstall, e, &to));
            }
        }
        self.state.pending = Some(Pending {
            from: VERSION.into(),
            to: to.clone(),
            attempts_left: self.config.update.health_attempts,
            serial,
            installed_at: self.now,
            phase: Phase::Swapping,
            wave: plan.wave.clone(),
        });
        self.sd.save(&self.state)?;
        fault::point("after-state-write");
        versions::point(install_dir, "previous", VERSION)?;
        versions::point(install_dir, "current", &to)?;
        fault::point("after-swap");
        let _ = std::fs::remove_file(&file);
        self.ev
            .installed(&to, &versions::binary_path(install_dir, &to), plan);
        Ok(Ending::Installed { version: to })
    }

    fn step_failed(&mut self, kind: EventKind, e: Error, to: &str) -> Ending {
        self.ev.update_step_failed(kind, &e, to);
        Ending::Failed {
            reason: e.to_string(),
        }
    }
}
