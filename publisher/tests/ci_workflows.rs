//! The commands in the template's CI workflows (GitHub Actions and GitLab
//! CI) are run as written against a temp fleet repo, so they never drift
//! from the CLI: verify on a pull request, then sign, verify, commit back and
//! publish after a merge. Steps named "Install …" (GitHub) and
//! `before_script` (GitLab) install the publisher and are skipped: the
//! binary under test is put on PATH instead.

mod common;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::reporter::Reporter;
use common::*;

/// A fleet repo pushed to a bare "origin", and a CI checkout of it.
struct Ci {
    f: Fleet,
    origin: PathBuf,
    work: PathBuf,
    www: PathBuf,
}

fn setup() -> Ci {
    let f = Fleet::ready();
    git(&f.repo, &["add", "--all"]);
    git(
        &f.repo,
        &[
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@example.invalid",
            "commit",
            "-q",
            "-m",
            "stable: 1.0.0",
        ],
    );
    let origin = f.tmp.path().join("origin.git");
    let work = f.tmp.path().join("work");
    git(
        f.tmp.path(),
        &[
            "clone",
            "-q",
            "--bare",
            f.repo.to_str().unwrap(),
            origin.to_str().unwrap(),
        ],
    );
    git(
        f.tmp.path(),
        &[
            "clone",
            "-q",
            origin.to_str().unwrap(),
            work.to_str().unwrap(),
        ],
    );
    let www = f.tmp.path().join("www");
    Ci {
        f,
        origin,
        work,
        www,
    }
}

impl Ci {
    /// Runs one CI script with bash, in the checkout, with the CI settings.
    fn run(&self, script: &str, extra: &[(&str, &str)]) -> (bool, String) {
        let bin_dir = Path::new(bin()).parent().unwrap();
        let path = format!(
            "{}:{}",
            bin_dir.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let key = std::fs::read_to_string(self.f.key("release")).unwrap();
        let out = Command::new("bash")
            .args(["--noprofile", "--norc", "-eo", "pipefail", "-c", script])
            .current_dir(&self.work)
            .env("PATH", path)
            .env("FLOTILLA_RELEASE_KEY", key)
            .env("FLOTILLA_STORE", self.f.store_url())
            .env_remove("FLOTILLA_REPORTER_URL")
            .env_remove("FLOTILLA_REPORTER_TOKEN")
            .env_remove("GITHUB_STEP_SUMMARY")
            .envs(extra.iter().copied())
            .output()
            .unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
        (out.status.success(), text)
    }

    /// The publish store is separate from the artifact store in these tests:
    /// `publish` writes it, and `sign` reads the published serial from it.
    fn publish_store(&self, script: &str) -> String {
        let www = format!("--store \"{}\"", self.www.display());
        script
            .replace(
                "publish --store \"$FLOTILLA_STORE\"",
                &format!("publish {www}"),
            )
            .replace(
                "--renew-before 7d --store \"$FLOTILLA_STORE\"",
                &format!("--renew-before 7d {www}"),
            )
    }

    /// The serial of the manifest published to `www`.
    fn published_serial(&self) -> u64 {
        use base64::Engine as _;
        let env: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(self.www.join("manifest.json")).unwrap())
                .unwrap();
        let payload = base64::engine::general_purpose::STANDARD
            .decode(env["payload"].as_str().unwrap())
            .unwrap();
        serde_json::from_slice::<serde_json::Value>(&payload).unwrap()["serial"]
            .as_u64()
            .unwrap()
    }

    /// Commits the checkout and pushes it to origin's main (a merge).
    fn push(&self, msg: &str) {
        git(&self.work, &["add", "--all"]);
        git(
            &self.work,
            &[
                "-c",
                "user.name=t",
                "-c",
                "user.email=t@example.invalid",
                "commit",
                "-q",
                "-m",
                msg,
            ],
        );
        git(&self.work, &["push", "-q", "origin", "HEAD:main"]);
    }

    fn origin_head_subject(&self) -> String {
        git(&self.origin, &["log", "-1", "--format=%s", "main"])
            .trim()
            .to_owned()
    }
}

