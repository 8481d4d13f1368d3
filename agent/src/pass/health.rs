//! The health check of a pending update, run by the new version on its
//! first pass through `current`: the state dir is writable, the trust root
//! loads, and the fleet's manifest is fetched and verified.

use super::Pass;
use crate::error::Error;
use crate::trust::{self, Verified};
use crate::version::{self, VERSION};

/// What the health check found.
pub(super) enum Health {
    /// Healthy, with the manifest it verified.
    Healthy(Box<Verified>),
    /// Unhealthy: one attempt fewer.
    Unhealthy(Error),
    /// The source could not be reached: retried on the next pass.
    Unreachable(Error),
}

impl Pass<'_> {
    pub(super) fn health(&mut self) -> Health {
        let probe = self.sd.root().join(".health-probe");
        if let Err(e) = self.sd.write(&probe, VERSION.as_bytes()) {
            return Health::Unhealthy(e);
        }
        let _ = std::fs::remove_file(&probe);
        if let Err(e) = trust::load_root(&self.config.trust_root, &self.sd) {
            return Health::Unhealthy(e);
        }
        if version::TEST_BREAK_HEALTH {
            return Health::Unhealthy(Error::SelfTest {
                binary: std::env::current_exe().unwrap_or_default(),
                reason: "built with FLOTILLA_TEST_BREAK_HEALTH (a test-only broken build)".into(),
            });
        }
        match self.check_manifest() {
            Ok(v) => Health::Healthy(v),
            Err(e) if e.is_transient() => Health::Unreachable(e),
            Err(e) => Health::Unhealthy(e),
        }
    }
}
