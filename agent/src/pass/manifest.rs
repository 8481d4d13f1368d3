//! Step 4: fetch the manifest (git2 or conditional HTTP), walk the root
//! chain, check thresholds, expiry and serial ([`crate::trust`]), and keep
//! what was accepted. A refused manifest is a `manifest_check` event, and the
//! agent keeps running what it has.

use super::{Ending, Pass};
use crate::error::{Error, Result};
use crate::source::{self, Fetched};
use crate::trust::{self, Verified};

impl Pass<'_> {
    /// Fetches and verifies the manifest; the accepted serial is durable
    /// before anything acts on it.
    pub(super) fn check_manifest(&mut self) -> Result<Box<Verified>> {
        let trusted = trust::load_root(&self.config.trust_root, &self.sd)?;
        let cached = self.sd.read_optional(&self.sd.manifest_file())?;
        let last_commit = cached.as_ref().and(self.state.source_commit.as_deref());
        let mut src = source::open(self.config, &self.sd, &self.http, last_commit)?;
        let (envelope, new, origin) = match src.fetch()? {
            Fetched::Unchanged => match cached {
                Some(c) => (c, false, "unchanged".to_owned()),
                None => unreachable!("sources answer Unchanged only when a cached copy exists"),
            },
            Fetched::New { envelope, origin } => (envelope, true, origin),
        };
        let v = trust::verify(trusted, &mut *src, new, &envelope, self.now, &self.state)?;
        let serial = v.manifest.serial;
        let first_time = self.state.highest_serial != Some(serial);
        if new {
            if let Some(r) = &v.new_root {
                self.sd.write(&self.sd.root_file(), r)?;
            }
            self.sd.write(&self.sd.manifest_file(), &envelope)?;
            src.accepted()?;
            if let Some(c) = src.commit() {
                self.state.source_commit = Some(c);
            }
        }
        self.state.highest_serial = Some(serial);
        self.state.highest_digest = Some(v.digest.clone());
        self.state.root_version = Some(v.root.version());
        self.state.last_check = Some(self.now);
        if first_time || self.state.last_error.is_some() {
            self.ev.manifest_accepted(&v, &origin);
        }
        if new || first_time {
            // The accepted serial must be durable before anything acts on
            // it; an unchanged manifest is saved with the pass's end.
            self.sd.save(&self.state)?;
        }
        Ok(Box::new(v))
    }

    /// A manifest that was refused or could not be fetched. Repeated
    /// identical failures are reported once, when they start, so a long
    /// outage does not flood the spool.
    pub(super) fn manifest_failed(&mut self, e: Error) -> Ending {
        let msg = e.to_string();
        if self.state.last_error.as_deref() != Some(msg.as_str()) {
            self.ev.manifest_failed(&e);
        }
        if e.is_rejection() {
            Ending::Rejected { reason: msg }
        } else {
            Ending::Failed { reason: msg }
        }
    }
}
