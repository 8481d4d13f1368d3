//! The health check of a pending update, run by the new version on its
//! first pass through `current`. Its health is its own: the config loaded
//! (or the pass would not be here), the state dir is writable, the trust
//! root loads, and it runs. What the fleet source serves during that pass
//! (an outage, a stale or corrupt manifest from a mirror) is the source's
//! problem, not the release's: it is reported and the check retried on the
//! next pass, never counted against the release.

use super::Pass;
use crate::error::Error;
use crate::trust;
use crate::version::{self, VERSION};

impl Pass<'_> {
    /// The new version's own health; an error is one attempt fewer.
    pub(super) fn health(&mut self) -> Result<(), Error> {
        let probe = self.sd.root().join(".health-probe");
        self.sd.write(&probe, VERSION.as_bytes())?;
        let _ = std::fs::remove_file(&probe);
        trust::load_root(&self.config.trust_root, &self.sd)?;
        if version::TEST_BREAK_HEALTH {
            return Err(Error::SelfTest {
                binary: std::env::current_exe().unwrap_or_default(),
                reason: "built with FLOTILLA_TEST_BREAK_HEALTH (a test-only broken build)".into(),
            });
        }
        Ok(())
    }
}