fn yaml(path: &Path) -> serde_yaml::Value {
    serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The `run:` scripts of a GitHub Actions workflow, minus "Install …" steps.
fn github_steps(path: &Path) -> Vec<String> {
    let doc = yaml(path);
    let mut out = Vec::new();
    for (_, job) in doc["jobs"].as_mapping().unwrap() {
        for step in job["steps"].as_sequence().unwrap() {
            let name = step["name"].as_str().unwrap_or("");
            if let Some(run) = step["run"].as_str() {
                if !name.starts_with("Install") {
                    out.push(run.to_owned());
                }
            }
        }
    }
    out
}

/// A GitLab job's `script`, as one shell script.
fn gitlab_script(path: &Path, job: &str) -> String {
    let doc = yaml(path);
    doc[job]["script"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap().to_owned())
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn github_workflow_commands_verify_sign_commit_and_publish() {
    let ci = setup();
    let verify = github_steps(&ci.work.join(".github/workflows/verify.yml"));
    assert_eq!(verify.len(), 2, "{verify:?}");
    assert!(verify[0].contains("flotilla-publisher verify"));
    assert!(verify[1].contains("flotilla-publisher plan"));
    let pr = [("GITHUB_BASE_REF", "main")];
    let (ok, out) = ci.run(&verify[0], &pr);
    assert!(ok, "{out}");
    // Without a reporter the plan step says what to set, and passes.
    let (ok, out) = ci.run(&verify[1], &[]);
    assert!(ok && out.contains("FLOTILLA_REPORTER_URL"), "{out}");
    // With one: the pull request pauses stable; the plan names the agent it holds.
    let (ok, out) = plan_with_reporter(&ci, &verify[1], &[("GITHUB_BASE_REF", "main")]);
    assert!(ok, "{out}");
    let summary = std::fs::read_to_string(ci.f.tmp.path().join("summary.md")).unwrap();
    assert!(
        summary.starts_with("```") && summary.contains("web-01"),
        "{summary}"
    );

    // A pull request with a typo fails, naming the file.
    let ch = ci.work.join("channels/stable.toml");
    let good = std::fs::read_to_string(&ch).unwrap();
    std::fs::write(&ch, good.replace("spread = \"1h\"", "sprad = \"1h\"")).unwrap();
    let (ok, out) = ci.run(&verify[0], &pr);
    assert!(
        !ok && out.contains("channels/stable.toml") && out.contains("sprad"),
        "{out}"
    );
    std::fs::write(&ch, good).unwrap();

    // After the merge: sign, verify, commit back, publish.
    let publish = github_steps(&ci.work.join(".github/workflows/publish.yml"));
    let joined = publish.join("\n");
    for cmd in [
        "flotilla-publisher sign",
        "flotilla-publisher verify",
        "flotilla-publisher publish",
        "git push",
    ] {
        assert!(joined.contains(cmd), "publish.yml lost `{cmd}`");
    }
    let env = [("GITHUB_REF_NAME", "main")];
    for step in &publish {
        let (ok, out) = ci.run(&ci.publish_store(step), &env);
        assert!(ok, "step failed:\n{step}\n---\n{out}");
    }
    assert!(
        ci.origin_head_subject().contains("[skip ci]"),
        "{}",
        ci.origin_head_subject()
    );
    let signed = std::fs::read_to_string(ci.work.join("signed/manifest.json")).unwrap();
    assert_eq!(
        std::fs::read_to_string(ci.www.join("manifest.json")).unwrap(),
        signed
    );
    assert!(ci.www.join("root/1.root.json").exists());

    // Running it again (say, the weekly schedule) changes nothing.
    let before = git(&ci.origin, &["rev-parse", "main"]);
    for step in &publish {
        let (ok, out) = ci.run(&ci.publish_store(step), &env);
        assert!(ok, "step failed on the second run:\n{step}\n---\n{out}");
    }
    assert_eq!(git(&ci.origin, &["rev-parse", "main"]), before);
    assert!(
        joined.contains("--store \"$FLOTILLA_STORE\"") && joined.contains("--if-needed"),
        "sign reads the published serial"
    );

    // Pull requests that touch what CI writes or what hosts trust fail,
    // naming the file: an edited signed/manifest.json, a changed root.
    edit_signed_payload(&ci.work, |m| m["serial"] = (u64::MAX - 1).into());
    let (ok, out) = ci.run(&verify[0], &pr);
    assert!(
        !ok && out.contains("signed/manifest.json: this change"),
        "{out}"
    );
    git(&ci.work, &["checkout", "-q", "--", "."]);
    let root = ci.work.join("root/1.root.json");
    let text = std::fs::read_to_string(&root).unwrap();
    std::fs::write(&root, format!("{text}\n")).unwrap();
    let (ok, out) = ci.run(&verify[0], &pr);
    assert!(
        !ok && out.contains("root/1.root.json: this change changes it"),
        "{out}"
    );
    git(&ci.work, &["checkout", "-q", "--", "."]);

    // Merged anyway: a real change plus a forged serial. CI signs the next
    // serial after the published one, not after the forged bytes.
    assert_eq!(ci.published_serial(), 1);
    let paused = Command::new(bin())
        .current_dir(&ci.work)
        .args(["rollout", "pause", "--channel", "stable"])
        .output()
        .unwrap();
    assert!(paused.status.success(), "{}", stderr(&paused));
    edit_signed_payload(&ci.work, |m| m["serial"] = (u64::MAX - 1).into());
    ci.push("pause stable (and a forged serial)");
    for step in &publish {
        let (ok, out) = ci.run(&ci.publish_store(step), &env);
        assert!(
            ok,
            "step failed after the forged merge:\n{step}\n---\n{out}"
        );
    }
    assert_eq!(ci.published_serial(), 2);
}

#[test]
fn gitlab_ci_commands_verify_sign_commit_and_publish() {
    let ci = setup();
    let file = ci.work.join(".gitlab-ci.yml");
    let verify = gitlab_script(&file, "verify");
    assert!(verify.contains("flotilla-publisher plan"), "{verify}");
    let mr = [("CI_MERGE_REQUEST_TARGET_BRANCH_NAME", "main")];
    let (ok, out) = ci.run(&verify, &mr);
    assert!(ok && out.contains("no plan"), "{out}");
    // A merge request that replaces root 1 fails, naming it.
    let root = ci.work.join("root/1.root.json");
    let text = std::fs::read_to_string(&root).unwrap();
    std::fs::write(&root, format!("{text}\n")).unwrap();
    let (ok, out) = ci.run(&verify, &mr);
    assert!(
        !ok && out.contains("root/1.root.json: this change changes it"),
        "{out}"
    );
    git(&ci.work, &["checkout", "-q", "--", "."]);
    let (ok, out) = plan_with_reporter(
        &ci,
        &verify,
        &[("CI_MERGE_REQUEST_TARGET_BRANCH_NAME", "main")],
    );
    assert!(ok, "{out}");

    // GitLab checks out a detached HEAD and pushes with a token URL.
    git(&ci.work, &["checkout", "-q", "--detach"]);
    let script = gitlab_script(&file, "publish");
    for cmd in [
        "flotilla-publisher sign",
        "flotilla-publisher verify",
        "flotilla-publisher publish",
        "git push",
    ] {
        assert!(script.contains(cmd), ".gitlab-ci.yml lost `{cmd}`");
    }
    let origin = ci.origin.to_string_lossy().into_owned();
    let env = [
        ("CI_COMMIT_BRANCH", "main"),
        ("FLOTILLA_PUSH_URL", origin.as_str()),
    ];
    let (ok, out) = ci.run(&ci.publish_store(&script), &env);
    assert!(ok, "{out}");
    assert!(ci.origin_head_subject().contains("[skip ci]"));
    assert!(ci.www.join("manifest.json").exists());
    // The merged, signed state verifies from a fresh clone.
    let fresh = ci.f.tmp.path().join("fresh");
    git(
        ci.f.tmp.path(),
        &["clone", "-q", &origin, fresh.to_str().unwrap()],
    );
    let out = Command::new(bin())
        .args(["verify", "--repo"])
        .arg(&fresh)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
}

/// Runs a CI plan script against a real reporter that knows one agent on
/// stable, with the checkout changed as a pull request would (stable
/// paused), then puts the checkout back. The plan must name the agent.
fn plan_with_reporter(ci: &Ci, script: &str, extra: &[(&str, &str)]) -> (bool, String) {
    let r = Reporter::start();
    r.enroll("web-01", "stable", "0.9.0", &[("role", "web")]);
    let paused = Command::new(bin())
        .current_dir(&ci.work)
        .args(["rollout", "pause", "--channel", "stable"])
        .output()
        .unwrap();
    assert!(paused.status.success(), "{}", stderr(&paused));
    let summary = ci.f.tmp.path().join("summary.md");
    let summary = summary.to_str().unwrap();
    let mut env = vec![
        ("FLOTILLA_REPORTER_URL", r.url.as_str()),
        ("FLOTILLA_REPORTER_TOKEN", r.read.as_str()),
        ("GITHUB_STEP_SUMMARY", summary),
    ];
    env.extend_from_slice(extra);
    let (ok, out) = ci.run(script, &env);
    git(&ci.work, &["checkout", "-q", "--", "."]);
    (ok && out.contains("web-01"), out)
}
