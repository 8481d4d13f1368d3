//! The demo in CI's reduced mode, `--agents 12 --exit`, with dev builds in
//! this test's own target dir (release builds of three agents take many
//! minutes on a 2-core machine; the code paths are the same). Its outcome is
//! asserted from the machine-readable `DEMO` line, which the demo computes
//! from every host's install dir and the reporter's event history.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

fn target_dir() -> PathBuf {
    if let Ok(t) = std::env::var("CARGO_TARGET_DIR") {
        return PathBuf::from(t);
    }
    // <target>/debug/deps/<test-binary>
    let exe = std::env::current_exe().unwrap();
    exe.ancestors().nth(3).unwrap().to_owned()
}

#[test]
fn reduced_demo_rolls_out_1_1_0_and_halts_1_2_0_after_the_canary() {
    let out = Command::new(env!("CARGO_BIN_EXE_flotilla-demo"))
        .args(["--agents", "12", "--exit", "--dev-builds", "--target-dir"])
        .arg(target_dir())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed:\n{stderr}\n{stdout}");
    let line = stdout
        .lines()
        .last()
        .unwrap_or_else(|| panic!("no output:\n{stderr}"));
    assert!(line.starts_with("DEMO "), "last line: {line}\n{stderr}");
    let f: BTreeMap<&str, &str> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|kv| kv.split_once('='))
        .collect();
    let n = |k: &str| -> usize {
        f.get(k)
            .unwrap_or_else(|| panic!("{k} missing: {line}"))
            .parse()
            .unwrap()
    };
    let (agents, canary, rolled_back) = (n("agents"), n("canary_1.2.0"), n("rolled_back"));
    assert_eq!(agents, 12, "{line}");
    // The canary holds at least one db host (the demo labels it so), and
    // every db canary rolled back to 1.1.0.
    assert!(canary >= 1 && canary < agents, "{line}");
    assert!(rolled_back >= 1, "{line}");
    // Everyone else: the canary's web hosts on 1.2.0, all others on 1.1.0.
    assert_eq!(n("on_1.2.0"), canary - rolled_back, "{line}");
    assert_eq!(n("on_1.1.0"), agents - canary + rolled_back, "{line}");
    // Nobody beyond the canary wave ever installed 1.2.0; the gate closed.
    assert_eq!(n("beyond_canary_installed_1.2.0"), 0, "{line}");
    assert_eq!(f["gate_1.2.0"], "closed", "{line}");
    // ... on the thresholds of the manifest the reporter verified itself
    // (--manifest with --trust-root), not for want of one.
    assert_eq!(f["gate_source_1.2.0"], "manifest", "{line}");
    // The reporter has the history: a failed migration and a rollback per
    // rolled-back host.
    assert!(n("migration_failed_events") >= rolled_back, "{line}");
    assert!(n("rollback_events") >= rolled_back, "{line}");
    // The first 1.2.0 table: 1.2.0's waves in order, its canary's size,
    // and the page's words ("on release").
    let after = stderr
        .split_once("rollout of 1.2.0 committed")
        .expect("the demo says it committed 1.2.0")
        .1;
    let table: Vec<&str> = after
        .lines()
        .skip_while(|l| !l.contains("stable -> 1.2.0"))
        .skip(1)
        .take_while(|l| l.starts_with("    "))
        .collect();
    let waves: Vec<&str> = table
        .iter()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(waves, ["canary", "half", "all"], "{after}");
    let size = |l: &str| -> usize {
        let (_, rest) = l.split_once(']').unwrap();
        rest.split_whitespace().next().unwrap().parse().unwrap()
    };
    assert_eq!(
        size(table[0]),
        canary,
        "1.2.0's canary, not 1.1.0's: {after}"
    );
    assert!(table[0].contains("on release"), "{}", table[0]);
    assert!(!stderr.contains(" updated,"), "{stderr}");
    // It cleaned up its temp dir.
    let dir = stderr
        .lines()
        .find_map(|l| l.strip_prefix("==> working in "))
        .expect("the demo names its temp dir");
    assert!(
        !std::path::Path::new(dir.trim()).exists(),
        "{dir} left behind"
    );
}
