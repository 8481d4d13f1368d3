//! `verify`: every check CI runs on a pull request and after a merge; the
//! result is one line per problem, each naming its file (or store object).
//!
//! Always:
//! 1. the sources validate (protocol's strict parsing: typos, wave percents,
//!    paths, hashes, references);
//! 2. no channel moves to a lower release than the one in
//!    `signed/manifest.json` unless it sets `allow_downgrade`.
//!
//! Unless `--sources`:
//! 3. the root chain `root/1.root.json` → N verifies, and root N has not expired;
//! 4. `signed/manifest.json` carries a threshold of root N's release keys
//!    (each key counted once) and has not expired;
//! 5. no drift: it equals the compilation of the current sources, serial and
//!    timestamps aside (a merged change nobody signed yet is reported).
//!
//! With `--base REF` (a pull request against its base), also:
//! 7. roots are append-only: no `root/<n>.root.json` of the base changed or
//!    removed, and each new one chains from the one before;
//! 8. nothing under `signed/` changed, except a `signed/manifest.json` that
//!    carries the release threshold with a serial at most 1000 above the
//!    base's (co-signers of a release threshold of 2 or more sign in the
//!    pull request); see [`crate::history`].
//!
//! With `--check-artifacts`: 6. every artifact the signed manifest refers to
//! (with `--sources`: every artifact in `releases/`) exists in the store with
//! the recorded size and SHA-256, streamed through the hasher.
//!
//! With `--reporter`: warnings (not problems) for the waves too thin for the
//! halt gate to judge, counting the agents that reporter knows, by the rule
//! `plan` uses ([`thin_waves`]).

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use flotilla_protocol::api::AgentSummary;
use flotilla_protocol::{DowngradePolicy, Manifest, Sources};
use flotilla_signing::ExpirationEnforcement;

use crate::history::{self, Snapshot};
use crate::plan;
use crate::repo::{SignedManifest, SIGNED_MANIFEST};
use crate::store::ObjectCheck;
use crate::{Error, Repo, Store};

/// How much to check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Sources alone (before signing): steps 1–2.
    Sources,
    /// Everything: steps 1–5.
    Full,
}

/// Options of one verification.
#[derive(Debug)]
pub struct Options<'a> {
    /// How much to check.
    pub scope: Scope,
    /// Check artifacts in this store (step 6).
    pub artifacts: Option<&'a Store>,
    /// The base of the change (`--base`): roots must be append-only over
    /// it and `signed/` unchanged (steps 7–8).
    pub base: Option<&'a Snapshot>,
    /// The time expiry is judged at.
    pub now: DateTime<Utc>,
}

/// Runs the checks; an empty list means the repo verifies.
pub fn verify(repo: &Repo, opts: &Options<'_>) -> Vec<String> {
    let mut problems = Vec::new();
    let sources = match repo.load_sources() {
        Ok(s) => Some(s),
        Err(Error::Sources(p)) => {
            problems.extend(p.0.iter().map(|e| e.to_string()));
            None
        }
        Err(e) => {
            problems.push(e.to_string());
            None
        }
    };
    let (signed, signed_unreadable) = match repo.signed_manifest() {
        Ok(s) => (s, false),
        Err(e) => {
            problems.push(e.to_string());
            (None, true)
        }
    };
    // Downgrades are judged against the base's manifest when it verifies
    // (the work tree's copy may be what the change edited).
    let base_manifest = opts.base.and_then(Snapshot::verified);
    if let Some(s) = &sources {
        match (&base_manifest, &signed) {
            (Some(m), _) => problems.extend(downgrades(m, s)),
            (None, Some(sm)) => problems.extend(downgrades(&sm.manifest, s)),
            (None, None) => {}
        }
    }
    if let Some(base) = opts.base {
        match Snapshot::work_tree(repo) {
            Ok(head) => {
                problems.extend(history::root_changes(base, &head, "this change"));
                problems.extend(history::signed_changes(base, &head, "this change"));
            }
            Err(e) => problems.push(e.to_string()),
        }
    }

    if opts.scope == Scope::Full {
        problems.extend(full(repo, signed.as_ref(), signed_unreadable, opts.now));
        if let (Some(sm), Some(s)) = (&signed, &sources) {
            problems.extend(drift(&sm.manifest, s));
        }
    }

    if let Some(store) = opts.artifacts {
        let releases: Vec<(String, flotilla_protocol::Release)> = match (&signed, opts.scope) {
            (Some(sm), Scope::Full) => sm.manifest.releases.clone().into_iter().collect(),
            _ => sources
                .iter()
                .flat_map(|s| s.releases.iter())
                .map(|(v, r)| (v.to_string(), r.clone()))
                .collect(),
        };
        for (version, release) in releases {
            for (target, a) in &release.artifacts {
                let what = format!("{} (release {version}, {target})", store.display(&a.path));
                match store.check(&a.path, a.size, &a.sha256) {
                    Ok(ObjectCheck::Matches) => {}
                    Ok(ObjectCheck::Missing) => {
                        problems.push(format!("{what}: missing from the store"))
                    }
                    Ok(ObjectCheck::Differs { found }) => problems.push(format!(
                        "{what}: the store has {} bytes with sha256 {}, but {} bytes with sha256 {} were signed",
                        found.size, found.sha256, a.size, a.sha256
                    )),
                    Err(e) => problems.push(format!("{what}: {e}")),
                }
            }
        }
    }
    problems
}

