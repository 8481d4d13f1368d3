//! What this build is: its version, the target triple it was built for, and
//! the test-only build knobs (feature `test-knobs`).
//!
//! The version is `CARGO_PKG_VERSION` unless the build sets
//! `FLOTILLA_VERSION` (read at compile time), so tests and the demo build
//! real, distinct v1/v2/v3 binaries from one source tree:
//!
//! ```text
//! FLOTILLA_VERSION=2.0.0 cargo build -p flotilla-agent
//! ```

/// The version this binary reports (and is compared against manifests as).
pub const VERSION: &str = match option_env!("FLOTILLA_VERSION") {
    Some(v) => v,
    None => env!("CARGO_PKG_VERSION"),
};

/// The target triple this binary was built for (from build.rs).
pub const TARGET: &str = env!("FLOTILLA_BUILD_TARGET");

/// **Test-only.** With the cargo feature `test-knobs`, set by building with
/// `FLOTILLA_TEST_BREAK_HEALTH=1` in the environment: the health check of
/// such a build always fails, so tests can produce a "broken" release from
/// this source. Without the feature (every real build) it is `false`.
#[cfg(feature = "test-knobs")]
pub const TEST_BREAK_HEALTH: bool = option_env!("FLOTILLA_TEST_BREAK_HEALTH").is_some();
/// Always `false`: built without the feature `test-knobs`.
#[cfg(not(feature = "test-knobs"))]
pub const TEST_BREAK_HEALTH: bool = false;

/// [`VERSION`] parsed; a build with an unparsable `FLOTILLA_VERSION` panics
/// here at its first use, which its self-test catches before it is installed.
pub fn version() -> semver::Version {
    semver::Version::parse(VERSION).expect("FLOTILLA_VERSION must be a semantic version")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_and_target_are_set() {
        assert!(!TARGET.is_empty());
        assert_eq!(version().to_string(), VERSION);
    }
}