/// The waves of `sources` too thin for the halt gate to judge, given the
/// `agents` a reporter knows: what `plan` warns about ([`plan::thin_waves`])
/// for every channel, as if all of it were new, so each agent still to move
/// counts in its wave (agents already on the release report nothing). Each
/// warning names its channel file. Warnings: they do not fail `verify`.
pub fn thin_waves(sources: &Sources, agents: &[AgentSummary], now: DateTime<Utc>) -> Vec<String> {
    let ctx = plan::Context {
        base: String::new(),
        head: String::new(),
        reporter: String::new(),
        now,
    };
    plan::compute(&ctx, None, sources, agents).thin_wave_warnings()
}

/// Steps 3–4: the root chain, and the manifest against it, with the one
/// verification agents use ([`Snapshot::verify_manifest`]: walk, thresholds,
/// expiry).
fn full(
    repo: &Repo,
    signed: Option<&SignedManifest>,
    signed_unreadable: bool,
    now: DateTime<Utc>,
) -> Vec<String> {
    let snapshot = match Snapshot::work_tree(repo) {
        Ok(s) => s,
        Err(e) => return vec![e.to_string()],
    };
    if signed.is_some() {
        return match snapshot.verify_manifest(now) {
            Ok(_) => Vec::new(),
            Err(e) => vec![e.to_string()],
        };
    }
    // No manifest to verify: the chain must still verify and be current.
    let mut p = Vec::new();
    match snapshot.chain() {
        Ok(chain) => match chain.last() {
            None => p.push(Repo::no_root().to_string()),
            Some(newest) => {
                if let Err(e) = newest.check_expiry(now, ExpirationEnforcement::Safe) {
                    p.push(format!(
                        "{}: {e}{}",
                        Repo::root_rel(newest.version()).display(),
                        history::ROTATE_HINT
                    ));
                }
            }
        },
        Err(e) => p.push(e.to_string()),
    }
    if !signed_unreadable {
        p.push(missing());
    }
    p
}

fn missing() -> String {
    format!("{SIGNED_MANIFEST}: missing; sign the sources with `flotilla-publisher sign`")
}

/// Channels whose release is lower than in the signed manifest, without
/// `allow_downgrade`.
pub fn downgrades(signed: &Manifest, sources: &Sources) -> Vec<String> {
    let mut out = Vec::new();
    for (name, ch) in &sources.channels {
        if let Some(old) = signed.channels.get(name) {
            if ch.release < old.release && ch.allow_downgrade != DowngradePolicy::Allow {
                out.push(format!(
                    "channels/{name}.toml: release: {} is lower than the signed {}; to roll back on purpose set allow_downgrade = true (`rollout set --allow-downgrade`)",
                    ch.release, old.release
                ));
            }
        }
    }
    out
}

/// Differences between the signed manifest and the compilation of the
/// sources, serial and timestamps aside; empty when they match.
pub fn drift(signed: &Manifest, sources: &Sources) -> Vec<String> {
    let epoch = DateTime::<Utc>::UNIX_EPOCH;
    let a = signed.without_signing_fields();
    let b = Manifest::compile(sources, 0, epoch, epoch);
    if a == b {
        return Vec::new();
    }
    let mut files = Vec::new();
    if a.fleet != b.fleet
        || a.artifact_base_urls != b.artifact_base_urls
        || a.reporter_url != b.reporter_url
    {
        files.push("fleet.toml".to_owned());
    }
    let names: BTreeSet<&String> = a.channels.keys().chain(b.channels.keys()).collect();
    for n in names {
        if a.channels.get(n) != b.channels.get(n) {
            files.push(format!("channels/{n}.toml"));
        }
    }
    let versions: BTreeSet<&String> = a.releases.keys().chain(b.releases.keys()).collect();
    for v in versions {
        if a.releases.get(v) != b.releases.get(v) {
            files.push(format!("releases/{v}.toml"));
        }
    }
    if a.pins != b.pins {
        files.push("pins.toml".to_owned());
    }
    vec![format!(
        "{SIGNED_MANIFEST}: does not match the sources (changed since it was signed: {}); sign the change with `flotilla-publisher sign`",
        files.join(", ")
    )]
}
